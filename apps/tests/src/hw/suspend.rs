//! `thread_suspend` / `thread_resume`: a suspended thread does not run
//! until resumed, whatever it was doing.

use super::{sleep_ms, unit};
use crate::note;
use crate::util::{expect_err, ok, TestResult};
use abi::status::Status;
use abi::{rights, Error};
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::hw;
use libipc::ipc::{self, Notification};
use libipc::sys::{self, ThreadHandle};

static SPINS: AtomicU64 = AtomicU64::new(0);
static WOKEN: AtomicU64 = AtomicU64::new(0);
static SELF_DONE: AtomicU64 = AtomicU64::new(0);

/// Counts for ever (until killed).
extern "C" fn spinner(_: u64) -> ! {
    loop {
        SPINS.fetch_add(1, Ordering::Relaxed);
        crate::util::relax();
    }
}

/// Waits on notification `arg`, then counts the wake-up; for ever.
extern "C" fn ntf_waiter(arg: u64) -> ! {
    loop {
        if ipc::wait(Notification(arg as u32), None).is_ok() {
            WOKEN.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Suspends itself through the handle at `*arg` (set before the parent lets
/// it go), then records that it was resumed.
extern "C" fn self_suspender(arg: u64) -> ! {
    // SAFETY: the parent keeps the AtomicU64 alive until it joined this thread.
    let h = unsafe { &*(arg as *const AtomicU64) };
    let mut raw = 0;
    while raw == 0 {
        raw = h.load(Ordering::SeqCst);
        sys::yield_now();
    }
    let r = hw::thread_suspend(ThreadHandle::from_raw(raw as u32));
    SELF_DONE.store(if r.is_ok() { 1 } else { 2 }, Ordering::SeqCst);
    sys::thread_exit(0)
}

/// Case: a suspended thread does not run — whether it was spinning, blocked
/// in IPC (it stays stopped after the IPC completes) or suspended itself —
/// until resumed; a suspended thread can be killed; refusals for bad
/// handles, kinds and rights.
pub fn thread_suspend_and_resume() -> TestResult {
    // Spinning.
    let t = crate::util::spawn(spinner, 0)?;
    sleep_ms(10);
    ok(hw::thread_suspend(t.handle()), "suspend the spinner")?;
    // The stop is asynchronous (the spinner's CPU is kicked and it parks
    // at its next kernel exit), and a vCPU of a loaded host may take that
    // kick late: wait for two samples 10 ms apart to agree (2 s at most),
    // then the count must stand still for 50 ms more.
    let mut c1 = SPINS.load(Ordering::Relaxed);
    let t0 = sys::clock_ns();
    loop {
        sleep_ms(10);
        let c = SPINS.load(Ordering::Relaxed);
        if c == c1 || sys::clock_ns() - t0 > 2_000_000_000 {
            break;
        }
        c1 = c;
    }
    sleep_ms(50);
    let c2 = SPINS.load(Ordering::Relaxed);
    if c1 != c2 {
        note!("the spinner counted {c1} -> {c2} while suspended");
        return Err("a suspended thread ran");
    }
    ok(hw::thread_resume(t.handle()), "resume the spinner")?;
    sleep_ms(20);
    if SPINS.load(Ordering::Relaxed) == c2 {
        return Err("a resumed thread did not run again");
    }
    // Suspended, then killed: the kill ends it.
    ok(hw::thread_suspend(t.handle()), "suspend again")?;
    sleep_ms(10);
    ok(sys::thread_kill(t.handle()), "kill the suspended thread")?;
    if t.join()? != Status::Exited(-1) {
        return Err("a killed suspended thread did not end with exited(-1)");
    }
    // Blocked in IPC.
    let n = ok(ipc::notification_create(), "notification_create")?;
    let w = crate::util::spawn(ntf_waiter, n.0 as u64)?;
    sleep_ms(10);
    ok(hw::thread_suspend(w.handle()), "suspend the waiter")?;
    let before = WOKEN.load(Ordering::SeqCst);
    ok(ipc::signal(n, 1), "signal")?;
    sleep_ms(50);
    if WOKEN.load(Ordering::SeqCst) != before {
        return Err("a thread suspended in IPC ran when the IPC completed");
    }
    ok(hw::thread_resume(w.handle()), "resume the waiter")?;
    let t0 = sys::clock_ns();
    while WOKEN.load(Ordering::SeqCst) == before && sys::clock_ns() - t0 < 2_000_000_000 {
        sleep_ms(1);
    }
    if WOKEN.load(Ordering::SeqCst) == before {
        return Err("a resumed waiter did not finish its IPC");
    }
    ok(sys::thread_kill(w.handle()), "kill the waiter")?;
    let _ = w.join()?;
    // Hostile handles.
    expect_err(
        unit(hw::thread_suspend(ThreadHandle::from_raw(u32::MAX))),
        &[Error::BadHandle],
        "suspend of a bogus handle",
    )?;
    expect_err(
        unit(hw::thread_resume(ThreadHandle::from_raw(n.0))),
        &[Error::WrongType],
        "resume of a notification",
    )?;
    // Itself.
    let slot = AtomicU64::new(0);
    let s = crate::util::spawn(self_suspender, &slot as *const AtomicU64 as u64)?;
    let weak = ok(
        ipc::handle_dup(s.handle().raw(), rights::WAIT, 0),
        "dup WAIT",
    )?;
    expect_err(
        unit(hw::thread_suspend(ThreadHandle::from_raw(weak))),
        &[Error::PermissionDenied],
        "suspend without KILL",
    )?;
    let _ = ipc::handle_close(weak);
    let own = ok(
        ipc::handle_dup(s.handle().raw(), rights::KILL, 0),
        "dup KILL",
    )?;
    slot.store(u64::from(own), Ordering::SeqCst);
    sleep_ms(50);
    if SELF_DONE.load(Ordering::SeqCst) != 0 {
        return Err("a thread that suspended itself went on");
    }
    ok(
        hw::thread_resume(s.handle()),
        "resume the self-suspended thread",
    )?;
    if s.join()? != Status::Exited(0) || SELF_DONE.load(Ordering::SeqCst) != 1 {
        return Err("a self-suspended thread did not return 0 from its suspend");
    }
    ok(ipc::handle_close(n.0), "close")?;
    Ok(())
}
