//! The range operations of [`PageTable`]: walks over `[start, end)` that
//! cost what is mapped, pause on a budget and resume (unmap, protect, check,
//! edit), the single-leaf editor, and the two user-half teardowns. The
//! walk's rules are the module's (see `paging`'s "Design choices").

use super::{
    bump, entry_addr, entry_flags, intermediate_flags, leaf_addr, reflag, table_count, MapError,
    PageSize, PageTable, PhysMem, PteFlags, ENTRIES, KERNEL_PML4_START, USER_HALF_END,
};

impl PageTable {
    /// Removes every leaf in `[start, end)` (holes are skipped), reporting
    /// each as `f(va, pa, size, flags)` (the leaf's own flags, software bits
    /// included); `f` returns false to pause right after that
    /// leaf (e.g. when the caller's buffer of frames to free is full).
    /// Examines at most `*budget` entries.
    ///
    /// Returns `Ok(None)` when the whole range is done, or `Ok(Some(resume))`
    /// when it paused: everything below `resume` is done, call again from
    /// `resume`. Like [`unmap`](Self::unmap) it frees no frame or table and
    /// flushes nothing.
    ///
    /// # Errors
    /// [`MapError::NonCanonical`] if the range leaves the user half,
    /// [`MapError::Misaligned`] if a large page straddles `start` or `end`
    /// (leaves before it are already removed: this does not roll back).
    pub fn unmap_range<M: PhysMem + ?Sized>(
        &self,
        mem: &mut M,
        start: u64,
        end: u64,
        budget: &mut usize,
        mut f: impl FnMut(u64, u64, PageSize, PteFlags) -> bool,
    ) -> Result<Option<u64>, MapError> {
        self.range_walk(mem, start, end, budget, 0, &mut |m, t, i, va, size| {
            let entry = m.table(t)[i];
            m.table(t)[i] = 0;
            f(va, leaf_addr(entry, size), size, entry_flags(entry))
        })
    }

    /// As [`unmap_range`](Self::unmap_range), and also detaches every table
    /// below the root whose whole span lies inside `[origin, end)` once the
    /// walk is past its last entry: it is empty then (this walk removed
    /// every leaf of it at or above `start`, and earlier calls of the same
    /// unmap removed those in `[origin, start)`). Each detached table is
    /// reported as `t(pa)`, which returns false to pause right after it. As
    /// with [`teardown_user`](Self::teardown_user), **up to three more table
    /// reports may follow a `false`** from `f` or `t` in the same call (a
    /// PT, its PD, its PDPT), so a caller collecting into a fixed buffer
    /// pauses with three slots to spare. A table only partly inside the
    /// range stays even if it ends up empty (finding out would cost a scan
    /// of its 512 entries; it goes with the space).
    ///
    /// **Precondition:** `origin <= start`, and the first call of an unmap
    /// passes `start == origin`, later ones the returned resume point with
    /// nobody mapping into the range in between. Nothing is freed or
    /// flushed here: the caller frees the tables once no CPU can reach them
    /// (a full TLB flush of every CPU that has the space loaded, since
    /// detached tables may sit in paging-structure caches).
    ///
    /// # Errors
    /// As [`unmap_range`](Self::unmap_range).
    #[allow(clippy::too_many_arguments)] // unmap_range's, plus the pruning pair
    pub fn unmap_range_pruning<M: PhysMem + ?Sized>(
        &self,
        mem: &mut M,
        origin: u64,
        start: u64,
        end: u64,
        budget: &mut usize,
        mut f: impl FnMut(u64, u64, PageSize, PteFlags) -> bool,
        t: &mut dyn FnMut(u64) -> bool,
    ) -> Result<Option<u64>, MapError> {
        if start >= end {
            return Ok(None);
        }
        if end > USER_HALF_END || origin > start {
            return Err(MapError::NonCanonical);
        }
        let mut prune = Prune { origin, report: t };
        let r = walk_table(
            mem,
            self.root,
            None,
            4,
            0,
            start,
            end,
            budget,
            0,
            &mut |m, t, i, va, size| {
                let entry = m.table(t)[i];
                m.table(t)[i] = 0;
                f(va, leaf_addr(entry, size), size, entry_flags(entry))
            },
            Some(&mut prune),
        )?;
        Ok(r.filter(|&resume| resume < end))
    }

    /// Replaces the flags of every leaf in `[start, end)` as
    /// [`protect`](Self::protect) does (software bits such as
    /// [`PteFlags::BORROWED`] are kept); holes are skipped. Budget and result
    /// as in [`unmap_range`](Self::unmap_range). The TLB is not flushed.
    ///
    /// # Errors
    /// As [`unmap_range`](Self::unmap_range).
    pub fn protect_range<M: PhysMem + ?Sized>(
        &self,
        mem: &mut M,
        start: u64,
        end: u64,
        budget: &mut usize,
        flags: PteFlags,
    ) -> Result<Option<u64>, MapError> {
        let inter = intermediate_flags(flags);
        self.range_walk(mem, start, end, budget, inter, &mut |m, t, i, _, size| {
            let entry = m.table(t)[i];
            m.table(t)[i] = reflag(entry, flags, size);
            true
        })
    }

    /// Checks, without changing anything, that every page of `[start, end)`
    /// is mapped and that `ok(va, leaf_flags)` holds for every leaf. Budget
    /// and result as in [`unmap_range`](Self::unmap_range).
    ///
    /// # Errors
    /// [`MapError::NotMapped`] at the first hole, `Err(e)` where `ok` returns
    /// `Err(e)`, [`MapError::NonCanonical`], [`MapError::Misaligned`].
    pub fn check_mapped<M: PhysMem + ?Sized>(
        &self,
        mem: &mut M,
        start: u64,
        end: u64,
        budget: &mut usize,
        mut ok: impl FnMut(u64, PteFlags) -> Result<(), MapError>,
    ) -> Result<Option<u64>, MapError> {
        // Leaves come in address order: a leaf that does not start where the
        // previous one ended (or a pause point beyond it) reveals a hole.
        let mut next = start;
        let mut verdict = Ok(());
        let r = self.range_walk(mem, start, end, budget, 0, &mut |m, t, i, va, size| {
            let check = if va > next {
                Err(MapError::NotMapped)
            } else {
                ok(va, entry_flags(m.table(t)[i]))
            };
            next = va + size.bytes();
            verdict = check;
            verdict.is_ok()
        });
        let r = match r {
            // A large page straddling `end` is found only when the walk gets
            // there, but a hole before it is the first problem in address
            // order, and a walk paused between the two reports the hole:
            // report it here too, so the result does not depend on the
            // budget (host test `resumed_walks_equal_one_unbounded_walk_...`).
            Err(MapError::Misaligned) if verdict.is_ok() => {
                let at_start = self
                    .find_leaf(mem, start)
                    .is_ok_and(|l| start & (l.size.bytes() - 1) != 0);
                if !at_start {
                    if let Ok(leaf) = self.find_leaf(mem, end - 1) {
                        let lva = (end - 1) & !(leaf.size.bytes() - 1);
                        if lva > start && next < lva {
                            return Err(MapError::NotMapped);
                        }
                    }
                }
                return Err(MapError::Misaligned);
            }
            r => r?,
        };
        verdict?;
        let covered_to = r.unwrap_or(end);
        if next < covered_to {
            return Err(MapError::NotMapped);
        }
        Ok(r)
    }

    /// Runs `f` on the leaf entry that maps `va` (any page size), letting it
    /// rewrite the entry in place; returns what `f` returns. The caller keeps
    /// the module's leaf invariants (address aligned) and flushes; an entry
    /// `f` leaves absent is counted as removed.
    ///
    /// # Errors
    /// [`MapError::NonCanonical`], [`MapError::NotMapped`].
    pub fn update_leaf<M: PhysMem + ?Sized, R>(
        &self,
        mem: &mut M,
        va: u64,
        f: impl FnOnce(&mut u64, PageSize) -> R,
    ) -> Result<R, MapError> {
        let leaf = self.find_leaf(mem, va)?;
        let r = f(&mut mem.table(leaf.table)[leaf.index], leaf.size);
        if mem.table(leaf.table)[leaf.index] & PteFlags::PRESENT.bits() == 0 {
            self.bump_counted(mem, leaf.path[leaf.depth - 1], -1);
        }
        Ok(r)
    }

    /// Calls `f(va, entry, size)` on every leaf of `[start, end)` in address
    /// order with the entry to rewrite in place (holes are skipped); `f`
    /// returns false to pause right after that leaf. Budget and result as in
    /// [`unmap_range`](Self::unmap_range). The caller keeps the leaf
    /// invariants and flushes; an entry `f` leaves absent is counted as
    /// removed.
    ///
    /// # Errors
    /// As [`unmap_range`](Self::unmap_range).
    pub fn edit_range<M: PhysMem + ?Sized>(
        &self,
        mem: &mut M,
        start: u64,
        end: u64,
        budget: &mut usize,
        mut f: impl FnMut(u64, &mut u64, PageSize) -> bool,
    ) -> Result<Option<u64>, MapError> {
        self.range_walk(mem, start, end, budget, 0, &mut |m, t, i, va, size| {
            f(va, &mut m.table(t)[i], size)
        })
    }

    /// Walks the leaves of `[start, end)` in address order, skipping absent
    /// upper-level entries whole; `upgrade` bits are OR-ed into every
    /// intermediate entry it descends through. See [`unmap_range`](Self::unmap_range).
    fn range_walk<M: PhysMem + ?Sized>(
        &self,
        mem: &mut M,
        start: u64,
        end: u64,
        budget: &mut usize,
        upgrade: u64,
        f: &mut dyn FnMut(&mut M, u64, usize, u64, PageSize) -> bool,
    ) -> Result<Option<u64>, MapError> {
        if start >= end {
            return Ok(None);
        }
        if end > USER_HALF_END {
            return Err(MapError::NonCanonical);
        }
        let r = walk_table(
            mem, self.root, None, 4, 0, start, end, budget, upgrade, f, None,
        )?;
        Ok(r.filter(|&resume| resume < end))
    }

    /// Tears down the user half (PML4 entries 0..256): calls
    /// `f(va, pa, size)` for every mapped page (so the caller can free or
    /// unreference the frame), then frees every table below the PML4 and
    /// clears those PML4 entries. The kernel half and the root itself are
    /// left alone (free the root with `free_table(root())` once the address
    /// space is no longer loaded on any CPU).
    pub fn clear_user_half<M: PhysMem + ?Sized>(
        &self,
        mem: &mut M,
        mut f: impl FnMut(u64, u64, PageSize, PteFlags),
    ) {
        for index in 0..KERNEL_PML4_START {
            let entry = mem.table(self.root)[index];
            if entry & PteFlags::PRESENT.bits() == 0 {
                continue;
            }
            let child = entry_addr(entry);
            clear_subtree(mem, child, 3, (index as u64) << 39, &mut f);
            mem.table(self.root)[index] = 0;
            mem.free_table(child);
        }
    }

    /// Tears the user half down in bounded steps, for a space that no thread
    /// will run again: removes every leaf at or above `start` and detaches
    /// every table below the root whose span lies at or above `start` once it
    /// is empty. Each is reported as `f(Freed)`, which returns false to pause
    /// right after it — except that a pause right after the last entry of a
    /// table still detaches and reports that table, and so on up: **up to
    /// three more [`Freed::Table`] reports may follow a `false`** in the same
    /// call (a PT, its PD, its PDPT), so a caller collecting into a fixed
    /// buffer pauses with three slots to spare. Nothing is freed here: the caller frees leaf frames
    /// and table frames once no CPU can reach them (a full TLB flush of every
    /// CPU that has the space loaded: detached tables may sit in
    /// paging-structure caches).
    ///
    /// **Precondition:** everything below `start` is already gone (the first
    /// call passes 0, later calls the returned resume point) and nobody else
    /// edits the tables meanwhile. Budget as in
    /// [`unmap_range`](Self::unmap_range) (absent entries and leaves cost one
    /// each). Returns `None` once the user half is empty (then
    /// [`clear_user_half`](Self::clear_user_half) has nothing left to do), or
    /// where to resume.
    pub fn teardown_user<M: PhysMem + ?Sized>(
        &self,
        mem: &mut M,
        start: u64,
        budget: &mut usize,
        f: &mut dyn FnMut(Freed) -> bool,
    ) -> Option<u64> {
        if start >= USER_HALF_END {
            return None;
        }
        teardown_table(mem, self.root, None, 4, 0, start, budget, f).filter(|&r| r < USER_HALF_END)
    }
}

/// What [`PageTable::unmap_range_pruning`] adds to a walk: detach tables
/// whose whole span lies in `[origin, end)` once passed, reporting them.
struct Prune<'a> {
    origin: u64,
    report: &'a mut dyn FnMut(u64) -> bool,
}

/// One table of a range walk (see [`PageTable::range_walk`]): examines the
/// entries of the level-`level` table at `table` (mapping from `base`) that
/// overlap `[start, end)`, one unit of `budget` each; `parent` is the entry
/// that points at `table` (`None` for the root), whose count the walk keeps
/// as `f` clears leaves and pruning detaches tables. A table whose count
/// is 0 is not descended into: it costs one unit, like an absent entry;
/// and once a walk from a table's first entry has met as many present
/// entries as its count, the rest of the table costs one unit.
/// Returns where to resume if the budget ran out or `f` asked to pause.
#[allow(clippy::too_many_arguments)] // the walk's state, threaded through the recursion
fn walk_table<M: PhysMem + ?Sized>(
    mem: &mut M,
    table: u64,
    parent: Option<(u64, usize)>,
    level: usize,
    base: u64,
    start: u64,
    end: u64,
    budget: &mut usize,
    upgrade: u64,
    f: &mut dyn FnMut(&mut M, u64, usize, u64, PageSize) -> bool,
    mut prune: Option<&mut Prune<'_>>,
) -> Result<Option<u64>, MapError> {
    let shift = 12 + 9 * (level - 1);
    let span = 1u64 << shift;
    let first = if start > base {
        ((start - base) >> shift) as usize
    } else {
        0
    };
    // Entries whose span starts below `end` (`base < end`: a parent
    // descends only into entries that start below it).
    let limit = if end - base >= span << 9 {
        ENTRIES
    } else {
        (end - base).div_ceil(span) as usize
    };
    let mut unseen = unseen_present(mem, parent, first);
    let mut index = first;
    while index < limit {
        let va = base + ((index as u64) << shift);
        if unseen == 0 {
            // Every present entry is behind: the rest is absent, one unit
            // for the lot.
            if *budget == 0 {
                return Ok(Some(va.max(start)));
            }
            *budget -= 1;
            break;
        }
        let entry = mem.table(table)[index];
        if entry & PteFlags::PRESENT.bits() == 0 {
            // A run of absent entries in one tight scan (most entries of a
            // sparse space's tables), still one unit each.
            if *budget == 0 {
                return Ok(Some(va.max(start)));
            }
            let n = absent_run(
                mem.table(table),
                index,
                limit.min(index.saturating_add(*budget)),
            );
            *budget -= n;
            index += n;
            continue;
        }
        let is_table = entry & PteFlags::PRESENT.bits() != 0
            && level > 1
            && (level == 4 || entry & PteFlags::HUGE.bits() == 0);
        unseen = unseen.saturating_sub(1);
        let empty = is_table && table_count(entry) == 0;
        // Absent entries, empty tables and leaves cost one unit each;
        // descending into a table is free (its entries pay), so every unit
        // spent is progress and a walk resumed with any budget > 0 moves
        // forward.
        if !is_table || empty {
            if *budget == 0 {
                return Ok(Some(va.max(start)));
            }
            *budget -= 1;
        }
        if !is_table {
            if va < start || va + span > end {
                return Err(MapError::Misaligned);
            }
            let go_on = f(mem, table, index, va, PageSize::from_level(level));
            if mem.table(table)[index] & PteFlags::PRESENT.bits() == 0 {
                // `f` removed the leaf (a leaf is never under the root).
                if let Some((pt, pi)) = parent {
                    bump(mem, pt, pi, -1);
                }
            }
            if !go_on {
                return Ok(Some(va + span));
            }
        } else if empty {
            // Nothing below to walk; the pruning rule still applies.
            if let Some(p) = prune.as_deref_mut() {
                if va >= p.origin && va + span <= end {
                    mem.table(table)[index] = 0;
                    if let Some((pt, pi)) = parent {
                        bump(mem, pt, pi, -1);
                    }
                    if !(p.report)(entry_addr(entry)) {
                        return Ok(Some(va + span));
                    }
                }
            }
        } else {
            if upgrade != 0 && entry & upgrade != upgrade {
                mem.table(table)[index] = entry | upgrade;
            }
            let child = entry_addr(entry);
            let r = walk_table(
                mem,
                child,
                Some((table, index)),
                level - 1,
                va,
                start,
                end,
                budget,
                upgrade,
                f,
                prune.as_deref_mut(),
            )?;
            // Past the child's last entry (finished, or paused right after
            // it: a resumed walk starts beyond it and would never see it
            // again) with its whole span in the pruned range: it is empty.
            let passed = r.is_none_or(|resume| resume >= va + span);
            if let Some(p) = prune.as_deref_mut() {
                if passed && va >= p.origin && va + span <= end {
                    debug_assert_eq!(table_count(mem.table(table)[index]), 0);
                    mem.table(table)[index] = 0;
                    if let Some((pt, pi)) = parent {
                        bump(mem, pt, pi, -1);
                    }
                    if !(p.report)(child) {
                        return Ok(Some(va + span));
                    }
                }
            }
            if let Some(resume) = r {
                return Ok(Some(resume));
            }
        }
        index += 1;
    }
    Ok(None)
}

/// How many present entries a walk starting at entry `first` of the table
/// that `parent` points at will meet: its count when the walk starts at the
/// table's first entry and nobody adds entries during it (walks only
/// remove), so once it has met that many the rest is absent and need not
/// be scanned; unknown (`usize::MAX`) for the root (which keeps no count)
/// and for a walk resumed part-way into the table.
fn unseen_present<M: PhysMem + ?Sized>(
    mem: &mut M,
    parent: Option<(u64, usize)>,
    first: usize,
) -> usize {
    match parent {
        Some((pt, pi)) if first == 0 => table_count(mem.table(pt)[pi]),
        _ => usize::MAX,
    }
}

/// How many entries of `t` from `from` (absent itself) up to `to` are
/// absent in a row: at least 1.
pub(super) fn absent_run(t: &[u64; ENTRIES], from: usize, to: usize) -> usize {
    const P: u64 = PteFlags::PRESENT.bits();
    let s = &t[from..to];
    // Thirty-two at a time first, OR-ed: one test per 32 entries (the
    // kernel has no vector registers, so each entry is one `or` with a
    // memory operand: ~1.15 instructions an entry, against 1.75 with eight;
    // forkk), then eight at a time, then one by one.
    let blocks = s
        .chunks_exact(32)
        .take_while(|c| c.iter().fold(0, |a, e| a | e) & P == 0)
        .count();
    let s8 = &s[blocks * 32..];
    let octets = s8
        .chunks_exact(8)
        .take_while(|c| c.iter().fold(0, |a, e| a | e) & P == 0)
        .count();
    let rest = s8[octets * 8..].iter().take_while(|&&e| e & P == 0).count();
    blocks * 32 + octets * 8 + rest
}

/// What [`PageTable::teardown_user`] removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freed {
    /// A leaf: its address, frame, size and flags (software bits included).
    Leaf(u64, u64, PageSize, PteFlags),
    /// A table (now detached and empty): its frame.
    Table(u64),
}

/// One table of [`PageTable::teardown_user`] (a level-`level` table mapping
/// from `base`; `parent` as in [`walk_table`]): removes what lies at or
/// above `start`.
#[allow(clippy::too_many_arguments)] // the walk's state, threaded through the recursion
fn teardown_table<M: PhysMem + ?Sized>(
    mem: &mut M,
    table: u64,
    parent: Option<(u64, usize)>,
    level: usize,
    base: u64,
    start: u64,
    budget: &mut usize,
    f: &mut dyn FnMut(Freed) -> bool,
) -> Option<u64> {
    let shift = 12 + 9 * (level - 1);
    let span = 1u64 << shift;
    let first = if start > base {
        ((start - base) >> shift) as usize
    } else {
        0
    };
    let top = if level == 4 {
        KERNEL_PML4_START
    } else {
        ENTRIES
    };
    let mut unseen = unseen_present(mem, parent, first);
    let mut index = first;
    while index < top {
        let va = base + ((index as u64) << shift);
        if unseen == 0 {
            // Every present entry is behind: the rest is absent, one unit
            // for the lot.
            if *budget == 0 {
                return Some(va.max(start));
            }
            *budget -= 1;
            break;
        }
        let entry = mem.table(table)[index];
        if entry & PteFlags::PRESENT.bits() == 0 {
            // As in `walk_table`: a run of absent entries in one scan.
            if *budget == 0 {
                return Some(va.max(start));
            }
            let n = absent_run(
                mem.table(table),
                index,
                top.min(index.saturating_add(*budget)),
            );
            *budget -= n;
            index += n;
            continue;
        }
        let is_table = entry & PteFlags::PRESENT.bits() != 0
            && level > 1
            && (level == 4 || entry & PteFlags::HUGE.bits() == 0);
        unseen = unseen.saturating_sub(1);
        let empty = is_table && table_count(entry) == 0;
        // As in `walk_table`: absent entries, empty tables and leaves cost
        // one unit, descending is free, so any budget > 0 makes progress.
        if !is_table || empty {
            if *budget == 0 {
                return Some(va.max(start));
            }
            *budget -= 1;
        }
        let mut paused = false;
        let freed = if empty {
            // Known empty (its count): detached without a walk.
            Freed::Table(entry_addr(entry))
        } else if is_table {
            let child = entry_addr(entry);
            let below = Some((table, index));
            if let Some(resume) = teardown_table(mem, child, below, level - 1, va, start, budget, f)
            {
                // Paused inside the child, unless right after its last
                // entry: then the child is done, and a resumed call would
                // start past it and never detach it; detach and report it
                // now, then stay paused.
                if resume < va + span {
                    return Some(resume);
                }
                paused = true;
            }
            // The child's entries at or above `start` are gone now and those
            // below were gone before (the precondition): it is empty.
            Freed::Table(child)
        } else {
            let size = PageSize::from_level(level);
            Freed::Leaf(va, leaf_addr(entry, size), size, entry_flags(entry))
        };
        mem.table(table)[index] = 0;
        if let Some((pt, pi)) = parent {
            bump(mem, pt, pi, -1);
        }
        if !f(freed) || paused {
            return Some(va + span);
        }
        index += 1;
    }
    None
}

/// Reports every leaf under the table at `table` (a level-`level` table
/// mapping from `base`) and frees every table below it.
fn clear_subtree<M: PhysMem + ?Sized>(
    mem: &mut M,
    table: u64,
    level: usize,
    base: u64,
    f: &mut impl FnMut(u64, u64, PageSize, PteFlags),
) {
    for index in 0..ENTRIES {
        let entry = mem.table(table)[index];
        if entry & PteFlags::PRESENT.bits() == 0 {
            continue;
        }
        let va = base | ((index as u64) << (12 + 9 * (level - 1)));
        if level == 1 || entry & PteFlags::HUGE.bits() != 0 {
            let size = PageSize::from_level(level);
            f(
                va,
                leaf_addr(entry, size),
                size,
                PteFlags::from_bits_truncate(entry),
            );
        } else {
            let child = entry_addr(entry);
            clear_subtree(mem, child, level - 1, va, f);
            mem.free_table(child);
        }
        mem.table(table)[index] = 0;
    }
}
