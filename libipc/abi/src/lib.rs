//! The Mica kernel/user ABI: the single source of truth for syscall numbers,
//! the register convention, error codes and the boot-image format.
//!
//! # Register convention (`syscall` instruction)
//! - `rax`: the syscall number ([`Sysnum`]).
//! - Arguments in `rdi`, `rsi`, `rdx`, `r10`, `r8`, `r9` (R10, not RCX, carries
//!   argument 4: the `syscall` instruction overwrites RCX with the return RIP and
//!   R11 with RFLAGS).
//! - Result in `rax`: a non-negative value is success; a negative value is
//!   `-(Error as i64)`. Use [`decode_result`] to turn it back into a `Result`.
//! - Every other register except RCX and R11 is preserved.
//!
//! This crate has no dependencies and is `no_std`, so the kernel, every user
//! program and the host-side build script can all use it.
#![cfg_attr(not(test), no_std)]

pub mod bootimg;
pub mod bootinfo;
pub mod layout;
pub mod status;

/// The syscall numbers. Unknown numbers fail with [`Error::BadSyscall`].
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sysnum {
    /// `debug_write(ptr, len)`: write bytes to the kernel's serial log. Returns
    /// the number of bytes written. Exists until the console server does.
    DebugWrite = 0,
    /// `thread_exit(code)`: end the calling thread. Does not return.
    ThreadExit = 1,
    /// `yield()`: give up the CPU to another ready thread of equal priority.
    Yield = 2,
    /// `sleep_ns(ns)`: block for at least `ns` nanoseconds.
    SleepNs = 3,
    /// `clock_ns()`: nanoseconds since boot (monotonic).
    ClockNs = 4,
    /// `thread_spawn(entry, stack_top, arg)`: start a thread in the caller's
    /// address space; returns its thread id.
    ThreadSpawn = 5,
    /// `process_exit(code)`: end every thread of the caller's process.
    ProcessExit = 6,
    /// `shutdown(code)`: power the machine off (tests and benchmarks report
    /// their verdict this way). Only the first process may call it.
    Shutdown = 7,
    /// `map_anon(addr, len, prot)`: map zeroed memory at a page-aligned user
    /// address. `prot` is a set of [`prot`] bits.
    MapAnon = 8,
    /// `unmap(addr, len)`: remove the mappings in a page-aligned range.
    Unmap = 9,
    /// `protect(addr, len, prot)`: change the protection of mapped pages.
    Protect = 10,
    /// `cpu_id()`: the id of the CPU the caller runs on (a hint: it may move
    /// right after).
    CpuId = 11,
    /// `set_affinity(cpu)`: pin the calling thread to one CPU
    /// (`u64::MAX` unpins).
    SetAffinity = 12,
    /// `thread_id()`: the caller's thread id.
    ThreadId = 13,
    /// `set_priority(prio)`: change the caller's scheduling priority
    /// (0 = highest, [`MAX_PRIORITY`] = lowest).
    SetPriority = 14,
    /// `thread_join(tid)`: wait for a thread of the caller's process to end;
    /// returns its [`status`] word.
    ThreadJoin = 15,
    /// `process_spawn(image, len, arg)`: start a new process from a boot image
    /// ([`bootimg`]) in the caller's memory; its first thread gets `arg` in RDI.
    /// Returns the child's pid. (The bootstrap path: the loader server builds
    /// processes from ELF files with the memory syscalls.)
    ProcessSpawn = 16,
    /// `process_wait(pid)`: wait for a child to end; returns its [`status`] word.
    ProcessWait = 17,
    /// `set_fs_base(addr)`: set the caller's FS base (a user-half address).
    SetFsBase = 18,
    /// `set_gs_base(addr)`: set the caller's GS base (a user-half address).
    SetGsBase = 19,
    /// `null()`: does nothing and returns 0 (measures the syscall path).
    Null = 20,
    /// `cpu_syscalls(cpu)`: how many syscalls CPU `cpu` has entered since boot
    /// (per-CPU accounting; tests check it). `NotFound` for an offline CPU.
    CpuSyscalls = 21,
    /// `cpu_count()`: CPUs online.
    CpuCount = 22,
    /// `sysinfo(buf, len)`: copies a [`SysInfo`] to `buf` (`len` must be at
    /// least its size); returns the bytes written.
    SysInfo = 23,
    /// `set_child_max_priority(prio)`: set the maximum controlled priority
    /// (MCP) that processes the caller spawns from now on get. A process's
    /// threads may not [`SetPriority`](Sysnum::SetPriority) above (numerically
    /// below) its MCP (`PermissionDenied`); a child's MCP is its creator's
    /// setting at spawn time, and `prio` may not be above the caller's own
    /// MCP (`PermissionDenied`), so priority is only ever handed down, never
    /// gained. init gives every program it starts an MCP below its own.
    SetChildMaxPriority = 24,
    /// `handle_dup(h, rights, badge)`: a new handle to `h`'s object with
    /// `rights` (a subset of `h`'s; needs DUPLICATE) and, if `badge` is not
    /// 0, that badge (only on an unbadged handle). Returns the new number.
    HandleDup = 25,
    /// `handle_close(h)`: close a handle.
    HandleClose = 26,
    /// `endpoint_create()`: a new endpoint; returns a handle with every right.
    EndpointCreate = 27,
    /// `notification_create()`: a new notification; returns a handle with
    /// every right.
    NotificationCreate = 28,
    /// `ipc_call(ep, info, w0..w5, ...)`: send a message and wait for the
    /// reply (register layout: `kcore::ipc::msg`).
    IpcCall = 29,
    /// `ipc_send(ep, info, w0..w5)`: deliver to a waiting receiver or fail
    /// with `WouldBlock`; never blocks.
    IpcSend = 30,
    /// `ipc_recv(ep, info, .., spec)`: wait for a message.
    IpcRecv = 31,
    /// `ipc_reply(-, info, w0..w5)`: answer the call the thread holds.
    IpcReply = 32,
    /// `ipc_reply_recv(ep, info, w0..w5, .., spec)`: reply, then receive.
    IpcReplyRecv = 33,
    /// `ntf_signal(ntf, bits)`: OR bits into a notification; never blocks.
    NtfSignal = 34,
    /// `ntf_wait(ntf, info, .., spec)`: wait for bits; returns them in w0.
    NtfWait = 35,
    /// `ntf_bind(ntf)`: bind a notification to the calling thread, so its
    /// endpoint receives also end on a signal (0 unbinds).
    NtfBind = 36,
    /// `handle_give(pid, h, rights)`: put a copy of `h` with `rights` (a
    /// subset; `h` needs DUPLICATE and TRANSFER) into the table of the
    /// caller's child `pid`; returns its number there. The bootstrap until
    /// a name service hands out endpoints.
    HandleGive = 37,
}

/// What `sysinfo` reports about the machine and the kernel's resources.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SysInfo {
    /// CPUs online.
    pub cpus_online: u64,
    /// Processors the firmware lists.
    pub cpus_found: u64,
    /// Physical memory the frame allocator manages, in bytes.
    pub total_bytes: u64,
    /// Of that, free right now.
    pub free_bytes: u64,
    /// User threads alive (including ones not yet joined).
    pub threads: u64,
    /// Process records alive (including ones not yet waited for).
    pub processes: u64,
    /// Nanoseconds since boot.
    pub uptime_ns: u64,
    /// Bytes of the kernel heap in use (leak tests compare it exactly).
    pub heap_used_bytes: u64,
}

// Eight u64s and no padding: the kernel copies it out byte for byte.
const _: () = assert!(core::mem::size_of::<SysInfo>() == 8 * 8);

/// One past the highest syscall number: the first number that is refused.
pub const SYSNUM_END: u64 = 38;

/// The lowest scheduling priority a thread can ask for.
pub const MAX_PRIORITY: u64 = 7;

impl TryFrom<u64> for Sysnum {
    type Error = Error;
    fn try_from(n: u64) -> Result<Self, Error> {
        Ok(match n {
            0 => Sysnum::DebugWrite,
            1 => Sysnum::ThreadExit,
            2 => Sysnum::Yield,
            3 => Sysnum::SleepNs,
            4 => Sysnum::ClockNs,
            5 => Sysnum::ThreadSpawn,
            6 => Sysnum::ProcessExit,
            7 => Sysnum::Shutdown,
            8 => Sysnum::MapAnon,
            9 => Sysnum::Unmap,
            10 => Sysnum::Protect,
            11 => Sysnum::CpuId,
            12 => Sysnum::SetAffinity,
            13 => Sysnum::ThreadId,
            14 => Sysnum::SetPriority,
            15 => Sysnum::ThreadJoin,
            16 => Sysnum::ProcessSpawn,
            17 => Sysnum::ProcessWait,
            18 => Sysnum::SetFsBase,
            19 => Sysnum::SetGsBase,
            20 => Sysnum::Null,
            21 => Sysnum::CpuSyscalls,
            22 => Sysnum::CpuCount,
            23 => Sysnum::SysInfo,
            24 => Sysnum::SetChildMaxPriority,
            25 => Sysnum::HandleDup,
            26 => Sysnum::HandleClose,
            27 => Sysnum::EndpointCreate,
            28 => Sysnum::NotificationCreate,
            29 => Sysnum::IpcCall,
            30 => Sysnum::IpcSend,
            31 => Sysnum::IpcRecv,
            32 => Sysnum::IpcReply,
            33 => Sysnum::IpcReplyRecv,
            34 => Sysnum::NtfSignal,
            35 => Sysnum::NtfWait,
            36 => Sysnum::NtfBind,
            37 => Sysnum::HandleGive,
            _ => return Err(Error::BadSyscall),
        })
    }
}

/// Per-process limits: each is a fraction of the global table it draws
/// from, so one process cannot exhaust it (exceeding one is `NoMemory`).
pub mod limits {
    /// Threads of one process: live ones plus dead ones not yet joined
    /// (the kernel-wide table holds 1024).
    pub const MAX_THREADS_PER_PROCESS: usize = 128;
    /// Child records of one process: running, or ended and not yet waited
    /// for (the kernel-wide table holds 256 processes).
    pub const MAX_CHILDREN: usize = 64;
    /// Bytes one process may have mapped: its owned pages (anonymous memory,
    /// its image) plus its page tables. The test, bench and fuzz programs
    /// map at most about 70 MiB.
    pub const MAX_MAPPED_BYTES_PER_PROCESS: u64 = 128 << 20;
    /// A *program* is a process init starts plus every process it (or they)
    /// start, orphans included: the per-process limits alone would let a
    /// tree of them (64 children with 64 children each, or 8 children with
    /// 128 threads each) fill the kernel-wide tables. Each limit here is
    /// half of the kernel-wide one. Processes of one program:
    pub const MAX_PROCESSES_PER_PROGRAM: usize = 128;
    /// Threads of one program (the kernel-wide table holds 1024).
    pub const MAX_THREADS_PER_PROGRAM: usize = 512;
    /// Bytes one program may have mapped, `process_spawn`'s transient image
    /// copies included (the kernel further caps it at three quarters of
    /// RAM, so one program never takes all memory).
    pub const MAX_MAPPED_BYTES_PER_PROGRAM: u64 = 192 << 20;
    /// The priority init runs at and keeps for itself: the programs it starts
    /// get [`INIT_CHILD_MCP`] as their maximum.
    pub const INIT_PRIORITY: u64 = 0;
    /// The maximum controlled priority of every program init starts.
    pub const INIT_CHILD_MCP: u64 = 1;
}

/// Protection bits for [`Sysnum::MapAnon`] and [`Sysnum::Protect`]. Pages are
/// always readable when mapped; writable and executable together is refused (W^X).
pub mod prot {
    /// The pages may be written.
    pub const WRITE: u64 = 1 << 1;
    /// The pages may be executed.
    pub const EXEC: u64 = 1 << 2;
    /// Every valid bit.
    pub const ALL: u64 = WRITE | EXEC;
}

/// Error codes. A syscall returns `-(code)` in RAX.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The syscall number is not one of [`Sysnum`].
    BadSyscall = 1,
    /// An argument is out of range or malformed.
    InvalidArgument = 2,
    /// A user pointer or range is not mapped, not in the user half, wraps, or
    /// lacks the needed access.
    BadAddress = 3,
    /// The kernel ran out of memory (or of a bounded resource) for the request.
    NoMemory = 4,
    /// The caller lacks the right or handle this needs.
    PermissionDenied = 5,
    /// The target already exists (e.g. a page is already mapped).
    AlreadyExists = 6,
    /// The target does not exist (e.g. no such thread or CPU).
    NotFound = 7,
    /// The operation would block and the caller asked not to.
    WouldBlock = 8,
    /// The peer of an IPC operation died.
    PeerDied = 9,
    /// A timeout expired.
    TimedOut = 10,
    /// The handle number names nothing in this process (never was, closed,
    /// or stale).
    BadHandle = 11,
    /// The handle names an object of another kind than the call needs.
    WrongType = 12,
}

impl Error {
    /// Every error, in code order.
    pub const ALL: [Error; 12] = [
        Error::BadSyscall,
        Error::InvalidArgument,
        Error::BadAddress,
        Error::NoMemory,
        Error::PermissionDenied,
        Error::AlreadyExists,
        Error::NotFound,
        Error::WouldBlock,
        Error::PeerDied,
        Error::TimedOut,
        Error::BadHandle,
        Error::WrongType,
    ];

    /// A short human-readable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Error::BadSyscall => "bad syscall number",
            Error::InvalidArgument => "invalid argument",
            Error::BadAddress => "bad address",
            Error::NoMemory => "out of memory",
            Error::PermissionDenied => "permission denied",
            Error::AlreadyExists => "already exists",
            Error::NotFound => "not found",
            Error::WouldBlock => "would block",
            Error::PeerDied => "peer died",
            Error::TimedOut => "timed out",
            Error::BadHandle => "bad handle",
            Error::WrongType => "wrong object type",
        }
    }

    /// The value a syscall puts in RAX for this error.
    pub const fn to_ret(self) -> u64 {
        (self as u64).wrapping_neg()
    }
}

impl TryFrom<u64> for Error {
    type Error = ();
    fn try_from(code: u64) -> Result<Self, ()> {
        Error::ALL
            .iter()
            .copied()
            .find(|e| *e as u64 == code)
            .ok_or(())
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Encodes a syscall result for RAX.
pub const fn encode_result(r: Result<u64, Error>) -> u64 {
    match r {
        Ok(v) => v,
        Err(e) => e.to_ret(),
    }
}

/// Decodes RAX after a syscall. Values in `-4095..0` are errors (as on Linux, so a
/// successful result can use the full positive range and most addresses); an
/// unknown negative code decodes as [`Error::InvalidArgument`].
pub fn decode_result(rax: u64) -> Result<u64, Error> {
    if rax > (-4096i64) as u64 {
        Err(Error::try_from(rax.wrapping_neg()).unwrap_or(Error::InvalidArgument))
    } else {
        Ok(rax)
    }
}

/// The `isa-debug-exit` device the test runner attaches to QEMU: writing `v` to
/// this port makes QEMU exit with status `(v << 1) | 1`.
pub mod debug_exit {
    /// The I/O port of the device.
    pub const PORT: u16 = 0xf4;
    /// Written on success; QEMU exits with 33, which the runner maps to 0.
    pub const SUCCESS: u32 = 0x10;
    /// Written on failure (panic, failed tests); QEMU exits with 35.
    pub const FAILURE: u32 = 0x11;
    /// QEMU's exit status for [`SUCCESS`].
    pub const QEMU_SUCCESS: i32 = ((SUCCESS << 1) | 1) as i32;
    /// QEMU's exit status for [`FAILURE`].
    pub const QEMU_FAILURE: i32 = ((FAILURE << 1) | 1) as i32;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sysnum_round_trips_and_unknown_numbers_fail() {
        for n in 0..SYSNUM_END {
            let s = Sysnum::try_from(n).unwrap();
            assert_eq!(s as u64, n);
        }
        assert_eq!(Sysnum::try_from(SYSNUM_END), Err(Error::BadSyscall));
        assert_eq!(Sysnum::try_from(u64::MAX), Err(Error::BadSyscall));
    }

    #[test]
    fn errors_round_trip_through_rax() {
        for e in Error::ALL {
            assert_eq!(decode_result(encode_result(Err(e))), Err(e));
        }
        assert_eq!(decode_result(encode_result(Ok(42))), Ok(42));
        // A large positive value (e.g. a kernel-chosen address) is not an error.
        assert_eq!(decode_result(0x7fff_0000_0000), Ok(0x7fff_0000_0000));
    }

    #[test]
    fn unknown_negative_codes_decode_as_invalid_argument() {
        assert_eq!(
            decode_result(999u64.wrapping_neg()),
            Err(Error::InvalidArgument)
        );
    }

    #[test]
    fn debug_exit_statuses_match_qemu_formula() {
        assert_eq!(debug_exit::QEMU_SUCCESS, 33);
        assert_eq!(debug_exit::QEMU_FAILURE, 35);
    }
}
