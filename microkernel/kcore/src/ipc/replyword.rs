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
//! # The pin
//! Whoever takes a caller out of the word must claim it, and the claim
//! dereferences the caller's thread: the caller must not leave its wait
//! (and exit) meanwhile. Under the old lock the killer's `caller_gone`
//! waited for the server's lock; here the server side *pins* the word
//! (`BUSY`, a compare-and-swap from `Pending(c)`) for the claim and stores
//! the next state after it, and `caller_gone` spins while the word is
//! `BUSY`. A killer that finds `Pending(c)` turns it into `GONE` and then
//! the server side never sees `c` again; one that finds anything else
//! after the pin knows the server side's claim of `c` is over (it lost to
//! the killer's, whose winner the killer is). The pin is also held across
//! a taken caller's `rearm` (`kernel::ipc::slowpath::take_call`): a
//! timeout that wins the rearmed wait before the word names the caller
//! waits for it there, as it waited for the lock.
//!
//! A pinned section must stay that short: the spinner has interrupts off
//! and serves no TLB shootdown, so a pinned section that touched user
//! memory, took a lock, blocked, freed memory (an `Arc` drop can shoot
//! down) or waited for another CPU could deadlock it. The kernel's four
//! (slow `reply`, `take_call`, the trace's look, the fast `take`) do none
//! of these (break25p, session 25); keep it so.
//!
//! `EMPTY` and `GONE` change only by the server side, so a server-side
//! store from them needs no compare-and-swap ([`accept`](ReplyWord::accept)'s
//! common case: a load, the ticket and the word stored).
//!
//! # Orderings
//! The caller's ticket is stored (Relaxed) before the word names the caller
//! (Release); a pin's compare-and-swap (Acquire) reads it. The pinned
//! claim's effects come before the store that ends the pin (Release), which
//! a spinning `caller_gone` acquires. Loom: `a_kill_racing_a_fast_reply_*`,
//! `a_server_exit_racing_a_callers_kill_*`, `a_rearm_under_the_pin_*`.
//!
//! [`ReplyCap`]: super::ReplyCap

use super::claim::{AtomicWord, Ticket};
use super::IpcError;
use core::sync::atomic::{AtomicU64, Ordering};

/// Nothing pending.
const EMPTY: u64 = 0;
/// The caller went away; the next reply reports it once.
const GONE: u64 = 1;
/// Pinned by the server side (see the module docs).
const BUSY: u64 = 2;

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

    /// Server side: pins the word and returns what it held (a caller that a
    /// killer turns `GONE` meanwhile is `Gone`). End with
    /// [`unpin`](Self::unpin).
    #[inline]
    pub fn pin(&self) -> Held {
        // Acquire: the caller's ticket, stored before the word named it.
        let mut w = self.word.load(Ordering::Acquire);
        loop {
            debug_assert_ne!(w, BUSY, "the server side pins once");
            match self
                .word
                .compare_exchange(w, BUSY, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => break,
                // Only a killer changes the word under us (to GONE).
                Err(now) => w = now,
            }
        }
        match w {
            EMPTY => Held::Empty,
            GONE => Held::Gone,
            c => Held::Caller(c, Ticket::from_raw(self.ticket.load(Ordering::Relaxed))),
        }
    }

    /// Server side: ends a pin with the word holding `to`.
    #[inline]
    pub fn unpin(&self, to: Held) {
        let w = match to {
            Held::Empty => EMPTY,
            Held::Gone => GONE,
            Held::Caller(c, tk) => {
                debug_assert!(c > BUSY && c.is_multiple_of(8), "a caller id");
                self.ticket.store(tk.raw(), Ordering::Relaxed);
                c
            }
        };
        // Release: the pinned claim's effects (and the ticket) before it.
        self.word.store(w, Ordering::Release);
    }

    /// Whether the word is pinned now (tests: no operation may return with
    /// its pin still held; `caller` reads a pinned word as "no caller", so
    /// it cannot tell a pin left behind from an empty word).
    #[cfg(test)]
    pub(crate) fn is_pinned(&self) -> bool {
        self.word.load(Ordering::Relaxed) == BUSY
    }

    /// Server side: the pending caller, if any, for a look only (the
    /// trace's); `None` also while it is `GONE`.
    pub fn caller(&self) -> Option<u64> {
        match self.word.load(Ordering::Acquire) {
            EMPTY | GONE | BUSY => None,
            c => Some(c),
        }
    }

    /// Server side: the server took `caller`'s call (wait `tk`). A caller it
    /// abandoned by not replying is claimed with `claim_old` under the pin
    /// (true: won, and returned to be woken with `PeerDied`). Inlined: on
    /// the fast call (`give_call`) an out-of-line `accept` returned its
    /// `Option` through the stack and made the caller spill the receiver's
    /// taken record across the call (cut26l: -12 a round trip).
    #[inline(always)]
    pub fn accept(
        &self,
        caller: u64,
        tk: Ticket,
        claim_old: impl FnOnce(u64, Ticket) -> bool,
    ) -> Option<(u64, Ticket)> {
        debug_assert!(caller > BUSY && caller.is_multiple_of(8), "a caller id");
        let w = self.word.load(Ordering::Relaxed);
        if w == EMPTY || w == GONE {
            // Only the server side (us) changes EMPTY and GONE.
            self.ticket.store(tk.raw(), Ordering::Relaxed);
            // Release: the ticket before the word names the caller.
            self.word.store(caller, Ordering::Release);
            return None;
        }
        self.replace_pinned(Held::Caller(caller, tk), claim_old)
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
        self.replace_pinned(Held::Gone, claim_old)
    }

    /// Pins, claims a held caller with `claim`, unpins to `to`.
    #[inline(always)]
    fn replace_pinned(
        &self,
        to: Held,
        claim: impl FnOnce(u64, Ticket) -> bool,
    ) -> Option<(u64, Ticket)> {
        let (c, tk) = self.replace_pinned_raw(to, claim);
        // A caller id is never 0 (`Held::Caller`).
        (c != 0).then_some((c, Ticket::from_raw(tk)))
    }

    /// [`replace_pinned`](Self::replace_pinned) out of line, its result as
    /// two words (id 0: none), returned in registers (cut26l: an
    /// `Option<(u64, Ticket)>` went through the stack, and the fast call,
    /// which inlines `accept`, moved it there even when this was not called).
    #[inline(never)]
    fn replace_pinned_raw(&self, to: Held, claim: impl FnOnce(u64, Ticket) -> bool) -> (u64, u64) {
        let old = match self.pin() {
            Held::Caller(c, tk) if claim(c, tk) => (c, tk.raw()),
            Held::Caller(..) | Held::Empty | Held::Gone => (0, 0),
        };
        self.unpin(to);
        old
    }

    /// Server side: `reply` (or the server's exit): the caller to answer,
    /// claimed with `claim` under the pin (`Ok(None)`: its kill or timeout
    /// won its claim first). `PeerDied` if it went away since the call
    /// (reported once), `NoCaller` if nothing is pending (nothing changed).
    #[inline(always)]
    pub fn take(
        &self,
        claim: impl FnOnce(u64, Ticket) -> bool,
    ) -> Result<Option<(u64, Ticket)>, IpcError> {
        let w = self.word.load(Ordering::Relaxed);
        if w == EMPTY {
            return Err(IpcError::NoCaller);
        }
        if w != GONE
            && self
                .word
                .compare_exchange(w, BUSY, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            let tk = Ticket::from_raw(self.ticket.load(Ordering::Relaxed));
            let won = claim(w, tk);
            // Release: the claim before a spinning `caller_gone` goes on.
            self.word.store(EMPTY, Ordering::Release);
            return Ok(won.then_some((w, tk)));
        }
        // GONE (or a killer made it so just now): reported once.
        self.word.store(EMPTY, Ordering::Relaxed);
        Err(IpcError::PeerDied)
    }

    /// A caller's killer (it won `caller`'s claim): `caller` went away.
    /// False if the word does not name it (the server side took it, or it
    /// was never accepted). Spins while the server side holds a pin: when
    /// this returns, no server-side claim of `caller` is under way.
    pub fn caller_gone(&self, caller: u64) -> bool {
        loop {
            // Acquire (failure): a pin's end, after its claim.
            match self
                .word
                .compare_exchange(caller, GONE, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(BUSY) => A::pause(),
                Err(_) => return false,
            }
        }
    }
}
