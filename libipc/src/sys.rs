//! Raw syscalls, one safe function each (the kernel validates every argument,
//! so no call can break this program's memory safety except where noted).

pub use crate::task::{ProcessHandle, ThreadHandle};
use abi::{decode_result, Error, Sysnum};
use core::arch::asm;

/// Issues a syscall with up to six arguments (see the register convention in
/// [`abi`]).
///
/// # Safety
/// The syscall must not write memory the program relies on being unchanged,
/// beyond what its own arguments describe.
#[inline(always)]
pub unsafe fn syscall6(n: Sysnum, a0: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> u64 {
    let ret: u64;
    // SAFETY: `syscall` clobbers only RCX (return RIP) and R11 (RFLAGS) beyond
    // RAX; the kernel preserves every other register. Memory effects are the
    // caller's contract.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") n as u64 => ret, // rax: number in, result out
            in("rdi") a0,
            in("rsi") a1,
            in("rdx") a2,
            in("r10") a3,                     // r10, not rcx: rcx is the return RIP
            in("r8") a4,
            in("r9") a5,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// A syscall with up to four arguments that also returns a second value in
/// RDX (`thread_spawn`, `process_spawn`, `process_create`, `space_clone`,
/// `thread_start`: the new id).
///
/// # Safety
/// As [`syscall6`].
#[inline(always)]
pub(crate) unsafe fn syscall4_rdx(n: Sysnum, a0: u64, a1: u64, a2: u64, a3: u64) -> (u64, u64) {
    let (ret, rdx): (u64, u64);
    // SAFETY: as in `syscall6`; RDX is an argument in and a result out.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") n as u64 => ret, // rax: number in, result out
            in("rdi") a0,
            in("rsi") a1,
            inlateout("rdx") a2 => rdx,       // rdx: argument in, id out
            in("r10") a3,                     // r10: argument 4 (rcx is the return RIP)
            lateout("rcx") _,                 // return RIP
            lateout("r11") _,                 // RFLAGS
            options(nostack),
        );
    }
    (ret, rdx)
}

/// A syscall that only reads its arguments and touches no user memory.
#[inline(always)]
fn pure(n: Sysnum, a0: u64, a1: u64, a2: u64) -> Result<u64, Error> {
    // SAFETY: the callers below use syscalls that write no user memory.
    decode_result(unsafe { syscall6(n, a0, a1, a2, 0, 0, 0) })
}

/// Writes bytes to the kernel's serial log.
pub fn debug_write(bytes: &[u8]) -> Result<u64, Error> {
    pure(
        Sysnum::DebugWrite,
        bytes.as_ptr() as u64,
        bytes.len() as u64,
        0,
    )
}

/// Ends the calling thread.
pub fn thread_exit(code: i32) -> ! {
    let _ = pure(Sysnum::ThreadExit, code as u64, 0, 0);
    unreachable_exit()
}

/// Ends the whole process.
pub fn process_exit(code: i32) -> ! {
    let _ = pure(Sysnum::ProcessExit, code as u64, 0, 0);
    unreachable_exit()
}

fn unreachable_exit() -> ! {
    // The kernel never returns from an exit; if it somehow did, stop here.
    loop {
        core::hint::spin_loop();
    }
}

/// Powers the machine off with a verdict (first process only).
pub fn shutdown(success: bool) -> Result<u64, Error> {
    pure(Sysnum::Shutdown, success as u64, 0, 0)
}

/// Puts a named mark with `value` into the kernel trace (`name`: 1 to
/// [`abi::trace::MAX_MARK_NAME`] bytes of printable ASCII). `Ok(1)` if it
/// was recorded, `Ok(0)` if the kernel's `mark` category is off.
pub fn trace_mark(name: &[u8], value: u64) -> Result<u64, Error> {
    pure(
        Sysnum::TraceMark,
        name.as_ptr() as u64,
        name.len() as u64,
        value,
    )
}

/// Prints the kernel's trace rings over serial (init only; once per boot):
/// the number of record lines printed. See [`Sysnum::TraceDump`].
pub fn trace_dump() -> Result<u64, Error> {
    pure(Sysnum::TraceDump, 0, 0, 0)
}

/// Gives the CPU to another ready thread.
pub fn yield_now() {
    let _ = pure(Sysnum::Yield, 0, 0, 0);
}

/// Sleeps at least `ns` nanoseconds.
pub fn sleep_ns(ns: u64) {
    let _ = pure(Sysnum::SleepNs, ns, 0, 0);
}

/// Nanoseconds since boot.
pub fn clock_ns() -> u64 {
    pure(Sysnum::ClockNs, 0, 0, 0).unwrap_or(0)
}

/// The CPU the caller runs on.
pub fn cpu_id() -> u64 {
    pure(Sysnum::CpuId, 0, 0, 0).unwrap_or(0)
}

/// The caller's thread id.
pub fn thread_id() -> u64 {
    pure(Sysnum::ThreadId, 0, 0, 0).unwrap_or(0)
}

/// Starts a thread at `entry(arg)` on the stack ending at `stack_top`;
/// returns a handle to it (which knows the thread's id).
pub fn thread_spawn(
    entry: extern "C" fn(u64) -> !,
    stack_top: u64,
    arg: u64,
) -> Result<ThreadHandle, Error> {
    // SAFETY: `entry` is a Rust function with the entry signature the
    // kernel calls; whatever the thread does is its own code's contract.
    unsafe { thread_spawn_at(entry as usize as u64, stack_top, arg) }
}

/// [`thread_spawn`] at a raw address (which need not be a function, or valid).
///
/// # Safety
/// Whatever runs at `entry` shares this address space: it must not corrupt
/// memory the program relies on.
pub unsafe fn thread_spawn_at(entry: u64, stack_top: u64, arg: u64) -> Result<ThreadHandle, Error> {
    // SAFETY: thread_spawn writes no memory of ours; the thread is the
    // caller's contract.
    let (rax, tid) = unsafe { syscall4_rdx(Sysnum::ThreadSpawn, entry, stack_top, arg, 0) };
    decode_result(rax).map(|h| ThreadHandle::new(h as u32, tid))
}

/// Maps `len` bytes of zeroed memory at `addr` with `prot` ([`abi::prot`]).
pub fn map_anon(addr: u64, len: u64, prot: u64) -> Result<u64, Error> {
    pure(Sysnum::MapAnon, addr, len, prot)
}

/// Unmaps `len` bytes at `addr`.
///
/// # Safety
/// Nothing the program still uses may live in the range.
pub unsafe fn unmap(addr: u64, len: u64) -> Result<u64, Error> {
    pure(Sysnum::Unmap, addr, len, 0)
}

/// Changes the protection of mapped pages.
///
/// # Safety
/// Removing write or read access must not break live references.
pub unsafe fn protect(addr: u64, len: u64, prot: u64) -> Result<u64, Error> {
    pure(Sysnum::Protect, addr, len, prot)
}

/// Pins the caller to `cpu` (`u64::MAX` unpins).
pub fn set_affinity(cpu: u64) -> Result<u64, Error> {
    pure(Sysnum::SetAffinity, cpu, 0, 0)
}

/// Sets the caller's priority (0 highest).
pub fn set_priority(prio: u64) -> Result<u64, Error> {
    pure(Sysnum::SetPriority, prio, 0, 0)
}

/// Sets the maximum controlled priority that processes spawned from now on
/// get (never above the caller's own: `PermissionDenied`); see
/// [`Sysnum::SetChildMaxPriority`].
pub fn set_child_max_priority(prio: u64) -> Result<u64, Error> {
    pure(Sysnum::SetChildMaxPriority, prio, 0, 0)
}

/// Waits for the thread `h` names to end; returns its status word
/// ([`abi::status`]) and closes `h` (needs `WAIT`; one join reaps).
pub fn thread_join(h: ThreadHandle) -> Result<u64, Error> {
    pure(Sysnum::ThreadJoin, h.raw() as u64, 0, 0)
}

/// Makes the thread `h` names end (needs `KILL`).
pub fn thread_kill(h: ThreadHandle) -> Result<(), Error> {
    pure(Sysnum::ThreadKill, h.raw() as u64, 0, 0).map(|_| ())
}

/// Starts a process from a boot image ([`abi::bootimg`]); its first thread
/// receives `arg`. Returns a handle to it (which knows the pid).
pub fn process_spawn(image: &[u8], arg: u64) -> Result<ProcessHandle, Error> {
    // SAFETY: process_spawn only reads the image.
    let (rax, pid) = unsafe {
        syscall4_rdx(
            Sysnum::ProcessSpawn,
            image.as_ptr() as u64,
            image.len() as u64,
            arg,
            0,
        )
    };
    decode_result(rax).map(|h| ProcessHandle::new(h as u32, pid))
}

/// Waits for the process `h` names to end; returns its status word
/// ([`abi::status`]) and closes `h` (needs `WAIT`; one wait reaps).
pub fn process_wait(h: ProcessHandle) -> Result<u64, Error> {
    pure(Sysnum::ProcessWait, h.raw() as u64, 0, 0)
}

/// Ends every thread of the process `h` names (needs `KILL`).
pub fn process_kill(h: ProcessHandle) -> Result<(), Error> {
    pure(Sysnum::ProcessKill, h.raw() as u64, 0, 0).map(|_| ())
}

/// Sets this thread's FS base.
pub fn set_fs_base(addr: u64) -> Result<u64, Error> {
    pure(Sysnum::SetFsBase, addr, 0, 0)
}

/// Sets this thread's GS base.
pub fn set_gs_base(addr: u64) -> Result<u64, Error> {
    pure(Sysnum::SetGsBase, addr, 0, 0)
}

/// The cheapest syscall: does nothing, returns 0.
#[inline(always)]
pub fn null() -> u64 {
    // SAFETY: `null` touches no memory.
    unsafe { syscall6(Sysnum::Null, 0, 0, 0, 0, 0, 0) }
}

/// Syscalls CPU `cpu` has entered since boot.
pub fn cpu_syscalls(cpu: u64) -> Result<u64, Error> {
    pure(Sysnum::CpuSyscalls, cpu, 0, 0)
}

/// CPUs online.
pub fn cpu_count() -> u64 {
    pure(Sysnum::CpuCount, 0, 0, 0).unwrap_or(1)
}

/// The machine's and the kernel's vital figures.
pub fn sysinfo() -> Result<abi::SysInfo, Error> {
    let mut info = abi::SysInfo::default();
    // SAFETY: the kernel writes exactly `size_of::<SysInfo>()` bytes into
    // `info`, a plain-old-data struct.
    decode_result(unsafe {
        syscall6(
            Sysnum::SysInfo,
            &mut info as *mut abi::SysInfo as u64,
            core::mem::size_of::<abi::SysInfo>() as u64,
            0,
            0,
            0,
            0,
        )
    })?;
    Ok(info)
}
