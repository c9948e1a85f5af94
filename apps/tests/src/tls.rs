//! FS/GS bases: per-thread, kept across syscalls and preemption, and only
//! user-half values accepted.

use crate::note;
use crate::util::{self, arg_of, deadline_ms, expect_err, from_arg, TestResult};
use abi::Error;
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::{bench::rdtsc, sys};

/// What each thread's FS and GS bases point at.
static FS_A: AtomicU64 = AtomicU64::new(0x1111);
static GS_A: AtomicU64 = AtomicU64::new(0x2222);
static FS_B: AtomicU64 = AtomicU64::new(0x3333);
static GS_B: AtomicU64 = AtomicU64::new(0x4444);

/// One thread's bases and what it saw.
struct TlsJob {
    fs: &'static AtomicU64,
    gs: &'static AtomicU64,
    spin_ms: u64,
    /// Yield every few milliseconds (the other thread relies on the timer).
    yields: bool,
    /// 0 = fine; else what went wrong first.
    fail: u64,
    seen: (u64, u64),
    max_gap: u64,
}

extern "C" fn tls_thread(arg: u64) -> ! {
    // SAFETY: `fs_gs_base_survive_preemption` passes a `TlsJob` with `arg_of`
    // and joins before touching or dropping it.
    let job: &mut TlsJob = unsafe { from_arg(arg) };
    if !util::pin0() {
        job.fail = 1;
        sys::thread_exit(0);
    }
    if sys::set_fs_base(job.fs.as_ptr() as u64).is_err()
        || sys::set_gs_base(job.gs.as_ptr() as u64).is_err()
    {
        job.fail = 2;
        sys::thread_exit(0);
    }
    let want = (
        job.fs.load(Ordering::Relaxed),
        job.gs.load(Ordering::Relaxed),
    );
    let end = deadline_ms(job.spin_ms);
    let mut prev = rdtsc();
    let mut next_yield = deadline_ms(5);
    while prev < end {
        let seen = util::read_fs_gs();
        if seen != want {
            job.fail = 3;
            job.seen = seen;
            break;
        }
        let now = rdtsc();
        if job.yields && now >= next_yield {
            sys::yield_now();
            next_yield = deadline_ms(5);
        }
        job.max_gap = job.max_gap.max(now - prev);
        prev = now;
    }
    sys::thread_exit(0)
}

/// Case 16: two threads on CPU 0 with different FS/GS bases read their own
/// values through `fs:[0]`/`gs:[0]` across preemptions (and, in one of
/// them, yields); kernel
/// addresses are refused as bases.
pub fn fs_gs_base_survive_preemption() -> TestResult {
    let mut jobs = [(&FS_A, &GS_A, false), (&FS_B, &GS_B, true)].map(|(fs, gs, yields)| TlsJob {
        fs,
        gs,
        spin_ms: 60,
        yields,
        fail: 0,
        seen: (0, 0),
        max_gap: 0,
    });
    let [a, b] = &mut jobs;
    let ta = util::spawn(tls_thread, arg_of(a))?;
    let tb = util::spawn(tls_thread, arg_of(b));
    util::expect_ok(ta.join()?)?;
    util::expect_ok(tb?.join()?)?;
    for job in &jobs {
        match job.fail {
            0 => {}
            1 => return Err("set_affinity(0) failed"),
            2 => return Err("set_fs_base/set_gs_base of a user address failed"),
            _ => {
                note!(
                    "fs:[0], gs:[0] = {:#x}, {:#x}; expected {:#x}, {:#x}",
                    job.seen.0,
                    job.seen.1,
                    job.fs.load(Ordering::Relaxed),
                    job.gs.load(Ordering::Relaxed)
                );
                return Err("a thread's FS/GS base changed");
            }
        }
    }
    if jobs[0].max_gap.max(jobs[1].max_gap) < util::preempt_gap() {
        return Err("the threads were never preempted");
    }
    use Error::{BadAddress, InvalidArgument};
    expect_err(
        sys::set_fs_base(0xffff_8000_0000_0000),
        &[BadAddress, InvalidArgument],
        "a kernel FS base was accepted",
    )?;
    expect_err(
        sys::set_gs_base(0xffff_ffff_8010_0000),
        &[BadAddress, InvalidArgument],
        "a kernel GS base was accepted",
    )?;
    expect_err(
        sys::set_fs_base(0x0000_8000_0000_0000),
        &[BadAddress, InvalidArgument],
        "a non-canonical FS base was accepted",
    )
}
