//! Host tests of the range operations (`paging/range.rs`): walks that cost
//! what is mapped, pause and resume, and the teardowns.

use super::*;

/// The lowest user address the kernel hands out, and a range naming the whole
/// user half above it: 2^35 pages, far too many to visit one by one.
const LOW: u64 = 0x10000;

/// Three pages in three different 512 GiB regions, plus a run of 600 pages
/// (more than one page table) in a fourth.
fn sparse(mem: &mut FakeMem, pt: &PageTable) -> Vec<u64> {
    let mut vas = vec![LOW, 0x0000_1234_5678_9000, 0x0000_7fff_ffff_f000];
    vas.extend((0..600).map(|i| 0x0000_4000_0000_0000 + i * PAGE_SIZE));
    for (i, &va) in vas.iter().enumerate() {
        pt.map(mem, va, (i as u64 + 1) * PAGE_SIZE, PageSize::Size4K, urw())
            .unwrap();
    }
    vas
}

#[test]
fn unmapping_the_whole_user_half_costs_what_is_mapped() {
    let (mut mem, pt) = setup();
    let vas = sparse(&mut mem, &pt);
    mem.reads.set(0);
    let mut budget = usize::MAX;
    let mut seen = Vec::new();
    let r = pt.unmap_range(
        &mut mem,
        LOW,
        USER_HALF_END,
        &mut budget,
        |va, pa, size, _| {
            assert_eq!(size, PageSize::Size4K);
            seen.push((va, pa));
            true
        },
    );
    assert_eq!(r, Ok(None));
    assert_eq!(seen.len(), vas.len());
    assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), {
        let mut v = vas.clone();
        v.sort();
        v
    });
    // Tables: 1 PML4 + 4 x (PDPT + PD) + 5 PTs = 14. The walk examines at
    // most the 256 user PML4 entries and the entries of the 13 tables below:
    // a few thousand, not 2^35. Each entry is read once (plus the leaf edit).
    let examined = usize::MAX - budget;
    assert!(
        examined <= KERNEL_PML4_START + 13 * ENTRIES,
        "examined {examined} entries"
    );
    assert!(
        mem.reads() <= 2 * (KERNEL_PML4_START + 13 * ENTRIES),
        "{} table reads",
        mem.reads()
    );
    for va in vas {
        assert_eq!(pt.translate(&mut mem, va), None);
    }
}

#[test]
fn a_range_walk_over_an_empty_user_half_reads_only_the_root() {
    let (mut mem, pt) = setup();
    mem.reads.set(0);
    let mut budget = usize::MAX;
    let r = pt.unmap_range(&mut mem, LOW, USER_HALF_END, &mut budget, |_, _, _, _| {
        panic!("nothing is mapped")
    });
    assert_eq!(r, Ok(None));
    assert_eq!(usize::MAX - budget, KERNEL_PML4_START);
    // Two looks at the root: its first entry, then one scan of the run of
    // absent entries (still one budget unit each).
    assert_eq!(mem.reads(), 2);
    let mut budget = usize::MAX;
    assert_eq!(
        pt.protect_range(&mut mem, LOW, USER_HALF_END, &mut budget, PteFlags::USER),
        Ok(None)
    );
    assert_eq!(usize::MAX - budget, KERNEL_PML4_START);
}

#[test]
fn a_paused_walk_resumes_where_it_stopped_and_ends_the_same() {
    for chunk in [1, 2, 7, 100, 513] {
        let (mut mem, pt) = setup();
        let vas = sparse(&mut mem, &pt);
        let mut seen = Vec::new();
        let mut at = LOW;
        let mut rounds = 0;
        loop {
            let mut budget = chunk;
            let r = pt
                .unmap_range(&mut mem, at, USER_HALF_END, &mut budget, |va, _, _, _| {
                    seen.push(va);
                    true
                })
                .unwrap();
            rounds += 1;
            match r {
                None => break,
                Some(resume) => {
                    assert!(resume > at, "no progress at {at:#x}");
                    at = resume;
                }
            }
            assert!(rounds < 100_000, "chunk {chunk}: never ends");
        }
        assert_eq!(seen.len(), vas.len(), "chunk {chunk}");
    }
}

#[test]
fn the_leaf_callback_can_pause_a_walk() {
    let (mut mem, pt) = setup();
    let vas = sparse(&mut mem, &pt);
    let mut total = 0;
    let mut at = LOW;
    loop {
        let mut budget = usize::MAX;
        let mut n = 0;
        let r = pt
            .unmap_range(&mut mem, at, USER_HALF_END, &mut budget, |_, _, _, _| {
                n += 1;
                n < 16
            })
            .unwrap();
        assert!(n <= 16);
        total += n;
        match r {
            None => break,
            Some(resume) => at = resume,
        }
    }
    assert_eq!(total, vas.len());
}

#[test]
fn range_walks_stay_inside_the_range() {
    let (mut mem, pt) = setup();
    for i in 0..8 {
        pt.map(
            &mut mem,
            0x20_0000 + i * PAGE_SIZE,
            0x1000,
            PageSize::Size4K,
            urw(),
        )
        .unwrap();
    }
    let mut budget = usize::MAX;
    let mut seen = Vec::new();
    pt.unmap_range(
        &mut mem,
        0x20_2000,
        0x20_5000,
        &mut budget,
        |va, _, _, _| {
            seen.push(va);
            true
        },
    )
    .unwrap();
    assert_eq!(seen, vec![0x20_2000, 0x20_3000, 0x20_4000]);
    assert!(pt.translate(&mut mem, 0x20_1000).is_some());
    assert!(pt.translate(&mut mem, 0x20_5000).is_some());
}

#[test]
fn range_walks_refuse_the_kernel_half_and_straddled_huge_pages() {
    let (mut mem, pt) = setup();
    let mut budget = usize::MAX;
    assert_eq!(
        pt.unmap_range(
            &mut mem,
            LOW,
            USER_HALF_END + PAGE_SIZE,
            &mut budget,
            |_, _, _, _| true
        ),
        Err(MapError::NonCanonical)
    );
    pt.map(&mut mem, 0x4000_0000, 0x4000_0000, PageSize::Size2M, urw())
        .unwrap();
    assert_eq!(
        pt.unmap_range(
            &mut mem,
            0x4000_1000,
            0x4100_0000,
            &mut budget,
            |_, _, _, _| true
        ),
        Err(MapError::Misaligned)
    );
    let mut seen = 0;
    pt.unmap_range(
        &mut mem,
        0x4000_0000,
        0x4020_0000,
        &mut budget,
        |_, pa, size, _| {
            assert_eq!((pa, size), (0x4000_0000, PageSize::Size2M));
            seen += 1;
            true
        },
    )
    .unwrap();
    assert_eq!(seen, 1);
}

#[test]
fn check_mapped_finds_holes_even_across_pauses_and_absent_tables() {
    let (mut mem, pt) = setup();
    for i in 0..600 {
        pt.map(
            &mut mem,
            0x40_0000 + i * PAGE_SIZE,
            0x1000,
            PageSize::Size4K,
            urw(),
        )
        .unwrap();
    }
    let all_ok = |_: u64, _: PteFlags| Ok(());
    let check = |mem: &mut FakeMem, s: u64, e: u64, chunk: usize| {
        let mut at = s;
        loop {
            let mut budget = chunk;
            match pt.check_mapped(mem, at, e, &mut budget, all_ok)? {
                None => return Ok(()),
                Some(r) => at = r,
            }
        }
    };
    for chunk in [1, 3, 512, usize::MAX] {
        let end = 0x40_0000 + 600 * PAGE_SIZE;
        assert_eq!(check(&mut mem, 0x40_0000, end, chunk), Ok(()), "{chunk}");
        // A hole at the end, at the start, in the middle, and a range
        // whose upper tables are absent altogether.
        assert_eq!(
            check(&mut mem, 0x40_0000, end + PAGE_SIZE, chunk),
            Err(MapError::NotMapped)
        );
        assert_eq!(
            check(&mut mem, 0x3f_f000, end, chunk),
            Err(MapError::NotMapped)
        );
        assert_eq!(
            check(&mut mem, 0x1_0000_0000, 0x2_0000_0000, chunk),
            Err(MapError::NotMapped)
        );
    }
    let mut budget = usize::MAX;
    pt.unmap_range(
        &mut mem,
        0x40_0000 + 300 * PAGE_SIZE,
        0x40_0000 + 301 * PAGE_SIZE,
        &mut budget,
        |_, _, _, _| true,
    )
    .unwrap();
    for chunk in [1, 3, 512, usize::MAX] {
        assert_eq!(
            check(&mut mem, 0x40_0000, 0x40_0000 + 600 * PAGE_SIZE, chunk),
            Err(MapError::NotMapped)
        );
        assert_eq!(
            check(&mut mem, 0x40_0000, 0x40_0000 + 300 * PAGE_SIZE, chunk),
            Ok(())
        );
    }
    // The caller's own verdict on each leaf.
    let mut budget = usize::MAX;
    assert_eq!(
        pt.check_mapped(&mut mem, 0x40_0000, 0x40_2000, &mut budget, |va, f| {
            assert!(f.contains(PteFlags::USER));
            if va == 0x40_1000 {
                Err(MapError::AlreadyMapped)
            } else {
                Ok(())
            }
        }),
        Err(MapError::AlreadyMapped)
    );
}

#[test]
fn protect_range_rewrites_leaves_and_keeps_software_bits() {
    let (mut mem, pt) = setup();
    pt.map(
        &mut mem,
        0x10_0000,
        0x5000,
        PageSize::Size4K,
        urw() | PteFlags::BORROWED,
    )
    .unwrap();
    pt.map(&mut mem, 0x10_1000, 0x6000, PageSize::Size4K, urw())
        .unwrap();
    let mut budget = usize::MAX;
    assert_eq!(
        pt.protect_range(&mut mem, LOW, USER_HALF_END, &mut budget, PteFlags::USER),
        Ok(None)
    );
    let (pa, f, _) = pt.translate(&mut mem, 0x10_0000).unwrap();
    assert_eq!(pa, 0x5000);
    assert_eq!(f, PteFlags::PRESENT | PteFlags::USER | PteFlags::BORROWED);
    let (pa, f, _) = pt.translate(&mut mem, 0x10_1000).unwrap();
    assert_eq!(pa, 0x6000);
    assert_eq!(f, PteFlags::PRESENT | PteFlags::USER);
    // The single-page protect keeps the software bit too.
    pt.protect(&mut mem, 0x10_0000, urw()).unwrap();
    let (_, f, _) = pt.translate(&mut mem, 0x10_0000).unwrap();
    assert!(f.contains(PteFlags::BORROWED));
}

/// A copy-on-write leaf is never made hardware-writable by a protect: the
/// write permission goes into `COW_WRITE` (and a read-only protect clears
/// it), and `SHARED` survives like every software bit.
#[test]
fn protect_keeps_cow_leaves_read_only_and_records_the_wish() {
    let (mut mem, pt) = setup();
    pt.map(
        &mut mem,
        0x10_0000,
        0x5000,
        PageSize::Size4K,
        PteFlags::USER | PteFlags::COW,
    )
    .unwrap();
    pt.map(
        &mut mem,
        0x10_1000,
        0x6000,
        PageSize::Size4K,
        PteFlags::USER | PteFlags::SHARED,
    )
    .unwrap();
    let mut budget = usize::MAX;
    assert_eq!(
        pt.protect_range(&mut mem, LOW, USER_HALF_END, &mut budget, urw()),
        Ok(None)
    );
    let (_, f, _) = pt.translate(&mut mem, 0x10_0000).unwrap();
    assert!(!f.contains(PteFlags::WRITABLE));
    assert!(f.contains(PteFlags::COW | PteFlags::COW_WRITE));
    let (_, f, _) = pt.translate(&mut mem, 0x10_1000).unwrap();
    assert!(f.contains(PteFlags::WRITABLE | PteFlags::SHARED));
    pt.protect(&mut mem, 0x10_0000, PteFlags::USER).unwrap();
    let (pa, f, _) = pt.translate(&mut mem, 0x10_0000).unwrap();
    assert_eq!(pa, 0x5000);
    assert_eq!(f, PteFlags::PRESENT | PteFlags::USER | PteFlags::COW);
}

/// `edit_range` visits every leaf in order, skips holes, rewrites in place
/// and pauses where asked; `update_leaf` rewrites one leaf.
#[test]
fn edit_range_and_update_leaf_rewrite_leaves_in_place() {
    let (mut mem, pt) = setup();
    for (i, va) in [0x10_0000u64, 0x10_2000, 0x4000_0000]
        .into_iter()
        .enumerate()
    {
        pt.map(
            &mut mem,
            va,
            0x5000 + i as u64 * 0x1000,
            PageSize::Size4K,
            urw(),
        )
        .unwrap();
    }
    let mut seen = Vec::new();
    let mut budget = usize::MAX;
    let r = pt.edit_range(&mut mem, LOW, USER_HALF_END, &mut budget, |va, e, _| {
        seen.push(va);
        *e &= !PteFlags::WRITABLE.bits();
        seen.len() < 2
    });
    assert_eq!(r, Ok(Some(0x10_3000)));
    assert_eq!(seen, [0x10_0000, 0x10_2000]);
    let r = pt.edit_range(
        &mut mem,
        0x10_3000,
        USER_HALF_END,
        &mut budget,
        |va, _, _| {
            seen.push(va);
            true
        },
    );
    assert_eq!(r, Ok(None));
    assert_eq!(seen, [0x10_0000, 0x10_2000, 0x4000_0000]);
    let (_, f, _) = pt.translate(&mut mem, 0x10_2000).unwrap();
    assert!(!f.contains(PteFlags::WRITABLE));
    let (_, f, _) = pt.translate(&mut mem, 0x4000_0000).unwrap();
    assert!(f.contains(PteFlags::WRITABLE));
    assert_eq!(
        pt.update_leaf(&mut mem, 0x10_2000, |e, s| {
            *e |= PteFlags::WRITABLE.bits();
            s
        }),
        Ok(PageSize::Size4K)
    );
    let (_, f, _) = pt.translate(&mut mem, 0x10_2000).unwrap();
    assert!(f.contains(PteFlags::WRITABLE));
    assert_eq!(
        pt.update_leaf(&mut mem, 0x10_1000, |_, _| ()),
        Err(MapError::NotMapped)
    );
}

/// Runs `unmap_range_pruning` of `[start, end)` to the end in chunks of
/// `chunk` units, pausing the leaf callback every `pause` leaves: the
/// leaves and the detached tables it reported.
fn prune_all(
    mem: &mut FakeMem,
    pt: &PageTable,
    start: u64,
    end: u64,
    chunk: usize,
    pause: usize,
) -> (Vec<u64>, Vec<u64>) {
    let (mut leaves, mut tables) = (Vec::new(), Vec::new());
    let mut at = start;
    loop {
        let mut budget = chunk;
        let mut n = 0;
        let leaves_cell = std::cell::RefCell::new(&mut leaves);
        let r = pt
            .unmap_range_pruning(
                mem,
                start,
                at,
                end,
                &mut budget,
                |va, _, _, _| {
                    leaves_cell.borrow_mut().push(va);
                    n += 1;
                    n % pause != 0
                },
                &mut |t| {
                    tables.push(t);
                    true
                },
            )
            .unwrap();
        match r {
            None => return (leaves, tables),
            Some(resume) => {
                assert!(resume > at, "no progress at {at:#x}");
                at = resume;
            }
        }
    }
}

#[test]
fn a_pruning_unmap_detaches_exactly_the_tables_inside_the_range() {
    for (chunk, pause) in [(usize::MAX, usize::MAX), (7, 5), (512, 1), (1, 3)] {
        let (mut mem, pt) = setup();
        // 600 pages from a 2 MiB boundary (two PTs under one PD, the second
        // partly filled) and one page in the next 1 GiB (its own PD and PT).
        let base = 0x0000_4000_0000_0000;
        let mut vas: Vec<u64> = (0..600).map(|i| base + i * PAGE_SIZE).collect();
        vas.push(base + (1 << 30));
        for (i, &va) in vas.iter().enumerate() {
            pt.map(
                &mut mem,
                va,
                (i as u64 + 1) * PAGE_SIZE,
                PageSize::Size4K,
                urw(),
            )
            .unwrap();
        }
        let before = mem.live_tables();
        // The first 2 MiB exactly: its PT goes, the PD (shared) stays.
        let (leaves, tables) = prune_all(&mut mem, &pt, base, base + (2 << 20), chunk, pause);
        assert_eq!(leaves.len(), 512, "chunk {chunk}");
        assert_eq!(tables.len(), 1, "chunk {chunk}");
        assert_eq!(mem.live_tables(), before, "reported, not freed");
        for t in &tables {
            mem.free_table(*t);
        }
        assert!(pt.translate(&mut mem, base + 599 * PAGE_SIZE).is_some());
        // The rest of the first PT's neighbour, from one page in: that PT is
        // only partly named, so it stays (empty) with its PD.
        let (leaves, tables) = prune_all(
            &mut mem,
            &pt,
            base + (2 << 20) + PAGE_SIZE,
            base + (1 << 30),
            chunk,
            pause,
        );
        assert_eq!(leaves.len(), 87, "chunk {chunk}");
        assert!(tables.is_empty(), "chunk {chunk}");
        // The whole 512 GiB region: the page left at the second PT's start
        // and the lone page go, then that PT, both PDs, the lone page's PT
        // and the PDPT; the root stays.
        let (leaves, tables) = prune_all(&mut mem, &pt, base, base + (1 << 39), chunk, pause);
        assert_eq!(
            leaves,
            vec![base + (2 << 20), base + (1 << 30)],
            "chunk {chunk}"
        );
        assert_eq!(tables.len(), 5, "chunk {chunk}");
        for t in &tables {
            mem.free_table(*t);
        }
        assert_eq!(
            mem.live_tables(),
            1,
            "only the root is left (chunk {chunk})"
        );
        // The space is usable again: mapping rebuilds the tables.
        pt.map(&mut mem, base, PAGE_SIZE, PageSize::Size4K, urw())
            .unwrap();
        assert_eq!(pt.translate(&mut mem, base).map(|t| t.0), Some(PAGE_SIZE));
    }
}
