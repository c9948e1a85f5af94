//! The vm family (issue 11): building and editing processes through
//! handles. `process_create` and `space_clone` make processes, `space_map`,
//! `space_unmap`, `space_protect` and `mem_map` edit a space the caller
//! holds MAP on, `mem_create` makes memory objects, `thread_start` starts a
//! thread in a process it holds MAP on.
//!
//! The process argument is a process handle with [`Rights::MAP`], or
//! [`abi::vm::SELF`] for the caller's own process (see docs/decisions.md,
//! "vm (issue 11)"). Ranges, protections and quotas are checked by the
//! address space itself, as for `map_anon`; the target's quotas are charged.

use crate::arch::trap::TrapFrame;
use crate::arch::uaccess::user_range_ok;
use crate::lifecycle::start_thread_in;
use crate::object::kobject::{charge, ObjBox, Object};
use crate::object::memory::MemoryObj;
use crate::object::process::Process;
use crate::object::space::AddressSpace;
use crate::sched::current;
use abi::layout::PAGE_SIZE;
use abi::Error;
use alloc::sync::Arc;
use kcore::handles::{Entry, Rights};

/// Rights of the handle `process_create` and `space_clone` give.
const BUILDER_RIGHTS: Rights = Rights::from_bits_retain(abi::rights_sets::PROCESS_BUILDER);
/// Rights of the handle `mem_create` gives.
const MEMORY_RIGHTS: Rights = Rights::from_bits_retain(abi::rights_sets::MEMORY_CREATOR);

/// The caller's process (`PermissionDenied` for a kernel thread).
fn caller() -> Result<Arc<Process>, Error> {
    current().process.clone().ok_or(Error::PermissionDenied)
}

/// The process `reg` names for an edit: [`abi::vm::SELF`], or a process
/// handle with MAP (`BadHandle`, `WrongType`, `PermissionDenied` as
/// `handle_object` orders them).
fn target(reg: u64) -> Result<Arc<Process>, Error> {
    if reg == abi::vm::SELF {
        return caller();
    }
    let (_, object) = super::handle_object(reg, Rights::MAP, |o| matches!(o, Object::Process(_)))?;
    let Object::Process(p) = object else {
        return Err(Error::WrongType);
    };
    Ok(p)
}

/// The space of the process `reg` names (`NotFound` once it ended).
fn target_space(reg: u64) -> Result<Arc<AddressSpace>, Error> {
    target(reg)?.space().ok_or(Error::NotFound)
}

/// Puts a handle to the new process `p` into the caller's table, unless the
/// caller is being killed (`NotFound`, as `process_spawn`): under the
/// caller's handle table and thread-table locks, the order `process_spawn`
/// takes them in. On error `p` goes with the last reference.
fn give_process(parent: &Arc<Process>, p: Arc<Process>, f: &mut TrapFrame) -> Result<u64, Error> {
    let pid = p.pid;
    let handle = Entry {
        object: Object::Process(p),
        rights: BUILDER_RIGHTS,
        badge: 0,
    };
    let h = {
        let mut handles = parent.ipc.handles.lock();
        let table = parent.threads.lock();
        if table.is_exiting() {
            Err(Error::NotFound)
        } else {
            handles.insert(handle).map_err(Error::from)
        }
    }?;
    f.rdx = pid.get();
    Ok(h.raw() as u64)
}

/// `process_create()`: an empty process; returns its handle, pid in RDX.
///
/// With a name (`process_create(name, len)`, `len > 0`; loader, issue 11)
/// the process is a program of its own, named `name`: see
/// `syscall::loader::program_name` for who may and what is refused.
pub fn process_create(f: &mut TrapFrame) -> Result<u64, Error> {
    let parent = caller()?;
    let name = super::loader::program_name(&parent, f.rdi, f.rsi)?;
    let p = Process::new_program(Some(&parent), name.is_some())?;
    if let Some(name) = name {
        p.program.call_once(|| name);
    }
    give_process(&parent, p, f)
}

/// `space_clone(proc)`: a new process with a copy-on-write copy of `proc`'s
/// space; returns its handle, pid in RDX.
pub fn space_clone(f: &mut TrapFrame) -> Result<u64, Error> {
    let src = target_space(f.rdi)?;
    let parent = caller()?;
    let p = Process::new(Some(&parent))?;
    let space = p.space().ok_or(Error::NotFound)?;
    if let Err(e) = space.copy_on_write_from(&src) {
        // Nobody else knows the child: empty its space in preemptible
        // chunks, then let the record go.
        space.teardown();
        return Err(e);
    }
    let r = give_process(&parent, p.clone(), f);
    if r.is_err() {
        // The child never becomes anyone's: empty it here, in chunks,
        // rather than in the record's drop with interrupts off.
        space.teardown();
    }
    r
}

/// `space_map(proc, addr, len, prot)`: fresh zeroed pages in `proc`'s space.
pub fn space_map(f: &mut TrapFrame) -> Result<u64, Error> {
    let (addr, len, prot) = (f.rsi, f.rdx, f.r10);
    target_space(f.rdi)?.map_anon(addr, len, prot).map(|_| addr)
}

/// `space_unmap(proc, addr, len)`.
pub fn space_unmap(f: &mut TrapFrame) -> Result<u64, Error> {
    target_space(f.rdi)?.unmap(f.rsi, f.rdx).map(|_| 0)
}

/// `space_protect(proc, addr, len, prot)`.
pub fn space_protect(f: &mut TrapFrame) -> Result<u64, Error> {
    target_space(f.rdi)?.protect(f.rsi, f.rdx, f.r10).map(|_| 0)
}

/// `mem_create(len)`: a memory object; returns its handle.
pub fn mem_create(f: &mut TrapFrame) -> Result<u64, Error> {
    let len = f.rdi;
    if len == 0 || len > abi::vm::MAX_MEMORY_BYTES {
        return Err(Error::InvalidArgument);
    }
    let p = caller()?;
    let obj = MemoryObj::new(len.div_ceil(PAGE_SIZE), p.account.pages.clone())?;
    let obj: Arc<ObjBox<MemoryObj>> = charge(&p.ipc.objects, obj)?;
    let h = p.ipc.handles.lock().insert(Entry {
        object: Object::Memory(obj),
        rights: MEMORY_RIGHTS,
        badge: 0,
    })?;
    Ok(h.raw() as u64)
}

/// `mem_map(mem, proc, addr, offset, len, prot)`: the object's pages
/// `[offset, offset + len)` at `addr` in `proc`'s space, shared -- or
/// private, copy-on-write, with `abi::vm::MAP_PRIVATE` in `prot`.
pub fn mem_map(f: &mut TrapFrame) -> Result<u64, Error> {
    let (addr, offset, len, prot) = (f.rdx, f.r10, f.r8, f.r9);
    let (_, object) = super::handle_object(f.rdi, Rights::MAP, |o| matches!(o, Object::Memory(_)))?;
    let Object::Memory(obj) = object else {
        return Err(Error::WrongType);
    };
    if !offset.is_multiple_of(PAGE_SIZE) || len == 0 {
        return Err(Error::InvalidArgument);
    }
    let pages = len.div_ceil(PAGE_SIZE);
    let first = offset / PAGE_SIZE;
    let end = first.checked_add(pages).ok_or(Error::InvalidArgument)?;
    if end > obj.pages() {
        return Err(Error::InvalidArgument);
    }
    let space = target_space(f.rsi)?;
    let frames = &obj.frames()[first as usize..end as usize];
    let private = prot & abi::vm::MAP_PRIVATE != 0;
    space
        .map_object_frames(addr, frames, prot & !abi::vm::MAP_PRIVATE, private)
        .map(|_| addr)
}

/// `thread_start(proc, entry, stack_top, arg)`: a thread in `proc`; returns
/// its handle, tid in RDX. Entry and stack are checked as `thread_spawn`'s.
pub fn thread_start(f: &mut TrapFrame) -> Result<u64, Error> {
    let (entry, stack_top, arg) = (f.rsi, f.rdx, f.r10);
    if !user_range_ok(entry, 1)
        || !user_range_ok(stack_top.wrapping_sub(16), 16)
        || !stack_top.is_multiple_of(16)
    {
        return Err(Error::InvalidArgument);
    }
    let p = target(f.rdi)?;
    let me = caller()?;
    let (h, tid) = start_thread_in(&p, &me, entry, stack_top, arg)?;
    f.rdx = tid.get();
    Ok(h.raw() as u64)
}
