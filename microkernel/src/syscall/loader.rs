//! The loader's syscalls (issue 11): `process_id`, `process_allow_programs`,
//! and `process_create`'s program name.
//!
//! A process the loader builds is a *program*: it gets an account of its
//! own (its process, frame and handle budgets, as init's children get) and
//! a name the kernel prints in its fault lines (the runner symbolizes them
//! against that program's ELF). Only init, and a process init allowed
//! (`process_allow_programs`: the loader), may create programs; anybody
//! else's children stay in its own account, so no program can escape its
//! budgets by creating new ones.

use super::handle_object;
use crate::arch::trap::TrapFrame;
use crate::mem::user::UserSlice;
use crate::object::kobject::Object;
use crate::object::process::{Process, INIT_PID};
use crate::sched::current;
use abi::Error;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;
use kcore::bootinfo::ModuleName;
use kcore::handles::Rights;

/// The process `reg` names, through a handle with `rights`.
fn process(reg: u64, rights: Rights) -> Result<Arc<Process>, Error> {
    let (_, object) = handle_object(reg, rights, |o| matches!(o, Object::Process(_)))?;
    let Object::Process(p) = object else {
        return Err(Error::WrongType);
    };
    Ok(p)
}

/// `process_id(proc)`: the pid of the process `proc` names (any rights),
/// and in RDX the CPU it runs on or last ran on (`ps`'s CPU column;
/// `u64::MAX` when it has no thread: not started, or ended).
pub fn process_id(f: &mut TrapFrame) -> Result<u64, Error> {
    let p = process(f.rdi, Rights::empty())?;
    let cpu = p.threads.lock().cpu();
    f.rdx = cpu.map_or(u64::MAX, u64::from);
    Ok(p.pid.get())
}

/// `process_allow_programs(proc)`: lets `proc` (a handle with MAP) create
/// programs. init only (`PermissionDenied` for anyone else).
pub fn process_allow_programs(f: &mut TrapFrame) -> Result<u64, Error> {
    let me = current().process.clone().ok_or(Error::PermissionDenied)?;
    if me.pid != INIT_PID {
        return Err(Error::PermissionDenied);
    }
    // Relaxed: read by the target's own process_create, a later syscall
    // of a thread that init starts after this one returned (thread_start
    // orders it).
    process(f.rdi, Rights::MAP)?
        .starts_programs
        .store(true, Ordering::Relaxed);
    Ok(0)
}

/// The program name `process_create(name, len)` asks for: `None` for
/// `len == 0` (an ordinary child); `PermissionDenied` unless the caller is
/// init or allowed; `InvalidArgument` for a length over the kernel's
/// module-name size or a byte outside `a-z0-9._-`; `BadAddress` for a
/// range that is not the caller's.
pub fn program_name(me: &Process, ptr: u64, len: u64) -> Result<Option<ModuleName>, Error> {
    if len == 0 {
        return Ok(None);
    }
    if me.pid != INIT_PID && !me.starts_programs.load(Ordering::Relaxed) {
        return Err(Error::PermissionDenied);
    }
    let mut buf = [0u8; abi::bootinfo::NAME_BYTES];
    if len > buf.len() as u64 {
        return Err(Error::InvalidArgument);
    }
    let n = UserSlice::new(ptr, len)?.read(&mut buf)?;
    if n != len as usize {
        return Err(Error::BadAddress);
    }
    let ok = |b: &u8| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-');
    if !buf[..n].iter().all(ok) {
        return Err(Error::InvalidArgument);
    }
    // Checked above: ASCII, at most the capacity.
    let s = core::str::from_utf8(&buf[..n]).map_err(|_| Error::InvalidArgument)?;
    ModuleName::try_from(s)
        .map(Some)
        .map_err(|_| Error::InvalidArgument)
}
