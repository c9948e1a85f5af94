//! The system family: the debug log, the clock, CPU figures, `sysinfo` and
//! `shutdown`.

use super::caller_pid;
use crate::arch::percpu::{cpu_id as this_cpu, of as percpu_of};
use crate::arch::trap::TrapFrame;
use crate::ipc::fastpath::{hits, Counter};
use crate::logger::user_write;
use crate::mem::heap::stats as heap_stats;
use crate::mem::user::{UserSlice, UserSliceMut};
use crate::mem::{free_frames, total_bytes};
use crate::object::process::live_processes;
use crate::object::process::INIT_PID;
use crate::object::thread::live_threads;
use crate::sched::preemption_point;
use crate::smp::{found, online};
use crate::time::now_ns;
use abi::{Error, SysInfo};
use core::sync::atomic::Ordering;

/// The largest single `debug_write`.
const MAX_DEBUG_WRITE: u64 = 4096;

/// `debug_write(ptr, len)`: the caller's bytes, at most [`MAX_DEBUG_WRITE`]
/// of them (the rest is not written; the result says how many were).
pub struct DebugWrite {
    text: UserSlice,
}

impl DebugWrite {
    /// `BadAddress` for a range outside the user half (checked in full,
    /// before the cut to [`MAX_DEBUG_WRITE`]).
    pub fn decode(f: &TrapFrame) -> Result<DebugWrite, Error> {
        let text = UserSlice::new(f.rdi, f.rsi)?.prefix(MAX_DEBUG_WRITE);
        Ok(DebugWrite { text })
    }
}

/// Prints the bytes to the kernel log, every line prefixed with the
/// caller's pid (`logger::user_write`); returns how many.
///
/// All or nothing: the bytes are copied into a kernel buffer first, outside
/// the serial lock, so a range that faults part-way fails with `BadAddress`
/// and prints nothing, and a slow copy never holds up other CPUs' output.
/// The 4 KiB buffer lives on this call's frame (never inlined into the
/// dispatcher, so other syscalls do not pay for it).
#[inline(never)]
pub fn debug_write(req: DebugWrite) -> Result<u64, Error> {
    let mut buf = [0u8; MAX_DEBUG_WRITE as usize];
    let n = req.text.read(&mut buf)?;
    print_user(caller_pid(), &buf[..n]);
    Ok(n as u64)
}

/// Prints a process's bytes (already copied into the kernel) on the log,
/// line by line behind its pid. Between lines no lock is held, and pending
/// interrupts are let in there: a real UART sends a 256-byte line in about
/// 22 ms, and a 4 KiB write must not keep interrupts off for all of it.
pub fn print_user(pid: u64, bytes: &[u8]) {
    user_write(pid, bytes, preemption_point);
}

/// Nanoseconds since boot.
pub fn clock_ns() -> Result<u64, Error> {
    Ok(now_ns())
}

/// The CPU the caller runs on.
pub fn cpu_id() -> Result<u64, Error> {
    Ok(this_cpu().get() as u64)
}

/// Syscalls CPU `cpu` has entered since boot (`NotFound` for a CPU that is
/// not online). Test hook: with `counter` (RSI) 1 or 2, the `call`s or the
/// `reply_recv`s that CPU completed on the IPC fast path instead; 3: the
/// `call`s it completed on the cross-core path (`ipc::xcall`); 4: its timer
/// ticks that found it idle with a thread queued (a wake that neither its
/// IPI nor the idle poll delivered); 5: the polls of a blocking thread
/// that reached their bound with nothing queued (`sched::block`); 6: the
/// syscalls it refused to return from (a non-canonical return RIP); any
/// other non-zero `counter` is `InvalidArgument`.
pub fn cpu_syscalls(cpu: u64, counter: u64) -> Result<u64, Error> {
    let pc = percpu_of(cpu).ok_or(Error::NotFound)?;
    match counter {
        0 => Ok(pc.syscalls.load(Ordering::Relaxed)),
        1 => Ok(hits(pc, Counter::Calls)),
        2 => Ok(hits(pc, Counter::Replies)),
        3 => Ok(pc.xcalls.load(Ordering::Relaxed)),
        4 => Ok(pc.late_wakes.load(Ordering::Relaxed)),
        5 => Ok(pc.poll_misses.load(Ordering::Relaxed)),
        6 => Ok(pc.rip_refusals.load(Ordering::Relaxed)),
        _ => Err(Error::InvalidArgument),
    }
}

/// `sysinfo(buf, len)`: where the [`SysInfo`] goes.
pub struct SysInfoBuf {
    out: UserSliceMut,
}

impl SysInfoBuf {
    /// `InvalidArgument` for a `len` smaller than a [`SysInfo`], then
    /// `BadAddress` for a buffer outside the user half (only the bytes
    /// written are checked: a longer `len` is fine).
    pub fn decode(f: &TrapFrame) -> Result<SysInfoBuf, Error> {
        let size = core::mem::size_of::<SysInfo>() as u64;
        if f.rsi < size {
            return Err(Error::InvalidArgument);
        }
        Ok(SysInfoBuf {
            out: UserSliceMut::new(f.rdi, size)?,
        })
    }
}

/// Copies the machine's and the kernel's figures out; returns the bytes
/// written.
pub fn sysinfo(req: SysInfoBuf) -> Result<u64, Error> {
    // Freed kernel stacks, cached or awaiting their batched flush, count as
    // used until recycled: recycle them first, so the figure is exact (leak
    // checks).
    crate::mem::kstack::drain_cache();
    crate::mem::kstack::purge();
    let info = SysInfo {
        cpus_online: online() as u64,
        cpus_found: found() as u64,
        total_bytes: total_bytes(),
        free_bytes: free_frames() as u64 * 4096,
        threads: live_threads() as u64,
        processes: live_processes() as u64,
        uptime_ns: now_ns(),
        heap_used_bytes: heap_stats().0 as u64,
    };
    let size = core::mem::size_of::<SysInfo>();
    // SAFETY: SysInfo is repr(C) plain data of `size` bytes with no padding
    // (eight u64 fields), so viewing it as bytes reads only initialised memory.
    let bytes = unsafe { core::slice::from_raw_parts(&info as *const SysInfo as *const u8, size) };
    req.out.write(bytes).map(|n| n as u64)
}

/// `shutdown(success)`: only init may power the machine off.
pub struct Shutdown {
    success: bool,
}

impl Shutdown {
    /// `PermissionDenied` for any caller but init.
    pub fn decode(f: &TrapFrame) -> Result<Shutdown, Error> {
        if caller_pid() != INIT_PID.get() {
            return Err(Error::PermissionDenied);
        }
        Ok(Shutdown {
            success: f.rdi != 0,
        })
    }
}

/// Powers the machine off with the verdict.
pub fn shutdown(req: Shutdown) -> Result<u64, Error> {
    crate::panic::power_off(
        format_args!(
            "mica: shutdown requested by init ({})",
            if req.success { "success" } else { "failure" }
        ),
        req.success,
    )
}
