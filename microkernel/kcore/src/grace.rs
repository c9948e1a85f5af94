//! Grace periods (cut26e, session 26): when memory that lock-free readers
//! may still hold an uncounted reference to can be given back.
//!
//! The kernel's readers of such references (the IPC fast path, a reply
//! word's server side, a caller's unlink from its server's word) run with
//! interrupts off from the point they found the reference to their last use
//! of it, with no preemption point in between. So a CPU that took an
//! interrupt (the timer tick: it arrives only where interrupts are on, in
//! user mode, in the idle loop or at a preemption point) has no reader in
//! progress at that moment: a *quiescent state*. Memory retired at time T
//! may be freed once every CPU passed a quiescent state after T (RCU-sched's
//! rule); a reader that found the reference before T still ran on its CPU
//! then, and finished before that CPU's next quiescent state.
//!
//! Nothing is done on the readers' side: the cost is the tick's one
//! increment ([`Quiescent::tick`]) and the reclaimer's scan.
//!
//! # Counters
//! One per CPU, written only by its own CPU: `+2` at each momentary
//! quiescent state (the tick); `+1` when the CPU enters or leaves an
//! extended one (a model's "this party is done"; the kernel has none yet),
//! so an odd value means "quiescent now". A snapshot's CPU has passed a
//! quiescent state since when its counter moved, or when it was odd at the
//! snapshot (Linux's dynticks rule).
//!
//! # Batches ([`Batches`])
//! Retired items gather in a *pending* list, whose snapshot of the
//! counters is taken again after each retire (so it is later than every
//! item's retire); when no batch waits, the pending list becomes the
//! *waiting* batch with that snapshot, and the waiting batch is released
//! once every CPU counted ([`Quiescent::elapsed`]) passed a quiescent state
//! since it. (A snapshot taken only when the list moves made a `sysinfo`
//! shortly after a process's threads ended find most of their blocks
//! still waiting: ring-3 case `ipc_process_killed_in_every_ipc_wait_*`.)
//! So an item waits at most two grace periods after its retire, and a grace
//! period ends with one tick on every online CPU (bounded: a thread spinning
//! in user mode takes ticks). The lists themselves are the caller's (the
//! kernel's are intrusive, in the retired blocks: a retire cannot fail).
//!
//! # Orderings
//! The tick's increment is a Release store after everything its CPU did
//! before it (its readers' loads); the reclaimer's Acquire loads of the
//! counters come before it frees (its stores to the memory). The snapshot's
//! loads come after the retire (the item unreachable by new readers), in
//! the reclaimer's program order under its lock. Loom:
//! `a_retired_server_outlives_its_callers_unlink` (ipc/loom_grace.rs).

use crate::ipc::AtomicWord;
use core::sync::atomic::{AtomicU64, Ordering};

/// The per-CPU quiescent-state counters of at most `N` CPUs.
pub struct Quiescent<const N: usize, A: AtomicWord = AtomicU64> {
    count: [A; N],
}

impl<const N: usize, A: AtomicWord> Default for Quiescent<N, A> {
    fn default() -> Self {
        Self::new()
    }
}

/// The counters of a [`Quiescent`] at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot<const N: usize>([u64; N]);

impl<const N: usize> Quiescent<N, AtomicU64> {
    /// [`new`](Self::new) for a `static`.
    pub const fn new_static() -> Self {
        Quiescent {
            count: [const { AtomicU64::new(0) }; N],
        }
    }
}

impl<const N: usize, A: AtomicWord> Quiescent<N, A> {
    /// Every counter 0 (no CPU quiescent yet).
    pub fn new() -> Self {
        Quiescent {
            count: core::array::from_fn(|_| A::new(0)),
        }
    }

    /// CPU `cpu` passes a momentary quiescent state (run by that CPU only).
    #[inline]
    pub fn tick(&self, cpu: usize) {
        let c = &self.count[cpu];
        // Only this CPU writes its counter: a load and a store, no RMW.
        // Release: its readers' loads before it (module docs).
        c.store(c.load(Ordering::Relaxed).wrapping_add(2), Ordering::Release);
    }

    /// CPU `cpu` enters (or leaves) an extended quiescent state.
    pub fn toggle(&self, cpu: usize) {
        let c = &self.count[cpu];
        c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Release);
    }

    /// The counters now (the start of a grace period).
    pub fn snapshot(&self) -> Snapshot<N> {
        Snapshot(core::array::from_fn(|i| {
            self.count[i].load(Ordering::Acquire)
        }))
    }

    /// Whether each of the first `cpus` CPUs passed a quiescent state since
    /// `s` was taken.
    pub fn elapsed(&self, s: &Snapshot<N>, cpus: usize) -> bool {
        (0..cpus.min(N)).all(|i| {
            let was = s.0[i];
            was & 1 == 1 || self.count[i].load(Ordering::Acquire) != was
        })
    }
}

/// What the owner of the two lists does next ([`Batches::poll`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do now.
    Wait,
    /// Free the waiting batch (its grace period ended), then poll again.
    Release,
    /// Make the pending list the waiting batch (the snapshot is taken).
    Start,
}

/// The bookkeeping of the pending list and the waiting batch (module docs).
#[derive(Clone, Copy, Debug)]
pub struct Batches<const N: usize> {
    /// The waiting batch's snapshot; `None`: no batch waits.
    waiting: Option<Snapshot<N>>,
    /// The pending list's, taken after its latest retire; `None`: empty.
    pending: Option<Snapshot<N>>,
}

impl<const N: usize> Default for Batches<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Batches<N> {
    /// No batch.
    pub const fn new() -> Self {
        Batches {
            waiting: None,
            pending: None,
        }
    }

    /// Whether a batch waits for its grace period.
    pub fn is_waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// An item was just put on the pending list: the list's grace period
    /// starts now (a snapshot after the retire; the earlier items of the
    /// list are covered by it too, having been retired before).
    pub fn retired<A: AtomicWord>(&mut self, q: &Quiescent<N, A>) {
        self.pending = Some(q.snapshot());
    }

    /// The next step, given the counters `q` of `cpus` CPUs. After `Start`
    /// the caller moves the pending list into the waiting batch (which
    /// keeps the pending list's snapshot: its grace period may be over
    /// already, and the next poll says so).
    pub fn poll<A: AtomicWord>(&mut self, q: &Quiescent<N, A>, cpus: usize) -> Step {
        match &self.waiting {
            Some(s) if q.elapsed(s, cpus) => {
                self.waiting = None;
                Step::Release
            }
            Some(_) => Step::Wait,
            None => match self.pending.take() {
                Some(s) => {
                    self.waiting = Some(s);
                    Step::Start
                }
                None => Step::Wait,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model of the kernel's use: the two lists as vectors of ids.
    struct Lists {
        b: Batches<4>,
        pending: alloc::vec::Vec<u32>,
        waiting: alloc::vec::Vec<u32>,
        freed: alloc::vec::Vec<u32>,
    }

    impl Lists {
        fn new() -> Self {
            Lists {
                b: Batches::new(),
                pending: alloc::vec::Vec::new(),
                waiting: alloc::vec::Vec::new(),
                freed: alloc::vec::Vec::new(),
            }
        }
        fn poll(&mut self, q: &Quiescent<4>, cpus: usize) {
            loop {
                match self.b.poll(q, cpus) {
                    Step::Wait => return,
                    Step::Release => self.freed.append(&mut self.waiting),
                    Step::Start => {
                        assert!(self.waiting.is_empty());
                        core::mem::swap(&mut self.waiting, &mut self.pending);
                    }
                }
            }
        }
        fn retire(&mut self, q: &Quiescent<4>, cpus: usize, id: u32) {
            self.pending.push(id);
            self.b.retired(q);
            self.poll(q, cpus);
        }
    }

    #[test]
    fn nothing_is_freed_before_every_cpu_passed_a_quiescent_state() {
        let q = Quiescent::<4>::new();
        let mut l = Lists::new();
        l.retire(&q, 3, 1);
        assert!(l.b.is_waiting());
        q.tick(0);
        q.tick(1);
        l.poll(&q, 3);
        assert!(l.freed.is_empty(), "CPU 2 has not passed one");
        q.tick(0);
        l.poll(&q, 3);
        assert!(l.freed.is_empty(), "two ticks on one CPU are not all CPUs");
        q.tick(2);
        l.poll(&q, 3);
        assert_eq!(l.freed, [1]);
        assert!(!l.b.is_waiting());
    }

    #[test]
    fn a_retire_during_a_grace_period_waits_for_quiescent_states_after_it() {
        let q = Quiescent::<4>::new();
        let mut l = Lists::new();
        l.retire(&q, 2, 1);
        q.tick(0);
        // Retired after CPU 0's quiescent state: that one does not count.
        l.retire(&q, 2, 2);
        q.tick(1);
        l.poll(&q, 2);
        assert_eq!(l.freed, [1], "2 waits for CPU 0 again");
        assert!(l.b.is_waiting());
        q.tick(1);
        l.poll(&q, 2);
        assert_eq!(l.freed, [1]);
        q.tick(0);
        l.poll(&q, 2);
        assert_eq!(l.freed, [1, 2]);
    }

    /// A retire into a pending list that is not empty restarts the list's
    /// grace period: the list's earlier items waited for quiescent states
    /// that the new item's readers may have run across (break26e; seen
    /// failing with the snapshot taken only for the list's first item).
    #[test]
    fn a_retire_into_a_non_empty_pending_list_restarts_its_grace_period() {
        let q = Quiescent::<4>::new();
        let mut l = Lists::new();
        l.retire(&q, 2, 1); // the waiting batch
        l.retire(&q, 2, 2); // pending
        q.tick(0);
        l.retire(&q, 2, 3); // pending, after CPU 0's quiescent state
        q.tick(1);
        l.poll(&q, 2);
        assert_eq!(l.freed, [1]);
        q.tick(1);
        l.poll(&q, 2);
        assert_eq!(l.freed, [1], "3 was retired after CPU 0's only tick");
        q.tick(0);
        l.poll(&q, 2);
        assert_eq!(l.freed, [1, 2, 3]);
    }

    /// The pending list's grace period runs while a batch waits: once both
    /// ended, one poll frees both (the kernel's `sysinfo` after a few
    /// ticks finds every block given back).
    #[test]
    fn a_pending_list_whose_grace_period_passed_is_freed_in_the_same_poll() {
        let q = Quiescent::<4>::new();
        let mut l = Lists::new();
        l.retire(&q, 2, 1);
        l.retire(&q, 2, 2);
        l.retire(&q, 2, 3);
        q.tick(0);
        q.tick(1);
        l.poll(&q, 2);
        assert_eq!(l.freed, [1, 2, 3]);
        assert!(!l.b.is_waiting());
    }

    #[test]
    fn an_extended_quiescent_state_counts_at_once_and_cpus_not_online_are_skipped() {
        let q = Quiescent::<4>::new();
        let mut l = Lists::new();
        q.toggle(1); // CPU 1 idle (odd)
        l.retire(&q, 2, 7);
        q.tick(0);
        l.poll(&q, 2);
        assert_eq!(
            l.freed,
            [7],
            "CPU 1 was quiescent at the snapshot; 2, 3 not online"
        );
        // Back from idle: counted again.
        q.toggle(1);
        l.retire(&q, 2, 8);
        q.tick(0);
        l.poll(&q, 2);
        assert!(l.freed.ends_with(&[7]));
        q.tick(1);
        l.poll(&q, 2);
        assert_eq!(l.freed, [7, 8]);
    }

    /// Bounded: with one tick on every CPU between polls, every item is
    /// freed by the second poll after its retire, whatever the interleaving.
    #[test]
    fn every_item_is_freed_within_two_grace_periods() {
        let q = Quiescent::<4>::new();
        let mut l = Lists::new();
        let mut id = 0;
        for round in 0..50u32 {
            for _ in 0..(round % 5) {
                id += 1;
                l.retire(&q, 4, id);
            }
            for c in 0..4 {
                q.tick(c);
            }
            l.poll(&q, 4);
            for c in 0..4 {
                q.tick(c);
            }
            l.poll(&q, 4);
            assert_eq!(l.freed.len() as u32, id, "round {round}");
            assert!(l.pending.is_empty() && l.waiting.is_empty());
        }
    }
}
