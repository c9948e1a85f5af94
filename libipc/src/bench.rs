//! Benchmark helpers: `rdtsc` and the `BENCH` line format of DESIGN.md:
//! `BENCH name=<name> unit=<unit> min=<n> median=<n> iters=<n> failed=<n>`.
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

/// What a figure's samples count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// rdtsc under plain TCG: host-clock cycles (noisy).
    Cycles,
    /// rdtsc under `-icount shift=0`: guest instructions (exact).
    Instructions,
}

impl Unit {
    /// `Instructions` if `icount`, else `Cycles`.
    pub const fn rdtsc(icount: bool) -> Unit {
        if icount {
            Unit::Instructions
        } else {
            Unit::Cycles
        }
    }

    /// The name printed in `unit=`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Unit::Cycles => "cycles",
            Unit::Instructions => "instructions",
        }
    }
}

/// Reads the time-stamp counter (in `-icount` mode: guest instructions).
#[inline(always)]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC is allowed in ring 3 (CR4.TSD clear) and only reads a counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Sorts `samples` and prints the BENCH line for them, with `failed`
/// samples that could not be taken. No samples at all prints `min=0
/// median=0 iters=0`, which `scripts/bench.sh` treats as a failure.
pub fn report(name: &str, unit: Unit, samples: &mut [u64], failed: usize) {
    samples.sort_unstable();
    let (min, median) = match &*samples {
        [] => (0, 0),
        s => (s[0], s[s.len() / 2]),
    };
    crate::println!(
        "BENCH name={name} unit={} min={min} median={median} iters={} failed={failed}",
        unit.as_str(),
        samples.len()
    );
}
