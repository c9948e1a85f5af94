//! The trace family (issue 12 part 4): `trace_mark`, and the IPC trace
//! points' helpers for the dispatcher (`syscall::ipc`), which knows the
//! endpoint and badge of every call, send, receive and reply, the fast
//! path's included. The rings themselves are `crate::trace`'s.

use crate::arch::trap::TrapFrame;
use crate::ipc::slowpath::{Ep, Received};
use crate::mem::user::UserSlice;
use crate::object::waitstate::TRef;
use crate::sched::current;
use abi::trace::{Kind, MAX_MARK_NAME};
use abi::{encode_result, Error};
use alloc::sync::Arc;
use kcore::ipc::Held;

/// `trace_mark(name_ptr, name_len, value)`: a validated name and a value.
pub struct Mark {
    name: [u8; MAX_MARK_NAME],
    len: usize,
    value: u64,
}

impl Mark {
    /// `InvalidArgument` for a length of 0 or above [`MAX_MARK_NAME`] (before
    /// the range is looked at) or a byte outside printable ASCII;
    /// `BadAddress` for a range outside the user half or one that faults.
    pub fn decode(f: &TrapFrame) -> Result<Mark, Error> {
        let len = f.rsi;
        if len == 0 || len > MAX_MARK_NAME as u64 {
            return Err(Error::InvalidArgument);
        }
        let mut name = [0u8; MAX_MARK_NAME];
        let n = UserSlice::new(f.rdi, len)?.read(&mut name)?;
        if n != len as usize {
            return Err(Error::BadAddress);
        }
        // Printable ASCII only: the runner puts the name into JSON and a
        // timeline label, so no control bytes, quotes are escaped there.
        if !name[..n].iter().all(|b| (0x20..0x7f).contains(b)) {
            return Err(Error::InvalidArgument);
        }
        Ok(Mark {
            name,
            len: n,
            value: f.rdx,
        })
    }
}

/// Puts the mark into this CPU's ring: 1 if recorded, 0 if the `mark`
/// category is off.
pub fn mark(m: Mark) -> Result<u64, Error> {
    let tid = current().tid.get();
    Ok(crate::trace::mark(tid, &m.name[..m.len], m.value) as u64)
}

/// The id an endpoint has in the trace: its object's address (unique while
/// it lives; the runner numbers them in order of appearance).
#[inline(always)]
fn ep_id(ep: &Ep) -> u64 {
    Arc::as_ptr(ep) as *const () as u64
}

/// A `call` or `send` (`kind`) through `ep` with `badge`.
#[inline(always)]
pub fn sent(kind: Kind, ep: &Ep, badge: u64) {
    crate::trace::ipc(kind, || (current().tid.get(), ep_id(ep), badge));
}

/// A receive on `ep` returned `r`.
#[inline(always)]
pub fn received(ep: &Ep, r: &Received) {
    if let Received::Msg(m) = r {
        crate::trace::ipc(Kind::IpcRecv, || (current().tid.get(), ep_id(ep), m.badge));
    }
}

/// A reply (on `ep` for `reply_recv`, `None` for a plain `reply`) is about
/// to go to the call the current thread holds: recorded with that caller's
/// tid, which the runner pairs with the call for a flow arrow.
#[inline(always)]
pub fn reply(ep: Option<&Ep>) {
    crate::trace::ipc(Kind::IpcReply, || {
        (current().tid.get(), ep.map_or(0, ep_id), reply_target())
    });
}

/// The tid of the caller whose call the current thread holds (0: none).
#[inline(never)]
#[cold]
fn reply_target() -> u64 {
    let cap = &current().ipc.reply;
    // A syscall: interrupts are off, so a caller our word names now is
    // freed, if it leaves meanwhile, only after this CPU's next tick
    // (`ReplyWord`, cut26e: no pin).
    match cap.peek() {
        // SAFETY: named by our word just now (as just said).
        Held::Caller(id, tk) => unsafe { TRef::from_id(id, tk).thread() }.tid.get(),
        Held::Gone | Held::Empty => 0,
    }
}

/// Runs a syscall's handler between its enter and exit records (category
/// `syscall`): `f.rax` is the number until `finish` writes the result.
///
/// The dispatcher calls either this or the handler, one call either way:
/// with a trace call before the handler and one after it, the compiler
/// kept the handler across the first call in a callee-saved register and
/// set up the dispatcher's stack frame on every syscall, the ones answered
/// in the table too (7 instructions; `scripts/bench.sh --check`).
#[inline(never)]
#[cold]
pub fn traced(handler: super::Handler, f: &mut TrapFrame) -> Result<u64, Error> {
    let n = f.rax;
    crate::trace::syscall(None, || (n, current().tid.get()));
    let r = handler(f);
    crate::trace::syscall(Some(encode_result(r)), || (n, current().tid.get()));
    r
}
