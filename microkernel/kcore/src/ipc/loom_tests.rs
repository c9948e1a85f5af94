//! `loom` model checks of the wake claim: every interleaving (up to a
//! preemption bound) of a partner delivering, a timeout and a kill racing for
//! one blocked thread, of a receiver taking a caller while its timeout fires,
//! and of a stale timeout against the thread's next wait.

use super::claim::{AtomicWord, Ticket, WaitClaim, WakeReason};
use super::ReplyCap;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use loom::sync::atomic::{AtomicU64 as LoomU64, AtomicUsize};
use loom::sync::{Arc, Mutex};
use loom::thread;

impl AtomicWord for LoomU64 {
    fn new(v: u64) -> Self {
        LoomU64::new(v)
    }
    fn load(&self, order: Ordering) -> u64 {
        LoomU64::load(self, order)
    }
    fn store(&self, v: u64, order: Ordering) {
        LoomU64::store(self, v, order)
    }
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64> {
        LoomU64::compare_exchange(self, current, new, success, failure)
    }
}

type Claim = WaitClaim<LoomU64>;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    // Bounded so `cargo test` stays fast on a 2-core machine; 3 preemptions
    // cover every ordering of these three-party races.
    b.preemption_bound = Some(3);
    b.check(f);
}

const WAITER: u32 = 7;

/// The winner of a claim removes the thread from the queue and records why.
fn end_wait(
    claim: &Claim,
    tk: Ticket,
    reason: WakeReason,
    queue: &Mutex<Vec<u32>>,
    wins: &AtomicUsize,
) {
    if claim.try_claim(tk, reason) {
        wins.fetch_add(1, Ordering::Relaxed);
        queue.lock().unwrap().retain(|t| *t != WAITER);
    }
}

#[test]
fn deliver_timeout_and_kill_race_and_exactly_one_ends_the_wait() {
    model(|| {
        let claim = Arc::new(Claim::new());
        let tk = claim.begin();
        let queue = Arc::new(Mutex::new(alloc::vec![WAITER]));
        let wins = Arc::new(AtomicUsize::new(0));
        let delivered = Arc::new(AtomicUsize::new(0));

        let deliverer = {
            let (claim, queue, wins, delivered) = (
                claim.clone(),
                queue.clone(),
                wins.clone(),
                delivered.clone(),
            );
            thread::spawn(move || {
                // The endpoint path: pop under the lock, then claim (Pick).
                let mut q = queue.lock().unwrap();
                if let Some(i) = q.iter().position(|t| *t == WAITER) {
                    q.remove(i);
                    if claim.try_claim(tk, WakeReason::Delivered) {
                        wins.fetch_add(1, Ordering::Relaxed);
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    // else: Skip; the message stays with its sender.
                }
            })
        };
        let timer = {
            let (claim, queue, wins) = (claim.clone(), queue.clone(), wins.clone());
            thread::spawn(move || end_wait(&claim, tk, WakeReason::TimedOut, &queue, &wins))
        };
        let killer = {
            let (claim, queue, wins) = (claim.clone(), queue.clone(), wins.clone());
            thread::spawn(move || end_wait(&claim, tk, WakeReason::Cancelled, &queue, &wins))
        };
        deliverer.join().unwrap();
        timer.join().unwrap();
        killer.join().unwrap();

        assert_eq!(
            wins.load(Ordering::Relaxed),
            1,
            "exactly one party ends the wait"
        );
        assert!(
            queue.lock().unwrap().is_empty(),
            "and the thread is in no queue"
        );
        let why = claim.finish().expect("the wait ended");
        assert_eq!(
            why == WakeReason::Delivered,
            delivered.load(Ordering::Relaxed) == 1,
            "a message is delivered iff the thread learns it was"
        );
    });
}

#[test]
fn a_caller_taken_by_a_receiver_still_times_out_exactly_once_and_never_late() {
    model(|| {
        let claim = Arc::new(Claim::new());
        let tk = claim.begin();
        let cap = Arc::new(Mutex::new(ReplyCap::<u32>::new()));
        let endings = Arc::new(AtomicUsize::new(0));
        let taken = Arc::new(AtomicUsize::new(0));

        let receiver = {
            let (claim, cap, endings, taken) =
                (claim.clone(), cap.clone(), endings.clone(), taken.clone());
            thread::spawn(move || {
                if claim.take(tk) {
                    taken.fetch_add(1, Ordering::Relaxed);
                    // ... the message is copied here, the caller cannot run ...
                    match claim.rearm(tk) {
                        Ok(()) => {
                            cap.lock().unwrap().accept(WAITER);
                        }
                        // A timeout came while taken: the receiver ends the
                        // wait for it; the server keeps the message and its
                        // reply will find the caller gone.
                        Err(_) => {
                            endings.fetch_add(1, Ordering::Relaxed);
                            cap.lock().unwrap().accept_gone();
                        }
                    }
                }
            })
        };
        let timer = {
            let (claim, cap, endings) = (claim.clone(), cap.clone(), endings.clone());
            thread::spawn(move || {
                if claim.try_claim(tk, WakeReason::TimedOut) {
                    endings.fetch_add(1, Ordering::Relaxed);
                    cap.lock().unwrap().caller_gone(&WAITER);
                }
            })
        };
        receiver.join().unwrap();
        timer.join().unwrap();

        // The timer ran, so whatever the interleaving the call has ended
        // (a timeout is never lost, even one that came while taken) ...
        assert_eq!(claim.waiting(), None, "the timeout was lost");
        assert_eq!(
            endings.load(Ordering::Relaxed),
            1,
            "the call ends exactly once"
        );
        assert_eq!(claim.finish(), Some(WakeReason::TimedOut));
        // ... and the server's reply, if it got the call, finds it gone.
        let pending = cap.lock().unwrap().take();
        if let Ok(c) = pending {
            assert_eq!(c, WAITER);
            assert!(taken.load(Ordering::Relaxed) == 1);
            assert!(
                !claim.try_claim(tk, WakeReason::Delivered),
                "reply after the timeout"
            );
        }
    });
}

#[test]
fn a_stale_timeout_never_ends_the_next_wait() {
    model(|| {
        let claim = Arc::new(Claim::new());
        let first = claim.begin();
        let deliverer = {
            let claim = claim.clone();
            thread::spawn(move || claim.try_claim(first, WakeReason::Delivered))
        };
        let timer = {
            let claim = claim.clone();
            thread::spawn(move || claim.try_claim(first, WakeReason::TimedOut))
        };
        let waiter = {
            let claim = claim.clone();
            thread::spawn(move || {
                // Sleep until the first wait ends, then wait again.
                loop {
                    if claim.finish().is_some() {
                        break;
                    }
                    thread::yield_now();
                }
                claim.begin()
            })
        };
        let d = deliverer.join().unwrap();
        let t = timer.join().unwrap();
        let second = waiter.join().unwrap();
        assert!(d ^ t, "one of them ended the first wait");
        assert_eq!(
            claim.waiting(),
            Some(second),
            "the second wait is untouched"
        );
    });
}
