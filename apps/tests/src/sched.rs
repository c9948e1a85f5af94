//! Scheduling and time: preemption shares a CPU fairly enough, sleeps sleep,
//! the clock never runs backwards.

use crate::note;
use crate::util::{self, arg_of, deadline_ms, from_arg, TestResult};
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::{bench::rdtsc, sys};

/// One CPU-bound counter thread.
struct Counter {
    count: AtomicU64,
    spin_ms: u64,
    pinned: bool,
    /// Shared by both counters of a run: the start line.
    gate: *const Gate,
}

/// Both counters start counting at one moment, once both are pinned, and
/// stop at one deadline: otherwise the first one counts alone while the
/// second is still being created and migrated (hundreds of milliseconds on
/// a loaded host), and the comparison measures thread creation, not
/// preemption.
struct Gate {
    arrived: AtomicU64,
    /// The common deadline (TSC), set by the second to arrive; 0 before.
    end: AtomicU64,
}

extern "C" fn count_thread(arg: u64) -> ! {
    // SAFETY: `two_cpu_bound_threads_both_progress` passes a `Counter` with
    // `arg_of` and joins before touching or dropping it.
    let c: &mut Counter = unsafe { from_arg(arg) };
    c.pinned = util::pin0();
    // SAFETY: the gate outlives both threads (the test joins them first).
    let gate = unsafe { &*c.gate };
    if gate.arrived.fetch_add(1, Ordering::SeqCst) == 1 {
        gate.end.store(deadline_ms(c.spin_ms), Ordering::SeqCst);
    }
    // Both run on CPU 0: the first spins here until preemption lets the
    // second arrive.
    let end = loop {
        let e = gate.end.load(Ordering::SeqCst);
        if e != 0 {
            break e;
        }
        crate::util::relax();
    };
    while rdtsc() < end {
        c.count.fetch_add(1, Ordering::Relaxed);
    }
    sys::thread_exit(0)
}

/// Case 13: two threads pinned to CPU 0, neither yielding, both count for
/// ~200 ms; preemption must let both make comparable progress.
pub fn two_cpu_bound_threads_both_progress() -> TestResult {
    let gate = Gate {
        arrived: AtomicU64::new(0),
        end: AtomicU64::new(0),
    };
    let mut counters = [0, 1].map(|_| Counter {
        count: AtomicU64::new(0),
        spin_ms: 200,
        pinned: false,
        gate: &gate,
    });
    let [a, b] = &mut counters;
    let ta = util::spawn(count_thread, arg_of(a))?;
    let tb = util::spawn(count_thread, arg_of(b));
    if tb.is_err() {
        // The first must not wait at the gate for ever.
        gate.end.store(1, Ordering::SeqCst);
    }
    util::expect_ok(ta.join()?)?;
    util::expect_ok(tb?.join()?)?;
    if counters.iter().any(|c| !c.pinned) {
        return Err("set_affinity(0) failed");
    }
    let (x, y) = (
        counters[0].count.load(Ordering::Relaxed),
        counters[1].count.load(Ordering::Relaxed),
    );
    // Neither thread yields, and both count only between the common start
    // and the common deadline: so the one that got the CPU second counts at
    // all only if preemption took the CPU from the first within the window.
    // A count of 0 is starvation. The ratio bound is loose on purpose: the
    // host may stall this vCPU for most of the 200 ms (it then resumes past
    // the deadline with one thread on it), which skews the split without
    // any kernel fault -- seen at 1:60 with 24 vCPUs on 2 loaded host cores.
    let (lo, hi) = (x.min(y), x.max(y));
    if lo == 0 || lo * 100 < hi {
        note!("counts {x} and {y}");
        return Err("one CPU-bound thread starved the other");
    }
    Ok(())
}

/// Case 14: `sleep_ns(20 ms)` takes at least 20 ms and well under 2 s.
pub fn sleep_sleeps_at_least_requested() -> TestResult {
    let t0 = sys::clock_ns();
    sys::sleep_ns(20_000_000);
    let dt = sys::clock_ns().saturating_sub(t0);
    if dt < 20_000_000 {
        note!("slept {dt} ns");
        return Err("sleep_ns returned early");
    }
    if dt >= 2_000_000_000 {
        note!("slept {dt} ns");
        return Err("sleep_ns took far too long");
    }
    Ok(())
}

/// Case 15: 1000 `clock_ns` reads never go backwards (and the clock runs).
pub fn clock_is_monotonic() -> TestResult {
    let first = sys::clock_ns();
    let mut prev = first;
    for _ in 0..1000 {
        let now = sys::clock_ns();
        if now < prev {
            note!("{now} after {prev}");
            return Err("clock_ns went backwards");
        }
        prev = now;
    }
    sys::sleep_ns(1_000_000);
    if sys::clock_ns() <= first {
        return Err("clock_ns does not advance");
    }
    Ok(())
}
