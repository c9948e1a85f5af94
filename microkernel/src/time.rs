//! Time: `clock_ns` from the TSC (calibrated against the PIT at boot, see
//! [`crate::arch::apic`]). The sleep list is a scheduler wait queue
//! ([`crate::sched::sleep`]).

use crate::arch::{apic, cpu};
use core::sync::atomic::{AtomicU64, Ordering};

static BOOT_TSC: AtomicU64 = AtomicU64::new(0);

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
