//! User address spaces.
//!
//! Each process has its own PML4 whose kernel half (entries 256..512) is shared
//! with every other (see [`crate::mem`]). User mappings always carry USER, are
//! NX unless executable, writable only if asked, and never writable and
//! executable at once (W^X). Frames mapped here are owned by the address space
//! and freed with it, except *borrowed* ones (boot modules lent to init), which
//! are mapped read-only and never freed. Whether a frame is borrowed is a
//! software bit of its page-table entry ([`PteFlags::BORROWED`]), so the record
//! disappears with the mapping: a frame mapped later at the same address is
//! owned and freed as usual.
//!
//! # Bounded work
//! Syscalls run with interrupts off, so `map_anon`, `unmap` and `protect` work
//! in chunks: each chunk takes the page-table lock, does a bounded amount of
//! work (at most [`CHUNK_ENTRIES`] page-table entries examined, or
//! [`CHUNK_PAGES`] pages allocated), releases the lock, shoots down what it
//! removed, and then passes a preemption point ([`crate::arch::cpu::preemption_point`])
//! where pending interrupts are taken and a better thread may run. Range walks
//! skip absent upper-level tables, so they cost what is mapped, not what is
//! named: unmapping the whole user half of a sparse space is a few hundred
//! entries.
//!
//! # Concurrency
//! Between chunks the page-table lock is free, so edits of one space by
//! several threads are serialised by a second, coarser guard, the *edit
//! flag*, held for a whole operation (across its preemption points). A thread
//! that finds it taken sleeps a tick and retries (the holder may be a
//! lower-priority thread preempted on the same CPU, so spinning could
//! livelock). Each operation is therefore atomic with respect to the others;
//! only ring-3 accesses by other threads can observe a half-done operation
//! (pages already unmapped, already mapped, or already reprotected), as they
//! could observe it under any kernel that lets other CPUs run meanwhile.

use crate::arch::cpu::preemption_point;
use crate::arch::tlb;
use crate::mem::{self, DirectMem};
use crate::sync::IrqMutex;
use abi::layout::{PAGE_SIZE, USER_END, USER_MIN};
use abi::{prot, Error};
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kcore::frame::PhysFrame;
use kcore::paging::{
    Freed, MapError, PageSize, PageTable, PhysMem, PteFlags, ENTRIES, PHYS_ADDR_MASK,
};

/// How an editor that found the edit flag held waits about `ns` (a short
/// sleep, or a yield when the sleep list is full). Installed once at boot by
/// the scheduler layer, so this data layer never calls up into it.
static EDIT_WAIT: spin::Once<fn(u64)> = spin::Once::new();

/// Installs how a contended editor waits (once, at boot).
pub fn set_edit_wait(f: fn(u64)) {
    EDIT_WAIT.call_once(|| f);
}

fn edit_wait(ns: u64) {
    match EDIT_WAIT.get() {
        Some(f) => f(ns),
        // Before the scheduler runs nothing else edits: just let interrupts in.
        None => preemption_point(),
    }
}

/// Page-table entries a range walk examines per chunk (each chunk runs with
/// interrupts off and the page-table lock held).
pub const CHUNK_ENTRIES: usize = 512;
/// Pages `map_anon` allocates, zeroes and maps per chunk.
pub const CHUNK_PAGES: u64 = 32;
/// How long a failed attempt at the edit flag makes new operations wait
/// behind the waiter (two ticks: a waiter polls once a tick).
const CONTENDED_NS: u64 = 2_000_000;
/// Frames an `unmap` chunk collects before it flushes and frees them.
const CHUNK_FRAMES: usize = 128;
/// How long a thread waiting for another's edit sleeps between looks: a
/// whole tick, so a lower-priority holder on the same CPU gets to run.
const EDIT_WAIT_NS: u64 = 1_000_000;

/// Frames held against a limit: one address space's, or a whole program's
/// (a program and every process it starts share one, see
/// `process::Account`). What is charged: every owned frame mapped into a user
/// space (anonymous memory, boot-image pages) and every page-table frame,
/// the PML4 included; lent (borrowed) frames are not.
pub struct PageBudget {
    used: AtomicU64,
    limit: u64,
}

impl PageBudget {
    /// An empty budget of `limit` pages.
    pub const fn new(limit: u64) -> PageBudget {
        PageBudget {
            used: AtomicU64::new(0),
            limit,
        }
    }

    /// Charges `n` pages unless that would pass the limit.
    pub fn try_charge(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                u.checked_add(n).filter(|&t| t <= self.limit)
            })
            .is_ok()
    }

    /// Charges `n` pages already taken (page tables found allocated after a
    /// map: at most three per page mapped, so the limit is passed by at most
    /// that much before the next `try_charge` refuses).
    fn force_charge(&self, n: u64) {
        self.used.fetch_add(n, Ordering::SeqCst);
    }

    /// Returns `n` pages. Returning more than was charged is a kernel bug:
    /// logged, and the count stops at 0 (a wrapped count would refuse every
    /// later charge, NoMemory for good).
    pub fn uncharge(&self, n: u64) {
        if self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| u.checked_sub(n))
            .is_err()
        {
            log::error!("page budget: {n} pages returned, more than charged");
            self.used.store(0, Ordering::SeqCst);
        }
    }

    /// Pages charged now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::SeqCst)
    }
}

/// [`DirectMem`] that counts the page-table frames it allocates and frees,
/// so an operation can charge them.
struct CountingMem {
    mem: DirectMem,
    tables: i64,
}

impl PhysMem for CountingMem {
    fn table(&mut self, phys: u64) -> &mut [u64; ENTRIES] {
        self.mem.table(phys)
    }
    fn alloc_table(&mut self) -> Option<u64> {
        let t = self.mem.alloc_table();
        self.tables += t.is_some() as i64;
        t
    }
    fn free_table(&mut self, phys: u64) {
        self.tables -= 1;
        self.mem.free_table(phys)
    }
}

/// One process's page tables.
pub struct AddressSpace {
    inner: IrqMutex<Inner>,
    root: u64,
    /// Held by the one operation editing this space (see the module docs).
    editing: AtomicBool,
    /// When a thread last found `editing` taken (ns, 0: never): while this is
    /// recent, a thread starting a new operation queues behind the waiters
    /// instead of taking the flag the moment it is free (see `edit`).
    contended: AtomicU64,
    /// This space's frames, up to `abi::limits::MAX_MAPPED_BYTES_PER_PROCESS`.
    own: PageBudget,
    /// The program's budget the same frames are charged to as well.
    program: Option<Arc<PageBudget>>,
    /// Set while a clone's chunk has write-protected leaves of this space
    /// that it has not shot down yet: another CPU may still store to their
    /// frames through a writable TLB entry, so a copy-on-write copy must
    /// not be taken from them until that page is shot down
    /// ([`Self::resolve_write_fault`]).
    wp_unflushed: AtomicBool,
}

struct Inner {
    pt: PageTable,
}

/// Proof of holding [`AddressSpace::editing`]; releases it on drop, and
/// gives back the priority the holder had before the ceiling.
struct EditGuard<'a> {
    space: &'a AddressSpace,
    /// The holder's own priority while it runs at its process's ceiling.
    restore: Option<u8>,
}

impl Drop for EditGuard<'_> {
    fn drop(&mut self) {
        // Release: the page-table edits of this operation happen-before the
        // next editor's (the page-table lock orders them too; this is belt
        // and braces for the flag itself).
        self.space.editing.store(false, Ordering::Release);
        if let Some(p) = self.restore {
            // The guard never leaves the thread that took it.
            let t = super::thread::current();
            t.sched.priority.store(p, Ordering::SeqCst);
            t.sched.ceiling.store(false, Ordering::SeqCst);
        }
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

/// The pages removed by one `unmap` chunk: the span to flush and the owned
/// frames to free once no CPU can reach them.
struct Removed {
    lo: u64,
    hi: u64,
    /// Not zeroed up front (an array would cost a 1 KiB memset per call).
    frames: heapless::Vec<u64, CHUNK_FRAMES>,
}

impl AddressSpace {
    /// A new address space with an empty user half, charged to no program.
    pub fn new() -> Result<Arc<AddressSpace>, Error> {
        Self::new_charged(None)
    }

    /// A new address space whose frames are charged to its own limit and
    /// to `program`'s (the PML4 is charged at once).
    pub fn new_charged(program: Option<Arc<PageBudget>>) -> Result<Arc<AddressSpace>, Error> {
        if let Some(b) = &program {
            if !b.try_charge(1) {
                return Err(Error::NoMemory);
            }
        }
        let pt = match mem::with_kernel_pt(|kpt, m| PageTable::create_with_kernel_half(m, kpt)) {
            Ok(pt) => pt,
            Err(_) => {
                if let Some(b) = &program {
                    b.uncharge(1);
                }
                return Err(Error::NoMemory);
            }
        };
        let own = PageBudget::new(abi::limits::MAX_MAPPED_BYTES_PER_PROCESS / PAGE_SIZE);
        own.force_charge(1);
        Ok(Arc::new(AddressSpace {
            root: pt.root(),
            inner: IrqMutex::new(Inner { pt }),
            editing: AtomicBool::new(false),
            contended: AtomicU64::new(0),
            own,
            program,
            wp_unflushed: AtomicBool::new(false),
        }))
    }

    /// Charges `n` pages to this space and its program, or `NoMemory` (and
    /// nothing charged) if either limit would be passed.
    pub fn try_charge(&self, n: u64) -> Result<(), Error> {
        if !self.own.try_charge(n) {
            return Err(Error::NoMemory);
        }
        if let Some(b) = &self.program {
            if !b.try_charge(n) {
                self.own.uncharge(n);
                return Err(Error::NoMemory);
            }
        }
        Ok(())
    }

    fn force_charge(&self, n: u64) {
        self.own.force_charge(n);
        if let Some(b) = &self.program {
            b.force_charge(n);
        }
    }

    /// Returns `n` pages charged by [`Self::try_charge`].
    pub fn uncharge(&self, n: u64) {
        self.own.uncharge(n);
        if let Some(b) = &self.program {
            b.uncharge(n);
        }
    }

    /// Charges (or returns) the page-table frames an operation allocated
    /// (or freed).
    fn charge_tables(&self, m: &CountingMem) {
        if m.tables > 0 {
            self.force_charge(m.tables as u64);
        } else if m.tables < 0 {
            self.uncharge(m.tables.unsigned_abs());
        }
    }

    /// Frames charged to this space now (mapped owned pages and tables).
    pub fn charged_pages(&self) -> u64 {
        self.own.used()
    }

    /// The PML4's physical address (for CR3).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Takes the edit flag, sleeping a tick at a time while another thread
    /// holds it. Callers hold no lock (sleeping may switch threads).
    ///
    /// # Priority ceiling
    /// The holder runs its whole operation at its process's ceiling (the MCP,
    /// the best priority any thread of the process may have; immediate
    /// priority-ceiling protocol), and gets its own priority back when the
    /// guard drops. Only threads of one process share a space, so no waiter
    /// is ever better than the holder: without this, a high-priority waiter
    /// could wait forever for a low-priority holder preempted (at a
    /// preemption point) on its CPU while any middle-priority thread of any
    /// process runs there (unbounded priority inversion; ring-3 case
    /// `edit_flag_holder_is_not_starved_by_a_middle_priority_hog`). It also
    /// makes the fallback below sound: a waiter that yields queues behind a
    /// holder on its CPU (same priority level, FIFO) instead of running
    /// again at once. Not an escalation: a thread may set itself to the
    /// MCP anyway. A thread at the ceiling is still preempted by one queued
    /// *at* the ceiling (`sched::tick`), so the process's own best threads
    /// (a latency-critical sleeper) are not held up by its edits.
    ///
    /// # No barging
    /// A waiter polls once a tick, while a thread that loops over
    /// map/unmap/protect holds the flag nearly all the time and takes it
    /// again the instant it frees it, so a plain test-and-set starves the
    /// waiter for good (ring-3 case
    /// `edit_flag_holder_is_not_starved_by_a_middle_priority_hog`). So every
    /// failed attempt stamps `contended`, and a thread *starting* an
    /// operation while a stamp is recent (under [`CONTENDED_NS`]) waits a
    /// tick first instead of taking the flag: the waiter gets it. A waiter
    /// that took it clears the stamp (other waiters stamp it again at their
    /// next poll). A stale stamp (its waiter was killed, or gave up) costs at
    /// most one tick, never a deadlock: nothing here waits for a particular
    /// thread.
    fn edit(&self) -> EditGuard<'_> {
        let mut waited = false;
        loop {
            let stamp = self.contended.load(Ordering::Relaxed);
            let defer =
                !waited && stamp != 0 && crate::time::now_ns().saturating_sub(stamp) < CONTENDED_NS;
            if !defer
                && self
                    .editing
                    .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                if waited {
                    self.contended.store(0, Ordering::Relaxed);
                }
                break;
            }
            if !defer {
                self.contended
                    .store(crate::time::now_ns().max(1), Ordering::Relaxed);
            }
            waited = true;
            // A full sleep list (NoMemory) must not turn this into a spin with
            // interrupts off: let interrupts in and give the CPU away instead.
            edit_wait(EDIT_WAIT_NS);
        }
        let t = super::thread::current();
        let restore = t.process.as_ref().and_then(|p| {
            let own = t.sched.priority.load(Ordering::SeqCst);
            (own > p.mcp).then(|| {
                t.sched.ceiling.store(true, Ordering::SeqCst);
                t.sched.priority.store(p.mcp, Ordering::SeqCst);
                own
            })
        });
        EditGuard {
            space: self,
            restore,
        }
    }

    /// Tears the user half down in preemptible chunks, so that the final drop
    /// (which runs where the last reference goes, often `finish_switch`,
    /// with interrupts off) finds nothing left to free but the root.
    ///
    /// Called by the last thread of a dying process before it switches away
    /// (`lifecycle::exit_current`), and by a process build that failed: no thread
    /// will run user code in this space again. Each chunk detaches at most
    /// [`CHUNK_FRAMES`] frames (leaves and emptied tables) under the
    /// page-table lock, then shoots down every CPU that still has the space
    /// loaded with a *full* flush (detached tables may sit in
    /// paging-structure caches, which only a full flush clears), then frees
    /// them, then passes a preemption point. Callers hold no lock.
    ///
    /// If another operation holds the edit flag (it cannot, for a dying
    /// space, but sleeping here is not an option: the caller may be killed)
    /// this does nothing and the drop does the work.
    pub fn teardown(&self) {
        if self
            .editing
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let _edit = EditGuard {
            space: self,
            restore: None,
        };
        let mut at = 0;
        loop {
            let mut frames = [0u64; CHUNK_FRAMES];
            let mut n = 0;
            let mut removed = false;
            let mut budget = CHUNK_ENTRIES;
            let r = {
                let inner = self.inner.lock();
                inner
                    .pt
                    .teardown_user(&mut DirectMem, at, &mut budget, &mut |fr| {
                        removed = true;
                        // Bit 0 of a recorded address (always 4 KiB
                        // aligned) marks a table: freed outright, while a
                        // leaf's frame loses one owner.
                        match fr {
                            Freed::Leaf(_, pa, _, f) if !f.contains(PteFlags::BORROWED) => {
                                frames[n] = pa;
                                n += 1;
                            }
                            Freed::Leaf(..) => {}
                            Freed::Table(pa) => {
                                frames[n] = pa | 1;
                                n += 1;
                            }
                        }
                        // A pause may still be followed by up to three
                        // table reports (see `teardown_user`): keep room.
                        n + 3 < CHUNK_FRAMES
                    })
            };
            if removed {
                // More than FULL_FLUSH_PAGES pages: a full (CR3) flush here
                // and on every CPU that has this root loaded.
                tlb::flush_range(self.root(), 0, tlb::FULL_FLUSH_PAGES + 1);
            }
            for &pa in &frames[..n] {
                if pa & 1 != 0 {
                    let _ = mem::free_frame(PhysFrame::containing(pa));
                } else {
                    mem::frame_release(pa);
                }
            }
            match r {
                None => return,
                Some(resume) => at = resume,
            }
            preemption_point();
        }
    }

    /// Maps `len` bytes of zeroed memory at `addr` with `prot`. All or nothing:
    /// on error every page this call mapped is unmapped (and shot down) again.
    pub fn map_anon(&self, addr: u64, len: u64, p: u64) -> Result<(), Error> {
        let pages = check_range(addr, len)?;
        let flags = prot_flags(p)?;
        // Cheap early refusal: a request beyond all free memory fails now,
        // not after allocating everything and rolling it back.
        if pages > mem::free_frames() as u64 {
            return Err(Error::NoMemory);
        }
        // The pages are charged up front (a request beyond the process's or
        // its program's limit fails before anything is allocated); page
        // tables are charged as each chunk allocates them.
        self.try_charge(pages)?;
        let _edit = self.edit();
        let end = addr + pages * PAGE_SIZE;
        let mut va = addr;
        while va < end {
            let stop = end.min(va + CHUNK_PAGES * PAGE_SIZE);
            let r = self.map_chunk(va, stop, flags);
            let reached = match r {
                Ok(()) => stop,
                Err((at, _)) => at,
            };
            if let Err((_, e)) = r {
                // The pages never mapped go back now; those mapped go back
                // as the unmap below frees them.
                self.uncharge((end - reached) / PAGE_SIZE);
                // Other threads may have touched the pages already mapped
                // (between chunks), so they go through the full unmap path
                // with its shootdown before their frames are freed.
                if reached > addr {
                    self.unmap_edited(addr, reached);
                }
                return Err(e);
            }
            va = reached;
            if va < end {
                preemption_point();
            }
        }
        Ok(())
    }

    /// Maps fresh zeroed frames at `[va, stop)` under one lock hold. On error
    /// returns how far it got (pages below are mapped) and why.
    fn map_chunk(&self, mut va: u64, stop: u64, flags: PteFlags) -> Result<(), (u64, Error)> {
        let mut m = CountingMem {
            mem: DirectMem,
            tables: 0,
        };
        let r = (|| {
            let inner = self.inner.lock();
            while va < stop {
                let f = mem::alloc_zeroed_frame().map_err(|_| (va, Error::NoMemory))?;
                if let Err(e) = inner.pt.map(&mut m, va, f.addr(), PageSize::Size4K, flags) {
                    let _ = mem::free_frame(f);
                    return Err((va, map_err(e)));
                }
                va += PAGE_SIZE;
            }
            Ok(())
        })();
        self.charge_tables(&m);
        r
    }

    /// Maps `pages` frames from `phys` (frames the caller owns, or lends when
    /// `borrowed`) at `va`. All or nothing: on error nothing stays mapped and
    /// the frames are still the caller's. Kernel-internal (boot images, init's
    /// modules): the caller bounds `pages`, and nobody else can reach the
    /// space yet, so it runs in one piece.
    pub fn map_frames(
        &self,
        va: u64,
        phys: u64,
        pages: u64,
        flags: PteFlags,
        borrowed: bool,
    ) -> Result<(), Error> {
        check_range(va, pages.checked_mul(PAGE_SIZE).ok_or(Error::BadAddress)?)?;
        let flags = if borrowed {
            flags | PteFlags::BORROWED
        } else {
            self.try_charge(pages)?;
            flags
        };
        let mut m = CountingMem {
            mem: DirectMem,
            tables: 0,
        };
        let r = self.map_frames_locked(va, phys, pages, flags, &mut m);
        self.charge_tables(&m);
        if r.is_err() && !borrowed {
            self.uncharge(pages);
        }
        r
    }

    fn map_frames_locked(
        &self,
        va: u64,
        phys: u64,
        pages: u64,
        flags: PteFlags,
        m: &mut CountingMem,
    ) -> Result<(), Error> {
        let inner = self.inner.lock();
        for i in 0..pages {
            let r = inner.pt.map(
                m,
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
                    let _ = inner.pt.unmap(m, va + j * PAGE_SIZE);
                }
                return Err(map_err(e));
            }
        }
        Ok(())
    }

    /// Removes the mappings in a range (holes are skipped) and frees the owned
    /// frames. Costs what is mapped in the range, in preemptible chunks.
    pub fn unmap(&self, addr: u64, len: u64) -> Result<(), Error> {
        let pages = check_range(addr, len)?;
        let _edit = self.edit();
        self.unmap_edited(addr, addr + pages * PAGE_SIZE);
        Ok(())
    }

    /// The body of [`Self::unmap`] for a caller holding the edit flag.
    fn unmap_edited(&self, addr: u64, end: u64) {
        let mut at = addr;
        loop {
            let mut rm = Removed {
                lo: u64::MAX,
                hi: 0,
                frames: heapless::Vec::new(),
            };
            let mut budget = CHUNK_ENTRIES;
            let r = {
                let inner = self.inner.lock();
                inner
                    .pt
                    .unmap_range(&mut DirectMem, at, end, &mut budget, |va, pa, size, f| {
                        rm.lo = rm.lo.min(va);
                        rm.hi = rm.hi.max(va + size.bytes());
                        if !f.contains(PteFlags::BORROWED) {
                            // Cannot fail: the walk stops once it is full.
                            let _ = rm.frames.push(pa);
                        }
                        !rm.frames.is_full()
                    })
            };
            // The frames may be reused only after no CPU can reach them any
            // more: shoot down first, free second.
            if rm.lo < rm.hi {
                tlb::flush_range(self.root(), rm.lo, (rm.hi - rm.lo) / PAGE_SIZE);
            }
            for &pa in &rm.frames {
                // A shared frame (memory object, copy-on-write) goes back
                // only with its last owner.
                mem::frame_release(pa);
            }
            self.uncharge(rm.frames.len() as u64);
            match r {
                // User spaces hold only 4 KiB leaves: a straddled large page
                // (Misaligned) cannot happen; stop rather than loop.
                Ok(None) | Err(_) => return,
                Ok(Some(resume)) => at = resume,
            }
            preemption_point();
        }
    }

    /// Changes the protection of every mapped page in a range. Fails with
    /// NotFound if any page is unmapped and PermissionDenied if a borrowed page
    /// would become writable; both are checked over the whole range before
    /// anything changes. Once something changed, every exit flushes the TLBs
    /// of what changed.
    pub fn protect(&self, addr: u64, len: u64, p: u64) -> Result<(), Error> {
        let pages = check_range(addr, len)?;
        let flags = prot_flags(p)?;
        let end = addr + pages * PAGE_SIZE;
        let _edit = self.edit();
        // Pass 1: check everything, change nothing.
        let writable = flags.contains(PteFlags::WRITABLE);
        let mut at = addr;
        loop {
            let mut budget = CHUNK_ENTRIES;
            let r = {
                let inner = self.inner.lock();
                inner
                    .pt
                    .check_mapped(&mut DirectMem, at, end, &mut budget, |_, f| {
                        if writable && f.contains(PteFlags::BORROWED) {
                            Err(MapError::InvalidPhysAddr) // stands for "lent, read-only"
                        } else {
                            Ok(())
                        }
                    })
            };
            match r {
                Ok(None) => break,
                Ok(Some(resume)) => at = resume,
                Err(MapError::InvalidPhysAddr) => return Err(Error::PermissionDenied),
                Err(e) => return Err(map_err(e)),
            }
            preemption_point();
        }
        // Pass 2: change (the edit flag kept every other editor out since
        // pass 1). Each chunk flushes what it changed before the next starts,
        // so no exit leaves a stale, more permissive TLB entry behind.
        let mut at = addr;
        loop {
            let mut budget = CHUNK_ENTRIES;
            let r = {
                let inner = self.inner.lock();
                inner
                    .pt
                    .protect_range(&mut DirectMem, at, end, &mut budget, flags)
            };
            let done_to = match r {
                Ok(Some(resume)) => resume,
                _ => end,
            };
            tlb::flush_range(self.root(), at, (done_to - at) / PAGE_SIZE);
            match r {
                Ok(None) => return Ok(()),
                Ok(Some(resume)) => at = resume,
                Err(e) => return Err(map_err(e)),
            }
            preemption_point();
        }
    }
}

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
    /// own references) at `va` with `flags`, shared: each gains an owner and
    /// the leaves carry [`PteFlags::SHARED`]. Each page is charged to this
    /// space like an anonymous one. All or nothing; in preemptible chunks.
    pub fn map_shared(&self, va: u64, frames: &[u64], p: u64) -> Result<(), Error> {
        let len = (frames.len() as u64)
            .checked_mul(PAGE_SIZE)
            .ok_or(Error::InvalidArgument)?;
        let pages = check_range(va, len)?;
        let flags = prot_flags(p)? | PteFlags::SHARED;
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
                        if let Err(err) = cinner.pt.map(&mut m, va, pa, PageSize::Size4K, flags) {
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
                        // SAFETY: `f` is fresh (only this code reaches it);
                        // `pa` is a frame this leaf owns a reference to, so
                        // it stays allocated, and nobody writes it (every
                        // leaf mapping it is copy-on-write, read-only). Both
                        // lie in the direct map.
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

impl Drop for AddressSpace {
    fn drop(&mut self) {
        // No thread runs in this space any more and no CPU has it loaded (the
        // last thread is gone; CPUs load the kernel root when they idle), so
        // nothing needs flushing. This runs where the last reference drops,
        // which is not a preemption point, so the last thread of a process
        // already emptied the space in chunks (`teardown`); what is left here
        // is only what that could not reach (a space whose process never ran
        // a thread and was not torn down), at the cost of what is mapped.
        let inner = self.inner.lock();
        inner.pt.clear_user_half(&mut DirectMem, |_, pa, _, f| {
            if !f.contains(PteFlags::BORROWED) {
                mem::frame_release(pa);
            }
        });
        // No CPU has this root loaded any more, so the PML4 frame can go back.
        let _ = mem::free_frame(PhysFrame::containing(self.root));
        // Everything this space held (pages, tables, the root) goes back to
        // its program.
        if let Some(b) = &self.program {
            b.uncharge(self.own.used());
        }
    }
}

/// ktest: a borrowed (lent) range stops being borrowed where it is unmapped,
/// so frames mapped there later are owned and freed; lent frames are never
/// freed, by `unmap` or by the space's teardown.
pub fn ktest_borrowed_record_goes_with_unmap() -> Result<(), &'static str> {
    const VA: u64 = 0x100_0000;
    let lent = mem::alloc_contiguous(4, 1).map_err(|_| "out of memory")?;
    let r = (|| {
        let space = AddressSpace::new().map_err(|_| "AddressSpace::new failed")?;
        let ro = prot_flags(0).map_err(|_| "prot_flags")?;
        space
            .map_frames(VA, lent.addr(), 4, ro, true)
            .map_err(|_| "map_frames (borrowed) failed")?;
        if space.protect(VA, PAGE_SIZE, prot::WRITE) != Err(Error::PermissionDenied) {
            return Err("a lent page could be made writable");
        }
        // A protect that fails part-way changes nothing: an owned read-only
        // page before the lent one stays read-only.
        space
            .map_anon(VA - PAGE_SIZE, PAGE_SIZE, 0)
            .map_err(|_| "map_anon below the lent pages failed")?;
        if space.protect(VA - PAGE_SIZE, 2 * PAGE_SIZE, prot::WRITE) != Err(Error::PermissionDenied)
        {
            return Err("a range with a lent page could be made writable");
        }
        let still_ro = {
            let inner = space.inner.lock();
            inner
                .pt
                .translate(&mut DirectMem, VA - PAGE_SIZE)
                .is_some_and(|(_, f, _)| !f.contains(PteFlags::WRITABLE))
        };
        if !still_ro {
            return Err("a failed protect changed a page before the failing one");
        }
        space
            .unmap(VA - PAGE_SIZE, PAGE_SIZE)
            .map_err(|_| "unmap below the lent pages failed")?;
        let before = mem::free_frames();
        space
            .unmap(VA + PAGE_SIZE, 2 * PAGE_SIZE)
            .map_err(|_| "unmap of lent pages failed")?;
        if mem::free_frames() != before {
            return Err("unmapping lent pages freed them");
        }
        space
            .map_anon(VA + PAGE_SIZE, 2 * PAGE_SIZE, prot::WRITE)
            .map_err(|_| "map_anon where lent pages were failed")?;
        space
            .unmap(VA + PAGE_SIZE, 2 * PAGE_SIZE)
            .map_err(|_| "unmap of owned pages failed")?;
        if mem::free_frames() != before {
            return Err("owned frames mapped where lent ones were leaked on unmap");
        }
        drop(space);
        Ok(())
    })();
    // The teardown must have left the lent frames alone: freeing them now
    // succeeds (a double free would be refused).
    for i in 0..4 {
        let f = PhysFrame::containing(lent.addr() + i * PAGE_SIZE);
        if mem::free_frame(f).is_err() {
            return Err("a lent frame was freed by the address space");
        }
    }
    r
}

/// ktest: `teardown` (what the last thread of a process runs before it
/// switches away) frees every owned frame and every table below the root, in
/// several chunks, and leaves lent frames alone; the final drop then has only
/// the root left to free.
pub fn ktest_teardown_empties_the_space() -> Result<(), &'static str> {
    const SPARSE: u64 = 0x40_0000_0000; // 256 GiB: its own PDPT entry
    const DENSE: u64 = 0x100_0000; // 2 MiB aligned: one page table
    const LENT: u64 = 0x180_0000; // after it: the walk meets the dense table first
    let lent = mem::alloc_contiguous(2, 1).map_err(|_| "out of memory")?;
    let before = mem::free_frames();
    let space = AddressSpace::new().map_err(|_| "AddressSpace::new failed")?;
    let r = (|| {
        // One page in each of 300 2 MiB regions (a page table each: far more
        // frames than one chunk holds), one full page table of dense pages
        // (512: a chunk fills its frame buffer right at the table's last
        // entry, where the emptied table is reported too), 2 lent pages.
        for i in 0..300 {
            space
                .map_anon(SPARSE + i * (2 << 20), PAGE_SIZE, prot::WRITE)
                .map_err(|_| "map_anon (sparse) failed")?;
        }
        space
            .map_anon(DENSE, 512 * PAGE_SIZE, prot::WRITE)
            .map_err(|_| "map_anon (dense) failed")?;
        let ro = prot_flags(0).map_err(|_| "prot_flags")?;
        space
            .map_frames(LENT, lent.addr(), 2, ro, true)
            .map_err(|_| "map_frames (lent) failed")?;
        space.teardown();
        if mem::free_frames() != before - 1 {
            return Err("teardown left frames behind (only the root may stay)");
        }
        let inner = space.inner.lock();
        for va in [SPARSE, DENSE, DENSE + 511 * PAGE_SIZE, LENT] {
            if inner.pt.translate(&mut DirectMem, va).is_some() {
                return Err("a page is still mapped after teardown");
            }
        }
        Ok(())
    })();
    drop(space);
    if r.is_ok() && mem::free_frames() != before {
        return Err("the drop after teardown did not return exactly the root");
    }
    for i in 0..2 {
        if mem::free_frame(PhysFrame::containing(lent.addr() + i * PAGE_SIZE)).is_err() {
            return Err("a lent frame was freed by teardown");
        }
    }
    r
}

/// ktest: mapped pages and page tables are charged to the space and its
/// program, a refused `map_anon` charges nothing, `unmap` returns exactly
/// what it frees (map/unmap churn does not drift), and the space's drop
/// returns everything to the program.
pub fn ktest_mapped_pages_are_charged_and_returned() -> Result<(), &'static str> {
    const VA: u64 = 0x200_0000;
    let program = Arc::new(PageBudget::new(64));
    let space = AddressSpace::new_charged(Some(program.clone())).map_err(|_| "new_charged")?;
    if space.charged_pages() != 1 || program.used() != 1 {
        return Err("the PML4 is not charged");
    }
    space
        .map_anon(VA, 16 * PAGE_SIZE, prot::WRITE)
        .map_err(|_| "map_anon of 16 pages failed")?;
    // 16 pages, and a PDPT, a PD and a PT for them.
    if space.charged_pages() != 1 + 16 + 3 || program.used() != 1 + 16 + 3 {
        return Err("16 mapped pages and their 3 tables are not charged");
    }
    for _ in 0..8 {
        space
            .unmap(VA, 16 * PAGE_SIZE)
            .map_err(|_| "unmap failed")?;
        space
            .map_anon(VA, 16 * PAGE_SIZE, prot::WRITE)
            .map_err(|_| "map_anon after unmap failed")?;
    }
    space
        .unmap(VA, 16 * PAGE_SIZE)
        .map_err(|_| "unmap failed")?;
    if space.charged_pages() != 1 + 3 {
        return Err("unmap did not return exactly the pages it freed");
    }
    if space.map_anon(VA, 61 * PAGE_SIZE, prot::WRITE) != Err(Error::NoMemory) {
        return Err("map_anon beyond the program's limit was not NoMemory");
    }
    if space.charged_pages() != 1 + 3 || program.used() != 1 + 3 {
        return Err("a refused map_anon left a charge behind");
    }
    drop(space);
    if program.used() != 0 {
        return Err("the space's drop did not return its charge to the program");
    }
    Ok(())
}

/// ktest (issue 11): a copy-on-write clone shares every frame (only its
/// tables are new) and is charged for every page it maps; a write fault in
/// the source copies one frame; dropping the clone frees exactly its tables,
/// its root and the frame only it still held. A memory object's frames
/// mapped into a space are charged to that space, survive the object, and
/// go back with the last mapping.
pub fn ktest_shared_and_cow_frames_are_counted() -> Result<(), &'static str> {
    const VA: u64 = 0x300_0000;
    const MEM_VA: u64 = 0x400_0000;
    let program = Arc::new(PageBudget::new(256));
    let a = AddressSpace::new_charged(Some(program.clone())).map_err(|_| "new_charged")?;
    a.map_anon(VA, 4 * PAGE_SIZE, prot::WRITE)
        .map_err(|_| "map_anon")?;
    let f0 = mem::free_frames();
    let b = AddressSpace::new_charged(Some(program.clone())).map_err(|_| "new_charged")?;
    b.copy_on_write_from(&a).map_err(|_| "copy_on_write_from")?;
    // The clone's root and its PDPT, PD, PT; no data frame.
    if mem::free_frames() != f0 - 4 {
        return Err("a clone copied frames (or leaked tables)");
    }
    if b.charged_pages() != 1 + 3 + 4 {
        return Err("the clone is not charged for its root, tables and pages");
    }
    if a.resolve_write_fault(VA + 8) != WriteFaultOutcome::Retry {
        return Err("a write fault on a COW page did not resolve");
    }
    if mem::free_frames() != f0 - 5 {
        return Err("a COW write fault did not copy exactly one frame");
    }
    // Already resolved: a second fault is spurious (no copy).
    if a.resolve_write_fault(VA) != WriteFaultOutcome::Retry || mem::free_frames() != f0 - 5 {
        return Err("a resolved page was copied again");
    }
    drop(b);
    if mem::free_frames() != f0 {
        return Err("dropping the clone did not return exactly its own frames");
    }
    // The source's other pages are its own again: taken over, not copied.
    if a.resolve_write_fault(VA + PAGE_SIZE) != WriteFaultOutcome::Retry || mem::free_frames() != f0
    {
        return Err("a page whose clone is gone was copied instead of taken over");
    }
    // A real fault stays one.
    if a.resolve_write_fault(MEM_VA) != WriteFaultOutcome::Fault {
        return Err("a write fault on an unmapped page was resolved");
    }
    let before_obj = mem::free_frames();
    let obj = super::memory::MemoryObj::new(4, program.clone()).map_err(|_| "MemoryObj::new")?;
    let charged = a.charged_pages();
    a.map_shared(MEM_VA, obj.frames(), prot::WRITE)
        .map_err(|_| "map_shared")?;
    if a.charged_pages() < charged + 4 {
        return Err("shared pages are not charged to the space they are mapped in");
    }
    drop(obj);
    if mem::free_frames() >= before_obj {
        return Err("the object's frames went while still mapped");
    }
    a.unmap(MEM_VA, 4 * PAGE_SIZE).map_err(|_| "unmap")?;
    // Back, but for the page tables the mapping made (kept until teardown).
    if mem::free_frames() + 1 < before_obj {
        return Err("the last unmap did not free the object's frames");
    }
    drop(a);
    if program.used() != 0 {
        return Err("charges were not returned to the program");
    }
    Ok(())
}
