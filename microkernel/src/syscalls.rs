//! The syscall dispatcher: decodes the number and arguments from the trap frame
//! ([`abi`] register convention), runs the handler, and prepares the return.
//!
//! Every argument is untrusted: numbers are checked through `Sysnum::try_from`,
//! user pointers go through [`crate::arch::uaccess`], and every failure is an
//! [`Error`] code in RAX, never a kernel panic.
//!
//! Adding a syscall: one arm in [`syscall_dispatch`],
//! `Ok(Sysnum::Foo) => |f| foo(f.rdi, f.rsi),` with `foo` a plain function
//! below. Only a syscall that is a single load may be answered in its arm
//! (`scripts/bench.sh --check` watches what that path costs).

use crate::arch::trap::TrapFrame;
use crate::arch::uaccess::{copy_from_user, user_range_ok};
use crate::process;
use crate::sched;
use abi::layout::USER_END;
use abi::{encode_result, Error, Sysnum};
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

/// The largest image `process_spawn` accepts.
const MAX_IMAGE_BYTES: u64 = 16 << 20;
/// The largest single `debug_write`.
const MAX_DEBUG_WRITE: u64 = 4096;

/// Called by the syscall entry stub with the caller's saved registers; leaves
/// the result in the frame's RAX. The stub sanitises RFLAGS and picks
/// `sysretq` or `iretq` itself.
///
/// One `match` on the number, compiled to a bounds check and a jump table
/// (`Sysnum::try_from` is an identity match and folds into that check:
/// nothing is converted per call). Every syscall goes through this table;
/// none is answered before it. A one-line syscall is answered in its arm
/// (no call, no stack frame); every other arm picks its [`Handler`], and the
/// one indirect call after the match is the only place that sets up a stack
/// frame (the compiler "shrink-wraps" the prologue into that block, which it
/// cannot do when several arms make calls of their own). Handlers are
/// closures over the plain functions below, so a handler's locals never
/// enlarge this function's frame.
///
/// A thread whose process is being killed is not checked here: the killer
/// kicks the CPUs running its threads, and the interrupt return path ends them.
#[no_mangle]
pub extern "C" fn syscall_dispatch(frame: &mut TrapFrame) {
    let handler: Handler = match Sysnum::try_from(frame.rax) {
        Err(e) => return finish(frame, Err(e)),
        // Answered in the table.
        Ok(Sysnum::Null) => return finish(frame, Ok(0)),
        Ok(Sysnum::ThreadId) => return finish(frame, Ok(sched::current().tid)),
        Ok(Sysnum::CpuCount) => return finish(frame, Ok(crate::smp::online() as u64)),
        // Through a handler (arguments: RDI, RSI, RDX).
        Ok(Sysnum::DebugWrite) => |f| debug_write(f.rdi, f.rsi),
        Ok(Sysnum::ThreadExit) => |f| sched::exit_current(abi::status::exited(f.rdi as i32)),
        Ok(Sysnum::ProcessExit) => {
            |f| process::exit_current_process(abi::status::exited(f.rdi as i32))
        }
        Ok(Sysnum::Yield) => |_| {
            sched::yield_now();
            Ok(0)
        },
        Ok(Sysnum::SleepNs) => |f| {
            crate::time::sleep_ns(f.rdi);
            Ok(0)
        },
        Ok(Sysnum::ClockNs) => |_| Ok(crate::time::now_ns()),
        Ok(Sysnum::ThreadSpawn) => |f| thread_spawn(f.rdi, f.rsi, f.rdx),
        Ok(Sysnum::Shutdown) => |f| shutdown(f.rdi),
        Ok(Sysnum::MapAnon) => |f| {
            current_space()?
                .map_anon(f.rdi, f.rsi, f.rdx)
                .map(|_| f.rdi)
        },
        Ok(Sysnum::Unmap) => |f| current_space()?.unmap(f.rdi, f.rsi).map(|_| 0),
        Ok(Sysnum::Protect) => |f| current_space()?.protect(f.rdi, f.rsi, f.rdx).map(|_| 0),
        Ok(Sysnum::CpuId) => |_| Ok(crate::arch::percpu::cpu_id() as u64),
        Ok(Sysnum::SetAffinity) => |f| sched::set_affinity(f.rdi),
        Ok(Sysnum::SetPriority) => |f| set_priority(f.rdi),
        Ok(Sysnum::ThreadJoin) => |f| process::join(f.rdi),
        Ok(Sysnum::ProcessSpawn) => |f| process_spawn(f.rdi, f.rsi, f.rdx),
        Ok(Sysnum::ProcessWait) => |f| process::wait(f.rdi),
        Ok(Sysnum::SetFsBase) => |f| set_base(crate::arch::cpu::msr::FS_BASE, f.rdi),
        Ok(Sysnum::SetGsBase) => |f| set_base(crate::arch::cpu::msr::KERNEL_GS_BASE, f.rdi),
        Ok(Sysnum::CpuSyscalls) => |f| {
            crate::arch::percpu::of(f.rdi)
                .map(|pc| pc.syscalls.load(Ordering::Relaxed))
                .ok_or(Error::NotFound)
        },
        Ok(Sysnum::SysInfo) => |f| sysinfo(f.rdi, f.rsi),
    };
    let r = handler(frame);
    finish(frame, r);
}

/// A syscall's handler: reads its arguments from the frame, returns the
/// result. (A closure in [`syscall_dispatch`]'s table; called indirectly, so
/// never inlined into the dispatcher.)
type Handler = fn(&TrapFrame) -> Result<u64, Error>;

/// Puts the result in RAX and checks the return RIP.
#[inline(always)]
fn finish(frame: &mut TrapFrame, r: Result<u64, Error>) {
    frame.rax = encode_result(r);
    // A return RIP outside the canonical lower half (a `syscall` in the last
    // user page returns to 0x8000_0000_0000) would make SYSRET fault in ring 0
    // on the user stack (CVE-2012-0217), and IRET fault in ring 0 too: it is
    // the thread's fault, reported as #GP.
    if frame.rip >= USER_END {
        frame.vector = 13;
        frame.error_code = 0;
        sched::user_fault(frame);
    }
}

fn current_space() -> Result<&'static crate::vm::AddressSpace, Error> {
    sched::current()
        .space
        .as_deref()
        .ok_or(Error::PermissionDenied)
}

/// Copies the user's bytes to the serial log in small chunks, holding the
/// serial lock throughout so the text is not interleaved with other CPUs'.
fn debug_write(ptr: u64, len: u64) -> Result<u64, Error> {
    if !user_range_ok(ptr, len) {
        return Err(Error::BadAddress);
    }
    let len = len.min(MAX_DEBUG_WRITE);
    let mut chunk = [0u8; 128];
    let mut serial = crate::logger::SERIAL.lock();
    let mut done = 0;
    while done < len {
        let n = (len - done).min(chunk.len() as u64) as usize;
        copy_from_user(&mut chunk[..n], ptr + done)?;
        for &b in &chunk[..n] {
            if b == b'\n' {
                serial.write_byte(b'\r');
            }
            serial.write_byte(b);
        }
        done += n as u64;
    }
    Ok(len)
}

fn sysinfo(buf: u64, len: u64) -> Result<u64, Error> {
    let size = core::mem::size_of::<abi::SysInfo>();
    if len < size as u64 {
        return Err(Error::InvalidArgument);
    }
    let info = abi::SysInfo {
        cpus_online: crate::smp::online() as u64,
        cpus_found: crate::smp::found() as u64,
        total_bytes: crate::mem::total_bytes(),
        free_bytes: crate::mem::free_frames() as u64 * 4096,
        threads: crate::task::live_threads() as u64,
        processes: crate::task::live_processes() as u64,
        uptime_ns: crate::time::now_ns(),
    };
    // SAFETY: SysInfo is repr(C) plain data of `size` bytes with no padding
    // (seven u64 fields), so viewing it as bytes reads only initialised memory.
    let bytes =
        unsafe { core::slice::from_raw_parts(&info as *const abi::SysInfo as *const u8, size) };
    crate::arch::uaccess::copy_to_user(buf, bytes)?;
    Ok(size as u64)
}

fn thread_spawn(entry: u64, stack_top: u64, arg: u64) -> Result<u64, Error> {
    if !user_range_ok(entry, 1)
        || !user_range_ok(stack_top.wrapping_sub(16), 16)
        || !stack_top.is_multiple_of(16)
    {
        return Err(Error::InvalidArgument);
    }
    let p = sched::current()
        .process
        .clone()
        .ok_or(Error::PermissionDenied)?;
    process::start_thread(&p, entry, stack_top, arg)
}

fn shutdown(success: u64) -> Result<u64, Error> {
    let pid = sched::current().process.as_ref().map_or(0, |p| p.pid);
    if pid != process::INIT_PID {
        return Err(Error::PermissionDenied);
    }
    crate::println!(
        "mica: shutdown requested by init ({})",
        if success != 0 { "success" } else { "failure" }
    );
    crate::arch::qemu::exit(success != 0)
}

fn set_priority(prio: u64) -> Result<u64, Error> {
    if prio > abi::MAX_PRIORITY {
        return Err(Error::InvalidArgument);
    }
    sched::current()
        .priority
        .store(prio as u8, Ordering::SeqCst);
    Ok(0)
}

fn process_spawn(image: u64, len: u64, arg: u64) -> Result<u64, Error> {
    if len > MAX_IMAGE_BYTES {
        return Err(Error::InvalidArgument);
    }
    if !user_range_ok(image, len) {
        return Err(Error::BadAddress);
    }
    let mut buf = Vec::new();
    buf.try_reserve_exact(len as usize)
        .map_err(|_| Error::NoMemory)?;
    buf.resize(len as usize, 0);
    copy_from_user(&mut buf, image)?;
    let parent = sched::current().process.as_ref().map_or(0, |p| p.pid);
    process::spawn(&buf, parent, arg)
}

/// Sets the FS base MSR or the parked user GS base, which must be user-half
/// addresses (a kernel-half GS base would confuse the paranoid entry).
fn set_base(msr: u32, value: u64) -> Result<u64, Error> {
    if value >= USER_END {
        return Err(Error::BadAddress);
    }
    // SAFETY: FS_BASE / KERNEL_GS_BASE hold the user's bases while this thread
    // runs in the kernel; a lower-half value cannot affect the kernel.
    unsafe { crate::arch::cpu::wrmsr(msr, value) };
    Ok(0)
}
