//! Benchmark helpers: `rdtsc` and printing a figure's `BENCH` line (the
//! format is [`abi::report::Bench`]'s).
//!
//! The unit is what rdtsc counts: guest `instructions` when QEMU runs with
//! `-icount shift=0` (the runner then adds [`ICOUNT_CMDLINE_FLAG`] to the
//! kernel command line, and init passes [`ICOUNT_ARG`] on to the benchmark
//! program), host-clock `cycles` otherwise. `failed` counts samples the
//! benchmark could not take (an operation that timed out or did not happen);
//! `scripts/bench.sh` fails on any figure with `failed` > 0 or `iters=0`.

/// The kernel command-line word that says rdtsc counts instructions.
pub const ICOUNT_CMDLINE_FLAG: &str = "bench.icount";

/// The bit init sets in the benchmark program's argument when the kernel
/// command line has [`ICOUNT_CMDLINE_FLAG`].
pub const ICOUNT_ARG: u64 = 1 << 63;

pub use abi::report::Unit;

/// Reads the time-stamp counter (in `-icount` mode: guest instructions).
#[inline(always)]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC is allowed in ring 3 (CR4.TSD clear) and only reads a counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Sorts `samples` and prints the BENCH line for them ([`abi::report::Bench`]),
/// with `failed` samples that could not be taken. No samples at all prints
/// `min=0 median=0 iters=0`, which `scripts/bench.sh` treats as a failure.
pub fn report(name: &str, unit: Unit, samples: &mut [u64], failed: usize) {
    let line = abi::report::Bench::from_samples(name, unit, samples, failed as u64);
    crate::println!("{line}");
}
