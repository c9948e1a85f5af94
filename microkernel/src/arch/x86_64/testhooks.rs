//! Test hooks production code consults: flags the boot tests set from the
//! command line or `ktest`, read here at the bottom so that no production
//! file imports the test module (`ktest` sets them; nothing imports `ktest`).

use super::{apic, percpu, trap};
use core::sync::atomic::{AtomicBool, Ordering};

/// Set to make the next ping IPI panic on the CPU that receives it
/// (`ktest=ap-panic`).
pub static PANIC_ON_PING: AtomicBool = AtomicBool::new(false);

/// `nmi.storm=1` (a test hook): every timer tick on CPU 0 sends an NMI to
/// every other CPU, so the boot tests run with NMIs landing in ring 3 and in
/// the kernel everywhere (`smoke.sh` case `nmi-storm-smp4`).
pub static NMI_STORM: AtomicBool = AtomicBool::new(false);
/// `nmi.atstop=1` (a test hook, break21): the CPU that takes the machine
/// (a panic, a power-off) sends itself an NMI right after it stopped the
/// others, as a watchdog or a hardware report could at that moment; the
/// report must go on (`smoke.sh` cases `nmi-at-power-off`, `nmi-at-panic`).
pub static NMI_AT_STOP: AtomicBool = AtomicBool::new(false);
/// Set by `smp::hold_serial_elsewhere`: the next ping IPI makes its CPU
/// open a line under the serial lock and keep the lock until stopped.
pub static HOLD_SERIAL_ON_PING: AtomicBool = AtomicBool::new(false);
/// Whether the storm's "NMIs taken in ring 3" line was printed.
static NMI_STORM_REPORTED: AtomicBool = AtomicBool::new(false);
/// Ring-3 NMIs after which the storm reports (the boot test looks for it).
const NMI_STORM_REPORT_AT: u64 = 100;

/// Called by the timer interrupt: one step of the `nmi.storm` hook. Returns
/// the ring-3 NMI count once, when the caller is to print the report line.
pub fn nmi_storm_tick() -> Option<u64> {
    if !NMI_STORM.load(Ordering::Relaxed) || percpu::cpu_index() != 0 {
        return None;
    }
    apic::send_nmi_all_others();
    let from_user = trap::NMIS_FROM_USER.load(Ordering::Relaxed);
    (from_user >= NMI_STORM_REPORT_AT && !NMI_STORM_REPORTED.swap(true, Ordering::Relaxed))
        .then_some(from_user)
}
