//! The chunked range operations of the module docs' "Bounded work":
//! `map_anon`, `unmap` and `protect`, each under the edit flag, a bounded
//! amount of page-table work per lock hold, with a preemption point
//! between chunks.

use super::*;

/// The pages removed by one `unmap` chunk: the span to flush and the owned
/// frames to free once no CPU can reach them.
struct Removed {
    lo: u64,
    hi: u64,
    /// Not zeroed up front (an array would cost a 1 KiB memset per call).
    /// Leaf frames, and detached tables with bit 0 set.
    frames: heapless::Vec<u64, CHUNK_FRAMES>,
    /// How many of `frames` are tables.
    tables: usize,
}

impl AddressSpace {
    /// Maps `len` bytes of zeroed memory at `addr` with `prot`. All or nothing:
    /// on error every page this call mapped is unmapped (and shot down) again.
    pub fn map_anon(&self, addr: u64, len: u64, p: u64) -> Result<(), Error> {
        let pages = check_range(addr, len)?;
        let flags = prot_flags(p)?;
        // Cheap early refusal: a request beyond all free memory fails now,
        // not after allocating everything and rolling it back.
        if pages > mem::free_frames() as u64 {
            return Err(Error::NoMemory);
        }
        // The pages are charged up front (a request beyond the process's or
        // its program's limit fails before anything is allocated); page
        // tables are charged as each chunk allocates them.
        self.try_charge(pages)?;
        let _edit = self.edit();
        let end = addr + pages * PAGE_SIZE;
        let mut va = addr;
        while va < end {
            let stop = end.min(va + CHUNK_PAGES * PAGE_SIZE);
            let r = self.map_chunk(va, stop, flags);
            let reached = match r {
                Ok(()) => stop,
                Err((at, _)) => at,
            };
            if let Err((_, e)) = r {
                // The pages never mapped go back now; those mapped go back
                // as the unmap below frees them.
                self.uncharge((end - reached) / PAGE_SIZE);
                // Other threads may have touched the pages already mapped
                // (between chunks), so they go through the full unmap path
                // with its shootdown before their frames are freed.
                if reached > addr {
                    self.unmap_edited(addr, reached);
                }
                return Err(e);
            }
            va = reached;
            if va < end {
                preemption_point();
            }
        }
        Ok(())
    }

    /// Maps fresh zeroed frames at `[va, stop)` under one lock hold. On error
    /// returns how far it got (pages below are mapped) and why.
    fn map_chunk(&self, mut va: u64, stop: u64, flags: PteFlags) -> Result<(), (u64, Error)> {
        let mut m = CountingMem {
            mem: DirectMem,
            tables: 0,
        };
        let r = (|| {
            let inner = self.inner.lock();
            while va < stop {
                let f = mem::alloc_zeroed_frame().map_err(|_| (va, Error::NoMemory))?;
                if let Err(e) = inner.pt.map(&mut m, va, f.addr(), PageSize::Size4K, flags) {
                    let _ = mem::free_frame(f);
                    return Err((va, map_err(e)));
                }
                va += PAGE_SIZE;
            }
            Ok(())
        })();
        self.charge_tables(&m);
        r
    }

    /// Removes the mappings in a range (holes are skipped) and frees the owned
    /// frames. Costs what is mapped in the range, in preemptible chunks.
    pub fn unmap(&self, addr: u64, len: u64) -> Result<(), Error> {
        let pages = check_range(addr, len)?;
        let _edit = self.edit();
        self.unmap_edited(addr, addr + pages * PAGE_SIZE);
        Ok(())
    }

    /// The body of [`Self::unmap`] for a caller holding the edit flag.
    ///
    /// Page tables whose whole span lies in the range are detached and freed
    /// too ([`PageTable::unmap_range_pruning`](kcore::paging::PageTable::unmap_range_pruning)):
    /// kept, they stayed charged to the space and every later clone and
    /// teardown walked their 512 empty entries (a bench process that had
    /// mapped and unmapped 64 MiB paid ~430,000 instructions per fork).
    pub(super) fn unmap_edited(&self, addr: u64, end: u64) {
        // A range shorter than a page table's span (2 MiB) covers no table
        // whole: the plain walk (page_map_unmap's one page).
        let prune = end - addr >= PageSize::Size2M.bytes();
        let mut at = addr;
        loop {
            let mut rm = Removed {
                lo: u64::MAX,
                hi: 0,
                frames: heapless::Vec::new(),
                tables: 0,
            };
            let mut budget = CHUNK_ENTRIES;
            let r = {
                let inner = self.inner.lock();
                // Both callbacks push into `rm.frames`; a pause leaves room
                // for the up to three table reports that may follow it.
                let room = |rm: &Removed| rm.frames.len() + 3 < CHUNK_FRAMES;
                let rm = core::cell::RefCell::new(&mut rm);
                let mut leaf = |va, pa, size: PageSize, f: PteFlags| {
                    let mut rm = rm.borrow_mut();
                    rm.lo = rm.lo.min(va);
                    rm.hi = rm.hi.max(va + size.bytes());
                    if !f.contains(PteFlags::BORROWED) {
                        // Cannot fail: the walk stops with room to spare.
                        let _ = rm.frames.push(pa);
                    }
                    room(&rm)
                };
                if prune {
                    inner.pt.unmap_range_pruning(
                        &mut DirectMem,
                        addr,
                        at,
                        end,
                        &mut budget,
                        &mut leaf,
                        &mut |table| {
                            let mut rm = rm.borrow_mut();
                            // Bit 0 (a frame address is 4 KiB aligned)
                            // marks a table: freed outright, not released.
                            let _ = rm.frames.push(table | 1);
                            rm.tables += 1;
                            room(&rm)
                        },
                    )
                } else {
                    inner
                        .pt
                        .unmap_range(&mut DirectMem, at, end, &mut budget, &mut leaf)
                }
            };
            // The frames may be reused only after no CPU can reach them any
            // more: shoot down first, free second. A detached table may sit
            // in paging-structure caches, which only a full flush clears.
            if rm.tables > 0 {
                tlb::flush_range(self.root(), 0, tlb::FULL_FLUSH_PAGES + 1);
            } else if rm.lo < rm.hi {
                tlb::flush_range(self.root(), rm.lo, (rm.hi - rm.lo) / PAGE_SIZE);
            }
            for &pa in &rm.frames {
                if pa & 1 != 0 {
                    let _ = mem::free_frame(PhysFrame::containing(pa));
                } else {
                    // A shared frame (memory object, copy-on-write) goes
                    // back only with its last owner.
                    mem::frame_release(pa);
                }
            }
            // Tables are charged to the space like pages (`charge_tables`).
            self.uncharge(rm.frames.len() as u64);
            match r {
                // User spaces hold only 4 KiB leaves: a straddled large page
                // (Misaligned) cannot happen; stop rather than loop.
                Ok(None) | Err(_) => return,
                Ok(Some(resume)) => at = resume,
            }
            preemption_point();
        }
    }

    /// Changes the protection of every mapped page in a range. Fails with
    /// NotFound if any page is unmapped and PermissionDenied if a borrowed page
    /// would become writable; both are checked over the whole range before
    /// anything changes. Once something changed, every exit flushes the TLBs
    /// of what changed.
    pub fn protect(&self, addr: u64, len: u64, p: u64) -> Result<(), Error> {
        let pages = check_range(addr, len)?;
        let flags = prot_flags(p)?;
        let end = addr + pages * PAGE_SIZE;
        let _edit = self.edit();
        // Pass 1: check everything, change nothing.
        let writable = flags.contains(PteFlags::WRITABLE);
        let mut at = addr;
        loop {
            let mut budget = CHUNK_ENTRIES;
            let r = {
                let inner = self.inner.lock();
                inner
                    .pt
                    .check_mapped(&mut DirectMem, at, end, &mut budget, |_, f| {
                        if writable && f.contains(PteFlags::BORROWED) {
                            Err(MapError::InvalidPhysAddr) // stands for "lent, read-only"
                        } else {
                            Ok(())
                        }
                    })
            };
            match r {
                Ok(None) => break,
                Ok(Some(resume)) => at = resume,
                Err(MapError::InvalidPhysAddr) => return Err(Error::PermissionDenied),
                Err(e) => return Err(map_err(e)),
            }
            preemption_point();
        }
        // Pass 2: change (the edit flag kept every other editor out since
        // pass 1). Each chunk flushes what it changed before the next starts,
        // so no exit leaves a stale, more permissive TLB entry behind.
        let mut at = addr;
        loop {
            let mut budget = CHUNK_ENTRIES;
            let r = {
                let inner = self.inner.lock();
                inner
                    .pt
                    .protect_range(&mut DirectMem, at, end, &mut budget, flags)
            };
            let done_to = match r {
                Ok(Some(resume)) => resume,
                _ => end,
            };
            tlb::flush_range(self.root(), at, (done_to - at) / PAGE_SIZE);
            match r {
                Ok(None) => return Ok(()),
                Ok(Some(resume)) => at = resume,
                Err(e) => return Err(map_err(e)),
            }
            preemption_point();
        }
    }
}
