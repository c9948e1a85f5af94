//! The poll handshake of a CPU about to go idle (xcore, session 20): a
//! thread that blocks with nothing else queued on its CPU looks at that
//! run queue for a short, bounded while first (the kernel's `sched::block`;
//! the first version polled in the idle loop), and a waker that queues a
//! thread there skips the reschedule IPI when the CPU is known to be
//! polling.
//!
//! The protocol, over one flag per CPU (`polling`) and the queue's length
//! (`queued`, written under the queue's lock):
//!
//! - polling CPU: [`IdlePoll::begin`] (flag up), look at `queued` a
//!   bounded number of times, then [`IdlePoll::end`] (flag down). If `end`
//!   says a waker took the flag, or `queued` is non-zero after it, the CPU
//!   runs what is queued; otherwise it may halt (with interrupts enabled
//!   atomically, `sti; hlt`, so a pending IPI still wakes it). The kernel
//!   then schedules, which pops the queue under its lock either way.
//! - waker: queue the thread (`queued` goes up under the lock), then
//!   [`IdlePoll::take_for_wake`]; `true` means the CPU was polling and will
//!   see the thread, so no IPI; `false` means send the IPI.
//!
//! # Why no wake is lost
//! Both flag operations that decide are read-modify-writes on one word
//! (`swap`, SeqCst), so they are totally ordered. If the waker's swap came
//! first while the flag was up, it read `true` (no IPI) and wrote `false`;
//! the idle CPU's `end` then reads `false`, so it knows a waker took the
//! flag, and its swap *reads* the waker's write: the waker's queue update,
//! sequenced before its swap, is visible to everything after `end` (the
//! Release half of the waker's RMW, the Acquire half of the CPU's). If the
//! CPU's `end` came first (or `begin` never ran), the waker reads `false`
//! and sends the IPI, which the halt cannot miss. The loom models below
//! check every interleaving, one waker and two.

use core::sync::atomic::{AtomicBool, Ordering};

/// The atomic flag the handshake needs (loom's in the model tests).
pub trait Flag {
    /// `store`.
    fn store(&self, v: bool, order: Ordering);
    /// `swap`.
    fn swap(&self, v: bool, order: Ordering) -> bool;
}

impl Flag for AtomicBool {
    #[inline(always)]
    fn store(&self, v: bool, order: Ordering) {
        AtomicBool::store(self, v, order)
    }
    #[inline(always)]
    fn swap(&self, v: bool, order: Ordering) -> bool {
        AtomicBool::swap(self, v, order)
    }
}

/// One CPU's poll flag.
#[derive(Default)]
pub struct IdlePoll<F: Flag = AtomicBool> {
    polling: F,
}

impl<F: Flag> IdlePoll<F> {
    /// A flag, down.
    pub const fn new(flag: F) -> Self {
        IdlePoll { polling: flag }
    }

    /// The idle CPU starts polling. SeqCst (on x86 an `xchg`): the flag is
    /// up before the CPU's first look at its queue.
    #[inline(always)]
    pub fn begin(&self) {
        self.polling.store(true, Ordering::SeqCst);
    }

    /// The idle CPU stops polling. True when a waker took the flag meanwhile
    /// (it queued a thread here and sent no IPI): the caller must run the
    /// queue, not halt. SeqCst RMW: reads the taking waker's write (see the
    /// module docs).
    #[inline(always)]
    pub fn end(&self) -> bool {
        !self.polling.swap(false, Ordering::SeqCst)
    }

    /// A waker that has just queued a thread for this CPU: true when the
    /// CPU is polling (it will find the thread; no IPI needed), false when
    /// the IPI must be sent. SeqCst RMW, after the queue update.
    #[inline(always)]
    pub fn take_for_wake(&self) -> bool {
        self.polling.swap(false, Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waker_takes_the_flag_of_a_polling_cpu_once() {
        let p = IdlePoll::new(AtomicBool::new(false));
        assert!(!p.take_for_wake(), "not polling: the IPI is needed");
        p.begin();
        assert!(p.take_for_wake(), "polling: no IPI");
        assert!(!p.take_for_wake(), "a second waker sends its IPI");
        assert!(p.end(), "the CPU learns that a waker took the flag");
    }

    #[test]
    fn a_poll_nobody_took_ends_untaken() {
        let p = IdlePoll::new(AtomicBool::new(false));
        p.begin();
        assert!(!p.end());
        assert!(!p.take_for_wake(), "after the poll the IPI is needed");
    }
}

#[cfg(test)]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::{AtomicBool as LoomBool, AtomicUsize};
    use loom::sync::{Arc, Mutex};
    use loom::thread;

    impl Flag for LoomBool {
        fn store(&self, v: bool, order: Ordering) {
            LoomBool::store(self, v, order)
        }
        fn swap(&self, v: bool, order: Ordering) -> bool {
            LoomBool::swap(self, v, order)
        }
    }

    /// One idle CPU and its run queue (the lock models the run-queue lock,
    /// `queued` its lock-free length mirror), and the IPIs sent to it.
    struct Cpu {
        poll: IdlePoll<LoomBool>,
        rq: Mutex<usize>,
        queued: AtomicUsize,
        ipis: AtomicUsize,
    }

    /// `sched::push` then `sched::enqueue`'s IPI decision.
    fn wake(c: &Cpu) {
        {
            let mut rq = c.rq.lock().unwrap();
            *rq += 1;
            c.queued.store(*rq, Ordering::Relaxed);
        }
        if !c.poll.take_for_wake() {
            c.ipis.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The idle loop's poll (`polls` looks), then its decision: true when
    /// it runs the queue, false when it halts.
    fn idle(c: &Cpu, polls: usize) -> bool {
        c.poll.begin();
        for _ in 0..polls {
            if c.queued.load(Ordering::Relaxed) > 0 {
                break;
            }
            thread::yield_now();
        }
        c.poll.end() || c.queued.load(Ordering::Relaxed) > 0
    }

    fn check(wakers: usize, polls: usize) {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(move || {
            let c = Arc::new(Cpu {
                poll: IdlePoll::new(LoomBool::new(false)),
                rq: Mutex::new(0),
                queued: AtomicUsize::new(0),
                ipis: AtomicUsize::new(0),
            });
            let ws: alloc::vec::Vec<_> = (0..wakers)
                .map(|_| {
                    let c = c.clone();
                    thread::spawn(move || wake(&c))
                })
                .collect();
            let runs = idle(&c, polls);
            for w in ws {
                w.join().unwrap();
            }
            // A halted CPU with threads queued must have an IPI coming
            // (it is latched while interrupts are off, and `sti; hlt`
            // takes it): otherwise the wake was lost.
            let queued = *c.rq.lock().unwrap() > 0;
            assert!(
                runs || !queued || c.ipis.load(Ordering::Relaxed) > 0,
                "the CPU halted with a thread queued and no IPI coming"
            );
        });
    }

    #[test]
    fn loom_one_waker_never_loses_the_wake() {
        check(1, 1);
    }

    #[test]
    fn loom_one_waker_with_no_look_in_the_poll() {
        // The decision alone (the poll's looks all missed): `end` must
        // carry the wake.
        check(1, 0);
    }

    #[test]
    fn loom_two_wakers_never_lose_a_wake() {
        check(2, 1);
    }
}
