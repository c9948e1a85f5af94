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
        // (The table count lives in the same entry: masked off.)
        assert_eq!(e & !PHYS_ADDR_MASK & !COUNT_MASK, want, "level {level}");
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
    let pml4e = mem.table(pt.root())[0] & !COUNT_MASK;
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

mod counts;
mod random;
mod range;

/// forkperf2: a cursor maps exactly what `map` maps (same leaves, same
/// tables, same intermediate flags), across 2 MiB and 1 GiB boundaries, and
/// reads one table per page inside a region.
#[test]
fn a_map_cursor_maps_what_map_maps_with_one_table_access_a_page() {
    let (mut a, pa_t) = setup();
    let (mut b, pb_t) = setup();
    let mut cur = MapCursor::default();
    // Pages around a 2 MiB and a 1 GiB boundary, in address order, then a
    // jump back to an earlier region.
    let mut vas: Vec<u64> = (0..40u64)
        .map(|i| 0x3fe0_0000 - 20 * 4096 + i * 4096)
        .collect();
    vas.extend((0..5u64).map(|i| 0x7f00_0000_0000 + i * 4096));
    vas.push(0x3fe0_0000 + 100 * 4096);
    for (i, &va) in vas.iter().enumerate() {
        let flags = if i % 3 == 0 { urw() } else { PteFlags::USER };
        pa_t.map(
            &mut a,
            va,
            0x10_0000 + i as u64 * 4096,
            PageSize::Size4K,
            flags,
        )
        .unwrap();
        pb_t.map_4k_with(&mut b, &mut cur, va, 0x10_0000 + i as u64 * 4096, flags)
            .unwrap();
    }
    assert_eq!(a.live_tables(), b.live_tables());
    assert_eq!(a.tables, b.tables, "the cursor built different tables");
    // Inside one region: one table access per page.
    let va = 0x3fe0_0000 + 200 * 4096;
    pb_t.map_4k_with(&mut b, &mut cur, va, 0x9000, urw())
        .unwrap();
    b.reads.set(0);
    pb_t.map_4k_with(&mut b, &mut cur, va + 4096, 0xa000, urw())
        .unwrap();
    // The page table, and the PD entry that keeps its count.
    assert_eq!(b.reads(), 2);
    // Occupied: refused, nothing changed; misaligned and oversized too.
    let before = b.tables.clone();
    assert_eq!(
        pb_t.map_4k_with(&mut b, &mut cur, va, 0xb000, urw()),
        Err(MapError::AlreadyMapped)
    );
    assert_eq!(
        pb_t.map_4k_with(&mut b, &mut cur, va + 2 * 4096, 0xb001, urw()),
        Err(MapError::Misaligned)
    );
    assert_eq!(
        pb_t.map_4k_with(&mut b, &mut cur, va + 2 * 4096, 1 << 52, urw()),
        Err(MapError::InvalidPhysAddr)
    );
    assert_eq!(b.tables, before);
}

/// forkperf2: a cursor whose path was built for a kernel page walks again
/// (and upgrades the intermediate entries) for a user page in the same
/// 2 MiB, as `map` does.
#[test]
fn a_map_cursor_upgrades_the_path_for_a_user_page() {
    let (mut mem, pt) = setup();
    let mut cur = MapCursor::default();
    pt.map_4k_with(&mut mem, &mut cur, 0x20_0000, 0x9000, PteFlags::WRITABLE)
        .unwrap();
    pt.map_4k_with(&mut mem, &mut cur, 0x20_1000, 0xa000, PteFlags::USER)
        .unwrap();
    let (_, flags, _) = pt.translate(&mut mem, 0x20_1000).unwrap();
    assert!(flags.contains(PteFlags::USER), "the path was not upgraded");
}
