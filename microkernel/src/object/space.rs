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
use kcore::paging::{Freed, MapCursor, MapError, PageSize, PageTable, PteFlags, PHYS_ADDR_MASK};

mod budget;
mod cow;
mod ktests;
mod range;
use budget::CountingMem;
pub use budget::PageBudget;
pub use cow::{resolve_loaded_write_fault, with_loaded, WriteFaultOutcome};
pub use ktests::*;

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
