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
pub use crate::object::message::Extra;
use crate::object::message::{Bounce, InFlight};
use crate::object::process::Process;
use crate::object::thread::Thread;
use crate::sched;
use abi::Error;
use alloc::sync::Arc;
use kcore::handles::{Handle, TransferMode, MAX_TRANSFER};
use kcore::ipc::MAX_BUFFER;

/// Copies `len` bytes from the current thread's `addr` into a new bounce
/// buffer charged to its address space (`len` at most [`MAX_BUFFER`],
/// checked by the decoder).
fn bounce_from_user(addr: u64, len: usize) -> Result<Bounce, Error> {
    debug_assert!(len > 0 && len <= MAX_BUFFER);
    let space = sched::current()
        .space
        .clone()
        .ok_or(Error::PermissionDenied)?;
    let mut b = Bounce::new(space, len)?;
    copy_from_user(b.bytes_mut(), addr)?; // drop frees the frames
    Ok(b)
}

impl Extra {
    /// Takes the sender's side: copies `buf_len` bytes at `buf` and takes
    /// `specs` out of the current process's table (all or nothing).
    pub fn take(
        buf: u64,
        buf_len: usize,
        specs: &[(Handle, TransferMode)],
    ) -> Result<Extra, Error> {
        let buf = match buf_len {
            0 => None,
            n => Some(bounce_from_user(buf, n)?),
        };
        let mut handles = heapless::Vec::new();
        if !specs.is_empty() {
            let p = process_of(sched::current())?;
            let mut t = p.ipc.handles.lock();
            let entries = t.take_transfer(specs)?;
            for (e, (_, mode)) in entries.into_iter().zip(specs) {
                if *mode == TransferMode::Copy {
                    // A copy is one more handle to the object. Counted under
                    // the table lock (table before object: the lock order),
                    // as `dup` does: a close of the source in between would
                    // otherwise kill the endpoint (its callers told
                    // `NotDelivered`) and this count then revive it.
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
    // Interrupts are off, so nothing runs in between but the copy, and the
    // caller's own root is back before it returns to its space. Both spaces
    // are held by a thread reference here. A copy-on-write fault in the
    // copy is resolved in `theirs` (breakvm).
    crate::object::space::with_loaded(theirs, mine, || copy_to_user(addr, bytes))
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
