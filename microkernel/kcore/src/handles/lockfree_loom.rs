//! `loom` model of a lock-free handle lookup for the IPC path (issue 10,
//! ipcl session 19): the design the kernel would adopt, checked here first
//! (docs/decisions.md `## ipcl (session 19)`).
//!
//! # The design
//! Each slot publishes `(key, object pointer)` under a per-slot sequence
//! word (a seqlock: odd while a writer, who holds the table lock, changes
//! it). A lookup runs inside a *read section* marked in its CPU's reader
//! word:
//! 1. `reader = 1`, then a SeqCst fence (the store must be visible before
//!    the slot is read: the Dekker pattern against step 2 of close);
//! 2. `s1 = seq` (Acquire; odd: the slow path), read key and pointer
//!    (Relaxed), an Acquire fence, `s2 = seq`; `s1 != s2`: the slow path;
//! 3. the key's generation must be the number's, else `BadHandle`;
//! 4. take a reference on the object (an increment: it cannot be freed
//!    yet, see below), then `reader = 0` (Release).
//!
//! A close (table lock held): 1. seqlock-write the slot empty with the
//! next generation; 2. SeqCst fence, then wait until every CPU's reader
//! word is 0 (the grace period: a read section is a few instructions with
//! interrupts off, so the wait is bounded); 3. only then drop the table's
//! reference (which may free the object). Reuse of the slot is another
//! seqlock write with a new generation.
//!
//! Why it is sound: by the two SeqCst fences, either the reader's slot
//! read sees the close's write (its validation or generation check fails,
//! or it sees the *new* contents and checks their generation), or the
//! close's scan sees the reader's word at 1 and waits until the reader has
//! its own reference. So the reader never increments or reads a freed
//! object, and never returns an object its number was not made for.
//!
//! The model: one reader (CPU 0) looks a number up while a closer (CPU 1)
//! closes the slot and reuses it for another object; "free" poisons the
//! object's payload through a loom `UnsafeCell`, so a read after it is a
//! causality error or a failed assertion, not a silent pass.

// The payload is a loom `UnsafeCell` so that loom itself checks every read
// against the free (its accessors are `unsafe` raw-pointer reads; kcore's
// tests deny `unsafe` everywhere else, as `bootinfo::tests::Mbi::info`).
#![allow(unsafe_code)]

use core::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use loom::cell::UnsafeCell;
use loom::sync::atomic::{fence, AtomicU64, AtomicUsize};
use loom::sync::Arc;
use loom::thread;

/// A freed object's payload.
const POISON: u64 = 0xdead;
/// The slot holds no object.
const NONE: usize = usize::MAX;

/// A kernel object: a reference count and a payload a freed one no
/// longer has.
struct Obj {
    refs: AtomicUsize,
    payload: UnsafeCell<u64>,
}

impl Obj {
    /// An object with the table's one reference and payload `id + 1`.
    fn new(id: usize) -> Obj {
        Obj {
            refs: AtomicUsize::new(1),
            payload: UnsafeCell::new(id as u64 + 1),
        }
    }

    /// Drops one reference; the last one frees (poisons) the object.
    fn release(&self) {
        // Release/Acquire: every use of the object happens before the
        // free (the `Arc` pattern).
        if self.refs.fetch_sub(1, Release) == 1 {
            fence(Acquire);
            // SAFETY: the last reference is gone: nobody else may use the
            // payload (loom reports it if someone still does).
            self.payload.with_mut(|p| unsafe { *p = POISON });
        }
    }
}

/// One slot of the table, as the lock-free reader sees it.
struct Slot {
    seq: AtomicU64,
    /// The generation of the number that names the slot's object now.
    generation: AtomicU64,
    /// Index into the object array (`NONE`: free).
    obj: AtomicUsize,
}

/// The table: one slot, two objects (the one closed and the one reusing
/// the slot) and CPU 0's reader word.
struct Table {
    slot: Slot,
    objs: [Obj; 2],
    reader: AtomicU64,
}

/// Why a lookup failed.
#[derive(Debug, PartialEq)]
enum Miss {
    /// A writer was (or got) in the slot: take the locked slow path.
    Retry,
    /// The number names nothing live.
    BadHandle,
}

impl Table {
    fn new() -> Table {
        Table {
            slot: Slot {
                seq: AtomicU64::new(0),
                generation: AtomicU64::new(1),
                obj: AtomicUsize::new(0),
            },
            objs: [Obj::new(0), Obj::new(1)],
            reader: AtomicU64::new(0),
        }
    }

    /// The lock-free lookup of the number with `generation`: the object
    /// with one more reference (the caller releases it), or why not.
    fn lookup(&self, generation: u64) -> Result<usize, Miss> {
        self.reader.store(1, Relaxed);
        fence(SeqCst);
        let r = self.read(generation);
        if let Ok(o) = r {
            // Cannot be the last reference's ghost: the close that drops
            // the table's reference waits for this section to end.
            let before = self.objs[o].refs.fetch_add(1, Relaxed);
            assert!(before > 0, "a lookup revived a freed object");
        }
        // Release: the increment is visible to a closer that sees 0.
        self.reader.store(0, Release);
        r
    }

    fn read(&self, generation: u64) -> Result<usize, Miss> {
        let s1 = self.slot.seq.load(Acquire);
        if s1 & 1 == 1 {
            return Err(Miss::Retry);
        }
        let g = self.slot.generation.load(Relaxed);
        let o = self.slot.obj.load(Relaxed);
        fence(Acquire);
        if self.slot.seq.load(Relaxed) != s1 {
            return Err(Miss::Retry);
        }
        if g != generation || o == NONE {
            return Err(Miss::BadHandle);
        }
        Ok(o)
    }

    /// A seqlock write of the slot (the table lock serialises writers).
    fn write(&self, generation: u64, obj: usize) {
        let s = self.slot.seq.load(Relaxed);
        self.slot.seq.store(s + 1, Relaxed);
        fence(Release);
        self.slot.generation.store(generation, Relaxed);
        self.slot.obj.store(obj, Relaxed);
        self.slot.seq.store(s + 2, Release);
    }

    /// Close (generation 1 -> 2, object 0 dropped after the grace period),
    /// then reuse of the slot for object 1 at generation 2.
    fn close_and_reuse(&self) {
        self.write(2, NONE);
        fence(SeqCst);
        while self.reader.load(Acquire) != 0 {
            thread::yield_now();
        }
        self.objs[0].release();
        self.write(2, 1);
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    // Two threads, short sections: no preemption bound (every interleaving;
    // the three tests take about 4 s in a debug build).
    b.preemption_bound = None;
    b.check(f);
}

/// The reader's side: a lookup of the number with `generation`; a hit
/// must be `want`, alive (its payload intact), and is released after use.
fn use_number(t: &Table, generation: u64, want: usize) -> Result<(), Miss> {
    let o = t.lookup(generation)?;
    assert_eq!(o, want, "a number reached another object");
    // SAFETY: the lookup's reference keeps the object alive (what the
    // model checks: loom reports a read racing the free).
    let p = t.objs[o].payload.with(|p| unsafe { *p });
    assert_eq!(p, o as u64 + 1, "a lookup returned a freed object");
    t.objs[o].release();
    Ok(())
}

/// A lookup of the old number racing its close and the slot's reuse: the
/// old object alive, or a clean miss; never freed, never the new object.
#[test]
fn lookup_racing_close_and_reuse_sees_the_old_object_alive_or_misses() {
    model(|| {
        let t = Arc::new(Table::new());
        let closer = {
            let t = t.clone();
            thread::spawn(move || t.close_and_reuse())
        };
        let r = use_number(&t, 1, 0);
        assert!(matches!(r, Ok(()) | Err(Miss::Retry | Miss::BadHandle)));
        closer.join().unwrap();
        // Afterwards the old number is dead for good and the new one works.
        assert_eq!(t.lookup(1), Err(Miss::BadHandle));
        assert_eq!(use_number(&t, 2, 1), Ok(()));
    });
}

/// A lookup of the *new* number racing the reuse: before the reuse it
/// misses (the slot is empty or holds the old generation), after it the
/// new object; never the old one (freed by then, or about to be).
#[test]
fn lookup_of_the_new_number_never_reaches_the_old_object() {
    model(|| {
        let t = Arc::new(Table::new());
        let closer = {
            let t = t.clone();
            thread::spawn(move || t.close_and_reuse())
        };
        let r = use_number(&t, 2, 1);
        assert!(matches!(r, Ok(()) | Err(Miss::Retry | Miss::BadHandle)));
        closer.join().unwrap();
    });
}

/// The table's last reference dropped while a reader holds its own: the
/// object outlives the table entry until the reader lets go (the reader's
/// increment, not the table, keeps it).
#[test]
fn a_reader_reference_outlives_the_close() {
    model(|| {
        let t = Arc::new(Table::new());
        let got = t.lookup(1);
        let closer = {
            let t = t.clone();
            thread::spawn(move || t.close_and_reuse())
        };
        if let Ok(o) = got {
            // SAFETY: as in `use_number`: the reader's reference.
            let p = t.objs[o].payload.with(|p| unsafe { *p });
            assert_eq!(p, 1, "the object died under its reader");
            t.objs[o].release();
        }
        closer.join().unwrap();
        assert_eq!(t.objs[0].refs.load(Acquire), 0);
    });
}
