//! The untimed wait's recheck (lead, session 19: `wait(_, None)` cancels
//! and re-issues its `WaitOn` every `RECHECK_US`), attacked by breakx: a
//! wait that rechecked delivers its child once, and leaves no record or
//! signal behind for the next waits.

use crate::note;
use crate::util::TestResult;
use libipc::procmgr::{self as pm, Ended, Fork};
use libipc::sys;

/// Forks a child that sleeps `ms` and exits with `code`.
fn child(ms: u64, code: i32) -> Result<u32, &'static str> {
    match pm::fork() {
        Ok(Fork::Parent(pid)) => Ok(pid),
        Ok(Fork::Child) => {
            sys::sleep_ns(ms * 1_000_000);
            pm::exit(code)
        }
        Err(e) => {
            note!("fork: {e}");
            Err("fork failed")
        }
    }
}

/// An untimed wait must give exactly `(pid, Exited(code))`.
fn expect_wait(pid: Option<u32>, want: (u32, i32)) -> TestResult {
    match pm::wait(pid, None) {
        Ok((p, Ended::Exited(c))) if (p, c) == want => Ok(()),
        other => {
            note!("wait({pid:?}) gave {other:?}, wanted {want:?}");
            Err("an untimed wait gave the wrong child or status")
        }
    }
}

/// A child outliving one recheck (1.5 s) is reaped once with its status;
/// the next untimed waits (by PID, then any, with two children ending
/// around the next recheck) each get their own child; then no child is
/// left (`NotFound`, not a second delivery).
pub fn rechecked_wait_delivers_once() -> TestResult {
    let a = child(1_500, 21)?;
    expect_wait(Some(a), (a, 21))?;
    let b = child(0, 22)?;
    expect_wait(Some(b), (b, 22))?;
    let c = child(950, 23)?;
    let d = child(1_050, 24)?;
    let (first, second) = (pm::wait(None, None), pm::wait(None, None));
    let mut got = [first, second].map(|r| match r {
        Ok((p, Ended::Exited(code))) => Some((p, code)),
        _ => None,
    });
    got.sort_unstable();
    let mut want = [Some((c, 23)), Some((d, 24))];
    want.sort_unstable();
    if got != want {
        note!("wait-any gave {got:?}, wanted {want:?}");
        return Err("wait-any around a recheck lost or repeated a child");
    }
    match pm::wait(None, Some(200_000)) {
        Err(abi::Error::NotFound) => Ok(()),
        other => {
            note!("a wait with no children left: {other:?}");
            Err("a wait with no children left did not say NotFound")
        }
    }
}
