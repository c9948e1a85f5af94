//! Interpreting the boot memory map: which physical pages may the frame
//! allocator hand out?
//!
//! The firmware's map (via multiboot2) is a list of [`MemRegion`]s that may be
//! unsorted, may overlap, and may disagree with itself (a reserved hole inside
//! a usable region). On top of it the kernel knows ranges it must keep: its
//! own image, the boot information, the boot modules.
//!
//! # Rules
//! - A page is free iff some `Usable` region covers it entirely, no
//!   non-`Usable` region touches it, and no reserved [`Range`] touches it.
//!   So usable regions round *inward* to page boundaries, everything else
//!   rounds *outward*, and "reserved wins" on any overlap.
//! - Overlapping usable regions count once.
//!
//! # Design choices
//! - No allocation: the maps are small (QEMU gives 6 entries, real PCs a few
//!   dozen), so [`for_each_free_range`] collects every page-aligned boundary
//!   into a fixed stack array, sorts it, and classifies each gap between
//!   neighbouring boundaries with an O(n) scan: O(n^2) over at most
//!   [`MAX_REGIONS`] + [`MAX_RESERVED`] inputs (3 KiB of stack). Larger
//!   inputs are refused with an error rather than truncated.
//! - Results are delivered through a callback so the caller can feed the
//!   frame allocator directly.

/// The most memory-map entries accepted.
pub const MAX_REGIONS: usize = 128;
/// The most reserved ranges accepted.
pub const MAX_RESERVED: usize = 64;

const PAGE: u64 = 4096;
/// The highest page-aligned address; ends that would round past it clamp here.
const TOP: u64 = !(PAGE - 1);

/// What a memory-map entry says about its range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemKind {
    /// RAM the OS may use.
    Usable,
    /// Not to be touched (firmware, MMIO holes, and unknown types).
    Reserved,
    /// ACPI tables; reclaimable after they are parsed, but kept for now.
    AcpiReclaimable,
    /// ACPI non-volatile storage.
    AcpiNvs,
    /// Defective RAM.
    Bad,
}

/// One memory-map entry: `len` bytes from `base`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemRegion {
    /// The first byte.
    pub base: u64,
    /// The length in bytes.
    pub len: u64,
    /// What the range is.
    pub kind: MemKind,
}

impl MemRegion {
    /// One past the last byte, saturating at `u64::MAX`.
    pub const fn end(&self) -> u64 {
        self.base.saturating_add(self.len)
    }
}

/// A half-open physical range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// The first byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl Range {
    /// `[start, end)`.
    pub const fn new(start: u64, end: u64) -> Range {
        Range { start, end }
    }

    /// Whether the range holds no byte (this includes inverted ranges).
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// The number of bytes (0 for an inverted range).
    pub const fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the two ranges share a byte.
    pub const fn overlaps(&self, other: &Range) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// Why a memory map or module list was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemMapError {
    /// The map is empty or leaves no free page.
    NoUsableMemory,
    /// More than [`MAX_REGIONS`] map entries.
    TooManyRegions,
    /// More than [`MAX_RESERVED`] reserved ranges.
    TooManyReserved,
    /// Module `index` is empty or inverted.
    EmptyModule {
        /// The module's index in the list.
        index: usize,
    },
    /// Module `index` overlaps the kernel image.
    ModuleOverlapsKernel {
        /// The module's index in the list.
        index: usize,
    },
    /// Modules `first` and `second` overlap.
    ModulesOverlap {
        /// The lower index.
        first: usize,
        /// The higher index.
        second: usize,
    },
}

impl MemMapError {
    /// A short human-readable description (without the indices; `Display`
    /// adds them).
    pub const fn as_str(self) -> &'static str {
        match self {
            MemMapError::NoUsableMemory => "no usable memory",
            MemMapError::TooManyRegions => "too many memory-map entries",
            MemMapError::TooManyReserved => "too many reserved ranges",
            MemMapError::EmptyModule { .. } => "boot module is empty or inverted",
            MemMapError::ModuleOverlapsKernel { .. } => "boot module overlaps the kernel",
            MemMapError::ModulesOverlap { .. } => "boot modules overlap",
        }
    }
}

impl core::fmt::Display for MemMapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            MemMapError::EmptyModule { index } | MemMapError::ModuleOverlapsKernel { index } => {
                write!(f, "{} (module {index})", self.as_str())
            }
            MemMapError::ModulesOverlap { first, second } => {
                write!(f, "{} (modules {first} and {second})", self.as_str())
            }
            _ => f.write_str(self.as_str()),
        }
    }
}

/// Checks that every module is non-empty and that no module overlaps the
/// kernel image or another module.
///
/// # Errors
/// The first problem, naming the module index (or indices).
pub fn validate_modules(kernel: Range, modules: &[Range]) -> Result<(), MemMapError> {
    for (index, m) in modules.iter().enumerate() {
        if m.is_empty() {
            return Err(MemMapError::EmptyModule { index });
        }
        if m.overlaps(&kernel) {
            return Err(MemMapError::ModuleOverlapsKernel { index });
        }
        if let Some(first) = modules[..index].iter().position(|o| o.overlaps(m)) {
            return Err(MemMapError::ModulesOverlap {
                first,
                second: index,
            });
        }
    }
    Ok(())
}

/// The end of the highest whole usable page (usable regions rounded inward),
/// or 0 if there is none. Sizes the frame bitmap: frames at or above it are
/// never free.
pub fn highest_usable_end(regions: &[MemRegion]) -> u64 {
    regions
        .iter()
        .filter(|r| r.kind == MemKind::Usable)
        .map(|r| inward(r.base, r.end()))
        .filter(|(s, e)| s < e)
        .map(|(_, e)| e)
        .max()
        .unwrap_or(0)
}

/// The number of free bytes: exactly the sum of what
/// [`for_each_free_range`] yields.
///
/// # Errors
/// As [`for_each_free_range`].
pub fn usable_bytes(regions: &[MemRegion], reserved: &[Range]) -> Result<u64, MemMapError> {
    let mut total = 0;
    for_each_free_range(regions, reserved, |s, e| total += e - s)?;
    Ok(total)
}

/// Calls `f(start, end)` for every maximal page-aligned free range, in
/// ascending order, never overlapping, never adjacent (adjacent free ranges
/// are merged). See the module docs for what "free" means.
///
/// # Errors
/// [`MemMapError::TooManyRegions`] / [`MemMapError::TooManyReserved`] for
/// oversized inputs (then `f` is never called), and
/// [`MemMapError::NoUsableMemory`] if no page is free.
pub fn for_each_free_range(
    regions: &[MemRegion],
    reserved: &[Range],
    mut f: impl FnMut(u64, u64),
) -> Result<(), MemMapError> {
    if regions.len() > MAX_REGIONS {
        return Err(MemMapError::TooManyRegions);
    }
    if reserved.len() > MAX_RESERVED {
        return Err(MemMapError::TooManyReserved);
    }

    let mut bounds = [0u64; 2 * (MAX_REGIONS + MAX_RESERVED)];
    let mut n = 0;
    for (s, e) in regions
        .iter()
        .map(rounded_region)
        .chain(reserved.iter().map(|r| outward(r.start, r.end)))
    {
        if s < e {
            bounds[n] = s;
            bounds[n + 1] = e;
            n += 2;
        }
    }
    let bounds = &mut bounds[..n];
    bounds.sort_unstable();

    // Between two neighbouring boundaries nothing starts or ends, so testing
    // the gap's first page decides the whole gap.
    let page_free = |p: u64| {
        let mut usable = false;
        for r in regions {
            let (s, e) = rounded_region(r);
            if s <= p && p < e {
                if r.kind != MemKind::Usable {
                    return false;
                }
                usable = true;
            }
        }
        usable
            && !reserved.iter().any(|r| {
                let (s, e) = outward(r.start, r.end);
                s <= p && p < e
            })
    };

    let mut pending: Option<(u64, u64)> = None;
    let mut any = false;
    for w in bounds.windows(2) {
        let (a, b) = (w[0], w[1]);
        if a == b || !page_free(a) {
            continue;
        }
        pending = match pending {
            Some((s, e)) if e == a => Some((s, b)),
            Some((s, e)) => {
                f(s, e);
                any = true;
                Some((a, b))
            }
            None => Some((a, b)),
        };
    }
    if let Some((s, e)) = pending {
        f(s, e);
        any = true;
    }
    if any {
        Ok(())
    } else {
        Err(MemMapError::NoUsableMemory)
    }
}

/// A region's page-aligned extent: inward if usable, outward otherwise.
fn rounded_region(r: &MemRegion) -> (u64, u64) {
    if r.kind == MemKind::Usable {
        inward(r.base, r.end())
    } else {
        outward(r.base, r.end())
    }
}

/// The whole pages inside `[start, end)`; `start >= end` if there are none.
fn inward(start: u64, end: u64) -> (u64, u64) {
    let s = start.checked_next_multiple_of(PAGE).unwrap_or(u64::MAX);
    (s, end & !(PAGE - 1))
}

/// Every page touching `[start, end)`, clamped at the top of the address
/// space; empty if the range is.
fn outward(start: u64, end: u64) -> (u64, u64) {
    if end <= start {
        return (0, 0);
    }
    let e = end.checked_next_multiple_of(PAGE).unwrap_or(TOP).min(TOP);
    (start & !(PAGE - 1), e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use MemKind::*;

    fn region(base: u64, end: u64, kind: MemKind) -> MemRegion {
        MemRegion {
            base,
            len: end - base,
            kind,
        }
    }

    fn free_ranges(
        regions: &[MemRegion],
        reserved: &[Range],
    ) -> Result<Vec<(u64, u64)>, MemMapError> {
        let mut v = Vec::new();
        for_each_free_range(regions, reserved, |s, e| v.push((s, e)))?;
        Ok(v)
    }

    fn qemu_map() -> Vec<MemRegion> {
        vec![
            region(0, 0x9fc00, Usable),
            region(0x9fc00, 0xa0000, Reserved),
            region(0xf0000, 0x100000, Reserved),
            region(0x100000, 0x7fe0000, Usable),
            region(0x7fe0000, 0x8000000, Reserved),
            region(0xfffc0000, 0x1_0000_0000, Reserved),
        ]
    }

    #[test]
    fn qemus_typical_map_yields_low_and_high_memory() {
        let map = qemu_map();
        assert_eq!(
            free_ranges(&map, &[]).unwrap(),
            vec![(0, 0x9f000), (0x100000, 0x7fe0000)]
        );
        assert_eq!(highest_usable_end(&map), 0x7fe0000);
        assert_eq!(usable_bytes(&map, &[]).unwrap(), 0x9f000 + 0x7ee0000);
    }

    #[test]
    fn reserved_ranges_are_cut_out_rounded_outward() {
        let map = qemu_map();
        let kernel = Range::new(0x100000, 0x2a3456);
        let module = Range::new(0x2a5001, 0x2a6000);
        assert_eq!(
            free_ranges(&map, &[module, kernel, Range::new(0, 0x1000)]).unwrap(),
            vec![
                (0x1000, 0x9f000),
                (0x2a4000, 0x2a5000),
                (0x2a6000, 0x7fe0000)
            ]
        );
    }

    #[test]
    fn overlapping_usable_regions_are_counted_once() {
        let map = [
            region(0x10000, 0x30000, Usable),
            region(0x20000, 0x40000, Usable),
            region(0x20000, 0x30000, Usable),
        ];
        assert_eq!(free_ranges(&map, &[]).unwrap(), vec![(0x10000, 0x40000)]);
        assert_eq!(usable_bytes(&map, &[]).unwrap(), 0x30000);
    }

    #[test]
    fn a_non_usable_region_inside_a_usable_one_wins() {
        let map = [
            region(0x0, 0x100000, Usable),
            region(0x50800, 0x51000, AcpiNvs), // rounds out to 0x50000..0x51000
            region(0x80000, 0x90000, Bad),
            region(0x90000, 0x91000, AcpiReclaimable),
        ];
        assert_eq!(
            free_ranges(&map, &[]).unwrap(),
            vec![(0, 0x50000), (0x51000, 0x80000), (0x91000, 0x100000)]
        );
    }

    #[test]
    fn unsorted_maps_give_sorted_ranges() {
        let mut map = qemu_map();
        map.reverse();
        map.swap(1, 4);
        assert_eq!(
            free_ranges(&map, &[]).unwrap(),
            vec![(0, 0x9f000), (0x100000, 0x7fe0000)]
        );
    }

    #[test]
    fn adjacent_usable_regions_merge_into_one_range() {
        let map = [region(0x2000, 0x5000, Usable), region(0x0, 0x2000, Usable)];
        assert_eq!(free_ranges(&map, &[]).unwrap(), vec![(0, 0x5000)]);
    }

    #[test]
    fn partial_pages_of_usable_regions_are_dropped() {
        let map = [
            region(0x800, 0x2800, Usable),
            region(0x5000, 0x5fff, Usable),
        ];
        assert_eq!(free_ranges(&map, &[]).unwrap(), vec![(0x1000, 0x2000)]);
        assert_eq!(highest_usable_end(&map), 0x2000);
    }

    #[test]
    fn an_empty_or_fully_reserved_map_has_no_usable_memory() {
        assert_eq!(free_ranges(&[], &[]), Err(MemMapError::NoUsableMemory));
        assert_eq!(usable_bytes(&[], &[]), Err(MemMapError::NoUsableMemory));
        let map = [region(0, 0x10000, Usable), region(0x8000, 0x9000, Reserved)];
        assert_eq!(
            free_ranges(&map, &[Range::new(0, 0x8000), Range::new(0x9000, 0x10000)]),
            Err(MemMapError::NoUsableMemory)
        );
        assert_eq!(highest_usable_end(&[region(0, 0x10000, Reserved)]), 0);
    }

    #[test]
    fn regions_reaching_the_top_of_memory_do_not_overflow() {
        let map = [
            MemRegion {
                base: 0xffff_ffff_ffff_0000,
                len: u64::MAX,
                kind: Usable,
            },
            MemRegion {
                base: 0xffff_ffff_ffff_8123,
                len: 0x10,
                kind: Reserved,
            },
            MemRegion {
                base: 0x1000,
                len: 0x1000,
                kind: Usable,
            },
        ];
        let got = free_ranges(&map, &[Range::new(u64::MAX - 1, u64::MAX)]).unwrap();
        assert_eq!(
            got,
            vec![
                (0x1000, 0x2000),
                (0xffff_ffff_ffff_0000, 0xffff_ffff_ffff_8000),
                (0xffff_ffff_ffff_9000, TOP),
            ]
        );
        assert_eq!(highest_usable_end(&map), TOP);
    }

    #[test]
    fn oversized_inputs_are_refused() {
        let map = vec![region(0, 0x1000, Usable); MAX_REGIONS + 1];
        assert_eq!(free_ranges(&map, &[]), Err(MemMapError::TooManyRegions));
        let res = vec![Range::new(0, 1); MAX_RESERVED + 1];
        assert_eq!(
            free_ranges(&map[..1], &res),
            Err(MemMapError::TooManyReserved)
        );
        // Exactly at the limits is fine.
        let map: Vec<_> = (0..MAX_REGIONS as u64)
            .map(|i| region(i * 0x2000, i * 0x2000 + 0x1000, Usable))
            .collect();
        assert_eq!(
            usable_bytes(&map, &res[..MAX_RESERVED]).unwrap(),
            127 * 0x1000
        );
    }

    #[test]
    fn brute_force_agrees_on_a_messy_map() {
        let map = [
            region(0x3000, 0x20000, Usable),
            region(0x0, 0x8000, Usable),
            region(0x6800, 0x7100, Reserved),
            region(0x1f000, 0x30000, Usable),
            region(0x28000, 0x29000, Bad),
            region(0x40000, 0x50000, Reserved),
            region(0x44000, 0x48000, Usable),
        ];
        let reserved = [Range::new(0x10000, 0x10001), Range::new(0x2fff, 0x3000)];
        let mut expected = Vec::new();
        for p in (0..0x60000u64).step_by(0x1000) {
            let covers = |r: &MemRegion| r.base <= p && p + 0x1000 <= r.end();
            let touches = |s: u64, e: u64| s < p + 0x1000 && p < e;
            let free = map.iter().any(|r| r.kind == Usable && covers(r))
                && !map
                    .iter()
                    .any(|r| r.kind != Usable && touches(r.base, r.end()))
                && !reserved.iter().any(|r| touches(r.start, r.end));
            if free {
                expected.push(p);
            }
        }
        let mut got = Vec::new();
        for (s, e) in free_ranges(&map, &reserved).unwrap() {
            got.extend((s..e).step_by(0x1000));
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn modules_must_be_non_empty_and_disjoint_from_the_kernel_and_each_other() {
        let kernel = Range::new(0x100000, 0x200000);
        let a = Range::new(0x200000, 0x201000);
        let b = Range::new(0x300000, 0x301000);
        assert_eq!(validate_modules(kernel, &[a, b]), Ok(()));
        assert_eq!(validate_modules(kernel, &[]), Ok(()));
        assert_eq!(
            validate_modules(kernel, &[a, Range::new(5, 5)]),
            Err(MemMapError::EmptyModule { index: 1 })
        );
        assert_eq!(
            validate_modules(kernel, &[Range::new(9, 3)]),
            Err(MemMapError::EmptyModule { index: 0 })
        );
        assert_eq!(
            validate_modules(kernel, &[a, b, Range::new(0x1ff000, 0x200001)]),
            Err(MemMapError::ModuleOverlapsKernel { index: 2 })
        );
        assert_eq!(
            validate_modules(kernel, &[a, b, Range::new(0x300fff, 0x302000)]),
            Err(MemMapError::ModulesOverlap {
                first: 1,
                second: 2
            })
        );
        assert_eq!(
            MemMapError::ModulesOverlap {
                first: 1,
                second: 2
            }
            .to_string(),
            "boot modules overlap (modules 1 and 2)"
        );
    }
}
