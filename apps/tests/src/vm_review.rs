//! Review cases for the chunked, preemptible address-space syscalls (issue 7
//! items 12-13): the edit flag that serialises one space's map/unmap/protect
//! across their preemption points.

use crate::note;
use crate::util::{self, TestResult};
use abi::prot;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use libipc::{bench::rdtsc, sys};

/// The low-priority editor's range (remapped over and over).
const L_AT: u64 = 0x6800_0000_0000;
const L_BYTES: u64 = 32 << 20;
/// The page the high-priority thread reprotects.
const H_PAGE: u64 = 0x6900_0000_0000;
/// How long the middle-priority hog spins at most.
const HOG_MS: u64 = 3000;
/// The longest the high-priority thread may wait for the edit flag: one of
/// the low thread's operations (tens of ms) plus ticks, far below `HOG_MS`.
const WAIT_LIMIT_MS: u64 = 1500;

static STOP: AtomicBool = AtomicBool::new(false);
/// Set once the low editor is inside its loop: the other two start.
static GO: AtomicBool = AtomicBool::new(false);
/// How many of the high thread and the hog have taken their priorities.
static READY: AtomicU64 = AtomicU64::new(0);
static H_DONE: AtomicBool = AtomicBool::new(false);
static L_OPS: AtomicU64 = AtomicU64::new(0);
static L_ERR: AtomicU64 = AtomicU64::new(0);
static HOG_TIMED_OUT: AtomicBool = AtomicBool::new(false);
static H_WAIT_TSC: AtomicU64 = AtomicU64::new(0);
static H_ERR: AtomicU64 = AtomicU64::new(0);
/// The best priority this process may take (its MCP).
static BASE: AtomicU64 = AtomicU64::new(0);

/// Counts the caller ready, then sleeps until `GO` (threads start at the
/// default priority: they take their own before the low editor runs).
fn wait_for_go() {
    READY.fetch_add(1, Ordering::SeqCst);
    while !GO.load(Ordering::SeqCst) && !STOP.load(Ordering::SeqCst) {
        sys::sleep_ns(1_000_000);
    }
}

/// Low priority: maps and unmaps a large range until told to stop, so it
/// holds the edit flag nearly all the time, across many preemption points.
extern "C" fn low_editor(_: u64) -> ! {
    let ok = util::pin0() && sys::set_priority(BASE.load(Ordering::SeqCst) + 2).is_ok();
    while ok && !STOP.load(Ordering::SeqCst) {
        if sys::map_anon(L_AT, L_BYTES, prot::WRITE).is_err() {
            L_ERR.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: only this thread uses the range.
        let _ = unsafe { sys::unmap(L_AT, L_BYTES) };
        L_OPS.fetch_add(1, Ordering::SeqCst);
    }
    sys::thread_exit(if ok { 0 } else { 1 })
}

/// Middle priority: spins on CPU 0 until the high thread is done (or
/// `HOG_MS` passed), never entering the kernel.
extern "C" fn middle_hog(_: u64) -> ! {
    let ok = util::pin0() && sys::set_priority(BASE.load(Ordering::SeqCst) + 1).is_ok();
    wait_for_go();
    let deadline = util::deadline_ms(HOG_MS);
    while ok && !H_DONE.load(Ordering::SeqCst) {
        if rdtsc() > deadline {
            HOG_TIMED_OUT.store(true, Ordering::SeqCst);
            break;
        }
        crate::util::relax();
    }
    sys::thread_exit(if ok { 0 } else { 1 })
}

/// High priority: one small `protect`, which must wait for the edit flag.
extern "C" fn high_editor(_: u64) -> ! {
    let ok = util::pin0() && sys::set_priority(BASE.load(Ordering::SeqCst)).is_ok();
    wait_for_go();
    let t0 = rdtsc();
    // SAFETY: the page is this case's alone.
    if ok && unsafe { sys::protect(H_PAGE, 4096, prot::WRITE) }.is_err() {
        H_ERR.fetch_add(1, Ordering::SeqCst);
    }
    H_WAIT_TSC.store(rdtsc() - t0, Ordering::SeqCst);
    H_DONE.store(true, Ordering::SeqCst);
    sys::thread_exit(if ok { 0 } else { 1 })
}

/// Case: a high-priority thread that needs its space's edit flag while a
/// low-priority thread of the same process holds it (preempted inside a long
/// `map_anon`/`unmap` on the same CPU) is not held up by a middle-priority
/// CPU hog: the holder runs at the process's priority ceiling, finishes, and
/// the high thread proceeds. Without the ceiling the holder never runs again
/// while the hog spins (unbounded priority inversion; the hog gives up after
/// `HOG_MS` here, so the failure is a slow wait, not a hang).
pub fn edit_flag_holder_is_not_starved_by_a_middle_priority_hog() -> TestResult {
    let base = (0..=abi::MAX_PRIORITY - 2)
        .find(|&p| sys::set_priority(p).is_ok())
        .ok_or("no priority with two worse ones below it")?;
    BASE.store(base, Ordering::SeqCst);
    READY.store(0, Ordering::SeqCst);
    for f in [&STOP, &GO, &H_DONE, &HOG_TIMED_OUT] {
        f.store(false, Ordering::SeqCst);
    }
    for c in [&L_OPS, &L_ERR, &H_WAIT_TSC, &H_ERR] {
        c.store(0, Ordering::SeqCst);
    }
    if !util::pin0() {
        let _ = sys::set_priority(4);
        return Err("set_affinity(0) failed");
    }
    sys::map_anon(H_PAGE, 4096, 0).map_err(|_| "map_anon(H_PAGE) failed")?;
    let r = (|| {
        // The high thread and the hog take their priorities first (they
        // start at the default one, which the low editor would starve).
        let high = util::spawn(high_editor, 0)?;
        let hog = util::spawn(middle_hog, 0)?;
        while READY.load(Ordering::SeqCst) < 2 {
            sys::sleep_ns(1_000_000);
        }
        // Let the low editor get into its loop, then let the other two go:
        // they wake at a tick, most likely while it is inside an operation.
        let low = util::spawn(low_editor, 0)?;
        while L_OPS.load(Ordering::SeqCst) == 0 {
            sys::sleep_ns(1_000_000);
        }
        sys::sleep_ns(3_000_000);
        GO.store(true, Ordering::SeqCst);
        // Bounded: a kernel that starves the high thread fails the case
        // (the low editor stops looping at the deadline), it does not hang.
        let deadline = util::deadline_ms(HOG_MS + 2000);
        while !H_DONE.load(Ordering::SeqCst) && rdtsc() < deadline {
            sys::sleep_ns(1_000_000);
        }
        STOP.store(true, Ordering::SeqCst);
        let hs = high.join()?;
        let gs = hog.join()?;
        let ls = low.join()?;
        util::expect_ok(hs)?;
        util::expect_ok(gs)?;
        util::expect_ok(ls)?;
        let waited_ms = H_WAIT_TSC.load(Ordering::SeqCst) / util::tsc_per_ms();
        note!(
            "high thread waited {waited_ms} ms for the edit flag; low editor did {} ops; hog timed out: {}",
            L_OPS.load(Ordering::SeqCst),
            HOG_TIMED_OUT.load(Ordering::SeqCst)
        );
        if H_ERR.load(Ordering::SeqCst) != 0 || L_ERR.load(Ordering::SeqCst) != 0 {
            return Err("a map_anon or protect failed");
        }
        if HOG_TIMED_OUT.load(Ordering::SeqCst) || waited_ms > WAIT_LIMIT_MS {
            return Err("the edit-flag holder starved behind a middle-priority hog");
        }
        Ok(())
    })();
    // SAFETY: the case's own page; its threads are gone.
    let _ = unsafe { sys::unmap(H_PAGE, 4096) };
    let _ = sys::set_affinity(u64::MAX);
    let _ = sys::set_priority(4);
    r
}
