//! Pieces the ring-3 test programs share (`tests` and `fuzz`): the TSC's
//! rate (for spins "long enough to be preempted" and slow-call limits) and
//! servers a case or a fuzzer step starts in a thread of its own. No
//! server or other program depends on this crate.
#![no_std]
#![forbid(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

use abi::{Error, Sysnum};
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::bench::rdtsc;
use libipc::ipc::{self, IpcRegs, Message};
use libipc::sys;

/// TSC ticks per millisecond, measured by [`calibrate_tsc`] (1 GHz until
/// then). Relaxed is enough: one figure, stored by the program's first
/// thread before it starts the threads that read it (the spawn orders
/// them), and a stale read would only size a spin or a limit.
static TSC_PER_MS: AtomicU64 = AtomicU64::new(1_000_000);

/// Measures TSC ticks per millisecond over a 20 ms sleep. A failed
/// measurement (under 1 ms of clock time, or no ticks) keeps the figure
/// there was and returns what it saw: `Err((ns, ticks))`.
pub fn calibrate_tsc() -> Result<(), (u64, u64)> {
    let (t0, c0) = (sys::clock_ns(), rdtsc());
    sys::sleep_ns(20_000_000);
    let (t1, c1) = (sys::clock_ns(), rdtsc());
    let ns = t1.saturating_sub(t0);
    let ticks = c1.saturating_sub(c0);
    if ns < 1_000_000 || ticks == 0 {
        return Err((ns, ticks));
    }
    let per_ms = (ticks as u128 * 1_000_000 / ns as u128) as u64;
    TSC_PER_MS.store(per_ms.max(1000), Ordering::Relaxed);
    Ok(())
}

/// TSC ticks per millisecond ([`calibrate_tsc`]).
pub fn tsc_per_ms() -> u64 {
    TSC_PER_MS.load(Ordering::Relaxed)
}

/// Serves `ep` as a *tag echo*: answers every call with label `tag` and
/// the caller's six words, register-only (no buffer, no handles, no
/// timeout: the IPC fast path when the caller waits on the same CPU),
/// until a call labelled `stop`, which gets an empty reply. Returns after
/// that reply, or with the first receive's error.
///
/// The `ipcl` ring-3 case and the fuzzer's ipc reuse race call through a
/// number that another thread keeps closing and refilling; a reply's label
/// says which echo (which endpoint) a call reached.
pub fn tag_echo(ep: u32, tag: u32, stop: u32) -> Result<(), Error> {
    let mut r = IpcRegs {
        rdi: ep as u64,
        ..IpcRegs::default()
    };
    let mut n = Sysnum::IpcRecv;
    loop {
        // SAFETY: no buffer is named (capacity 0).
        abi::decode_result(unsafe { ipc::ipc_syscall(n, &mut r) })?;
        if r.rsi as u32 == stop {
            let _ = ipc::reply(&Message::default());
            return Ok(());
        }
        r = IpcRegs {
            rdi: ep as u64,
            rsi: ipc::info(tag, 0, 0, 0, false),
            w: r.w,
            ..IpcRegs::default()
        };
        n = Sysnum::IpcReplyRecv;
    }
}
