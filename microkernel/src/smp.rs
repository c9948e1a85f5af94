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
//! timer, then joins the scheduler. A CPU that does not arrive within 1 s is
//! reported and skipped; the boot never hangs on it. (The SDM-era 200 ms was
//! too short under TCG on a loaded host, where a vCPU thread can go
//! unscheduled that long; with the handshake below a late AP is harmless, so
//! the timeout only costs boot time when a CPU is really dead.)
//!
//! # The arrival handshake (late APs)
//! Each attempt publishes a fresh trampoline slot ([`ApSlot`]) holding the
//! AP's stack and boot block, and the AP claims it with a compare-and-swap
//! WAITING -> ARRIVED as the first thing it does in real mode, before it
//! touches a stack, a page table or its boot block. On timeout the boot CPU
//! does WAITING -> ABANDONED; exactly one of the two wins. An AP that arrives
//! after that finds ABANDONED and parks in `cli; hlt` inside the trampoline
//! page (recording HALTED for the report). Hence:
//! - an abandoned slot, with its stacks, `PerCpu` and boot block, is never
//!   reused or freed (leaked on purpose: a few hundred KiB at most, once);
//! - CPU ids stay dense (`0..online()` is the set of online CPUs, which the
//!   shootdown targeting, `cpu_count` and the ktests rely on): an id is used
//!   only by the CPU that won its slot, because the id lives in the boot
//!   block that only a winner ever reads. An abandoned AP never held one, so
//!   the next AP taking the same number reuses nothing the late AP can see;
//! - the bring-up page tables are freed once every winner is online (each
//!   has switched to the kernel root by then). A loser never loads them: it
//!   parks before it enables paging. (No INIT is sent to abandoned APs: the
//!   handshake makes it unnecessary, and an INIT would hide a late arrival
//!   from the report.)
//!
//! `smp.late=<apic id>` (test hook) makes that AP wait in real mode until the
//! boot CPU has abandoned it — which the boot CPU does right after its
//! STARTUP IPIs — then try to claim its slot: an AP arriving late on
//! purpose, while the next AP is being started.

use crate::arch::apic::{self, MAX_CPUS};
use crate::arch::percpu::{self, PerCpu};
use crate::arch::trampoline::{ApSlot, Arrival, Trampoline};
use crate::arch::{cpu, gdt, idt, madt};
use crate::bootinfo::BootInfo;
use crate::mem::{self, kstack::KernelStack, DirectMem};
use crate::object::space::AddressSpace;
use crate::sync::IrqMutex;
use alloc::boxed::Box;
use alloc::vec::Vec;
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

/// How long the boot CPU waits for an AP to claim its slot.
const ARRIVAL_TIMEOUT_MS: u64 = 1000;

/// What an AP needs to start. Read only by the AP that won its trampoline
/// slot; never freed (an abandoned one is simply never read).
#[repr(C)]
pub struct ApBoot {
    cpu_id: u32,
    apic_id: u32,
    percpu: *mut PerCpu,
    ist_tops: [u64; gdt::IST_COUNT],
    kernel_root: u64,
    /// Set (release) by the AP as its last bring-up step.
    online: AtomicBool,
    online_tsc: AtomicU64,
}

/// The bring-up test hooks from the command line.
#[derive(Clone, Copy, Default)]
struct Hooks {
    /// `smp.withhold=<apic id>`: INIT but no STARTUP (never arrives).
    withhold: Option<u32>,
    /// `smp.late=<apic id>`: arrives only after it was abandoned.
    late: Option<u32>,
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
/// report a CPU that never arrives; `smp.late=<apic id>` (read here) names
/// one that arrives after the timeout (see the module docs).
pub fn start_aps(boot: &BootInfo, nx: bool, withhold: Option<u32>) {
    let hooks = Hooks {
        withhold,
        late: boot.arg("smp.late").and_then(|v| v.parse().ok()),
    };
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
    let mut abandoned = Vec::new();
    if topo.apic_ids.len() > 1 {
        if let Err(e) = boot_all(&topo, bsp_apic, nx, hooks, &mut abandoned) {
            log::error!("AP bring-up aborted: {e}");
        }
    }
    let ms = (cpu::rdtsc() - t_start) / apic::tsc_per_ms().max(1);
    crate::println!("smp: {} of {} CPUs online", online(), found());
    report_abandoned(&abandoned, hooks);
    log::info!(
        "AP bring-up took {ms} ms ({} APIC)",
        if apic::x2apic_mode() {
            "x2APIC"
        } else {
            "xAPIC"
        }
    );
}

/// Says what became of each abandoned AP. A `smp.late` AP is given up to
/// five seconds to show up (it is spinning, so it needs only to be
/// scheduled), so the boot tests see its arrival deterministically;
/// any other is reported as it stands (it may arrive any time, and park).
fn report_abandoned(abandoned: &[&'static ApSlot], hooks: Hooks) {
    for slot in abandoned {
        let id = slot.apic_id();
        if hooks.late == Some(id) {
            let deadline = cpu::rdtsc() + 5000 * apic::tsc_per_ms();
            while slot.state() == Arrival::Abandoned && cpu::rdtsc() < deadline {
                core::hint::spin_loop();
            }
        }
        match slot.state() {
            Arrival::Halted => crate::println!(
                "smp: APIC id {id} arrived after it was abandoned and halted; its slot is never reused"
            ),
            _ => crate::println!(
                "smp: APIC id {id} has not arrived; if it ever does, it halts in the trampoline"
            ),
        }
    }
}

fn boot_all(
    topo: &madt::Topology,
    bsp_apic: u32,
    nx: bool,
    hooks: Hooks,
    abandoned: &mut Vec<&'static ApSlot>,
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
    // SAFETY: the page was reserved below 1 MiB at boot for the trampoline
    // alone and is never freed or reused (mem::trampoline_page); the direct
    // map covers it for good.
    let mut tramp = unsafe {
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
        // The id is only ever read by the AP that wins this attempt's slot.
        let block = Box::leak(Box::new(ApBoot {
            cpu_id: next_id as u32,
            apic_id,
            percpu: Box::leak(Box::new(PerCpu::new())),
            ist_tops: [leak_stack()?, leak_stack()?, leak_stack()?, leak_stack()?],
            kernel_root,
            online: AtomicBool::new(false),
            online_tsc: AtomicU64::new(0),
        }));
        let slot = tramp
            .publish(
                apic_id,
                leak_stack()?,
                block as *const ApBoot as u64,
                hooks.late == Some(apic_id),
            )
            .ok_or("out of trampoline slots")?;
        APIC_IDS[next_id].store(apic_id, Ordering::SeqCst);
        // The slot and the block must be visible before the AP can read
        // them: a full fence drains this CPU's store buffer here, and the
        // STARTUP IPI that lets the AP run follows 10 ms later, far beyond
        // any reordering of the (non-serialising) x2APIC ICR write.
        core::sync::atomic::fence(Ordering::SeqCst);
        let t0 = cpu::rdtsc();
        apic::send_init(apic_id);
        apic::delay_us(10_000);
        if hooks.withhold == Some(apic_id) {
            log::warn!("smp.withhold: not sending STARTUP to APIC id {apic_id} (test hook)");
        } else {
            apic::send_sipi(tramp.page(), apic_id);
            apic::delay_us(200);
            if slot.state() == Arrival::Waiting {
                apic::send_sipi(tramp.page(), apic_id);
            }
        }
        // The smp.late AP waits for our decision, so give up on it at once:
        // its arrival then overlaps the next AP's bring-up (the issue's
        // model), and it does not burn a host CPU for the whole timeout.
        let wait_ms = if hooks.late == Some(apic_id) {
            log::warn!("smp.late: giving up on APIC id {apic_id} right after STARTUP (test hook)");
            0
        } else {
            ARRIVAL_TIMEOUT_MS
        };
        let deadline = cpu::rdtsc() + wait_ms * apic::tsc_per_ms();
        while slot.state() == Arrival::Waiting && cpu::rdtsc() < deadline {
            core::hint::spin_loop();
        }
        // Decide: exactly one of this CAS and the AP's succeeds.
        if slot.abandon().is_ok() {
            log::error!(
                "CPU with APIC id {apic_id} did not come up within {wait_ms} ms; \
                 abandoned (it halts if it arrives later), continuing without it"
            );
            APIC_IDS[next_id].store(u32::MAX, Ordering::SeqCst);
            abandoned.push(slot);
            continue;
        }
        // Arrived: the AP owns the slot and runs kernel code on memory of
        // its own; it cannot be abandoned any more, so wait for it.
        let mut warned = false;
        let t_arrived = cpu::rdtsc();
        while !block.online.load(Ordering::Acquire) {
            if !warned && cpu::rdtsc() - t_arrived > 1000 * apic::tsc_per_ms() {
                log::warn!("CPU {next_id} (APIC id {apic_id}) arrived but is slow to come online");
                warned = true;
            }
            core::hint::spin_loop();
        }
        BRINGUP_CYCLES[next_id].store(
            block.online_tsc.load(Ordering::Acquire) - t0,
            Ordering::SeqCst,
        );
        ONLINE.fetch_add(1, Ordering::SeqCst);
        next_id += 1;
    }
    // Every winner is online, past its switch to the kernel root; losers
    // park before enabling paging: nobody runs on the bring-up tables now.
    pt.clear_user_half(&mut DirectMem, |_, _, _, _| {});
    let _ = mem::free_frame(kcore::frame::PhysFrame::containing(pt.root()));
    // The trampoline page stays reserved: parked APs execute it forever.
    Ok(())
}

/// Where an AP arrives in 64-bit mode (from the trampoline), on its own stack,
/// after it won its slot.
pub extern "C" fn ap_entry(block: &'static ApBoot) -> ! {
    // SAFETY: the block was prepared for this CPU alone by the boot CPU, and
    // only the winner of the slot that points to it gets here; the boot CPU
    // waits for `online` and never touches the PerCpu afterwards.
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
    crate::arch::cpustate::check_ap_features(&f, block.cpu_id);
    // SAFETY: this AP, once, interrupts off, right after its per-CPU data.
    unsafe { crate::arch::cpustate::init_this_cpu(&f, block.cpu_id, false) };
    if let Err(e) = apic::init_cpu(false, f.tsc_deadline) {
        panic!("CPU {}: local APIC: {e}", block.cpu_id);
    }
    if let Err(e) = crate::sched::init_cpu() {
        panic!("CPU {}: scheduler: {e}", block.cpu_id);
    }
    crate::ktest::percpu_selfcheck();
    block.online_tsc.store(cpu::rdtsc(), Ordering::Release);
    // Release: the boot CPU's acquire load sees all of the above.
    block.online.store(true, Ordering::Release);
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

/// `global`: the range is kernel (global) mappings. A CR3 reload keeps
/// global entries, so a full flush of those toggles CR4.PGE instead, which
/// drops every entry, global ones included (SDM 4.10.4.1). (QEMU's TCG TLB
/// ignores the G bit, so no test under TCG can see the difference: the rule
/// is stated here instead.)
fn flush_pages(addr: u64, pages: u64, global: bool) {
    if pages > FULL_FLUSH_PAGES && global {
        use x86_64::registers::control::{Cr4, Cr4Flags};
        // SAFETY: clearing and restoring PGE only flushes the TLB; interrupts
        // are off (callers: shootdown paths), so nothing runs in between.
        unsafe {
            let cr4 = Cr4::read();
            if cr4.contains(Cr4Flags::PAGE_GLOBAL) {
                Cr4::write(cr4 - Cr4Flags::PAGE_GLOBAL);
                Cr4::write(cr4);
            } else {
                x86_64::instructions::tlb::flush_all();
            }
        }
    } else if pages > FULL_FLUSH_PAGES {
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
            root == 0, // kernel (global) mappings
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
        flush_pages(addr, pages, false);
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
    flush_pages(addr, pages, true);
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

/// Ping IPIs handled so far, on every CPU.
pub fn pings() -> u64 {
    PINGS.load(Ordering::Acquire)
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
