//! `process_id`'s second result, the CPU a process runs on (issue 11: the
//! shell's `ps` CPU column, through procmgr's `list`).
//!
//! - `process_cpu_names_the_cpu_it_runs_on`: a child pins itself to the
//!   last CPU and spins; its handle's `cpu()` comes to name that CPU.

use crate::util::{self, check, ok, TestResult};
use libipc::sys;

/// `mov eax, imm32` below carries this number.
const SET_AFFINITY: u8 = abi::Sysnum::SetAffinity as u8;
const _: () = assert!(abi::Sysnum::SetAffinity as u64 == SET_AFFINITY as u64);

/// The child: pins its thread to the CPU its argument names, then spins.
const PIN_AND_SPIN: &[u8] = &[
    0xb8,
    SET_AFFINITY,
    0,
    0,
    0, // mov eax, set_affinity (rdi: the CPU, the spawn argument)
    0x0f,
    0x05, // syscall
    0xeb,
    0xfe, // jmp $: spin on that CPU
];

/// Case: the CPU `process_id` reports is the one the process runs on.
pub fn process_cpu_names_the_cpu_it_runs_on() -> TestResult {
    let last = sys::cpu_count().saturating_sub(1);
    let child = util::spawn_code(PIN_AND_SPIN, last)?;
    let deadline = sys::clock_ns() + 2_000_000_000;
    let mut seen = None;
    while sys::clock_ns() < deadline {
        seen = ok(child.cpu(), "process_id on a running child")?;
        if seen == Some(last as u32) {
            break;
        }
        sys::sleep_ns(1_000_000);
    }
    let _ = sys::process_kill(child);
    if seen != Some(last as u32) {
        crate::note!("cpu(): {seen:?}, pinned to {last}");
    }
    util::wait_status(child)?;
    check(
        seen == Some(last as u32),
        "the child's CPU was not the one it is pinned to",
    )
}
