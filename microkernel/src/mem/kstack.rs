//! Kernel stacks with guard pages.
//!
//! Each stack occupies a [`KSTACK_SLOT`] of virtual space in the kernel-stack
//! region: the top [`KSTACK_BYTES`] are mapped, and the page below them is left
//! unmapped, so running off the bottom faults (and, because the fault cannot
//! push its frame, escalates to #DF on its own IST stack, which reports it).

use super::layout::{KSTACK_BASE, KSTACK_BYTES, KSTACK_SLOT};
use crate::sync::IrqMutex;
use alloc::vec::Vec;
use kcore::paging::{PageSize, PteFlags};

/// A kernel stack; unmapped and its slot recycled on drop.
pub struct KernelStack {
    slot: u64,
}

struct Slots {
    next: u64,
    free: Vec<u64>,
}

static SLOTS: IrqMutex<Slots> = IrqMutex::new(Slots {
    next: 0,
    free: Vec::new(),
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
            match s.free.pop() {
                Some(slot) => slot,
                None if s.next < MAX_SLOTS => {
                    s.next += 1;
                    s.next - 1
                }
                None => return Err("kernel stack region exhausted"),
            }
        };
        let stack = KernelStack { slot };
        let bottom = stack.top() - KSTACK_BYTES;
        let flags = PteFlags::WRITABLE | PteFlags::GLOBAL | super::nx_flag();
        let mut va = bottom;
        while va < stack.top() {
            let frame =
                super::alloc_zeroed_frame().map_err(|_| "out of memory for a kernel stack")?;
            super::with_kernel_pt(|pt, mem| pt.map(mem, va, frame.addr(), PageSize::Size4K, flags))
                .map_err(|_| "kernel stack slot already mapped")?;
            va += 4096;
        }
        Ok(stack)
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
        let mut frames = Vec::new();
        let mut va = self.bottom();
        while va < self.top() {
            if let Ok((pa, _)) = super::with_kernel_pt(|pt, mem| pt.unmap(mem, va)) {
                frames.push(pa);
            }
            va += 4096;
        }
        // Stacks are freed only once no CPU runs on them, but any CPU that ran
        // the thread may still cache the (global) translations: shoot them down
        // before the frames or the slot can be reused.
        crate::arch::tlb::flush_kernel_range(self.bottom(), KSTACK_BYTES / 4096);
        for pa in frames {
            if let Some(f) = kcore::frame::PhysFrame::from_addr(pa) {
                let _ = super::free_frame(f);
            }
        }
        SLOTS.lock().free.push(self.slot);
    }
}
