//! Copy-on-write and shared frames (issue 11, vm): memory objects' frames
//! mapped shared, a space cloned copy-on-write, and the write-fault path
//! that copies or takes over a shared page, including faults taken while a
//! kernel copy has another space loaded (`with_loaded`).

use super::*;

/// What the page-fault path did with a write fault ([`AddressSpace::resolve_write_fault`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteFaultOutcome {
    /// Resolved (copied, taken over, or already writable): retry the access.
    Retry,
    /// A real fault: the page is absent or read-only.
    Fault,
    /// A copy was needed and no frame was free.
    NoMemory,
}

impl AddressSpace {
    /// Maps the frames `frames` (owned by a memory object, which keeps its
    /// own references) at `va` with protection `p`: each gains an owner and
    /// the leaves carry [`PteFlags::SHARED`] (writes go to the object's
    /// frames, and a clone keeps sharing them). Each page is charged to this
    /// space like an anonymous one. All or nothing; in preemptible chunks.
    ///
    /// `private` (`abi::vm::MAP_PRIVATE`): the leaves are copy-on-write
    /// instead ([`PteFlags::COW`], read-only in hardware, `COW_WRITE` when
    /// `p` asks for writing): logically the space's own pages, whose first
    /// write copies the frame (or takes it over once this leaf is its last
    /// owner), and which a clone treats like any private page.
    pub fn map_object_frames(
        &self,
        va: u64,
        frames: &[u64],
        p: u64,
        private: bool,
    ) -> Result<(), Error> {
        let len = (frames.len() as u64)
            .checked_mul(PAGE_SIZE)
            .ok_or(Error::InvalidArgument)?;
        let pages = check_range(va, len)?;
        let mut flags = prot_flags(p)?;
        if !private {
            flags |= PteFlags::SHARED;
        } else if flags.contains(PteFlags::WRITABLE) {
            flags.remove(PteFlags::WRITABLE);
            flags |= PteFlags::COW | PteFlags::COW_WRITE;
        } else {
            flags |= PteFlags::COW;
        }
        self.try_charge(pages)?;
        let _edit = self.edit();
        let end = va + pages * PAGE_SIZE;
        let mut at = va;
        let mut failed = None;
        for chunk in frames.chunks(CHUNK_PAGES as usize) {
            let mut m = CountingMem {
                mem: DirectMem,
                tables: 0,
            };
            {
                let inner = self.inner.lock();
                for &pa in chunk {
                    if let Err(e) = mem::frame_acquire(pa) {
                        failed = Some(e);
                        break;
                    }
                    if let Err(e) = inner.pt.map(&mut m, at, pa, PageSize::Size4K, flags) {
                        mem::frame_release(pa);
                        failed = Some(map_err(e));
                        break;
                    }
                    at += PAGE_SIZE;
                }
            }
            self.charge_tables(&m);
            if failed.is_some() {
                break;
            }
            if at < end {
                preemption_point();
            }
        }
        if let Some(e) = failed {
            self.uncharge((end - at) / PAGE_SIZE);
            // Pages mapped so far may have been touched by other threads
            // (between chunks): the full unmap path, shootdown first.
            if at > va {
                self.unmap_edited(va, at);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Fills this new, empty space (nobody else holds it yet) with a
    /// copy-on-write clone of `src`'s user half ([`kcore::cow`]): private
    /// pages become read-only-shared on both sides, memory-object pages stay
    /// shared, lent pages stay lent. Every page is charged to this space.
    ///
    /// `src` is edited under its edit flag, in chunks; each chunk shoots
    /// down the source's pages it write-protected on every CPU that runs the
    /// source before the next chunk starts (so before this returns): from
    /// then on every write by the source's threads faults and copies. A
    /// write that lands between a chunk's edit and its shootdown (through a
    /// stale writable TLB entry) goes into the shared frame, so the clone
    /// sees either the value before it or that one, never a torn mix of
    /// frames (a page is one frame). On error the source keeps its COW
    /// leaves (still correct: a later write copies or takes the frame back)
    /// and the caller drops this space, which releases what it mapped.
    pub fn copy_on_write_from(&self, src: &AddressSpace) -> Result<(), Error> {
        let _edit = src.edit();
        let mut at = USER_MIN;
        loop {
            let mut budget = CHUNK_ENTRIES;
            let mut m = CountingMem {
                mem: DirectMem,
                tables: 0,
            };
            let mut failed = None;
            let (mut lo, mut hi) = (u64::MAX, 0);
            // Before this chunk's edits (the page-table lock publishes it
            // with them): a write fault that sees a leaf this chunk made
            // copy-on-write sees the flag too, until the shootdown below.
            src.wp_unflushed.store(true, Ordering::Relaxed);
            let r = {
                let sinner = src.inner.lock();
                let cinner = self.inner.lock();
                // The child's page table last mapped into (forkperf2): the
                // chunk's leaves come in address order, so most go straight
                // into it. Per chunk: the child's lock is held throughout,
                // and nobody else holds the new space anyway.
                let mut cursor = MapCursor::default();
                sinner
                    .pt
                    .edit_range(&mut DirectMem, at, USER_END, &mut budget, |va, e, size| {
                        if size != PageSize::Size4K {
                            failed = Some(Error::InvalidArgument);
                            return false;
                        }
                        let cl = kcore::cow::share_for_clone(*e);
                        let pa = *e & PHYS_ADDR_MASK;
                        if cl.acquire {
                            if let Err(err) = self.try_charge(1) {
                                failed = Some(err);
                                return false;
                            }
                            if let Err(err) = mem::frame_acquire(pa) {
                                self.uncharge(1);
                                failed = Some(err);
                                return false;
                            }
                        }
                        let flags = PteFlags::from_bits_retain(cl.child & !PHYS_ADDR_MASK);
                        if let Err(err) = cinner.pt.map_4k_with(&mut m, &mut cursor, va, pa, flags)
                        {
                            if cl.acquire {
                                mem::frame_release(pa);
                                self.uncharge(1);
                            }
                            failed = Some(map_err(err));
                            return false;
                        }
                        if *e != cl.source {
                            *e = cl.source;
                            lo = lo.min(va);
                            hi = hi.max(va + PAGE_SIZE);
                        }
                        true
                    })
            };
            self.charge_tables(&m);
            // Shoot the source's write-protected pages down before anything
            // else (a failed chunk included: what it changed stays changed).
            if lo < hi {
                tlb::flush_range(src.root(), lo, (hi - lo) / PAGE_SIZE);
            }
            // Release: pairs with the fault path's Acquire load; a fault
            // that reads false has this shootdown behind it.
            src.wp_unflushed.store(false, Ordering::Release);
            if let Some(e) = failed {
                return Err(e);
            }
            match r {
                Ok(None) => return Ok(()),
                Ok(Some(resume)) => at = resume,
                Err(e) => return Err(map_err(e)),
            }
            preemption_point();
        }
    }

    /// Resolves a write fault at `va` (from ring 3, or from a kernel copy to
    /// user memory) if it hit a copy-on-write page: the frame is copied into
    /// a fresh one, or taken over when this is its last owner; a page
    /// another CPU already resolved is just retried. Called with interrupts
    /// off, holding no lock.
    ///
    /// The copy replaces the leaf's frame, so every CPU that runs this space
    /// is shot down before the old frame loses this owner (it may then be
    /// freed): no thread of this space reads the old frame afterwards. The
    /// take-over only adds write permission to the same frame, so a stale
    /// read-only TLB entry elsewhere at worst faults once more (spurious).
    pub fn resolve_write_fault(&self, va: u64) -> WriteFaultOutcome {
        self.resolve_write_fault_as(va, false)
    }

    /// [`Self::resolve_write_fault`]; `flushed`: this CPU has just shot the
    /// page down on every CPU running this space, so no stale writable TLB
    /// entry can store to the old frame any more and a pending clone
    /// shootdown need not be waited for.
    fn resolve_write_fault_as(&self, va: u64, flushed: bool) -> WriteFaultOutcome {
        use kcore::cow::{on_write_fault, private_writable, WriteFault};
        let page = va & !(PAGE_SIZE - 1);
        if !(USER_MIN..USER_END).contains(&page) {
            return WriteFaultOutcome::Fault;
        }
        enum Done {
            Local,
            Copied(u64),
            /// A copy is due but a clone's write-protection of this space is
            /// not shot down yet: shoot the page down first, then copy.
            FlushFirst,
            Fault,
            NoMemory,
        }
        let r = {
            let inner = self.inner.lock();
            inner.pt.update_leaf(&mut DirectMem, page, |e, size| {
                if size != PageSize::Size4K {
                    return Done::Fault;
                }
                let pa = *e & PHYS_ADDR_MASK;
                match on_write_fault(*e, mem::frame_owners(pa)) {
                    WriteFault::Spurious => Done::Local,
                    WriteFault::Reuse => {
                        *e = private_writable(*e, pa);
                        Done::Local
                    }
                    // Acquire: pairs with the clone's Release after its
                    // shootdown (the flag's store before its edits is
                    // ordered by this lock). Another CPU may still store to
                    // `pa` through a writable TLB entry from before the
                    // clone: a copy taken now would lose those stores.
                    WriteFault::Copy if !flushed && self.wp_unflushed.load(Ordering::Acquire) => {
                        Done::FlushFirst
                    }
                    WriteFault::Copy => {
                        let Ok(f) = mem::alloc_frame() else {
                            return Done::NoMemory;
                        };
                        // `pa` is a frame this leaf owns a reference to, so
                        // it stays allocated, and nobody writes it (every
                        // leaf mapping it is copy-on-write, read-only).
                        // SAFETY: `f` is fresh (only this code reaches it),
                        // `pa` stays as said; both lie in the direct map.
                        unsafe {
                            core::ptr::copy_nonoverlapping(
                                mem::phys_to_virt(pa) as *const u8,
                                mem::phys_to_virt(f.addr()) as *mut u8,
                                PAGE_SIZE as usize,
                            );
                        }
                        *e = private_writable(*e, f.addr());
                        Done::Copied(pa)
                    }
                    WriteFault::Refuse => Done::Fault,
                }
            })
        };
        match r {
            Ok(Done::Local) => {
                mem::flush_local(page);
                WriteFaultOutcome::Retry
            }
            Ok(Done::Copied(old)) => {
                tlb::flush_range(self.root(), page, 1);
                mem::frame_release(old);
                WriteFaultOutcome::Retry
            }
            Ok(Done::FlushFirst) => {
                // No CPU stores to the frame through this space once this
                // returns (the leaf is read-only, and a leaf made writable
                // on it meanwhile is found again below): the copy is then
                // complete.
                tlb::flush_range(self.root(), page, 1);
                self.resolve_write_fault_as(va, true)
            }
            Ok(Done::NoMemory) => WriteFaultOutcome::NoMemory,
            Ok(Done::Fault) | Err(_) => WriteFaultOutcome::Fault,
        }
    }
}

/// The space a kernel copy loaded on each CPU in place of the running
/// thread's own ([`with_loaded`]; null when none): a write fault during the
/// copy is resolved in it. Each slot is written and read only by its own CPU
/// with interrupts off (the fault is synchronous), so Relaxed is enough.
static BORROWED_LOAD: [core::sync::atomic::AtomicPtr<AddressSpace>; crate::arch::percpu::MAX_CPUS] =
    [const { core::sync::atomic::AtomicPtr::new(core::ptr::null_mut()) };
        crate::arch::percpu::MAX_CPUS];

/// Runs `f` with `space` loaded on this CPU in place of `own` (the running
/// thread's), then loads `own` again: for a kernel copy into another
/// process's memory (IPC delivery). A copy-on-write fault during `f` is
/// resolved in `space` ([`resolve_loaded_write_fault`]); before, it was
/// resolved in `own`, which either failed the copy or, where `own` had a
/// writable page at that address, retried the faulting write for good.
/// Interrupts must be off (nothing else runs on this CPU in between) and
/// the caller keeps both spaces alive.
pub fn with_loaded<R>(space: &AddressSpace, own: &AddressSpace, f: impl FnOnce() -> R) -> R {
    let slot = &BORROWED_LOAD[crate::arch::percpu::cpu_index()];
    slot.store(
        space as *const AddressSpace as *mut AddressSpace,
        Ordering::Relaxed,
    );
    // SAFETY: both roots are live address spaces (the caller keeps them)
    // whose kernel halves are the kernel's; interrupts are off, so nothing
    // but `f` runs with `space` loaded, and `own` is back before return.
    unsafe { crate::arch::mmu::load_root(space.root()) };
    let r = f();
    // SAFETY: as above: the caller's own space again.
    unsafe { crate::arch::mmu::load_root(own.root()) };
    slot.store(core::ptr::null_mut(), Ordering::Relaxed);
    r
}

/// Resolves a write fault at `addr` in the address space loaded on this CPU
/// (the running thread's `own`, or the one [`with_loaded`] put there), with
/// interrupts off; `Fault` when neither is loaded.
pub fn resolve_loaded_write_fault(own: Option<&AddressSpace>, addr: u64) -> WriteFaultOutcome {
    let root = crate::arch::mmu::current_root();
    if let Some(s) = own.filter(|s| s.root() == root) {
        return s.resolve_write_fault(addr);
    }
    let p = BORROWED_LOAD[crate::arch::percpu::cpu_index()].load(Ordering::Relaxed);
    // SAFETY: non-null only inside `with_loaded` on this CPU, whose caller
    // keeps the space alive for the whole of it; this fault interrupted it.
    match unsafe { p.as_ref() } {
        Some(s) if s.root() == root => s.resolve_write_fault(addr),
        _ => WriteFaultOutcome::Fault,
    }
}
