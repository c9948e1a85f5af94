//! `loom` model checks of the wake claim: every interleaving (up to a
//! preemption bound) of a partner delivering, a timeout and a kill racing for
//! one blocked thread, of a receiver taking a caller while its timeout fires,
//! of a stale timeout against the thread's next wait, of a signal and a
//! call racing for a thread waiting on an endpoint and its bound
//! notification, and of frame delivery's `framed` against the waiter's
//! block.

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
    fn swap(&self, v: u64, order: Ordering) -> u64 {
        LoomU64::swap(self, v, order)
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
    fn pause() {
        // A spin wait must let the other threads run (loom explores a
        // spinning thread's every step otherwise).
        thread::yield_now();
    }
}

pub(super) type Claim = WaitClaim<LoomU64>;

pub(super) fn model(f: impl Fn() + Sync + Send + 'static) {
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

#[test]
fn a_signal_and_a_call_racing_for_a_bound_receiver_lose_nothing() {
    use super::{CallStep, Caller, Endpoint, Notification, Pick, Receiver, RecvStep, SignalStep};
    model(|| {
        let claim = Arc::new(Claim::new());
        // The bound thread is in its endpoint receive, registered with its
        // notification (the kernel's recv sequence).
        let tk = claim.begin();
        let ep = Arc::new(Mutex::new(Endpoint::<u32>::new()));
        let ntf = Arc::new(Mutex::new(Notification::<u32>::new()));
        {
            let mut e = ep.lock().unwrap();
            e.add_receive_ref();
            let queued = e.recv(
                Receiver {
                    thread: WAITER,
                    cpu: 0,
                },
                true,
                |_| true,
            );
            assert_eq!(queued, Ok(RecvStep::Queued));
            let mut n = ntf.lock().unwrap();
            n.bind(WAITER).unwrap();
            assert_eq!(n.bound_recv_begin(&WAITER), Ok(None));
        }

        let signaller = {
            let (claim, ep, ntf) = (claim.clone(), ep.clone(), ntf.clone());
            thread::spawn(move || {
                let step = ntf
                    .lock()
                    .unwrap()
                    .signal(0b100, |_| claim.try_claim(tk, WakeReason::Notified));
                if let SignalStep::Wake { bound, bits, .. } = step {
                    assert!(bound);
                    assert_eq!(bits, 0b100);
                    // Winner: unlink from the endpoint (its own lock, after).
                    ep.lock().unwrap().remove(&WAITER);
                }
            })
        };
        let caller = {
            let (claim, ep, ntf) = (claim.clone(), ep.clone(), ntf.clone());
            thread::spawn(move || {
                let step = ep.lock().unwrap().call(
                    Caller {
                        thread: 1,
                        badge: 0,
                    },
                    0,
                    true,
                    |_| {
                        if claim.try_claim(tk, WakeReason::Delivered) {
                            Pick::Take
                        } else {
                            Pick::Skip
                        }
                    },
                );
                if let Ok(CallStep::Deliver(_)) = step {
                    // Winner: end the bound registration.
                    ntf.lock().unwrap().remove(&WAITER);
                }
                step
            })
        };
        signaller.join().unwrap();
        let step = caller.join().unwrap();

        let why = claim.finish().expect("the receive ended");
        let e = ep.lock().unwrap();
        let n = ntf.lock().unwrap();
        assert_eq!(e.receivers().count(), 0, "the thread left the endpoint");
        assert!(!n.bound_waiting(), "and the notification");
        match why {
            // The call got through: the bits stay pending for the next wait.
            WakeReason::Delivered => {
                assert!(matches!(step, Ok(CallStep::Deliver(_))));
                assert_eq!(n.pending(), 0b100);
            }
            // The signal got through: the call waits for the next receive.
            WakeReason::Notified => {
                assert_eq!(step, Ok(CallStep::Queued));
                assert_eq!(e.callers().count(), 1);
                assert_eq!(n.pending(), 0);
            }
            other => panic!("unexpected {other:?}"),
        }
    });
}

/// The hand-back (review finding, `ipc::slowpath::take_call`): a receiver
/// takes a queued caller, fails to place its message on its own side, and
/// gives the call back (`rearm`, then a claim that ends the wait with
/// "retry"), while the caller's timeout and a kill race it. Exactly one
/// party ends the wait, none is lost, and a retry is reported only when
/// no timeout or kill ended it.
#[test]
fn a_taken_call_handed_back_races_timeout_and_kill_and_ends_once() {
    model(|| {
        let claim = Arc::new(Claim::new());
        let tk = claim.begin();
        let endings = Arc::new(AtomicUsize::new(0));
        let retried = Arc::new(AtomicUsize::new(0));

        let receiver = {
            let (claim, endings, retried) = (claim.clone(), endings.clone(), retried.clone());
            thread::spawn(move || {
                if claim.take(tk) {
                    // ... placing the message on the receiver's side failed ...
                    match claim.rearm(tk) {
                        Ok(()) => {
                            if claim.try_claim(tk, WakeReason::Delivered) {
                                endings.fetch_add(1, Ordering::Relaxed);
                                retried.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => {
                            endings.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        };
        let timer = {
            let (claim, endings) = (claim.clone(), endings.clone());
            thread::spawn(move || {
                if claim.try_claim(tk, WakeReason::TimedOut) {
                    endings.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let killer = {
            let (claim, endings) = (claim.clone(), endings.clone());
            thread::spawn(move || {
                if claim.try_claim(tk, WakeReason::Cancelled) {
                    endings.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        receiver.join().unwrap();
        timer.join().unwrap();
        killer.join().unwrap();

        assert_eq!(endings.load(Ordering::Relaxed), 1, "the wait ends once");
        let why = claim.finish().expect("the wait ended");
        assert_eq!(
            why == WakeReason::Delivered,
            retried.load(Ordering::Relaxed) == 1,
            "a retry is reported iff the receiver's hand-back ended the wait"
        );
    });
}

/// notdeliv: the last receive handle closes on one CPU while a receiver on
/// another takes the queued call. The endpoint's lock orders the two: the
/// caller is either taken (its fate is the receiver's: here it dies
/// holding the call, `PeerDied`) or drained (`NotDelivered`), never both,
/// never neither, and `NotDelivered` never follows a take.
#[test]
fn last_receiver_closing_races_a_receive_and_the_caller_learns_exactly_one() {
    use super::endpoint::{Caller, Endpoint, Receiver, RecvStep};
    use super::IpcError;
    const NOT_DELIVERED: usize = 1;
    const PEER_DIED: usize = 2;
    model(|| {
        let claim = Arc::new(Claim::new());
        let tk = claim.begin();
        let mut e = Endpoint::<u32>::new();
        e.add_receive_ref();
        let caller = Caller {
            thread: WAITER,
            badge: 0,
        };
        assert!(e.call(caller, 0, true, |_| unreachable!()).is_ok());
        let ep = Arc::new(Mutex::new(e));
        let outcome = Arc::new(AtomicUsize::new(0));
        let taken = Arc::new(AtomicUsize::new(0));

        let receiver = {
            let (claim, ep, outcome, taken) =
                (claim.clone(), ep.clone(), outcome.clone(), taken.clone());
            thread::spawn(move || {
                let me = Receiver { thread: 1, cpu: 1 };
                let got = ep.lock().unwrap().recv(me, false, |_| claim.take(tk));
                match got {
                    Ok(RecvStep::Got(_)) => {
                        taken.store(1, Ordering::Relaxed);
                        assert_eq!(claim.rearm(tk), Ok(()));
                        // The server dies holding the call.
                        if claim.try_claim(tk, WakeReason::Cancelled) {
                            outcome.store(PEER_DIED, Ordering::Relaxed);
                        }
                    }
                    // Dead already: the drain had the caller.
                    Err(IpcError::PeerDied) => {}
                    other => panic!("receive: {other:?}"),
                }
            })
        };
        let closer = {
            let (claim, ep, outcome) = (claim.clone(), ep.clone(), outcome.clone());
            thread::spawn(move || {
                let d = ep.lock().unwrap().drop_receive_ref().expect("the last");
                for c in d.callers {
                    assert_eq!(c.thread, WAITER);
                    if claim.try_claim(tk, WakeReason::Cancelled) {
                        outcome.store(NOT_DELIVERED, Ordering::Relaxed);
                    }
                }
            })
        };
        receiver.join().unwrap();
        closer.join().unwrap();
        assert!(claim.finish().is_some(), "the wait ended");
        let (o, t) = (
            outcome.load(Ordering::Relaxed),
            taken.load(Ordering::Relaxed),
        );
        assert!(o == NOT_DELIVERED || o == PEER_DIED, "exactly one outcome");
        assert_eq!(o == PEER_DIED, t == 1, "PeerDied iff a receiver took it");
    });
}

/// break22: frame delivery's Dekker pattern, as the kernel runs it
/// (`ipc::fastpath::hand` and `sched::wake` for the winner, `ipc::wait`'s
/// loop for the waiter): the winner of the claim writes the frame, stores
/// `framed` (SeqCst), then exchanges Blocked -> Ready; the waiter tests
/// `framed`, stores Blocked, fences, tests `framed` again before it blocks.
/// Never lost (a waiter that blocks is made Ready), and a frame read after
/// `framed` sees the message (the frame is a Relaxed atomic here, so loom
/// explores the stale values an unordered read could see). A model of the
/// protocol, not the kernel's code: seen failing with the waiter's second
/// test removed ("lost wake-up"), with its fence removed (the same), and
/// with the `framed` store Relaxed (a frame read of 0).
#[test]
fn a_frame_delivery_is_never_lost_nor_read_before_framed() {
    use loom::sync::atomic::fence;
    const RUNNING: u64 = 0;
    const BLOCKED: u64 = 1;
    const READY: u64 = 2;
    struct Shared {
        claim: Claim,
        state: LoomU64,
        framed: LoomU64,
        frame: LoomU64,
    }
    model(|| {
        let s = Arc::new(Shared {
            claim: Claim::new(),
            state: LoomU64::new(RUNNING),
            framed: LoomU64::new(0),
            frame: LoomU64::new(0),
        });
        let tk = s.claim.begin();
        // What `framed` holds for this wait (`Ticket::delivered`).
        let seq = tk.delivered();
        let winner = {
            let s = s.clone();
            thread::spawn(move || {
                if s.claim.try_claim(tk, WakeReason::Delivered) {
                    // The frame's registers (plain stores in the kernel).
                    s.frame.store(42, Ordering::Relaxed);
                    s.framed.store(seq, Ordering::SeqCst);
                    // Loom models SeqCst loads and stores as AcqRel, so
                    // the store-then-load the kernel's SeqCst store and
                    // SeqCst exchange give (on x86: the exchange is a
                    // locked instruction, a full barrier) is this fence.
                    fence(Ordering::SeqCst);
                    // `sched::wake`: Blocked -> Ready, or nothing.
                    let _ = s.state.compare_exchange(
                        BLOCKED,
                        READY,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    );
                }
            })
        };
        // The waiter: `ipc::wait`'s loop, up to its block.
        let framed = || s.framed.load(Ordering::SeqCst) == seq;
        let mut blocked = false;
        loop {
            if framed() {
                assert_eq!(s.frame.load(Ordering::Relaxed), 42, "frame read early");
                break;
            }
            // `set_state(Blocked)` (an exchange), then the fence.
            s.state.swap(BLOCKED, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if framed()
                && s.state
                    .compare_exchange(BLOCKED, RUNNING, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                continue;
            }
            blocked = true;
            break;
        }
        winner.join().unwrap();
        if blocked {
            assert_eq!(
                s.state.load(Ordering::SeqCst),
                READY,
                "lost wake-up: blocked with its message framed and nobody to wake it"
            );
        }
    });
}

/// break23: the frameless resume's common case (`ipc::fastpath::framed_end`:
/// `framed` loaded Acquire, then `finish_delivered(framed)`, one Acquire
/// load of the claim word) racing the winner of the thread's wait 2, a
/// delivery (frame, then `framed`) or a kill, with `framed` still naming
/// the thread's earlier wait 1 (a frame delivery too). The resume ends the
/// wait only for a delivery of wait 2 and then reads the message; anything
/// else changes nothing, and the thread's later `finish` sees the winner's
/// reason (a kill's `Cancelled` is never reported as a delivery, and a
/// stale `framed` never ends wait 2).
#[test]
fn the_frameless_resume_ends_only_a_framed_delivery_of_its_wait() {
    struct Shared {
        claim: Claim,
        framed: LoomU64,
        frame: LoomU64,
    }
    model(|| {
        let s = Arc::new(Shared {
            claim: Claim::new(),
            framed: LoomU64::new(0),
            frame: LoomU64::new(0),
        });
        // Wait 1, ended by a frame delivery.
        let t1 = s.claim.begin();
        assert!(s.claim.try_claim(t1, WakeReason::Delivered));
        s.framed.store(t1.delivered(), Ordering::SeqCst);
        assert!(s.claim.finish_delivered(t1.delivered()));
        // Wait 2.
        let tk = s.claim.begin();
        let deliverer = {
            let s = s.clone();
            thread::spawn(move || {
                if s.claim.try_claim(tk, WakeReason::Delivered) {
                    s.frame.store(42, Ordering::Relaxed);
                    s.framed.store(tk.delivered(), Ordering::SeqCst);
                }
            })
        };
        let killer = {
            let s = s.clone();
            thread::spawn(move || s.claim.try_claim(tk, WakeReason::Cancelled))
        };
        // The resume, at any point of the race (a kill's wake-up, or the
        // deliverer's).
        let seq = s.framed.load(Ordering::Acquire);
        let ended = s.claim.finish_delivered(seq);
        if ended {
            assert_eq!(seq, tk.delivered(), "a stale `framed` ended the wait");
            assert_eq!(s.frame.load(Ordering::Relaxed), 42, "frame read early");
        }
        deliverer.join().unwrap();
        let killed = killer.join().unwrap();
        if ended {
            assert!(!killed, "the kill won, but the resume saw a delivery");
            assert_eq!(s.claim.finish(), None, "ended once");
        } else {
            // The slow path (`wait_end`): the winner's reason.
            let r = s.claim.finish();
            assert_eq!(
                r,
                Some(if killed {
                    WakeReason::Cancelled
                } else {
                    WakeReason::Delivered
                })
            );
        }
        assert_eq!(s.claim.next_delivered(), tk.delivered() + 0x100);
    });
}
