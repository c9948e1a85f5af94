//! Host tests of the per-table present-entry counts (forkk, session 19):
//! every writer keeps them exact, and walks use them to skip empty tables.

use super::*;

/// A seeded xorshift64* generator.
struct Rng(abi::rng::XorShift64Star);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0.next_u64() % n
    }

    fn pick(&mut self, from: &[u64]) -> u64 {
        from[self.below(from.len() as u64) as usize]
    }

    /// A user address from a few indices per level, so tables fill, share
    /// and empty often (including the root's last user entry).
    fn va(&mut self) -> u64 {
        (self.pick(&[0, 1, 255]) << 39)
            | (self.pick(&[0, 1, 511]) << 30)
            | (self.pick(&[0, 1, 511]) << 21)
            | (self.pick(&[0, 1, 2, 511]) << 12)
    }

    fn range(&mut self) -> (u64, u64) {
        let start = match self.below(4) {
            0 => 0,
            _ => self.va(),
        };
        let len = match self.below(4) {
            0 => PAGE_SIZE * (1 + self.below(4)),
            1 => (1 + self.below(3)) << 21,
            2 => (1 + self.below(2)) << 30,
            _ => USER_HALF_END,
        };
        (start, start.saturating_add(len).min(USER_HALF_END))
    }

    fn budget(&mut self) -> usize {
        match self.below(3) {
            0 => 1 + self.below(4) as usize,
            1 => 1 + self.below(600) as usize,
            _ => usize::MAX,
        }
    }
}

/// Asserts that every user-half table's count (in the entry that points
/// at it) equals the number of its present entries; returns how many
/// tables were checked.
fn assert_counts(mem: &mut FakeMem, pt: &PageTable) -> usize {
    fn rec(mem: &mut FakeMem, table: u64, level: usize) -> usize {
        let top = if level == 4 {
            KERNEL_PML4_START
        } else {
            ENTRIES
        };
        let mut checked = 0;
        for i in 0..top {
            let e = mem.table(table)[i];
            let is_table = e & PteFlags::PRESENT.bits() != 0
                && (level == 4 || (level > 1 && e & PteFlags::HUGE.bits() == 0));
            if !is_table {
                continue;
            }
            let child = entry_addr(e);
            let present = mem.table(child)[..]
                .iter()
                .filter(|&&c| c & PteFlags::PRESENT.bits() != 0)
                .count();
            assert_eq!(
                table_count(e),
                present,
                "level-{level} entry {i} counts {} for a table with {present} present entries",
                table_count(e)
            );
            checked += 1 + rec(mem, child, level - 1);
        }
        checked
    }
    rec(mem, pt.root(), 4)
}

/// Frees the tables a pruning unmap or a teardown detached (they are
/// unreachable now: a use after free would panic in `FakeMem`).
fn free_all(mem: &mut FakeMem, tables: Vec<u64>) {
    for t in tables {
        mem.free_table(t);
    }
}

/// Property: random sequences of every operation that writes entries (map,
/// maps that run out of tables and roll back, the clone's cursor map, unmap, range unmaps plain and pruning, protect,
/// edits that keep or clear leaves, single-leaf updates, chunked
/// teardowns), each resumed with random budgets, keep every table's count
/// equal to its number of present entries after every step.
#[test]
fn table_counts_stay_exact_under_random_edits() {
    for seed in 1..=300u64 {
        let mut rng = Rng(abi::rng::XorShift64Star(
            seed.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        ));
        let mut mem = FakeMem::new(1_000_000);
        let pt = PageTable::create(&mut mem).unwrap();
        // The clone's target, mapped through one cursor per "chunk".
        let child = PageTable::create(&mut mem).unwrap();
        let mut cursor = MapCursor::default();
        let mut pa = 1u64 << 30;
        for step in 0..80 {
            match rng.below(10) {
                0 | 1 => {
                    let size = match rng.below(12) {
                        0 => PageSize::Size1G,
                        1 => PageSize::Size2M,
                        _ => PageSize::Size4K,
                    };
                    let va = rng.va() & !(size.bytes() - 1);
                    pa += 1 << 30;
                    // Sometimes short of tables: a map that allocated some
                    // and rolls them back must take their counts back too.
                    let short = rng.below(3) == 0;
                    if short {
                        mem.budget = rng.below(3) as usize;
                    }
                    let _ = pt.map(&mut mem, va, pa, size, urw());
                    mem.budget = 1_000_000;
                }
                2 => {
                    // A clone: every 4 KiB leaf of the source, through the
                    // cursor, into the child; a fresh cursor sometimes.
                    if rng.below(3) == 0 {
                        cursor = MapCursor::default();
                    }
                    let mut budget = usize::MAX;
                    let mut found = Vec::new();
                    pt.edit_range(&mut mem, 0, USER_HALF_END, &mut budget, |va, e, size| {
                        if size == PageSize::Size4K {
                            found.push((va, *e & PHYS_ADDR_MASK));
                        }
                        true
                    })
                    .unwrap();
                    for (va, fa) in found {
                        let _ = child.map_4k_with(&mut mem, &mut cursor, va, fa, urw());
                    }
                }
                3 => {
                    let va = rng.va();
                    let _ = pt.unmap(&mut mem, va);
                    let _ = child.unmap(&mut mem, va);
                    cursor = MapCursor::default();
                }
                4 => {
                    let (s, e) = rng.range();
                    let mut from = s;
                    loop {
                        let mut budget = rng.budget();
                        let pause = rng.below(4) == 0;
                        match pt.unmap_range(&mut mem, from, e, &mut budget, |_, _, _, _| !pause) {
                            Ok(Some(r)) => from = r,
                            Ok(None) | Err(_) => break,
                        }
                        assert_counts(&mut mem, &pt);
                    }
                }
                5 => {
                    let (s, e) = rng.range();
                    let mut from = s;
                    let mut detached = Vec::new();
                    loop {
                        let mut budget = rng.budget();
                        let r = pt.unmap_range_pruning(
                            &mut mem,
                            s,
                            from,
                            e,
                            &mut budget,
                            |_, _, _, _| true,
                            &mut |t| {
                                detached.push(t);
                                true
                            },
                        );
                        assert_counts(&mut mem, &pt);
                        match r {
                            Ok(Some(r)) => from = r,
                            Ok(None) | Err(_) => break,
                        }
                    }
                    free_all(&mut mem, detached);
                }
                6 => {
                    let (s, e) = rng.range();
                    let mut budget = rng.budget();
                    let flags = if rng.below(2) == 0 {
                        urw()
                    } else {
                        PteFlags::USER
                    };
                    let _ = pt.protect_range(&mut mem, s, e, &mut budget, flags);
                }
                7 => {
                    // An edit that clears some leaves (the walk counts them).
                    let (s, e) = rng.range();
                    let mut budget = rng.budget();
                    let mut r = Rng(abi::rng::XorShift64Star((seed * 1000 + step) | 1));
                    let _ = pt.edit_range(&mut mem, s, e, &mut budget, |_, entry, _| {
                        if r.below(2) == 0 {
                            *entry = 0;
                        }
                        true
                    });
                }
                8 => {
                    let va = rng.va();
                    let clear = rng.below(2) == 0;
                    let _ = pt.update_leaf(&mut mem, va, |e, _| {
                        if clear {
                            *e = 0;
                        }
                    });
                }
                _ => {
                    // A chunked teardown of the child (its tables are freed
                    // once it is done; counts checked between chunks).
                    cursor = MapCursor::default();
                    let mut from = 0;
                    let mut detached = Vec::new();
                    loop {
                        let mut budget = rng.budget();
                        let r = child.teardown_user(&mut mem, from, &mut budget, &mut |f| {
                            if let Freed::Table(t) = f {
                                detached.push(t);
                            }
                            true
                        });
                        assert_counts(&mut mem, &child);
                        match r {
                            Some(r) => from = r,
                            None => break,
                        }
                    }
                    free_all(&mut mem, detached);
                }
            }
            assert_counts(&mut mem, &pt);
            assert_counts(&mut mem, &child);
        }
    }
}

/// A space that mapped and unmapped a page in each of a few places keeps
/// empty tables (a page-sized unmap frees none); a walk over the whole
/// user half must skip them by their counts, not scan their entries, and a
/// teardown must detach them without reading them.
#[test]
fn walks_skip_the_tables_their_counts_say_are_empty() {
    let (mut mem, pt) = setup();
    for i in 0..4u64 {
        let va = (i << 39) | (5 << 30) | (7 << 21) | (9 << 12);
        pt.map(&mut mem, va, 0x9000, PageSize::Size4K, urw())
            .unwrap();
        let mut budget = usize::MAX;
        pt.unmap_range(&mut mem, va, va + PAGE_SIZE, &mut budget, |_, _, _, _| true)
            .unwrap();
    }
    // 4 PDPTs, each with one PD with one empty PT.
    assert_eq!(assert_counts(&mut mem, &pt), 12);
    let mut budget = usize::MAX;
    let r = pt.edit_range(&mut mem, 0, USER_HALF_END, &mut budget, |_, _, _| {
        panic!("no leaf is mapped")
    });
    assert_eq!(r, Ok(None));
    // One unit per entry examined: the root's 252 absent entries (the root
    // keeps no count), and in each PDPT 5 absent entries before its PD and
    // one for the rest (its count is met), in each PD 7 absent entries, its
    // empty PT as one and one for the rest: 252 + 4 x 15. Without the
    // count of empty tables the PTs add 4 x 511; without the early stop,
    // the PDPTs' and PDs' rests another 4 x 1,010.
    let walked = 252 + 4 * 15;
    assert_eq!(usize::MAX - budget, walked);
    // Skipped tables cost one unit each, so a small budget still progresses.
    let mut at = 0;
    let mut rounds = 0;
    loop {
        let mut budget = 1;
        match pt.edit_range(&mut mem, at, USER_HALF_END, &mut budget, |_, _, _| true) {
            Ok(Some(r)) => {
                assert!(r > at);
                at = r;
            }
            Ok(None) => break,
            Err(e) => panic!("{e:?}"),
        }
        rounds += 1;
        assert!(rounds < 10_000, "no progress");
    }
    // A teardown detaches every table, the empty PTs without a read.
    let live = mem.live_tables();
    let mut freed = Vec::new();
    let mut budget = usize::MAX;
    let r = pt.teardown_user(&mut mem, 0, &mut budget, &mut |f| {
        match f {
            Freed::Table(t) => freed.push(t),
            Freed::Leaf(..) => panic!("no leaf is mapped"),
        }
        true
    });
    assert_eq!(r, None);
    assert_eq!(freed.len(), 12);
    assert_eq!(usize::MAX - budget, walked);
    free_all(&mut mem, freed);
    assert_eq!(mem.live_tables(), live - 12);
}

/// `absent_run` (blocks of 32, then 8, then single entries) counts exactly
/// the absent entries from `from` up to the first present one or `to`, for
/// every start and end around a present entry at every offset.
#[test]
fn absent_run_counts_up_to_the_first_present_entry() {
    use super::super::range::absent_run;
    let mut t = [0u64; ENTRIES];
    for present in [
        None,
        Some(0),
        Some(1),
        Some(7),
        Some(8),
        Some(31),
        Some(32),
        Some(33),
        Some(100),
        Some(511),
    ] {
        t.fill(0);
        if let Some(p) = present {
            t[p] = PteFlags::PRESENT.bits() | 0x5000;
        }
        // Non-present junk (software bits) must not stop a run.
        t[300] |= PteFlags::WRITABLE.bits();
        for from in 0..ENTRIES {
            if t[from] & PteFlags::PRESENT.bits() != 0 {
                continue;
            }
            for to in [from + 1, from + 9, from + 33, from + 64, ENTRIES] {
                let to = to.min(ENTRIES);
                let want = t[from..to]
                    .iter()
                    .take_while(|&&e| e & PteFlags::PRESENT.bits() == 0)
                    .count();
                assert_eq!(
                    absent_run(&t, from, to),
                    want,
                    "present {present:?} from {from} to {to}"
                );
            }
        }
    }
}
