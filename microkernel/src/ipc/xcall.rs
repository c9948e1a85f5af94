//! The cross-core register-only call (xcall, session 20; issue 10's
//! cross-core figure).
//!
//! A register-only `call` (no buffer, no handles, no timeout) to an
//! endpoint whose first waiting receiver is on *another* CPU: the same
//! steps as the same-core fast `call` ([`super::fastpath`]), except that
//! the receiver is woken on its own CPU (`sched::wake`: its run queue, and
//! an IPI unless that CPU is polling) instead of switched to, and this
//! thread then blocks in the generic [`wait`]. The slow path did the same
//! protocol through the general machinery (the message and its `Extra`
//! built and stored in the caller's record, the endpoint's `call` state
//! machine, the receiver's `unlink` from a queue it was already taken
//! off, the `Extra` restored after the reply): ~1,000 instructions of the
//! 3,100 round trip before this path.
//!
//! The protocol is the fast path's (docs/ipc.md sections 4 and 6), step for
//! step:
//! - the receiver is taken off the front of the endpoint queue and claimed
//!   under that queue's lock (the claim discipline: a signal, the
//!   endpoint's death or the receiver's kill on another CPU either won the
//!   claim first, and we leave the call to the slow path with nothing
//!   changed, or loses it to us);
//! - our wait is recorded (naming the receiver, for our own kill) and
//!   published by `begin` before the receiver's reply capability names us;
//! - the message is the last thing written into the receiver's record, and
//!   the wake comes after it (`sched::wake`'s Blocked -> Ready exchange:
//!   the receiver's wait loop either sees the result or is queued).
//!
//! Kept out of `fastpath.rs` on purpose (that file and the same-core path
//! are another helper's this session); it shares its message helpers.

use super::fastpath::{frame_msg, give_call, put_msg};
use super::slowpath::Ep;
use super::{claim, end_wait, wait, Handoff};
use crate::arch::trap::TrapFrame;
use crate::object::waitstate::Outcome;
use crate::sched;
use abi::Error;
use core::sync::atomic::Ordering;
use kcore::ipc::WakeReason;

/// The cross-core `call` of the register-only message in `out` (label
/// `label`, the six words in its registers) with `badge`; the reply goes
/// into `out`'s output registers. `buf`/`capacity`: the reply's receive
/// buffer (register-only replies leave it untouched). `None`: not
/// eligible (no receiver waiting, its claim lost, or a kill pending),
/// nothing changed; the caller takes the slow path. `frame_ok`: no
/// reference to the frame is live across the wait (the frameless IPC
/// entry's call), so the replier may write the reply straight into it
/// (`fastpath::hand`); the traced handler holds a `&mut` to it, so its
/// replies go through the result slot.
///
/// `out` is the current thread's own frame (ipcfr: the IPC entry works
/// from the raw pointer); only short-lived references to it are made,
/// none across the wait.
pub fn call(
    frame_ok: bool,
    ep: &Ep,
    label: u32,
    badge: u64,
    buf: u64,
    capacity: usize,
    out: *mut TrapFrame,
) -> Option<Result<(), Error>> {
    let cur = sched::current();
    // Frame delivery (`fastpath::hand`) writes the reply where the stub's
    // frame is.
    debug_assert_eq!(out, cur.syscall_frame());
    if cur.killed() {
        return None; // the slow path notices the kill
    }
    // 1. The receiver at the front of the queue, wherever it waits,
    //    claimed under the endpoint lock where it was found.
    let r = {
        let mut q = ep.q.lock_irqs_off();
        let cpu = q.receivers().next()?.cpu;
        q.take_front_receiver(cpu, |r| claim(&r.thread, WakeReason::Delivered))?
    };
    // SAFETY: we won r's claim and have not handed it an outcome.
    let rt = unsafe { r.thread.arc() };
    // 2 and 3: our wait recorded, the call handed to rt, as on the fast
    // path (`fastpath::give_call`).
    // SAFETY: our own frame (see above), not written meanwhile.
    let msg = || frame_msg(unsafe { &*out }, label, badge);
    let (tk, abandoned) = give_call(cur, &rt, r.thread.ticket, frame_ok, buf, capacity, msg);
    // 4. Wake rt (on its CPU; a receiver that last ran here is handed off
    //    by our block, as on the fast path), then wait for the reply.
    let h = Handoff::or_wake(rt);
    if let Some(o) = abandoned {
        end_wait(o, Outcome::Err(Error::PeerDied));
    }
    // Relaxed: a statistic (the ring-3 `xcore` cases read it).
    crate::arch::percpu::this()
        .xcalls
        .fetch_add(1, Ordering::Relaxed);
    Some(match wait(tk, None, h) {
        Outcome::Msg(m) => {
            // SAFETY: as above; the wait is over.
            put_msg(unsafe { &mut *out }, &m);
            Ok(())
        }
        // The reply is in our frame already (`fastpath::hand`).
        Outcome::Framed => Ok(()),
        Outcome::Err(e) => Err(e),
        // A call is never bound, and `Retry` ends only a queued caller
        // (this one was delivered straight to its receiver): as the fast
        // path's `deliver`.
        Outcome::Notified(_) | Outcome::Retry => Err(Error::InvalidArgument),
    })
}
