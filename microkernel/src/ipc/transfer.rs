//! What travels besides registers: a buffer of up to 64 KiB and up to four
//! handles.
//!
//! The sender's side is settled before anything is delivered: its buffer is
//! copied into a kernel bounce buffer ([`Bounce`], frames charged to the
//! sender's address space) and its handles are taken out of its table
//! (moved ones closed, copied ones cloned) into an [`Extra`]. A bad buffer
//! or handle is therefore the sender's error, and nothing is delivered.
//! The receiver's side is written by whoever delivers ([`place`]): the
//! bytes go into the receiver's buffer through `copy_to_user` with the
//! receiver's address space loaded for the copy (interrupts are off; no
//! lock is held), the handles into its table. A failure there (its buffer
//! unmapped, its table full) is the receiver's error; the sender keeps its
//! `Extra` and tries the next receiver (a call) or gets it back (a reply).
//! Handles an operation could not deliver at all (the call failed, timed
//! out, or its peer died) are closed ([`restore`]): a moved handle is
//! consumed by a send that got past the sender's checks, as if delivered to
//! a peer that died (its number is gone from the sender's table already).

use crate::arch::uaccess::{copy_from_user, copy_to_user};
use crate::object::kobject::Object;
use crate::sched;
use crate::task::{Process, Thread};
use crate::vm::AddressSpace;
use abi::Error;
use alloc::sync::Arc;
use kcore::handles::{Entry, Handle, TransferMode, MAX_TRANSFER};
use kcore::ipc::MAX_BUFFER;

/// A kernel copy of a message buffer: contiguous frames in the direct map,
/// charged to the sender's address space while they live.
pub struct Bounce {
    first: u64,
    pages: usize,
    len: usize,
    charged_to: Arc<AddressSpace>,
}

impl Bounce {
    /// Copies `len` bytes from the current thread's `addr` (`len` at most
    /// [`MAX_BUFFER`], checked by the decoder).
    pub fn from_user(addr: u64, len: usize) -> Result<Bounce, Error> {
        debug_assert!(len > 0 && len <= MAX_BUFFER);
        let space = sched::current()
            .space
            .clone()
            .ok_or(Error::PermissionDenied)?;
        let pages = len.div_ceil(4096);
        space.try_charge(pages as u64)?;
        let first = match crate::mem::alloc_contiguous(pages, 1) {
            Ok(f) => f.addr(),
            Err(_) => {
                space.uncharge(pages as u64);
                return Err(Error::NoMemory);
            }
        };
        let mut b = Bounce {
            first,
            pages,
            len,
            charged_to: space,
        };
        copy_from_user(b.bytes_mut(), addr)?; // drop frees the frames
        Ok(b)
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
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

    fn bytes(&self) -> &[u8] {
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
    entry: Entry<Object>,
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

    /// Takes the sender's side: copies `buf_len` bytes at `buf` and takes
    /// `specs` out of the current process's table (all or nothing).
    pub fn take(
        buf: u64,
        buf_len: usize,
        specs: &[(Handle, TransferMode)],
    ) -> Result<Extra, Error> {
        let buf = match buf_len {
            0 => None,
            n => Some(Bounce::from_user(buf, n)?),
        };
        let mut handles = heapless::Vec::new();
        if !specs.is_empty() {
            let p = process_of(sched::current())?;
            let entries = p.ipc.handles.lock().take_transfer(specs)?;
            for (e, (_, mode)) in entries.into_iter().zip(specs) {
                if *mode == TransferMode::Copy {
                    // A copy is one more handle to the object.
                    super::retain(&e.object, e.rights);
                }
                // Cannot fail: at most MAX_TRANSFER specs.
                let _ = handles.push(InFlight { entry: e });
            }
        }
        Ok(Extra { buf, handles })
    }
}

fn process_of(t: &Thread) -> Result<&Arc<Process>, Error> {
    t.process.as_ref().ok_or(Error::PermissionDenied)
}

/// What [`place`] delivered: the bytes written and the new handle numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Placed {
    /// Buffer bytes written.
    pub len: usize,
    /// Handle numbers in the receiver's table (count = handles placed).
    pub handles: [u32; MAX_TRANSFER],
    /// Handles placed.
    pub count: usize,
}

/// Writes `extra` into thread `to` (claimed by the caller, not running):
/// the buffer into `to`'s buffer at `addr` (capacity already checked), the
/// handles into its process's table. On error nothing of `extra` is lost
/// (the caller still holds it); the buffer may have been written.
pub fn place(to: &Thread, addr: u64, extra: &mut Extra) -> Result<Placed, Error> {
    let mut placed = Placed::default();
    if let Some(b) = &extra.buf {
        copy_into(to, addr, b.bytes())?;
        placed.len = b.len();
    }
    if !extra.handles.is_empty() {
        let dst = process_of(to)?;
        let mut t = dst.ipc.handles.lock();
        t.reserve(extra.handles.len())?;
        for (i, f) in extra.handles.drain(..).enumerate() {
            placed.handles[i] = t.install(f.entry).raw();
            placed.count += 1;
        }
    }
    Ok(placed)
}

/// Copies `bytes` to `addr` in `to`'s address space: directly when it is
/// the current one, else with `to`'s space loaded for the copy (interrupts
/// are off, no lock is held; a shootdown for that space reaches this CPU
/// through the loaded-root table and is acknowledged after the copy, so no
/// frame it unmaps is freed under it).
fn copy_into(to: &Thread, addr: u64, bytes: &[u8]) -> Result<(), Error> {
    let cur = sched::current();
    let (Some(mine), Some(theirs)) = (&cur.space, &to.space) else {
        return Err(Error::PermissionDenied);
    };
    if Arc::ptr_eq(mine, theirs) {
        return copy_to_user(addr, bytes);
    }
    let cpu = crate::arch::percpu::cpu_index();
    crate::mem::load_address_space(cpu, theirs.root());
    let r = copy_to_user(addr, bytes);
    crate::mem::load_address_space(cpu, mine.root());
    r
}

/// Drops what an operation could not deliver: the bounce buffer, and the
/// handles (see the module docs).
pub fn restore(extra: Extra) {
    let Extra { buf, handles } = extra;
    drop(buf);
    for f in handles {
        super::release(f.entry);
    }
}
