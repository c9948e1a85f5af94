//! break26l (session 26): attacks on cut26l's `fast_regs`, which reads
//! RSI's upper half as a `u32` of its own from the trap frame
//! (`syscall/ipc.rs`) instead of shifting the register: every one of the 32
//! upper bits of RSI must send the call out of the fast case, whatever the
//! label below it (bit 31 set or not).
//!
//! [`rsi_high_bits_each_leave_the_fast_case`]:
//! - Refusals: each upper bit alone (32..=63) under the labels 0, 1,
//!   `0x7fff_ffff`, `0x8000_0000` and `0xffff_ffff`, on `ipc_call` and
//!   `ipc_reply_recv` through a stale handle: the bits the documented decode
//!   refuses (a copy bit without a handle count, the notified bit, every
//!   reserved bit) give `InvalidArgument`, the rest the lookup's
//!   `BadHandle`. A read that misses an upper bit (the wrong half, a
//!   narrower load, a mask) takes the fast case's shortcut decode, which
//!   never refuses, and shows as `BadHandle` (break25l's table has bits 57,
//!   58 and 63 only, and none of them under a label with bit 31 set).
//! - The timeout bit (39), which the decode accepts: a poll call (`R15`
//!   timeout 0: `WouldBlock`; 1 and 3 us: `TimedOut`) on a live endpoint
//!   that nobody receives on must end at once. A read that misses bit 39 takes the untimed
//!   fast call, which blocks for ever: the call runs on a thread of its own
//!   that is killed (and the case failed) if it has not ended in 2 s (200 ms
//!   was seen too short once in the full suite at -smp 1: a note then).

use crate::note;
use crate::util::{self, ok, TestResult};
use abi::{decode_result, Error, Sysnum};
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::ipc::{self, IpcRegs};
use libipc::sys;

/// Labels under the upper bits: bit 31 clear and set, all ones.
const LABELS: [u64; 5] = [0, 1, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff];
/// MsgInfo's timeout bit (kcore::ipc::msg).
const TIMEOUT: u64 = 1 << 39;

/// What the documented decode (`MsgInfo::from_user`) says of RSI = a label
/// and upper bit `b` alone, with R15 = 0: refused, or passed to the lookup.
fn refused(b: u32) -> bool {
    // Copy bits with no handle count; the notified bit; reserved bits.
    (35..=38).contains(&b) || b >= 57
}

/// One raw IPC syscall `n` with RDI = `h`, RSI = `rsi`, R14 = 0, R15 = `r15`.
fn raw(n: Sysnum, h: u64, rsi: u64, r15: u64) -> Result<u64, Error> {
    let mut regs = IpcRegs {
        rdi: h,
        rsi,
        w: [0x26; 6],
        r14: 0,
        r15,
        // Handle numbers that name nothing: only the decode reads the count.
        handles: [0xffff_fff0_ffff_fff1, 0xffff_fff2_ffff_fff3],
    };
    // SAFETY: every call here sends no buffer and has capacity 0 (R14 is
    // never read or written); it ends refused or, for the timed calls,
    // timed out.
    decode_result(unsafe { ipc::ipc_syscall(n, &mut regs) })
}

/// Case: see the module docs.
pub fn rsi_high_bits_each_leave_the_fast_case() -> TestResult {
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let stale = ok(ipc::handle_dup(ep.0, abi::rights::SEND, 0), "dup")?;
    ok(ipc::handle_close(stale), "close")?;
    let r = refusals(stale).and_then(|()| timed_polls(ep.0));
    let _ = ipc::handle_close(ep.0);
    r
}

fn refusals(stale: u32) -> TestResult {
    let mut bad = 0;
    for (n, name) in [
        (Sysnum::IpcCall, "call"),
        (Sysnum::IpcReplyRecv, "reply_recv"),
    ] {
        for label in LABELS {
            for b in 32..64 {
                let rsi = label | 1 << b;
                let want = if refused(b) {
                    Error::InvalidArgument
                } else {
                    Error::BadHandle
                };
                let got = raw(n, stale as u64, rsi, 0);
                if got != Err(want) {
                    bad += 1;
                    if bad <= 8 {
                        note!("{name} rsi {rsi:#x}: {got:?}, expected {want:?}");
                    }
                }
            }
        }
    }
    util::check(
        bad == 0,
        "an upper RSI bit was not decoded (fast case taken?)",
    )
}

/// The timed call's registers ([`timed_caller`]): RDI, RSI, R15.
static CALL: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
/// The timed call's result: 1 `WouldBlock` or `TimedOut`, 2 anything else
/// (its code | 1 << 8; 0: not back).
static DONE: AtomicU64 = AtomicU64::new(0);

extern "C" fn timed_caller(_: u64) -> ! {
    let [h, rsi, r15] = CALL.each_ref().map(|a| a.load(Ordering::SeqCst));
    let r = raw(Sysnum::IpcCall, h, rsi, r15);
    let done = match r {
        Err(Error::WouldBlock | Error::TimedOut) => 1,
        Err(e) => 1 << 8 | e as u64,
        Ok(_) => 2,
    };
    DONE.store(done, Ordering::SeqCst);
    sys::thread_exit(0)
}

fn timed_polls(ep: u32) -> TestResult {
    for label in LABELS {
        // Poll (timeout 0), 1 us, 3 us; capacity 0.
        for r15 in [0, 1 << 32, 3 << 32] {
            let rsi = label | TIMEOUT;
            for (a, v) in CALL.iter().zip([ep as u64, rsi, r15]) {
                a.store(v, Ordering::SeqCst);
            }
            DONE.store(0, Ordering::SeqCst);
            let t = util::spawn(timed_caller, 0)?;
            let slow = util::deadline_ms(200);
            let deadline = util::deadline_ms(2000);
            while DONE.load(Ordering::SeqCst) == 0 && libipc::bench::rdtsc() < deadline {
                sys::yield_now();
            }
            let done = DONE.load(Ordering::SeqCst);
            if done != 0 && libipc::bench::rdtsc() > slow {
                note!("call rsi {rsi:#x} r15 {r15:#x}: back after more than 200 ms");
            }
            if done == 0 {
                // Blocked (the untimed fast call): end it.
                let _ = t.handle().kill();
            }
            util::expect_ok(t.join()?).or_else(|e| if done == 0 { Ok(()) } else { Err(e) })?;
            if done != 1 {
                note!(
                    "call rsi {rsi:#x} r15 {r15:#x}: {} ({done:#x})",
                    if done == 0 {
                        "blocked"
                    } else {
                        "not timed out"
                    }
                );
                return Err("a timed poll call did not time out (fast case taken?)");
            }
        }
    }
    Ok(())
}
