//! Time: `clock_ns` from the TSC (calibrated against the PIT at boot) and the
//! sleep list the timer interrupt checks.

use crate::arch::{apic, cpu};
use crate::sched;
use crate::sync::IrqMutex;
use crate::task::{State, Thread};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

static BOOT_TSC: AtomicU64 = AtomicU64::new(0);

/// Threads sleeping until their `wake_at_ns`.
static SLEEPERS: IrqMutex<Vec<Arc<Thread>>> = IrqMutex::new(Vec::new());

/// Marks time zero.
pub fn init() {
    BOOT_TSC.store(cpu::rdtsc(), Ordering::SeqCst);
}

/// Nanoseconds since boot.
pub fn now_ns() -> u64 {
    let per_ms = apic::tsc_per_ms().max(1) as u128;
    let ticks = cpu::rdtsc().saturating_sub(BOOT_TSC.load(Ordering::Relaxed)) as u128;
    (ticks * 1_000_000 / per_ms) as u64
}

/// Blocks the current thread for at least `ns` nanoseconds.
pub fn sleep_ns(ns: u64) {
    let t = sched::current_arc();
    t.wake_at_ns
        .store(now_ns().saturating_add(ns), Ordering::SeqCst);
    {
        let mut s = SLEEPERS.lock();
        t.set_state(State::Blocked);
        s.push(t);
    }
    sched::block();
    sched::check_killed();
}

/// Wakes every sleeper whose deadline passed (from the timer interrupt).
pub fn wake_sleepers() {
    let Some(mut s) = SLEEPERS.try_lock() else {
        return; // another CPU is at it; the next tick will do
    };
    if s.is_empty() {
        return;
    }
    let now = now_ns();
    let mut i = 0;
    while i < s.len() {
        let t = &s[i];
        if t.state() != State::Blocked
            || t.wake_at_ns.load(Ordering::Relaxed) <= now
            || t.killed.load(Ordering::Relaxed)
        {
            let t = s.swap_remove(i);
            sched::wake(&t);
        } else {
            i += 1;
        }
    }
}
