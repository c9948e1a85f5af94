//! A blocking thread's bounded poll of its CPU's queue for its own wake
//! (xcore, session 20): the cross-core round trip without the IPI and the
//! switches through the idle thread.

use super::CpuSched;
use crate::arch::cpu;
use crate::arch::percpu;
use core::sync::atomic::Ordering;

/// How long a blocking thread polls its CPU's queue for its own wake
/// before the CPU goes idle, at most: 20 us of TSC time and [`POLL_LOOKS`]
/// looks (a load, a TSC read and a `pause` each), and only when nothing
/// else is queued there ([`block`](super::block)). Interrupts stay off meanwhile, so
/// this also bounds the interrupt latency it adds. Bounded in time and
/// not only in looks: under QEMU's single-threaded icount mode each
/// `pause` hands the host thread to the other vCPUs for their whole
/// slice. The power argument: a CPU spins at most 20 us per thread that
/// blocks on it with nothing else to run, and not at all while nothing
/// runs (an idle shell prompt: docs/decisions.md, `## xcore (session
/// 20)`, measured). What it saves when the wake comes within the poll (a
/// partner on another CPU answering): the waker's IPI, the switch to the
/// idle thread, the interrupt entry and exit, and the switch back -- the
/// thread takes itself off the queue in `schedule_inner` and runs on.
const POLL_US: u64 = 20;
/// The most looks of one poll (the time bound's backstop).
const POLL_LOOKS: u32 = 256;

/// Polls this CPU's queue (interrupts off) until something is queued or
/// the bound passes, with the poll flag up so a waker sends no IPI. The
/// caller then schedules: `schedule_inner` takes what was queued under
/// the queue's lock (a waker that took the flag pushed first; one that
/// did not sends its IPI).
pub(super) fn poll_queue(c: &CpuSched) {
    // Idle for `pick_cpu` meanwhile (Relaxed: a hint, as everywhere): the
    // wake of this very thread, if it is unpinned, comes back here rather
    // than to another idle CPU, which could not run it before this poll
    // ends (`on_cpu`). Another thread queued here ends the poll (it runs
    // next, as it would have on the idle CPU).
    c.idle.store(true, Ordering::Relaxed);
    c.poll.begin();
    let until = cpu::rdtsc().saturating_add(POLL_US * crate::arch::apic::tsc_per_ms() / 1000);
    let mut found = false;
    for _ in 0..POLL_LOOKS {
        if c.queued.load(Ordering::Relaxed) > 0 {
            found = true;
            break;
        }
        if cpu::rdtsc() >= until {
            break;
        }
        core::hint::spin_loop();
    }
    if !found {
        // Relaxed: a statistic (the ring-3 `breakk2` case reads it).
        percpu::this().poll_misses.fetch_add(1, Ordering::Relaxed);
    }
    // Whether a waker took the flag does not matter here: either way the
    // thread it queued is in the queue `schedule_inner` pops next.
    let _ = c.poll.end();
    // Running again (this thread, or the switch below sets it anew).
    c.idle.store(false, Ordering::Relaxed);
}
