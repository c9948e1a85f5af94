//! The local APIC (xAPIC or x2APIC, through the `x2apic` crate) and its timer.
//!
//! x2APIC mode is used whenever CPUID reports it. The timer is armed one
//! interrupt at a time — in TSC-deadline mode when the CPU has it, else in
//! one-shot mode with counts calibrated once, on the boot CPU, against the PIT
//! (channel 2, gated through port 0x61), which also calibrates the TSC that
//! [`crate::time`] uses for `clock_ns`. Each interrupt arms the next: the
//! scheduler's tick at [`TICK_HZ`], or earlier when a thread on this CPU
//! sleeps until before then ([`wake_me_by`]), so a sleeper's wake-up is not
//! rounded up to the next tick. (QEMU's TCG has no TSC-deadline timer, so the
//! boot tests exercise the one-shot mode.)

use super::cpu;
use super::percpu::{self, PerCpu};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use x2apic::lapic::{LocalApic, LocalApicBuilder, TimerDivide, TimerMode};
use x86_64::instructions::port::Port;

/// Timer interrupt vector.
pub const TIMER_VECTOR: u8 = 0x20;
/// Reschedule IPI vector.
pub const RESCHED_VECTOR: u8 = 0xf0;
/// TLB-shootdown IPI vector.
pub const TLB_VECTOR: u8 = 0xf1;
/// IPI round-trip test vector.
pub const PING_VECTOR: u8 = 0xf2;
/// APIC error vector.
pub const ERROR_VECTOR: u8 = 0xfe;
/// Spurious-interrupt vector.
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// Timer interrupts per second.
pub const TICK_HZ: u64 = 1000;

/// APIC timer counts (divide 16) per tick, from the boot CPU's calibration.
static TIMER_COUNT: AtomicU32 = AtomicU32::new(0);
/// TSC ticks per millisecond.
static TSC_PER_MS: AtomicU64 = AtomicU64::new(0);
/// APIC timer counts (divide 16) per millisecond.
static COUNT_PER_MS: AtomicU64 = AtomicU64::new(0);

/// Whether the local APICs run in x2APIC mode.
pub fn x2apic_mode() -> bool {
    cpu::cpuid(1, 0).ecx & (1 << 21) != 0
}

fn with_local<R>(f: impl FnOnce(&mut LocalApic) -> R) -> Option<R> {
    let pc = percpu::this_if_up()?;
    if !pc.apic_up.load(Ordering::Relaxed) {
        return None;
    }
    // SAFETY: this CPU's own record's APIC cell (the per-CPU sharing rule),
    // written (`apic_up`) by this CPU's `init_cpu`; callers run with
    // interrupts off or in interrupt context, so no re-entrant access aliases it.
    Some(f(unsafe { (*pc.apic.get()).assume_init_mut() }))
}

/// Enables this CPU's local APIC and starts its timer (TSC-deadline mode if
/// `tsc_deadline`, the CPU's CPUID bit). The boot CPU (`calibrate = true`)
/// measures the timer and TSC rates first.
pub fn init_cpu(calibrate: bool, tsc_deadline: bool) -> Result<(), &'static str> {
    // IA32_APIC_BASE: physical base of the xAPIC registers.
    // SAFETY: MSR 0x1b exists on every CPU with an APIC (all x86_64 CPUs).
    let base_phys = unsafe { cpu::rdmsr(0x1b) } & 0xffff_f000;
    let mut apic = LocalApicBuilder::new()
        .timer_vector(TIMER_VECTOR as usize)
        .error_vector(ERROR_VECTOR as usize)
        .spurious_vector(SPURIOUS_VECTOR as usize)
        .set_xapic_base(super::mmu::phys_to_virt(base_phys))
        .timer_mode(TimerMode::OneShot)
        .timer_divide(TimerDivide::Div16)
        .timer_initial(0)
        .build()?;
    // SAFETY: enabling the APIC of this CPU with vectors the IDT handles.
    unsafe { apic.enable() };
    if calibrate {
        let (tsc_per_ms, count_per_ms) = calibrate_with_pit(&mut apic);
        TSC_PER_MS.store(tsc_per_ms, Ordering::SeqCst);
        TIMER_COUNT.store(
            ((count_per_ms * 1000) / TICK_HZ).max(1) as u32,
            Ordering::SeqCst,
        );
        COUNT_PER_MS.store(count_per_ms.max(1), Ordering::SeqCst);
    }
    let me = percpu::this();
    let first = cpu::rdtsc() + tsc_per_tick();
    me.next_tick_tsc.store(first, Ordering::Relaxed);
    me.armed_tsc.store(first, Ordering::Relaxed);
    if tsc_deadline {
        // TSC-deadline mode: the LVT first, then the first deadline (SDM
        // 10.5.4.1); every tick arms the next one (`rearm_tick`).
        // SAFETY: this CPU's APIC; IA32_TSC_DEADLINE exists when CPUID says so.
        unsafe {
            apic.set_timer_mode(TimerMode::TscDeadline);
            apic.enable_timer();
            cpu::wrmsr(IA32_TSC_DEADLINE, cpu::rdtsc() + tsc_per_tick());
        }
        TSC_DEADLINE.store(true, Ordering::SeqCst);
    } else {
        // SAFETY: one-shot timer with the calibrated count, on this CPU's APIC;
        // every interrupt arms the next (`rearm_tick`).
        unsafe {
            apic.set_timer_mode(TimerMode::OneShot);
            apic.set_timer_divide(TimerDivide::Div16);
            apic.enable_timer();
            apic.set_timer_initial(TIMER_COUNT.load(Ordering::SeqCst));
        }
    }
    // SAFETY: this CPU's own record's APIC cell (the per-CPU sharing rule),
    // written before its timer can fire (IF off).
    unsafe { (*me.apic.get()).write(apic) };
    me.apic_up.store(true, Ordering::Relaxed);
    Ok(())
}

/// The TSC-deadline MSR.
const IA32_TSC_DEADLINE: u32 = 0x6e0;
/// Whether the timers run in TSC-deadline mode (all CPUs alike).
static TSC_DEADLINE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

fn tsc_per_tick() -> u64 {
    (tsc_per_ms() * 1000 / TICK_HZ).max(1)
}

/// Whether the timer runs in TSC-deadline mode (else periodic).
pub fn tsc_deadline_mode() -> bool {
    TSC_DEADLINE.load(Ordering::Relaxed)
}

/// Arms this CPU's timer to fire at `tsc` (at once if that has passed).
/// Interrupts must be off.
fn arm_at(me: &PerCpu, tsc: u64) {
    me.armed_tsc.store(tsc, Ordering::Relaxed);
    if tsc_deadline_mode() {
        // SAFETY: IA32_TSC_DEADLINE exists in this mode; a deadline (past or
        // future) only schedules this CPU's next timer interrupt.
        unsafe { cpu::wrmsr(IA32_TSC_DEADLINE, tsc.max(1)) };
        return;
    }
    let delta = tsc.saturating_sub(cpu::rdtsc()) as u128;
    let counts = delta * COUNT_PER_MS.load(Ordering::Relaxed) as u128
        / TSC_PER_MS.load(Ordering::Relaxed).max(1) as u128;
    let counts = counts.clamp(1, u32::MAX as u128) as u32;
    with_local(|a| {
        // SAFETY: writing the initial count starts this CPU's one-shot timer.
        unsafe { a.set_timer_initial(counts) }
    });
}

/// Arms this CPU's next timer interrupt from the timer interrupt. Returns
/// whether this interrupt is a scheduler tick (the tick period has passed)
/// rather than an early wake-up for a sleeper.
pub fn rearm_tick() -> bool {
    let me = percpu::this();
    let now = cpu::rdtsc();
    let mut next = me.next_tick_tsc.load(Ordering::Relaxed);
    let is_tick = now >= next;
    if is_tick {
        next = now + tsc_per_tick();
        me.next_tick_tsc.store(next, Ordering::Relaxed);
    }
    arm_at(me, next);
    is_tick
}

/// Makes this CPU's timer fire no later than `tsc` (a thread going to sleep
/// here until then). Interrupts must be off; the interrupt then wakes the
/// sleepers that are due, and re-arms the tick.
pub fn wake_me_by(tsc: u64) {
    let me = percpu::this();
    if tsc < me.armed_tsc.load(Ordering::Relaxed) {
        arm_at(me, tsc);
    }
}

/// Converts nanoseconds to TSC ticks (rounded up).
pub fn ns_to_tsc(ns: u64) -> u64 {
    let per_ms = tsc_per_ms().max(1) as u128;
    (ns as u128 * per_ms)
        .div_ceil(1_000_000)
        .min(u64::MAX as u128) as u64
}

/// Counts TSC ticks and APIC timer counts over 10 ms of PIT time.
fn calibrate_with_pit(apic: &mut LocalApic) -> (u64, u64) {
    const PIT_HZ: u64 = 1_193_182;
    const MS: u64 = 10;
    let count = (PIT_HZ * MS / 1000) as u16;
    let mut gate = Port::<u8>::new(0x61);
    let mut cmd = Port::<u8>::new(0x43);
    let mut ch2 = Port::<u8>::new(0x42);
    // SAFETY: PIT channel 2 and port 0x61 are standard PC hardware the kernel
    // owns; the speaker output stays off (bit 1 clear).
    unsafe {
        let g = gate.read() & !0x03;
        gate.write(g); // gate low (counting paused), speaker off
        cmd.write(0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
        ch2.write(count as u8);
        ch2.write((count >> 8) as u8);
        apic.set_timer_mode(TimerMode::OneShot);
        apic.set_timer_initial(u32::MAX);
        let t0 = cpu::rdtsc();
        gate.write(g | 0x01); // gate high: the 10 ms count-down starts
        while gate.read() & 0x20 == 0 {
            core::hint::spin_loop();
        }
        let t1 = cpu::rdtsc();
        let left = apic.timer_current();
        apic.set_timer_initial(0);
        ((t1 - t0) / MS, (u32::MAX - left) as u64 / MS)
    }
}

/// TSC ticks per millisecond (0 before calibration).
pub fn tsc_per_ms() -> u64 {
    TSC_PER_MS.load(Ordering::Relaxed)
}

/// Signals end of interrupt to this CPU's APIC.
pub fn eoi() {
    // SAFETY: EOI on this CPU's own APIC, from interrupt context.
    with_local(|a| unsafe { a.end_of_interrupt() });
}

/// The ICR destination field for `apic_id`: x2APIC takes the id as is, xAPIC in
/// bits 24..32 of the high dword (the crate writes the high dword verbatim).
fn icr_dest(apic_id: u32) -> u32 {
    if x2apic_mode() {
        apic_id
    } else {
        apic_id << 24
    }
}

/// Waits until the xAPIC has sent the last IPI (x2APIC has no pending state).
fn wait_icr_idle(a: &LocalApic) {
    if !x2apic_mode() {
        // SAFETY: reading the delivery-status bit of this CPU's ICR.
        while unsafe { a.get_ipi_delivery_status() } {
            core::hint::spin_loop();
        }
    }
}

/// Sends `vector` to the CPU with APIC id `apic_id`.
pub fn send_ipi(vector: u8, apic_id: u32) {
    with_local(|a| {
        // SAFETY: a fixed IPI with a vector the IDT handles.
        unsafe { a.send_ipi(vector, icr_dest(apic_id)) };
        wait_icr_idle(a);
    });
}

/// Sends an NMI to every other CPU (the panic path's stop-all).
pub fn send_nmi_all_others() {
    with_local(|a| {
        // SAFETY: an NMI to every other CPU; their NMI handler halts them when
        // the machine is stopping.
        unsafe { a.send_nmi_all(x2apic::lapic::IpiAllShorthand::AllExcludingSelf) };
        wait_icr_idle(a);
    });
}

/// Asks every other CPU to halt (panic path): an NMI, whose handler halts once
/// the machine is stopping.
pub fn stop_others() {
    if percpu::online() > 1 {
        send_nmi_all_others();
        delay_us(1000);
    }
}

/// Sends an NMI to the CPU with APIC id `apic_id` (possibly this one).
pub fn send_nmi(apic_id: u32) {
    with_local(|a| {
        // SAFETY: an NMI; the handler counts it and returns (or halts when the
        // machine is stopping).
        unsafe { a.send_nmi(icr_dest(apic_id)) };
        wait_icr_idle(a);
    });
}

/// Sends INIT to `apic_id` (AP bring-up).
pub fn send_init(apic_id: u32) {
    with_local(|a| {
        // SAFETY: INIT resets the target CPU, which is an AP not yet started.
        unsafe { a.send_init_ipi(icr_dest(apic_id)) };
        wait_icr_idle(a);
    });
}

/// Sends STARTUP with the trampoline page number to `apic_id`.
pub fn send_sipi(page: u8, apic_id: u32) {
    with_local(|a| {
        // SAFETY: starts the target AP in real mode at page * 4 KiB, where the
        // trampoline waits.
        unsafe { a.send_sipi(page, icr_dest(apic_id)) };
        wait_icr_idle(a);
    });
}

/// This CPU's APIC id.
pub fn local_id() -> u32 {
    if x2apic_mode() {
        // SAFETY: the x2APIC ID MSR exists in x2APIC mode.
        unsafe { cpu::rdmsr(0x802) as u32 }
    } else {
        // CPUID.1:EBX[31:24] is the initial xAPIC id.
        cpu::cpuid(1, 0).ebx >> 24
    }
}

/// Busy-waits `us` microseconds on the calibrated TSC.
pub fn delay_us(us: u64) {
    let end = cpu::rdtsc() + tsc_per_ms() * us / 1000;
    while cpu::rdtsc() < end {
        core::hint::spin_loop();
    }
}
