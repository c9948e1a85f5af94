//! The wake claim: one word per thread that decides, without locks, who ends
//! a blocked thread's wait.
//!
//! A thread blocked in IPC can be ended by several parties on several CPUs at
//! once: a partner that delivers a message (under the endpoint's lock), a
//! timer (holding only its own sleep list), a kill, a notification signal, or
//! the endpoint dying. Exactly one of them must win, write the result and wake
//! the thread; the others must back off without touching it.
//!
//! The protocol: the thread calls [`WaitClaim::begin`] *before* it becomes
//! visible in any queue and gets a [`Ticket`]. A party that wants to end the
//! wait calls [`WaitClaim::try_claim`]; only one compare-and-swap from
//! "waiting, this ticket" succeeds. The winner then
//! 1. removes the thread from every queue of this wait (taking each queue's
//!    lock in turn, never two at once: a remove that finds nothing is fine),
//! 2. writes the result into the thread (message registers or error),
//! 3. makes it runnable.
//!
//! A loser changes nothing. Because the winner removes the thread before it
//! can run and wait again, a queue never holds an entry from an older wait.
//! A ticket carries a sequence number, so a stale timer entry from an earlier
//! wait cannot end a later one.
//!
//! # Taking a caller without ending its wait
//! A receiver that takes a queued call must read the caller's message while
//! the caller cannot run, but the caller's wait goes on (now for the reply).
//! So the receiver [`take`](WaitClaim::take)s it: exclusive, like a claim,
//! but the wait is then [`rearm`](WaitClaim::rearm)ed with the same ticket
//! once the reply capability names the caller. A timeout or kill that comes
//! while the caller is taken cannot claim it; [`try_claim`](WaitClaim::try_claim)
//! leaves a *late* mark instead, and `rearm` then fails with that reason: the
//! receiver, still owning the caller, ends its wait for it (the server keeps
//! the message; its reply will find the caller gone). So no timeout or kill
//! is ever lost, and none ends a wait twice.
//!
//! # Orderings
//! - `begin` stores with `Release` (the thread's wait arguments, saved before,
//!   are visible to whoever sees "waiting").
//! - `try_claim` is an `AcqRel` compare-and-swap: `Acquire` pairs with the
//!   `begin` store (the winner sees the arguments), `Release` publishes the
//!   claim to the thread's later `finish` (an `Acquire` load). The result the
//!   winner writes afterwards reaches the thread through the scheduler's wake
//!   (its run-queue lock), not through this word.

use core::sync::atomic::{AtomicU64, Ordering};

/// The atomic operations the claim needs, so the loom tests can substitute
/// loom's model-checked atomic for `core`'s.
pub trait AtomicWord {
    /// A new atomic holding `v`.
    fn new(v: u64) -> Self;
    /// `load`.
    fn load(&self, order: Ordering) -> u64;
    /// `store`.
    fn store(&self, v: u64, order: Ordering);
    /// `compare_exchange`.
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64>;
    /// `swap`.
    fn swap(&self, v: u64, order: Ordering) -> u64;
    /// One round of a spin wait: a pause instruction; the loom tests yield
    /// to the other threads instead. (`ReplyWord::caller_gone` spun with it
    /// until cut26e removed the pin; kept for the next spin wait.)
    #[inline(always)]
    fn pause() {
        core::hint::spin_loop();
    }
}

// Inlined: the IPC fast path runs these on every call and reply.
impl AtomicWord for AtomicU64 {
    #[inline(always)]
    fn new(v: u64) -> Self {
        AtomicU64::new(v)
    }
    #[inline(always)]
    fn load(&self, order: Ordering) -> u64 {
        AtomicU64::load(self, order)
    }
    #[inline(always)]
    fn store(&self, v: u64, order: Ordering) {
        AtomicU64::store(self, v, order)
    }
    #[inline(always)]
    fn swap(&self, v: u64, order: Ordering) -> u64 {
        AtomicU64::swap(self, v, order)
    }
    #[inline(always)]
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64> {
        AtomicU64::compare_exchange(self, current, new, success, failure)
    }
}

/// Why a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum WakeReason {
    /// A partner delivered a message or a reply (or took the caller's).
    Delivered = 2,
    /// The thread is being killed, or the object it waited on died.
    Cancelled = 3,
    /// Its timeout expired.
    TimedOut = 4,
    /// A notification (plain wait, or the one bound to its receive).
    Notified = 5,
}

impl WakeReason {
    fn from_state(s: u8) -> Option<Self> {
        Some(match s {
            2 => WakeReason::Delivered,
            3 => WakeReason::Cancelled,
            4 => WakeReason::TimedOut,
            5 => WakeReason::Notified,
            _ => return None,
        })
    }
}

const STATE_MASK: u64 = 0xff;
const RUNNING: u64 = 0;
const WAITING: u64 = 1;
/// Taken by a receiver (exclusive, wait continues after `rearm`).
const TAKEN: u64 = 6;
/// Taken, and a timeout (`TAKEN | LATE_TIMEOUT`) or kill (`TAKEN | LATE_KILL`)
/// arrived meanwhile.
const LATE_TIMEOUT: u64 = 0x10;
const LATE_KILL: u64 = 0x20;

/// Names one wait of one thread. Held as the claim word of that wait while
/// it waits (`seq << 8 | WAITING`), so the claim's words for it are one
/// addition away rather than a shift and an OR (every IPC claim, `begin`
/// and the frameless resume's test, protocut).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket(u64);

impl Ticket {
    /// The ticket's word (`ReplyWord` keeps it beside the caller's id).
    #[inline(always)]
    pub(crate) const fn raw(self) -> u64 {
        self.0
    }

    /// The ticket whose word is `w` (from [`raw`](Self::raw)).
    #[inline(always)]
    pub(crate) const fn from_raw(w: u64) -> Ticket {
        Ticket(w)
    }

    /// The claim word while this wait waits, what
    /// [`WaitClaim::is_waiting`] compares (for the kernel's assembly
    /// readers of the word, cut26s).
    #[inline(always)]
    pub const fn waiting_word(self) -> u64 {
        self.0
    }

    /// The sequence number (for logs and for storing beside a thread id).
    pub const fn seq(self) -> u64 {
        self.0 >> 8
    }

    /// The claim word of this wait in `state` (`seq << 8 | state`).
    #[inline(always)]
    const fn word(self, state: u64) -> u64 {
        self.0 - WAITING + state
    }

    /// The claim word of this wait once claimed for a delivery: what the IPC
    /// fast path's frame delivery names the wait by (the thread's
    /// `frame_seq` and `framed`, [`WaitClaim::finish_delivered`]).
    #[inline(always)]
    pub const fn delivered(self) -> u64 {
        self.word(WakeReason::Delivered as u64)
    }
}

/// A thread's wake-claim word: `seq << 8 | state`.
pub struct WaitClaim<A: AtomicWord = AtomicU64> {
    word: A,
}

impl<A: AtomicWord> Default for WaitClaim<A> {
    fn default() -> Self {
        Self::new()
    }
}

/// The bits of a claim word [`WaitClaim::finish_delivered`] clears (the
/// state; the running state is 0), for the kernel's assembly copy of it.
pub const CLAIM_STATE_MASK: u64 = STATE_MASK;
const _: () = assert!(RUNNING == 0);

impl<A: AtomicWord> WaitClaim<A> {
    /// Where the claim word sits in the record (for the kernel's assembly
    /// readers of it, cut26s).
    pub const WORD_OFFSET: usize = core::mem::offset_of!(Self, word);

    /// Not waiting.
    pub fn new() -> Self {
        WaitClaim {
            word: A::new(RUNNING),
        }
    }

    /// Starts a wait. Only the thread itself calls this, while running.
    #[inline]
    pub fn begin(&self) -> Ticket {
        // The next sequence number, waiting, whatever the state byte holds
        // (`seq << 8 | 0xff`, plus one and WAITING).
        let w = (self.word.load(Ordering::Relaxed) | STATE_MASK) + 1 + WAITING;
        // Release: see the module docs.
        self.word.store(w, Ordering::Release);
        Ticket(w)
    }

    /// [`begin`](Self::begin), given what [`next_delivered`](Self::next_delivered)
    /// returned (`next`) since the thread's last `begin`: the same wait, without
    /// reading the word again (the IPC fast path reads `next` under its lock
    /// for its frame delivery, then begins; protocut). Only the thread itself
    /// calls this (it alone changes the sequence number, so `next` is still
    /// what `next_delivered` would return).
    #[inline]
    pub fn begin_next(&self, next: u64) -> Ticket {
        debug_assert_eq!(next, self.next_delivered(), "a begin since next_delivered");
        let w = next - WakeReason::Delivered as u64 + WAITING;
        // Release: see the module docs.
        self.word.store(w, Ordering::Release);
        Ticket(w)
    }

    /// Tries to end wait `ticket` for `reason`; true for exactly one caller.
    ///
    /// A `TimedOut` or `Cancelled` that finds the thread taken (see the
    /// module docs) returns false but leaves a late mark that its taker's
    /// `rearm` honours (a kill wins over a timeout).
    #[inline]
    pub fn try_claim(&self, ticket: Ticket, reason: WakeReason) -> bool {
        let waiting = ticket.0;
        let late = match reason {
            WakeReason::TimedOut => LATE_TIMEOUT,
            WakeReason::Cancelled => LATE_KILL,
            _ => 0,
        };
        if late == 0 {
            // A delivery or a notification leaves no late mark: one
            // compare-and-swap decides (the loop below would only retry to
            // find a value other than `waiting` and give up). Spelled out
            // because the compiler cannot see that a failed exchange never
            // returns the value it compared with, and kept the loop (four
            // instructions more on each IPC fast path's claim).
            return self
                .word
                .compare_exchange(
                    waiting,
                    ticket.word(reason as u64),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok();
        }
        let mut cur = waiting;
        loop {
            let next = if cur == waiting {
                ticket.word(reason as u64)
            } else if late != 0 && cur >> 8 == ticket.seq() && cur & 0xf == TAKEN && cur & late == 0
            {
                // Taken by a receiver: leave a late mark for its rearm.
                cur | late
            } else {
                // Claimed by someone else, or a later wait: we lost.
                return false;
            };
            // AcqRel/Acquire: see the module docs (the mark's Release pairs
            // with rearm's Acquire).
            match self
                .word
                .compare_exchange(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return cur == waiting,
                // Retry on the value seen: a taken wait may be rearmed (then
                // claim it) or marked by the other late party meanwhile.
                Err(now) => cur = now,
            }
        }
    }

    /// A receiver takes a queued caller: exclusive access to it while its
    /// message is copied, without ending its wait. True for one party only,
    /// exactly like a claim.
    pub fn take(&self, ticket: Ticket) -> bool {
        self.word
            .compare_exchange(
                ticket.word(WAITING),
                ticket.word(TAKEN),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// The taker hands the wait back (the caller now waits for its reply).
    /// `Err(reason)`: a timeout or kill came meanwhile; the wait is now
    /// claimed for that reason and the taker must end it (wake the thread).
    pub fn rearm(&self, ticket: Ticket) -> Result<(), WakeReason> {
        let mut cur = ticket.word(TAKEN);
        loop {
            let (next, result) = if cur & LATE_KILL != 0 {
                (
                    ticket.word(WakeReason::Cancelled as u64),
                    Err(WakeReason::Cancelled),
                )
            } else if cur & LATE_TIMEOUT != 0 {
                (
                    ticket.word(WakeReason::TimedOut as u64),
                    Err(WakeReason::TimedOut),
                )
            } else {
                (ticket.word(WAITING), Ok(()))
            };
            // Release: publishes the copy-out to the next claimer; Acquire:
            // sees a late mark's writer.
            match self
                .word
                .compare_exchange(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return result,
                Err(now) if now >> 8 == ticket.seq() && now & 0xf == TAKEN => cur = now,
                Err(_) => {
                    // A kernel bug (rearm without take): change nothing.
                    debug_assert!(false, "rearm of a wait that is not taken");
                    return Ok(());
                }
            }
        }
    }

    /// The ticket of the thread's latest wait, whatever its state (the
    /// frameless resume's: it ends the wait `begin` last started). Only
    /// the thread itself calls this; `begin`, also the thread's own, is the
    /// only writer of the sequence number, so Relaxed reads its own store.
    #[inline]
    pub fn latest(&self) -> Ticket {
        Ticket(self.word.load(Ordering::Relaxed) & !STATE_MASK | WAITING)
    }

    /// The claim word as it stands, state and all (Relaxed): for the
    /// kernel's checks of what its assembly assumes of the word (the
    /// frameless hand-off's "delivered by the hander", break28s).
    #[inline]
    pub fn word(&self) -> u64 {
        self.word.load(Ordering::Relaxed)
    }

    /// [`Ticket::delivered`] of the wait the thread's next
    /// [`begin`](Self::begin) will start: a wait that says, before it
    /// begins, how its outcome may be handed to it (the IPC fast path's
    /// frame delivery) names it by this. Only the thread itself calls this
    /// (as `latest`).
    #[inline]
    pub fn next_delivered(&self) -> u64 {
        (self.word.load(Ordering::Relaxed) | STATE_MASK) + 1 + WakeReason::Delivered as u64
    }

    /// The current wait's ticket, if the thread is waiting and unclaimed.
    #[inline]
    pub fn waiting(&self) -> Option<Ticket> {
        let w = self.word.load(Ordering::Acquire);
        (w & STATE_MASK == WAITING).then_some(Ticket(w))
    }

    /// Whether wait `ticket` is still waiting and unclaimed: the thread's
    /// own test, after it stored Blocked, that nobody ended its wait yet
    /// (the IPC fast path's block, ipccut). `SeqCst`: the thread's Blocked
    /// store before this load is the store-then-load half of a Dekker
    /// pattern; a winner's claim (a locked compare-and-swap) comes before
    /// its Blocked -> Ready exchange, so either this load sees the claim or
    /// that exchange sees Blocked (and queues the thread). On x86 it is a
    /// plain load, as `Acquire` would be.
    #[inline]
    pub fn is_waiting(&self, ticket: Ticket) -> bool {
        self.word.load(Ordering::SeqCst) == ticket.0
    }

    /// Ends the wait from the thread's side after it was woken: returns why,
    /// and resets the word to running. `None` if nobody claimed it (a
    /// spurious wake-up: the thread must keep waiting).
    #[inline]
    pub fn finish(&self) -> Option<WakeReason> {
        // Acquire: pairs with the winner's claim.
        let w = self.word.load(Ordering::Acquire);
        let reason = WakeReason::from_state((w & STATE_MASK) as u8)?;
        self.word.store(w & !STATE_MASK, Ordering::Relaxed);
        Some(reason)
    }

    /// [`finish`](Self::finish) for the wait whose [`Ticket::delivered`]
    /// is `claimed`, when a partner claimed it for a delivery: true (and
    /// the word reset to running) if the word says exactly that, else false
    /// with nothing changed. One load and one compare, with no separate
    /// [`latest`](Self::latest) and no decoding of the state (the frameless
    /// IPC resume's common case, where the delivering partner named the
    /// wait it claimed). Only the thread itself calls this. Acquire: as in
    /// `finish`.
    #[inline]
    pub fn finish_delivered(&self, claimed: u64) -> bool {
        if self.word.load(Ordering::Acquire) != claimed {
            return false;
        }
        self.word
            .store(claimed & !STATE_MASK | RUNNING, Ordering::Relaxed);
        true
    }
}
