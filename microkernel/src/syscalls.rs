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

use crate::arch::syscall::{check_return, ReturnCheck};
use crate::arch::trap::TrapFrame;
use crate::arch::uaccess::{copy_from_user, user_range_ok};
use crate::process;
use crate::sched;
use abi::layout::USER_END;
use abi::{encode_result, Error, Sysnum};
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
    // A non-canonical return RIP is the thread's fault, never SYSRET's
    // (CVE-2012-0217): see `check_return`.
    if dispatch(frame) == ReturnCheck::Fault {
        sched::user_fault(frame);
    }
}

/// The dispatcher proper: runs the syscall `frame` names, puts the result in
/// RAX and says whether the frame may be resumed ([`check_return`]: a
/// non-canonical or kernel return RIP makes it a #GP frame). Separate from
/// [`syscall_dispatch`] so `ktest sysret_refuses_non_canonical_rip` can run
/// the real path on synthetic frames without ending its own thread; inlined
/// there, so the syscall path is the same code.
#[inline(always)]
pub fn dispatch(frame: &mut TrapFrame) -> ReturnCheck {
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
        Ok(Sysnum::SleepNs) => |f| crate::time::sleep_ns(f.rdi).map(|_| 0),
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
        Ok(Sysnum::SetChildMaxPriority) => |f| set_child_max_priority(f.rdi),
        // The IPC family (it writes output registers into the frame).
        Ok(Sysnum::HandleDup) => |f| crate::syscall_ipc::invoke(Sysnum::HandleDup, f),
        Ok(Sysnum::HandleClose) => |f| crate::syscall_ipc::invoke(Sysnum::HandleClose, f),
        Ok(Sysnum::EndpointCreate) => |f| crate::syscall_ipc::invoke(Sysnum::EndpointCreate, f),
        Ok(Sysnum::NotificationCreate) => {
            |f| crate::syscall_ipc::invoke(Sysnum::NotificationCreate, f)
        }
        Ok(Sysnum::IpcCall) => |f| crate::syscall_ipc::invoke(Sysnum::IpcCall, f),
        Ok(Sysnum::IpcSend) => |f| crate::syscall_ipc::invoke(Sysnum::IpcSend, f),
        Ok(Sysnum::IpcRecv) => |f| crate::syscall_ipc::invoke(Sysnum::IpcRecv, f),
        Ok(Sysnum::IpcReply) => |f| crate::syscall_ipc::invoke(Sysnum::IpcReply, f),
        Ok(Sysnum::IpcReplyRecv) => |f| crate::syscall_ipc::invoke(Sysnum::IpcReplyRecv, f),
        Ok(Sysnum::NtfSignal) => |f| crate::syscall_ipc::invoke(Sysnum::NtfSignal, f),
        Ok(Sysnum::NtfWait) => |f| crate::syscall_ipc::invoke(Sysnum::NtfWait, f),
        Ok(Sysnum::NtfBind) => |f| crate::syscall_ipc::invoke(Sysnum::NtfBind, f),
        Ok(Sysnum::HandleGive) => |f| crate::syscall_ipc::invoke(Sysnum::HandleGive, f),
    };
    let r = handler(frame);
    finish(frame, r)
}

/// A syscall's handler: reads its arguments from the frame, returns the
/// result. (A closure in [`syscall_dispatch`]'s table; called indirectly, so
/// never inlined into the dispatcher.)
type Handler = fn(&mut TrapFrame) -> Result<u64, Error>;

/// Puts the result in RAX and checks the return RIP.
#[inline(always)]
fn finish(frame: &mut TrapFrame, r: Result<u64, Error>) -> ReturnCheck {
    frame.rax = encode_result(r);
    check_return(frame)
}

fn current_space() -> Result<&'static crate::vm::AddressSpace, Error> {
    sched::current()
        .space
        .as_deref()
        .ok_or(Error::PermissionDenied)
}

/// Prints up to `MAX_DEBUG_WRITE` bytes of the caller's memory to the kernel
/// log, every line prefixed with the caller's pid (`logger::user_write`).
///
/// All or nothing: the bytes are copied into a kernel buffer first, outside
/// the serial lock, so a range that faults part-way fails with `BadAddress`
/// and prints nothing, and a slow copy never holds up other CPUs' output.
/// The 4 KiB buffer lives on this call's frame (never inlined into the
/// dispatcher, so other syscalls do not pay for it).
#[inline(never)]
fn debug_write(ptr: u64, len: u64) -> Result<u64, Error> {
    if !user_range_ok(ptr, len) {
        return Err(Error::BadAddress);
    }
    let len = len.min(MAX_DEBUG_WRITE) as usize;
    let mut buf = [0u8; MAX_DEBUG_WRITE as usize];
    copy_from_user(&mut buf[..len], ptr)?;
    let pid = sched::current().process.as_ref().map_or(0, |p| p.pid);
    print_user(pid, &buf[..len]);
    Ok(len as u64)
}

/// Prints a process's bytes (already copied into the kernel) on the log,
/// line by line behind its pid. Between lines no lock is held, and pending
/// interrupts are let in there: a real UART sends a 256-byte line in about
/// 22 ms, and a 4 KiB write must not keep interrupts off for all of it.
pub fn print_user(pid: u64, bytes: &[u8]) {
    crate::logger::user_write(pid, bytes, sched::preemption_point);
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
        heap_used_bytes: crate::mem::heap::stats().0 as u64,
    };
    // SAFETY: SysInfo is repr(C) plain data of `size` bytes with no padding
    // (eight u64 fields), so viewing it as bytes reads only initialised memory.
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

/// Sets the caller's priority, never above its process's maximum controlled
/// priority (seL4's MCP; 0 is the highest priority).
fn set_priority(prio: u64) -> Result<u64, Error> {
    if prio > abi::MAX_PRIORITY {
        return Err(Error::InvalidArgument);
    }
    let t = sched::current();
    let mcp = t.process.as_ref().map_or(0, |p| p.mcp);
    if (prio as u8) < mcp {
        return Err(Error::PermissionDenied);
    }
    t.priority.store(prio as u8, Ordering::SeqCst);
    Ok(0)
}

/// Sets the MCP the caller's future children get: at most as high as the
/// caller's own (numerically not below it), so a creator never hands out
/// more than it has.
fn set_child_max_priority(prio: u64) -> Result<u64, Error> {
    if prio > abi::MAX_PRIORITY {
        return Err(Error::InvalidArgument);
    }
    let p = sched::current()
        .process
        .as_ref()
        .ok_or(Error::PermissionDenied)?;
    if (prio as u8) < p.mcp {
        return Err(Error::PermissionDenied);
    }
    p.child_mcp.store(prio as u8, Ordering::SeqCst);
    Ok(0)
}

fn process_spawn(image: u64, len: u64, arg: u64) -> Result<u64, Error> {
    if len > MAX_IMAGE_BYTES {
        return Err(Error::InvalidArgument);
    }
    if !user_range_ok(image, len) {
        return Err(Error::BadAddress);
    }
    let parent = sched::current()
        .process
        .clone()
        .ok_or(Error::PermissionDenied)?;
    // The transient copy lives in frames of its own, not on the kernel heap
    // (which it could fill at small memory sizes, failing other CPUs'
    // allocations). Its frames are charged to the caller's memory limits
    // while it lives: otherwise every thread of a program could hold a
    // 16 MiB copy at once (128 threads: 2 GiB), past any limit, taking all
    // free memory from everyone else meanwhile.
    let space = current_space()?;
    let mut buf = FrameBuf::new(len, space)?;
    // Copied in chunks with a preemption point between them (no lock is held;
    // another thread unmapping the source meanwhile makes this BadAddress).
    for (i, chunk) in buf.bytes_mut().chunks_mut(SPAWN_COPY_CHUNK).enumerate() {
        if i != 0 {
            sched::preemption_point();
        }
        copy_from_user(chunk, image + (i * SPAWN_COPY_CHUNK) as u64)?;
    }
    process::spawn(buf.bytes(), &parent, arg)
}

/// Bytes `process_spawn` copies from the caller between preemption points.
const SPAWN_COPY_CHUNK: usize = 64 << 10;

/// Physically contiguous frames used as a byte buffer through the direct
/// map, charged to an address space's limits; freed (and the charge
/// returned) on drop.
struct FrameBuf<'a> {
    first: u64,
    pages: usize,
    len: usize,
    charged_to: &'a crate::vm::AddressSpace,
}

impl<'a> FrameBuf<'a> {
    fn new(len: u64, charge: &'a crate::vm::AddressSpace) -> Result<FrameBuf<'a>, Error> {
        let pages = (len.div_ceil(4096) as usize).max(1);
        charge.try_charge(pages as u64)?;
        let f = match crate::mem::alloc_contiguous(pages, 1) {
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

impl Drop for FrameBuf<'_> {
    fn drop(&mut self) {
        for i in 0..self.pages {
            if i % 64 == 63 {
                sched::preemption_point();
            }
            if let Some(f) = kcore::frame::PhysFrame::from_addr(self.first + i as u64 * 4096) {
                let _ = crate::mem::free_frame(f);
            }
        }
        self.charged_to.uncharge(self.pages as u64);
    }
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
