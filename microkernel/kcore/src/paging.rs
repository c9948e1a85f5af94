//! x86_64 4-level page tables, as pure logic over an abstract physical memory.
//!
//! The hardware walk is PML4 (level 4) → PDPT (3) → PD (2) → PT (1); a leaf
//! sits at level 1 (4 KiB), level 2 with `HUGE` (2 MiB) or level 3 with `HUGE`
//! (1 GiB). This module edits those tables through the [`PhysMem`] trait, so
//! the kernel backs it with its direct map and the host tests with a `Vec`.
//!
//! # Invariants kept by [`PageTable`]
//! - Leaves decide access. Intermediate entries are created `PRESENT |
//!   WRITABLE`, plus `USER` when the leaf being mapped is `USER`; they never
//!   get `NO_EXECUTE`. Mapping a user page below an existing supervisor-only
//!   intermediate entry upgrades it to `USER | WRITABLE` (safe: the leaves
//!   under it still carry their own permissions).
//! - A leaf entry is always `PRESENT`, carries `HUGE` exactly when it is a
//!   2 MiB / 1 GiB page, and its address is aligned to its size. (So the PAT
//!   bit of 4 KiB entries, which shares the `HUGE` position, is never used.)
//! - Nothing is overwritten: mapping over a present entry fails with
//!   [`MapError::AlreadyMapped`] or [`MapError::HugePageInTheWay`].
//! - Every operation is all-or-nothing: on error the tables are as before
//!   (tables allocated by a failing `map` are freed again).
//! - **Every table keeps a count of its present entries in the entry that
//!   points at it** ([`table_count`]: bits 52-61 of a non-leaf entry,
//!   which the CPU ignores; 0..=512), so a walk knows a
//!   table is empty without scanning its 512 entries: range walks skip an
//!   empty table as one entry, and teardowns detach it at once (forkk,
//!   session 19: a clone walked ~12 empty tables, ~17,000 instructions).
//!   Every writer in this module keeps it exact. Two exceptions, never
//!   read: the root has no parent entry, and the kernel half's PML4
//!   entries carry no count (they are copied into every space when it is
//!   created, so a count there would go stale; kernel tables are never
//!   freed). Callers that rewrite entries themselves
//!   ([`PageTable::update_leaf`], [`PageTable::edit_range`]) keep a leaf
//!   present or clear it; the walk counts what they clear.
//!
//! # Design choices
//! - [`PageTable::unmap`] does **not** free intermediate tables that become
//!   empty, and never frees the leaf frame (the caller owns it). Freeing a
//!   table while other CPUs may still hold it in their paging-structure
//!   caches would need a TLB shootdown *before* the frame is reused, which this
//!   module cannot do; empty tables are instead reclaimed when the address
//!   space dies, by [`PageTable::clear_user_half`] — or by a range unmap
//!   that covers a table's whole span ([`PageTable::unmap_range_pruning`]
//!   detaches those and leaves freeing them to the caller, after its
//!   shootdown), so a space that maps and unmaps large ranges does not keep
//!   (and have every clone and teardown walk) their empty tables. A
//!   consequence of keeping the others: mapping a
//!   2 MiB page where an (even empty) page table hangs fails with
//!   `AlreadyMapped`.
//! - No operation flushes the TLB. After `unmap` or `protect` the caller must
//!   `invlpg` (and shoot down other CPUs that run this address space).
//!   `map` only fills empty entries, which the CPU never caches.
//! - Range operations ([`PageTable::unmap_range`], [`PageTable::protect_range`],
//!   [`PageTable::check_mapped`]) cost what is mapped, not what is named: an
//!   absent PML4 / PDPT / PD entry skips its whole 512 GiB / 1 GiB / 2 MiB
//!   span at once. They also take a *budget* (entries examined) and pause
//!   when it runs out, returning where to resume, so the kernel can drop its
//!   locks and take interrupts between chunks of a huge range.
//! - The kernel half (PML4 entries 256..512) is shared by every address
//!   space: [`PageTable::create_with_kernel_half`] copies those PML4 entries,
//!   and [`PageTable::clear_user_half`] never touches them.

use bitflags::bitflags;

/// The size of a 4 KiB page (and of every page table).
pub const PAGE_SIZE: u64 = 4096;
/// Entries per table.
pub const ENTRIES: usize = 512;
/// One past the highest lower-half (user) canonical address.
pub const USER_HALF_END: u64 = 0x0000_8000_0000_0000;
/// The physical-address bits of an entry (bits 12..52).
pub const PHYS_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// The first PML4 index of the kernel half.
pub const KERNEL_PML4_START: usize = 256;

bitflags! {
    /// The flag bits of a page-table entry.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct PteFlags: u64 {
        /// The entry is valid.
        const PRESENT = 1 << 0;
        /// Writes are allowed.
        const WRITABLE = 1 << 1;
        /// Ring 3 may access.
        const USER = 1 << 2;
        /// Write-through caching.
        const WRITE_THROUGH = 1 << 3;
        /// Caching disabled (MMIO).
        const NO_CACHE = 1 << 4;
        /// Set by the CPU on access.
        const ACCESSED = 1 << 5;
        /// Set by the CPU on write (leaves only).
        const DIRTY = 1 << 6;
        /// A 2 MiB / 1 GiB leaf (levels 2 and 3 only).
        const HUGE = 1 << 7;
        /// Not flushed on CR3 reload (kernel mappings).
        const GLOBAL = 1 << 8;
        /// Software bit (ignored by the CPU): the leaf's frame is lent, not
        /// owned (boot modules lent to init). The record lives in the entry
        /// itself, so it goes away with the mapping and can never outlive it.
        const BORROWED = 1 << 9;
        /// Software bit: the leaf's frame is reference-counted and logically
        /// private to this space (copy-on-write, see [`crate::cow`]): the
        /// entry is never hardware-writable while this bit is set.
        const COW = 1 << 10;
        /// Software bit, only with [`COW`](Self::COW): the page is logically
        /// writable (a write fault copies the frame, or takes it over when
        /// this is its last reference).
        const COW_WRITE = 1 << 11;
        /// Software bit: the leaf's frame is reference-counted and shared on
        /// purpose (a memory object's frame): writes go to the shared frame.
        const SHARED = 1 << 52;
        /// Instruction fetch faults (needs EFER.NXE).
        const NO_EXECUTE = 1 << 63;
    }
}

/// The size of one mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageSize {
    /// 4 KiB, a level-1 leaf.
    Size4K,
    /// 2 MiB, a level-2 `HUGE` leaf.
    Size2M,
    /// 1 GiB, a level-3 `HUGE` leaf.
    Size1G,
}

impl PageSize {
    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Size4K => 1 << 12,
            PageSize::Size2M => 1 << 21,
            PageSize::Size1G => 1 << 30,
        }
    }

    /// The table level (1 = PT .. 3 = PDPT) that holds this leaf.
    pub const fn level(self) -> usize {
        match self {
            PageSize::Size4K => 1,
            PageSize::Size2M => 2,
            PageSize::Size1G => 3,
        }
    }

    const fn from_level(level: usize) -> PageSize {
        match level {
            1 => PageSize::Size4K,
            2 => PageSize::Size2M,
            _ => PageSize::Size1G,
        }
    }
}

abi::shared_enum! {
    /// Why a page-table operation failed.
    pub enum MapError {
        /// The leaf slot is already in use.
        AlreadyMapped => "already mapped",
        /// Nothing is mapped at the address.
        NotMapped => "not mapped",
        /// A table could not be allocated.
        NoMemory => "out of memory for page tables",
        /// The virtual or physical address is not aligned to the page size (for
        /// `unmap`/`protect`: the address is inside a larger page, not at its start).
        Misaligned => "address not aligned to the page size",
        /// The virtual address is not canonical.
        NonCanonical => "non-canonical virtual address",
        /// A larger page already covers part of the requested range.
        HugePageInTheWay => "a huge page is in the way",
        /// The physical address does not fit in 52 bits.
        InvalidPhysAddr => "physical address out of range",
    }
}

/// Access to the physical frames that hold page tables.
pub trait PhysMem {
    /// The table in the 4 KiB frame at `phys`. Only called with addresses
    /// this module got from [`alloc_table`](Self::alloc_table), the root, or
    /// entries of those tables.
    fn table(&mut self, phys: u64) -> &mut [u64; ENTRIES];
    /// A fresh, **zeroed** 4 KiB frame for a table, or `None` when out of memory.
    fn alloc_table(&mut self) -> Option<u64>;
    /// Gives back a table frame this module no longer references.
    fn free_table(&mut self, phys: u64);
}

/// Whether `va` is canonical (bits 47..64 all equal).
pub const fn is_canonical(va: u64) -> bool {
    let top = (va as i64) >> 47;
    top == 0 || top == -1
}

/// The index of `va` in a table of `level` (4 = PML4 .. 1 = PT).
pub const fn table_index(va: u64, level: usize) -> usize {
    ((va >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

/// The PML4 (level 4) index of `va`.
pub const fn pml4_index(va: u64) -> usize {
    table_index(va, 4)
}

/// The PDPT (level 3) index of `va`.
pub const fn pdpt_index(va: u64) -> usize {
    table_index(va, 3)
}

/// The PD (level 2) index of `va`.
pub const fn pd_index(va: u64) -> usize {
    table_index(va, 2)
}

/// The PT (level 1) index of `va`.
pub const fn pt_index(va: u64) -> usize {
    table_index(va, 1)
}

/// The offset of `va` within its 4 KiB page.
pub const fn page_offset(va: u64) -> u64 {
    va & (PAGE_SIZE - 1)
}

/// Whether `[addr, addr + len)` lies in the user half: no overflow and
/// `addr + len <= USER_HALF_END`. An empty range at a user address is fine.
/// (Whether the pages are mapped is a separate question.)
pub const fn user_range_ok(addr: u64, len: u64) -> bool {
    match addr.checked_add(len) {
        Some(end) => end <= USER_HALF_END,
        None => false,
    }
}

/// The flags of an entry (address bits dropped).
pub const fn entry_flags(entry: u64) -> PteFlags {
    PteFlags::from_bits_truncate(entry)
}

/// The physical address an entry points to.
pub const fn entry_addr(entry: u64) -> u64 {
    entry & PHYS_ADDR_MASK
}

/// Where a table's present-entry count sits in the (non-leaf) entry that
/// points at it: bits 52..62 (10 bits, 0..=512). The CPU ignores bits
/// 52..63 of an entry that references a table (protection keys, 59..63,
/// apply to leaves only), and `entry_addr` masks them off. One field, so
/// a change of the count is one add.
const COUNT_SHIFT: u32 = 52;
pub(crate) const COUNT_MASK: u64 = 0x3ff << COUNT_SHIFT;

/// The number of present entries in the table a non-leaf `entry` points
/// at (see the module invariants).
pub const fn table_count(entry: u64) -> usize {
    ((entry & COUNT_MASK) >> COUNT_SHIFT) as usize
}

/// Adds `delta` to the count of the table that the entry at `index` of
/// `parent` points at.
fn bump<M: PhysMem + ?Sized>(mem: &mut M, parent: u64, index: usize, delta: isize) {
    let e = &mut mem.table(parent)[index];
    debug_assert!(
        table_count(*e)
            .checked_add_signed(delta)
            .is_some_and(|n| n <= ENTRIES),
        "page-table count out of range"
    );
    *e = e.wrapping_add((delta as u64) << COUNT_SHIFT);
}

/// The flags a leaf of `size` is stored with (see the module invariants).
fn leaf_flags(flags: PteFlags, size: PageSize) -> PteFlags {
    let f = flags.difference(PteFlags::HUGE) | PteFlags::PRESENT;
    if size == PageSize::Size4K {
        f
    } else {
        f | PteFlags::HUGE
    }
}

fn intermediate_flags(leaf: PteFlags) -> u64 {
    let base = PteFlags::PRESENT | PteFlags::WRITABLE;
    if leaf.contains(PteFlags::USER) {
        (base | PteFlags::USER).bits()
    } else {
        base.bits()
    }
}

/// Where a walk found a leaf.
struct Leaf {
    /// The table holding the leaf and the leaf's index in it.
    table: u64,
    index: usize,
    entry: u64,
    size: PageSize,
    /// (table, index) of the intermediate entries above it, PML4 first.
    path: [(u64, usize); 3],
    depth: usize,
}

/// A table a `map` allocated: (parent table, index in it, the new table,
/// the entry that counts the parent's entries if any), for its rollback.
type Allocated = (u64, usize, u64, Option<(u64, usize)>);

/// Where [`PageTable::map_4k_with`] maps next without a walk: the page
/// table of the last 2 MiB it mapped into. Starts empty (`default`).
#[derive(Clone, Copy, Debug, Default)]
pub struct MapCursor(Option<CursorAt>);

#[derive(Clone, Copy, Debug)]
struct CursorAt {
    /// The 2 MiB-aligned base the table maps.
    region: u64,
    /// The page table's physical address.
    table: u64,
    /// Intermediate flags every entry on its path carries.
    inter: u64,
    /// The PD entry that points at the table (it holds the table's count;
    /// always there for a page table).
    parent: Option<(u64, usize)>,
}

/// One address space's page tables, named by the physical address of its PML4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageTable {
    root: u64,
}

impl PageTable {
    /// The tables rooted at the PML4 at `root` (e.g. `CR3 & PHYS_ADDR_MASK`).
    pub const fn new(root: u64) -> PageTable {
        PageTable { root }
    }

    /// A new, empty address space.
    ///
    /// # Errors
    /// [`MapError::NoMemory`] if no table can be allocated.
    pub fn create<M: PhysMem + ?Sized>(mem: &mut M) -> Result<PageTable, MapError> {
        mem.alloc_table()
            .map(PageTable::new)
            .ok_or(MapError::NoMemory)
    }

    /// A new address space whose kernel half (PML4 entries 256..512) points
    /// at the same PDPTs as `kernel`'s, and whose user half is empty. The
    /// kernel half is shared, so kernel mappings must only ever be added
    /// *below* PML4 entries that already exist when address spaces are
    /// created (pre-allocate all 256 kernel PDPTs at boot).
    ///
    /// # Errors
    /// [`MapError::NoMemory`] if no table can be allocated.
    pub fn create_with_kernel_half<M: PhysMem + ?Sized>(
        mem: &mut M,
        kernel: &PageTable,
    ) -> Result<PageTable, MapError> {
        let pt = PageTable::create(mem)?;
        let mut upper = [0u64; ENTRIES - KERNEL_PML4_START];
        upper.copy_from_slice(&mem.table(kernel.root)[KERNEL_PML4_START..]);
        mem.table(pt.root)[KERNEL_PML4_START..].copy_from_slice(&upper);
        Ok(pt)
    }

    /// The physical address of the PML4 (what goes in CR3).
    pub const fn root(&self) -> u64 {
        self.root
    }

    /// Maps `va` to `pa` as one page of `size` with `flags` (`PRESENT` and,
    /// for large pages, `HUGE` are added). Missing intermediate tables are
    /// allocated.
    ///
    /// # Errors
    /// [`MapError::NonCanonical`], [`MapError::Misaligned`] (either address
    /// not a multiple of `size`), [`MapError::InvalidPhysAddr`],
    /// [`MapError::HugePageInTheWay`] (a larger page covers `va`),
    /// [`MapError::AlreadyMapped`] (the slot is in use, including by a table
    /// of smaller pages), [`MapError::NoMemory`]. The tables are unchanged on
    /// error.
    pub fn map<M: PhysMem + ?Sized>(
        &self,
        mem: &mut M,
        va: u64,
        pa: u64,
        size: PageSize,
        flags: PteFlags,
    ) -> Result<(), MapError> {
        self.map_in(mem, va, pa, size, flags).map(|_| ())
    }

    /// Maps the 4 KiB page `va` to `pa` as [`map`](Self::map) does, through
    /// `cursor`: when the page lies in the same 2 MiB as the cursor's last
    /// one and that path's intermediate entries already allow `flags`, the
    /// leaf is written straight into the page table the cursor keeps (one
    /// table access instead of a walk from the root); otherwise it maps from
    /// the root and the cursor moves to that page's table. For many pages
    /// mapped in address order (a clone: ~400 instructions a page from the
    /// root, forkperf2).
    ///
    /// **Precondition:** between calls with the same cursor, no table on its
    /// path is detached or freed (nobody else edits these tables: the
    /// caller holds their lock across the calls, or starts a new cursor).
    ///
    /// # Errors
    /// As [`map`](Self::map) with [`PageSize::Size4K`]; the tables (and the
    /// cursor) are unchanged on error.
    pub fn map_4k_with<M: PhysMem + ?Sized>(
        &self,
        mem: &mut M,
        cursor: &mut MapCursor,
        va: u64,
        pa: u64,
        flags: PteFlags,
    ) -> Result<(), MapError> {
        let inter = intermediate_flags(flags);
        let region = va & !(PageSize::Size2M.bytes() - 1);
        if let Some(c) = cursor.0 {
            // `va` in the region of a page mapped before is canonical.
            if c.region == region && c.inter & inter == inter {
                if !va.is_multiple_of(PAGE_SIZE) || !pa.is_multiple_of(PAGE_SIZE) {
                    return Err(MapError::Misaligned);
                }
                if pa & !PHYS_ADDR_MASK != 0 {
                    return Err(MapError::InvalidPhysAddr);
                }
                let slot = &mut mem.table(c.table)[pt_index(va)];
                if *slot & PteFlags::PRESENT.bits() != 0 {
                    return Err(MapError::AlreadyMapped);
                }
                *slot = pa | leaf_flags(flags, PageSize::Size4K).bits();
                if let Some((t, i)) = c.parent {
                    bump(mem, t, i, 1);
                }
                return Ok(());
            }
        }
        let (table, parent) = self.map_in(mem, va, pa, PageSize::Size4K, flags)?;
        // The walk upgraded every entry on the path to at least `inter`.
        cursor.0 = Some(CursorAt {
            region,
            table,
            inter,
            parent,
        });
        Ok(())
    }

    /// Adds `delta` to the count kept in the entry at `index` of `table`,
    /// unless that entry is one of the root's kernel-half entries (which
    /// keep no count, see the module invariants).
    fn bump_counted<M: PhysMem + ?Sized>(&self, mem: &mut M, at: (u64, usize), delta: isize) {
        if at.0 != self.root || at.1 < KERNEL_PML4_START {
            bump(mem, at.0, at.1, delta);
        }
    }

    /// [`map`](Self::map); returns the table the leaf went into and the
    /// entry that points at that table.
    fn map_in<M: PhysMem + ?Sized>(
        &self,
        mem: &mut M,
        va: u64,
        pa: u64,
        size: PageSize,
        flags: PteFlags,
    ) -> Result<(u64, Option<(u64, usize)>), MapError> {
        if !is_canonical(va) {
            return Err(MapError::NonCanonical);
        }
        if !va.is_multiple_of(size.bytes()) || !pa.is_multiple_of(size.bytes()) {
            return Err(MapError::Misaligned);
        }
        if pa & !PHYS_ADDR_MASK != 0 {
            return Err(MapError::InvalidPhysAddr);
        }
        let inter = intermediate_flags(flags);

        // Entries to upgrade (existing) and tables allocated, applied or
        // rolled back at the end so that failure leaves no trace. A table
        // allocated is counted in its parent at once (`above`: the entry
        // that points at the table being walked, `None` for the root and
        // the kernel half's PML4 entries, which keep no count).
        let mut upgrades: [Option<(u64, usize)>; 3] = [None; 3];
        let mut allocated: [Option<Allocated>; 3] = [None; 3];
        let mut table = self.root;
        let mut above = None;
        let mut result = Ok(());
        for (slot, level) in (size.level() + 1..=4).rev().enumerate() {
            let index = table_index(va, level);
            let entry = mem.table(table)[index];
            let here = (table != self.root || index < KERNEL_PML4_START).then_some((table, index));
            if entry & PteFlags::PRESENT.bits() == 0 {
                let Some(new) = mem.alloc_table() else {
                    result = Err(MapError::NoMemory);
                    break;
                };
                mem.table(table)[index] = new | inter;
                if let Some((t, i)) = above {
                    bump(mem, t, i, 1);
                }
                allocated[slot] = Some((table, index, new, above));
                table = new;
            } else if entry & PteFlags::HUGE.bits() != 0 {
                result = Err(MapError::HugePageInTheWay);
                break;
            } else {
                if entry & inter != inter {
                    upgrades[slot] = Some((table, index));
                }
                table = entry_addr(entry);
            }
            above = here;
        }
        if result.is_ok() {
            let index = table_index(va, size.level());
            let slot = &mut mem.table(table)[index];
            if *slot & PteFlags::PRESENT.bits() != 0 {
                result = Err(MapError::AlreadyMapped);
            } else {
                *slot = pa | leaf_flags(flags, size).bits();
                if let Some((t, i)) = above {
                    bump(mem, t, i, 1);
                }
            }
        }
        match result {
            Ok(()) => {
                for (t, i) in upgrades.into_iter().flatten() {
                    mem.table(t)[i] |= inter;
                }
            }
            Err(_) => {
                for (parent, index, new, counted_in) in allocated.into_iter().flatten().rev() {
                    mem.table(parent)[index] = 0;
                    if let Some((t, i)) = counted_in {
                        bump(mem, t, i, -1);
                    }
                    mem.free_table(new);
                }
            }
        }
        result.map(|()| (table, above))
    }

    /// Removes the page that starts at `va` and returns its physical address
    /// and size. The leaf frame is not freed, empty tables are kept, and the
    /// TLB is not flushed (see the module docs).
    ///
    /// # Errors
    /// [`MapError::NonCanonical`], [`MapError::NotMapped`], or
    /// [`MapError::Misaligned`] if `va` is inside a page but not at its start.
    pub fn unmap<M: PhysMem + ?Sized>(
        &self,
        mem: &mut M,
        va: u64,
    ) -> Result<(u64, PageSize), MapError> {
        let leaf = self.find_leaf(mem, va)?;
        if !va.is_multiple_of(leaf.size.bytes()) {
            return Err(MapError::Misaligned);
        }
        mem.table(leaf.table)[leaf.index] = 0;
        self.bump_counted(mem, leaf.path[leaf.depth - 1], -1);
        Ok((leaf_addr(leaf.entry, leaf.size), leaf.size))
    }

    /// The physical address `va` maps to (including the offset within the
    /// page), the effective flags, and the page size; `None` if unmapped or
    /// non-canonical. The flags are the leaf's, except that `USER` and
    /// `WRITABLE` are dropped and `NO_EXECUTE` added if an intermediate entry
    /// says so, i.e. what the CPU enforces.
    pub fn translate<M: PhysMem + ?Sized>(
        &self,
        mem: &mut M,
        va: u64,
    ) -> Option<(u64, PteFlags, PageSize)> {
        let leaf = self.find_leaf(mem, va).ok()?;
        let mut flags = entry_flags(leaf.entry);
        for &(t, i) in &leaf.path[..leaf.depth] {
            let above = entry_flags(mem.table(t)[i]);
            flags &= above | !(PteFlags::USER | PteFlags::WRITABLE);
            flags |= above & PteFlags::NO_EXECUTE;
        }
        let pa = leaf_addr(leaf.entry, leaf.size) | (va & (leaf.size.bytes() - 1));
        Some((pa, flags, leaf.size))
    }

    /// Replaces the flags of the page that starts at `va` (`PRESENT`, and
    /// `HUGE` for large pages, are kept). Adding `USER` upgrades the
    /// intermediate entries as `map` would. The TLB is not flushed.
    ///
    /// # Errors
    /// As [`unmap`](Self::unmap).
    pub fn protect<M: PhysMem + ?Sized>(
        &self,
        mem: &mut M,
        va: u64,
        flags: PteFlags,
    ) -> Result<(), MapError> {
        let leaf = self.find_leaf(mem, va)?;
        if !va.is_multiple_of(leaf.size.bytes()) {
            return Err(MapError::Misaligned);
        }
        let inter = intermediate_flags(flags);
        for &(t, i) in &leaf.path[..leaf.depth] {
            mem.table(t)[i] |= inter;
        }
        mem.table(leaf.table)[leaf.index] = reflag(leaf.entry, flags, leaf.size);
        Ok(())
    }

    fn find_leaf<M: PhysMem + ?Sized>(&self, mem: &mut M, va: u64) -> Result<Leaf, MapError> {
        if !is_canonical(va) {
            return Err(MapError::NonCanonical);
        }
        let mut path = [(0u64, 0usize); 3];
        let mut table = self.root;
        for level in (1..=4).rev() {
            let index = table_index(va, level);
            let entry = mem.table(table)[index];
            if entry & PteFlags::PRESENT.bits() == 0 {
                return Err(MapError::NotMapped);
            }
            // HUGE in a PML4 entry is reserved; never created here, so such
            // an entry is walked as a table.
            if level == 1 || (level <= 3 && entry & PteFlags::HUGE.bits() != 0) {
                return Ok(Leaf {
                    table,
                    index,
                    entry,
                    size: PageSize::from_level(level),
                    path,
                    depth: 4 - level,
                });
            }
            path[4 - level] = (table, index);
            table = entry_addr(entry);
        }
        unreachable!("level 1 always returns")
    }
}

/// The bits of a leaf the CPU ignores and software uses (9..12, and 52 with
/// no protection keys enabled).
const SOFTWARE_BITS: u64 = 0xe00 | (1 << 52);

/// `entry` (a leaf of `size`) with its flags replaced by `flags`, keeping its
/// frame and its software bits. A copy-on-write leaf is never made
/// hardware-writable: asking for `WRITABLE` sets [`PteFlags::COW_WRITE`]
/// instead (the first write then copies), and asking for read-only clears it.
fn reflag(entry: u64, flags: PteFlags, size: PageSize) -> u64 {
    let mut f = leaf_flags(flags, size);
    let mut soft = entry & SOFTWARE_BITS & !PteFlags::COW_WRITE.bits();
    if entry & PteFlags::COW.bits() != 0 && f.contains(PteFlags::WRITABLE) {
        f.remove(PteFlags::WRITABLE);
        soft |= PteFlags::COW_WRITE.bits();
    }
    leaf_addr(entry, size) | f.bits() | soft
}

/// The frame address of a leaf entry (for large pages the PAT bit, bit 12,
/// sits in the address field and is masked off).
fn leaf_addr(entry: u64, size: PageSize) -> u64 {
    entry_addr(entry) & !(size.bytes() - 1)
}

mod range;
pub use range::Freed;

#[cfg(test)]
mod tests;
