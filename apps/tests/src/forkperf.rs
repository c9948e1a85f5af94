//! forkperf (issue 11's fork and spawn aims): `procmgr::wait` keeps the
//! notification of a wait that ended clean for the next one, and a forked
//! child, which inherits the number but not the handle, forgets it.

use crate::util::{expect, fork_with, TestResult};
use abi::status::Ended;
use libipc::procmgr as pm;
use libipc::{sys, Error};

/// How long any one wait may take (a loaded TCG host is slow).
const WAIT_US: u32 = 10_000_000;

fn wait(pid: u32, us: u32) -> Result<Ended, Error> {
    pm::wait(Some(pid), Some(us)).map(|(_, st)| st)
}

/// Waits keep one notification: a wait after a clean one, a forked
/// child's own wait (the parent's kept handle number names nothing in the
/// child), a timed-out wait (whose notification procmgr may still signal,
/// so it is not kept) and the wait after it all reap the right status.
pub fn waits_keep_a_notification_and_forks_forget_it() -> TestResult {
    if pm::endpoint().is_none() {
        return Err("init did not adopt this program into procmgr");
    }
    // Two clean waits in a row: the second reuses the first's notification.
    for code in [3, 4] {
        let pid = fork_with(|| code)?;
        expect(wait(pid, WAIT_US), Ok(Ended::Exited(code)), "a clean wait")?;
    }
    // The child waits for a grandchild of its own, with the kept number
    // inherited: 10 + the grandchild's code if that wait worked.
    let pid = fork_with(|| {
        let Ok(g) = fork_with(|| 5) else {
            return 1;
        };
        match wait(g, WAIT_US) {
            Ok(Ended::Exited(c)) => 10 + c,
            Ok(_) => 2,
            Err(_) => 3,
        }
    })?;
    expect(
        wait(pid, WAIT_US),
        Ok(Ended::Exited(15)),
        "the forked child's own wait for its child",
    )?;
    // A wait that times out (the child sleeps 50 ms first), then one that
    // reaps: the timed-out wait's record is signalled later, into a
    // notification that was not kept.
    let pid = fork_with(|| {
        sys::sleep_ns(50_000_000);
        6
    })?;
    expect(wait(pid, 1_000), Err(Error::TimedOut), "a 1 ms wait")?;
    expect(
        wait(pid, WAIT_US),
        Ok(Ended::Exited(6)),
        "the wait after a timed-out one",
    )?;
    // And the next clean wait still works.
    let pid = fork_with(|| 7)?;
    expect(
        wait(pid, WAIT_US),
        Ok(Ended::Exited(7)),
        "a wait after that",
    )
}
