//! What the boot loader told us: the `unsafe` half of reading the multiboot2
//! information structure (MBI).
//!
//! The checks and the copy into plain fixed-size data live in
//! [`kcore::bootinfo`], host-tested; this module only does what needs the
//! early mapping: check that the loader's physical address is reachable
//! through it, and `load` the structure from there.

use kcore::memmap::Range;
use multiboot2::{BootInformation, BootInformationHeader};

// Only what the kernel names; `Module`, `MULTIBOOT2_MAGIC` etc. are in
// `kcore::bootinfo` (re-exporting them unused would trip `unused_imports`).
pub use kcore::bootinfo::{BootInfo, BootInfoError};

/// How much physical memory the boot stub's early map covers (from 0).
const EARLY_MAP_BYTES: u64 = 1 << 30;

/// Parses the information at physical `mbi_phys`, reached through `phys_offset`
/// (the early higher-half map covers physical 0..1 GiB), and checks it against
/// the kernel's own physical range.
///
/// # Errors
/// A bad magic, an MBI outside the early map or malformed, or anything
/// [`kcore::bootinfo::parse`] refuses.
///
/// # Safety
/// `mbi_phys` must be the address the boot loader passed, and physical memory
/// 0..1 GiB must be mapped at `phys_offset`.
// A large error is fine: built at most once per boot, then printed.
#[allow(clippy::result_large_err)]
pub unsafe fn parse(
    magic: u32,
    mbi_phys: u64,
    phys_offset: u64,
    kernel: Range,
) -> Result<BootInfo, BootInfoError> {
    // With another magic EBX is not an MBI: refuse before touching it.
    kcore::bootinfo::check_magic(magic)?;
    // The 8-byte header must be mapped, and 8-aligned as `load` requires.
    if mbi_phys == 0 || mbi_phys > EARLY_MAP_BYTES - 8 {
        return Err(BootInfoError::OutOfReach(mbi_phys));
    }
    let header = (mbi_phys + phys_offset) as *const BootInformationHeader;
    // `load` reads `total_size` bytes, so the whole structure must be mapped
    // too (a garbage size would otherwise fault instead of being reported).
    // SAFETY: the header's 8 bytes lie below 1 GiB (checked above), which the
    // caller guarantees is mapped at `phys_offset`; `read_unaligned` makes no
    // alignment demand (`load` checks alignment itself).
    let total_size = unsafe { header.cast::<u32>().read_unaligned() };
    if mbi_phys + u64::from(total_size) > EARLY_MAP_BYTES {
        return Err(BootInfoError::OutOfReach(mbi_phys));
    }
    // The whole `total_size` bytes lie below 1 GiB (checked above), nothing
    // writes the loader's memory while the result is in use (it is copied out
    // before this returns), and `load` validates alignment, size and tags.
    // SAFETY: the caller guarantees the pointer came from the loader and that
    // 0..1 GiB is mapped at `phys_offset`; see above for the rest.
    let info = unsafe { BootInformation::load(header) }.map_err(BootInfoError::Malformed)?;
    kcore::bootinfo::parse(magic, &info, mbi_phys, kernel)
}
