//! Review cases of the kernel's layering (issue 9): the per-CPU table, one
//! slot per possible CPU, is reached from ring 3 by CPU number, and a number
//! must name a CPU as a whole: never a slot that is not up, never a number
//! cut down to fit (`CpuId` is 32 bits wide, the syscall argument 64).

use crate::note;
use crate::util::TestResult;
use abi::Error;
use libipc::sys;

/// Numbers that name no online CPU on any machine the tests run on: past
/// the table (64 slots), past 32 bits (whose low half is an online CPU), and
/// the largest values short of `u64::MAX` (which unpins).
const NEVER_CPUS: [u64; 7] = [
    64,
    1 << 32,
    (1 << 32) | 1,
    (1 << 63) | 1,
    u32::MAX as u64,
    u32::MAX as u64 + 1,
    u64::MAX - 1,
];

/// Case: `cpu_syscalls` and `set_affinity` accept exactly the online CPUs:
/// every number below `cpu_count()` works (and pins the caller there), and
/// a slot of the table that is not up (`cpu_count()..64`) or a number that
/// only names an online CPU once cut to 32 bits is `NotFound`, with the
/// caller left where it was.
pub fn cpu_numbers_name_whole_online_cpus() -> TestResult {
    let r = check_numbers();
    let _ = sys::set_affinity(u64::MAX);
    r
}

fn check_numbers() -> TestResult {
    let cpus = sys::cpu_count();
    for k in 0..cpus {
        sys::cpu_syscalls(k).map_err(|_| "cpu_syscalls of an online CPU failed")?;
        sys::set_affinity(k).map_err(|_| "set_affinity to an online CPU failed")?;
        if sys::cpu_id() != k {
            return Err("set_affinity did not move the caller");
        }
    }
    let here = sys::cpu_id();
    let not_up = cpus..64;
    for n in not_up.chain(NEVER_CPUS) {
        if let Ok(c) = sys::cpu_syscalls(n) {
            note!("cpu_syscalls({n:#x}) = {c}");
            return Err("cpu_syscalls of a CPU that is not up answered");
        }
        match sys::set_affinity(n) {
            Err(Error::NotFound) => {}
            r => {
                note!("set_affinity({n:#x}) = {r:?}");
                return Err("set_affinity to a CPU that is not up was not NotFound");
            }
        }
        if sys::cpu_id() != here {
            note!(
                "after set_affinity({n:#x}) the caller runs on CPU {}",
                sys::cpu_id()
            );
            return Err("a refused set_affinity moved the caller");
        }
    }
    Ok(())
}
