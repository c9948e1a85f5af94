//! Benchmark helpers: `rdtsc` and the `BENCH` line format of DESIGN.md:
//! `BENCH name=<name> unit=cycles min=<n> median=<n> iters=<n>`.

/// Reads the time-stamp counter (in `-icount` mode: guest instructions).
#[inline(always)]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC is allowed in ring 3 (CR4.TSD clear) and only reads a counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Sorts `samples` and prints the BENCH line for them.
pub fn report(name: &str, samples: &mut [u64]) {
    samples.sort_unstable();
    let (min, median) = match &*samples {
        [] => (0, 0),
        s => (s[0], s[s.len() / 2]),
    };
    crate::println!(
        "BENCH name={name} unit=cycles min={min} median={median} iters={}",
        samples.len()
    );
}
