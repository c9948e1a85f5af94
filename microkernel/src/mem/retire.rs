//! Deferred release of thread memory (cut26e, session 26): a freed
//! `Arc<Thread>` block goes back to the heap only after a grace period
//! (`kcore::grace`), so code that runs with interrupts off may hold an
//! *uncounted* reference to a thread it found in a lock-free place (a
//! caller's wait record naming its server, `WaitOn::Reply`) for as long as
//! it does not open an interrupt window: the thread's memory stays until
//! every CPU took a timer tick after the free.
//!
//! Only the memory is deferred: `Thread::drop` (its kernel stack, its
//! space, its process's counts) runs when the last reference goes, as
//! before; the block then holds the dead thread's last atomic values (a
//! finished claim word that no stale ticket matches, an empty reply word).
//!
//! The heap ([`super::heap`]) calls [`defer`] for every block of the
//! thread layout it is asked to free and [`reclaim`] before it allocates
//! one, both under its lock; the lists are intrusive (a block's first word,
//! the dead `Arc`'s strong count, links it), so a retire never allocates
//! and cannot fail. Bounded (DESIGN "Kernel invariants"): a grace period
//! ends with one tick on every online CPU (1 kHz; a thread spinning in user
//! mode is interrupted by it), and every thread free and allocation and
//! every heap statistic polls, so a block waits about two ticks. A block
//! given back is poisoned first ([`POISON`]): a reader that breaks the
//! rule finds it (`ipc::unlink` checks the server it dereferences).

use crate::arch::percpu::{self, MAX_CPUS};
use core::alloc::Layout;
use core::sync::atomic::{AtomicUsize, Ordering};
use kcore::grace::{Batches, Quiescent, Step};

/// The CPUs' quiescent-state counters, bumped by the timer tick.
static QS: Quiescent<MAX_CPUS> = Quiescent::new_static();

/// This CPU took a timer interrupt: it had interrupts on where it was
/// interrupted (user mode, idle, a preemption point), so no reader of an
/// uncounted reference was in progress (`kcore::grace`). Run from the
/// timer vector before anything else.
#[inline(always)]
pub fn tick() {
    QS.tick(percpu::cpu_index());
}

/// The byte a deferred block is filled with when it goes back to the heap.
pub const POISON: u8 = 0xa5;

/// The deferred layout's size and alignment (0: none registered yet).
static SIZE: AtomicUsize = AtomicUsize::new(0);
static ALIGN: AtomicUsize = AtomicUsize::new(0);

/// Blocks of the layout that `Arc<T>` allocates for `T` are deferred from
/// now on (the object layer registers `Thread` before it creates one:
/// `Thread::from_parts`; this layer cannot name it).
pub fn defer_arcs_of<T>() {
    // std's `ArcInner`: two counts, then the value, `repr(C)`.
    let (l, _) = Layout::new::<[usize; 2]>()
        .extend(Layout::new::<T>())
        .expect("an Arc's layout");
    let l = l.pad_to_align();
    // Relaxed: read under the heap's lock, after the allocation of the
    // first such block (made after this, on this or a later-synchronised
    // path: its creator's).
    SIZE.store(l.size(), Ordering::Relaxed);
    ALIGN.store(l.align(), Ordering::Relaxed);
}

/// The deferred layout (one byte before any is registered).
pub fn deferred_layout() -> Layout {
    Layout::from_size_align(SIZE.load(Ordering::Relaxed), ALIGN.load(Ordering::Relaxed))
        .unwrap_or(Layout::new::<u8>())
}

/// Whether blocks of `l` are deferred.
#[inline]
pub fn is_deferred(l: Layout) -> bool {
    l.size() == SIZE.load(Ordering::Relaxed) && l.align() == ALIGN.load(Ordering::Relaxed)
}

/// The two lists and their bookkeeping (under the heap's lock).
pub struct Deferred {
    b: Batches<MAX_CPUS>,
    pending: *mut u8,
    waiting: *mut u8,
    /// Blocks on either list.
    pub blocks: usize,
}

// SAFETY: the lists are blocks owned by the heap, touched only under its
// lock.
unsafe impl Send for Deferred {}

impl Deferred {
    /// Empty.
    pub const fn new() -> Self {
        Deferred {
            b: Batches::new(),
            pending: core::ptr::null_mut(),
            waiting: core::ptr::null_mut(),
            blocks: 0,
        }
    }
}

/// Puts the freed thread block `p` on the pending list, then [`reclaim`]s.
///
/// # Safety
/// `p` is a block of the deferred layout ([`is_deferred`]) the heap allocated and its owner
/// freed; the caller holds the heap's lock (`d` and `free` are its).
pub unsafe fn defer(d: &mut Deferred, p: *mut u8, free: impl FnMut(*mut u8)) {
    // SAFETY: the block is ours (caller's contract), at least two words
    // and word-aligned; its first word is the dead `Arc`'s strong count,
    // which no reader of an uncounted reference touches.
    unsafe { (p as *mut *mut u8).write(d.pending) };
    d.pending = p;
    d.blocks += 1;
    d.b.retired(&QS);
    // SAFETY: the caller's contract.
    unsafe { reclaim(d, free) }
}

/// Gives back (`free`) the waiting batch once its grace period ended, and
/// starts the next one.
///
/// # Safety
/// The caller holds the heap's lock; `free` returns a block to it.
pub unsafe fn reclaim(d: &mut Deferred, mut free: impl FnMut(*mut u8)) {
    loop {
        match d.b.poll(&QS, percpu::online()) {
            Step::Wait => return,
            Step::Release => {
                let mut p = core::mem::replace(&mut d.waiting, core::ptr::null_mut());
                while !p.is_null() {
                    // SAFETY: a block of the list (linked by `defer`), ours
                    // alone: its grace period ended.
                    let next = unsafe { (p as *mut *mut u8).read() };
                    // SAFETY: as just said; `SIZE` bytes (its layout).
                    unsafe { p.write_bytes(POISON, SIZE.load(Ordering::Relaxed)) };
                    free(p);
                    d.blocks -= 1;
                    p = next;
                }
            }
            Step::Start => {
                debug_assert!(d.waiting.is_null());
                d.waiting = core::mem::replace(&mut d.pending, core::ptr::null_mut());
            }
        }
    }
}
