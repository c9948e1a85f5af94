//! The process family: exit, spawn, wait, kill, and the priority ceiling
//! handed to children. `process_spawn` gives its caller a process handle;
//! wait and kill take one (pids are for display).

use super::thread::Exit;
use crate::arch::trap::TrapFrame;
use crate::lifecycle::{
    exit_current_process, kill_process, spawn as spawn_process, wait as wait_child,
};
use crate::mem::user::UserSlice;
use crate::mem::{alloc_contiguous, free_frame, phys_to_virt};
use crate::object::kobject::Object;
use crate::object::process::Process;
use crate::object::space::AddressSpace;
use crate::sched::{current, preemption_point};
use abi::{Error, MAX_PRIORITY};
use alloc::sync::Arc;
use core::sync::atomic::Ordering;
use kcore::frame::PhysFrame;
use kcore::handles::{Handle, Rights};

/// The largest image `process_spawn` accepts.
const MAX_IMAGE_BYTES: u64 = 16 << 20;
/// Bytes `process_spawn` copies from the caller between preemption points.
const SPAWN_COPY_CHUNK: usize = 64 << 10;

/// Ends every thread of the caller's process.
pub fn exit(req: Exit) -> Result<u64, Error> {
    exit_current_process(req.status)
}

/// `process_spawn(image, len, arg)`, decoded: the image as user memory, the
/// caller's process and address space (which pays for the copy).
pub struct Spawn {
    image: UserSlice,
    arg: u64,
    parent: Arc<Process>,
    space: Arc<AddressSpace>,
}

impl Spawn {
    /// `InvalidArgument` for an image over [`MAX_IMAGE_BYTES`], `BadAddress`
    /// for one outside the user half, `PermissionDenied` for a caller with
    /// no process.
    pub fn decode(f: &TrapFrame) -> Result<Spawn, Error> {
        let (image, len, arg) = (f.rdi, f.rsi, f.rdx);
        if len > MAX_IMAGE_BYTES {
            return Err(Error::InvalidArgument);
        }
        let image = UserSlice::new(image, len)?;
        let t = current();
        let parent = t.process.clone().ok_or(Error::PermissionDenied)?;
        let space = t.space.clone().ok_or(Error::PermissionDenied)?;
        Ok(Spawn {
            image,
            arg,
            parent,
            space,
        })
    }
}

/// Copies the image into the kernel and starts a process from it; returns
/// a handle to the child and puts its pid (for display) in RDX. (The image is parsed — and a bad one refused — by the
/// lifecycle code once the copy exists: the bytes in user memory could
/// change under a parse done earlier.)
pub fn spawn(req: Spawn, f: &mut TrapFrame) -> Result<u64, Error> {
    // The transient copy lives in frames of its own, not on the kernel heap
    // (which it could fill at small memory sizes, failing other CPUs'
    // allocations). Its frames are charged to the caller's memory limits
    // while it lives: otherwise every thread of a program could hold a
    // 16 MiB copy at once (128 threads: 2 GiB), past any limit, taking all
    // free memory from everyone else meanwhile.
    let mut buf = FrameBuf::new(req.image.len_bytes(), &req.space)?;
    // Copied in chunks with a preemption point between them (no lock is held;
    // another thread unmapping the source meanwhile makes this BadAddress).
    for (i, chunk) in buf.bytes_mut().chunks_mut(SPAWN_COPY_CHUNK).enumerate() {
        if i != 0 {
            preemption_point();
        }
        req.image.skip((i * SPAWN_COPY_CHUNK) as u64).read(chunk)?;
    }
    let (h, pid) = spawn_process(buf.bytes(), &req.parent, req.arg)?;
    drop(buf);
    // The build's tail ran with interrupts off: take what came meanwhile
    // here, not on the first user instruction. A kill a timer interrupt
    // brings (a killer woken on this CPU) is then seen by the syscall
    // exit's work test, which undoes the spawn, instead of landing after
    // the return, where the thread dies holding the handle in RAX.
    preemption_point();
    f.rdx = pid.get();
    Ok(h.raw() as u64)
}

/// A process handle of the caller's with the rights a call needs: the
/// process, and the number (which a reaping wait closes).
pub struct ProcessRef {
    /// The process the handle names.
    pub process: Arc<Process>,
    handle: Handle,
}

impl ProcessRef {
    /// `BadHandle` for a number that names nothing here, `WrongType` for
    /// another kind of object, `PermissionDenied` without `rights`.
    pub fn decode(reg: u64, rights: Rights) -> Result<ProcessRef, Error> {
        let (handle, object) =
            super::handle_object(reg, rights, |o| matches!(o, Object::Process(_)))?;
        let Object::Process(process) = object else {
            return Err(Error::WrongType);
        };
        Ok(ProcessRef { process, handle })
    }
}

/// Waits for the process `req` names to end; returns its status word and
/// closes the handle (the reap consumes it).
pub fn wait(req: ProcessRef) -> Result<u64, Error> {
    // The reference moves into the wait (a killed waiter never returns).
    let st = wait_child(req.process)?;
    super::close_reaped(req.handle);
    Ok(st)
}

/// Ends every thread of the process `req` names.
pub fn kill(req: ProcessRef) -> Result<u64, Error> {
    kill_process(&req.process);
    Ok(0)
}

/// `set_child_max_priority(prio)`, checked: at most as high as the caller's
/// own ceiling (numerically not below it), so a creator never hands out
/// more than it has.
pub struct ChildMcp {
    prio: u8,
    process: Arc<Process>,
}

impl ChildMcp {
    /// `InvalidArgument` past [`MAX_PRIORITY`]; `PermissionDenied` above the
    /// caller's MCP or for a caller with no process.
    pub fn decode(f: &TrapFrame) -> Result<ChildMcp, Error> {
        let prio = f.rdi;
        if prio > MAX_PRIORITY {
            return Err(Error::InvalidArgument);
        }
        let p = current().process.clone().ok_or(Error::PermissionDenied)?;
        if (prio as u8) < p.mcp {
            return Err(Error::PermissionDenied);
        }
        Ok(ChildMcp {
            prio: prio as u8,
            process: p,
        })
    }
}

/// Sets the MCP the caller's future children get.
pub fn set_child_max_priority(req: ChildMcp) -> Result<u64, Error> {
    req.process.child_mcp.store(req.prio, Ordering::SeqCst);
    Ok(0)
}

/// Physically contiguous frames used as a byte buffer through the direct
/// map, charged to an address space's limits; freed (and the charge
/// returned) on drop.
struct FrameBuf<'a> {
    first: u64,
    pages: usize,
    len: usize,
    charged_to: &'a AddressSpace,
}

impl<'a> FrameBuf<'a> {
    fn new(len: u64, charge: &'a AddressSpace) -> Result<FrameBuf<'a>, Error> {
        let pages = (len.div_ceil(4096) as usize).max(1);
        charge.try_charge(pages as u64)?;
        let f = match alloc_contiguous(pages, 1) {
            Ok(f) => f,
            Err(_) => {
                charge.uncharge(pages as u64);
                return Err(Error::NoMemory);
            }
        };
        Ok(FrameBuf {
            first: f.addr(),
            pages,
            len: len as usize,
            charged_to: charge,
        })
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the frames were allocated for this buffer alone, lie in the
        // direct map and hold at least `len` bytes; `&mut self` makes this
        // the only view.
        unsafe { core::slice::from_raw_parts_mut(phys_to_virt(self.first) as *mut u8, self.len) }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: as in `bytes_mut`; shared views only while `&self` lives.
        unsafe { core::slice::from_raw_parts(phys_to_virt(self.first) as *const u8, self.len) }
    }
}

impl Drop for FrameBuf<'_> {
    fn drop(&mut self) {
        for i in 0..self.pages {
            if i % 64 == 63 {
                preemption_point();
            }
            if let Some(f) = PhysFrame::from_addr(self.first + i as u64 * 4096) {
                let _ = free_frame(f);
            }
        }
        self.charged_to.uncharge(self.pages as u64);
    }
}
