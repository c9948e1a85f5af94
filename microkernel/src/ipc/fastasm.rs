//! Two tests of the IPC fast path written in assembly (cut26s), each a
//! compare with memory and a branch where the compiled atomics loaded the
//! word into a register first: the same loads and store, in the same
//! order, so the same memory orderings on x86 (a load is Acquire and a
//! store Release there; the SeqCst loads they replace compile to plain
//! loads too), and no protocol change. Each block reads or writes only
//! the current thread's own words.
//!
//! And frame delivery's message copy (cut27p, [`copy_msg`]): the
//! register-only message from the current thread's syscall frame into the
//! receiver's, whose output registers the claim made ours, frame to frame
//! with one scratch register, before `hand` publishes it (`framed`).

use super::fastpath::{frame_msg, put_msg};
use crate::arch::trap::TrapFrame;
use crate::object::thread::Thread;
use crate::object::waitstate::Msg;
use crate::object::waitstate::ThreadIpc;
use core::mem::offset_of;
use core::sync::atomic::{AtomicU32, AtomicU64};
use kcore::ipc::{Ticket, WaitClaim, CLAIM_STATE_MASK};

/// The thread's work word (KILL is bit 0: `Thread::killed`).
const OFF_WORK: usize = offset_of!(Thread, work);
/// The thread's claim word (`WaitClaim`).
const OFF_CLAIM: usize =
    offset_of!(Thread, ipc) + offset_of!(ThreadIpc, claim) + WaitClaim::<AtomicU64>::WORD_OFFSET;
/// The thread's `framed` word.
const OFF_FRAMED: usize = offset_of!(Thread, ipc) + offset_of!(ThreadIpc, framed);
const _: () = assert!(crate::arch::percpu::work::KILL == 1);
// `and` with a sign-extended 32-bit immediate clears exactly the state bits.
const _: () = assert!(CLAIM_STATE_MASK == 0xff);
// The widths the blocks assume (break26s): `framed` and the claim word
// are 64-bit words (`cmp`/`mov` with 64-bit registers), the work word is
// the 32-bit word whose first byte (little-endian) holds KILL. A type
// change fails here, not in a test of an interleaving.
const _: fn(&ThreadIpc) -> (&AtomicU64, &WaitClaim<AtomicU64>) = |i| (&i.framed, &i.claim);
const _: fn(&Thread) -> &AtomicU32 = |t| &t.work;
const _: () = assert!(core::mem::size_of::<WaitClaim<AtomicU64>>() == 8);

/// `cur.killed() || !cur.ipc.claim.is_waiting(ticket)`: the fast wait's
/// test after its Blocked store (`fastpath::fast_wait`), two compares with
/// memory (-2 instructions).
#[inline(always)]
pub fn killed_or_claimed(cur: &Thread, ticket: Ticket) -> bool {
    // SAFETY: reads two words of the live thread `cur` (atomics, read as
    // `killed` and `is_waiting` read them: plain loads on x86).
    unsafe {
        core::arch::asm!(
            "test byte ptr [{t} + {work}], 1",  // killed (work.KILL)?
            "jnz {yes}",
            "cmp [{t} + {claim}], {ticket}",    // the claim word: still this wait, waiting?
            "jne {yes}",                        // claimed (or ended): ready
            t = in(reg) cur,
            ticket = in(reg) ticket.waiting_word(),
            work = const OFF_WORK,
            claim = const OFF_CLAIM,
            yes = label { return true },
            options(nostack, readonly),
        );
    }
    false
}

/// `cur.ipc.claim.finish_delivered(cur.ipc.framed.load(Acquire))`: the
/// frameless resume's common case (`fastpath::framed_end`), the claim
/// word compared in memory with `framed` and reset to running, same
/// sequence, when equal (-1 instruction).
///
/// # Safety
/// `cur` is the current thread (only the thread itself ends its wait).
#[inline(always)]
pub unsafe fn framed_end(cur: &Thread) -> bool {
    // SAFETY: the caller's contract; the store is `finish_delivered`'s.
    unsafe {
        core::arch::asm!(
            "mov {c}, [{t} + {framed}]",        // c: framed (Acquire: pairs with `hand`'s store)
            "cmp {c}, [{t} + {claim}]",         // the claim word is exactly that (Acquire)?
            "jne {no}",
            "and {c}, {keep}",                  // c: the same sequence, running
            "mov [{t} + {claim}], {c}",         // `finish_delivered`'s Relaxed store
            t = in(reg) cur,
            c = out(reg) _,
            framed = const OFF_FRAMED,
            claim = const OFF_CLAIM,
            keep = const !0xffi32,
            no = label { return false },
            options(nostack),
        );
    }
    true
}

/// `put_msg(to.syscall_frame(), &frame_msg(from, label, badge))`: frame
/// delivery's copy of a register-only message from the sender's syscall
/// frame into the receiver's (`fastpath::hand`, cut27p), each word through
/// one scratch register. Compiled, the six words were loaded into
/// registers first and the fast path's register pressure spilled some to
/// the stack and reloaded them. The receiver's frame is addressed from its
/// kernel-stack top (the load its `syscall_frame` starts from, with no
/// subtraction of its own), and a zero badge (`BADGED` false: the reply)
/// is an immediate. Plain loads and stores, as compiled; the block is a
/// compiler barrier (no `nomem`), so the stores stay before `hand`'s
/// SeqCst store of `framed`, which publishes them.
///
/// # Safety
/// `from` is the current thread's syscall frame and `to_top` the
/// kernel-stack top of another thread, whose frame's output registers the
/// caller owns (`hand`'s argument); `badge` is 0 unless `BADGED`.
#[inline(always)]
pub unsafe fn copy_msg<const BADGED: bool>(
    from: *const TrapFrame,
    to_top: u64,
    info: u64,
    badge: u64,
) {
    macro_rules! copy {
        ($badge:literal, $($badge_op:tt)*) => {
            core::arch::asm!(
                $badge,                                 // frame.rdi: the badge
                "mov [{to} - {rsi}], {info}",           // frame.rsi: the MsgInfo (label only)
                "mov {w}, [{from} + {rdx}]",            // words 0-5: rdx, r10, r8, r9, r12, r13
                "mov [{to} - {rdx_t}], {w}",
                "mov {w}, [{from} + {r10}]",
                "mov [{to} - {r10_t}], {w}",
                "mov {w}, [{from} + {r8}]",
                "mov [{to} - {r8_t}], {w}",
                "mov {w}, [{from} + {r9}]",
                "mov [{to} - {r9_t}], {w}",
                "mov {w}, [{from} + {r12}]",
                "mov [{to} - {r12_t}], {w}",
                "mov {w}, [{from} + {r13}]",
                "mov [{to} - {r13_t}], {w}",
                "mov qword ptr [{to} - {rbx}], 0",      // no handles (rbx, rbp)
                "mov qword ptr [{to} - {rbp}], 0",
                from = in(reg) from,
                to = in(reg) to_top,
                info = in(reg) info,
                w = out(reg) _,
                rdi = const SIZE - offset_of!(TrapFrame, rdi),
                rsi = const SIZE - offset_of!(TrapFrame, rsi),
                rdx = const offset_of!(TrapFrame, rdx),
                rdx_t = const SIZE - offset_of!(TrapFrame, rdx),
                r10 = const offset_of!(TrapFrame, r10),
                r10_t = const SIZE - offset_of!(TrapFrame, r10),
                r8 = const offset_of!(TrapFrame, r8),
                r8_t = const SIZE - offset_of!(TrapFrame, r8),
                r9 = const offset_of!(TrapFrame, r9),
                r9_t = const SIZE - offset_of!(TrapFrame, r9),
                r12 = const offset_of!(TrapFrame, r12),
                r12_t = const SIZE - offset_of!(TrapFrame, r12),
                r13 = const offset_of!(TrapFrame, r13),
                r13_t = const SIZE - offset_of!(TrapFrame, r13),
                rbx = const SIZE - offset_of!(TrapFrame, rbx),
                rbp = const SIZE - offset_of!(TrapFrame, rbp),
                $($badge_op)*
                options(nostack, preserves_flags),
            )
        };
    }
    const SIZE: usize = core::mem::size_of::<TrapFrame>();
    debug_assert!(BADGED || badge == 0);
    // SAFETY: the caller's contract; two distinct live frames.
    unsafe {
        if BADGED {
            copy!("mov [{to} - {rdi}], {badge}", badge = in(reg) badge,);
        } else {
            copy!("mov qword ptr [{to} - {rdi}], 0",);
        }
    }
}

/// A register-only message for `fastpath::hand`: built ([`MsgSource::msg`]), or
/// written straight into a receiver's frame ([`MsgSource::put`]).
pub(crate) trait MsgSource {
    /// The message.
    fn msg(&self) -> Msg;
    /// Writes the message into the output registers of `t`'s syscall
    /// frame ([`put_msg`]).
    ///
    /// # Safety
    /// `t` is in its syscall and the caller owns its frame's output
    /// registers (`fastpath::hand`).
    #[inline(always)]
    unsafe fn put(&self, t: &Thread) {
        // SAFETY: the caller's contract.
        put_msg(unsafe { &mut *t.syscall_frame() }, &self.msg());
    }
}

impl<F: Fn() -> Msg> MsgSource for F {
    #[inline(always)]
    fn msg(&self) -> Msg {
        self()
    }
}

/// The current thread's register-only message, read from its own syscall
/// frame ([`frame_msg`]) and, into a receiver's frame, copied frame to
/// frame ([`copy_msg`], cut27p: -5 a side).
/// `BADGED` false: the badge is 0 (the reply), an immediate.
pub(crate) struct FrameMsg<const BADGED: bool> {
    out: *const TrapFrame,
    label: u32,
    badge: u64,
}

impl<const BADGED: bool> FrameMsg<BADGED> {
    /// # Safety
    /// `out` is the current thread's own syscall frame, which nothing
    /// else writes while the thread runs, and the value lives no longer
    /// than the syscall; `badge` is 0 unless `BADGED`.
    #[inline(always)]
    pub(crate) unsafe fn new(out: *const TrapFrame, label: u32, badge: u64) -> Self {
        FrameMsg { out, label, badge }
    }
}

impl<const BADGED: bool> MsgSource for FrameMsg<BADGED> {
    #[inline(always)]
    fn msg(&self) -> Msg {
        // SAFETY: `new`'s contract.
        frame_msg(unsafe { &*self.out }, self.label, self.badge)
    }

    #[inline(always)]
    unsafe fn put(&self, t: &Thread) {
        let info = kcore::ipc::MsgInfo::new(self.label, 0, 0, 0).raw();
        let top = t.kstack_top();
        // SAFETY: `new`'s contract (our own frame) and the caller's (`t`'s
        // frame, below its kernel-stack top, its output registers ours).
        unsafe { copy_msg::<BADGED>(self.out, top, info, self.badge) };
    }
}
