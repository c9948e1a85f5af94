//! Frame reference counts and the copy-on-write rules, as pure logic.
//!
//! # Reference counts
//! Every user frame has a counter ([`FrameRefs`]); the value `c` means
//! `max(c, 1)` owners. A frame fresh from the allocator has `c = 0`: one
//! owner (the mapping or memory object that took it), so the common case (a
//! private anonymous page) never touches its counter. A second owner makes
//! it `2`; the last release but one brings it back to `0` (one owner left);
//! the last release says so, and the caller frees the frame. Only a party
//! that already owns a reference may [`acquire`](FrameRefs::acquire)
//! another, so a counter never rises from "freed".
//!
//! An owner is a user page-table leaf that maps the frame (any leaf but a
//! lent one, `BORROWED`) or a memory object holding it. Which leaves are
//! shared is recorded in their software bits: [`PteFlags::SHARED`] (shared
//! on purpose: a memory object's frame, writes go to it) or
//! [`PteFlags::COW`] (logically private, physically shared: the leaf is
//! read-only in hardware and [`PteFlags::COW_WRITE`] says whether the page
//! is logically writable).
//!
//! # Copy-on-write
//! Cloning a space turns every private leaf into a COW leaf on both sides
//! ([`share_for_clone`]); `SHARED` leaves stay shared and lent ones stay lent.
//! A write fault on a COW leaf ([`on_write_fault`]) either takes the frame
//! over (it is the last reference: no copy) or copies it into a fresh frame,
//! and the leaf becomes an ordinary private writable one
//! ([`private_writable`]).

use crate::paging::PteFlags;
use core::sync::atomic::{AtomicU32, Ordering};

/// Reference counters of every frame, indexed by frame number.
pub struct FrameRefs<'a> {
    counts: &'a [AtomicU32],
}

/// A counter would overflow (more owners than a `u32` counts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyRefs;

impl<'a> FrameRefs<'a> {
    /// Counters over `counts` (all 0: every frame has at most one owner).
    pub const fn new(counts: &'a [AtomicU32]) -> FrameRefs<'a> {
        FrameRefs { counts }
    }

    /// Owners of frame `n` (1 for a frame nobody shares; also for a frame out
    /// of range, which is never shared).
    pub fn owners(&self, n: usize) -> u32 {
        self.counts
            .get(n)
            .map_or(1, |c| c.load(Ordering::Acquire).max(1))
    }

    /// Adds an owner to frame `n` (the caller owns a reference already).
    /// `TooManyRefs` for a frame out of range or a full counter, and nothing
    /// changes.
    pub fn acquire(&self, n: usize) -> Result<(), TooManyRefs> {
        let c = self.counts.get(n).ok_or(TooManyRefs)?;
        // AcqRel: pairs with `release`'s, so whoever frees the frame has seen
        // every owner's accesses happen before.
        c.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| match v {
            0 => Some(2),
            u32::MAX => None,
            v => Some(v + 1),
        })
        .map(|_| ())
        .map_err(|_| TooManyRefs)
    }

    /// Drops one owner of frame `n`; `true` when it was the last one (the
    /// caller frees the frame). A frame out of range has one owner.
    pub fn release(&self, n: usize) -> bool {
        let Some(c) = self.counts.get(n) else {
            return true;
        };
        // One owner (the common case: a private page): nobody else can add
        // one (only owners may), so no read-modify-write is needed.
        if c.load(Ordering::Acquire) == 0 {
            return true;
        }
        // AcqRel: the last releaser sees every other owner's release (and so
        // their writes through the frame) before it frees it.
        let old = c
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| match v {
                0..=2 => Some(0),
                v => Some(v - 1),
            })
            .unwrap_or(0);
        old <= 1
    }
}

/// What a write fault on a present leaf means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteFault {
    /// The leaf is writable already (another CPU resolved it, or a stale
    /// read-only TLB entry): retry after a local flush.
    Spurious,
    /// A logically writable COW leaf whose frame has no other owner: make it
    /// writable in place.
    Reuse,
    /// A logically writable COW leaf whose frame is shared: copy it.
    Copy,
    /// A real protection fault (the page is read-only).
    Refuse,
}

/// Decides a write fault on the leaf `entry` whose frame has `owners`.
pub fn on_write_fault(entry: u64, owners: u32) -> WriteFault {
    let f = PteFlags::from_bits_truncate(entry);
    if !f.contains(PteFlags::PRESENT) {
        WriteFault::Refuse
    } else if f.contains(PteFlags::WRITABLE) {
        WriteFault::Spurious
    } else if !f.contains(PteFlags::COW | PteFlags::COW_WRITE) {
        WriteFault::Refuse
    } else if owners <= 1 {
        WriteFault::Reuse
    } else {
        WriteFault::Copy
    }
}

/// The leaf `entry` made an ordinary private writable one on frame `pa`
/// (copy-on-write resolved): COW bits gone, `WRITABLE` set.
pub fn private_writable(entry: u64, pa: u64) -> u64 {
    let keep = entry & !crate::paging::PHYS_ADDR_MASK;
    let cleared = keep & !(PteFlags::COW | PteFlags::COW_WRITE).bits();
    pa | cleared | PteFlags::WRITABLE.bits()
}

/// How a clone treats one leaf of the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloneLeaf {
    /// The source's leaf after the clone.
    pub source: u64,
    /// The clone's leaf (same frame).
    pub child: u64,
    /// Whether the frame gains an owner (every leaf but a lent one).
    pub acquire: bool,
}

/// The clone of the leaf `entry`: a lent leaf is lent again; a `SHARED` one
/// is shared again as it is; any other becomes COW on both sides (read-only
/// in hardware, `COW_WRITE` if it was writable).
pub fn share_for_clone(entry: u64) -> CloneLeaf {
    let f = PteFlags::from_bits_truncate(entry);
    if f.contains(PteFlags::BORROWED) {
        return CloneLeaf {
            source: entry,
            child: entry,
            acquire: false,
        };
    }
    if f.contains(PteFlags::SHARED) {
        return CloneLeaf {
            source: entry,
            child: entry,
            acquire: true,
        };
    }
    let mut e = entry | PteFlags::COW.bits();
    if f.contains(PteFlags::WRITABLE) {
        e = (e & !PteFlags::WRITABLE.bits()) | PteFlags::COW_WRITE.bits();
    }
    // The accessed and dirty bits are the source's history, not the child's.
    let child = e & !(PteFlags::ACCESSED | PteFlags::DIRTY).bits();
    CloneLeaf {
        source: e,
        child,
        acquire: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::vec::Vec;

    fn counters(n: usize) -> Vec<AtomicU32> {
        (0..n).map(|_| AtomicU32::new(0)).collect()
    }

    #[test]
    fn a_fresh_frame_has_one_owner_and_its_release_is_the_last() {
        let c = counters(4);
        let r = FrameRefs::new(&c);
        assert_eq!(r.owners(1), 1);
        assert!(r.release(1));
        assert_eq!(r.owners(1), 1);
    }

    #[test]
    fn owners_count_up_and_the_last_release_says_so() {
        let c = counters(4);
        let r = FrameRefs::new(&c);
        r.acquire(2).unwrap();
        assert_eq!(r.owners(2), 2);
        r.acquire(2).unwrap();
        assert_eq!(r.owners(2), 3);
        assert!(!r.release(2));
        assert_eq!(r.owners(2), 2);
        assert!(!r.release(2));
        assert_eq!(r.owners(2), 1);
        assert_eq!(c[2].load(Ordering::Relaxed), 0, "one owner is stored as 0");
        assert!(r.release(2));
        // Other frames untouched.
        assert_eq!(c[1].load(Ordering::Relaxed), 0);
    }

    #[test]
    fn out_of_range_frames_cannot_be_shared_and_have_one_owner() {
        let c = counters(2);
        let r = FrameRefs::new(&c);
        assert_eq!(r.acquire(5), Err(TooManyRefs));
        assert_eq!(r.owners(5), 1);
        assert!(r.release(5));
    }

    #[test]
    fn a_full_counter_refuses_and_stays() {
        let c = counters(1);
        c[0].store(u32::MAX, Ordering::Relaxed);
        let r = FrameRefs::new(&c);
        assert_eq!(r.acquire(0), Err(TooManyRefs));
        assert_eq!(c[0].load(Ordering::Relaxed), u32::MAX);
    }

    #[test]
    fn concurrent_acquires_and_releases_free_exactly_once() {
        for _ in 0..50 {
            let c: Arc<Vec<AtomicU32>> = Arc::new(counters(1));
            let r = FrameRefs::new(&c);
            for _ in 0..7 {
                r.acquire(0).unwrap();
            }
            // 8 owners, each releases once from its own thread.
            let lasts: usize = (0..8)
                .map(|_| {
                    let c = c.clone();
                    std::thread::spawn(move || FrameRefs::new(&c).release(0) as usize)
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|h| h.join().unwrap())
                .sum();
            assert_eq!(lasts, 1);
        }
    }

    fn leaf(f: PteFlags) -> u64 {
        0x5000 | (f | PteFlags::PRESENT | PteFlags::USER).bits()
    }

    #[test]
    fn clone_makes_private_pages_cow_and_keeps_shared_and_lent_ones() {
        let rw = leaf(PteFlags::WRITABLE | PteFlags::DIRTY | PteFlags::ACCESSED);
        let c = share_for_clone(rw);
        let sf = PteFlags::from_bits_truncate(c.source);
        assert!(!sf.contains(PteFlags::WRITABLE));
        assert!(sf.contains(PteFlags::COW | PteFlags::COW_WRITE));
        let cf = PteFlags::from_bits_truncate(c.child);
        assert!(cf.contains(PteFlags::COW | PteFlags::COW_WRITE));
        assert!(!cf.intersects(PteFlags::DIRTY | PteFlags::ACCESSED | PteFlags::WRITABLE));
        assert!(c.acquire);
        assert_eq!(c.child & crate::paging::PHYS_ADDR_MASK, 0x5000);

        let ro = leaf(PteFlags::empty());
        let c = share_for_clone(ro);
        let sf = PteFlags::from_bits_truncate(c.source);
        assert!(sf.contains(PteFlags::COW) && !sf.contains(PteFlags::COW_WRITE));

        let sh = leaf(PteFlags::WRITABLE | PteFlags::SHARED);
        let c = share_for_clone(sh);
        assert_eq!((c.source, c.child, c.acquire), (sh, sh, true));

        let lent = leaf(PteFlags::BORROWED);
        let c = share_for_clone(lent);
        assert_eq!((c.source, c.child, c.acquire), (lent, lent, false));
    }

    #[test]
    fn write_faults_copy_shared_cow_pages_and_reuse_last_ones() {
        let cow_w = share_for_clone(leaf(PteFlags::WRITABLE)).child;
        assert_eq!(on_write_fault(cow_w, 2), WriteFault::Copy);
        assert_eq!(on_write_fault(cow_w, 1), WriteFault::Reuse);
        let cow_ro = share_for_clone(leaf(PteFlags::empty())).child;
        assert_eq!(on_write_fault(cow_ro, 1), WriteFault::Refuse);
        assert_eq!(on_write_fault(cow_ro, 3), WriteFault::Refuse);
        assert_eq!(
            on_write_fault(leaf(PteFlags::empty()), 1),
            WriteFault::Refuse
        );
        assert_eq!(
            on_write_fault(leaf(PteFlags::WRITABLE), 1),
            WriteFault::Spurious
        );
        assert_eq!(on_write_fault(0, 1), WriteFault::Refuse);
        let done = private_writable(cow_w, 0x9000);
        let f = PteFlags::from_bits_truncate(done);
        assert!(f.contains(PteFlags::WRITABLE | PteFlags::USER | PteFlags::PRESENT));
        assert!(!f.intersects(PteFlags::COW | PteFlags::COW_WRITE));
        assert_eq!(done & crate::paging::PHYS_ADDR_MASK, 0x9000);
        assert_eq!(on_write_fault(done, 1), WriteFault::Spurious);
    }
}
