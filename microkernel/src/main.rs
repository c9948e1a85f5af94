//! The Mica ring-0 core.
//!
//! # Design principles
//! - Only what must run privileged lives here: per-CPU state, the syscall path,
//!   CPU bring-up, context switching, address spaces and IPC. Drivers (but the
//!   serial port for panics, the APIC and the timer), ELF loading and process
//!   management are ring-3 servers.
//! - Pure logic lives in `kcore` and is unit-tested on the host; this crate is the
//!   glue to the hardware, with assembly confined to small `arch` files.
//! - Bad input from the boot loader or from user space yields a clear error, never
//!   a panic; a kernel bug yields a full diagnosis and a stopped machine, never a
//!   silent triple fault.
#![no_std]
#![no_main]
#![forbid(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

extern crate alloc;

mod arch;
mod bootinfo;
mod fmt;
mod ipc;
mod irq;
mod ktest;
mod logger;
mod mem;
mod object;
mod panic;
mod process;
mod sched;
mod smp;
mod sync;
mod syscall_ipc;
mod syscalls;
mod task;
mod time;
mod vm;

use arch::{apic, cpu, gdt, idt, percpu, qemu};

/// IST stacks of the boot CPU (the APs get theirs from the heap).
static mut BSP_IST: [arch::boot::Stack<{ 16 * 1024 }>; gdt::IST_COUNT] =
    [const { arch::boot::Stack([0; 16 * 1024]) }; gdt::IST_COUNT];
/// The boot CPU's per-CPU record.
static mut BSP_PERCPU: percpu::PerCpu = percpu::PerCpu::new();

/// Entered from the boot stub in 64-bit mode on the boot stack, with the
/// multiboot2 magic and the boot-information address.
#[no_mangle]
pub extern "C" fn kernel_entry(magic: u32, mbi_phys: u32) -> ! {
    logger::init(log::LevelFilter::Info);

    // SAFETY: runs once, on the boot CPU, before interrupts are enabled; the
    // statics are this CPU's and nothing else refers to them.
    unsafe {
        let ist = &*core::ptr::addr_of!(BSP_IST);
        let tops = core::array::from_fn(|i| ist[i].0.as_ptr() as u64 + ist[i].0.len() as u64);
        percpu::init_cpu(&mut *core::ptr::addr_of_mut!(BSP_PERCPU), 0, 0, tops);
    }
    idt::init();
    idt::load();
    let features = cpu::Features::detect();
    // SAFETY: the boot CPU, once, interrupts off, right after its per-CPU data.
    unsafe { arch::cpustate::init_this_cpu(&features, 0, true) };
    arch::cpustate::set_boot_features(&features);
    arch::pic::disable();

    // SAFETY: the boot stub maps physical 0..1 GiB at KERNEL_VMA and passed the
    // loader's pointer unchanged.
    let boot = match unsafe {
        bootinfo::parse(
            magic,
            mbi_phys as u64,
            mem::layout::KERNEL_VMA,
            mem::kernel_phys_range(),
        )
    } {
        Ok(b) => b,
        Err(e) => {
            println!("mica: cannot boot: {e}");
            qemu::exit(false)
        }
    };
    if let Some(level) = boot.arg("log") {
        match logger::parse_level(level) {
            Some(l) => log::set_max_level(l),
            None => log::warn!("unknown log level {level:?}; keeping info"),
        }
    }
    log::debug!("cpu features: {features:?}");

    let stats = match mem::init(&boot, &features) {
        Ok(s) => s,
        Err(e) => {
            println!("mica: cannot boot: {e}");
            qemu::exit(false)
        }
    };
    println!(
        "mica: booted on x86_64, {} MiB usable RAM, {} boot modules, cmdline \"{}\"",
        stats.usable_bytes >> 20,
        boot.modules.len(),
        boot.cmdline
    );
    log::info!(
        "firmware: {} (from the multiboot2 tags); memory map from the {} tag; ACPI RSDP {}",
        boot.firmware,
        match boot.map_source {
            kcore::bootinfo::MapSource::Multiboot => "multiboot2 memory-map",
            kcore::bootinfo::MapSource::Efi => "EFI memory-map",
        },
        if boot.rsdp_phys.is_some() {
            "from the multiboot2 tag"
        } else {
            "not passed"
        }
    );
    log::info!(
        "direct map up to {} GiB; heap {} KiB free",
        stats.direct_map_end >> 30,
        mem::heap::stats().1 >> 10
    );
    for m in &boot.modules {
        log::info!(
            "module {:?} at 0x{:x}..0x{:x}",
            m.name.as_str(),
            m.range.start,
            m.range.end
        );
    }

    if let Err(e) = apic::init_cpu(true, features.tsc_deadline) {
        println!("mica: cannot boot: local APIC: {e}");
        qemu::exit(false);
    }
    time::init();
    log::info!(
        "{} APIC (CPU offers x2APIC: {}), TSC {} kHz, {} timer {} Hz; PCID {} SMEP {} SMAP {} UMIP {} NX {} XSAVE {}",
        if apic::x2apic_mode() { "x2APIC" } else { "xAPIC" },
        features.x2apic,
        apic::tsc_per_ms(),
        if apic::tsc_deadline_mode() { "TSC-deadline" } else { "periodic" },
        apic::TICK_HZ,
        features.pcid,
        features.smep,
        features.smap,
        features.umip,
        features.nx,
        features.xsave
    );
    if let Err(e) = sched::init_cpu() {
        println!("mica: cannot boot: scheduler: {e}");
        qemu::exit(false);
    }

    let withhold = boot.arg("smp.withhold").and_then(|v| v.parse().ok());
    smp::start_aps(&boot, features.nx, withhold);
    if boot.arg("nmi.storm") == Some("1") {
        println!("nmi.storm: CPU 0 sends every other CPU an NMI on each tick");
        ktest::NMI_STORM.store(true, core::sync::atomic::Ordering::SeqCst);
    }
    if boot.arg("init") == Some("bench") {
        smp_bench(boot.arg("bench.icount").is_some());
    }

    if let Some(which) = boot.arg("ktest") {
        ktest::run(which, &boot);
    }
    if let Err(e) = process::start_init(&boot) {
        println!("mica: cannot start init: {e}");
        qemu::exit(false);
    }
    sched::idle_loop()
}

/// Kernel-side figures of `init=bench`: IPI round trip and AP bring-up time.
/// The unit follows the runner's `bench.icount` flag (rdtsc counts
/// instructions under `-icount`); a ping that times out is counted in
/// `failed=`, and `scripts/bench.sh` fails on it.
fn smp_bench(icount: bool) {
    let mut samples: alloc::vec::Vec<u64> = alloc::vec::Vec::new();
    if smp::online() > 1 {
        let mut failed = 0;
        for _ in 0..200 {
            match smp::ping(1) {
                Some(c) => samples.push(c),
                None => failed += 1,
            }
        }
        report("ipi_roundtrip", icount, &mut samples, failed);
        samples.clear();
        samples.extend((1..smp::online()).map(smp::bringup_cycles));
        report("smp_bringup_per_cpu", icount, &mut samples, 0);
    } else {
        log::info!("ipi_roundtrip and smp_bringup_per_cpu need more than one CPU");
    }
}

/// Prints a BENCH line in the format of `libipc::bench::report`.
fn report(name: &str, icount: bool, samples: &mut [u64], failed: usize) {
    samples.sort_unstable();
    let (min, median) = match &*samples {
        [] => (0, 0),
        s => (s[0], s[s.len() / 2]),
    };
    println!(
        "BENCH name={name} unit={} min={min} median={median} iters={} failed={failed}",
        if icount { "instructions" } else { "cycles" },
        samples.len()
    );
}
