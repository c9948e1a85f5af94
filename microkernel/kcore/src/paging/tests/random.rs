//! Randomised host tests of the range operations: resumed walks over random
//! spaces equal one unbounded walk; chunked teardowns free everything once.

use super::*;

/// A seeded xorshift64* generator (no dependencies, reproducible).
struct Rng(abi::rng::XorShift64Star);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
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
        let mut rng = Rng(abi::rng::XorShift64Star(
            seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
        ));
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
        let mut rng = Rng(abi::rng::XorShift64Star(
            seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
        ));
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
