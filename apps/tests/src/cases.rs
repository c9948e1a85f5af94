//! The ring-3 case table (`main` runs it; scripts/smoke.sh's
//! `TESTS_CASES` is its length).

mod early;
mod late;

use crate::util::TestResult;

/// A case: its name and the function that runs it.
pub type Case = (&'static str, fn() -> TestResult);

/// Every case, in the order run: cheap argument checks first, then the
/// preemption cases, memory, thread entry, faults, child processes, and
/// the leak and concurrency cases (which churn the most memory), and last
/// the SMP cases (the long migration stress at the very end).
/// The table is in two files (each under 700 lines), run one after the
/// other.
pub const PARTS: &[&[Case]] = &[early::CASES, late::CASES];

/// Every case, in the order run.
pub fn all() -> impl Iterator<Item = &'static Case> + Clone {
    PARTS.iter().flat_map(|p| p.iter())
}
