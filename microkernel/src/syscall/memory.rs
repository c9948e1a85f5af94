//! The memory family: `map_anon`, `unmap`, `protect` on the caller's
//! address space.
//!
//! The range and protection bits are checked by the address space itself
//! (`check_range`, `prot_flags` in the object layer), which other kernel
//! callers (process building) use too; decoding here resolves the caller's
//! space and hands the words on. (Moving those checks into a `PageRange`
//! request type belongs with the address-space object's own move: see
//! docs/decisions.md, "Syscall layer".)

use crate::arch::trap::TrapFrame;
use crate::object::space::AddressSpace;
use crate::sched::current;
use abi::Error;
use alloc::sync::Arc;

/// `map_anon` / `unmap` / `protect (addr, len[, prot])` on the caller's
/// space.
pub struct Range {
    space: Arc<AddressSpace>,
    addr: u64,
    len: u64,
    prot: u64,
}

impl Range {
    /// `PermissionDenied` for a caller without an address space.
    pub fn decode(f: &TrapFrame) -> Result<Range, Error> {
        let space = current().space.clone().ok_or(Error::PermissionDenied)?;
        Ok(Range {
            space,
            addr: f.rdi,
            len: f.rsi,
            prot: f.rdx,
        })
    }
}

/// Maps zeroed pages; returns the address.
pub fn map_anon(req: Range) -> Result<u64, Error> {
    req.space
        .map_anon(req.addr, req.len, req.prot)
        .map(|_| req.addr)
}

/// Removes the mappings in the range.
pub fn unmap(req: Range) -> Result<u64, Error> {
    req.space.unmap(req.addr, req.len).map(|_| 0)
}

/// Changes the protection of mapped pages.
pub fn protect(req: Range) -> Result<u64, Error> {
    req.space.protect(req.addr, req.len, req.prot).map(|_| 0)
}
