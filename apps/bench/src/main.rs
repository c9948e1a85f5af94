//! Benchmarks (run by init under `init=bench`).
//!
//! With `arg == 0` this pins itself to CPU 0, runs every entry of
//! [`BENCHES`] and prints one `BENCH name=.. unit=cycles min=.. median=..
//! iters=..` line each ([`libipc::bench::report`]); init then measures
//! `yield_switch` and prints `BENCH-DONE`. With `arg != 0` it is init's
//! yield peer: pinned to CPU 0, it yields exactly `arg` times and exits.
//!
//! Each sample is the TSC delta around one operation. Under `--icount` the
//! TSC counts guest instructions, so the figures are exact path lengths.
//! Samples live in one static buffer (the 64 KiB stack cannot hold 10,000
//! of them, and there is no heap).
#![no_std]
#![no_main]
#![forbid(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};
use libipc::bench::{rdtsc, report};
use libipc::{println, sys};

/// Samples per figure.
const ITERS: usize = 10_000;
/// Untimed iterations before each figure (caches, TLB, branch predictors).
const WARMUP: usize = 100;

/// One benchmark: fills `samples` (at most [`ITERS`]) and returns how many it
/// filled, or why it could not run.
type BenchFn = fn(samples: &mut [u64]) -> Result<usize, &'static str>;

/// Every figure, in output order. Later figures (`ipc_call_same_core`,
/// `ipc_call_cross_core`, `ipc_buffer_4k_same_core`, `spawn_exit_wait`,
/// `page_map_unmap`, ...) slot in here as the kernel grows the syscalls.
const BENCHES: &[(&str, BenchFn)] = &[("null_syscall", null_syscall)];

/// `null()`: the bare syscall entry and exit path.
fn null_syscall(samples: &mut [u64]) -> Result<usize, &'static str> {
    for _ in 0..WARMUP {
        sys::null();
    }
    for s in samples.iter_mut() {
        let t0 = rdtsc();
        let r = sys::null();
        *s = rdtsc() - t0;
        if r != 0 {
            return Err("null() did not return 0");
        }
    }
    Ok(samples.len())
}

/// The sample buffer, handed out once by [`take_samples`].
struct Samples(UnsafeCell<[u64; ITERS]>);
// SAFETY: the only access is the `&mut` that `take_samples` hands out at
// most once (guarded by `TAKEN`).
unsafe impl Sync for Samples {}
static SAMPLES: Samples = Samples(UnsafeCell::new([0; ITERS]));
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The sample buffer; `None` after the first call.
fn take_samples() -> Option<&'static mut [u64; ITERS]> {
    if TAKEN.swap(true, Ordering::AcqRel) {
        return None;
    }
    // SAFETY: `TAKEN` guarantees this is the only reference ever made.
    Some(unsafe { &mut *SAMPLES.0.get() })
}

/// init's yield peer: alternates with init on CPU 0, `n` yields.
fn yield_peer(n: u64) -> i32 {
    if sys::set_affinity(0).is_err() {
        println!("bench: set_affinity(0) failed");
        return 1;
    }
    for _ in 0..n {
        sys::yield_now();
    }
    0
}

#[no_mangle]
fn main(arg: u64) -> i32 {
    if arg != 0 {
        return yield_peer(arg);
    }
    if let Err(e) = sys::set_affinity(0) {
        println!("bench: set_affinity(0) failed: {e}");
        return 1;
    }
    let Some(buf) = take_samples() else {
        return 1;
    };
    let mut failed = false;
    for &(name, bench) in BENCHES {
        buf.fill(0);
        match bench(buf) {
            Ok(n) => report(name, &mut buf[..n.min(ITERS)]),
            Err(why) => {
                println!("bench: {name} failed: {why}");
                failed = true;
            }
        }
    }
    i32::from(failed)
}
