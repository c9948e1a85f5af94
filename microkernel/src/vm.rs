//! User address spaces.
//!
//! Each process has its own PML4 whose kernel half (entries 256..512) is shared
//! with every other (see [`crate::mem`]). User mappings always carry USER, are
//! NX unless executable, writable only if asked, and never writable and
//! executable at once (W^X). Frames mapped here are owned by the address space
//! and freed with it, except *borrowed* ranges (boot modules lent to init), which
//! are mapped read-only and never freed.

use crate::mem::{self, DirectMem};
use crate::sync::IrqMutex;
use abi::layout::{PAGE_SIZE, USER_END, USER_MIN};
use abi::{prot, Error};
use alloc::sync::Arc;
use alloc::vec::Vec;
use kcore::frame::PhysFrame;
use kcore::paging::{MapError, PageSize, PageTable, PteFlags};

/// One process's page tables.
pub struct AddressSpace {
    inner: IrqMutex<Inner>,
    root: u64,
}

struct Inner {
    pt: PageTable,
    borrowed: Vec<(u64, u64)>,
}

impl Inner {
    fn is_borrowed(&self, va: u64) -> bool {
        self.borrowed.iter().any(|&(s, e)| va >= s && va < e)
    }
}

fn map_err(e: MapError) -> Error {
    match e {
        MapError::AlreadyMapped | MapError::HugePageInTheWay => Error::AlreadyExists,
        MapError::NotMapped => Error::NotFound,
        MapError::NoMemory => Error::NoMemory,
        _ => Error::InvalidArgument,
    }
}

/// Checks a page-aligned user range and returns its page count.
fn check_range(addr: u64, len: u64) -> Result<u64, Error> {
    if !addr.is_multiple_of(PAGE_SIZE) || len == 0 {
        return Err(Error::InvalidArgument);
    }
    let len = len
        .checked_next_multiple_of(PAGE_SIZE)
        .ok_or(Error::BadAddress)?;
    let end = addr.checked_add(len).ok_or(Error::BadAddress)?;
    if addr < USER_MIN || end > USER_END {
        return Err(Error::BadAddress);
    }
    Ok(len / PAGE_SIZE)
}

/// Page flags for user protection bits ([`abi::prot`]); W+X is refused.
pub fn prot_flags(p: u64) -> Result<PteFlags, Error> {
    if p & !prot::ALL != 0 || p & prot::WRITE != 0 && p & prot::EXEC != 0 {
        return Err(Error::InvalidArgument);
    }
    let mut f = PteFlags::USER;
    if p & prot::WRITE != 0 {
        f |= PteFlags::WRITABLE;
    }
    if p & prot::EXEC == 0 {
        f |= mem::nx_flag();
    }
    Ok(f)
}

impl AddressSpace {
    /// A new address space with an empty user half.
    pub fn new() -> Result<Arc<AddressSpace>, Error> {
        let pt = mem::with_kernel_pt(|kpt, m| PageTable::create_with_kernel_half(m, kpt))
            .map_err(|_| Error::NoMemory)?;
        Ok(Arc::new(AddressSpace {
            root: pt.root(),
            inner: IrqMutex::new(Inner {
                pt,
                borrowed: Vec::new(),
            }),
        }))
    }

    /// The PML4's physical address (for CR3).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Maps `len` bytes of zeroed memory at `addr` with `prot`. All or nothing.
    pub fn map_anon(&self, addr: u64, len: u64, p: u64) -> Result<(), Error> {
        let pages = check_range(addr, len)?;
        let flags = prot_flags(p)?;
        let inner = self.inner.lock();
        for i in 0..pages {
            let va = addr + i * PAGE_SIZE;
            let r = mem::alloc_zeroed_frame()
                .map_err(|_| Error::NoMemory)
                .and_then(|f| {
                    inner
                        .pt
                        .map(&mut DirectMem, va, f.addr(), PageSize::Size4K, flags)
                        .map_err(|e| {
                            let _ = mem::free_frame(f);
                            map_err(e)
                        })
                });
            if let Err(e) = r {
                // Roll back the pages this call mapped (never mapped before, so
                // no TLB holds them).
                for j in 0..i {
                    let va = addr + j * PAGE_SIZE;
                    if let Ok((pa, _)) = inner.pt.unmap(&mut DirectMem, va) {
                        let _ = mem::free_frame(PhysFrame::containing(pa));
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Maps `pages` frames from `phys` (frames the caller owns, or lends when
    /// `borrowed`) at `va`. All or nothing: on error nothing stays mapped and
    /// the frames are still the caller's.
    pub fn map_frames(
        &self,
        va: u64,
        phys: u64,
        pages: u64,
        flags: PteFlags,
        borrowed: bool,
    ) -> Result<(), Error> {
        check_range(va, pages.checked_mul(PAGE_SIZE).ok_or(Error::BadAddress)?)?;
        let mut inner = self.inner.lock();
        for i in 0..pages {
            let r = inner.pt.map(
                &mut DirectMem,
                va + i * PAGE_SIZE,
                phys + i * PAGE_SIZE,
                PageSize::Size4K,
                flags,
            );
            if let Err(e) = r {
                // All or nothing: take back what this call mapped (never
                // mapped before, so no TLB holds it; the frames stay the
                // caller's).
                for j in 0..i {
                    let _ = inner.pt.unmap(&mut DirectMem, va + j * PAGE_SIZE);
                }
                return Err(map_err(e));
            }
        }
        if borrowed {
            inner.borrowed.push((va, va + pages * PAGE_SIZE));
        }
        Ok(())
    }

    /// Removes the mappings in a range (holes are skipped) and frees the frames.
    pub fn unmap(&self, addr: u64, len: u64) -> Result<(), Error> {
        let pages = check_range(addr, len)?;
        let inner = self.inner.lock();
        let mut freed = Vec::new();
        for i in 0..pages {
            let va = addr + i * PAGE_SIZE;
            if let Ok((pa, _)) = inner.pt.unmap(&mut DirectMem, va) {
                if !inner.is_borrowed(va) {
                    freed.push(PhysFrame::containing(pa));
                }
            }
        }
        drop(inner);
        // The frames may be reused only after no CPU can reach them any more.
        crate::smp::flush_tlb_range(self, addr, pages);
        for f in freed {
            let _ = mem::free_frame(f);
        }
        Ok(())
    }

    /// Changes the protection of every mapped page in a range; fails with
    /// NotFound (and changes nothing) if any page is unmapped.
    pub fn protect(&self, addr: u64, len: u64, p: u64) -> Result<(), Error> {
        let pages = check_range(addr, len)?;
        let flags = prot_flags(p)?;
        let inner = self.inner.lock();
        for i in 0..pages {
            if inner
                .pt
                .translate(&mut DirectMem, addr + i * PAGE_SIZE)
                .is_none()
            {
                return Err(Error::NotFound);
            }
        }
        for i in 0..pages {
            let va = addr + i * PAGE_SIZE;
            if inner.is_borrowed(va) && flags.contains(PteFlags::WRITABLE) {
                return Err(Error::PermissionDenied);
            }
            inner
                .pt
                .protect(&mut DirectMem, va, flags)
                .map_err(map_err)?;
        }
        drop(inner);
        crate::smp::flush_tlb_range(self, addr, pages);
        Ok(())
    }
}

impl Drop for AddressSpace {
    fn drop(&mut self) {
        let inner = self.inner.lock();
        let borrowed = inner.borrowed.clone();
        inner.pt.clear_user_half(&mut DirectMem, |va, pa, _| {
            if !borrowed.iter().any(|&(s, e)| va >= s && va < e) {
                let _ = mem::free_frame(PhysFrame::containing(pa));
            }
        });
        // No CPU has this root loaded any more (the last thread is gone), so
        // the PML4 frame can go back.
        let _ = mem::free_frame(PhysFrame::containing(self.root));
    }
}
