//! ipcfast (issue 10): cases for what the fast-path work changed outside
//! IPC itself.
//!
//! The context switch's I/O-bitmap step became one compare of a version
//! key (`arch::iopb`): a thread that was switched in before its process
//! enabled a port must still get that port at once, through the #GP
//! refresh, when it runs on another CPU and is never switched again.

use crate::util::{self, ok, TestResult};
use abi::status::Status;
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::hw::{self, IoPorts};
use libipc::sys;

/// The hardware roots init gives this program (see `hw.rs`).
const IOPORTS_ROOT: IoPorts = IoPorts(abi::boot_handles::tests::IOPORTS);
/// COM1's scratch register: no UART function, never used by the kernel's
/// log, and not enabled in this program by any other case.
const COM1_SCRATCH: u16 = 0x3ff;

/// 0: spawned; 1: running (and spinning) on its CPU; 2: go.
static PHASE: AtomicU64 = AtomicU64::new(0);

/// Pinned to CPU `cpu`, spins there (never blocking, so never switched in
/// again once the port is enabled), then reads and writes the port.
extern "C" fn sibling(cpu: u64) -> ! {
    if sys::set_affinity(cpu).is_err() {
        sys::thread_exit(2);
    }
    PHASE.store(1, Ordering::Release);
    while PHASE.load(Ordering::Acquire) != 2 {
        crate::util::relax();
    }
    hw::outb(COM1_SCRATCH, 0x5a);
    let ok = hw::inb(COM1_SCRATCH) == 0x5a;
    sys::thread_exit(if ok { 0 } else { 3 })
}

/// Case: a sibling thread already running on another CPU (its switch-in
/// saw this process's bitmap without the port) uses a port this thread
/// enables meanwhile: its first `out` faults, the refresh loads the new
/// version and the instruction is retried, so it never sees the fault.
pub fn port_enabled_by_a_sibling_is_usable_at_once() -> TestResult {
    let cpus = sys::cpu_count();
    let other = if cpus >= 2 { 1 } else { 0 };
    let grant = ok(
        hw::ioport_grant(IOPORTS_ROOT, COM1_SCRATCH as u64, 1),
        "grant COM1's scratch register",
    )?;
    PHASE.store(0, Ordering::Relaxed);
    let t = util::spawn(sibling, other)?;
    // At -smp 1 the sibling runs only when this thread blocks or yields.
    let t0 = sys::clock_ns();
    while PHASE.load(Ordering::Acquire) != 1 {
        if sys::clock_ns() - t0 > 5_000_000_000 {
            let _ = sys::thread_kill(t.handle());
            let _ = t.join();
            return Err("the sibling never started");
        }
        sys::yield_now();
    }
    let enabled = hw::ioport_enable(grant);
    PHASE.store(2, Ordering::Release);
    let st = t.join()?;
    let _ = libipc::ipc::handle_close(grant.0);
    ok(enabled, "ioport_enable")?;
    match st {
        Status::Exited(0) => Ok(()),
        Status::Faulted(13) => {
            Err("the sibling faulted on a port its process had enabled (no refresh)")
        }
        other => {
            crate::note!("the sibling ended with {other:?}");
            Err("the sibling did not use the port")
        }
    }
}
