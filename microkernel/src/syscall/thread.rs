//! The thread family: exit, yield, sleep, spawn, affinity, priority, join,
//! kill, and the FS/GS bases. `thread_spawn` gives its caller a thread
//! handle; join and kill take one (ids are for display).

use crate::arch::cpu::{msr, wrmsr};
use crate::arch::trap::TrapFrame;
use crate::arch::uaccess::user_range_ok;
use crate::lifecycle::exit_current;
use crate::lifecycle::sleep_ns as sleep;
use crate::lifecycle::{join as join_thread, kill as kill_thread, spawn_thread};
use crate::object::kobject::Object;
use crate::object::thread::ThreadExit;
use crate::sched::{current, set_affinity as pin, yield_now as give_way};
use abi::layout::USER_END;
use abi::{status, Error, MAX_PRIORITY};
use alloc::sync::Arc;
use core::sync::atomic::Ordering;
use kcore::handles::{Handle, Rights};

/// `thread_exit(code)` / `process_exit(code)`: the status word to leave.
pub struct Exit {
    pub status: u64,
}

impl Exit {
    /// Any value is a code: only its low 32 bits count.
    pub fn decode(f: &TrapFrame) -> Exit {
        Exit {
            status: status::exited(f.rdi as i32),
        }
    }
}

/// Ends the calling thread.
pub fn exit(req: Exit) -> Result<u64, Error> {
    exit_current(req.status)
}

/// Gives the CPU to another ready thread.
pub fn yield_now() -> Result<u64, Error> {
    give_way();
    Ok(0)
}

/// Blocks for at least `ns` nanoseconds (any value: a deadline past the end
/// of time is refused by the sleep list).
pub fn sleep_ns(ns: u64) -> Result<u64, Error> {
    sleep(ns).map(|_| 0)
}

/// `thread_spawn(entry, stack_top, arg)`, checked: the entry is a user
/// address and the stack's top is 16-byte aligned with its last 16 bytes in
/// the user half.
pub struct Spawn {
    entry: u64,
    stack_top: u64,
    arg: u64,
}

impl Spawn {
    /// `InvalidArgument` for an entry or stack outside the user half or a
    /// misaligned stack top.
    pub fn decode(f: &TrapFrame) -> Result<Spawn, Error> {
        let (entry, stack_top, arg) = (f.rdi, f.rsi, f.rdx);
        if !user_range_ok(entry, 1)
            || !user_range_ok(stack_top.wrapping_sub(16), 16)
            || !stack_top.is_multiple_of(16)
        {
            return Err(Error::InvalidArgument);
        }
        Ok(Spawn {
            entry,
            stack_top,
            arg,
        })
    }
}

/// Starts a thread in the caller's process; returns a handle to it and
/// puts its id (for display) in RDX.
pub fn spawn(req: Spawn, f: &mut TrapFrame) -> Result<u64, Error> {
    let p = current().process.clone().ok_or(Error::PermissionDenied)?;
    let (h, tid) = spawn_thread(&p, req.entry, req.stack_top, req.arg)?;
    f.rdx = tid.get();
    Ok(h.raw() as u64)
}

/// A thread handle of the caller's with the rights a call needs: the exit
/// record it names, and the number (which a reaping join closes).
pub struct ThreadRef {
    rec: Arc<ThreadExit>,
    handle: Handle,
}

impl ThreadRef {
    /// `BadHandle` for a number that names nothing here, `WrongType` for
    /// another kind of object, `PermissionDenied` without `rights`.
    pub fn decode(reg: u64, rights: Rights) -> Result<ThreadRef, Error> {
        let (handle, object) =
            super::handle_object(reg, rights, |o| matches!(o, Object::Thread(_)))?;
        let Object::Thread(rec) = object else {
            return Err(Error::WrongType);
        };
        Ok(ThreadRef { rec, handle })
    }
}

/// Pins the caller to CPU `cpu` (`u64::MAX` unpins; `NotFound` for a CPU
/// that is not online).
pub fn set_affinity(cpu: u64) -> Result<u64, Error> {
    pin(cpu)
}

/// A priority the caller may take: at most [`MAX_PRIORITY`] and not above
/// (numerically below) its process's maximum controlled priority (seL4's
/// MCP; 0 is the highest priority).
pub struct Priority {
    prio: u8,
}

impl Priority {
    /// `InvalidArgument` past [`MAX_PRIORITY`]; `PermissionDenied` above the
    /// caller's MCP.
    pub fn decode(f: &TrapFrame) -> Result<Priority, Error> {
        let prio = f.rdi;
        if prio > MAX_PRIORITY {
            return Err(Error::InvalidArgument);
        }
        let mcp = current().process.as_ref().map_or(0, |p| p.mcp);
        if (prio as u8) < mcp {
            return Err(Error::PermissionDenied);
        }
        Ok(Priority { prio: prio as u8 })
    }
}

/// Sets the caller's priority.
pub fn set_priority(req: Priority) -> Result<u64, Error> {
    current().sched.priority.store(req.prio, Ordering::SeqCst);
    Ok(0)
}

/// Waits for the thread `req` names to end; returns its status word and
/// closes the handle (the reap consumes it).
pub fn join(req: ThreadRef) -> Result<u64, Error> {
    // The reference moves into the join (a killed joiner never returns).
    let st = join_thread(req.rec)?;
    super::close_reaped(req.handle);
    Ok(st)
}

/// Makes the thread `req` names end before it runs user code again.
pub fn kill(req: ThreadRef) -> Result<u64, Error> {
    if let Some(t) = req.rec.thread() {
        kill_thread(&t);
    }
    Ok(0)
}

/// hw (issue 11): `thread_suspend` of the thread `req` names (an ended one:
/// nothing).
pub fn suspend(req: ThreadRef) -> Result<u64, Error> {
    if let Some(t) = req.rec.thread() {
        crate::lifecycle::suspend(&t);
    }
    Ok(0)
}

/// hw (issue 11): `thread_resume` of the thread `req` names.
pub fn resume(req: ThreadRef) -> Result<u64, Error> {
    if let Some(t) = req.rec.thread() {
        crate::lifecycle::resume(&t);
    }
    Ok(0)
}

/// A new FS or GS base: a user-half address (a kernel-half GS base would
/// confuse the paranoid entry, which reads GS_BASE's sign to decide
/// `swapgs`).
pub struct Base {
    value: u64,
}

impl Base {
    /// `BadAddress` for a kernel-half or non-canonical value.
    pub fn decode(f: &TrapFrame) -> Result<Base, Error> {
        if f.rdi >= USER_END {
            return Err(Error::BadAddress);
        }
        Ok(Base { value: f.rdi })
    }
}

/// Sets the FS base MSR.
pub fn set_fs_base(req: Base) -> Result<u64, Error> {
    // Switches from and to this thread now save and compare its bases.
    current().fpu.note_bases();
    // SAFETY: FS_BASE holds the user's FS base while this thread runs (the
    // kernel never uses FS); a user-half value cannot affect the kernel.
    unsafe { wrmsr(msr::FS_BASE, req.value) };
    Ok(0)
}

/// Sets the user GS base, parked in KERNEL_GS_BASE while the thread is in
/// the kernel (`swapgs` puts it back on the way out).
pub fn set_gs_base(req: Base) -> Result<u64, Error> {
    // As in `set_fs_base`.
    current().fpu.note_bases();
    // SAFETY: KERNEL_GS_BASE holds the user's GS base while this thread
    // runs in the kernel; a user-half value cannot affect the kernel.
    unsafe { wrmsr(msr::KERNEL_GS_BASE, req.value) };
    Ok(0)
}
