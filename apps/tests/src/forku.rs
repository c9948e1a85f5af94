//! forku (issue 11's fork aims, user side): procmgr's wake-up carries the
//! outcome of a wait (`abi::status::wake`), so a wait that times out must
//! take its waiter back (`CancelWait`) without losing a status that was
//! delivered in between, and a waiter that dies must leave procmgr sound.

use crate::note;
use crate::procmgr::Shared;
use crate::util::{check, expect, fork_with, ok, TestResult};
use abi::status::Ended;
use core::sync::atomic::Ordering;
use libipc::ipc::{self, Notification};
use libipc::procmgr::{self as pm, Reply};
use libipc::server::Caller;
use libipc::sys;
use libipc::wire::CopiedHandle;
use libipc::Error;

/// How long any one wait may take (a loaded TCG host is slow).
const WAIT_US: u32 = 10_000_000;
/// How long procmgr may take to record an end.
const SETTLE_NS: u64 = 5_000_000_000;

/// A child that sleeps until killed.
fn sleeper() -> Result<u32, &'static str> {
    fork_with(|| {
        sys::sleep_ns(60_000_000_000);
        0
    })
}

/// procmgr's entry for `pid`, if any.
fn entry(pid: u32) -> Result<Option<pm::ProcInfo>, &'static str> {
    let mut i = 0;
    while let Some(p) = ok(pm::list(i), "list")? {
        if p.pid == pid {
            return Ok(Some(p));
        }
        i = p.index + 1;
    }
    Ok(None)
}

/// Waits until `done(entry of pid)` holds (at most [`SETTLE_NS`]).
fn settle(pid: u32, done: impl Fn(Option<pm::ProcInfo>) -> bool, what: &'static str) -> TestResult {
    let t0 = sys::clock_ns();
    while !done(entry(pid)?) {
        if sys::clock_ns() - t0 > SETTLE_NS {
            note!("pid {pid}: {:?}", entry(pid)?.map(|p| p.zombie));
            return Err(what);
        }
        sys::sleep_ns(1_000_000);
    }
    Ok(())
}

/// Records a waiter for `pid` on `ntf` (cookie: its handle number), as
/// `procmgr::wait` does, without blocking.
fn record(pid: u32, ntf: Notification) -> TestResult {
    let ep = pm::endpoint().ok_or("init did not adopt this program into procmgr")?;
    let mut buf = [0u8; 128];
    let mut c = pm::Client::new(Caller::new(ep, None), &mut buf);
    match c.wait_on(u64::from(pid), CopiedHandle(ntf.0), u64::from(ntf.0)) {
        Ok(Reply::Queued {}) => Ok(()),
        other => {
            note!("wait_on({pid}): {other:?}");
            Err("WaitOn did not record the waiter")
        }
    }
}

/// A cancel that comes after procmgr delivered the status finds no waiter
/// and reads the status from the notification; a cancel before the end
/// takes the waiter back unsignalled and the end leaves a zombie for the
/// next wait. Either way nothing is lost.
pub fn cancel_after_delivery_reads_the_status() -> TestResult {
    check(pm::endpoint().is_some(), "no procmgr endpoint")?;
    let ntf = ok(ipc::notification_create(), "notification")?;
    let r = (|| {
        // Delivered first: the child is killed while our waiter is
        // recorded; procmgr reaps it for the waiter (its entry goes).
        let pid = sleeper()?;
        record(pid, ntf)?;
        ok(pm::kill(pid), "kill")?;
        settle(
            pid,
            |e| e.is_none(),
            "the killed child was not reaped for the waiter",
        )?;
        expect(
            pm::cancel_wait(ntf),
            Ok(Some((pid, Ended::Killed))),
            "a cancel after the delivery",
        )?;
        expect(
            pm::wait(Some(pid), Some(WAIT_US)),
            Err(Error::NotFound),
            "a second wait for a reaped child",
        )?;
        // Cancelled first: nothing is signalled, the end is a zombie.
        let pid = sleeper()?;
        record(pid, ntf)?;
        expect(pm::cancel_wait(ntf), Ok(None), "a cancel before the end")?;
        expect(
            ipc::wait(ntf, Some(0)),
            Err(Error::WouldBlock),
            "the cancelled waiter's notification",
        )?;
        ok(pm::kill(pid), "kill")?;
        settle(
            pid,
            |e| e.is_some_and(|p| p.zombie == Some(Ended::Killed)),
            "the end after a cancel left no zombie",
        )?;
        expect(
            pm::wait(Some(pid), Some(WAIT_US)),
            Ok((pid, Ended::Killed)),
            "the wait after a cancel",
        )?;
        expect(
            ipc::wait(ntf, Some(0)),
            Err(Error::WouldBlock),
            "the cancelled waiter's notification after the end",
        )
    })();
    let _ = ipc::handle_close(ntf.0);
    r
}

/// Timed waits racing the child's end: each round's status comes back
/// exactly once, from the timed wait (delivered, possibly read back by
/// its cancel) or from the blocking wait after it; no zombie is left.
pub fn timed_waits_race_the_end_and_lose_nothing() -> TestResult {
    check(pm::endpoint().is_some(), "no procmgr endpoint")?;
    let (mut timed, mut late) = (0, 0);
    for round in 0..60u32 {
        let code = 20 + round as i32;
        // The child lives 0-590 us; the wait gives up after 50-340 us.
        let pid = fork_with(move || {
            let until = sys::clock_ns() + u64::from(round % 60) * 10_000;
            while sys::clock_ns() < until {}
            code
        })?;
        match pm::wait(Some(pid), Some(50 + (round * 37) % 300)) {
            Ok(got) => {
                expect(got, (pid, Ended::Exited(code)), "a timed wait's status")?;
                timed += 1;
            }
            Err(Error::TimedOut) => {
                expect(
                    pm::wait(Some(pid), Some(WAIT_US)),
                    Ok((pid, Ended::Exited(code))),
                    "the wait after a timed-out one",
                )?;
                late += 1;
            }
            Err(e) => {
                note!("round {round}: {e}");
                return Err("a timed wait failed");
            }
        }
        expect(entry(pid)?, None, "a waited child still in the table")?;
    }
    note!("{timed} statuses in the timed wait, {late} after it");
    Ok(())
}

/// A process killed while blocked in `wait`: procmgr drops its waiter, the
/// dead waiter's child goes to init and is reaped when it ends, and
/// procmgr goes on delivering (the kill's own status reaches us).
pub fn waiter_killed_while_waiting() -> TestResult {
    check(pm::endpoint().is_some(), "no procmgr endpoint")?;
    // Slot 0: the grandchild's PID, written by the child.
    let shared = Shared::new()?;
    let slot = shared.slot(0);
    let a = fork_with(|| {
        let Ok(b) = fork_with(|| {
            sys::sleep_ns(150_000_000);
            9
        }) else {
            return 1;
        };
        // Relaxed: the parent polls the word itself.
        slot.store(u64::from(b), Ordering::Relaxed);
        match pm::wait(Some(b), None) {
            Ok(_) => 2,
            Err(_) => 3,
        }
    })?;
    // Let A fork B and block in its wait.
    let t0 = sys::clock_ns();
    let b = loop {
        match slot.load(Ordering::Relaxed) {
            0 if sys::clock_ns() - t0 > SETTLE_NS => {
                return Err("the child never forked its own child")
            }
            0 => sys::sleep_ns(1_000_000),
            b => break b as u32,
        }
    };
    sys::sleep_ns(20_000_000);
    ok(pm::kill(a), "kill the waiter")?;
    expect(
        pm::wait(Some(a), Some(WAIT_US)),
        Ok((a, Ended::Killed)),
        "the killed waiter's status",
    )?;
    // B is init's now; it ends by itself and is reaped at once.
    settle(
        b,
        |e| e.is_none(),
        "the dead waiter's child was left behind",
    )?;
    // procmgr still serves waits.
    let c = fork_with(|| 4)?;
    expect(
        pm::wait(None, Some(WAIT_US)),
        Ok((c, Ended::Exited(4))),
        "a wait after the waiter's death",
    )
}

/// The kernel's badging give and fault endpoint (procmgr's `Fork` in 2
/// calls instead of 6): a fault message carries the badge
/// `process_set_fault_ep` was given, a badged give lands in the child's
/// table, and badging a badged handle, or a fault endpoint without
/// DUPLICATE, is refused.
pub fn badged_give_and_fault_endpoint() -> TestResult {
    use crate::hw::{spawn, Child};
    use crate::util::{expect_err, wait_status};
    use abi::rights;
    use abi::status::Status;
    use libipc::hw;
    const BADGE: u64 = 0xfeed;
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let badged = ok(
        ipc::handle_dup(
            ep.0,
            rights::SEND | rights::DUPLICATE | rights::TRANSFER,
            0x55,
        ),
        "dup with a badge",
    )?;
    let no_dup = ok(
        ipc::handle_dup(ep.0, rights::SEND | rights::TRANSFER, 0),
        "dup without DUPLICATE",
    )?;
    let r = (|| {
        // ud2 until the handler refuses it; it waits for its first handle.
        let c = spawn(Child::Fault, 1)?;
        ok(
            hw::process_set_fault_ep_badged(c, ipc::Endpoint(ep.0), BADGE),
            "process_set_fault_ep with a badge",
        )?;
        expect(
            ipc::handle_give_badged(c, ep.0, rights::SEND, 0x77),
            Ok(ipc::FIRST_HANDLE),
            "a badged give (the child's go)",
        )?;
        match ipc::recv(ep, Some(2_000_000)) {
            Ok(ipc::Received::Msg { badge, msg })
                if badge == BADGE
                    && msg.label == abi::fault::LABEL
                    && msg.words[abi::fault::VECTOR] == 6 => {}
            other => {
                note!("fault message: {other:?}");
                return Err("the fault message did not carry the badge");
            }
        }
        ok(
            ipc::reply(&ipc::Message {
                label: 1,
                words: [0; 6],
            }),
            "reply kill",
        )?;
        expect(
            wait_status(c)?,
            Status::Faulted(6),
            "the refused fault's end",
        )?;
        // Hostile arguments.
        let s = spawn(Child::Spin, 0)?;
        let bad = [
            (
                hw::process_set_fault_ep_badged(s, ipc::Endpoint(badged), 1),
                Error::InvalidArgument,
                "a fault endpoint badged twice",
            ),
            (
                hw::process_set_fault_ep_badged(s, ipc::Endpoint(no_dup), 1),
                Error::PermissionDenied,
                "a badged fault endpoint without DUPLICATE",
            ),
            (
                ipc::handle_give_badged(s, badged, rights::SEND, 1).map(|_| ()),
                Error::InvalidArgument,
                "a badged give of a badged handle",
            ),
        ];
        let mut r = Ok(());
        for (got, want, what) in bad {
            if r.is_ok() {
                r = expect_err(got.map(|_| 0), &[want], what);
            }
        }
        let _ = sys::process_kill(s);
        let _ = wait_status(s);
        r
    })();
    for h in [badged, no_dup, ep.0] {
        let _ = ipc::handle_close(h);
    }
    r
}
