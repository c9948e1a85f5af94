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

#[macro_use]
pub mod list;

pub mod bootimg;
pub mod bootinfo;
pub mod layout;
pub mod report;
pub mod rng;
pub mod status;
pub mod text;
pub mod trace;

shared_enum! {
    /// The syscall numbers (each with its name). Unknown numbers fail with
    /// [`Error::BadSyscall`]. The codes are dense from 0, so the kernel's
    /// dispatcher is one bounds check and a jump table.
    pub enum Sysnum: u64, else Error::BadSyscall => Error {
        /// `debug_write(ptr, len)`: write bytes to the kernel's serial log. Returns
        /// the number of bytes written. Exists until the console server does.
        DebugWrite = 0 => "debug_write",
        /// `thread_exit(code)`: end the calling thread. Does not return.
        ThreadExit = 1 => "thread_exit",
        /// `yield()`: give up the CPU to another ready thread of equal priority.
        Yield = 2 => "yield",
        /// `sleep_ns(ns)`: block for at least `ns` nanoseconds.
        SleepNs = 3 => "sleep_ns",
        /// `clock_ns()`: nanoseconds since boot (monotonic).
        ClockNs = 4 => "clock_ns",
        /// `thread_spawn(entry, stack_top, arg)`: start a thread in the caller's
        /// address space; returns a thread handle (rights
        /// [`rights_sets::THREAD_CREATOR`]) and puts the thread's id (for display) in RDX.
        /// A full handle table is `NoMemory` and no thread is started.
        ThreadSpawn = 5 => "thread_spawn",
        /// `process_exit(code)`: end every thread of the caller's process.
        ProcessExit = 6 => "process_exit",
        /// `shutdown(code)`: power the machine off (tests and benchmarks report
        /// their verdict this way). Only the first process may call it.
        Shutdown = 7 => "shutdown",
        /// `map_anon(addr, len, prot)`: map zeroed memory at a page-aligned user
        /// address. `prot` is a set of [`prot`] bits.
        MapAnon = 8 => "map_anon",
        /// `unmap(addr, len)`: remove the mappings in a page-aligned range.
        Unmap = 9 => "unmap",
        /// `protect(addr, len, prot)`: change the protection of mapped pages.
        Protect = 10 => "protect",
        /// `cpu_id()`: the id of the CPU the caller runs on (a hint: it may move
        /// right after).
        CpuId = 11 => "cpu_id",
        /// `set_affinity(cpu)`: pin the calling thread to one CPU
        /// (`u64::MAX` unpins).
        SetAffinity = 12 => "set_affinity",
        /// `thread_id()`: the caller's thread id.
        ThreadId = 13 => "thread_id",
        /// `set_priority(prio)`: change the caller's scheduling priority
        /// (0 = highest, [`MAX_PRIORITY`] = lowest).
        SetPriority = 14 => "set_priority",
        /// `thread_join(h)`: wait for the thread handle `h` names (needs
        /// [`rights::WAIT`]) to end; returns its [`status`] word and closes `h`.
        /// One join reaps a thread: a later one through another handle is
        /// `NotFound`. Joining oneself is `InvalidArgument`.
        ThreadJoin = 15 => "thread_join",
        /// `process_spawn(image, len, arg)`: start a new process from a boot image
        /// ([`bootimg`]) in the caller's memory; its first thread gets `arg` in RDI.
        /// Returns a process handle (rights [`rights_sets::PROCESS_CREATOR`]) and puts the
        /// child's pid (for display) in RDX; a full handle table is `NoMemory` and
        /// no child is started. (The bootstrap path: the loader server builds
        /// processes from ELF files with the memory syscalls.)
        ProcessSpawn = 16 => "process_spawn",
        /// `process_wait(h)`: wait for the process handle `h` names (needs
        /// [`rights::WAIT`]) to end; returns its [`status`] word and closes `h`.
        /// One wait reaps a process: a later one through another handle is
        /// `NotFound`.
        ProcessWait = 17 => "process_wait",
        /// `set_fs_base(addr)`: set the caller's FS base (a user-half address).
        SetFsBase = 18 => "set_fs_base",
        /// `set_gs_base(addr)`: set the caller's GS base (a user-half address).
        SetGsBase = 19 => "set_gs_base",
        /// `null()`: does nothing and returns 0 (measures the syscall path).
        Null = 20 => "null",
        /// `cpu_syscalls(cpu)`: how many syscalls CPU `cpu` has entered since boot
        /// (per-CPU accounting; tests check it). `NotFound` for an offline CPU.
        CpuSyscalls = 21 => "cpu_syscalls",
        /// `cpu_count()`: CPUs online.
        CpuCount = 22 => "cpu_count",
        /// `sysinfo(buf, len)`: copies a [`SysInfo`] to `buf` (`len` must be at
        /// least its size); returns the bytes written.
        SysInfo = 23 => "sysinfo",
        /// `set_child_max_priority(prio)`: set the maximum controlled priority
        /// (MCP) that processes the caller spawns from now on get. A process's
        /// threads may not [`SetPriority`](Sysnum::SetPriority) above (numerically
        /// below) its MCP (`PermissionDenied`); a child's MCP is its creator's
        /// setting at spawn time, and `prio` may not be above the caller's own
        /// MCP (`PermissionDenied`), so priority is only ever handed down, never
        /// gained. init gives every program it starts an MCP below its own.
        SetChildMaxPriority = 24 => "set_child_max_priority",
        /// `handle_dup(h, rights, badge)`: a new handle to `h`'s object with
        /// `rights` (a subset of `h`'s; needs DUPLICATE) and, if `badge` is not
        /// 0, that badge (only on an unbadged handle). Returns the new number.
        HandleDup = 25 => "handle_dup",
        /// `handle_close(h)`: close a handle.
        HandleClose = 26 => "handle_close",
        /// `endpoint_create()`: a new endpoint; returns a handle with every right.
        EndpointCreate = 27 => "endpoint_create",
        /// `notification_create()`: a new notification; returns a handle with
        /// every right.
        NotificationCreate = 28 => "notification_create",
        /// `ipc_call(ep, info, w0..w5, ...)`: send a message and wait for the
        /// reply (register layout: `kcore::ipc::msg`).
        IpcCall = 29 => "ipc_call",
        /// `ipc_send(ep, info, w0..w5)`: deliver to a waiting receiver or fail
        /// with `WouldBlock`; never blocks.
        IpcSend = 30 => "ipc_send",
        /// `ipc_recv(ep, info, .., spec)`: wait for a message.
        IpcRecv = 31 => "ipc_recv",
        /// `ipc_reply(-, info, w0..w5)`: answer the call the thread holds.
        IpcReply = 32 => "ipc_reply",
        /// `ipc_reply_recv(ep, info, w0..w5, .., spec)`: reply, then receive.
        IpcReplyRecv = 33 => "ipc_reply_recv",
        /// `ntf_signal(ntf, bits)`: OR bits into a notification; never blocks.
        NtfSignal = 34 => "ntf_signal",
        /// `ntf_wait(ntf, info, .., spec)`: wait for bits; returns them in w0.
        NtfWait = 35 => "ntf_wait",
        /// `ntf_bind(ntf)`: bind a notification to the calling thread, so its
        /// endpoint receives also end on a signal (0 unbinds).
        NtfBind = 36 => "ntf_bind",
        /// `handle_give(proc, h, rights, badge)`: put a copy of `h` with
        /// `rights` (a subset; `h` needs DUPLICATE and TRANSFER) into the
        /// table of the process that handle `proc` names (needs
        /// [`rights::KILL`]: whoever may end a process may hand it handles);
        /// returns its number there. A non-zero `badge` badges the copy as
        /// `handle_dup` does (only from an unbadged `h`, else
        /// `InvalidArgument`). The bootstrap until a name service hands out
        /// endpoints, and how procmgr gives each process its badged handle.
        HandleGive = 37 => "handle_give",
        /// `thread_kill(h)`: make the thread handle `h` names (needs
        /// [`rights::KILL`]) end before it runs user code again, with status
        /// `exited(-1)`. A thread that already ended: nothing happens.
        ThreadKill = 38 => "thread_kill",
        /// `process_kill(h)`: end every thread of the process handle `h` names
        /// (needs [`rights::KILL`]); its status is `exited(-1)` unless it had
        /// already chosen one. A process that already ended: nothing happens.
        ProcessKill = 39 => "process_kill",
        // --- vm (issue 11) ---
        /// `process_create()`: a new, empty process (its own address space, an
        /// empty handle table, no thread), charged to the caller's quotas like
        /// `process_spawn`; it runs once [`ThreadStart`](Sysnum::ThreadStart)
        /// starts a thread in it. Returns a process handle (rights
        /// [`rights_sets::PROCESS_BUILDER`]) and puts its pid in RDX.
        /// `process_create(name, len)` with `len > 0` (init and processes
        /// [`Sysnum::ProcessAllowPrograms`] allowed only, `PermissionDenied`
        /// otherwise): the child is a program of its own named `name`
        /// (1 to 32 bytes of `a-z0-9._-`), as init's children are.
        ProcessCreate = 40 => "process_create",
        /// `space_map(proc, addr, len, prot)`: map fresh zeroed pages into the
        /// space of the process `proc` names (needs [`rights::MAP`];
        /// [`vm::SELF`] is the caller's own), charged to that process. Same
        /// rules as `map_anon`.
        SpaceMap = 41 => "space_map",
        /// `space_unmap(proc, addr, len)`: `unmap` in `proc`'s space (MAP).
        SpaceUnmap = 42 => "space_unmap",
        /// `space_protect(proc, addr, len, prot)`: `protect` in `proc`'s space
        /// (MAP).
        SpaceProtect = 43 => "space_protect",
        /// `mem_create(len)`: a memory object of `len` bytes (rounded up to
        /// pages, at most [`vm::MAX_MEMORY_BYTES`]) of zeroed frames, charged
        /// to the caller's program. Returns a memory handle (rights
        /// [`rights_sets::MEMORY_CREATOR`]).
        MemCreate = 44 => "mem_create",
        /// `mem_map(mem, proc, addr, offset, len, prot)`: map the pages
        /// `[offset, offset + len)` of the memory object `mem` names (needs
        /// MAP) at `addr` in `proc`'s space (MAP; [`vm::SELF`] is the
        /// caller's own), shared, not copied: writes through any mapping are
        /// seen through all -- or, with [`vm::MAP_PRIVATE`] in `prot`,
        /// private and copy-on-write. Charged to the target like
        /// `space_map`. The frames live while any mapping or handle does.
        MemMap = 45 => "mem_map",
        /// `thread_start(proc, entry, stack_top, arg)`: start a thread in the
        /// process `proc` names (MAP) at `entry` with `arg` in RDI and RSP
        /// `stack_top - 8`; both must be user addresses. Returns a thread
        /// handle ([`rights_sets::THREAD_CREATOR`]) and puts its tid in RDX.
        ThreadStart = 46 => "thread_start",
        /// `space_clone(proc)`: a new process (quotas as `process_create`)
        /// whose space is a copy-on-write copy of `proc`'s (MAP;
        /// [`vm::SELF`]: the caller's). It has no thread and an empty
        /// handle table. Returns a process handle
        /// ([`rights_sets::PROCESS_BUILDER`]) and puts its pid in RDX.
        SpaceClone = 47 => "space_clone",
        // --- hw (issue 11) ---
        /// `process_notify(proc, ntf, bits)`: when the process handle `proc`
        /// names (needs [`rights::WAIT`]) ends, signal `bits` (non-zero) on
        /// the notification `ntf` (needs [`rights::SIGNAL`]). One
        /// registration per process: a later call replaces it. A process
        /// that already ended is signalled at once.
        ProcessNotify = 48 => "process_notify",
        /// `ioport_grant(h, first, count)`: a new I/O-port handle (rights of
        /// `h`) for ports `first..first+count`, which must lie inside the
        /// range of `h` (needs [`rights::IO`]); `count` >= 1, no wrap.
        IoportGrant = 49 => "ioport_grant",
        /// `ioport_enable(h)`: allow the calling process's threads `in`/`out`
        /// on every port of `h` (needs [`rights::IO`]) through its I/O
        /// permission bitmap. Sticky for the process's life.
        IoportEnable = 50 => "ioport_enable",
        /// `irq_bind(root, line, ntf, bits)`: an IRQ handle for ISA line
        /// `line` (0..16; `root` an IRQ root handle with [`rights::IO`]) that
        /// signals `bits` (non-zero) on `ntf` (needs [`rights::SIGNAL`]) each
        /// time the line fires; the line is masked after each interrupt
        /// until `irq_ack`. A line already bound: [`Error::Busy`]. Closing
        /// the last handle masks and frees the line.
        IrqBind = 51 => "irq_bind",
        /// `irq_ack(irq)`: unmask the line of IRQ handle `irq` (needs
        /// [`rights::IO`]).
        IrqAck = 52 => "irq_ack",
        /// `thread_suspend(th)`: the thread handle `th` names (needs
        /// [`rights::KILL`]) stops before it next runs user code: at once
        /// when running, after the IPC it is blocked in completes, at the
        /// syscall's return when it is the caller. Not counted: one resume
        /// undoes any number of suspends. A thread that ended: nothing.
        ThreadSuspend = 53 => "thread_suspend",
        /// `thread_resume(th)`: undoes `thread_suspend` (needs
        /// [`rights::KILL`]); a thread not suspended is left as it is.
        ThreadResume = 54 => "thread_resume",
        /// `process_set_fault_ep(proc, ep)`: from now on a user fault in any
        /// thread of the process `proc` names (needs [`rights::KILL`]) is
        /// a [`fault`] message to the endpoint `ep` (needs
        /// [`rights::SEND`]; its badge names the process to the handler)
        /// instead of ending the thread. `ep` = 0 removes the handler.
        /// `process_set_fault_ep(proc, ep, badge)` with a non-zero `badge`
        /// makes the messages carry that badge, as a copy of `ep` made by
        /// `handle_dup` with it would (so `ep` needs DUPLICATE too and no
        /// badge of its own).
        ProcessSetFaultEp = 55 => "process_set_fault_ep",
        // --- trace (issue 12) ---
        /// `trace_mark(name_ptr, name_len, value)`: puts a named mark with
        /// `value` into the kernel trace (category `mark`) of the caller's
        /// CPU. The name is 1 to [`trace::MAX_MARK_NAME`] bytes of printable
        /// ASCII (`InvalidArgument` otherwise, `BadAddress` for a range
        /// outside the user half), checked whether tracing is on or not.
        /// Returns 1 if the mark was recorded, 0 if the category is off.
        TraceMark = 56 => "trace_mark",
        // --- loader (issue 11) ---
        /// `process_id(proc)`: the pid of the process the handle `proc`
        /// names (any rights: the pid is for display and bookkeeping, as
        /// `process_create` reports it). A process the loader built comes
        /// back with only a handle: its starter learns the pid this way.
        /// RDX: the CPU one of its threads runs on now, else the one its
        /// first thread last ran on; `u64::MAX` with no thread (`ps`).
        ProcessId = 57 => "process_id",
        /// `process_allow_programs(proc)`: lets the process `proc` names
        /// (needs [`rights::MAP`]) create programs: `process_create` with a
        /// name gives its child an account of its own and that name (the
        /// loader). Only init may (`PermissionDenied`).
        ProcessAllowPrograms = 58 => "process_allow_programs",
        // --- shell3 (issue 12 part 4) ---
        /// `trace_dump()`: prints the kernel's trace rings over serial in
        /// the framed encoding of [`trace`] (as at shutdown and on panic) and
        /// stops tracing; returns the number of record lines printed. Only
        /// init may (`PermissionDenied`: the rings show every process's
        /// timing; the shell's `trace` asks init). Once per boot, like every
        /// dump: `NotFound` when tracing is off, `AlreadyExists` once the
        /// rings were dumped. Its cost is bounded by the rings' size, fixed
        /// at boot (`trace.events` times the CPUs), not by the caller.
        TraceDump = 59 => "trace_dump",
    }
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
pub const SYSNUM_END: u64 = Sysnum::END;

// Dense codes from 0: `END` is the count, so every number below it is one.
const _: () = assert!(Sysnum::END == Sysnum::ALL.len() as u64);

/// Where init finds its hardware roots: the kernel installs them first in
/// init's fresh handle table, so they have these numbers (slot 0 and 1,
/// generation 1). init hands them on with `handle_give`.
pub mod boot_handles {
    /// The I/O-port root: all 65536 ports, rights [`HW`](super::rights_sets::HW).
    pub const IOPORTS: u32 = 1 << 10;
    /// The IRQ root: every ISA line, rights [`HW`](super::rights_sets::HW).
    pub const IRQS: u32 = (1 << 10) | 1;

    /// What init gives the `tests` program, in this order, before it makes a
    /// handle of its own: the name service (slot 0, as every child of init
    /// gets it: [`bootinfo::names::HANDLE`](crate::bootinfo::names::HANDLE)),
    /// then the two hardware roots.
    pub mod tests {
        /// The I/O-port root (slot 1).
        pub const IOPORTS: u32 = (1 << 10) | 1;
        /// The IRQ root (slot 2).
        pub const IRQS: u32 = (1 << 10) | 2;
        /// Its procmgr endpoint, badged with its PID (slot 3): procmgr
        /// gives it when init adopts the program, after the three above
        /// (procmgr, issue 11 item 3).
        pub const PROCMGR: u32 = (1 << 10) | 3;
        const _: () = assert!(crate::bootinfo::names::HANDLE == 1 << 10);
    }

    /// What init gives the `init=bench` program, in this order, before it
    /// makes a handle of its own.
    pub mod bench {
        /// The name service (slot 0), for `console_write_line`.
        pub const NAMES: u32 = crate::bootinfo::names::HANDLE;
        /// Its procmgr endpoint (slot 1), given when init adopts it.
        pub const PROCMGR: u32 = (1 << 10) | 1;
    }

    /// What init gives the `init=fuzz` program, in this order, before it
    /// makes a handle of its own.
    pub mod fuzz {
        /// The name service (slot 0): the servers phase finds the loader
        /// and the console through it.
        pub const NAMES: u32 = crate::bootinfo::names::HANDLE;
        /// Its procmgr endpoint (slot 1), given when init adopts it: the
        /// servers phase's procmgr target (the named one is init's alone).
        pub const PROCMGR: u32 = (1 << 10) | 1;
    }

    /// What init gives the shell (shell3), in this order, before it makes
    /// a handle of its own.
    pub mod shell {
        /// The name service (slot 0).
        pub const NAMES: u32 = crate::bootinfo::names::HANDLE;
        /// Its procmgr endpoint (slot 1), given when init adopts it.
        pub const PROCMGR: u32 = (1 << 10) | 1;
        /// init's program runner (slot 2, SEND only): `tests`, `bench` and
        /// `trace` (libipc::programs).
        pub const PROGRAMS: u32 = (1 << 10) | 2;
    }

    /// What init gives the console server, in this order, before it makes
    /// a handle of its own: the name service (slot 0), then exactly what
    /// drives COM1 (least privilege: no root).
    pub mod console {
        /// COM1's eight ports (0x3f8-0x3ff), right `IO`.
        pub const PORTS: u32 = (1 << 10) | 1;
        /// IRQ 4, bound by init to [`NOTIFY`], right `IO` (to acknowledge).
        pub const IRQ: u32 = (1 << 10) | 2;
        /// The notification IRQ 4 signals, right `WAIT` (to bind it).
        pub const NOTIFY: u32 = (1 << 10) | 3;
        /// COM1's base port.
        pub const COM1: u16 = 0x3f8;
        /// COM1's ISA line.
        pub const COM1_IRQ: u64 = 4;
        /// The bit IRQ 4 signals.
        pub const IRQ_BIT: u64 = 1;
    }
}

/// The fault message (hw, issue 11): what a faulting thread's implicit
/// call on its process's fault endpoint carries.
pub mod fault {
    /// Its label.
    pub const LABEL: u32 = 0xfa17;
    /// Word 0: the exception vector.
    pub const VECTOR: usize = 0;
    /// Word 1: the error code (0 for a vector without one).
    pub const ERROR_CODE: usize = 1;
    /// Word 2: the faulting RIP.
    pub const RIP: usize = 2;
    /// Word 3: CR2 for a page fault, else 0.
    pub const CR2: usize = 3;
    /// Word 4: the faulting thread's id.
    pub const TID: usize = 4;
    /// Word 5: its RSP.
    pub const RSP: usize = 5;
    /// A reply with this label resumes the thread (retrying the faulting
    /// instruction); any other ends its process with `faulted(vector)`.
    pub const RESUME: u32 = 0;
}

/// ISA IRQ lines `irq_bind` accepts: `0..IRQ_LINES` (hw, issue 11).
pub const IRQ_LINES: u64 = 16;

/// The lowest scheduling priority a thread can ask for.
pub const MAX_PRIORITY: u64 = 7;

/// Per-process limits: each is a fraction of the global table it draws
/// from, so one process cannot exhaust it (exceeding one is `NoMemory`).
pub mod limits {
    /// Threads of one process: live ones plus dead ones not yet joined
    /// whose handle is still open (the kernel-wide table holds 1024).
    pub const MAX_THREADS_PER_PROCESS: usize = 128;
    /// Child records of one process: running, or ended, not yet waited for
    /// and still named by a handle (the kernel-wide table holds 256
    /// processes).
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

shared_bits! {
    /// Protection bits for [`Sysnum::MapAnon`] and [`Sysnum::Protect`]. Pages are
    /// always readable when mapped; writable and executable together is refused (W^X).
    pub mod prot: u64 {
        /// The pages may be written.
        WRITE = 1 << 1 => "write",
        /// The pages may be executed.
        EXEC = 1 << 2 => "exec",
    }
}

shared_bits! {
    /// Handle rights: what a handle allows (checked on every use; a duplicate
    /// or transfer can only keep or drop them). The single source for the
    /// kernel's `kcore::handles::Rights` and libipc.
    pub mod rights: u32 {
        /// `call` / `send` on an endpoint.
        SEND = 1 << 0 => "send",
        /// `recv` / `reply_recv` on an endpoint (a receiver handle; the last
        /// one closed kills the endpoint for its callers).
        RECV = 1 << 1 => "recv",
        /// `signal` a notification.
        SIGNAL = 1 << 2 => "signal",
        /// `wait` on (or bind) a notification; `thread_join` a thread;
        /// `process_wait` for a process.
        WAIT = 1 << 3 => "wait",
        /// `thread_kill` a thread, `process_kill` a process; `handle_give`
        /// into a process.
        KILL = 1 << 4 => "kill",
        /// Copy the handle: `handle_dup`, or a copied transfer.
        DUPLICATE = 1 << 5 => "duplicate",
        /// Let the handle leave the process in a message (moved, or copied
        /// when `DUPLICATE` is also held).
        TRANSFER = 1 << 6 => "transfer",
        // --- vm (issue 11) ---
        /// Edit the address space of the process a handle names
        /// (`space_map`, `space_unmap`, `space_protect`, `mem_map` into it,
        /// `thread_start` in it, `space_clone` of it); map a memory object.
        MAP = 1 << 7 => "map",
        /// Use of a hardware object: grant or enable I/O ports, bind or
        /// acknowledge an IRQ (hw, issue 11).
        IO = 1 << 8 => "io",
    }
}

/// Rights combinations the kernel hands out (not bits of their own).
pub mod rights_sets {
    use super::rights::*;
    /// Rights of the boot I/O-port and IRQ roots and of what they grant.
    pub const HW: u32 = IO | DUPLICATE | TRANSFER;
    /// The handle `thread_spawn` gives its caller.
    pub const THREAD_CREATOR: u32 = WAIT | KILL | DUPLICATE | TRANSFER;
    /// The handle `process_spawn` gives its caller.
    pub const PROCESS_CREATOR: u32 = WAIT | KILL | DUPLICATE | TRANSFER;
    /// The handle `process_create` and `space_clone` give their caller.
    pub const PROCESS_BUILDER: u32 = PROCESS_CREATOR | MAP;
    /// The handle `mem_create` gives its caller.
    pub const MEMORY_CREATOR: u32 = MAP | DUPLICATE | TRANSFER;
}

/// Address-space and memory-object constants (issue 11).
pub mod vm {
    /// The process argument that names the caller's own process in
    /// `space_map`, `space_unmap`, `space_protect`, `mem_map`,
    /// `thread_start` and `space_clone`: a process always holds MAP on
    /// itself (it can `map_anon` its own space anyway), so the loader and
    /// procmgr use one code path for "self" and "child" without a handle to
    /// themselves (which would also make the process hold itself alive).
    /// Not a handle number: those fit in 32 bits.
    pub const SELF: u64 = u64::MAX;
    /// The largest memory object (16 MiB: its frames are freed at once
    /// when the last reference goes, so this bounds that work).
    pub const MAX_MEMORY_BYTES: u64 = 16 << 20;
    /// A flag of `mem_map`'s protection argument (with [`crate::prot`]'s
    /// bits): map the object's frames *private*, copy-on-write, as POSIX
    /// `MAP_PRIVATE` does: the pages read the object's bytes until the
    /// space writes one, which then gets a copy of its own (or takes the
    /// frame over when nothing else holds it any more). A private page is
    /// an ordinary page of the space: `space_clone` copies it on write like
    /// any other. Without it the mapping is shared (writes go to the
    /// object, and a clone keeps sharing it). The loader maps programs this
    /// way, so a forked program's data and stack are its own.
    pub const MAP_PRIVATE: u64 = 1 << 32;
    const _: () = assert!(MAP_PRIVATE & crate::prot::ALL == 0);
}

shared_enum! {
    /// Error codes. A syscall returns `-(code)` in RAX.
    pub enum Error: u64, else () => () {
        /// The syscall number is not one of [`Sysnum`].
        BadSyscall = 1 => "bad syscall number",
        /// An argument is out of range or malformed.
        InvalidArgument = 2 => "invalid argument",
        /// A user pointer or range is not mapped, not in the user half, wraps, or
        /// lacks the needed access.
        BadAddress = 3 => "bad address",
        /// The kernel ran out of memory (or of a bounded resource) for the request.
        NoMemory = 4 => "out of memory",
        /// The caller lacks the right or handle this needs.
        PermissionDenied = 5 => "permission denied",
        /// The target already exists (e.g. a page is already mapped).
        AlreadyExists = 6 => "already exists",
        /// The target does not exist (e.g. no such thread or CPU).
        NotFound = 7 => "not found",
        /// The operation would block and the caller asked not to.
        WouldBlock = 8 => "would block",
        /// The peer of an IPC operation died.
        PeerDied = 9 => "peer died",
        /// A timeout expired.
        TimedOut = 10 => "timed out",
        /// The handle number names nothing in this process (never was, closed,
        /// or stale).
        BadHandle = 11 => "bad handle",
        /// The handle names an object of another kind than the call needs.
        WrongType = 12 => "wrong object type",
        // --- hw (issue 11) ---
        /// The resource is taken (an IRQ line already bound).
        Busy = 13 => "resource busy",
        /// The machine lacks what the call needs (no I/O APIC serves the
        /// line).
        NoDevice = 14 => "no such device",
        // --- notdeliv (issue 11) ---
        /// The IPC peer is gone and the kernel can prove this call or send
        /// never reached it: the endpoint had no receiver handle left, or the
        /// call was still queued (no receiver had taken it) when the last
        /// receiver handle closed. Always safe to send again to a successor.
        /// (A call a receiver took and never answered is `PeerDied`.)
        NotDelivered = 15 => "not delivered: peer gone",
    }
}

impl Error {
    /// The value a syscall puts in RAX for this error.
    pub const fn to_ret(self) -> u64 {
        (self as u64).wrapping_neg()
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
    fn the_declared_lists_are_complete_and_their_names_distinct() {
        // Dense syscall numbers: ALL is exactly 0..END, in order.
        for (i, s) in Sysnum::ALL.iter().enumerate() {
            assert_eq!(s.code(), i as u64);
        }
        // Error codes from 1, in order.
        for (i, e) in Error::ALL.iter().enumerate() {
            assert_eq!(e.code(), i as u64 + 1);
        }
        assert_eq!(Error::END, Error::ALL.len() as u64 + 1);
        let names: std::collections::HashSet<_> = Sysnum::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names.len(), Sysnum::ALL.len());
        assert_eq!(
            Sysnum::SetChildMaxPriority.to_string(),
            "set_child_max_priority"
        );
        let descs: std::collections::HashSet<_> =
            Error::ALL.iter().map(|e| e.to_string()).collect();
        assert_eq!(descs.len(), Error::ALL.len());
        assert_eq!(Error::NoMemory.to_string(), "out of memory");
        assert_eq!(prot::ALL, prot::WRITE | prot::EXEC);
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
