//! User-space kernel tests (run by init under `init=tests`).
//!
//! Prints `test <name> ... ok` or `test <name> ... FAILED: <why>` per case
//! (detail lines, indented `note:`, come just before the verdict), then
//! `<N> passed, <M> failed`; exits 0 iff nothing failed.
//!
//! Cases live in one module per concern: [`regs`] (what syscalls and
//! preemption hand back), [`fpu`], [`faults`] (what ring 3 may not do),
//! [`args`] (syscall argument checks), [`entry`] (thread entry state, bad
//! stack pointers), [`info`] (`sysinfo`, the copy-to-user path), [`sched`], [`tls`], [`mem`], [`process`] (child
//! processes built on the fly), [`leaks`] and [`smp`] (many CPUs at once:
//! migration stress, per-CPU accounting, TLB shootdown, FS/GS bases).
//! Anything that can fault or that holds registers in states the Rust ABI
//! forbids runs in a spawned thread ([`util`]), so a kernel bug shows as a
//! failed case rather than a dead test program.
#![no_std]
#![no_main]
#![forbid(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

mod args;
mod entry;
mod faults;
mod fpu;
mod gpr;
mod info;
mod leaks;
mod mem;
mod process;
mod regs;
mod sched;
mod smp;
mod tls;
mod util;
mod vm;

use libipc::{println, sys};
use util::TestResult;

/// A case: its name and the function that runs it.
type Case = (&'static str, fn() -> TestResult);

/// Every case, in the order run: cheap argument checks first, then the
/// preemption cases, memory, thread entry, faults, child processes, and
/// the leak and concurrency cases (which churn the most memory), and last
/// the SMP cases (the long migration stress at the very end).
const CASES: &[Case] = &[
    (
        "syscall_preserves_registers",
        regs::syscall_preserves_registers,
    ),
    (
        "bad_syscall_number_is_refused",
        args::bad_syscall_number_is_refused,
    ),
    (
        "kernel_pointer_in_syscall_is_refused",
        args::kernel_pointer_in_syscall_is_refused,
    ),
    ("clock_is_monotonic", sched::clock_is_monotonic),
    (
        "sleep_sleeps_at_least_requested",
        sched::sleep_sleeps_at_least_requested,
    ),
    (
        "thread_join_reports_exit_code",
        args::thread_join_reports_exit_code,
    ),
    (
        "registers_survive_preemption",
        regs::registers_survive_preemption,
    ),
    (
        "registers_survive_migration",
        regs::registers_survive_migration,
    ),
    ("df_does_not_leak", regs::df_does_not_leak),
    ("fpu_isolation", fpu::fpu_isolation),
    (
        "syscall_with_tf_ac_nt_is_harmless",
        regs::syscall_with_tf_ac_nt_is_harmless,
    ),
    (
        "two_cpu_bound_threads_both_progress",
        sched::two_cpu_bound_threads_both_progress,
    ),
    (
        "fs_gs_base_survive_preemption",
        tls::fs_gs_base_survive_preemption,
    ),
    ("map_anon_rules", mem::map_anon_rules),
    (
        "huge_ranges_cost_what_is_mapped",
        vm::huge_ranges_cost_what_is_mapped,
    ),
    (
        "whole_user_range_unmap_is_fast",
        vm::whole_user_range_unmap_is_fast,
    ),
    (
        "revoked_access_reaches_other_cpus",
        mem::revoked_access_reaches_other_cpus,
    ),
    ("new_thread_starts_clean", entry::new_thread_starts_clean),
    ("bad_user_rsp_is_harmless", entry::bad_user_rsp_is_harmless),
    (
        "user_cannot_read_kernel_memory",
        faults::user_cannot_read_kernel_memory,
    ),
    (
        "user_cannot_jump_to_kernel",
        faults::user_cannot_jump_to_kernel,
    ),
    (
        "privileged_instructions_fault",
        faults::privileged_instructions_fault,
    ),
    ("ud2_faults_thread_only", faults::ud2_faults_thread_only),
    (
        "syscall_in_last_user_page",
        faults::syscall_in_last_user_page,
    ),
    (
        "thread_spawn_rejects_kernel_addresses",
        args::thread_spawn_rejects_kernel_addresses,
    ),
    (
        "process_spawn_rejects_bad_images",
        args::process_spawn_rejects_bad_images,
    ),
    (
        "child_processes_exit_fault_and_are_isolated",
        process::child_processes_exit_fault_and_are_isolated,
    ),
    (
        "process_exit_ends_every_thread",
        process::process_exit_ends_every_thread,
    ),
    (
        "spawn_wait_does_not_leak",
        process::spawn_wait_does_not_leak,
    ),
    (
        "user_copy_races_with_unmap",
        process::user_copy_races_with_unmap,
    ),
    (
        "thread_spawn_join_does_not_leak",
        leaks::thread_spawn_join_does_not_leak,
    ),
    ("map_unmap_does_not_leak", leaks::map_unmap_does_not_leak),
    (
        "map_anon_beyond_ram_fails_cleanly",
        leaks::map_anon_beyond_ram_fails_cleanly,
    ),
    (
        "many_sleeping_threads_all_wake",
        leaks::many_sleeping_threads_all_wake,
    ),
    ("concurrent_map_unmap", leaks::concurrent_map_unmap),
    (
        "syscalls_are_counted_on_the_cpu_that_made_them",
        smp::syscalls_are_counted_on_the_cpu_that_made_them,
    ),
    (
        "unmapped_page_is_never_read_stale",
        smp::unmapped_page_is_never_read_stale,
    ),
    ("migration_keeps_fs_base", smp::migration_keeps_fs_base),
    (
        "smp_stress_counters_add_up",
        smp::smp_stress_counters_add_up,
    ),
    (
        "sysinfo_reports_sane_figures",
        info::sysinfo_reports_sane_figures,
    ),
    (
        "sysinfo_refuses_bad_buffers",
        info::sysinfo_refuses_bad_buffers,
    ),
];

#[no_mangle]
fn main(_arg: u64) -> i32 {
    util::calibrate();
    let (mut passed, mut failed) = (0u32, 0u32);
    for &(name, case) in CASES {
        match case() {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok");
            }
            Err(why) => {
                failed += 1;
                println!("test {name} ... FAILED: {why}");
            }
        }
        // A case that pinned this thread must not leave it pinned.
        let _ = sys::set_affinity(u64::MAX);
    }
    println!("{passed} passed, {failed} failed");
    i32::from(failed != 0)
}
