//! ktests of address spaces: lent ranges, teardown, charging, shared and
//! copy-on-write frame counts.

use super::*;

/// ktest: a borrowed (lent) range stops being borrowed where it is unmapped,
/// so frames mapped there later are owned and freed; lent frames are never
/// freed, by `unmap` or by the space's teardown.
pub fn ktest_borrowed_record_goes_with_unmap() -> Result<(), &'static str> {
    const VA: u64 = 0x100_0000;
    let lent = mem::alloc_contiguous(4, 1).map_err(|_| "out of memory")?;
    let r = (|| {
        let space = AddressSpace::new().map_err(|_| "AddressSpace::new failed")?;
        let ro = prot_flags(0).map_err(|_| "prot_flags")?;
        space
            .map_frames(VA, lent.addr(), 4, ro, true)
            .map_err(|_| "map_frames (borrowed) failed")?;
        if space.protect(VA, PAGE_SIZE, prot::WRITE) != Err(Error::PermissionDenied) {
            return Err("a lent page could be made writable");
        }
        // A protect that fails part-way changes nothing: an owned read-only
        // page before the lent one stays read-only.
        space
            .map_anon(VA - PAGE_SIZE, PAGE_SIZE, 0)
            .map_err(|_| "map_anon below the lent pages failed")?;
        if space.protect(VA - PAGE_SIZE, 2 * PAGE_SIZE, prot::WRITE) != Err(Error::PermissionDenied)
        {
            return Err("a range with a lent page could be made writable");
        }
        let still_ro = {
            let inner = space.inner.lock();
            inner
                .pt
                .translate(&mut DirectMem, VA - PAGE_SIZE)
                .is_some_and(|(_, f, _)| !f.contains(PteFlags::WRITABLE))
        };
        if !still_ro {
            return Err("a failed protect changed a page before the failing one");
        }
        space
            .unmap(VA - PAGE_SIZE, PAGE_SIZE)
            .map_err(|_| "unmap below the lent pages failed")?;
        let before = mem::free_frames();
        space
            .unmap(VA + PAGE_SIZE, 2 * PAGE_SIZE)
            .map_err(|_| "unmap of lent pages failed")?;
        if mem::free_frames() != before {
            return Err("unmapping lent pages freed them");
        }
        space
            .map_anon(VA + PAGE_SIZE, 2 * PAGE_SIZE, prot::WRITE)
            .map_err(|_| "map_anon where lent pages were failed")?;
        space
            .unmap(VA + PAGE_SIZE, 2 * PAGE_SIZE)
            .map_err(|_| "unmap of owned pages failed")?;
        if mem::free_frames() != before {
            return Err("owned frames mapped where lent ones were leaked on unmap");
        }
        drop(space);
        Ok(())
    })();
    // The teardown must have left the lent frames alone: freeing them now
    // succeeds (a double free would be refused).
    for i in 0..4 {
        let f = PhysFrame::containing(lent.addr() + i * PAGE_SIZE);
        if mem::free_frame(f).is_err() {
            return Err("a lent frame was freed by the address space");
        }
    }
    r
}

/// ktest: `teardown` (what the last thread of a process runs before it
/// switches away) frees every owned frame and every table below the root, in
/// several chunks, and leaves lent frames alone; the final drop then has only
/// the root left to free.
pub fn ktest_teardown_empties_the_space() -> Result<(), &'static str> {
    const SPARSE: u64 = 0x40_0000_0000; // 256 GiB: its own PDPT entry
    const DENSE: u64 = 0x100_0000; // 2 MiB aligned: one page table
    const LENT: u64 = 0x180_0000; // after it: the walk meets the dense table first
    let lent = mem::alloc_contiguous(2, 1).map_err(|_| "out of memory")?;
    let before = mem::free_frames();
    let space = AddressSpace::new().map_err(|_| "AddressSpace::new failed")?;
    let r = (|| {
        // One page in each of 300 2 MiB regions (a page table each: far more
        // frames than one chunk holds), one full page table of dense pages
        // (512: a chunk fills its frame buffer right at the table's last
        // entry, where the emptied table is reported too), 2 lent pages.
        for i in 0..300 {
            space
                .map_anon(SPARSE + i * (2 << 20), PAGE_SIZE, prot::WRITE)
                .map_err(|_| "map_anon (sparse) failed")?;
        }
        space
            .map_anon(DENSE, 512 * PAGE_SIZE, prot::WRITE)
            .map_err(|_| "map_anon (dense) failed")?;
        let ro = prot_flags(0).map_err(|_| "prot_flags")?;
        space
            .map_frames(LENT, lent.addr(), 2, ro, true)
            .map_err(|_| "map_frames (lent) failed")?;
        space.teardown();
        if mem::free_frames() != before - 1 {
            return Err("teardown left frames behind (only the root may stay)");
        }
        let inner = space.inner.lock();
        for va in [SPARSE, DENSE, DENSE + 511 * PAGE_SIZE, LENT] {
            if inner.pt.translate(&mut DirectMem, va).is_some() {
                return Err("a page is still mapped after teardown");
            }
        }
        Ok(())
    })();
    drop(space);
    if r.is_ok() && mem::free_frames() != before {
        return Err("the drop after teardown did not return exactly the root");
    }
    for i in 0..2 {
        if mem::free_frame(PhysFrame::containing(lent.addr() + i * PAGE_SIZE)).is_err() {
            return Err("a lent frame was freed by teardown");
        }
    }
    r
}

/// ktest: mapped pages and page tables are charged to the space and its
/// program, a refused `map_anon` charges nothing, `unmap` returns exactly
/// what it frees (map/unmap churn does not drift), and the space's drop
/// returns everything to the program.
pub fn ktest_mapped_pages_are_charged_and_returned() -> Result<(), &'static str> {
    const VA: u64 = 0x200_0000;
    let program = Arc::new(PageBudget::new(64));
    let space = AddressSpace::new_charged(Some(program.clone())).map_err(|_| "new_charged")?;
    if space.charged_pages() != 1 || program.used() != 1 {
        return Err("the PML4 is not charged");
    }
    space
        .map_anon(VA, 16 * PAGE_SIZE, prot::WRITE)
        .map_err(|_| "map_anon of 16 pages failed")?;
    // 16 pages, and a PDPT, a PD and a PT for them.
    if space.charged_pages() != 1 + 16 + 3 || program.used() != 1 + 16 + 3 {
        return Err("16 mapped pages and their 3 tables are not charged");
    }
    for _ in 0..8 {
        space
            .unmap(VA, 16 * PAGE_SIZE)
            .map_err(|_| "unmap failed")?;
        space
            .map_anon(VA, 16 * PAGE_SIZE, prot::WRITE)
            .map_err(|_| "map_anon after unmap failed")?;
    }
    space
        .unmap(VA, 16 * PAGE_SIZE)
        .map_err(|_| "unmap failed")?;
    if space.charged_pages() != 1 + 3 {
        return Err("unmap did not return exactly the pages it freed");
    }
    if space.map_anon(VA, 61 * PAGE_SIZE, prot::WRITE) != Err(Error::NoMemory) {
        return Err("map_anon beyond the program's limit was not NoMemory");
    }
    if space.charged_pages() != 1 + 3 || program.used() != 1 + 3 {
        return Err("a refused map_anon left a charge behind");
    }
    drop(space);
    if program.used() != 0 {
        return Err("the space's drop did not return its charge to the program");
    }
    Ok(())
}

/// ktest (issue 11): a copy-on-write clone shares every frame (only its
/// tables are new) and is charged for every page it maps; a write fault in
/// the source copies one frame; dropping the clone frees exactly its tables,
/// its root and the frame only it still held. A memory object's frames
/// mapped into a space are charged to that space, survive the object, and
/// go back with the last mapping.
pub fn ktest_shared_and_cow_frames_are_counted() -> Result<(), &'static str> {
    const VA: u64 = 0x300_0000;
    const MEM_VA: u64 = 0x400_0000;
    let program = Arc::new(PageBudget::new(256));
    let a = AddressSpace::new_charged(Some(program.clone())).map_err(|_| "new_charged")?;
    a.map_anon(VA, 4 * PAGE_SIZE, prot::WRITE)
        .map_err(|_| "map_anon")?;
    let f0 = mem::free_frames();
    let b = AddressSpace::new_charged(Some(program.clone())).map_err(|_| "new_charged")?;
    b.copy_on_write_from(&a).map_err(|_| "copy_on_write_from")?;
    // The clone's root and its PDPT, PD, PT; no data frame.
    if mem::free_frames() != f0 - 4 {
        return Err("a clone copied frames (or leaked tables)");
    }
    if b.charged_pages() != 1 + 3 + 4 {
        return Err("the clone is not charged for its root, tables and pages");
    }
    if a.resolve_write_fault(VA + 8) != WriteFaultOutcome::Retry {
        return Err("a write fault on a COW page did not resolve");
    }
    if mem::free_frames() != f0 - 5 {
        return Err("a COW write fault did not copy exactly one frame");
    }
    // Already resolved: a second fault is spurious (no copy).
    if a.resolve_write_fault(VA) != WriteFaultOutcome::Retry || mem::free_frames() != f0 - 5 {
        return Err("a resolved page was copied again");
    }
    drop(b);
    if mem::free_frames() != f0 {
        return Err("dropping the clone did not return exactly its own frames");
    }
    // The source's other pages are its own again: taken over, not copied.
    if a.resolve_write_fault(VA + PAGE_SIZE) != WriteFaultOutcome::Retry || mem::free_frames() != f0
    {
        return Err("a page whose clone is gone was copied instead of taken over");
    }
    // A real fault stays one.
    if a.resolve_write_fault(MEM_VA) != WriteFaultOutcome::Fault {
        return Err("a write fault on an unmapped page was resolved");
    }
    let before_obj = mem::free_frames();
    let obj =
        crate::object::memory::MemoryObj::new(4, program.clone()).map_err(|_| "MemoryObj::new")?;
    let charged = a.charged_pages();
    a.map_object_frames(MEM_VA, obj.frames(), prot::WRITE, false)
        .map_err(|_| "map_object_frames")?;
    if a.charged_pages() < charged + 4 {
        return Err("shared pages are not charged to the space they are mapped in");
    }
    drop(obj);
    if mem::free_frames() >= before_obj {
        return Err("the object's frames went while still mapped");
    }
    a.unmap(MEM_VA, 4 * PAGE_SIZE).map_err(|_| "unmap")?;
    // Back, but for the page tables the mapping made (kept until teardown).
    if mem::free_frames() + 1 < before_obj {
        return Err("the last unmap did not free the object's frames");
    }
    drop(a);
    if program.used() != 0 {
        return Err("charges were not returned to the program");
    }
    Ok(())
}

/// ktest (forkperf): an `unmap` that names the whole span of page tables
/// frees those tables and returns their charge (in several chunks: far more
/// tables than one chunk's frame buffer holds), so the space's frames and
/// charge are back where they were before the map; a later map builds them
/// again.
pub fn ktest_unmap_frees_the_tables_it_empties() -> Result<(), &'static str> {
    const BASE: u64 = 0x40_0000_0000; // 256 GiB: its own PDPT entry
    const SPAN: u64 = 1 << 30; // one PD's span: 512 PTs
    const PTS: u64 = 200; // one page in each of 200 2 MiB regions
    let space = AddressSpace::new().map_err(|_| "AddressSpace::new failed")?;
    let before = mem::free_frames();
    let charged = space.charged_pages();
    for i in 0..PTS {
        space
            .map_anon(BASE + i * (2 << 20), PAGE_SIZE, prot::WRITE)
            .map_err(|_| "map_anon failed")?;
    }
    // A range that names part of a table leaves it (empty or not).
    let edge = BASE + SPAN - (2 << 20);
    space
        .map_anon(edge, 2 * PAGE_SIZE, prot::WRITE)
        .map_err(|_| "map_anon (edge) failed")?;
    space
        .unmap(edge + PAGE_SIZE, PAGE_SIZE)
        .map_err(|_| "unmap (edge) failed")?;
    // This one names the whole PD's span: every PT under it and the PD go;
    // only the PDPT (its span is 512 GiB) stays.
    space.unmap(BASE, SPAN).map_err(|_| "unmap failed")?;
    if mem::free_frames() != before - 1 || space.charged_pages() != charged + 1 {
        return Err("unmap kept the page tables it emptied (frames or charge)");
    }
    space
        .map_anon(BASE, PAGE_SIZE, prot::WRITE)
        .map_err(|_| "map_anon after the unmap failed")?;
    // The PDPT, and a new PD, PT and the page.
    if space.charged_pages() != charged + 4 {
        return Err("the map after the unmap charged other than its tables and page");
    }
    drop(space);
    Ok(())
}
