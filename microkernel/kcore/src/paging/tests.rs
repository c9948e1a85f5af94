//! Host tests of [`super`].

use super::*;
use std::collections::HashSet;

const FAKE_BASE: u64 = 0x1000_0000;

/// Tables at fake physical addresses `FAKE_BASE + i * 4096`.
struct FakeMem {
    tables: Vec<Box<[u64; ENTRIES]>>,
    live: Vec<bool>,
    /// How many more tables `alloc_table` will hand out.
    budget: usize,
    /// Calls of `table` so far (the cost of a walk).
    reads: std::cell::Cell<usize>,
}

impl FakeMem {
    fn new(budget: usize) -> FakeMem {
        FakeMem {
            tables: Vec::new(),
            live: Vec::new(),
            budget,
            reads: std::cell::Cell::new(0),
        }
    }

    /// How many table reads the next operations make (reset by the caller).
    fn reads(&self) -> usize {
        self.reads.get()
    }

    fn live_tables(&self) -> usize {
        self.live.iter().filter(|l| **l).count()
    }

    fn slot(&self, phys: u64) -> usize {
        assert!(
            phys >= FAKE_BASE && phys.is_multiple_of(PAGE_SIZE),
            "bad table address {phys:#x}"
        );
        let i = ((phys - FAKE_BASE) / PAGE_SIZE) as usize;
        assert!(self.live[i], "table {phys:#x} used after free");
        i
    }
}

impl PhysMem for FakeMem {
    fn table(&mut self, phys: u64) -> &mut [u64; ENTRIES] {
        self.reads.set(self.reads.get() + 1);
        let i = self.slot(phys);
        &mut self.tables[i]
    }

    fn alloc_table(&mut self) -> Option<u64> {
        if self.budget == 0 {
            return None;
        }
        self.budget -= 1;
        self.tables.push(Box::new([0; ENTRIES]));
        self.live.push(true);
        Some(FAKE_BASE + (self.tables.len() as u64 - 1) * PAGE_SIZE)
    }

    fn free_table(&mut self, phys: u64) {
        let i = self.slot(phys);
        self.live[i] = false;
    }
}

fn setup() -> (FakeMem, PageTable) {
    let mut mem = FakeMem::new(10_000);
    let pt = PageTable::create(&mut mem).unwrap();
    (mem, pt)
}

fn urw() -> PteFlags {
    PteFlags::USER | PteFlags::WRITABLE | PteFlags::NO_EXECUTE
}

#[test]
fn index_helpers_split_an_address() {
    let va = 0xffff_ffff_8020_1abc;
    assert_eq!(pml4_index(va), 511);
    assert_eq!(pdpt_index(va), 510);
    assert_eq!(pd_index(va), 1);
    assert_eq!(pt_index(va), 1);
    assert_eq!(page_offset(va), 0xabc);
    assert_eq!(pml4_index(USER_HALF_END - 1), 255);
}

#[test]
fn canonical_addresses_have_equal_top_bits() {
    assert!(is_canonical(0));
    assert!(is_canonical(0x0000_7fff_ffff_ffff));
    assert!(!is_canonical(0x0000_8000_0000_0000));
    assert!(!is_canonical(0xffff_7fff_ffff_ffff));
    assert!(is_canonical(0xffff_8000_0000_0000));
    assert!(is_canonical(u64::MAX));
}

#[test]
fn user_ranges_must_stay_below_the_kernel_half_without_overflow() {
    assert!(user_range_ok(0x1000, 0x1000));
    assert!(user_range_ok(0x1000, 0));
    assert!(user_range_ok(0, 0));
    assert!(user_range_ok(USER_HALF_END - 0x1000, 0x1000));
    assert!(user_range_ok(USER_HALF_END, 0));
    assert!(!user_range_ok(USER_HALF_END - 0x1000, 0x1001));
    assert!(!user_range_ok(USER_HALF_END, 1));
    assert!(!user_range_ok(0xffff_ffff_8000_0000, 0x10));
    assert!(!user_range_ok(0x1000, u64::MAX));
}

#[test]
fn map_translate_unmap_round_trips_for_every_page_size() {
    let (mut mem, pt) = setup();
    let cases = [
        (0x40_0000, 0x20_0000_3000, PageSize::Size4K),
        (0x4000_0000_0000, 0x20_0060_0000, PageSize::Size2M),
        (0x7f80_4000_0000, 0x20_c000_0000, PageSize::Size1G),
    ];
    for (va, pa, size) in cases {
        pt.map(&mut mem, va, pa, size, urw()).unwrap();
    }
    for (va, pa, size) in cases {
        let probe = va + size.bytes() - 8;
        let (got_pa, flags, got_size) = pt.translate(&mut mem, probe).unwrap();
        assert_eq!(got_pa, pa + size.bytes() - 8);
        assert_eq!(got_size, size);
        assert!(flags.contains(urw() | PteFlags::PRESENT));
        assert_eq!(flags.contains(PteFlags::HUGE), size != PageSize::Size4K);
        assert_eq!(pt.translate(&mut mem, va + size.bytes()), None);
    }
    for (va, pa, size) in cases {
        assert_eq!(pt.unmap(&mut mem, va), Ok((pa, size)));
        assert_eq!(pt.translate(&mut mem, va), None);
        assert_eq!(pt.unmap(&mut mem, va), Err(MapError::NotMapped));
    }
}

#[test]
fn mapping_twice_is_already_mapped() {
    let (mut mem, pt) = setup();
    pt.map(&mut mem, 0x1000, 0x5000, PageSize::Size4K, urw())
        .unwrap();
    assert_eq!(
        pt.map(&mut mem, 0x1000, 0x6000, PageSize::Size4K, urw()),
        Err(MapError::AlreadyMapped)
    );
    // A 2 MiB page where a page table already hangs.
    assert_eq!(
        pt.map(&mut mem, 0, 0x20_0000, PageSize::Size2M, urw()),
        Err(MapError::AlreadyMapped)
    );
    assert_eq!(pt.translate(&mut mem, 0x1000).unwrap().0, 0x5000);
}

#[test]
fn misaligned_addresses_are_refused() {
    let (mut mem, pt) = setup();
    let live = mem.live_tables();
    for (va, pa, size) in [
        (0x1001, 0x5000, PageSize::Size4K),
        (0x1000, 0x5800, PageSize::Size4K),
        (0x20_1000, 0x40_0000, PageSize::Size2M),
        (0x20_0000, 0x40_1000, PageSize::Size2M),
        (0x4000_0000, 0x20_0000, PageSize::Size1G),
    ] {
        assert_eq!(
            pt.map(&mut mem, va, pa, size, urw()),
            Err(MapError::Misaligned)
        );
    }
    assert_eq!(mem.live_tables(), live);
    // Unmapping / protecting from the middle of a huge page is refused too.
    pt.map(&mut mem, 0x20_0000, 0x40_0000, PageSize::Size2M, urw())
        .unwrap();
    assert_eq!(pt.unmap(&mut mem, 0x20_1000), Err(MapError::Misaligned));
    assert_eq!(
        pt.protect(&mut mem, 0x20_1000, urw()),
        Err(MapError::Misaligned)
    );
    assert!(pt.translate(&mut mem, 0x20_0000).is_some());
}

#[test]
fn non_canonical_and_oversized_physical_addresses_are_refused() {
    let (mut mem, pt) = setup();
    let bad = 0x0000_8000_0000_0000;
    assert_eq!(
        pt.map(&mut mem, bad, 0, PageSize::Size4K, urw()),
        Err(MapError::NonCanonical)
    );
    assert_eq!(pt.unmap(&mut mem, bad), Err(MapError::NonCanonical));
    assert_eq!(
        pt.protect(&mut mem, bad, urw()),
        Err(MapError::NonCanonical)
    );
    assert_eq!(pt.translate(&mut mem, bad), None);
    assert_eq!(
        pt.map(&mut mem, 0x1000, 1 << 52, PageSize::Size4K, urw()),
        Err(MapError::InvalidPhysAddr)
    );
}

#[test]
fn a_huge_page_in_the_way_blocks_smaller_mappings() {
    let (mut mem, pt) = setup();
    pt.map(&mut mem, 0x4000_0000, 0x8000_0000, PageSize::Size1G, urw())
        .unwrap();
    pt.map(&mut mem, 0x20_0000, 0x40_0000, PageSize::Size2M, urw())
        .unwrap();
    let live = mem.live_tables();
    assert_eq!(
        pt.map(&mut mem, 0x4000_1000, 0x1000, PageSize::Size4K, urw()),
        Err(MapError::HugePageInTheWay)
    );
    assert_eq!(
        pt.map(&mut mem, 0x4020_0000, 0x20_0000, PageSize::Size2M, urw()),
        Err(MapError::HugePageInTheWay)
    );
    assert_eq!(
        pt.map(&mut mem, 0x20_3000, 0x1000, PageSize::Size4K, urw()),
        Err(MapError::HugePageInTheWay)
    );
    // The 1 GiB slot holding the PD of the 2 MiB page is taken.
    assert_eq!(
        pt.map(&mut mem, 0, 0, PageSize::Size1G, urw()),
        Err(MapError::AlreadyMapped)
    );
    assert_eq!(mem.live_tables(), live);
}

#[test]
fn user_mappings_make_intermediate_entries_user_writable() {
    let (mut mem, pt) = setup();
    let va = 0x7fff_ffff_f000;
    pt.map(&mut mem, va, 0x9000, PageSize::Size4K, PteFlags::USER)
        .unwrap();
    let want = (PteFlags::PRESENT | PteFlags::WRITABLE | PteFlags::USER).bits();
    let mut table = pt.root();
    for level in (2..=4).rev() {
        let e = mem.table(table)[table_index(va, level)];
        assert_eq!(e & !PHYS_ADDR_MASK, want, "level {level}");
        table = entry_addr(e);
    }
    let leaf = mem.table(table)[pt_index(va)];
    assert_eq!(entry_flags(leaf), PteFlags::PRESENT | PteFlags::USER);
    // The leaf decides: read-only, user.
    let (_, flags, _) = pt.translate(&mut mem, va).unwrap();
    assert!(!flags.contains(PteFlags::WRITABLE));
}

#[test]
fn kernel_mappings_get_supervisor_intermediates_and_user_maps_upgrade_them() {
    let (mut mem, pt) = setup();
    pt.map(
        &mut mem,
        0x1000,
        0x1000,
        PageSize::Size4K,
        PteFlags::WRITABLE,
    )
    .unwrap();
    let pml4e = mem.table(pt.root())[0];
    assert_eq!(entry_flags(pml4e), PteFlags::PRESENT | PteFlags::WRITABLE);
    let (_, flags, _) = pt.translate(&mut mem, 0x1000).unwrap();
    assert!(!flags.contains(PteFlags::USER));

    pt.map(&mut mem, 0x2000, 0x2000, PageSize::Size4K, PteFlags::USER)
        .unwrap();
    let pml4e = mem.table(pt.root())[0];
    assert!(entry_flags(pml4e).contains(PteFlags::USER));
    // The supervisor page stays supervisor-only: its leaf lacks USER.
    assert!(!pt
        .translate(&mut mem, 0x1000)
        .unwrap()
        .1
        .contains(PteFlags::USER));
    assert!(pt
        .translate(&mut mem, 0x2000)
        .unwrap()
        .1
        .contains(PteFlags::USER));
}

#[test]
fn translate_reports_what_the_intermediate_entries_allow() {
    let (mut mem, pt) = setup();
    pt.map(
        &mut mem,
        0x1000,
        0x1000,
        PageSize::Size4K,
        PteFlags::USER | PteFlags::WRITABLE,
    )
    .unwrap();
    // Clear WRITABLE and set NX on the PML4 entry by hand.
    let e = &mut mem.table(pt.root())[0];
    *e = (*e & !PteFlags::WRITABLE.bits()) | PteFlags::NO_EXECUTE.bits();
    let (_, flags, _) = pt.translate(&mut mem, 0x1000).unwrap();
    assert!(flags.contains(PteFlags::USER | PteFlags::NO_EXECUTE));
    assert!(!flags.contains(PteFlags::WRITABLE));
}

#[test]
fn running_out_of_table_memory_is_no_memory_and_leaks_nothing() {
    let mut mem = FakeMem::new(3); // root + 2: one short of a 4K map
    let pt = PageTable::create(&mut mem).unwrap();
    assert_eq!(
        pt.map(&mut mem, 0x1000, 0x1000, PageSize::Size4K, urw()),
        Err(MapError::NoMemory)
    );
    assert_eq!(mem.live_tables(), 1);
    assert!(mem.table(pt.root()).iter().all(|e| *e == 0));
    // The two tables came back; a 2 MiB map needs exactly those.
    mem.budget = 2;
    pt.map(&mut mem, 0x20_0000, 0x20_0000, PageSize::Size2M, urw())
        .unwrap();
    let mut none = FakeMem::new(0);
    assert_eq!(PageTable::create(&mut none), Err(MapError::NoMemory));
}

#[test]
fn protect_changes_the_leaf_flags_only() {
    let (mut mem, pt) = setup();
    pt.map(&mut mem, 0x40_0000, 0x7000, PageSize::Size4K, urw())
        .unwrap();
    pt.protect(&mut mem, 0x40_0000, PteFlags::USER).unwrap();
    let (pa, flags, size) = pt.translate(&mut mem, 0x40_0123).unwrap();
    assert_eq!((pa, size), (0x7123, PageSize::Size4K));
    assert_eq!(flags, PteFlags::PRESENT | PteFlags::USER);
    pt.map(&mut mem, 0x60_0000, 0x60_0000, PageSize::Size2M, urw())
        .unwrap();
    pt.protect(&mut mem, 0x60_0000, PteFlags::USER).unwrap();
    let (_, flags, _) = pt.translate(&mut mem, 0x60_0000).unwrap();
    assert_eq!(flags, PteFlags::PRESENT | PteFlags::USER | PteFlags::HUGE);
    assert_eq!(
        pt.protect(&mut mem, 0x80_0000, urw()),
        Err(MapError::NotMapped)
    );
}

#[test]
fn user_maps_never_touch_the_kernel_half() {
    let mut mem = FakeMem::new(10_000);
    let kernel = PageTable::create(&mut mem).unwrap();
    kernel
        .map(
            &mut mem,
            0xffff_ffff_8000_0000,
            0x20_0000,
            PageSize::Size2M,
            PteFlags::GLOBAL,
        )
        .unwrap();
    kernel
        .map(
            &mut mem,
            0xffff_8000_0000_0000,
            0,
            PageSize::Size1G,
            PteFlags::WRITABLE,
        )
        .unwrap();
    let pt = PageTable::create_with_kernel_half(&mut mem, &kernel).unwrap();
    let before: Vec<u64> = mem.table(pt.root())[KERNEL_PML4_START..].to_vec();
    assert_eq!(&before[..], &mem.table(kernel.root())[KERNEL_PML4_START..]);
    let snapshot: Vec<Vec<u64>> = mem.tables.iter().map(|t| t.to_vec()).collect();

    for i in 0..600u64 {
        let va = (i * 0x1357) << 12 & (USER_HALF_END - 1);
        let _ = pt.map(&mut mem, va & !0xfff, 0x1000 * i, PageSize::Size4K, urw());
    }
    pt.map(&mut mem, 0x7fff_ffff_f000, 0x1000, PageSize::Size4K, urw())
        .unwrap();
    assert_eq!(&mem.table(pt.root())[KERNEL_PML4_START..], &before[..]);
    // Every table that existed before (the kernel's) is byte-identical,
    // except the new root's user half.
    for (i, old) in snapshot.iter().enumerate() {
        if FAKE_BASE + i as u64 * PAGE_SIZE != pt.root() {
            assert_eq!(&mem.tables[i][..], &old[..], "table {i} changed");
        }
    }
    assert_eq!(
        pt.translate(&mut mem, 0xffff_ffff_8000_1234).map(|t| t.0),
        Some(0x20_1234)
    );
}

#[test]
fn clearing_the_user_half_reports_every_page_and_frees_every_table() {
    let mut mem = FakeMem::new(10_000);
    let kernel = PageTable::create(&mut mem).unwrap();
    kernel
        .map(
            &mut mem,
            0xffff_ffff_8000_0000,
            0,
            PageSize::Size2M,
            PteFlags::empty(),
        )
        .unwrap();
    let kernel_tables = mem.live_tables();
    let pt = PageTable::create_with_kernel_half(&mut mem, &kernel).unwrap();
    let mut expected = HashSet::new();
    for (va, pa, size) in [
        (0x1000, 0x1000, PageSize::Size4K),
        (0x2000, 0x9000, PageSize::Size4K),
        (0x20_0000, 0x40_0000, PageSize::Size2M),
        (0x4000_0000, 0x4000_0000, PageSize::Size1G),
        (0x7fff_ffff_f000, 0x3000, PageSize::Size4K),
    ] {
        pt.map(&mut mem, va, pa, size, urw()).unwrap();
        expected.insert((va, pa, size));
    }
    pt.unmap(&mut mem, 0x2000).unwrap();
    expected.remove(&(0x2000, 0x9000, PageSize::Size4K));

    let mut seen = HashSet::new();
    pt.clear_user_half(&mut mem, |va, pa, size, _| {
        assert!(seen.insert((va, pa, size)));
    });
    assert_eq!(seen, expected);
    assert_eq!(mem.live_tables(), kernel_tables + 1); // + the new root
    assert!(mem.table(pt.root())[..KERNEL_PML4_START]
        .iter()
        .all(|e| *e == 0));
    assert!(pt.translate(&mut mem, 0xffff_ffff_8000_0000).is_some());
}

#[test]
fn map_error_descriptions_are_distinct() {
    let all = MapError::ALL;
    let set: HashSet<_> = all.iter().map(|e| e.to_string()).collect();
    assert_eq!(set.len(), all.len());
}

// ---- range operations ------------------------------------------------------

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
    assert_eq!(mem.reads(), KERNEL_PML4_START);
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

/// A seeded xorshift64* generator (no dependencies, reproducible).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A table index biased to the edges and to a few shared values, so
    /// random addresses share tables and hit table boundaries.
    fn index(&mut self, max: u64) -> u64 {
        match self.below(6) {
            0 => 0,
            1 => 1,
            2 => max - 1,
            3 => max - 2,
            4 => self.below(4),
            _ => self.below(max),
        }
    }

    /// A page-aligned user address built from biased table indices.
    fn va(&mut self) -> u64 {
        (self.index(KERNEL_PML4_START as u64) << 39)
            | (self.index(512) << 30)
            | (self.index(512) << 21)
            | (self.index(512) << 12)
    }
}

/// Every leaf of `pt` in address order (va, pa, size, flags), by an
/// unbounded check-free walk that changes nothing.
fn leaves(mem: &mut FakeMem, pt: &PageTable) -> Vec<(u64, u64, PageSize, u64)> {
    let mut out = Vec::new();
    fn rec(
        mem: &mut FakeMem,
        table: u64,
        level: usize,
        base: u64,
        out: &mut Vec<(u64, u64, PageSize, u64)>,
    ) {
        let top = if level == 4 {
            KERNEL_PML4_START
        } else {
            ENTRIES
        };
        for i in 0..top {
            let e = mem.table(table)[i];
            if e & PteFlags::PRESENT.bits() == 0 {
                continue;
            }
            let va = base | ((i as u64) << (12 + 9 * (level - 1)));
            if level == 1 || (level < 4 && e & PteFlags::HUGE.bits() != 0) {
                let size = PageSize::from_level(level);
                out.push((va, leaf_addr(e, size), size, e & !PHYS_ADDR_MASK));
            } else {
                rec(mem, entry_addr(e), level - 1, va, out);
            }
        }
    }
    rec(mem, pt.root(), 4, 0, &mut out);
    out
}

/// Builds the same random sparse space twice (4 KiB pages mostly, some
/// 2 MiB and 1 GiB ones); returns both and the leaves mapped.
fn random_spaces(rng: &mut Rng) -> [(FakeMem, PageTable); 2] {
    let n = 1 + rng.below(60);
    let mut wanted = Vec::new();
    for i in 0..n {
        let va = rng.va();
        let size = match rng.below(20) {
            0 => PageSize::Size1G,
            1 | 2 => PageSize::Size2M,
            _ => PageSize::Size4K,
        };
        let va = va & !(size.bytes() - 1);
        let pa = (i + 1) * (1 << 30);
        // A software bit on some leaves, to see it reported and kept.
        let flags = if rng.below(4) == 0 {
            urw() | PteFlags::BORROWED
        } else {
            urw()
        };
        wanted.push((va, pa, size, flags));
    }
    let build = || {
        let mut mem = FakeMem::new(100_000);
        let pt = PageTable::create(&mut mem).unwrap();
        for &(va, pa, size, flags) in &wanted {
            let _ = pt.map(&mut mem, va, pa, size, flags); // overlaps refused alike
        }
        (mem, pt)
    };
    [build(), build()]
}

/// A random range `[start, end)` inside the user half.
fn random_range(rng: &mut Rng) -> (u64, u64) {
    let start = match rng.below(5) {
        0 => 0,
        _ => rng.va(),
    };
    let len = match rng.below(5) {
        0 => (1 + rng.below(4)) << 21,
        1 => (1 + rng.below(3)) << 30,
        2 => USER_HALF_END,
        _ => (1 + rng.below(2000)) * PAGE_SIZE,
    };
    (start, start.saturating_add(len).min(USER_HALF_END))
}

type Leaf4 = (u64, u64, PageSize, PteFlags);

/// Runs `op` from `start` until done, each round with a fresh random budget
/// (and `op` may pause on its own); asserts strict progress.
fn resumed(
    rng: &mut Rng,
    start: u64,
    end: u64,
    mut op: impl FnMut(u64, &mut usize, &mut Rng) -> Result<Option<u64>, MapError>,
) -> Result<(), MapError> {
    let mut at = start;
    for _ in 0..1_000_000 {
        let mut budget = match rng.below(4) {
            0 => 1,
            1 => 1 + rng.below(8) as usize,
            2 => 1 + rng.below(600) as usize,
            _ => usize::MAX,
        };
        match op(at, &mut budget, rng)? {
            None => return Ok(()),
            Some(resume) => {
                assert!(
                    resume > at && resume < end,
                    "no progress at {at:#x} ({resume:#x})"
                );
                at = resume;
            }
        }
    }
    panic!("a resumed walk never ended");
}

/// Property: for random sparse spaces, random ranges and random budgets
/// (and random pauses by the leaf callback), a walk resumed chunk by chunk
/// reports the same leaves, returns the same result and leaves the same
/// tables as one unbounded walk; and both agree with a plain model (the list
/// of leaves).
#[test]
fn resumed_walks_equal_one_unbounded_walk_on_random_spaces() {
    let seeds = std::env::var("PAGING_PROP_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500u64);
    for seed in 1..=seeds {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let [(mut ma, pa), (mut mb, pb)] = random_spaces(&mut rng);
        let model = leaves(&mut ma, &pa);
        let (s, e) = random_range(&mut rng);
        let ctx = format!("seed {seed}: range {s:#x}..{e:#x}");
        // The model: leaves wholly inside, and whether one straddles an edge.
        let inside: Vec<_> = model
            .iter()
            .filter(|l| l.0 >= s && l.0 + l.2.bytes() <= e)
            .collect();
        let straddle = model
            .iter()
            .find(|l| l.0 < e && l.0 + l.2.bytes() > s && (l.0 < s || l.0 + l.2.bytes() > e));
        match rng.below(3) {
            0 => {
                // unmap_range
                let mut one: Vec<Leaf4> = Vec::new();
                let mut budget = usize::MAX;
                let r1 = pa
                    .unmap_range(&mut ma, s, e, &mut budget, |va, p, z, f| {
                        one.push((va, p, z, f));
                        true
                    })
                    .map(|_| ());
                let mut many: Vec<Leaf4> = Vec::new();
                let r2 = resumed(&mut rng, s, e, |at, b, rng| {
                    let pause = rng.below(3) == 0;
                    pb.unmap_range(&mut mb, at, e, b, |va, p, z, f| {
                        many.push((va, p, z, f));
                        !(pause && rng.below(3) == 0)
                    })
                });
                assert_eq!(r1, r2, "{ctx}");
                assert_eq!(one, many, "{ctx}");
                if straddle.is_none() {
                    assert_eq!(r1, Ok(()), "{ctx}");
                    let want: Vec<_> = inside
                        .iter()
                        .map(|l| (l.0, l.1, l.2, PteFlags::from_bits_truncate(l.3)))
                        .collect();
                    assert_eq!(one, want, "{ctx}");
                } else {
                    assert_eq!(r1, Err(MapError::Misaligned), "{ctx}");
                }
            }
            1 => {
                // protect_range
                let flags = PteFlags::USER;
                let mut budget = usize::MAX;
                let r1 = pa
                    .protect_range(&mut ma, s, e, &mut budget, flags)
                    .map(|_| ());
                let r2 = resumed(&mut rng, s, e, |at, b, _| {
                    pb.protect_range(&mut mb, at, e, b, flags)
                });
                assert_eq!(r1, r2, "{ctx}");
                assert_eq!(r1.is_ok(), straddle.is_none(), "{ctx}");
            }
            _ => {
                // check_mapped: Ok exactly when the leaves inside cover the
                // range without a hole (and nothing straddles).
                let refuse_borrowed = rng.below(2) == 0;
                let ok = |_: u64, f: PteFlags| {
                    if refuse_borrowed && f.contains(PteFlags::BORROWED) {
                        Err(MapError::InvalidPhysAddr)
                    } else {
                        Ok(())
                    }
                };
                let mut budget = usize::MAX;
                let r1 = pa.check_mapped(&mut ma, s, e, &mut budget, ok).map(|_| ());
                let r2 = resumed(&mut rng, s, e, |at, b, _| {
                    pb.check_mapped(&mut mb, at, e, b, ok)
                });
                assert_eq!(r1, r2, "{ctx}");
                if straddle.is_none() {
                    let mut next = s;
                    let mut want = Ok(());
                    for l in &inside {
                        if l.0 > next {
                            want = Err(MapError::NotMapped);
                            break;
                        }
                        if refuse_borrowed && l.3 & PteFlags::BORROWED.bits() != 0 {
                            want = Err(MapError::InvalidPhysAddr);
                            break;
                        }
                        next = l.0 + l.2.bytes();
                    }
                    if want.is_ok() && next < e {
                        want = Err(MapError::NotMapped);
                    }
                    assert_eq!(r1, want, "{ctx}");
                }
            }
        }
        // Both tables end identical.
        assert_eq!(leaves(&mut ma, &pa), leaves(&mut mb, &pb), "{ctx}");
    }
}

/// Property: tearing a random space down in chunks (random budgets, random
/// pauses, freeing what each chunk detached before the next starts) reports
/// every leaf once, in order, and every table below the root once, never
/// touches a table after it was reported, and leaves the user half empty.
#[test]
fn a_chunked_teardown_frees_every_leaf_and_table_once() {
    let seeds = std::env::var("PAGING_PROP_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500u64);
    for seed in 1..=seeds {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let [(mut mem, pt), _] = random_spaces(&mut rng);
        let model = leaves(&mut mem, &pt);
        let tables_below_root = mem.live_tables() - 1;
        let mut seen = Vec::new();
        let mut tables = 0;
        let mut at = 0;
        let mut rounds = 0;
        loop {
            let mut budget = match rng.below(4) {
                0 => 1,
                1 => 1 + rng.below(8) as usize,
                2 => 1 + rng.below(600) as usize,
                _ => usize::MAX,
            };
            let pause = rng.below(3) == 0;
            let mut detached = Vec::new();
            // Reports after the callback asked to pause: at most three, all
            // tables (the contract a fixed-size caller relies on).
            let mut after_pause: Option<usize> = None;
            let r = pt.teardown_user(&mut mem, at, &mut budget, &mut |fr| {
                if let Some(k) = after_pause.as_mut() {
                    *k += 1;
                    assert!(*k <= 3, "seed {seed}: a fourth report after a pause");
                    assert!(
                        matches!(fr, Freed::Table(_)),
                        "seed {seed}: a leaf after a pause"
                    );
                }
                match fr {
                    Freed::Leaf(va, pa, size, f) => seen.push((va, pa, size, f.bits())),
                    Freed::Table(t) => detached.push(t),
                }
                let go_on = !(pause && rng.below(3) == 0);
                if !go_on && after_pause.is_none() {
                    after_pause = Some(0);
                }
                go_on
            });
            tables += detached.len();
            for t in detached {
                mem.free_table(t); // a later access would panic (use after free)
            }
            rounds += 1;
            assert!(rounds < 1_000_000, "seed {seed}: never ends");
            match r {
                None => break,
                Some(resume) => {
                    assert!(
                        resume > at || (resume == at && at == 0 && rounds == 1),
                        "seed {seed}: no progress at {at:#x}"
                    );
                    at = resume;
                }
            }
        }
        let want: Vec<_> = model.iter().map(|l| (l.0, l.1, l.2, l.3 & 0xfff)).collect();
        let got: Vec<_> = seen.iter().map(|l| (l.0, l.1, l.2, l.3 & 0xfff)).collect();
        assert_eq!(got, want, "seed {seed}: leaves");
        assert_eq!(tables, tables_below_root, "seed {seed}: tables");
        assert_eq!(mem.live_tables(), 1, "seed {seed}: only the root is left");
        assert!(leaves(&mut mem, &pt).is_empty(), "seed {seed}");
    }
}
