//! Memory objects: a fixed set of zeroed frames that `mem_map` maps, shared,
//! into address spaces (the loader fills a segment through its own mapping,
//! then maps the same frames into the child).
//!
//! The object owns one reference to each frame ([`kcore::cow`]); each
//! mapping owns another. A frame goes back to the allocator with its last
//! owner, so closing the handle while the frames are mapped is fine, and
//! unmapping every mapping after the handle closed frees them. The frames
//! are charged to the creator's program ([`PageBudget`]) until the object
//! goes; each mapping is charged to the space it is in.

use super::space::PageBudget;
use crate::arch::cpu::preemption_point;
use crate::mem;
use abi::layout::PAGE_SIZE;
use abi::Error;
use alloc::sync::Arc;
use alloc::vec::Vec;

/// Frames `new` allocates between preemption points.
const CHUNK: usize = 32;

/// A memory object's frames.
pub struct MemoryObj {
    frames: Vec<u64>,
    charged_to: Arc<PageBudget>,
    /// Pages charged to `charged_to` (all of them, from the start).
    charged: u64,
}

impl MemoryObj {
    /// `pages` zeroed frames, charged to `budget` first. `InvalidArgument`
    /// for 0 pages or more than [`abi::vm::MAX_MEMORY_BYTES`]; `NoMemory`
    /// past the budget or when frames (or the list's heap) run out, and then
    /// nothing stays allocated or charged. Takes preemption points (a
    /// syscall, no lock held).
    pub fn new(pages: u64, budget: Arc<PageBudget>) -> Result<MemoryObj, Error> {
        if pages == 0 || pages > abi::vm::MAX_MEMORY_BYTES / PAGE_SIZE {
            return Err(Error::InvalidArgument);
        }
        if !budget.try_charge(pages) {
            return Err(Error::NoMemory);
        }
        let mut obj = MemoryObj {
            frames: Vec::new(),
            charged_to: budget,
            charged: pages,
        };
        // The drop of a half-built object returns what it holds and the
        // whole charge.
        if obj.frames.try_reserve_exact(pages as usize).is_err() {
            return Err(Error::NoMemory);
        }
        for i in 0..pages as usize {
            if i % CHUNK == CHUNK - 1 {
                preemption_point();
            }
            let f = mem::alloc_zeroed_frame().map_err(|_| Error::NoMemory)?;
            obj.frames.push(f.addr());
        }
        Ok(obj)
    }

    /// The frames' physical addresses, in page order.
    pub fn frames(&self) -> &[u64] {
        &self.frames
    }

    /// Its size in pages.
    pub fn pages(&self) -> u64 {
        self.frames.len() as u64
    }
}

impl Drop for MemoryObj {
    fn drop(&mut self) {
        // At most MAX_MEMORY_BYTES / 4 KiB (4096) releases: the bound on
        // this non-preemptible work. A frame still mapped somewhere stays.
        for &pa in &self.frames {
            mem::frame_release(pa);
        }
        self.charged_to.uncharge(self.charged);
    }
}
