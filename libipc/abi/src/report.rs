//! The result lines the scripts parse, formatted in one place.
//!
//! Two lines are protocols, not prose: `scripts/smoke.sh`, `scripts/test.sh`
//! and `scripts/bench.sh` match them with regular expressions, so every
//! program that prints one (the kernel's ktest and benchmarks, the test
//! program, the benchmark program, init) formats it through these types
//! instead of spelling it out in its own `println!`.
//!
//! - [`Verdict`]: `<N> passed, <M> failed` (DESIGN.md section 10), the last
//!   line of a suite.
//! - [`Bench`]: `BENCH name=<name> unit=<unit> min=<n> median=<n> iters=<n>
//!   failed=<n>`, one per figure, then [`BENCH_DONE`].
//! - [`FuzzSummary`]: the fuzzer's last line, `fuzz: seed=<s> syscalls=<n>
//!   faults=<n> ok` or `... FAILED: <why>` (`scripts/fuzz.sh`, the
//!   `fuzz-smp4` smoke case).

use core::fmt;

/// The line init prints after the last figure.
pub const BENCH_DONE: &str = "BENCH-DONE";

/// A suite's verdict line: `<passed> passed, <failed> failed`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Cases that passed.
    pub passed: u32,
    /// Cases that failed.
    pub failed: u32,
}

impl Verdict {
    /// Counts one case.
    pub fn record(&mut self, ok: bool) {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
    }

    /// Whether no case failed.
    pub const fn success(&self) -> bool {
        self.failed == 0
    }

    /// Reads a verdict line back (exactly what `Display` prints); `None` for
    /// any other line.
    pub fn parse(line: &str) -> Option<Verdict> {
        let (passed, rest) = line.split_once(" passed, ")?;
        let failed = rest.strip_suffix(" failed")?;
        Some(Verdict {
            passed: number(passed)?.try_into().ok()?,
            failed: number(failed)?.try_into().ok()?,
        })
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} passed, {} failed", self.passed, self.failed)
    }
}

crate::shared_enum! {
    /// What a figure's samples count (the `unit=` field).
    pub enum Unit {
        /// rdtsc under plain TCG: host-clock cycles (noisy).
        Cycles => "cycles",
        /// rdtsc under `-icount shift=0`: guest instructions (exact).
        Instructions => "instructions",
        /// Microseconds of the kernel clock (`irq_latency_worst`).
        Us => "us",
    }
}

impl Unit {
    /// What rdtsc counts: `Instructions` if `icount`, else `Cycles`.
    pub const fn rdtsc(icount: bool) -> Unit {
        if icount {
            Unit::Instructions
        } else {
            Unit::Cycles
        }
    }
}

/// One figure's `BENCH` line. `failed` counts samples that could not be
/// taken; `scripts/bench.sh` fails on any figure with `failed` > 0 or
/// `iters=0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bench<'a> {
    /// The figure's name (DESIGN.md section 10 lists them).
    pub name: &'a str,
    /// What the numbers count.
    pub unit: Unit,
    /// The smallest sample.
    pub min: u64,
    /// The median sample (the upper one of an even count).
    pub median: u64,
    /// Samples taken.
    pub iters: u64,
    /// Samples that could not be taken.
    pub failed: u64,
}

impl<'a> Bench<'a> {
    /// Sorts `samples` and summarises them. No samples at all gives `min=0
    /// median=0 iters=0`, which `scripts/bench.sh` treats as a failure.
    pub fn from_samples(name: &'a str, unit: Unit, samples: &mut [u64], failed: u64) -> Self {
        samples.sort_unstable();
        let (min, median) = match &*samples {
            [] => (0, 0),
            s => (s[0], s[s.len() / 2]),
        };
        Bench {
            name,
            unit,
            min,
            median,
            iters: samples.len() as u64,
            failed,
        }
    }

    /// Reads a `BENCH` line back (exactly what `Display` prints: the fields
    /// in order); `None` for any other line.
    pub fn parse(line: &'a str) -> Option<Bench<'a>> {
        let mut f = line.strip_prefix("BENCH ")?.split(' ');
        let mut field = |key: &str| f.next()?.strip_prefix(key)?.strip_prefix('=');
        let name = field("name")?;
        let unit = field("unit")?;
        let unit = *Unit::ALL.iter().find(|u| u.as_str() == unit)?;
        let (min, median) = (number(field("min")?)?, number(field("median")?)?);
        let (iters, failed) = (number(field("iters")?)?, number(field("failed")?)?);
        if f.next().is_some() || name.is_empty() {
            return None;
        }
        Some(Bench {
            name,
            unit,
            min,
            median,
            iters,
            failed,
        })
    }
}

impl fmt::Display for Bench<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "BENCH name={} unit={} min={} median={} iters={} failed={}",
            self.name, self.unit, self.min, self.median, self.iters, self.failed
        )
    }
}

/// The fuzzer's last line: its seed, how many syscalls it made and how many
/// of its threads faulted (on purpose), then `ok` or `FAILED: <why>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FuzzSummary<W> {
    /// The run's seed (the same seed makes the same calls).
    pub seed: u64,
    /// Syscalls made.
    pub syscalls: u64,
    /// Threads that ended by a fault the fuzzer provoked.
    pub faults: u64,
    /// Why the run failed, or `None`.
    pub failure: Option<W>,
}

impl FuzzSummary<&'static str> {
    /// A run that passed.
    pub const fn ok(seed: u64, syscalls: u64, faults: u64) -> Self {
        FuzzSummary {
            seed,
            syscalls,
            faults,
            failure: None,
        }
    }
}

impl<W: fmt::Display> FuzzSummary<W> {
    /// A run that failed because of `why`.
    pub const fn failed(seed: u64, syscalls: u64, faults: u64, why: W) -> Self {
        FuzzSummary {
            seed,
            syscalls,
            faults,
            failure: Some(why),
        }
    }
}

impl<W: fmt::Display> fmt::Display for FuzzSummary<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fuzz: seed={} syscalls={} faults={} ",
            self.seed, self.syscalls, self.faults
        )?;
        match &self.failure {
            None => f.write_str("ok"),
            Some(why) => write!(f, "FAILED: {why}"),
        }
    }
}

/// A decimal number without sign or padding.
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_line_is_what_the_scripts_match() {
        let mut v = Verdict::default();
        for ok in [true, true, false, true] {
            v.record(ok);
        }
        // scripts/test.sh: /^[0-9]+ passed, [0-9]+ failed$/
        assert_eq!(v.to_string(), "3 passed, 1 failed");
        assert!(!v.success());
        assert_eq!(Verdict::default().to_string(), "0 passed, 0 failed");
        assert!(Verdict::default().success());
    }

    #[test]
    fn verdict_lines_parse_back_and_nothing_else_does() {
        let v = Verdict {
            passed: 117,
            failed: 0,
        };
        assert_eq!(Verdict::parse(&v.to_string()), Some(v));
        for bad in [
            "",
            "3 passed",
            "3 passed, 1 failed.",
            "x passed, 1 failed",
            "3 passed,  1 failed",
            "-3 passed, 1 failed",
            "[pid 2] 3 passed, 1 failed",
        ] {
            assert_eq!(Verdict::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bench_line_is_the_documented_format() {
        let mut samples = [9, 3, 7, 5, 1];
        let b = Bench::from_samples("null_syscall", Unit::Instructions, &mut samples, 0);
        assert_eq!(
            b.to_string(),
            "BENCH name=null_syscall unit=instructions min=1 median=5 iters=5 failed=0"
        );
        assert_eq!(samples, [1, 3, 5, 7, 9], "sorted in place");
    }

    #[test]
    fn bench_median_of_an_even_count_is_the_upper_middle_and_empty_is_all_zero() {
        let mut four = [40, 10, 30, 20];
        let b = Bench::from_samples("x", Unit::Cycles, &mut four, 2);
        assert_eq!((b.min, b.median, b.iters, b.failed), (10, 30, 4, 2));
        let e = Bench::from_samples("x", Unit::Us, &mut [], 0);
        assert_eq!(
            e.to_string(),
            "BENCH name=x unit=us min=0 median=0 iters=0 failed=0"
        );
    }

    #[test]
    fn bench_lines_parse_back_and_malformed_ones_do_not() {
        for unit in Unit::ALL {
            let b = Bench {
                name: "yield_switch",
                unit,
                min: 1,
                median: 2,
                iters: 3,
                failed: 4,
            };
            let line = b.to_string();
            assert_eq!(Bench::parse(&line), Some(b));
        }
        for bad in [
            "BENCH name=a unit=cycles min=1 median=2 iters=3",
            "BENCH name=a unit=parsecs min=1 median=2 iters=3 failed=0",
            "BENCH name=a unit=cycles min=1 median=2 iters=3 failed=0 extra",
            "BENCH name= unit=cycles min=1 median=2 iters=3 failed=0",
            "BENCH unit=cycles name=a min=1 median=2 iters=3 failed=0",
            "BENCH-DONE",
        ] {
            assert_eq!(Bench::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn fuzz_summary_is_what_fuzz_sh_and_the_smoke_case_match() {
        // smoke.sh: 'fuzz: seed=1 syscalls=50000 faults=[0-9]+ ok$'
        assert_eq!(
            FuzzSummary::ok(1, 50000, 563).to_string(),
            "fuzz: seed=1 syscalls=50000 faults=563 ok"
        );
        let n = 2;
        assert_eq!(
            FuzzSummary::failed(7, 10, 0, format_args!("{n} findings")).to_string(),
            "fuzz: seed=7 syscalls=10 faults=0 FAILED: 2 findings"
        );
    }

    #[test]
    fn unit_names_are_the_ones_bench_sh_prints() {
        assert_eq!(Unit::rdtsc(true).as_str(), "instructions");
        assert_eq!(Unit::rdtsc(false).as_str(), "cycles");
        assert_eq!(Unit::Us.as_str(), "us");
    }
}
