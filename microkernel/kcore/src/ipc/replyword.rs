//! The reply capability as one atomic word (proto3, session 25): what the
//! kernel keeps per server thread, with no lock. [`ReplyCap`] is its state
//! machine (the model's, and the reference of the tests); this is the same
//! machine on a word two kinds of party change:
//!
//! - the *server side*: the server thread itself (`reply`, `reply_recv`,
//!   taking a queued call, its exit) or the winner of its wait's claim (a
//!   caller delivering to it: `accept`). They never overlap (the winner
//!   owns the server until it hands it its outcome), so the server side is
//!   one party at a time;
//! - a *caller's killer* (its kill or its timeout, which won the caller's
//!   claim): [`caller_gone`](ReplyWord::caller_gone), `Pending(c)` ->
//!   `GONE` only.
//!
//! # No pin (cut26e, session 26)
//! Whoever takes a caller out of the word must claim it, and the claim
//! dereferences the caller's thread, which may meanwhile leave its wait
//! (its killer won its claim and found the word no longer naming it),
//! exit and be freed. proto3 pinned the word (`BUSY`) across the claim and
//! made the killer wait the pin out. Now the server side takes the caller
//! with one exchange and claims it *with interrupts off from the exchange
//! to the claim*, and a freed thread's memory goes back to the heap only
//! after a grace period (the kernel's `mem::retire`, `crate::grace`): a
//! caller that leaves after the exchange is freed only after the server
//! side's CPU took a timer tick, which it cannot before its claim ends. The
//! claim of a caller that left fails (its ticket no longer matches) and
//! writes nothing. The word never names a caller after its killer's
//! `caller_gone` (a caller is named only before its wait can be claimed:
//! `accept` by the caller delivering, and `take_call` names the caller
//! before its `rearm`), so no server-side party finds one after it left.
//!
//! Every server-side party's claim must keep that rule: interrupts off and
//! no preemption point from the exchange (or [`peek`](ReplyWord::peek)) to
//! its last touch of the caller. The kernel's (the fast `take`, `accept`,
//! the slow `reply` and `take_call`, the trace's look, the exit's `take`
//! with interrupts disabled) do.
//!
//! `EMPTY` and `GONE` change only by the server side.
//!
//! # Orderings
//! The caller's ticket is stored (Relaxed) before the word names the caller
//! (Release); the exchange or `peek` that finds it (Acquire) reads it.
//! Only the server side writes the ticket, so the ticket read just before
//! an `accept` replaces the word is the old caller's. Loom:
//! `a_kill_racing_a_fast_reply_*`, `a_server_exit_racing_a_callers_kill_*`,
//! `a_caller_named_before_its_rearm_*`, `an_accept_abandoning_a_caller_*`,
//! each with the caller's memory freed after a grace period.
//!
//! [`ReplyCap`]: super::ReplyCap

use super::claim::{AtomicWord, Ticket};
use super::IpcError;
use core::sync::atomic::{AtomicU64, Ordering};

/// Nothing pending.
const EMPTY: u64 = 0;
/// The caller went away; the next reply reports it once.
const GONE: u64 = 1;

/// What the word held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// Nothing pending.
    Empty,
    /// The caller went away.
    Gone,
    /// The caller (its id, a non-zero multiple of 8: the kernel's thread
    /// address) and the ticket of its wait.
    Caller(u64, Ticket),
}

/// A server thread's reply capability (see the module docs).
pub struct ReplyWord<A: AtomicWord = AtomicU64> {
    word: A,
    ticket: A,
}

impl<A: AtomicWord> Default for ReplyWord<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: AtomicWord> ReplyWord<A> {
    /// Nothing pending.
    pub fn new() -> Self {
        ReplyWord {
            word: A::new(EMPTY),
            ticket: A::new(0),
        }
    }

    /// The held state for `w`, a value the word had.
    #[inline(always)]
    fn held(&self, w: u64) -> Held {
        match w {
            EMPTY => Held::Empty,
            GONE => Held::Gone,
            c => Held::Caller(c, Ticket::from_raw(self.ticket.load(Ordering::Relaxed))),
        }
    }

    /// Server side: what the word holds now, changing nothing (a caller's
    /// killer may make it `GONE` right after). A caller found here may be
    /// dereferenced under the module docs' rule (interrupts off).
    #[inline]
    pub fn peek(&self) -> Held {
        // Acquire: the caller's ticket, stored before the word named it.
        self.held(self.word.load(Ordering::Acquire))
    }

    /// Server side: the pending caller, if any, for a look only; `None`
    /// also while it is `GONE`.
    pub fn caller(&self) -> Option<u64> {
        match self.word.load(Ordering::Acquire) {
            EMPTY | GONE => None,
            c => Some(c),
        }
    }

    /// Server side: the word becomes `to`; a caller it named is claimed
    /// with `claim_old` (true: won, and returned to be woken).
    #[inline(always)]
    fn replace(
        &self,
        to: u64,
        tk: Option<Ticket>,
        claim_old: impl FnOnce(u64, Ticket) -> bool,
    ) -> Option<(u64, Ticket)> {
        // The old caller's ticket: only the server side (us) writes it.
        let old_tk = Ticket::from_raw(self.ticket.load(Ordering::Relaxed));
        if let Some(tk) = tk {
            self.ticket.store(tk.raw(), Ordering::Relaxed);
        }
        // Acquire: the old ticket's store; Release: ours before the name.
        match self.word.swap(to, Ordering::AcqRel) {
            EMPTY | GONE => None,
            c => claim_old(c, old_tk).then_some((c, old_tk)),
        }
    }

    /// Server side: the server took `caller`'s call (wait `tk`). A caller it
    /// abandoned by not replying is claimed with `claim_old` (true: won,
    /// and returned to be woken with `PeerDied`). Inlined: on the fast call
    /// (`give_call`) an out-of-line `accept` returned its `Option` through
    /// the stack and made the caller spill the receiver's taken record
    /// across the call (cut26l: -12 a round trip).
    #[inline(always)]
    pub fn accept(
        &self,
        caller: u64,
        tk: Ticket,
        claim_old: impl FnOnce(u64, Ticket) -> bool,
    ) -> Option<(u64, Ticket)> {
        debug_assert!(caller > GONE && caller.is_multiple_of(8), "a caller id");
        self.replace(caller, Some(tk), claim_old)
    }

    /// Server side: the server took a call whose caller's wait ended while
    /// it was being copied ([`ReplyCap::accept_gone`]). Returns an abandoned
    /// earlier caller as [`accept`](Self::accept) does.
    ///
    /// [`ReplyCap::accept_gone`]: super::ReplyCap::accept_gone
    pub fn accept_gone(
        &self,
        claim_old: impl FnOnce(u64, Ticket) -> bool,
    ) -> Option<(u64, Ticket)> {
        self.replace(GONE, None, claim_old)
    }

    /// Server side: the caller [`accept`](Self::accept) just named, which
    /// nobody else could claim since (the server side holds its wait:
    /// `take_call` before a failed `rearm`), went away: `GONE`.
    pub fn named_caller_gone(&self) {
        debug_assert!(self.caller().is_some(), "a caller just named");
        self.word.store(GONE, Ordering::Relaxed);
    }

    /// Server side: `reply` (or the server's exit): the caller to answer,
    /// claimed with `claim` (`Ok(None)`: its kill or timeout won its claim
    /// first). `PeerDied` if it went away since the call (reported once),
    /// `NoCaller` if nothing is pending (nothing changed).
    #[inline(always)]
    pub fn take(
        &self,
        claim: impl FnOnce(u64, Ticket) -> bool,
    ) -> Result<Option<(u64, Ticket)>, IpcError> {
        // Acquire: the caller's ticket, stored before the word named it.
        match self.word.swap(EMPTY, Ordering::Acquire) {
            EMPTY => Err(IpcError::NoCaller),
            GONE => Err(IpcError::PeerDied),
            c => {
                let tk = Ticket::from_raw(self.ticket.load(Ordering::Relaxed));
                Ok(claim(c, tk).then_some((c, tk)))
            }
        }
    }

    /// A caller's killer (it won `caller`'s claim): `caller` went away.
    /// False if the word does not name it (the server side took it, or it
    /// was never accepted).
    pub fn caller_gone(&self, caller: u64) -> bool {
        self.word
            .compare_exchange(caller, GONE, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
}
