//! breakit (issue 11, attacked): the ring-3 servers -- procmgr, the
//! loader, the console -- and the kernel calls they brought, driven as a
//! hostile client would. Each case names the finding it guards
//! (docs/decisions.md, `## breakit`). Forked children never print and end
//! with `procmgr::exit`, as in [`crate::procmgr`].

use crate::note;
use crate::util::{expect, TestResult};
use abi::status::Ended;
use libipc::procmgr::{self as pm, Fork};
use libipc::sys;
use libipc::Error;

/// How long any one real wait may take (a loaded TCG host is slow).
const WAIT_US: u32 = 10_000_000;

/// Forks; in the child runs `f` and exits with its result.
fn fork_child(f: impl FnOnce() -> i32) -> Result<u32, &'static str> {
    match pm::fork() {
        Ok(Fork::Parent(pid)) => Ok(pid),
        Ok(Fork::Child) => pm::exit(f()),
        Err(e) => {
            note!("fork: {e}");
            Err("fork")
        }
    }
}

fn wait_pid(pid: u32) -> Result<Ended, &'static str> {
    match pm::wait(Some(pid), Some(WAIT_US)) {
        Ok((p, st)) if p == pid => Ok(st),
        Ok(_) => Err("waitpid reaped another child"),
        Err(e) => {
            note!("waitpid({pid}): {e}");
            Err("waitpid failed")
        }
    }
}

/// Finding 1: procmgr's 32 waiter slots were one pool for every process,
/// and `procmgr::wait` with a timeout leaves its waiter recorded when the
/// timeout expires (procmgr cannot know the client stopped waiting). So
/// one process polling `wait(child, 1 ms)` on a long-running child filled
/// the pool, and every other process's blocking `wait` failed with
/// `NoMemory` until that child ended. Here this program times out 40
/// waits on a sleeper; meanwhile another child (with a child of its own)
/// must still be able to block in `wait`, and this program's own timed
/// waits must keep timing out (not turn into `NoMemory`).
pub fn timed_out_waits_do_not_starve_other_waiters() -> TestResult {
    if pm::endpoint().is_none() {
        return Err("init did not adopt this program into procmgr");
    }
    let sleeper = fork_child(|| {
        sys::sleep_ns(20_000_000_000);
        0
    })?;
    let mut timed_out = 0;
    let mut first_other = None;
    for _ in 0..40 {
        match pm::wait(Some(sleeper), Some(1_000)) {
            Err(Error::TimedOut) => timed_out += 1,
            other => {
                first_other.get_or_insert(other);
            }
        }
    }
    // A second child blocks in `wait` for a grandchild that ends soon.
    let other = fork_child(|| {
        let grandchild = match pm::fork() {
            Ok(Fork::Parent(pid)) => pid,
            Ok(Fork::Child) => {
                sys::sleep_ns(100_000_000);
                pm::exit(5)
            }
            Err(_) => return 3,
        };
        match pm::wait(Some(grandchild), Some(WAIT_US)) {
            Ok((_, Ended::Exited(5))) => 0,
            Err(Error::NoMemory) => 1,
            _ => 2,
        }
    });
    let other_status = other.and_then(wait_pid);
    let _ = pm::kill(sleeper);
    let sleeper_status = wait_pid(sleeper)?;
    if let Some(o) = first_other {
        note!("a timed wait on a running child answered {o:?}");
    }
    expect(
        other_status?,
        Ended::Exited(0),
        "another process's blocking wait (1: NoMemory, the waiters were full)",
    )?;
    expect(timed_out, 40, "timed waits that timed out")?;
    expect(sleeper_status, Ended::Killed, "the sleeper's status")
}
