//! Carrying out a [`LoadPlan`] on an abstract [`Target`].
//!
//! The loader server implements [`Target`] over the kernel's memory syscalls
//! (map fresh or memory-object frames into the new space, write through its
//! own mapping of them); the host tests implement it over a page map and
//! compare the result byte for byte.

use crate::plan::{LoadPlan, Perms, Segment};
use abi::layout::PAGE_SIZE;

/// What loading needs from the new address space.
///
/// `map` gives the pages their final rights *in the new process*; `write`
/// and `zero` are the loader's own stores and must work whatever those
/// rights are (the server writes through its own mapping of the frames).
pub trait Target {
    type Error;
    /// Map `len` bytes at `start` (both page-aligned) with `perms`.
    fn map(&mut self, start: u64, len: u64, perms: Perms) -> Result<(), Self::Error>;
    /// Store `bytes` at `addr` (inside a mapped range).
    fn write(&mut self, addr: u64, bytes: &[u8]) -> Result<(), Self::Error>;
    /// Store `len` zero bytes at `addr` (inside a mapped range).
    fn zero(&mut self, addr: u64, len: u64) -> Result<(), Self::Error>;
    /// Change the rights of `len` bytes at `start` (page-aligned, mapped).
    fn protect(&mut self, start: u64, len: u64, perms: Perms) -> Result<(), Self::Error>;
    /// Map `len` bytes at `start` with `perms` straight from the image's
    /// own pages, from byte `image_at` (page-aligned) of the image: `true`
    /// if done, `false` if this target cannot (then the segment is mapped
    /// and copied as usual). Asked only for segments [`shares_image`]
    /// allows.
    fn map_image(
        &mut self,
        _start: u64,
        _len: u64,
        _perms: Perms,
        _image_at: u64,
    ) -> Result<bool, Self::Error> {
        Ok(false)
    }
}

/// Whether segment `s` may be mapped straight from the image's pages
/// instead of copied (forku: the copy, and the zeroed pages it went into,
/// were the largest user-side cost of a spawn): it is read-only, its file
/// bytes fill it (no BSS), and it sits at the same offset in its first
/// page in the file as in memory. No relocation stores into it: the plan
/// refuses relocations outside writable segments
/// (`LoadError::RelocationOutsideWritable`). Its first and last page then
/// show the image's bytes beside the segment (headers, padding) instead of
/// zeros, as Linux's mapping of an ELF file does; the image itself never
/// changes (the loader's modules).
pub fn shares_image(s: &Segment<'_>) -> bool {
    !s.perms.write
        && s.file.len() as u64 == s.mem_len
        && s.vaddr % PAGE_SIZE == s.file_offset % PAGE_SIZE
}

/// Where in the image segment `s`'s first page starts (for
/// [`Target::map_image`]; meaningful when [`shares_image`] allows it).
pub fn image_page(s: &Segment<'_>) -> u64 {
    s.file_offset - (s.vaddr - s.start)
}

/// Bytes of the pages of `plan`'s segments that [`shares_image`] allows
/// (a target that maps them from the image needs that much less memory).
pub fn shared_bytes(plan: &LoadPlan<'_>) -> u64 {
    plan.segments()
        .iter()
        .filter(|s| shares_image(s))
        .map(|s| s.len())
        .sum()
}

/// Loads `plan` into `target`: each segment mapped, its head and tail zeroed
/// and its file bytes copied; then the relocations stored; then PT_GNU_RELRO
/// made read-only. Stops at the target's first error (the caller discards
/// the half-built space).
pub fn apply<T: Target>(plan: &LoadPlan<'_>, target: &mut T) -> Result<(), T::Error> {
    for s in plan.segments() {
        if shares_image(s) && target.map_image(s.start, s.len(), s.perms, image_page(s))? {
            continue;
        }
        target.map(s.start, s.len(), s.perms)?;
        for (addr, len) in s.zero_ranges() {
            if len != 0 {
                target.zero(addr, len)?;
            }
        }
        if !s.file.is_empty() {
            target.write(s.vaddr, s.file)?;
        }
    }
    for r in plan.relocations() {
        target.write(r.addr, &r.value.to_le_bytes())?;
    }
    if let Some((start, len)) = plan.relro() {
        target.protect(start, len, Perms::R)?;
    }
    Ok(())
}
