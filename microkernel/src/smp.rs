//! Multiprocessor support: starting the application processors, the CPU table,
//! and the IPIs — reschedule (wake an idle CPU), TLB shootdown, stop-all on
//! panic, and a ping used to measure IPI latency.
//!
//! # Bring-up
//! The boot CPU reads the MADT, installs the real-mode trampoline in a free page
//! below 1 MiB with bring-up page tables (the kernel half plus an identity map of
//! that page), and starts the APs one at a time with INIT-SIPI-SIPI and the SDM's
//! delays (10 ms, 200 us). Each AP gets its own guarded kernel stack, IST stacks,
//! `PerCpu` (GDT, TSS, GS base), syscall MSRs, FPU setup, protections and APIC
//! timer, then joins the scheduler. A CPU that does not arrive within 200 ms is
//! reported and skipped; the boot never hangs on it.

use crate::arch::apic::{self, MAX_CPUS};
use crate::arch::percpu::{self, PerCpu};
use crate::arch::trampoline::Trampoline;
use crate::arch::{cpu, fpu, gdt, idt, madt, syscall};
use crate::bootinfo::BootInfo;
use crate::mem::{self, kstack::KernelStack, DirectMem};
use crate::sync::IrqMutex;
use crate::vm::AddressSpace;
use alloc::boxed::Box;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use kcore::paging::{PageSize, PageTable, PteFlags};

/// APIC id of each CPU (index = CPU id).
static APIC_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(u32::MAX) }; MAX_CPUS];
/// CPUs that finished bring-up.
static ONLINE: AtomicUsize = AtomicUsize::new(1);
/// Cycles from INIT to arrival, per AP.
static BRINGUP_CYCLES: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Processors the MADT lists.
static FOUND: AtomicUsize = AtomicUsize::new(1);

/// What an AP needs to start; lives until the AP has arrived.
#[repr(C)]
pub struct ApBoot {
    cpu_id: u32,
    apic_id: u32,
    percpu: *mut PerCpu,
    ist_tops: [u64; gdt::IST_COUNT],
    kernel_root: u64,
    arrived: AtomicBool,
    arrived_tsc: AtomicU64,
}

/// CPUs online.
pub fn online() -> usize {
    ONLINE.load(Ordering::SeqCst)
}

/// Processors found in the MADT (1 without ACPI).
pub fn found() -> usize {
    FOUND.load(Ordering::SeqCst)
}

/// The APIC id of CPU `cpu`.
pub fn apic_id_of(cpu: usize) -> u32 {
    APIC_IDS[cpu].load(Ordering::Relaxed)
}

/// Cycles from INIT to arrival of AP `cpu` (0 for the boot CPU).
pub fn bringup_cycles(cpu: usize) -> u64 {
    BRINGUP_CYCLES[cpu].load(Ordering::Relaxed)
}

fn leak_stack() -> Result<u64, &'static str> {
    let s = KernelStack::new()?;
    let top = s.top();
    core::mem::forget(s); // a CPU's boot and IST stacks live as long as the CPU
    Ok(top)
}

/// Finds and starts every AP, then prints `smp: <online> of <found> CPUs online`.
///
/// `withhold` (the `smp.withhold=<apic id>` test hook) names an AP that gets
/// INIT but no STARTUP IPI, so the boot tests can watch the timeout path
/// report a CPU that never arrives.
pub fn start_aps(boot: &BootInfo, nx: bool, withhold: Option<u32>) {
    let bsp_apic = apic::local_id();
    APIC_IDS[0].store(bsp_apic, Ordering::SeqCst);
    percpu::set_apic_id(bsp_apic);
    let topo = match boot
        .rsdp_phys
        .ok_or("the boot loader passed no ACPI RSDP")
        .and_then(madt::discover)
    {
        Ok(t) => t,
        Err(e) => {
            log::warn!("no SMP: {e}; running on the boot CPU only");
            crate::println!("smp: 1 of 1 CPUs online");
            return;
        }
    };
    FOUND.store(topo.apic_ids.len() + topo.ignored, Ordering::SeqCst);
    crate::arch::ioapic::init(&topo);
    if topo.ignored > 0 {
        log::warn!(
            "{} processors beyond the {MAX_CPUS}-CPU limit ignored",
            topo.ignored
        );
    }
    let t_start = cpu::rdtsc();
    if topo.apic_ids.len() > 1 {
        if let Err(e) = boot_all(&topo, bsp_apic, nx, withhold) {
            log::error!("AP bring-up aborted: {e}");
        }
    }
    let ms = (cpu::rdtsc() - t_start) / apic::tsc_per_ms().max(1);
    crate::println!("smp: {} of {} CPUs online", online(), found());
    log::info!(
        "AP bring-up took {ms} ms ({} APIC)",
        if apic::x2apic_mode() {
            "x2APIC"
        } else {
            "xAPIC"
        }
    );
}

fn boot_all(
    topo: &madt::Topology,
    bsp_apic: u32,
    nx: bool,
    withhold: Option<u32>,
) -> Result<(), &'static str> {
    let page = mem::trampoline_page().ok_or("no free page below 1 MiB for the trampoline")?;
    let kernel_root = mem::kernel_root();
    let pt = mem::with_kernel_pt(|kpt, m| PageTable::create_with_kernel_half(m, kpt))
        .map_err(|_| "out of memory")?;
    if pt.root() >= 1 << 32 {
        return Err("bring-up page tables above 4 GiB");
    }
    pt.map(
        &mut DirectMem,
        page.addr(),
        page.addr(),
        PageSize::Size4K,
        PteFlags::WRITABLE,
    )
    .map_err(|_| "cannot identity-map the trampoline")?;
    // SAFETY: the page was just allocated below 1 MiB and is ours; the direct
    // map covers it.
    let tramp = unsafe {
        Trampoline::install(
            page.addr(),
            mem::phys_to_virt(page.addr()) as *mut u8,
            pt.root(),
            nx,
        )
    };

    let mut next_id = 1usize;
    for &apic_id in topo.apic_ids.iter().filter(|&&a| a != bsp_apic) {
        if next_id >= MAX_CPUS {
            break;
        }
        let block = Box::leak(Box::new(ApBoot {
            cpu_id: next_id as u32,
            apic_id,
            percpu: Box::leak(Box::new(PerCpu::new())),
            ist_tops: [leak_stack()?, leak_stack()?, leak_stack()?, leak_stack()?],
            kernel_root,
            arrived: AtomicBool::new(false),
            arrived_tsc: AtomicU64::new(0),
        }));
        APIC_IDS[next_id].store(apic_id, Ordering::SeqCst);
        tramp.set_ap(leak_stack()?, block as *const ApBoot as u64);
        let t0 = cpu::rdtsc();
        apic::send_init(apic_id);
        apic::delay_us(10_000);
        if withhold == Some(apic_id) {
            log::warn!("smp.withhold: not sending STARTUP to APIC id {apic_id} (test hook)");
        } else {
            apic::send_sipi(tramp.page(), apic_id);
            apic::delay_us(200);
            if !block.arrived.load(Ordering::SeqCst) {
                apic::send_sipi(tramp.page(), apic_id);
            }
        }
        let deadline = cpu::rdtsc() + 200 * apic::tsc_per_ms();
        while !block.arrived.load(Ordering::SeqCst) && cpu::rdtsc() < deadline {
            core::hint::spin_loop();
        }
        if block.arrived.load(Ordering::SeqCst) {
            BRINGUP_CYCLES[next_id].store(
                block.arrived_tsc.load(Ordering::SeqCst) - t0,
                Ordering::SeqCst,
            );
            ONLINE.fetch_add(1, Ordering::SeqCst);
            next_id += 1;
        } else {
            log::error!(
                "CPU with APIC id {apic_id} did not come up within 200 ms; continuing without it"
            );
            APIC_IDS[next_id].store(u32::MAX, Ordering::SeqCst);
        }
    }
    pt.clear_user_half(&mut DirectMem, |_, _, _| {});
    let _ = mem::free_frame(kcore::frame::PhysFrame::containing(pt.root()));
    // The trampoline page stays reserved (CPU hot-add would reuse it).
    Ok(())
}

/// Where an AP arrives in 64-bit mode (from the trampoline), on its own stack.
pub extern "C" fn ap_entry(block: &'static ApBoot) -> ! {
    // SAFETY: the block was prepared for this CPU alone by the boot CPU, which
    // waits for `arrived` and never touches the PerCpu afterwards.
    unsafe {
        percpu::init_cpu(
            &mut *block.percpu,
            block.cpu_id,
            block.apic_id,
            block.ist_tops,
        )
    };
    // Per-CPU data came first (still on the bring-up tables, which share the
    // kernel half): everything from here on, even CR3 bookkeeping, reads gs:.
    mem::load_address_space(block.cpu_id as usize, block.kernel_root);
    idt::load();
    let f = cpu::Features::detect();
    cpu::init_paging_features(&f);
    fpu::init_cpu(&f, false);
    cpu::enable_protections(&f);
    syscall::init_cpu();
    if let Err(e) = apic::init_cpu(false, f.tsc_deadline) {
        panic!("CPU {}: local APIC: {e}", block.cpu_id);
    }
    if let Err(e) = crate::sched::init_cpu() {
        panic!("CPU {}: scheduler: {e}", block.cpu_id);
    }
    crate::ktest::percpu_selfcheck();
    block.arrived_tsc.store(cpu::rdtsc(), Ordering::SeqCst);
    block.arrived.store(true, Ordering::SeqCst);
    crate::sched::idle_loop()
}

/// Asks every other CPU to halt (panic path): an NMI, whose handler halts once
/// the machine is stopping.
pub fn stop_others() {
    if online() > 1 {
        apic::send_nmi_all_others();
        apic::delay_us(1000);
    }
}

/// Makes CPU `cpu` look at its run queue soon (it may be halted).
pub fn kick(cpu: usize) {
    let id = apic_id_of(cpu);
    if id != u32::MAX && cpu != percpu::cpu_id() as usize {
        apic::send_ipi(apic::RESCHED_VECTOR, id);
    }
}

// ---- TLB shootdown --------------------------------------------------------

/// One shootdown at a time; a CPU waiting for it keeps serving requests.
static SHOOTDOWN_BUSY: AtomicBool = AtomicBool::new(false);
/// Request: the root whose TLB entries go (0 = kernel/global mappings).
static SD_ROOT: AtomicU64 = AtomicU64::new(0);
static SD_ADDR: AtomicU64 = AtomicU64::new(0);
static SD_PAGES: AtomicU64 = AtomicU64::new(0);
/// Targets that still have to acknowledge.
static SD_PENDING: AtomicUsize = AtomicUsize::new(0);
/// Per-CPU: a request waits for this CPU.
static SD_FOR: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Serialises senders of the ping IPI.
static PING_LOCK: IrqMutex<()> = IrqMutex::new(());
/// Pings answered.
static PINGS: AtomicU64 = AtomicU64::new(0);

/// Above this many pages a range flush becomes a full flush (one CR3 reload
/// instead of a loop of `invlpg`): no flush ever loops over a length a caller
/// named, however large.
pub const FULL_FLUSH_PAGES: u64 = 64;

fn flush_pages(addr: u64, pages: u64) {
    if pages > FULL_FLUSH_PAGES {
        x86_64::instructions::tlb::flush_all();
    } else {
        for i in 0..pages {
            mem::flush_local(addr + i * 4096);
        }
    }
}

/// Serves a pending shootdown request for this CPU (IPI handler, and waiters).
pub fn service_shootdown() {
    let me = percpu::cpu_id() as usize;
    if !SD_FOR[me].swap(false, Ordering::AcqRel) {
        return;
    }
    let root = SD_ROOT.load(Ordering::Acquire);
    let (cur, _) = x86_64::registers::control::Cr3::read_raw();
    if root == 0 || cur.start_address().as_u64() == root {
        flush_pages(
            SD_ADDR.load(Ordering::Acquire),
            SD_PAGES.load(Ordering::Acquire),
        );
    }
    SD_PENDING.fetch_sub(1, Ordering::AcqRel);
}

fn shootdown(root: u64, mask: u64, addr: u64, pages: u64) {
    let me = percpu::cpu_id() as usize;
    let others = mask & !(1 << me);
    if others == 0 || online() == 1 {
        return;
    }
    while SHOOTDOWN_BUSY
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        service_shootdown(); // never deadlock against the current sender
        core::hint::spin_loop();
    }
    SD_ROOT.store(root, Ordering::Release);
    SD_ADDR.store(addr, Ordering::Release);
    SD_PAGES.store(pages, Ordering::Release);
    let targets: usize = (0..MAX_CPUS)
        .filter(|&c| others & (1 << c) != 0 && apic_id_of(c) != u32::MAX)
        .count();
    SD_PENDING.store(targets, Ordering::Release);
    for c in (0..MAX_CPUS).filter(|&c| others & (1 << c) != 0 && apic_id_of(c) != u32::MAX) {
        SD_FOR[c].store(true, Ordering::Release);
        apic::send_ipi(apic::TLB_VECTOR, apic_id_of(c));
    }
    while SD_PENDING.load(Ordering::Acquire) != 0 {
        service_shootdown();
        core::hint::spin_loop();
    }
    SHOOTDOWN_BUSY.store(false, Ordering::Release);
}

/// Invalidates `pages` pages from `addr` in `space` on every CPU that may cache
/// them, before returning.
pub fn flush_tlb_range(space: &AddressSpace, addr: u64, pages: u64) {
    let (cur, _) = x86_64::registers::control::Cr3::read_raw();
    if cur.start_address().as_u64() == space.root() {
        flush_pages(addr, pages);
    }
    // Only CPUs running this space can cache its entries (CR3 loads flush
    // non-global entries; no PCID).
    //
    // Ordering (the Dekker pattern, both sides): this CPU *stored* page-table
    // entries and now *loads* every CPU's loaded root; a CPU switching to the
    // space *stores* its loaded root (`mem::load_address_space`, a SeqCst
    // `xchg`) and then *loads* page-table entries through its walks after the
    // serialising CR3 write. Under x86-TSO a load may pass an earlier store to
    // another location (the store buffer), so without a full fence here this
    // CPU could read a stale root (miss the CPU) while that CPU walks the old
    // entries: a physical use-after-free once the frames are freed. The local
    // `invlpg` above used to serialise by luck, but an editor that does not
    // run the space (a process manager editing a child) flushes nothing
    // locally. With the fence (mfence) on this side and the `xchg` on the
    // other, at least one CPU sees the other's store: either the root is seen
    // here (the CPU is shot down) or that CPU's walk sees the edited tables.
    core::sync::atomic::fence(Ordering::SeqCst);
    let running = (0..online())
        .filter(|&c| mem::loaded_root(c) == space.root())
        .fold(0u64, |m, c| m | (1 << c));
    shootdown(space.root(), running, addr, pages);
}

/// Invalidates kernel (global) mappings on every CPU.
pub fn flush_kernel_range(addr: u64, pages: u64) {
    flush_pages(addr, pages);
    shootdown(0, u64::MAX, addr, pages);
}

/// Handles the ping IPI: counts it.
pub fn on_ping() {
    if crate::ktest::PANIC_ON_PING.load(Ordering::SeqCst) {
        panic!(
            "deliberate panic on CPU {} (ktest=ap-panic)",
            percpu::cpu_id()
        );
    }
    PINGS.fetch_add(1, Ordering::Release);
}

/// Sends a ping IPI to `cpu` and waits for it to be handled; returns the
/// round trip in TSC cycles, or `None` if the CPU is not online.
pub fn ping(cpu: usize) -> Option<u64> {
    let id = apic_id_of(cpu);
    if id == u32::MAX || cpu == percpu::cpu_id() as usize {
        return None;
    }
    let _g = PING_LOCK.lock();
    let before = PINGS.load(Ordering::Acquire);
    let t0 = cpu::rdtsc();
    apic::send_ipi(apic::PING_VECTOR, id);
    let deadline = t0 + 100 * apic::tsc_per_ms();
    while PINGS.load(Ordering::Acquire) == before {
        if cpu::rdtsc() > deadline {
            return None;
        }
        core::hint::spin_loop();
    }
    Some(cpu::rdtsc() - t0)
}
