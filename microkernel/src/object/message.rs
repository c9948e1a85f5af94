//! A message in flight besides its registers: the data `ipc::transfer`
//! moves (a kernel copy of the buffer, the handles taken from the sender).
//! Data only; taking and placing them is IPC's (L5).

use super::kobject::Object;
use super::space::AddressSpace;
use abi::Error;
use alloc::sync::Arc;
use kcore::handles::{Entry, MAX_TRANSFER};

/// A kernel copy of a message buffer: contiguous frames in the direct map,
/// charged to the sender's address space while they live.
pub struct Bounce {
    first: u64,
    pages: usize,
    len: usize,
    charged_to: Arc<AddressSpace>,
}

impl Bounce {
    /// An uninitialised buffer of `len` bytes, charged to `space` (which
    /// the caller fills at once: `ipc::transfer`).
    pub fn new(space: Arc<AddressSpace>, len: usize) -> Result<Bounce, Error> {
        let pages = len.div_ceil(4096);
        space.try_charge(pages as u64)?;
        let first = match crate::mem::alloc_contiguous(pages, 1) {
            Ok(f) => f.addr(),
            Err(_) => {
                space.uncharge(pages as u64);
                return Err(Error::NoMemory);
            }
        };
        Ok(Bounce {
            first,
            pages,
            len,
            charged_to: space,
        })
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The bytes, to fill.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the frames were allocated for this buffer alone, lie in
        // the direct map and hold at least `len` bytes; `&mut self` makes
        // this the only view.
        unsafe {
            core::slice::from_raw_parts_mut(
                crate::mem::phys_to_virt(self.first) as *mut u8,
                self.len,
            )
        }
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: as in `bytes_mut`; shared views only while `&self` lives.
        unsafe {
            core::slice::from_raw_parts(crate::mem::phys_to_virt(self.first) as *const u8, self.len)
        }
    }
}

impl Drop for Bounce {
    fn drop(&mut self) {
        // At most 16 frames: no preemption point needed.
        for i in 0..self.pages {
            if let Some(f) = kcore::frame::PhysFrame::from_addr(self.first + i as u64 * 4096) {
                let _ = crate::mem::free_frame(f);
            }
        }
        self.charged_to.uncharge(self.pages as u64);
    }
}

/// One handle in flight.
pub struct InFlight {
    /// The handle's object, rights and badge.
    pub entry: Entry<Object>,
}

/// A message's buffer and handles, taken from the sender.
#[derive(Default)]
pub struct Extra {
    /// The buffer, if any.
    pub buf: Option<Bounce>,
    /// The handles, in message order.
    pub handles: heapless::Vec<InFlight, MAX_TRANSFER>,
}

impl Extra {
    /// Nothing besides registers.
    pub fn is_empty(&self) -> bool {
        self.buf.is_none() && self.handles.is_empty()
    }
}
