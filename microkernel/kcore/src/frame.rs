//! The physical frame allocator: a bitmap over every 4 KiB frame of RAM.
//!
//! The kernel sizes a bitmap with [`bitmap_words_for`], hands it to
//! [`FrameAllocator::new`] (everything starts *used*), then opens up the free
//! ranges of the memory map with [`FrameAllocator::add_free_range`] and closes
//! anything it must keep (kernel image, boot modules) with
//! [`FrameAllocator::reserve_range`]. A frame is only ever handed out if it was
//! explicitly declared free, so a forgotten map entry costs memory, never
//! corrupts it.
//!
//! # Invariants
//! - Bit `n` of the bitmap (word `n / 64`, bit `n % 64`) is 1 iff frame `n` is
//!   used (allocated, reserved, or never declared free).
//! - Bits for frames `>= nframes` (the tail of the last word) are always 1, so
//!   the scans never need a bounds check per bit.
//! - `free` equals the number of 0 bits.
//! - Every word before `hint` is full (all ones): `alloc` starts there.
//!
//! # Design choices
//! - A bitmap costs 1 bit per 4 KiB (32 KiB per GiB), lives in memory the
//!   caller owns (no heap, no statics), and answers "is this frame free?"
//!   exactly, which is what makes double frees detectable instead of silently
//!   corrupting a free list.
//! - Allocation is lowest-address-first: a single-frame allocation skips full
//!   words with one compare and finds the bit with `trailing_ones`, starting
//!   from the hint, so it is O(1) amortised while memory is mostly free.
//! - Because low frames go first, a caller that needs memory below 1 MiB (the
//!   SMP trampoline) should take it with [`FrameAllocator::alloc_below`] early.
//! - The allocator is not synchronised; the kernel wraps it in its own lock.

/// The size of one frame.
pub const FRAME_SIZE: u64 = 4096;
const BITS: usize = 64;

/// A 4 KiB-aligned physical frame, named by its physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhysFrame(u64);

impl PhysFrame {
    /// The frame starting at `addr`, or `None` if `addr` is not 4 KiB-aligned.
    pub const fn from_addr(addr: u64) -> Option<PhysFrame> {
        if addr.is_multiple_of(FRAME_SIZE) {
            Some(PhysFrame(addr))
        } else {
            None
        }
    }

    /// The frame that contains `addr`.
    pub const fn containing(addr: u64) -> PhysFrame {
        PhysFrame(addr & !(FRAME_SIZE - 1))
    }

    /// Frame number `n` (address `n * 4096`).
    pub const fn from_number(n: u64) -> PhysFrame {
        PhysFrame(n * FRAME_SIZE)
    }

    /// The frame's physical address.
    pub const fn addr(self) -> u64 {
        self.0
    }

    /// The frame's number (address / 4096).
    pub const fn number(self) -> u64 {
        self.0 / FRAME_SIZE
    }
}

/// Why a frame operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// No free frame (or run of frames) satisfies the request.
    OutOfMemory,
    /// The frame is beyond the frames this allocator covers.
    OutOfRange,
    /// The frame is already free.
    DoubleFree,
    /// A count or alignment of zero.
    InvalidArgument,
}

impl FrameError {
    /// A short human-readable description.
    pub const fn as_str(self) -> &'static str {
        match self {
            FrameError::OutOfMemory => "out of physical memory",
            FrameError::OutOfRange => "frame outside the managed range",
            FrameError::DoubleFree => "frame freed twice",
            FrameError::InvalidArgument => "invalid count or alignment",
        }
    }
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The number of `u64` bitmap words needed for `nframes` frames.
pub const fn bitmap_words_for(nframes: usize) -> usize {
    nframes.div_ceil(BITS)
}

/// A bitmap frame allocator over frames `0..nframes`. See the module docs.
#[derive(Debug)]
pub struct FrameAllocator<'a> {
    bitmap: &'a mut [u64],
    nframes: usize,
    free: usize,
    hint: usize,
}

impl<'a> FrameAllocator<'a> {
    /// An allocator for frames `0..nframes` with every frame used. The bitmap's
    /// previous contents are overwritten.
    ///
    /// # Panics
    /// If `bitmap` has fewer than [`bitmap_words_for`]`(nframes)` words (a
    /// boot-time sizing bug, not a runtime condition).
    pub fn new(bitmap: &'a mut [u64], nframes: usize) -> FrameAllocator<'a> {
        let words = bitmap_words_for(nframes);
        assert!(bitmap.len() >= words, "frame bitmap too small");
        let bitmap = &mut bitmap[..words];
        bitmap.fill(u64::MAX);
        FrameAllocator {
            bitmap,
            nframes,
            free: 0,
            hint: words,
        }
    }

    /// The number of frames covered (free or not).
    pub fn nframes(&self) -> usize {
        self.nframes
    }

    /// The number of free frames.
    pub fn free_count(&self) -> usize {
        self.free
    }

    /// The number of free bytes.
    pub fn total_free_bytes(&self) -> u64 {
        self.free as u64 * FRAME_SIZE
    }

    /// Whether `frame` is free (a frame outside the range is not).
    pub fn is_free(&self, frame: PhysFrame) -> bool {
        match self.index(frame) {
            Some(n) => self.bitmap[n / BITS] & (1 << (n % BITS)) == 0,
            None => false,
        }
    }

    /// Marks every whole frame inside `[start_phys, end_phys)` free (the range
    /// is rounded inward to frame boundaries and clipped to the managed
    /// frames). Frames already free stay free. Returns how many frames became
    /// free. Later calls override earlier ones, so declare free memory first
    /// and reserve after.
    pub fn add_free_range(&mut self, start_phys: u64, end_phys: u64) -> usize {
        let first = start_phys.div_ceil(FRAME_SIZE);
        let last = end_phys / FRAME_SIZE;
        let (first, last) = self.clip(first, last);
        let mut changed = 0;
        for n in first..last {
            changed += self.set_free(n) as usize;
        }
        if changed > 0 {
            self.hint = self.hint.min(first / BITS);
        }
        changed
    }

    /// Marks every frame touching `[start_phys, end_phys)` used (the range is
    /// rounded outward, clipped to the managed frames). Returns how many
    /// frames were free before.
    pub fn reserve_range(&mut self, start_phys: u64, end_phys: u64) -> usize {
        if end_phys <= start_phys {
            return 0;
        }
        let first = start_phys / FRAME_SIZE;
        let last = end_phys.div_ceil(FRAME_SIZE);
        let (first, last) = self.clip(first, last);
        let mut changed = 0;
        for n in first..last {
            changed += self.set_used(n) as usize;
        }
        changed
    }

    /// Allocates the lowest free frame.
    ///
    /// # Errors
    /// [`FrameError::OutOfMemory`] when no frame is free.
    pub fn alloc(&mut self) -> Result<PhysFrame, FrameError> {
        self.alloc_in(self.nframes)
    }

    /// Allocates the lowest free frame that ends at or below `limit_phys`
    /// (e.g. `0x10_0000` for the real-mode SMP trampoline).
    ///
    /// # Errors
    /// [`FrameError::OutOfMemory`] when no such frame is free.
    pub fn alloc_below(&mut self, limit_phys: u64) -> Result<PhysFrame, FrameError> {
        let limit = usize::try_from(limit_phys / FRAME_SIZE).unwrap_or(usize::MAX);
        self.alloc_in(limit.min(self.nframes))
    }

    /// Allocates `count` physically contiguous frames whose first frame
    /// number is a multiple of `align_frames` (e.g. 512 for a 2 MiB-aligned
    /// run), lowest address first. Returns the first frame.
    ///
    /// # Errors
    /// [`FrameError::InvalidArgument`] if `count` or `align_frames` is 0;
    /// [`FrameError::OutOfMemory`] if no such run is free.
    pub fn alloc_contiguous(
        &mut self,
        count: usize,
        align_frames: usize,
    ) -> Result<PhysFrame, FrameError> {
        if count == 0 || align_frames == 0 {
            return Err(FrameError::InvalidArgument);
        }
        if count > self.free {
            return Err(FrameError::OutOfMemory);
        }
        if count == 1 && align_frames == 1 {
            // The lowest free frame: `alloc`'s scan, which also moves the
            // hint past the full words it skips (this scan leaves it; a
            // one-page IPC bounce buffer paid ~100 instructions of full
            // words a message for that, session 22).
            return self.alloc();
        }
        let mut start = (self.hint * BITS).next_multiple_of(align_frames);
        loop {
            let end = start.checked_add(count).ok_or(FrameError::OutOfMemory)?;
            if end > self.nframes {
                return Err(FrameError::OutOfMemory);
            }
            match self.first_used(start, end) {
                None => break,
                Some(used) => {
                    // Every start from `used` up to the next free frame
                    // begins on a used one: the next candidate is that free
                    // frame, aligned up.
                    start = self
                        .first_free(used + 1)
                        .and_then(|f| f.checked_next_multiple_of(align_frames))
                        .ok_or(FrameError::OutOfMemory)?;
                }
            }
        }
        for n in start..start + count {
            self.set_used(n);
        }
        Ok(PhysFrame::from_number(start as u64))
    }

    /// Returns `frame` to the pool.
    ///
    /// # Errors
    /// [`FrameError::OutOfRange`] if the allocator does not cover it;
    /// [`FrameError::DoubleFree`] if it is already free. The bitmap is
    /// unchanged on error.
    pub fn free(&mut self, frame: PhysFrame) -> Result<(), FrameError> {
        let n = self.index(frame).ok_or(FrameError::OutOfRange)?;
        if !self.set_free(n) {
            return Err(FrameError::DoubleFree);
        }
        self.hint = self.hint.min(n / BITS);
        Ok(())
    }

    /// Returns `count` frames starting at `first` (as from
    /// [`alloc_contiguous`](Self::alloc_contiguous)). All or nothing: on
    /// error no frame is freed.
    ///
    /// # Errors
    /// As [`free`](Self::free), for any frame of the run.
    pub fn free_contiguous(&mut self, first: PhysFrame, count: usize) -> Result<(), FrameError> {
        let start = self.index(first).ok_or(FrameError::OutOfRange)?;
        let end = start.checked_add(count).ok_or(FrameError::OutOfRange)?;
        if end > self.nframes {
            return Err(FrameError::OutOfRange);
        }
        if (start..end).any(|n| self.bit_free(n)) {
            return Err(FrameError::DoubleFree);
        }
        for n in start..end {
            self.set_free(n);
        }
        if count > 0 {
            self.hint = self.hint.min(start / BITS);
        }
        Ok(())
    }

    /// The lowest free frame below frame number `limit` (`<= nframes`).
    fn alloc_in(&mut self, limit: usize) -> Result<PhysFrame, FrameError> {
        let mut w = self.hint;
        let last_word = bitmap_words_for(limit);
        while w < last_word {
            let word = self.bitmap[w];
            if word != u64::MAX {
                let n = w * BITS + word.trailing_ones() as usize;
                if n >= limit {
                    break;
                }
                self.set_used(n);
                if limit == self.nframes {
                    // Every word before `w` was full, and so is `w` if this
                    // took its last free bit; either way `w` is a valid hint.
                    self.hint = w;
                }
                return Ok(PhysFrame::from_number(n as u64));
            }
            w += 1;
            if limit == self.nframes {
                self.hint = w;
            }
        }
        Err(FrameError::OutOfMemory)
    }

    fn index(&self, frame: PhysFrame) -> Option<usize> {
        usize::try_from(frame.number())
            .ok()
            .filter(|&n| n < self.nframes)
    }

    fn clip(&self, first: u64, last: u64) -> (usize, usize) {
        let cap = |x: u64| usize::try_from(x).unwrap_or(usize::MAX).min(self.nframes);
        let (first, last) = (cap(first), cap(last));
        (first, last.max(first))
    }

    /// The first used frame in `[start, end)` (`end <= nframes`), a word
    /// at a time: `alloc_contiguous`'s test of a candidate run. (It tested
    /// bit by bit: a one-page IPC buffer's bounce page cost ~3,000
    /// instructions of scan a message when the words at the hint were
    /// partly used, session 22.)
    fn first_used(&self, start: usize, end: usize) -> Option<usize> {
        let mut n = start;
        while n < end {
            let used = self.bitmap[n / BITS] >> (n % BITS);
            if used != 0 {
                let u = n + used.trailing_zeros() as usize;
                return (u < end).then_some(u);
            }
            n = (n / BITS + 1) * BITS;
        }
        None
    }

    /// The first free frame at or after `from`, a word at a time (the bits
    /// past `nframes` are used: the invariant).
    fn first_free(&self, from: usize) -> Option<usize> {
        let mut n = from;
        while n < self.nframes {
            let free = !self.bitmap[n / BITS] >> (n % BITS);
            if free != 0 {
                return Some(n + free.trailing_zeros() as usize);
            }
            n = (n / BITS + 1) * BITS;
        }
        None
    }

    fn bit_free(&self, n: usize) -> bool {
        self.bitmap[n / BITS] & (1 << (n % BITS)) == 0
    }

    /// Marks frame `n` (< nframes) free; returns whether it was used.
    fn set_free(&mut self, n: usize) -> bool {
        let (w, bit) = (n / BITS, 1u64 << (n % BITS));
        let was_used = self.bitmap[w] & bit != 0;
        self.bitmap[w] &= !bit;
        self.free += was_used as usize;
        was_used
    }

    /// Marks frame `n` (< nframes) used; returns whether it was free.
    fn set_used(&mut self, n: usize) -> bool {
        let (w, bit) = (n / BITS, 1u64 << (n % BITS));
        let was_free = self.bitmap[w] & bit == 0;
        self.bitmap[w] |= bit;
        self.free -= was_free as usize;
        was_free
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const MIB: u64 = 1 << 20;

    fn with_alloc<R>(nframes: usize, f: impl FnOnce(&mut FrameAllocator<'_>) -> R) -> R {
        let mut bitmap = vec![0u64; bitmap_words_for(nframes)];
        let mut fa = FrameAllocator::new(&mut bitmap, nframes);
        f(&mut fa)
    }

    #[test]
    fn a_new_allocator_has_nothing_free() {
        with_alloc(100, |fa| {
            assert_eq!(fa.free_count(), 0);
            assert_eq!(fa.alloc(), Err(FrameError::OutOfMemory));
            assert!(!fa.is_free(PhysFrame::from_number(0)));
        });
    }

    #[test]
    fn bitmap_words_round_up() {
        assert_eq!(bitmap_words_for(0), 0);
        assert_eq!(bitmap_words_for(1), 1);
        assert_eq!(bitmap_words_for(64), 1);
        assert_eq!(bitmap_words_for(65), 2);
    }

    #[test]
    fn free_ranges_round_inward_and_reserved_ranges_round_outward() {
        with_alloc(64, |fa| {
            assert_eq!(fa.add_free_range(0x800, 0x4800), 3); // frames 1, 2, 3
            assert!(!fa.is_free(PhysFrame::from_number(0)));
            assert!(fa.is_free(PhysFrame::from_number(3)));
            assert!(!fa.is_free(PhysFrame::from_number(4)));
            assert_eq!(fa.reserve_range(0x2fff, 0x3001), 2); // frames 2, 3
            assert_eq!(fa.free_count(), 1);
            assert_eq!(fa.total_free_bytes(), 4096);
            assert_eq!(fa.reserve_range(0x5000, 0x5000), 0);
        });
    }

    #[test]
    fn ranges_beyond_the_managed_frames_are_clipped() {
        with_alloc(10, |fa| {
            assert_eq!(fa.add_free_range(0, u64::MAX), 10);
            assert_eq!(fa.reserve_range(0x9000, u64::MAX), 1);
            assert_eq!(fa.free_count(), 9);
            assert_eq!(fa.add_free_range(0x5000, 0x1000), 0);
        });
    }

    #[test]
    fn alloc_then_free_restores_the_count() {
        with_alloc(200, |fa| {
            fa.add_free_range(0, 200 * FRAME_SIZE);
            let f = fa.alloc().unwrap();
            assert_eq!(f.addr() % FRAME_SIZE, 0);
            assert!(!fa.is_free(f));
            assert_eq!(fa.free_count(), 199);
            fa.free(f).unwrap();
            assert!(fa.is_free(f));
            assert_eq!(fa.free_count(), 200);
        });
    }

    #[test]
    fn allocating_everything_gives_distinct_free_frames_then_exhausts() {
        with_alloc(1000, |fa| {
            fa.add_free_range(0, 1000 * FRAME_SIZE);
            fa.reserve_range(10 * FRAME_SIZE, 20 * FRAME_SIZE);
            let mut seen = HashSet::new();
            while let Ok(f) = fa.alloc() {
                assert!(f.number() < 1000);
                assert!(!(10..20).contains(&f.number()), "reserved frame handed out");
                assert!(seen.insert(f), "frame {:#x} handed out twice", f.addr());
            }
            assert_eq!(seen.len(), 990);
            assert_eq!(fa.free_count(), 0);
            assert_eq!(fa.alloc(), Err(FrameError::OutOfMemory));
        });
    }

    #[test]
    fn freed_frames_are_reused() {
        with_alloc(256, |fa| {
            fa.add_free_range(0, 256 * FRAME_SIZE);
            let frames: Vec<_> = (0..256).map(|_| fa.alloc().unwrap()).collect();
            fa.free(frames[70]).unwrap();
            fa.free(frames[3]).unwrap();
            assert_eq!(fa.alloc(), Ok(frames[3]));
            assert_eq!(fa.alloc(), Ok(frames[70]));
            assert_eq!(fa.alloc(), Err(FrameError::OutOfMemory));
        });
    }

    #[test]
    fn freeing_a_free_frame_is_an_error() {
        with_alloc(64, |fa| {
            fa.add_free_range(0, 64 * FRAME_SIZE);
            let f = fa.alloc().unwrap();
            fa.free(f).unwrap();
            assert_eq!(fa.free(f), Err(FrameError::DoubleFree));
            assert_eq!(fa.free_count(), 64);
        });
    }

    #[test]
    fn freeing_an_out_of_range_frame_is_an_error() {
        with_alloc(64, |fa| {
            assert_eq!(
                fa.free(PhysFrame::from_number(64)),
                Err(FrameError::OutOfRange)
            );
            assert_eq!(
                fa.free(PhysFrame::containing(u64::MAX)),
                Err(FrameError::OutOfRange)
            );
            assert_eq!(fa.free_count(), 0);
        });
    }

    #[test]
    fn tail_bits_of_the_last_word_are_never_handed_out() {
        with_alloc(70, |fa| {
            fa.add_free_range(0, u64::MAX);
            let n = std::iter::from_fn(|| fa.alloc().ok()).count();
            assert_eq!(n, 70);
        });
    }

    #[test]
    fn contiguous_runs_are_aligned_free_and_marked_used() {
        with_alloc(2048, |fa| {
            fa.add_free_range(0, 2048 * FRAME_SIZE);
            fa.reserve_range(0, FRAME_SIZE); // frame 0
            fa.reserve_range(600 * FRAME_SIZE, 601 * FRAME_SIZE);
            // 512-aligned run of 512 frames: 0 is reserved, 600 breaks the
            // next, so the first fit is 1024.
            let run = fa.alloc_contiguous(512, 512).unwrap();
            assert_eq!(run.number(), 1024);
            for n in 1024..1536 {
                assert!(!fa.is_free(PhysFrame::from_number(n)));
            }
            assert_eq!(fa.free_count(), 2048 - 2 - 512);
            // Unaligned run fits right after frame 0.
            assert_eq!(fa.alloc_contiguous(3, 1).unwrap().number(), 1);
            // A run of 3 aligned to 4 starts at 4.
            assert_eq!(fa.alloc_contiguous(3, 4).unwrap().number(), 4);
            fa.free_contiguous(run, 512).unwrap();
            assert_eq!(fa.free_contiguous(run, 512), Err(FrameError::DoubleFree));
        });
    }

    #[test]
    fn contiguous_requests_that_cannot_fit_fail_cleanly() {
        with_alloc(128, |fa| {
            fa.add_free_range(0, 128 * FRAME_SIZE);
            fa.reserve_range(64 * FRAME_SIZE, 65 * FRAME_SIZE);
            assert_eq!(fa.alloc_contiguous(65, 1), Err(FrameError::OutOfMemory));
            assert_eq!(fa.alloc_contiguous(0, 1), Err(FrameError::InvalidArgument));
            assert_eq!(fa.alloc_contiguous(1, 0), Err(FrameError::InvalidArgument));
            assert_eq!(
                fa.alloc_contiguous(usize::MAX, 1),
                Err(FrameError::OutOfMemory)
            );
            assert_eq!(fa.free_count(), 127);
            assert_eq!(fa.alloc_contiguous(63, 1).unwrap().number(), 0);
            assert_eq!(fa.alloc_contiguous(63, 1).unwrap().number(), 65);
        });
        with_alloc(128, |fa| {
            fa.add_free_range(FRAME_SIZE, 128 * FRAME_SIZE);
            // The only 128-aligned candidate is frame 0, which is not free.
            assert_eq!(fa.alloc_contiguous(1, 128), Err(FrameError::OutOfMemory));
            assert_eq!(fa.alloc_contiguous(1, 64).unwrap().number(), 64);
        });
    }

    proptest::proptest! {
        /// `alloc_contiguous` against a naive model (the lowest aligned
        /// start whose run is all free, bit by bit) over random maps and a
        /// sequence of requests and frees: the word-at-a-time scan (session
        /// 22) finds exactly the model's run, or fails exactly when it does.
        #[test]
        fn contiguous_runs_match_a_bit_by_bit_model(
            nframes in 1usize..400,
            used in proptest::collection::vec(proptest::prelude::any::<bool>(), 400),
            ops in proptest::collection::vec((1usize..70, 0u32..8, proptest::prelude::any::<bool>()), 1..24),
        ) {
            with_alloc(nframes, |fa| {
                fa.add_free_range(0, nframes as u64 * FRAME_SIZE);
                let mut model: Vec<bool> = used[..nframes].to_vec(); // true = used
                for (n, &u) in model.iter().enumerate() {
                    if u {
                        fa.reserve_range(n as u64 * FRAME_SIZE, (n as u64 + 1) * FRAME_SIZE);
                    }
                }
                let mut runs = Vec::new();
                for (count, align_log, free_one) in ops {
                    if free_one && !runs.is_empty() {
                        let (start, count): (usize, usize) = runs.remove(0);
                        fa.free_contiguous(PhysFrame::from_number(start as u64), count).unwrap();
                        model[start..start + count].iter_mut().for_each(|u| *u = false);
                        continue;
                    }
                    let align = 1usize << align_log;
                    let want = (0..nframes)
                        .step_by(align)
                        .find(|&s| s + count <= nframes && model[s..s + count].iter().all(|u| !u));
                    let got = fa.alloc_contiguous(count, align).map(|f| f.number() as usize);
                    match want {
                        Some(s) => {
                            assert_eq!(got, Ok(s), "count {count} align {align}");
                            model[s..s + count].iter_mut().for_each(|u| *u = true);
                            runs.push((s, count));
                        }
                        None => assert_eq!(got, Err(FrameError::OutOfMemory), "count {count} align {align}"),
                    }
                    assert_eq!(fa.free_count(), model.iter().filter(|u| !**u).count());
                }
            });
        }
    }

    #[test]
    fn free_contiguous_is_all_or_nothing() {
        with_alloc(64, |fa| {
            fa.add_free_range(0, 64 * FRAME_SIZE);
            let run = fa.alloc_contiguous(4, 1).unwrap();
            fa.free(PhysFrame::from_number(2)).unwrap();
            assert_eq!(fa.free_contiguous(run, 4), Err(FrameError::DoubleFree));
            assert!(!fa.is_free(PhysFrame::from_number(1)));
            assert_eq!(fa.free_contiguous(run, 65), Err(FrameError::OutOfRange));
        });
    }

    #[test]
    fn alloc_below_respects_the_limit() {
        let nframes = (4 * MIB / FRAME_SIZE) as usize;
        with_alloc(nframes, |fa| {
            fa.add_free_range(0x8000, 0x9000); // one low frame
            fa.add_free_range(MIB, 4 * MIB);
            let low = fa.alloc_below(MIB).unwrap();
            assert_eq!(low.addr(), 0x8000);
            assert_eq!(fa.alloc_below(MIB), Err(FrameError::OutOfMemory));
            // A frame ending exactly at the limit qualifies.
            assert_eq!(fa.alloc_below(MIB + FRAME_SIZE).unwrap().addr(), MIB);
            assert_eq!(fa.alloc_below(0), Err(FrameError::OutOfMemory));
            assert!(fa.alloc_below(u64::MAX).is_ok());
        });
    }

    #[test]
    fn alloc_below_does_not_break_the_hint_for_later_allocs() {
        with_alloc(256, |fa| {
            fa.add_free_range(0, 256 * FRAME_SIZE);
            for _ in 0..64 {
                fa.alloc().unwrap();
            }
            assert_eq!(
                fa.alloc_below(64 * FRAME_SIZE),
                Err(FrameError::OutOfMemory)
            );
            assert_eq!(fa.alloc().unwrap().number(), 64);
        });
    }

    #[test]
    fn phys_frame_constructors_agree() {
        assert_eq!(PhysFrame::from_addr(0x1001), None);
        let f = PhysFrame::from_addr(0x5000).unwrap();
        assert_eq!(f.number(), 5);
        assert_eq!(PhysFrame::containing(0x5fff), f);
        assert_eq!(PhysFrame::from_number(5), f);
        assert_eq!(FrameError::DoubleFree.to_string(), "frame freed twice");
    }
}
