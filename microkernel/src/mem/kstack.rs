//! Kernel stacks with guard pages.
//!
//! Each stack occupies a [`KSTACK_SLOT`] of virtual space in the kernel-stack
//! region: the top [`KSTACK_BYTES`] are mapped, and the page below them is left
//! unmapped, so running off the bottom faults (and, because the fault cannot
//! push its frame, escalates to #DF on its own IST stack, which reports it).
//!
//! A freed stack is unmapped at once but its frames and slot are held back
//! until [`PURGE_BATCH`] stacks have gathered: then one global TLB flush
//! covers them all and they are recycled ([`purge`]), as Linux batches its
//! vmalloc frees. A shootdown per freed stack made a process whose hundred
//! threads die at once cost a hundred all-CPU IPI rounds, each spinning with
//! interrupts off on every CPU; on an oversubscribed host (vCPUs waiting for
//! host time) that took seconds (the fuzzer's exit-race probe, seen with
//! every CPU's stack in `tlb::shootdown` under `KernelStack::drop`).
//!
//! Before that, up to [`CACHE`] freed stacks are kept *mapped* for the next
//! threads (forkk, session 19): a new stack cost ~7,300 instructions (eight
//! frames allocated, zeroed and mapped), most of a thread's creation, and
//! its drop eight unmaps and its share of a flush. A cached stack keeps its
//! frames and translations, so nothing needs flushing; it is not zeroed
//! again (only the kernel reads a kernel stack, and a new thread's context
//! is written whole by `prepare_stack`). The cache is bounded (16 stacks,
//! 512 KiB) and emptied by `sysinfo` ([`drain_cache`]), so the free-memory
//! figure the leak checks compare stays exact.

use super::layout::{KSTACK_BASE, KSTACK_BYTES, KSTACK_SLOT};
use crate::sync::IrqMutex;
use alloc::vec::Vec;
use kcore::paging::{PageSize, PteFlags};

/// A kernel stack; kept mapped for reuse, or unmapped and its slot
/// recycled, on drop.
pub struct KernelStack {
    slot: u64,
}

/// Freed stacks kept mapped for reuse, at most.
pub const CACHE: usize = 16;

struct Slots {
    next: u64,
    free: Vec<u64>,
    /// Unmapped stacks whose translations other CPUs may still cache: not
    /// reusable (slot or frames) until a global flush ([`purge`]).
    unflushed: heapless::Vec<Unflushed, PURGE_BATCH>,
    /// Freed stacks still mapped (slots), reused first.
    cached: heapless::Vec<u64, CACHE>,
}

/// A freed stack awaiting the flush: its slot and frames.
struct Unflushed {
    slot: u64,
    frames: [u64; STACK_PAGES],
}

const STACK_PAGES: usize = (KSTACK_BYTES / 4096) as usize;

/// Freed stacks gathered before one flush recycles them all: at most this
/// many stacks' frames (2 MiB) are out of use at once, and the slots they
/// hold fit below [`PREALLOC_SLOTS`] (checked with the thread limits).
pub const PURGE_BATCH: usize = 64;

/// Serialises [`purge`]s (see there).
static PURGE: IrqMutex<()> = IrqMutex::new(());

static SLOTS: IrqMutex<Slots> = IrqMutex::new(Slots {
    next: 0,
    free: Vec::new(),
    unflushed: heapless::Vec::new(),
    cached: heapless::Vec::new(),
});

/// Slots that fit in the region (one PML4 entry: 512 GiB).
const MAX_SLOTS: u64 = (512 << 30) / KSTACK_SLOT;

/// Slots whose page tables are built at boot ([`preallocate_tables`]): every
/// thread the kernel allows plus each CPU's own stacks fit below it (checked
/// where those limits live). Slots are reused lowest-first, so in practice no
/// page table of the region is ever allocated after boot.
pub const PREALLOC_SLOTS: u64 = 1536;

/// Builds the page tables for the first [`PREALLOC_SLOTS`] stack slots, so
/// that creating a stack later never allocates one: free memory then depends
/// only on the stacks alive, not on the most that were ever alive at once
/// (which made exact leak checks see a page-table page as a leak). Costs 48
/// page tables (192 KiB) and their directory. Boot CPU, before the others run.
pub fn preallocate_tables() -> Result<(), &'static str> {
    const SPAN: u64 = 2 << 20; // what one page table maps
    let probe = super::alloc_zeroed_frame().map_err(|_| "out of memory for kernel-stack tables")?;
    let flags = PteFlags::WRITABLE | PteFlags::GLOBAL | super::nx_flag();
    let end = KSTACK_BASE + PREALLOC_SLOTS * KSTACK_SLOT;
    let mut va = KSTACK_BASE;
    while va < end {
        // Mapping a page builds the tables above it; unmapping it keeps them.
        super::with_kernel_pt(|pt, mem| pt.map(mem, va, probe.addr(), PageSize::Size4K, flags))
            .map_err(|_| "kernel-stack region already in use at boot")?;
        let _ = super::with_kernel_pt(|pt, mem| pt.unmap(mem, va));
        super::flush_local(va);
        va += SPAN;
    }
    let _ = super::free_frame(probe);
    Ok(())
}

impl KernelStack {
    /// Maps a new stack.
    pub fn new() -> Result<KernelStack, &'static str> {
        let slot = {
            let mut s = SLOTS.lock();
            if let Some(slot) = s.cached.pop() {
                // Still mapped, its frames its own: ready as it is.
                return Ok(KernelStack { slot });
            }
            match s.free.pop() {
                Some(slot) => slot,
                None if s.next < MAX_SLOTS => {
                    s.next += 1;
                    s.next - 1
                }
                None => return Err("kernel stack region exhausted"),
            }
        };
        // Not a `KernelStack` (whose drop caches it as ready) until every
        // page is mapped: a half-built one is unmapped and freed instead
        // (breakk: cached, it gave the next thread unmapped top pages).
        let stack = core::mem::ManuallyDrop::new(KernelStack { slot });
        let (bottom, top) = (stack.bottom(), stack.top());
        let flags = PteFlags::WRITABLE | PteFlags::GLOBAL | super::nx_flag();
        let mut va = bottom;
        while va < top {
            let mapped = match super::alloc_zeroed_frame() {
                Err(_) => Err("out of memory for a kernel stack"),
                Ok(frame) => super::with_kernel_pt(|pt, mem| {
                    pt.map(mem, va, frame.addr(), PageSize::Size4K, flags)
                })
                .map_err(|_| {
                    let _ = super::free_frame(frame);
                    "kernel stack slot already mapped"
                }),
            };
            if let Err(e) = mapped {
                release(bottom, slot);
                return Err(e);
            }
            va += 4096;
        }
        Ok(core::mem::ManuallyDrop::into_inner(stack))
    }

    /// The (exclusive) top address: the initial RSP.
    pub fn top(&self) -> u64 {
        KSTACK_BASE + (self.slot + 1) * KSTACK_SLOT
    }

    /// The lowest mapped address (the guard page sits just below).
    pub fn bottom(&self) -> u64 {
        self.top() - KSTACK_BYTES
    }
}

impl Drop for KernelStack {
    fn drop(&mut self) {
        // No CPU runs on it any more: the next thread may have it, mapped.
        if SLOTS.lock().cached.push(self.slot).is_ok() {
            return;
        }
        release(self.bottom(), self.slot);
    }
}

/// Unmaps and frees every stack of the cache (the slots and frames go the
/// way of every freed stack: [`purge`]). For `sysinfo`, before its purge.
pub fn drain_cache() {
    loop {
        let Some(slot) = SLOTS.lock().cached.pop() else {
            return;
        };
        let stack = core::mem::ManuallyDrop::new(KernelStack { slot });
        release(stack.bottom(), slot);
    }
}

/// Unmaps the stack of `slot` (its lowest page at `bottom`) and hands its
/// frames and slot to the batched flush.
fn release(bottom: u64, slot: u64) {
    {
        let mut frames = [0u64; STACK_PAGES];
        let mut va = bottom;
        for f in frames.iter_mut() {
            if let Ok((pa, _)) = super::with_kernel_pt(|pt, mem| pt.unmap(mem, va)) {
                *f = pa;
            }
            va += 4096;
        }
        // Stacks are freed only once no CPU runs on them, but any CPU that ran
        // the thread may still cache the (global) translations: neither the
        // frames nor the slot are reused before a flush on every CPU. Held
        // back until a batch is full (then one flush for all), so the
        // unmapped pages are never reachable through a new mapping meanwhile.
        let mut u = Unflushed { slot, frames };
        loop {
            // Another CPU may have filled the batch since our last look (its
            // purge not yet begun): then purge first and try again, never
            // drop the stack on the floor.
            let pushed = SLOTS.lock().unflushed.push(u);
            match pushed {
                Ok(()) => break,
                Err(back) => {
                    u = back;
                    purge();
                }
            }
        }
        if SLOTS.lock().unflushed.is_full() {
            purge();
        }
    }
}

/// Flushes every CPU's TLB of the stacks freed since the last purge, then
/// recycles their frames and slots. Cheap when there are none. Called when
/// a batch is full, and by `sysinfo` so the free-memory figure it reports
/// is exact (the leak checks compare it).
pub fn purge() {
    // Held for the whole purge: a second caller (`sysinfo` above all) waits
    // until an in-flight purge has freed its frames, so the free-memory figure
    // it reads afterwards is exact (without it a `fuzz-smp4` run saw one
    // stack, 32 KiB, missing: another CPU's purge was still in its
    // shootdown). Waiters spin serving shootdowns (`IrqMutex`), so holding it
    // across the flush cannot deadlock; order: PURGE, then SLOTS.
    let _in_flight = PURGE.lock();
    let batch = core::mem::take(&mut SLOTS.lock().unflushed);
    if batch.is_empty() {
        return;
    }
    // One global flush for the whole region (more than FULL_FLUSH_PAGES: a
    // full flush, global entries included), on every CPU, before reuse.
    crate::arch::tlb::flush_kernel_range(KSTACK_BASE, u64::MAX / 4096);
    for u in &batch {
        for &pa in u.frames.iter().filter(|&&pa| pa != 0) {
            if let Some(f) = kcore::frame::PhysFrame::from_addr(pa) {
                let _ = super::free_frame(f);
            }
        }
    }
    let mut s = SLOTS.lock();
    for u in &batch {
        s.free.push(u.slot);
    }
}

/// ktest (forkk, session 19): a freed stack is kept mapped and handed to
/// the next thread as it is (same slot, no frame allocated), and
/// [`drain_cache`] with [`purge`] gives every frame back.
pub fn ktest_a_freed_stack_is_reused_mapped_and_drained() -> Result<(), &'static str> {
    // Start from an empty cache and no pending batch, so the counts are ours.
    drain_cache();
    purge();
    let before = super::free_frames();
    let a = KernelStack::new()?;
    let slot = a.slot;
    if super::free_frames() != before - STACK_PAGES {
        return Err("a new stack did not take its frames");
    }
    drop(a);
    if super::free_frames() != before - STACK_PAGES {
        return Err("a freed stack was not kept for reuse");
    }
    let b = KernelStack::new()?;
    if b.slot != slot || super::free_frames() != before - STACK_PAGES {
        return Err("a new stack did not reuse the cached one");
    }
    // Still mapped and usable: write its lowest and highest words.
    let lo = b.bottom() as *mut u64;
    let hi = (b.top() - 8) as *mut u64;
    // SAFETY: both words lie in the stack's mapped pages, which nothing
    // else uses (the stack is this test's, never switched to).
    unsafe {
        lo.write_volatile(1);
        hi.write_volatile(2);
    }
    drop(b);
    drain_cache();
    purge();
    if super::free_frames() != before {
        return Err("draining the cache did not return the stack's frames");
    }
    Ok(())
}

/// ktest (breakk, session 19): a stack whose creation ran out of memory
/// part-way (some pages mapped, the rest not) is never cached: the next
/// stack handed out has every page mapped, and no frame is lost. Before
/// the fix the half-built stack's drop put it in the cache as "ready", and
/// the next thread got a stack whose top pages (where `prepare_stack`
/// writes first) were unmapped: a kernel page fault.
pub fn ktest_a_half_built_stack_is_not_cached() -> Result<(), &'static str> {
    drain_cache();
    purge();
    let before = super::free_frames();
    // Hoard all but three frames (a stack needs eight), chained through
    // their own first word, so the fourth of the stack's pages fails.
    let mut hoard = 0u64;
    let mut hoarded = 0usize;
    while super::free_frames() > 3 {
        let Ok(f) = super::alloc_frame() else { break };
        // SAFETY: the frame was just allocated (ours alone) and lies in the
        // direct map.
        unsafe { (super::phys_to_virt(f.addr()) as *mut u64).write(hoard) };
        hoard = f.addr();
        hoarded += 1;
    }
    let failed = KernelStack::new();
    // Give the hoard back before anything else can need memory.
    while hoard != 0 {
        // SAFETY: every frame of the chain is one this test allocated and
        // wrote its link into.
        let next = unsafe { (super::phys_to_virt(hoard) as *const u64).read() };
        if let Some(f) = kcore::frame::PhysFrame::from_addr(hoard) {
            let _ = super::free_frame(f);
        }
        hoard = next;
    }
    if hoarded == 0 {
        return Err("could not take the free frames");
    }
    if failed.is_ok() {
        return Err("a stack was made with three free frames");
    }
    let next = KernelStack::new()?;
    let mut va = next.bottom();
    while va < next.top() {
        if super::with_kernel_pt(|pt, mem| pt.translate(mem, va)).is_none() {
            crate::println!("  note: page 0x{va:x} of a new stack is unmapped");
            return Err("a new stack has unmapped pages (a half-built stack was cached)");
        }
        va += 4096;
    }
    drop(next);
    drain_cache();
    purge();
    if super::free_frames() != before {
        return Err("a failed stack creation lost frames");
    }
    Ok(())
}
