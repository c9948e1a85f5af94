//! Multiprocessor support: starting the application processors, the CPU table,
//! and the IPIs — reschedule (wake an idle CPU), TLB shootdown, stop-all on
//! panic, and a ping used to measure IPI latency.
//!
//! # Bring-up
//! The boot CPU reads the MADT, installs the real-mode trampoline in a free page
//! below 1 MiB with bring-up page tables (the kernel half plus an identity map of
//! that page), and starts the APs one at a time with INIT-SIPI-SIPI and the SDM's
//! delays (10 ms, 200 us). Each AP gets its own guarded kernel stack and IST
//! stacks, and runs the one per-CPU init sequence of `main.rs` (its slot of
//! the per-CPU table: GDT, TSS, GS base; syscall MSRs, FPU setup, protections,
//! APIC timer), then joins the scheduler. A CPU that does not arrive within 1 s is
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
//! - an abandoned slot, with its stacks and boot block, is never reused or
//!   freed (leaked on purpose: a few hundred KiB at most, once);
//! - CPU ids stay dense (`0..online()` is the set of online CPUs, which the
//!   shootdown targeting, `cpu_count` and the ktests rely on): an id is used
//!   only by the CPU that won its slot, because the id lives in the boot
//!   block that only a winner ever reads. An abandoned AP never held one, so
//!   the next AP taking the same number (and the same slot of the per-CPU
//!   table, which a loser never touches: it parks before it reads its boot
//!   block) reuses nothing the late AP can see;
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

use crate::arch::apic;
use crate::arch::percpu::{self, CpuId, MAX_CPUS};
use crate::arch::trampoline::{ApSlot, Arrival, Trampoline};
use crate::arch::{cpu, gdt, madt, testhooks};
use crate::bootinfo::BootInfo;
use crate::mem::{self, kstack::KernelStack, DirectMem};
use crate::sync::IrqMutex;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use kcore::paging::{PageSize, PageTable, PteFlags};

/// Processors the MADT lists.
static FOUND: AtomicUsize = AtomicUsize::new(1);

/// How long the boot CPU waits for an AP to claim its slot.
const ARRIVAL_TIMEOUT_MS: u64 = 1000;

/// What an AP needs to start. Read only by the AP that won its trampoline
/// slot; never freed (an abandoned one is simply never read).
#[repr(C)]
pub struct ApBoot {
    /// The CPU id it runs as (its slot of the per-CPU table).
    pub cpu: CpuId,
    /// Its APIC id, from the MADT.
    pub apic_id: u32,
    /// Tops of its IST stacks.
    pub ist_tops: [u64; gdt::IST_COUNT],
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
    percpu::online()
}

/// Processors found in the MADT (1 without ACPI).
pub fn found() -> usize {
    FOUND.load(Ordering::SeqCst)
}

/// Cycles from INIT to arrival of AP `cpu` (0 for the boot CPU).
pub fn bringup_cycles(cpu: CpuId) -> u64 {
    percpu::slot(cpu).bringup_cycles.load(Ordering::Relaxed)
}

/// What the boot CPU hands an AP that came up: its boot block. The AP
/// then runs the one per-CPU init sequence (`main.rs`), then
/// [`ap_online`].
pub type ApMain = extern "C" fn(&'static ApBoot) -> !;

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
pub fn start_aps(boot: &BootInfo, nx: bool, withhold: Option<u32>, ap_main: ApMain) {
    let hooks = Hooks {
        withhold,
        late: boot.arg("smp.late").and_then(|v| v.parse().ok()),
    };
    let bsp_apic = apic::local_id();
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
        if let Err(e) = boot_all(&topo, bsp_apic, nx, hooks, ap_main, &mut abandoned) {
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
    ap_main: ApMain,
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
            ap_main as *const () as u64,
        )
    };

    let mut next_id = 1usize;
    for &apic_id in topo.apic_ids.iter().filter(|&&a| a != bsp_apic) {
        if next_id >= MAX_CPUS {
            break;
        }
        // The id is only ever read by the AP that wins this attempt's slot.
        let cpu = CpuId::from_index(next_id);
        let block = Box::leak(Box::new(ApBoot {
            cpu,
            apic_id,
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
        percpu::slot(cpu).set_apic_id(Some(apic_id));
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
            percpu::slot(cpu).set_apic_id(None);
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
        percpu::slot(cpu).bringup_cycles.store(
            block.online_tsc.load(Ordering::Acquire) - t0,
            Ordering::SeqCst,
        );
        percpu::mark_online();
        next_id += 1;
    }
    // Every winner is online, past its switch to the kernel root; losers
    // park before enabling paging: nobody runs on the bring-up tables now.
    pt.clear_user_half(&mut DirectMem, |_, _, _, _| {});
    let _ = mem::free_frame(kcore::frame::PhysFrame::containing(pt.root()));
    // The trampoline page stays reserved: parked APs execute it forever.
    Ok(())
}

/// The last step of an AP's bring-up, after the per-CPU init sequence:
/// tells the waiting boot CPU it is online.
pub fn ap_online(block: &ApBoot) {
    block.online_tsc.store(cpu::rdtsc(), Ordering::Release);
    // Release: the boot CPU's acquire load sees all of the AP's bring-up.
    block.online.store(true, Ordering::Release);
}

/// Serialises senders of the ping IPI.
static PING_LOCK: IrqMutex<()> = IrqMutex::new(());
/// Pings answered.
static PINGS: AtomicU64 = AtomicU64::new(0);

/// Handles the ping IPI: counts it.
pub fn on_ping() {
    if testhooks::PANIC_ON_PING.load(Ordering::SeqCst) {
        panic!(
            "deliberate panic on CPU {} (ktest=ap-panic)",
            percpu::cpu_id()
        );
    }
    if testhooks::HOLD_SERIAL_ON_PING.swap(false, Ordering::SeqCst) {
        hold_serial();
    }
    PINGS.fetch_add(1, Ordering::Release);
}

/// Set once a CPU holds the serial lock for `stop.midline`.
static SERIAL_HELD: AtomicBool = AtomicBool::new(false);

/// The `stop.midline` hook's victim: opens a line under the serial lock
/// and keeps the lock (interrupts off) until the stop's NMI halts it.
fn hold_serial() -> ! {
    use core::fmt::Write;
    let mut serial = crate::logger::SERIAL.lock();
    let _ = write!(
        serial,
        "stop.midline: CPU {} stopped mid-line",
        percpu::cpu_id()
    );
    // SeqCst: the waiting CPU's load; the bytes are out already (port I/O).
    SERIAL_HELD.store(true, Ordering::SeqCst);
    loop {
        core::hint::spin_loop();
    }
}

/// The `stop.midline` hook (`panic::before_power_off`): makes another
/// online CPU hold the serial lock in the middle of a line and waits (at
/// most 1 s) until it does. Nothing if this is the only CPU.
pub fn hold_serial_elsewhere() {
    let me = percpu::cpu_id();
    let Some(id) = percpu::online_cpus()
        .filter(|pc| pc.id() != me)
        .find_map(|pc| pc.apic_id())
    else {
        return;
    };
    testhooks::HOLD_SERIAL_ON_PING.store(true, Ordering::SeqCst);
    apic::send_ipi(apic::PING_VECTOR, id);
    let deadline = cpu::rdtsc() + 1000 * apic::tsc_per_ms();
    while !SERIAL_HELD.load(Ordering::SeqCst) && cpu::rdtsc() < deadline {
        core::hint::spin_loop();
    }
}

/// Ping IPIs handled so far, on every CPU.
pub fn pings() -> u64 {
    PINGS.load(Ordering::Acquire)
}

/// Sends a ping IPI to `cpu` and waits for it to be handled; returns the
/// round trip in TSC cycles, or `None` if the CPU is not online.
pub fn ping(cpu: CpuId) -> Option<u64> {
    let id = percpu::slot(cpu).apic_id()?;
    if cpu == percpu::cpu_id() {
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
