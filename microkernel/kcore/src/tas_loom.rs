//! `loom` model of the kernel's spinlock (`sync::IrqMutex`, cut26l): a
//! test-and-set lock on a 32-bit word.
//!
//! - Take: `fetch_or(1, Acquire)`; the old bit 0 clear means taken (the
//!   kernel's `lock bts`). Held: spin on Relaxed loads until bit 0 looks
//!   clear, then try again (the waiter writes nothing while it spins).
//! - Release: `store(0, Release)` (the guard's drop).
//!
//! Each thread that takes the lock increments a counter kept in a loom
//! `UnsafeCell` inside its critical section, so two sections that overlap,
//! or one that does not see the one before it, are a loom causality error,
//! not a silent pass. A model of the protocol, not the kernel's code: seen
//! failing with the take's ordering `Relaxed` and with the release's
//! `Relaxed` (causality errors on the counter).
//!
//! The take is modelled as `compare_exchange(0, 1, Acquire, Relaxed)`: the
//! word holds only 0 or 1, so `fetch_or(1)` differs from it only in that a
//! failed take writes the 1 back, an RMW, which cannot end a release
//! sequence; and loom 0.7.3 lets a plain store fall between the read and
//! the write of a `fetch_or` or `swap` (tokio-rs/loom#254, unfixed), which
//! breaks the RMW's atomicity and reports the canonical `swap` spinlock
//! racy with three takers; its compare-and-swap is modelled right.
//!
//! Safety only: loom does not model that a store becomes visible in finite
//! time (a waiter's every read may be ordered before the release), so a
//! waiter here gives up after a few tries ([`Lock::lock`]) and the checks
//! count the sections that ran.

// The counter is a loom `UnsafeCell` read and written through raw pointers
// (as `handles::lockfree_loom`'s payload).
#![allow(unsafe_code)]

use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use loom::cell::UnsafeCell;
use loom::sync::atomic::AtomicU32;
use loom::sync::Arc;
use loom::thread;

/// Tries of a waiter before it gives up (see the module docs).
const TRIES: usize = 2;

/// The lock and the value it guards.
struct Lock {
    /// Bit 0: held.
    locked: AtomicU32,
    count: UnsafeCell<u64>,
}

impl Lock {
    fn new() -> Lock {
        Lock {
            locked: AtomicU32::new(0),
            count: UnsafeCell::new(0),
        }
    }

    /// `IrqMutex::try_acquire` (see the module docs for the CAS).
    fn try_acquire(&self) -> bool {
        self.locked.compare_exchange(0, 1, Acquire, Relaxed).is_ok()
    }

    /// `IrqMutex::lock_irqs_off` (its spin: `spin_acquire`), bounded: false
    /// if it gave up.
    fn lock(&self) -> bool {
        if self.try_acquire() {
            return true;
        }
        for _ in 0..TRIES {
            thread::yield_now();
            if self.locked.load(Relaxed) & 1 == 0 && self.try_acquire() {
                return true;
            }
        }
        false
    }

    /// The guard's drop.
    fn unlock(&self) {
        self.locked.store(0, Release);
    }

    /// A critical section, if the lock was taken: the counter read and
    /// written, not atomically. True if it ran.
    fn increment(&self) -> bool {
        if !self.lock() {
            return false;
        }
        // SAFETY: under the lock (what the model checks).
        self.count.with_mut(|c| unsafe { *c += 1 });
        self.unlock();
        true
    }

    /// The counter, once every section is over.
    fn count(&self) -> u64 {
        // SAFETY: the callers joined every other thread.
        self.count.with(|c| unsafe { *c })
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

#[test]
fn two_takers_never_overlap_and_each_sees_the_other() {
    model(|| {
        let l = Arc::new(Lock::new());
        let l2 = l.clone();
        let t = thread::spawn(move || l2.increment());
        let ran = l.increment() as u64 + t.join().unwrap() as u64;
        assert_eq!(l.count(), ran);
    });
}

#[test]
fn three_takers_never_overlap() {
    model(|| {
        let l = Arc::new(Lock::new());
        let ts: [_; 2] = core::array::from_fn(|_| {
            let l = l.clone();
            thread::spawn(move || l.increment())
        });
        let mut ran = l.increment() as u64;
        for t in ts {
            ran += t.join().unwrap() as u64;
        }
        assert_eq!(l.count(), ran);
    });
}

#[test]
fn a_taker_that_finds_it_held_sees_the_holders_section() {
    model(|| {
        let l = Arc::new(Lock::new());
        // Held by this thread while the other tries.
        assert!(l.try_acquire());
        let l2 = l.clone();
        let t = thread::spawn(move || {
            if !l2.lock() {
                return false;
            }
            // SAFETY: under the lock (what the model checks).
            let seen = l2.count.with(|c| unsafe { *c });
            assert_eq!(seen, 10, "took the lock before the holder's release");
            l2.unlock();
            true
        });
        // SAFETY: we hold the lock.
        l.count.with_mut(|c| unsafe { *c += 10 });
        l.unlock();
        t.join().unwrap();
        assert_eq!(l.count(), 10);
    });
}
