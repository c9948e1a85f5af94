//! User-space kernel tests (run by init under `init=tests`, and for the
//! shell's `tests [prefix]`: argv[1], if given, runs only the cases whose
//! names start with it).
//!
//! Prints `tests: <N> cases` first, then `test <name> ... ok` or
//! `test <name> ... FAILED: <why>` per case (detail lines, indented `note:`,
//! come just before the verdict), then `<N> passed, <M> failed`; exits 0 iff
//! nothing failed. The boot tests (scripts/smoke.sh `TESTS_CASES`) check
//! both counts against a committed number, so an empty or shrunken run fails.
//!
//! Every case runs in a thread of its own: if the case's code faults (a
//! kernel bug that corrupts user registers, say), the harness names the case
//! (`case <name> crashed: <fault>`) and goes on with the next.
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
mod attack2;
mod attack_servers;
mod attack_session18;
mod attackfp;
mod attackhw;
mod attackvm;
mod breakk2;
mod breaku;
mod console;
mod consrv;
mod cpu_state;
mod edit_wait;
mod entry;
mod fastpath;
mod fastpath3;
mod faults;
mod forkperf;
mod forku;
mod fpu;
mod gaps;
mod gaps2;
mod gpr;
mod handles;
mod hw;
mod info;
mod ipc;
mod ipc_attack;
mod ipc_order;
mod ipcfast;
mod ipcfr;
mod ipcl;
mod kv;
mod leaks;
mod lifecycle;
mod loader;
mod mem;
mod names;
mod notdeliv;
mod pmrejoin;
mod pmrestart;
mod process;
mod procmgr;
mod pscpu;
mod regs;
mod rev_layers;
mod rev_life;
mod rev_syscall;
mod sched;
mod shell3;
mod smp;
mod supervise;
mod tls;
mod trace;
mod util;
mod vm;
mod vm_build;
mod vm_review;
mod waitrecheck;
mod xcore;

use abi::report::Verdict;
use abi::status::Status;
use libipc::{println, sys};
use util::{arg_of, from_arg, TestResult};

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
    (
        "user_output_cannot_forge_kernel_lines",
        console::user_output_cannot_forge_kernel_lines,
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
    // CPU state ring 3 must not use or disturb (cpu_state.rs).
    ("ldt_selectors_raise_gp", cpu_state::ldt_selectors_raise_gp),
    ("nothing_maps_below_64k", cpu_state::nothing_maps_below_64k),
    (
        "ldt_call_gate_is_never_used",
        cpu_state::ldt_call_gate_is_never_used,
    ),
    (
        "ac_set_in_ring3_never_reaches_the_kernel",
        cpu_state::ac_set_in_ring3_never_reaches_the_kernel,
    ),
    (
        "nmi_in_ring3_leaves_threads_intact",
        cpu_state::nmi_in_ring3_leaves_threads_intact,
    ),
    ("tsc_aux_is_the_cpu_id", cpu_state::tsc_aux_is_the_cpu_id),
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
        "spawn_of_huge_image_is_refused_at_once",
        process::spawn_of_huge_image_is_refused_at_once,
    ),
    (
        "user_copy_races_with_unmap",
        process::user_copy_races_with_unmap,
    ),
    // Process and thread lifecycle (issue 7 items 1, 2, 5, 6).
    (
        "thread_churn_does_not_grow_kernel_heap",
        lifecycle::thread_churn_does_not_grow_kernel_heap,
    ),
    (
        "dead_unjoined_thread_frees_its_stack",
        lifecycle::dead_unjoined_thread_frees_its_stack,
    ),
    (
        "thread_quota_is_per_process",
        lifecycle::thread_quota_is_per_process,
    ),
    (
        "process_exit_ends_a_breeding_process",
        lifecycle::process_exit_ends_a_breeding_process,
    ),
    (
        "orphaned_zombies_are_reaped",
        lifecycle::orphaned_zombies_are_reaped,
    ),
    (
        "process_exit_with_a_thread_in_wait",
        lifecycle::process_exit_with_a_thread_in_wait,
    ),
    (
        "priority_is_capped_by_mcp",
        lifecycle::priority_is_capped_by_mcp,
    ),
    (
        "mapped_memory_is_limited",
        rev_life::mapped_memory_is_limited,
    ),
    (
        "page_tables_count_against_the_memory_limit",
        rev_life::page_tables_count_against_the_memory_limit,
    ),
    (
        "killed_process_spawns_no_child",
        rev_life::killed_process_spawns_no_child,
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
    (
        "edit_flag_holder_is_not_starved_by_a_middle_priority_hog",
        vm_review::edit_flag_holder_is_not_starved_by_a_middle_priority_hog,
    ),
    (
        "ipc_handles_rights_and_staleness",
        ipc::handles_rights_and_staleness,
    ),
    (
        "ipc_call_reply_carries_label_words_and_badge",
        ipc::call_reply_carries_label_words_and_badge,
    ),
    (
        "ipc_many_clients_many_workers_each_call_answered_once",
        ipc::many_clients_many_workers_each_call_answered_once,
    ),
    (
        "ipc_peer_death_and_timeouts_are_errors",
        ipc::peer_death_and_timeouts_are_errors,
    ),
    (
        "ipc_notifications_accumulate_wake_and_die",
        ipc::notifications_accumulate_wake_and_die,
    ),
    (
        "ipc_bound_notification_ends_an_endpoint_receive",
        ipc::bound_notification_ends_an_endpoint_receive,
    ),
    (
        "ipc_malformed_arguments_are_refused",
        ipc::malformed_ipc_arguments_are_refused,
    ),
    (
        "ipc_process_killed_in_every_ipc_wait_ends_cleanly",
        ipc::process_killed_in_every_ipc_wait_ends_cleanly,
    ),
    (
        "ipc_buffers_and_handles_travel",
        ipc::buffers_and_handles_travel,
    ),
    (
        "ipc_bad_buffers_fail_their_own_side",
        ipc::bad_buffers_fail_their_own_side,
    ),
    ("ipc_calls_between_processes", ipc::calls_between_processes),
    (
        "ipc_fast_path_handoff_loses_no_thread",
        ipc::fast_path_handoff_loses_no_thread,
    ),
    // libipc's server toolkit and the kv example server (toolkit).
    (
        "ipc_calls_from_many_cpus_are_answered_once_in_order",
        ipc_order::calls_from_many_cpus_are_answered_once_in_order,
    ),
    (
        "kv_server_answers_every_request",
        kv::kv_server_answers_every_request,
    ),
    (
        "kv_server_survives_hostile_messages",
        kv::kv_server_survives_hostile_messages,
    ),
    (
        "ipc_attack_queued_call_survives_a_receivers_bad_buffer",
        ipc_attack::queued_call_survives_a_receivers_bad_buffer,
    ),
    (
        "ipc_attack_queued_call_survives_a_receivers_full_table",
        ipc_attack::queued_call_survives_a_receivers_full_table,
    ),
    (
        "ipc_attack_copied_receive_handle_racing_its_close_is_one_or_the_other",
        ipc_attack::copied_receive_handle_racing_its_close_is_one_or_the_other,
    ),
    (
        "ipc_attack_timeouts_racing_every_stage_of_a_call",
        ipc_attack::timeouts_racing_every_stage_of_a_call,
    ),
    (
        "ipc_fast_path_is_taken_and_excluded_cases_are_not",
        fastpath::fast_path_is_taken_and_excluded_cases_are_not,
    ),
    (
        "ipc_fast_path_keeps_both_sides_fpu_state",
        fastpath::fast_path_keeps_both_sides_fpu_state,
    ),
    (
        "ipc_fast_path_kill_races_end_in_errors",
        fastpath::fast_path_kill_races_end_in_errors,
    ),
    (
        "ipc_fast_decode_refuses_what_the_decoder_refuses",
        fastpath::fast_decode_refuses_what_the_decoder_refuses,
    ),
    // --- ipcfr (session 20): the frameless resume ---
    (
        "ipcfr_killed_while_blocked_frameless_never_runs_user_code",
        ipcfr::killed_while_blocked_frameless_never_runs_user_code,
    ),
    (
        "ipcfr_suspended_frameless_server_answers_after_resume",
        ipcfr::suspended_frameless_server_answers_after_resume,
    ),
    (
        "process_tree_cannot_fill_the_thread_table",
        rev_life::process_tree_cannot_fill_the_thread_table,
    ),
    (
        "process_tree_cannot_fill_the_process_table",
        rev_life::process_tree_cannot_fill_the_process_table,
    ),
    (
        "kill_racing_process_wait_is_not_lost",
        rev_life::kill_racing_process_wait_is_not_lost,
    ),
    // Thread and process handles (issue 10 item 1).
    (
        "join_and_wait_go_through_handles",
        handles::join_and_wait_go_through_handles,
    ),
    (
        "task_handles_without_the_right_are_refused",
        handles::task_handles_without_the_right_are_refused,
    ),
    (
        "stale_task_handles_are_bad_handles",
        handles::stale_task_handles_are_bad_handles,
    ),
    (
        "task_handle_numbers_mean_nothing_in_another_process",
        handles::task_handle_numbers_mean_nothing_in_another_process,
    ),
    (
        "task_handle_of_the_wrong_kind_is_wrong_type",
        handles::task_handle_of_the_wrong_kind_is_wrong_type,
    ),
    (
        "closing_the_last_handle_reclaims_an_exited_child",
        handles::closing_the_last_handle_reclaims_an_exited_child,
    ),
    (
        "full_handle_table_fails_spawns_cleanly",
        handles::full_handle_table_fails_spawns_cleanly,
    ),
    ("kill_through_a_handle", handles::kill_through_a_handle),
    (
        "killed_while_waiting_to_edit_keeps_nothing",
        edit_wait::killed_while_waiting_to_edit_keeps_nothing,
    ),
    (
        "cpu_numbers_name_whole_online_cpus",
        rev_layers::cpu_numbers_name_whole_online_cpus,
    ),
    (
        "rev_syscall_numbers",
        rev_syscall::syscall_numbers_with_high_bits_are_refused,
    ),
    (
        "rev_syscall_arguments",
        rev_syscall::argument_numbers_with_high_bits_are_refused,
    ),
    (
        "rev_syscall_exit_codes",
        rev_syscall::exit_code_high_bits_do_not_forge_a_fault,
    ),
    ("rev_syscall_ranges", rev_syscall::user_ranges_at_the_edges),
    (
        "rev_syscall_spawn_race",
        rev_syscall::process_spawn_source_unmapped_mid_copy,
    ),
    // breakit2: task handles and the fast path, attacked.
    (
        "attack2_self_process_handle_wait_refused_kill_ends_it",
        attack2::self_process_handle_wait_refused_kill_ends_it,
    ),
    (
        "attack2_two_reapers_race_one_wins",
        attack2::two_reapers_race_one_wins,
    ),
    (
        "attack2_kill_races_join_and_close",
        attack2::kill_races_join_and_close,
    ),
    (
        "attack2_task_handles_used_from_another_process",
        attack2::task_handles_used_from_another_process,
    ),
    (
        "attack2_fast_path_server_thread_killed_through_its_handle",
        attack2::fast_path_server_thread_killed_through_its_handle,
    ),
    (
        "attack2_endpoint_freed_after_a_fast_call_and_close",
        attack2::endpoint_freed_after_a_fast_call_and_close,
    ),
    (
        "attack2_children_holding_each_other_are_freed",
        attack2::children_holding_each_other_are_freed,
    ),
    // --- names (issue 11 item 1) ---
    ("names_kv_found_by_name", names::kv_found_by_name),
    ("names_bad_input_is_refused", names::bad_input_is_refused),
    (
        "names_stale_endpoint_after_restart",
        names::stale_endpoint_after_restart,
    ),
    (
        "names_supervision_survives_100_kills",
        names::supervision_survives_100_kills,
    ),
    // --- fastpath3 (issue 10) ---
    (
        "fastpath3_killed_spawner_leaves_no_child",
        fastpath3::killed_spawner_leaves_no_child,
    ),
    (
        "fastpath3_first_fpu_use_after_many_switches_sees_init_state",
        fastpath3::first_fpu_use_after_many_switches_sees_init_state,
    ),
    // --- trace (issue 12) ---
    (
        "trace_mark_validates_its_name",
        trace::trace_mark_validates_its_name,
    ),
    // --- vm (issue 11) ---
    (
        "vm_process_built_from_scratch_runs_and_exits",
        vm_build::process_built_from_scratch_runs_and_exits,
    ),
    (
        "vm_calls_check_rights_and_ranges",
        vm_build::vm_calls_check_rights_and_ranges,
    ),
    (
        "vm_target_quota_exhaustion_is_no_memory_and_leaks_nothing",
        vm_build::target_quota_exhaustion_is_no_memory_and_leaks_nothing,
    ),
    (
        "vm_memory_object_is_shared_and_freed_with_its_last_mapping",
        vm_build::memory_object_is_shared_and_freed_with_its_last_mapping,
    ),
    (
        "vm_cow_parent_and_child_see_only_their_own_writes",
        vm_build::cow_parent_and_child_see_only_their_own_writes,
    ),
    (
        "vm_cow_child_writing_1mib_returns_every_frame",
        vm_build::cow_child_writing_1mib_returns_every_frame,
    ),
    (
        "vm_kill_races_a_cow_fault",
        vm_build::kill_races_a_cow_fault,
    ),
    (
        "vm_clone_while_another_thread_writes",
        vm_build::clone_while_another_thread_writes,
    ),
    (
        "vm_protect_after_clone_keeps_the_shared_frame_private",
        vm_build::protect_after_clone_keeps_the_shared_frame_private,
    ),
    (
        "vm_private_mapping_is_copy_on_write",
        vm_build::private_mapping_is_copy_on_write,
    ),
    // --- hw (issue 11) ---
    (
        "hw_ioport_grants_are_checked",
        hw::ioport_grants_are_checked,
    ),
    (
        "hw_ioport_grant_gives_exactly_its_ports",
        hw::ioport_grant_gives_exactly_its_ports,
    ),
    (
        "hw_irq_rtc_signals_and_ack_unmasks",
        hw::irq_rtc_signals_and_ack_unmasks,
    ),
    (
        "hw_process_notify_signals_exit_and_kill",
        hw::process_notify_signals_exit_and_kill,
    ),
    (
        "hw_dead_process_handles_are_closed",
        hw::dead_process_handles_are_closed,
    ),
    (
        "hw_thread_suspend_and_resume",
        hw::thread_suspend_and_resume,
    ),
    ("hw_fault_delivery", hw::fault_delivery),
    // --- breakvm (issue 11) ---
    (
        "attackvm_reply_into_a_clones_cow_buffer",
        attackvm::reply_into_a_clones_cow_buffer,
    ),
    (
        "attackvm_clone_loses_no_racing_write",
        attackvm::clone_loses_no_racing_write,
    ),
    // --- breakfp (issue 10) ---
    (
        "attackfp_x87_regs_init_at_first_use",
        attackfp::x87_regs_init_at_first_use,
    ),
    (
        "attackfp_first_fpu_insn_faults_with_its_own_vector",
        attackfp::first_fpu_insn_faults_with_its_own_vector,
    ),
    (
        "attackfp_first_use_state_follows_migration",
        attackfp::first_use_state_follows_migration,
    ),
    (
        "attackfp_spawn_in_last_user_page_leaves_no_thread",
        attackfp::spawn_in_last_user_page_leaves_no_thread,
    ),
    (
        "attackfp_process_spawn_in_last_user_page_leaves_no_child",
        attackfp::process_spawn_in_last_user_page_leaves_no_child,
    ),
    // --- breakhw (issue 11) ---
    (
        "attackhw_fault_error_code_hides_kernel_layout",
        attackhw::fault_error_code_hides_kernel_layout,
    ),
    (
        "attackhw_exit_notify_is_per_notification",
        attackhw::exit_notify_is_per_notification,
    ),
    (
        "attackhw_fault_resume_keeps_registers",
        attackhw::fault_resume_keeps_registers,
    ),
    // --- ipcfast (issue 10) ---
    (
        "ipcfast_port_enabled_by_a_sibling_is_usable_at_once",
        ipcfast::port_enabled_by_a_sibling_is_usable_at_once,
    ),
    // --- ipcl (issue 10, session 19) ---
    (
        "ipcl_call_racing_close_and_reuse_of_its_number",
        ipcl::call_racing_close_and_reuse_of_its_number,
    ),
    // --- procmgr (issue 11 item 3) ---
    (
        "procmgr_fork_wait_exit_codes",
        procmgr::fork_wait_exit_codes,
    ),
    ("procmgr_getpid_getppid", procmgr::getpid_getppid),
    (
        "procmgr_fork_chain_10_leaves_no_zombies",
        procmgr::fork_chain_10_leaves_no_zombies,
    ),
    (
        "procmgr_hundred_children_all_waited",
        procmgr::hundred_children_all_waited,
    ),
    (
        "procmgr_cow_parent_and_child_see_own_writes",
        procmgr::cow_parent_and_child_see_own_writes,
    ),
    (
        "procmgr_faulting_children_are_killed_and_reported",
        procmgr::faulting_children_are_killed_and_reported,
    ),
    (
        "procmgr_hostile_waits_and_kills_are_refused",
        procmgr::hostile_waits_and_kills_are_refused,
    ),
    (
        "procmgr_orphan_is_reparented_to_init",
        procmgr::orphan_is_reparented_to_init,
    ),
    (
        "procmgr_fork_storm_to_the_limit_is_an_error",
        procmgr::fork_storm_to_the_limit_is_an_error,
    ),
    // --- console server (issue 11 item 4) ---
    (
        "consrv_sessions_print_whole_lines",
        consrv::sessions_print_whole_lines,
    ),
    (
        "consrv_hostile_requests_get_typed_errors",
        consrv::hostile_requests_get_typed_errors,
    ),
    (
        "consrv_restart_while_clients_print",
        consrv::restart_while_clients_print,
    ),
    // --- loader (issue 11 item 2) ---
    ("loader_hello_gets_its_stack", loader::hello_gets_its_stack),
    (
        "loader_malformed_corpus_is_refused",
        loader::malformed_corpus_is_refused,
    ),
    (
        "loader_hostile_requests_get_typed_replies",
        loader::hostile_requests_get_typed_replies,
    ),
    (
        "loader_hundred_loads_leak_nothing",
        loader::hundred_loads_leak_nothing,
    ),
    (
        "loader_killed_under_a_client",
        loader::killed_under_a_client,
    ),
    (
        "loader_stacks_are_zero_and_private",
        loader::stacks_are_zero_and_private,
    ),
    (
        "loader_stack_zero_object_survives_protect_and_kernel_writes",
        loader::stack_zero_object_survives_protect_and_kernel_writes,
    ),
    (
        "procmgr_rechecked_wait_delivers_once",
        waitrecheck::rechecked_wait_delivers_once,
    ),
    // --- shell2 (issue 11: spawn/exec through procmgr) ---
    (
        "procmgr_spawn_hello_through_the_loader",
        procmgr::spawn_hello_through_the_loader,
    ),
    (
        "procmgr_fork_exec_hello_keeps_the_pid",
        procmgr::fork_exec_hello_keeps_the_pid,
    ),
    // --- breakit (issue 11, the servers attacked) ---
    (
        "attack_servers_timed_out_waits_do_not_starve_other_waiters",
        attack_servers::timed_out_waits_do_not_starve_other_waiters,
    ),
    (
        "attack_servers_procmgr_table_full_of_zombies_is_an_error",
        attack_servers::procmgr_table_full_of_zombies_is_an_error,
    ),
    (
        "attack_servers_procmgr_end_probe_has_no_stale_signal",
        attack_servers::procmgr_end_probe_has_no_stale_signal,
    ),
    // --- shell3 (init-only trace dump and adopt) ---
    ("trace_dump_is_init_only", shell3::trace_dump_is_init_only),
    (
        "names_lookup_for_is_procmgr_only",
        gaps::names_lookup_for_is_procmgr_only,
    ),
    (
        "names_resend_follows_newer_instances_up_to_the_bound",
        gaps::names_resend_follows_newer_instances_up_to_the_bound,
    ),
    (
        "procmgr_adopt_is_init_only",
        shell3::procmgr_adopt_is_init_only,
    ),
    // --- gaps2 (session 20: who takes a Ctrl-C) ---
    (
        "console_foreground_is_the_controllers_alone",
        gaps2::console_foreground_is_the_controllers_alone,
    ),
    // --- forkperf (issue 11: fork and spawn costs) ---
    (
        "procmgr_waits_keep_a_notification_and_forks_forget_it",
        forkperf::waits_keep_a_notification_and_forks_forget_it,
    ),
    // --- forku (issue 11: the wake-up carries the wait's outcome) ---
    (
        "procmgr_wait_cancel_after_delivery_reads_the_status",
        forku::cancel_after_delivery_reads_the_status,
    ),
    (
        "procmgr_timed_waits_race_the_end_and_lose_nothing",
        forku::timed_waits_race_the_end_and_lose_nothing,
    ),
    (
        "procmgr_waiter_killed_while_waiting",
        forku::waiter_killed_while_waiting,
    ),
    (
        "procmgr_badged_give_and_fault_endpoint",
        forku::badged_give_and_fault_endpoint,
    ),
    // --- breaku (session 19: break-it review of forku, gaps, ipcl) ---
    (
        "loader_shared_module_pages_stay_unchanged",
        breaku::shared_module_pages_stay_unchanged,
    ),
    (
        "procmgr_exec_drops_the_old_images_waiters",
        breaku::exec_drops_the_old_images_waiters,
    ),
    // --- pscpu (issue 11: ps's CPU column) ---
    (
        "process_cpu_names_the_cpu_it_runs_on",
        pscpu::process_cpu_names_the_cpu_it_runs_on,
    ),
    // --- notdeliv (issue 11: NotDelivered versus PeerDied) ---
    (
        "notdeliv_call_without_receivers",
        notdeliv::call_without_receivers,
    ),
    (
        "notdeliv_queued_call_behind_a_busy_server_that_dies",
        notdeliv::queued_call_behind_a_busy_server_that_dies,
    ),
    (
        "notdeliv_taken_call_whose_server_dies_is_peer_died",
        notdeliv::taken_call_whose_server_dies_is_peer_died,
    ),
    (
        "notdeliv_last_receiver_closing_races_callers",
        notdeliv::last_receiver_closing_races_callers,
    ),
    // --- breakit2 (session 18 break-it review) ---
    (
        "attack18_prune_unmap_cycles_return_every_frame",
        attack_session18::prune_unmap_cycles_return_every_frame,
    ),
    (
        "attack18_prune_unmap_last_table_of_user_half",
        attack_session18::prune_unmap_last_table_of_user_half,
    ),
    (
        "attack18_unmap_whole_user_half_frees_all_tables",
        attack_session18::unmap_whole_user_half_frees_all_tables,
    ),
    (
        "attack18_user_copy_races_pruning_unmap",
        attack_session18::user_copy_races_pruning_unmap,
    ),
    (
        "attack18_process_cpu_of_unstarted_ended_closed",
        attack_session18::process_cpu_of_unstarted_ended_closed,
    ),
    (
        "attack18_cow_faults_race_pruning_of_a_clone",
        attack_session18::cow_faults_race_pruning_of_a_clone,
    ),
    // --- breakk2 (session 20): attacks on ipcfr and xcore ---
    (
        "breakk2_no_poll_without_another_cpu_to_wake_the_blocker",
        breakk2::no_poll_without_another_cpu_to_wake_the_blocker,
    ),
    ("breakk2_sleeps_do_not_poll", breakk2::sleeps_do_not_poll),
    // --- supervise (issue 11: supervision under injected faults) ---
    // Last on purpose: the trace-tests-smp4 boot checks init's restart
    // marks (`mark restart:console`, `restart:loader`) are in the rings at
    // shutdown, and the cases after a restart would push them out.
    (
        "supervise_console_and_loader_killed_at_random",
        supervise::console_and_loader_killed_at_random,
    ),
    (
        "supervise_supervised_names_are_reserved",
        supervise::supervised_names_are_reserved,
    ),
    // --- xcore (session 20): the cross-core round trip ---
    (
        "xcore_cross_core_calls_take_the_xcall_path",
        xcore::cross_core_calls_take_the_xcall_path,
    ),
    (
        "xcore_replies_across_the_poll_window_are_never_left_to_the_tick",
        xcore::replies_across_the_poll_window_are_never_left_to_the_tick,
    ),
    (
        "xcore_kill_racing_a_cross_core_call",
        xcore::kill_racing_a_cross_core_call,
    ),
    // Last of all: it restarts procmgr, whose successor starts with an
    // empty table (no other case's children survive; only the rejoin case
    // below, which needs the restart, follows).
    (
        "procmgr_restart_ends_an_untimed_wait",
        pmrestart::restart_ends_an_untimed_wait,
    ),
    // After it (gaps2): init adopted this program into the successor.
    (
        "procmgr_restart_rejoins_inits_programs",
        pmrestart::restart_rejoins_inits_programs,
    ),
    // After it (breaku2): three more restarts; a failed re-adoption is
    // retried at the next one, and `fork` finds the successor too.
    (
        "procmgr_failed_readoption_is_retried",
        pmrejoin::failed_readoption_is_retried,
    ),
    (
        "procmgr_fork_first_after_a_restart_rejoins",
        pmrejoin::fork_first_after_a_restart_rejoins,
    ),
];

#[no_mangle]
fn main(arg: u64) -> i32 {
    // A demand-zero stack takes all its frames now (see the function).
    libipc::rt::pretouch_stack();
    supervise::configure(arg);
    // Before anything makes a handle: init's hardware roots land first.
    hw::wait_for_roots();
    procmgr::attach();
    // From here on, print through the console server (issue 11 item 4).
    if !libipc::console::attach(libipc::ipc::Endpoint(abi::bootinfo::names::HANDLE)) {
        println!("tests: no console server; printing through the kernel");
    }
    util::calibrate();
    // argv[1], if given (the shell's `tests <prefix>` through init): only
    // the cases whose names start with it run.
    let filter = libipc::rt::arg(1).unwrap_or(b"");
    let chosen = || {
        CASES
            .iter()
            .filter(move |(name, _)| name.as_bytes().starts_with(filter))
    };
    match core::str::from_utf8(filter) {
        Ok("") => println!("tests: {} cases", CASES.len()),
        Ok(f) => println!("tests: {} cases matching \"{f}\"", chosen().count()),
        Err(_) => println!(
            "tests: {} cases matching a non-UTF-8 prefix",
            chosen().count()
        ),
    }
    let mut verdict = Verdict::default();
    for &(name, case) in chosen() {
        let r = run_case(name, case);
        verdict.record(r.is_ok());
        match r {
            Ok(()) => println!("test {name} ... ok"),
            Err(why) => println!("test {name} ... FAILED: {why}"),
        }
        // A case that pinned this thread must not leave it pinned.
        let _ = sys::set_affinity(u64::MAX);
    }
    println!("{verdict}");
    i32::from(!verdict.success())
}

/// What the harness hands a case thread, and what it hands back.
struct CaseRun {
    case: fn() -> TestResult,
    result: Option<TestResult>,
}

extern "C" fn case_thread(arg: u64) -> ! {
    // SAFETY: `run_case` passes its `CaseRun` with `arg_of` and joins before
    // reading or dropping it.
    let run: &mut CaseRun = unsafe { from_arg(arg) };
    run.result = Some((run.case)());
    sys::thread_exit(0)
}

/// Runs one case in a thread of its own, so a fault in the case's code is
/// reported against that case instead of killing the whole program.
fn run_case(name: &str, case: fn() -> TestResult) -> TestResult {
    let mut run = CaseRun { case, result: None };
    let st = util::run(case_thread, arg_of(&mut run))?;
    match (st, run.result) {
        (Status::Exited(0), Some(r)) => r,
        (Status::Faulted(v), _) => {
            println!("case {name} crashed: {} (vector {v})", util::fault_name(v));
            Err("the case crashed")
        }
        (other, _) => {
            println!("case {name} crashed: its thread ended with {other:?}");
            Err("the case crashed")
        }
    }
}
