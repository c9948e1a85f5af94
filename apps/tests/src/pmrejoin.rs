//! Attacks on init's re-adoption after a procmgr restart (breaku2,
//! session 20; gaps2 built it). Each case restarts procmgr, so they run
//! last, after `pmrestart`'s.

use crate::note;
use crate::util::{check, TestResult};
use libipc::ipc::{self, Endpoint};
use libipc::names;
use libipc::procmgr as pm;
use libipc::server::Caller;
use libipc::sys;

/// Handles the case may hold at once: more than a process's table
/// (`MAX_HANDLES`, 256, in the kernel).
const FILL: usize = 300;

/// How long the case waits for init's re-adoption to answer.
const READOPT_NS: u64 = 5_000_000_000;

/// What init's `Rejoin` says of this program now.
fn rejoin_answer(names_ep: Endpoint) -> Result<names::Reply<'static>, &'static str> {
    let mut buf = [0u8; 64];
    let mut c = names::Client::new(Caller::new(names_ep, Some(1_000_000)), &mut buf);
    match c.rejoin() {
        Ok(names::Reply::Rejoined { handle }) => Ok(names::Reply::Rejoined { handle }),
        Ok(names::Reply::NotFound {}) => Ok(names::Reply::NotFound {}),
        _ => Err("Rejoin was not answered Rejoined or NotFound"),
    }
}

/// Restarts procmgr through init's test control.
fn restart_procmgr(names_ep: Endpoint) -> TestResult {
    let mut buf = [0u8; 128];
    let mut c = names::Client::new(Caller::new(names_ep, Some(1_000_000)), &mut buf);
    check(
        matches!(c.restart(pm::NAME), Ok(names::Reply::Restarting {})),
        "the Restart control was refused",
    )
}

/// Case: a re-adoption that fails (here: this program's handle table is
/// full, so the successor cannot give it an endpoint) must not make init
/// forget the program. Before the fix init dropped the record on any
/// failed adoption, so `Rejoin` answered `NotFound` and no later restart
/// ever adopted the program again (a procmgr that died while being adopted
/// into did the same to every program init holds). Now the record stays,
/// with no endpoint (`Rejoined { handle: 0 }`: the client gives up at once
/// instead of polling), and the next restart adopts it again.
pub fn failed_readoption_is_retried() -> TestResult {
    let (names_ep, old) = adoption()?;
    // Fill this program's handle table.
    let mut held = [0u32; FILL];
    let mut n = 0;
    while n < FILL {
        match ipc::notification_create() {
            Ok(h) => {
                held[n] = h.0;
                n += 1;
            }
            Err(_) => break,
        }
    }
    let r = restart_and_watch(names_ep, old);
    for &h in &held[..n] {
        let _ = ipc::handle_close(h);
    }
    let first = r?;
    note!("{n} handles held; init's record after the failed re-adoption: {first:?}");
    check(
        !matches!(first, names::Reply::NotFound {}),
        "init forgot this program after one failed re-adoption",
    )?;
    check(
        matches!(first, names::Reply::Rejoined { handle: 0 }),
        "a failed re-adoption left a record naming an endpoint",
    )?;
    // A call now: no endpoint, so an error at once (not a 5 s poll).
    let start = sys::clock_ns();
    let r = pm::getpid();
    let ms = (sys::clock_ns() - start) / 1_000_000;
    note!("getpid with no procmgr endpoint: {r:?} in {ms} ms");
    check(r.is_err(), "getpid answered with no procmgr endpoint")?;
    check(
        ms < 1_000,
        "getpid polled init's record though it names none",
    )?;
    // The next restart adopts it again: its calls work again.
    restart_procmgr(names_ep)?;
    readopted(names_ep, 0)?;
    let pid = pm::getpid().map_err(|e| {
        note!("getpid after the second restart: {e}");
        "getpid failed after the next restart"
    })?;
    note!("getpid after the second restart: {pid}");
    Ok(())
}

/// Restarts procmgr (this program's table full) and waits until init's
/// record of this program moved on from handle `old`: what it says then.
fn restart_and_watch(names_ep: Endpoint, old: u64) -> Result<names::Reply<'static>, &'static str> {
    restart_procmgr(names_ep)?;
    let start = sys::clock_ns();
    loop {
        match rejoin_answer(names_ep)? {
            names::Reply::Rejoined { handle } if handle == old => {}
            other => return Ok(other),
        }
        if sys::clock_ns() - start > READOPT_NS {
            return Err("init's re-adoption never answered");
        }
        sys::sleep_ns(10_000_000);
    }
}

/// Waits until init's record of this program names an endpoint other than
/// `old` (and not none): init re-adopted it.
fn readopted(names_ep: Endpoint, old: u64) -> TestResult {
    let start = sys::clock_ns();
    loop {
        if let names::Reply::Rejoined { handle } = rejoin_answer(names_ep)? {
            if handle != 0 && handle != old {
                return Ok(());
            }
        }
        if sys::clock_ns() - start > READOPT_NS {
            return Err("init did not adopt this program again");
        }
        sys::sleep_ns(10_000_000);
    }
}

/// Case: `fork` as the first procmgr call after a restart finds the
/// successor, as every other call does. Before the fix `fork` called
/// through the bare endpoint, not libipc's rejoining client, so it failed
/// with the dead endpoint's error although init had adopted this program
/// into the successor.
pub fn fork_first_after_a_restart_rejoins() -> TestResult {
    let (names_ep, old) = adoption()?;
    restart_procmgr(names_ep)?;
    readopted(names_ep, old)?;
    let child = match pm::fork() {
        Ok(pm::Fork::Parent(c)) => c,
        Ok(pm::Fork::Child) => pm::exit(5),
        Err(e) => {
            note!("fork as the first call after the restart: {e}");
            return Err("fork did not find the restarted procmgr");
        }
    };
    match pm::wait(Some(child), Some(5_000_000)) {
        Ok((c, pm::Ended::Exited(5))) if c == child => Ok(()),
        other => {
            note!("wait for the child: {other:?}");
            Err("the child forked after the restart was not reaped with its code")
        }
    }
}

/// The name service's endpoint and the procmgr handle init's adoption
/// record of this program names (checking procmgr answers first).
fn adoption() -> Result<(Endpoint, u64), &'static str> {
    let names_ep: Endpoint =
        names::endpoint(1_000_000_000).ok_or("init gave no name-service handle")?;
    pm::getpid().map_err(|_| "procmgr was not reachable before the restart")?;
    match rejoin_answer(names_ep)? {
        names::Reply::Rejoined { handle } => Ok((names_ep, handle)),
        _ => Err("init holds no adoption record of this program"),
    }
}
