//! Fault delivery: a fault becomes a message to the process's fault
//! endpoint, and the handler's reply decides what happens next.

use super::{spawn, unit, Child};
use crate::note;
use crate::util::{expect_err, ok, wait_status as wait, TestResult, CHILD_TEXT};
use abi::status::Status;
use abi::{rights, Error};
use libipc::hw;
use libipc::ipc;
use libipc::sys::{self, ProcessHandle};

/// The badge the fault handler's endpoint handle carries.
const FAULT_BADGE: u64 = 0xb0b;

/// Starts the fault child in `mode` with `ep` (`None`: no handler) as its
/// fault endpoint, then lets it go.
fn fault_child(mode: u64, ep: Option<ipc::Endpoint>) -> Result<ProcessHandle, &'static str> {
    let pid = spawn(Child::Fault, mode)?;
    ok(hw::process_set_fault_ep(pid, ep), "process_set_fault_ep")?;
    let go = ok(ipc::notification_create(), "notification_create")?;
    let given = ipc::handle_give(pid, go.0, rights::SIGNAL);
    let _ = ipc::handle_close(go.0);
    ok(given, "handle_give")?;
    Ok(pid)
}

/// Receives one fault message on `ep` (2 s at most); checks label, badge
/// and vector.
fn fault_msg(ep: ipc::Endpoint, vector: u64) -> Result<ipc::Message, &'static str> {
    match ipc::recv(ep, Some(2_000_000)) {
        Ok(ipc::Received::Msg { badge, msg }) => {
            let w = msg.words;
            if msg.label != abi::fault::LABEL
                || badge != FAULT_BADGE
                || w[abi::fault::VECTOR] != vector
            {
                note!("label {:#x} badge {badge:#x} words {w:x?}", msg.label);
                return Err("the fault message is not the one expected");
            }
            let rip = w[abi::fault::RIP];
            if !(CHILD_TEXT..CHILD_TEXT + 4096).contains(&rip) || w[abi::fault::TID] == 0 {
                note!("words {w:x?}");
                return Err("the fault message's RIP or tid is wrong");
            }
            Ok(msg)
        }
        other => {
            note!("recv on the fault endpoint: {other:?}");
            Err("no fault message arrived")
        }
    }
}

fn reply_label(label: u32) -> Result<(), Error> {
    ipc::reply(&ipc::Message {
        label,
        words: [0; 6],
    })
}

/// Case: a fault becomes a message to the process's fault endpoint (label,
/// badge, vector, RIP, tid); reply 0 resumes the thread (an `int3` goes
/// on, a `ud2` is retried and delivered again at the same RIP); another
/// label ends the process with `faulted(vector)`; a handler that never
/// replies does not stop a kill; a dead endpoint falls back to today's
/// policy. Hostile arguments refused.
pub fn fault_delivery() -> TestResult {
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let send = ipc::Endpoint(ok(
        ipc::handle_dup(ep.0, rights::SEND, FAULT_BADGE),
        "dup SEND with badge",
    )?);
    // int3, resumed: the child goes on and exits 5.
    let c = fault_child(0, Some(send))?;
    fault_msg(ep, 3)?;
    ok(reply_label(abi::fault::RESUME), "reply resume")?;
    let st = wait(c)?;
    if st != Status::Exited(5) {
        note!("resumed int3 child: {st:?}");
        return Err("a fault the handler resumed did not go on");
    }
    // ud2: resumed once (retried, delivered again at the same RIP), then
    // refused: the process ends faulted(6).
    let c = fault_child(1, Some(send))?;
    let first = fault_msg(ep, 6)?;
    ok(reply_label(abi::fault::RESUME), "reply resume")?;
    let again = fault_msg(ep, 6)?;
    if again.words[abi::fault::RIP] != first.words[abi::fault::RIP] {
        return Err("a resumed fault was not retried at the same instruction");
    }
    ok(reply_label(1), "reply kill")?;
    let st = wait(c)?;
    if st != Status::Faulted(6) {
        note!("refused ud2 child: {st:?}");
        return Err("a fault the handler refused did not end the process faulted(6)");
    }
    // A handler that never replies: the kill still ends the child.
    let c = fault_child(1, Some(send))?;
    fault_msg(ep, 6)?;
    ok(sys::process_kill(c), "kill the stopped child")?;
    let st = wait(c)?;
    if st != Status::Exited(-1) {
        note!("killed stopped child: {st:?}");
        return Err("a thread stopped in a fault did not end on kill");
    }
    // The late reply finds no caller: refused or ignored, never delivered.
    let _ = reply_label(abi::fault::RESUME);
    // Hostile arguments.
    let c = spawn(Child::Spin, 0)?;
    let recv_only = ipc::Endpoint(ok(ipc::handle_dup(ep.0, rights::RECV, 0), "dup RECV")?);
    let wait_only =
        ProcessHandle::from_raw(ok(ipc::handle_dup(c.raw(), rights::WAIT, 0), "dup WAIT")?);
    let n = ok(ipc::notification_create(), "notification_create")?;
    let bad: [(ProcessHandle, Option<ipc::Endpoint>, Error, &str); 6] = [
        (
            ProcessHandle::from_raw(u32::MAX),
            Some(send),
            Error::BadHandle,
            "a bogus process",
        ),
        (
            ProcessHandle::from_raw(n.0),
            Some(send),
            Error::WrongType,
            "a notification as process",
        ),
        (
            c,
            Some(ipc::Endpoint(n.0)),
            Error::WrongType,
            "a notification as endpoint",
        ),
        (
            c,
            Some(ipc::Endpoint(u32::MAX)),
            Error::BadHandle,
            "a bogus endpoint",
        ),
        (
            c,
            Some(recv_only),
            Error::PermissionDenied,
            "an endpoint without SEND",
        ),
        (
            wait_only,
            Some(send),
            Error::PermissionDenied,
            "a process without KILL",
        ),
    ];
    for (p, e, want, what) in bad {
        expect_err(unit(hw::process_set_fault_ep(p, e)), &[want], what)?;
    }
    ok(sys::process_kill(c), "kill")?;
    let _ = wait(c)?;
    for h in [recv_only.0, wait_only.raw(), n.0] {
        let _ = ipc::handle_close(h);
    }
    // The handler's endpoint dies (its only receive handle closed): the
    // fault is handled as without a handler.
    ok(ipc::handle_close(ep.0), "close the receive side")?;
    let c = fault_child(1, Some(send))?;
    let st = wait(c)?;
    let _ = ipc::handle_close(send.0);
    if st != Status::Faulted(6) {
        note!("child with a dead handler: {st:?}");
        return Err("a fault with a dead handler was not handled as today");
    }
    Ok(())
}
