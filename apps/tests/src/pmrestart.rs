//! A wait with no timeout outlives no procmgr (breaku, session 19: a
//! procmgr restart during `wait(_, None)` left the waiter asleep for good,
//! since nobody ever signals a wait recorded at a dead procmgr).
//!
//! The case restarts procmgr, so it runs last: the restarted procmgr
//! starts with an empty table (the kernel gives no way to rebuild it:
//! docs/decisions.md, `## gaps2`). init adopts this program into the
//! successor again; the case after it checks that its procmgr calls work
//! again (gaps2), the other cases' children are gone.

use crate::note;
use crate::util::{self, check, TestResult};
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::ipc::Endpoint;
use libipc::names;
use libipc::procmgr as pm;
use libipc::server::Caller;
use libipc::sys;

/// The waiter's outcome: [`PENDING`] until its wait returns, then 1 for a
/// reaped child, or 2 + the error's code.
static OUTCOME: AtomicU64 = AtomicU64::new(PENDING);
const PENDING: u64 = 0;

/// How long the child sleeps: longer than the case waits for the waiter.
const CHILD_SLEEP_NS: u64 = 30_000_000_000;

/// How long the case gives the waiter to return after the restart: a few
/// rechecks ([`pm::RECHECK_US`]).
const PATIENCE_NS: u64 = 5 * pm::RECHECK_US as u64 * 1000;

/// The waiting thread: `wait(child, None)`.
extern "C" fn waiter(pid: u64) -> ! {
    let r = pm::wait(Some(pid as u32), None);
    let v = match r {
        Ok(_) => 1,
        Err(e) => 2 + e as u64,
    };
    // Release: pairs with the case's Acquire load of the outcome.
    OUTCOME.store(v, Ordering::Release);
    sys::thread_exit(0)
}

/// Case: a thread waits with no timeout for a child that sleeps on; init
/// restarts procmgr; the wait must end with an error within a few
/// rechecks, not sleep on.
pub fn restart_ends_an_untimed_wait() -> TestResult {
    check(pm::endpoint().is_some(), "init did not adopt this program")?;
    let names_ep: Endpoint =
        names::endpoint(1_000_000_000).ok_or("init gave no name-service handle")?;
    OUTCOME.store(PENDING, Ordering::Relaxed);
    let child = match pm::fork() {
        Ok(pm::Fork::Parent(pid)) => pid,
        Ok(pm::Fork::Child) => {
            sys::sleep_ns(CHILD_SLEEP_NS);
            pm::exit(0)
        }
        Err(e) => {
            note!("fork: {e}");
            return Err("fork failed");
        }
    };
    let t = util::spawn(waiter, u64::from(child))?;
    // Let the waiter's WaitOn be recorded first.
    sys::sleep_ns(200_000_000);
    let mut buf = [0u8; 128];
    let mut c = names::Client::new(Caller::new(names_ep, Some(1_000_000)), &mut buf);
    check(
        matches!(c.restart(pm::NAME), Ok(names::Reply::Restarting {})),
        "the Restart control was refused",
    )?;
    let start = sys::clock_ns();
    // Acquire: pairs with the waiter's Release store.
    while OUTCOME.load(Ordering::Acquire) == PENDING {
        if sys::clock_ns() - start > PATIENCE_NS {
            // The waiter sleeps on; the suite's end kills it.
            return Err("an untimed wait slept on after procmgr died");
        }
        sys::sleep_ns(10_000_000);
    }
    let _ = t.join();
    let v = OUTCOME.load(Ordering::Acquire);
    note!(
        "the wait ended {} ms after the restart (outcome {v}: 1 reaped, else 2 + error code)",
        (sys::clock_ns() - start) / 1_000_000
    );
    check(v != 1, "the wait reaped a child that still sleeps")
}

/// Case (gaps2), after [`restart_ends_an_untimed_wait`]: init adopted this
/// program again into the restarted procmgr, and libipc's client found the
/// new endpoint through the name service (`Rejoin`): `getpid` answers (a
/// new PID), a fork and its wait work again, and the child forked before
/// the restart is unknown to the successor (`NotFound`, not a hang).
pub fn restart_rejoins_inits_programs() -> TestResult {
    let before = pm::endpoint().ok_or("init did not adopt this program")?;
    let start = sys::clock_ns();
    let pid = pm::getpid().map_err(|e| {
        note!("getpid after the restart: {e}");
        "getpid failed after procmgr's restart"
    })?;
    note!(
        "getpid after the restart: {pid} ({} ms; endpoint {} -> {:?})",
        (sys::clock_ns() - start) / 1_000_000,
        before.0,
        pm::endpoint().map(|e| e.0)
    );
    let child = match pm::fork() {
        Ok(pm::Fork::Parent(c)) => c,
        Ok(pm::Fork::Child) => pm::exit(3),
        Err(e) => {
            note!("fork after the restart: {e}");
            return Err("fork failed after procmgr's restart");
        }
    };
    match pm::wait(Some(child), Some(5_000_000)) {
        Ok((c, pm::Ended::Exited(3))) if c == child => {}
        other => {
            note!("wait for the new child: {other:?}");
            return Err("the child forked after the restart was not reaped with its code");
        }
    }
    // Any child of the old table: the successor knows none.
    check(
        pm::wait(None, Some(100_000)).err() == Some(libipc::Error::NotFound),
        "a wait for the old table's children did not fail NotFound",
    )
}
