//! Two tests of the IPC fast path written in assembly (cut26s), each a
//! compare with memory and a branch where the compiled atomics loaded the
//! word into a register first: the same loads and store, in the same
//! order, so the same memory orderings on x86 (a load is Acquire and a
//! store Release there; the SeqCst loads they replace compile to plain
//! loads too), and no protocol change. Each block reads or writes only
//! the current thread's own words.

use crate::object::thread::Thread;
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
