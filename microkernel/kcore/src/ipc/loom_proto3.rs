//! `loom` model checks of proto3's lock-free thread IPC state (session 25):
//! the wait record owned through the claim (`a_claim_owned_record_*`), and
//! the reply capability as an atomic word (`ReplyWord`) against a caller's
//! kill (a fast reply, a server's exit, a receiver's rearm, an accept).
//! Since cut26e there is no pin: the caller's memory goes a grace period
//! after it left (`crate::grace`), and each server-side party ends its
//! interrupts-off stretch (a quiescent state) only after its operation.
//! The claim models and their loom setup are in `loom_tests`.

use super::claim::{Ticket, WakeReason};
use super::loom_tests::{model, Claim};
use crate::grace::Quiescent;
use core::sync::atomic::Ordering;
use loom::sync::atomic::{AtomicU64 as LoomU64, AtomicUsize};
use loom::sync::{Arc, Mutex};
use loom::thread;

/// proto3: a thread's wait record (and its `frame_seq`) is owned through
/// its claim, not a lock (the kernel's `WaitRecord`): the thread writes
/// both before `begin_next` (Release); the winner of its claim, found
/// through the claim word as a signal to a bound receiver finds it
/// (`waiting`, Acquire), takes the record and reads `frame_seq`, then
/// publishes the outcome (the frame and `framed`, or the result slot under
/// the thread's lock). The thread, once it saw the outcome (or won its own
/// claim, a kill, and unlinked itself), writes its record for its next
/// wait. A loom `UnsafeCell` reports any two unordered accesses to the
/// record. A model of the protocol, not the kernel's code: seen failing
/// (a causality violation on the record) with the winner's take moved
/// after its `framed` store (the order the fast `reply_recv` had under the
/// caller's lock), and with `begin_next`'s store Relaxed.
// The record is a loom `UnsafeCell` so that loom itself checks every access
// (its accessors hand out raw pointers), as `handles::lockfree_loom`.
#[allow(unsafe_code)]
#[test]
fn a_claim_owned_record_is_never_raced() {
    use loom::cell::UnsafeCell;
    struct Shared {
        claim: Claim,
        record: UnsafeCell<u64>,
        frame_seq: LoomU64,
        framed: LoomU64,
        frame: LoomU64,
        result: Mutex<Option<u64>>,
    }
    // SAFETY: the record is accessed only under the protocol above, which
    // loom checks (a race is a causality error, not undefined behaviour).
    unsafe impl Sync for Shared {}
    // The record's one access each: replace its value, return the old.
    fn swap(s: &Shared, v: u64) -> u64 {
        s.record.with_mut(|r| {
            // SAFETY: loom's pointer to the cell, valid for this closure;
            // loom reports an access unordered with another.
            unsafe { core::mem::replace(&mut *r, v) }
        })
    }
    model(|| {
        let s = Arc::new(Shared {
            claim: Claim::new(),
            record: UnsafeCell::new(0),
            frame_seq: LoomU64::new(0),
            framed: LoomU64::new(0),
            frame: LoomU64::new(0),
            result: Mutex::new(None),
        });
        let winner = {
            let s = s.clone();
            thread::spawn(move || {
                let Some(tk) = s.claim.waiting() else {
                    return; // not visible yet: nothing to end
                };
                if !s.claim.try_claim(tk, WakeReason::Delivered) {
                    return;
                }
                // The record first (`unlink`, the fast path's take) ...
                let rec = swap(&s, 0);
                assert_eq!(rec, 1, "the record of the wait we won");
                // ... then the outcome, which hands the record back.
                if s.frame_seq.load(Ordering::Relaxed) == tk.delivered() {
                    s.frame.store(42, Ordering::Relaxed);
                    s.framed.store(tk.delivered(), Ordering::SeqCst);
                } else {
                    *s.result.lock().unwrap() = Some(42);
                }
            })
        };
        // The thread: its record and `frame_seq`, then the wait begins.
        let next = s.claim.next_delivered();
        swap(&s, 1);
        s.frame_seq.store(next, Ordering::Relaxed);
        let tk = s.claim.begin_next(next);
        // Its own kill (`ipc::wait`): wins unless the winner did.
        if s.claim.try_claim(tk, WakeReason::Cancelled) {
            // `unlink` of itself: the record is its own again.
            swap(&s, 0);
        } else {
            // `wait_end`: `framed` (Acquire) or the result slot.
            loop {
                if s.framed.load(Ordering::Acquire) == tk.delivered() {
                    assert_eq!(s.frame.load(Ordering::Relaxed), 42, "frame read early");
                    break;
                }
                if s.result.lock().unwrap().take().is_some() {
                    break;
                }
                thread::yield_now();
            }
        }
        s.claim.finish();
        // The next wait: the thread writes its record again.
        let next = s.claim.next_delivered();
        swap(&s, 2);
        s.frame_seq.store(next, Ordering::Relaxed);
        winner.join().unwrap();
    });
}

/// The caller's thread memory in the reply-word models: "freed" (poisoned)
/// a grace period after the caller left its wait, which it does after its
/// own unlink (`caller_gone`) when its kill won; a server-side claim that
/// touches it afterwards reads the poison (a use after free in the kernel).
const ALIVE: u64 = 1;
const FREED: u64 = 0xdead;
/// The caller's id in the word (a thread address: a multiple of 8).
const CALLER: u64 = 0x1000;
const SERVER_CPU: usize = 0;
const CALLER_CPU: usize = 1;

type Word = super::ReplyWord<LoomU64>;

struct ReplyRace {
    claim: Claim,
    cap: Word,
    /// The caller's memory: its claim word lives there.
    mem: LoomU64,
    /// The CPUs' quiescent states (`mem::retire`'s).
    q: Quiescent<2, LoomU64>,
    delivered: AtomicUsize,
    killed: AtomicUsize,
}

impl ReplyRace {
    fn bare() -> Arc<Self> {
        Arc::new(ReplyRace {
            claim: Claim::new(),
            cap: Word::new(),
            mem: LoomU64::new(ALIVE),
            q: Quiescent::new(),
            delivered: AtomicUsize::new(0),
            killed: AtomicUsize::new(0),
        })
    }

    /// A caller waiting in `tk` for the reply of a server whose word names
    /// it (accepted by a server-side party: `give_call`).
    fn new() -> (Arc<Self>, Ticket) {
        let s = Self::bare();
        let tk = s.claim.begin();
        assert_eq!(s.cap.accept(CALLER, tk, |_, _| unreachable!()), None);
        (s, tk)
    }

    /// A server-side claim of the caller: it dereferences the caller.
    fn claim_caller(&self, id: u64, tk: Ticket, why: WakeReason) -> bool {
        assert_eq!(id, CALLER);
        assert_eq!(
            self.mem.load(Ordering::Relaxed),
            ALIVE,
            "the caller was claimed after it was freed (use after free)"
        );
        self.claim.try_claim(tk, why)
    }

    /// The caller's kill (or timeout) with `why`: its own claim, its unlink
    /// from the server's word, then it leaves its wait, exits, and its
    /// memory goes back a grace period later.
    fn kill(&self, tk: Ticket, why: WakeReason) {
        if self.claim.try_claim(tk, why) {
            self.killed.fetch_add(1, Ordering::Relaxed);
            self.cap.caller_gone(CALLER);
            // Its CPU goes on (ticks); the freed block waits.
            self.q.toggle(CALLER_CPU);
            let snap = self.q.snapshot();
            while !self.q.elapsed(&snap, 2) {
                thread::yield_now();
            }
            self.mem.store(FREED, Ordering::Relaxed);
        } else {
            self.q.toggle(CALLER_CPU);
        }
    }

    /// The server side's interrupts-off stretch ended: its CPU takes
    /// ticks from now on (an extended quiescent state: a lone tick could
    /// come before the killer's snapshot and leave it spinning).
    fn server_quiescent(&self) {
        self.q.toggle(SERVER_CPU);
    }

    fn check(&self) {
        let d = self.delivered.load(Ordering::Relaxed);
        let k = self.killed.load(Ordering::Relaxed);
        assert_eq!(d + k, 1, "the caller's wait ends exactly once");
        assert_eq!(self.cap.caller(), None, "the word never keeps the caller");
    }
}

/// proto3: the fast `reply_recv`'s reply (`ReplyWord::take`: one exchange,
/// then the claim, cut26e) racing the caller's kill on another CPU (its
/// claim, `caller_gone`, then it leaves and its memory goes a grace period
/// later). Exactly one ends the caller's wait, the word never keeps it, and
/// the server's claim never touches a freed caller. Seen failing ("use
/// after free") with the free not waiting for the grace period, and with
/// the server's quiescent state between its exchange and its claim.
#[test]
fn a_kill_racing_a_fast_reply_ends_the_call_once_and_never_after_it_left() {
    model(|| {
        let (s, tk) = ReplyRace::new();
        let killer = {
            let s = s.clone();
            thread::spawn(move || s.kill(tk, WakeReason::Cancelled))
        };
        match s
            .cap
            .take(|c, t| s.claim_caller(c, t, WakeReason::Delivered))
        {
            Ok(Some(_)) => {
                s.delivered.fetch_add(1, Ordering::Relaxed);
            }
            // Its kill won first: the reply is dropped (`reply_recv`).
            Ok(None) | Err(super::IpcError::PeerDied) => {}
            Err(e) => panic!("a held call was lost: {e:?}"),
        }
        s.server_quiescent();
        killer.join().unwrap();
        s.check();
    });
}

/// proto3: the server's exit (`thread_exiting`: the word's `take`, the
/// caller claimed `Cancelled` and woken with `PeerDied`) racing the
/// caller's own kill. Exactly one ends the wait; no claim after the caller
/// was freed. Seen failing as the reply race above, with the same mutations.
#[test]
fn a_server_exit_racing_a_callers_kill_ends_the_call_once() {
    model(|| {
        let (s, tk) = ReplyRace::new();
        let killer = {
            let s = s.clone();
            thread::spawn(move || s.kill(tk, WakeReason::Cancelled))
        };
        if let Ok(Some(_)) = s
            .cap
            .take(|c, t| s.claim_caller(c, t, WakeReason::Cancelled))
        {
            // PeerDied for the caller, from its server's exit.
            s.delivered.fetch_add(1, Ordering::Relaxed);
        }
        s.server_quiescent();
        killer.join().unwrap();
        s.check();
    });
}

/// proto3, cut26e: a receiver that took a queued caller (`take`) names it
/// in its word *before* the caller's `rearm` (`take_call`; proto3 pinned
/// the word across the rearm instead); the caller's timeout, racing,
/// either leaves a late mark (the rearm fails and the receiver ends the
/// wait, the word `GONE`) or wins the rearmed wait and then finds the
/// caller in the word (`caller_gone`). The word never names a caller that
/// left, so the server's later reply never claims a freed one. Seen failing
/// ("use after free": the later reply claims the caller the word still
/// named) with the caller named after the rearm.
#[test]
fn a_caller_named_before_its_rearm_never_stays_in_the_word_after_it_left() {
    model(|| {
        let s = ReplyRace::bare();
        let tk = s.claim.begin();
        assert!(s.claim.take(tk));
        let timer = {
            let s = s.clone();
            thread::spawn(move || s.kill(tk, WakeReason::TimedOut))
        };
        // The receiver (`take_call`): name the caller, then rearm.
        assert_eq!(s.cap.accept(CALLER, tk, |_, _| unreachable!()), None);
        match s.claim.rearm(tk) {
            Ok(()) => {}
            Err(_) => {
                // A late timeout: ours to end (`late_error`).
                s.cap.named_caller_gone();
                s.killed.fetch_add(1, Ordering::Relaxed);
            }
        }
        s.server_quiescent();
        timer.join().unwrap();
        // The server replies later (if the caller is still there).
        if let Ok(Some(_)) = s
            .cap
            .take(|c, t| s.claim_caller(c, t, WakeReason::Delivered))
        {
            s.delivered.fetch_add(1, Ordering::Relaxed);
        }
        s.check();
    });
}

/// break25p: a delivery to the server (`give_call`, `deliver`: `accept`)
/// that abandons the caller the word still names (the server received
/// again without replying) racing that caller's kill. `accept` claims the
/// old caller after its exchange (cut26e: no pin); exactly one ends its
/// wait, never after it was freed, and the word names the new caller.
/// (proto3's models race only `take` against the kill.)
#[test]
fn an_accept_abandoning_a_caller_racing_its_kill_ends_it_once() {
    const NEXT: u64 = 0x2000;
    model(|| {
        let (s, tk) = ReplyRace::new();
        let killer = {
            let s = s.clone();
            thread::spawn(move || s.kill(tk, WakeReason::Cancelled))
        };
        let next = Claim::new().begin();
        let old = s.cap.accept(NEXT, next, |c, t| {
            s.claim_caller(c, t, WakeReason::Cancelled)
        });
        if old.is_some() {
            // PeerDied for the abandoned caller.
            s.delivered.fetch_add(1, Ordering::Relaxed);
        }
        s.server_quiescent();
        killer.join().unwrap();
        assert_eq!(s.cap.caller(), Some(NEXT), "the new caller is held");
        // The new caller's reply empties the word; then the usual check.
        assert!(s.cap.take(|_, _| true).is_ok());
        s.check();
    });
}
