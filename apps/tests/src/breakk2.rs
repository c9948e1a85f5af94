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
//! - [`sleeps_do_not_poll`] -- nor may a sleep poll: its wake is a timer
//!   interrupt (this CPU's, masked during the poll), so every sleep's poll
//!   ran to its bound, 20 us of spinning with interrupts masked per sleep
//!   (a program sleeping in a loop on every CPU masked them a good part of
//!   the time). Calls whose reply comes 0.5 ms later from another CPU do
//!   poll and miss, which shows the counter counts.

use crate::util::{self, check, TestResult};
use crate::{note, xcore};
use abi::Sysnum;
use core::sync::atomic::Ordering;
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
/// are off during it, and no other CPU exists to queue the wake). Seen
/// failing at -smp 1 (20 of 20 sleeps polled to the bound) with `block`
/// polling whatever the CPU count. Passes with a note on more CPUs.
pub fn no_poll_without_another_cpu_to_wake_the_blocker() -> TestResult {
    if sys::cpu_count() > 1 {
        note!("more than one CPU: the poll may pay off");
        return Ok(());
    }
    let n = misses_over_sleeps(0);
    if n != 0 {
        note!("{n} of 20 blocks polled to the bound on the only CPU");
    }
    check(n == 0, "a block polled with no other CPU to wake it")
}

/// 20 sleeps on the last CPU: (almost) none polls; a few misses are other
/// threads blocking there meanwhile. Then, with two CPUs or more, 10 calls
/// from CPU 0 to an echo on CPU 1 that answers 0.5 ms later: the client's
/// blocks poll and miss, so the counter counts. Seen failing at -smp 2
/// with `sleep_ns` blocking through the polling `block` (20 of 20 sleeps
/// missed).
pub fn sleeps_do_not_poll() -> TestResult {
    let cpu = sys::cpu_count() - 1;
    if cpu > 0 && sys::set_affinity(cpu).is_err() {
        return Err("cannot pin to the last CPU");
    }
    let n = misses_over_sleeps(cpu);
    let _ = sys::set_affinity(u64::MAX);
    if n != 0 {
        note!("{n} of 20 sleeps polled to the bound");
    }
    check(n <= 5, "sleeps polled for a wake only a timer brings")?;
    if cpu == 0 {
        return Ok(());
    }
    // 0.1 ms steps, 5 of them.
    xcore::DELAY_STEP.store(util::tsc_per_ms() / 10, Ordering::SeqCst);
    xcore::with_echo(|ep| {
        xcore::call(ep, 0, 0)?;
        let before = poll_misses(0);
        for i in 0..10 {
            xcore::call(ep, i, 5)?;
        }
        let n = poll_misses(0) - before;
        check(n > 0, "the poll-miss counter does not count")
    })
}
