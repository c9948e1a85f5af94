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

// The layers (DESIGN.md 6a; `scripts/layers.sh` checks that every `crate::`
// path points to the file's own layer or a lower one):
// L0 arch; L1 sync, time, logger, panic, fmt, bootinfo, trace; L2 mem;
// L3 object; L4 sched; L6 lifecycle, bootstrap; L7 interrupt, smp, syscalls;
// L8 this file. `ktest` is imported by nothing but this file's test entry.
mod arch;
mod bootinfo;
mod bootstrap;
mod fmt;
mod interrupt;
mod ipc;
mod ktest;
mod lifecycle;
mod logger;
mod mem;
mod object;
mod panic;
mod sched;
mod smp;
mod sync;
mod syscall;
mod time;
mod trace;

use abi::bootinfo::modules;
use arch::percpu::{self, CpuId};
use arch::{apic, cpu, gdt, idt, qemu};

/// IST stacks of the boot CPU (the APs get theirs from the heap).
static mut BSP_IST: [arch::boot::Stack<{ 16 * 1024 }>; gdt::IST_COUNT] =
    [const { arch::boot::Stack([0; 16 * 1024]) }; gdt::IST_COUNT];

/// The first half of the per-CPU init sequence, the same on every CPU: its
/// per-CPU record (GDT, TSS, GS base), the IDT, then every piece of CPU
/// state ([`arch::cpustate::init_this_cpu`]). The boot CPU runs it first
/// thing (on the boot tables, before memory is set up); an AP right after it
/// arrives (on the bring-up tables, which share the kernel half).
///
/// # Safety
/// Once per CPU, on that CPU, with interrupts off; `cpu` is this CPU's own
/// slot (the boot CPU's, or the one an AP won at bring-up).
unsafe fn init_cpu_early(
    cpu: CpuId,
    apic_id: Option<u32>,
    ist_tops: [u64; gdt::IST_COUNT],
    kernel_root: Option<u64>,
) -> cpu::Features {
    // SAFETY: the caller's contract.
    unsafe { percpu::init_cpu(cpu, apic_id, ist_tops) };
    // Per-CPU data came first: everything from here on, even CR3
    // bookkeeping, reads gs:.
    if let Some(root) = kernel_root {
        // SAFETY: the kernel's own tables, live forever; they share the
        // kernel half with the bring-up tables this AP runs on.
        unsafe { arch::mmu::load_root(root) };
    }
    let is_boot = cpu == CpuId::BOOT;
    if is_boot {
        idt::init();
    }
    idt::load();
    let features = cpu::Features::detect();
    if !is_boot {
        arch::cpustate::check_ap_features(&features, cpu.get());
    }
    // SAFETY: this CPU, once, interrupts off, right after its per-CPU data.
    unsafe { arch::cpustate::init_this_cpu(&features, cpu.get(), is_boot) };
    features
}

/// The second half of the per-CPU init sequence, once memory is up: the
/// local APIC and its timer (calibrated on the boot CPU, which then starts
/// the clock), joining the scheduler, and the per-CPU self-check.
fn init_cpu_late(features: &cpu::Features) -> Result<(), CpuInitError> {
    let is_boot = percpu::cpu_id() == CpuId::BOOT;
    apic::init_cpu(is_boot, features.tsc_deadline).map_err(CpuInitError::Apic)?;
    if is_boot {
        time::init();
        // An AP's APIC id came from the MADT with its boot block; the boot
        // CPU learns its own now.
        percpu::set_apic_id(apic::local_id());
    }
    sched::init_cpu().map_err(CpuInitError::Sched)?;
    trace::init_cpu();
    percpu::selfcheck();
    Ok(())
}

/// Why a CPU could not finish its per-CPU init.
enum CpuInitError {
    Apic(&'static str),
    Sched(abi::Error),
}

impl core::fmt::Display for CpuInitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CpuInitError::Apic(e) => write!(f, "local APIC: {e}"),
            CpuInitError::Sched(e) => write!(f, "scheduler: {e}"),
        }
    }
}

/// Where an AP arrives in 64-bit mode (from the trampoline), on its own
/// stack, after it won its slot: the same per-CPU init sequence as the boot
/// CPU, then the idle loop.
extern "C" fn ap_main(block: &'static smp::ApBoot) -> ! {
    // SAFETY: the block was prepared for this CPU alone by the boot CPU, and
    // only the winner of the slot that points to it gets here; nobody else
    // runs on slot `block.cpu`.
    let f = unsafe {
        init_cpu_early(
            block.cpu,
            Some(block.apic_id),
            block.ist_tops,
            Some(mem::kernel_root()),
        )
    };
    if let Err(e) = init_cpu_late(&f) {
        panic!("CPU {}: {e}", block.cpu);
    }
    smp::ap_online(block);
    sched::idle_loop()
}

/// Entered from the boot stub in 64-bit mode on the boot stack, with the
/// multiboot2 magic and the boot-information address.
#[no_mangle]
pub extern "C" fn kernel_entry(magic: u32, mbi_phys: u32) -> ! {
    // First thing: the TSC at the kernel's entry, for init's
    // `boot_to_servers_up` (BootInfo::entry_tsc).
    bootstrap::record_entry_tsc();
    logger::init(log::LevelFilter::Info);

    // SAFETY: runs once, on the boot CPU, before interrupts are enabled; the
    // IST statics are this CPU's and nothing else refers to them.
    let features = unsafe {
        let ist = &*core::ptr::addr_of!(BSP_IST);
        let tops = core::array::from_fn(|i| ist[i].0.as_ptr() as u64 + ist[i].0.len() as u64);
        init_cpu_early(CpuId::BOOT, None, tops, None)
    };
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

    trace::configure(boot.arg("trace"), boot.arg("trace.events"));
    // SAFETY: once, on the boot CPU, after `trace::configure`: no other
    // CPU runs yet (`smp::start_aps` below) and no syscall was made (no
    // user code before `lifecycle::init`).
    unsafe { syscall::trace_entries() };
    if let Err(e) = init_cpu_late(&features) {
        println!("mica: cannot boot: {e}");
        qemu::exit(false);
    }
    lifecycle::init();
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

    let withhold = boot.arg("smp.withhold").and_then(|v| v.parse().ok());
    smp::start_aps(&boot, features.nx, withhold, ap_main);
    if boot.arg("nmi.storm") == Some("1") {
        println!("nmi.storm: CPU 0 sends every other CPU an NMI on each tick");
        arch::testhooks::NMI_STORM.store(true, core::sync::atomic::Ordering::SeqCst);
    }
    if boot.arg("nmi.atstop") == Some("1") {
        println!("nmi.atstop: the CPU that stops the machine NMIs itself");
        arch::testhooks::NMI_AT_STOP.store(true, core::sync::atomic::Ordering::SeqCst);
    }
    if boot.arg("stop.midline") == Some("1") {
        println!("stop.midline: a power-off first leaves another CPU mid-line");
        panic::before_power_off(smp::hold_serial_elsewhere);
    }
    if boot.arg(modules::INIT_KEY) == Some(modules::BENCH) {
        smp_bench(boot.arg("bench.icount").is_some());
    }

    if let Some(which) = boot.arg("ktest") {
        ktest::run(which, &boot);
    }
    if let Err(e) = bootstrap::start_init(&boot) {
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
            match smp::ping(CpuId::from_index(1)) {
                Some(c) => samples.push(c),
                None => failed += 1,
            }
        }
        report("ipi_roundtrip", icount, &mut samples, failed);
        samples.clear();
        samples.extend((1..smp::online()).map(|c| smp::bringup_cycles(CpuId::from_index(c))));
        report("smp_bringup_per_cpu", icount, &mut samples, 0);
    } else {
        log::info!("ipi_roundtrip and smp_bringup_per_cpu need more than one CPU");
    }
}

/// Prints a BENCH line ([`abi::report::Bench`]).
fn report(name: &str, icount: bool, samples: &mut [u64], failed: usize) {
    let unit = abi::report::Unit::rdtsc(icount);
    let line = abi::report::Bench::from_samples(name, unit, samples, failed as u64);
    println!("{line}");
}
