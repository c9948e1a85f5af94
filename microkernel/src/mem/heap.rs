//! The kernel heap: `linked_list_allocator` over one physically contiguous
//! region reached through the direct map. The lock is taken with interrupts off
//! (see [`crate::sync`]) so an interrupt handler that allocates cannot deadlock
//! against the code it interrupted.

use super::retire::{self, Deferred};
use crate::sync::IrqMutex;
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use linked_list_allocator::Heap;

struct KernelHeap(IrqMutex<(Heap, Deferred)>);

// SAFETY: every access to the heap goes through the IrqMutex, so allocation is
// serialised across CPUs and interrupt handlers.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut g = self.0.lock();
        let (h, d) = &mut *g;
        if d.blocks != 0 && retire::is_deferred(layout) {
            // Ripe thread blocks first, so a new thread can reuse one.
            // SAFETY: under the heap's lock; the blocks are the heap's.
            unsafe { retire::reclaim(d, |b| give(h, b, layout)) };
        }
        h.allocate_first_fit(layout)
            .map_or(core::ptr::null_mut(), |p| p.as_ptr())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ptr.is_null() {
            return;
        }
        let mut g = self.0.lock();
        let (h, d) = &mut *g;
        if retire::is_deferred(layout) {
            // SAFETY: a thread block this heap allocated, freed by its
            // owner; under the heap's lock.
            unsafe { retire::defer(d, ptr, |b| give(h, b, layout)) };
            return;
        }
        // SAFETY: the caller passes a pointer this allocator returned with
        // the same layout (GlobalAlloc contract).
        unsafe { h.deallocate(nn(ptr), layout) }
    }
}

/// Returns a deferred thread block to the heap (`retire`'s `free`).
fn give(h: &mut Heap, b: *mut u8, layout: Layout) {
    // SAFETY: `retire` hands back only blocks this heap allocated with
    // `layout` and their owners freed, once their grace period ended.
    unsafe { h.deallocate(nn(b), layout) }
}

/// A block pointer the heap handed out (never null).
fn nn(p: *mut u8) -> NonNull<u8> {
    NonNull::new(p).expect("a heap block")
}

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(IrqMutex::new((Heap::empty(), Deferred::new())));

/// Heap size: 1/16 of usable memory, between 4 and 64 MiB.
fn heap_bytes(usable: u64) -> u64 {
    (usable / 16).clamp(4 << 20, 64 << 20)
}

/// Carves the heap out of physical memory.
pub fn init(usable_bytes: u64) -> Result<(), &'static str> {
    let bytes = heap_bytes(usable_bytes);
    let frame = super::alloc_contiguous((bytes / 4096) as usize, 1)
        .map_err(|_| "no contiguous memory for the kernel heap")?;
    let start = super::phys_to_virt(frame.addr());
    // SAFETY: the frames were just allocated for the heap alone and are mapped
    // read-write through the direct map.
    unsafe { HEAP.0.lock().0.init(start as *mut u8, bytes as usize) };
    Ok(())
}

/// (used, free) heap bytes. Thread blocks whose grace period ended are
/// given back first; those still waiting (a tick or two) count as used, so
/// the leak checks, which poll this figure, see one that never comes back.
pub fn stats() -> (usize, usize) {
    let mut g = HEAP.0.lock();
    let (h, d) = &mut *g;
    // Every deferred block has the one deferred layout (registered before
    // the first was allocated).
    let layout = retire::deferred_layout();
    // SAFETY: under the heap's lock; the blocks are the heap's.
    unsafe { retire::reclaim(d, |b| give(h, b, layout)) };
    (h.used(), h.free())
}

/// Freed thread blocks still held back for their grace period (`retire`),
/// without giving any back (a ktest's look).
pub fn deferred_blocks() -> usize {
    HEAP.0.lock().1.blocks
}
