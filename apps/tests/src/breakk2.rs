//! Cases from breakk2 (session 20), which attacked the session's kernel
//! IPC and scheduler changes (ipcfr's frameless resume, xcore's idle poll
//! and cross-core call).
//!
//! - [`no_poll_without_another_cpu_to_wake_the_blocker`] -- a thread that
//!   blocks with nothing else to run polls its CPU's queue for its wake
//!   (`sched::block`, interrupts off, up to 20 us). Only another CPU can
//!   end that poll early: with one CPU online every poll ran to its bound,
//!   a spin with interrupts masked on every block that bought nothing.
//!   The kernel counts, per CPU, the polls that reached their bound with
//!   nothing queued (`cpu_syscalls` counter 5).

use crate::note;
use crate::util::{check, TestResult};
use abi::Sysnum;
use libipc::sys;

/// Polls on CPU `cpu` that reached their bound with nothing queued (0
/// when the hook fails).
fn poll_misses(cpu: u64) -> u64 {
    // SAFETY: cpu_syscalls writes no memory.
    abi::decode_result(unsafe { sys::syscall6(Sysnum::CpuSyscalls, cpu, 5, 0, 0, 0, 0) })
        .unwrap_or(0)
}

/// Misses on `cpu` over 20 sleeps of 0.2 ms: each blocks the caller with
/// nothing else to run there, and its wake is the timer's (no CPU ends the
/// poll: it reaches its bound, if it runs at all).
fn misses_over_sleeps(cpu: u64) -> u64 {
    let before = poll_misses(cpu);
    for _ in 0..20 {
        sys::sleep_ns(200_000);
    }
    poll_misses(cpu) - before
}

/// With one CPU, no block polls (the poll could only run out: interrupts
/// are off during it, and no other CPU exists to queue the wake). With
/// more, the same sleeps pinned to CPU 1 do poll and miss, which shows
/// the counter counts (so the one-CPU zero is not a dead counter's).
/// Seen failing at -smp 1 (20 of 20 sleeps polled to the bound) with
/// `block` polling whatever the CPU count.
pub fn no_poll_without_another_cpu_to_wake_the_blocker() -> TestResult {
    if sys::cpu_count() == 1 {
        let n = misses_over_sleeps(0);
        if n != 0 {
            note!("{n} of 20 blocks polled to the bound on the only CPU");
        }
        return check(n == 0, "a block polled with no other CPU to wake it");
    }
    if sys::set_affinity(1).is_err() {
        return Err("cannot pin to CPU 1");
    }
    let n = misses_over_sleeps(1);
    let _ = sys::set_affinity(u64::MAX);
    if n == 0 {
        note!("no poll missed on CPU 1 over 20 sleeps");
    }
    check(n > 0, "the poll-miss counter does not count")
}
