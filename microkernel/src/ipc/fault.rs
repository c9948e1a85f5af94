//! Fault delivery (hw, issue 11): a user fault in a process that has a fault
//! endpoint becomes an implicit `call` on it, seL4's shape.
//!
//! The faulting thread sends [`abi::fault`]'s message — label
//! [`abi::fault::LABEL`], words: vector, error code, RIP, CR2 (0 unless #PF),
//! tid, RSP; the badge of the endpoint handle `process_set_fault_ep` was
//! given — and blocks in the call like any caller (a kill ends the wait).
//! The handler's reply decides: label 0 resumes the thread at the faulting
//! frame (the instruction is retried, after the handler fixed its cause),
//! any other label ends the whole process with status `faulted(vector)`.
//! When the call fails (the endpoint died: no receive handle is left) the
//! fault is handled as in a process without a handler.
//!
//! The call goes through the ordinary slow path with no receive buffer, so
//! the reply lands in the thread's IPC record, never in its user registers
//! (which the retried instruction needs as they were).

use super::slowpath::{self, Ep, Timeout};
use crate::arch::trap::TrapFrame;
use crate::object::message::Extra;
use crate::object::thread::Thread;
use crate::object::waitstate::Msg;
use kcore::ipc::MsgInfo;

/// The error code a handler is told. breakhw (issue 11): a ring-3 access
/// to a kernel-half address always reads as a protection fault (P, bit 0,
/// set), as Linux's `sanitize_error_code` does, so the P bit cannot tell a
/// probing process which kernel pages are mapped. The kernel's own log
/// (`end_faulted`) keeps the real code.
fn reported_error_code(vector: u64, error_code: u64, cr2: u64) -> u64 {
    /// #PF's error-code bit: the page was present (a protection fault).
    const PF_PROT: u64 = 1;
    if vector == 14 && cr2 >= kcore::paging::USER_HALF_END {
        error_code | PF_PROT
    } else {
        error_code
    }
}

/// What the fault path does after [`deliver`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No handler, or it could not be reached: today's policy.
    NotDelivered,
    /// The handler answered label 0: return to the faulting frame.
    Resume,
    /// The handler answered another label: end the process.
    Kill,
}

/// Delivers the fault `frame` describes (CR2 `cr2`) of the current thread
/// `t` to its process's fault endpoint, if it has one, and waits for the
/// verdict.
pub fn deliver(t: &Thread, frame: &TrapFrame, cr2: u64) -> Verdict {
    let Some(p) = t.process.as_ref() else {
        return Verdict::NotDelivered;
    };
    let handler: Option<(Ep, u64)> = p.fault_ep.lock().clone();
    let Some((ep, badge)) = handler else {
        return Verdict::NotDelivered;
    };
    let m = Msg {
        badge,
        info: MsgInfo::new(abi::fault::LABEL, 0, 0, 0),
        words: [
            frame.vector,
            reported_error_code(frame.vector, frame.error_code, cr2),
            frame.rip,
            cr2,
            t.tid.get(),
            frame.rsp,
        ],
        handles: [0; 4],
    };
    match slowpath::call(&ep, m, Extra::default(), 0, 0, Timeout::Never) {
        Ok(r) if r.info.label() == 0 => Verdict::Resume,
        Ok(_) => Verdict::Kill,
        Err(_) => Verdict::NotDelivered,
    }
}
