//! The kernel heap: `linked_list_allocator` over one physically contiguous
//! region reached through the direct map. The lock is taken with interrupts off
//! (see [`crate::sync`]) so an interrupt handler that allocates cannot deadlock
//! against the code it interrupted.

use crate::sync::IrqMutex;
use core::alloc::{GlobalAlloc, Layout};
use linked_list_allocator::Heap;

struct KernelHeap(IrqMutex<Heap>);

// SAFETY: every access to the heap goes through the IrqMutex, so allocation is
// serialised across CPUs and interrupt handlers.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.0
            .lock()
            .allocate_first_fit(layout)
            .map_or(core::ptr::null_mut(), |p| p.as_ptr())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = core::ptr::NonNull::new(ptr) {
            // SAFETY: the caller passes a pointer this allocator returned with
            // the same layout (GlobalAlloc contract).
            unsafe { self.0.lock().deallocate(p, layout) }
        }
    }
}

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(IrqMutex::new(Heap::empty()));

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
    unsafe { HEAP.0.lock().init(start as *mut u8, bytes as usize) };
    Ok(())
}

/// (used, free) heap bytes.
pub fn stats() -> (usize, usize) {
    let h = HEAP.0.lock();
    (h.used(), h.free())
}
