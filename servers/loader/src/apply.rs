//! Carrying out a [`LoadPlan`] on an abstract [`Target`].
//!
//! The loader server implements [`Target`] over the kernel's memory syscalls
//! (map fresh or memory-object frames into the new space, write through its
//! own mapping of them); the host tests implement it over a page map and
//! compare the result byte for byte.

use crate::plan::{LoadPlan, Perms};

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
}

/// Loads `plan` into `target`: each segment mapped, its head and tail zeroed
/// and its file bytes copied; then the relocations stored; then PT_GNU_RELRO
/// made read-only. Stops at the target's first error (the caller discards
/// the half-built space).
pub fn apply<T: Target>(plan: &LoadPlan<'_>, target: &mut T) -> Result<(), T::Error> {
    for s in plan.segments() {
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
