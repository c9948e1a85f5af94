//! The second half of the case table: the servers, fast path, trace,
//! vm, hw, the reviewers' cases and, last, the supervision and restart
//! cases.

use super::super::*;
use super::Case;

/// In the order run, after [`super::early::CASES`].
pub const CASES: &[Case] = &[
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
    (
        "fastpath_lazy_switch_keeps_fs_gs_bases_apart",
        lazyswitch::fast_path_keeps_fs_gs_bases_apart,
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
    // break22: frame delivery never reaches a slow wait; a close racing
    // the fast reply_recv.
    (
        "break22_slow_waits_after_fast_ones_get_their_messages",
        break22::slow_waits_after_fast_ones_get_their_messages,
    ),
    (
        "break22_close_racing_fast_reply_recv",
        break22::close_racing_fast_reply_recv,
    ),
    (
        "break22_timed_out_callers_leave_the_receive_unframed",
        break22b::timed_out_callers_leave_the_receive_unframed,
    ),
    // break22s: the user-to-user switch's FS/GS base compare.
    (
        "break22s_handoff_keeps_each_threads_fs_gs_bases",
        break22s::handoff_keeps_each_threads_fs_gs_bases,
    ),
    (
        "break22s_handoff_switches_the_io_bitmap_out",
        break22s::handoff_switches_the_io_bitmap_out,
    ),
    // break24s: the IO bit of the lazy switch's summary (switch2).
    (
        "break24s_bitmap_is_never_left_live_for_another_process",
        break24s::bitmap_is_never_left_live_for_another_process,
    ),
    // break23: the frameless resumes' return-RIP check (CVE-2012-0217).
    (
        "break23_fast_call_from_the_last_user_byte_faults",
        break23::fast_call_from_the_last_user_byte_faults,
    ),
    (
        "break23_fast_reply_recv_from_the_last_user_byte_faults",
        break23::fast_reply_recv_from_the_last_user_byte_faults,
    ),
    (
        "break23_refused_fast_ipc_from_the_last_user_byte_faults",
        break23::refused_fast_ipc_from_the_last_user_byte_faults,
    ),
    (
        "break23_ipc_entry_refusals_keep_their_order",
        break23b::ipc_entry_refusals_keep_their_order,
    ),
    // break24e: every register after a syscall, on each exit path.
    (
        "break24e_exit_registers_on_the_stub_paths",
        break24e::exit_registers_on_the_stub_paths,
    ),
    (
        "break24e_exit_registers_after_ipc_call",
        break24e::exit_registers_after_ipc_call,
    ),
    (
        "break24e_exit_registers_after_reply_recv",
        break24e::exit_registers_after_reply_recv,
    ),
    (
        "break24e_exit_registers_after_a_failed_frameless_wait",
        break24e::exit_registers_after_a_failed_frameless_wait,
    ),
    (
        "break24e_exit_registers_after_the_work_path",
        break24e::exit_registers_after_the_work_path,
    ),
    (
        "break24e_exit_registers_after_a_single_stepped_syscall",
        break24t::exit_registers_after_a_single_stepped_syscall,
    ),
    (
        "break24e_exit_registers_after_a_suspended_frameless_wait",
        break24e::exit_registers_after_a_suspended_frameless_wait,
    ),
    // break26s: the resume's exit (result in RAX) on its TF path.
    (
        "break26s_single_stepped_frameless_call_result",
        break26s::single_stepped_frameless_call_result,
    ),
    (
        "break26s_kill_before_a_fast_block_ends_the_caller",
        break26s::kill_before_a_fast_block_ends_the_caller,
    ),
    // break23p: a fast reply_recv raced by a close and a kill.
    (
        "break23p_fast_reply_recv_races_close_and_kill",
        break23p::fast_reply_recv_races_close_and_kill,
    ),
    // break24p: the fast call's hand-off of a receiver that last ran on
    // another CPU (kill, suspension, affinity).
    (
        "break24p_unpinned_fast_server_killed_while_called",
        break24p::unpinned_fast_server_killed_while_called,
    ),
    (
        "break24p_suspended_unpinned_fast_server_runs_no_user_code",
        break24p::suspended_unpinned_fast_server_runs_no_user_code,
    ),
    (
        "break24p_server_moving_between_cpus_answers_every_call",
        break24p::server_moving_between_cpus_answers_every_call,
    ),
    // sched3: the hand-off's switch tests no affinity.
    (
        "sched3_fast_pair_moving_between_cpus_stays_on_its_cpus",
        sched3::fast_pair_moving_between_cpus_stays_on_its_cpus,
    ),
    // proto3: fast callers killed mid round trip (the reply word's pin),
    // then the server.
    (
        "fastpath_proto3_killed_fast_callers_leave_the_server_serving",
        proto3::killed_fast_callers_leave_the_server_serving,
    ),
    // cut26e: the caller's record names its server uncounted; thread
    // memory goes back to the heap after a grace period.
    (
        "cut26e_a_caller_outlives_its_server",
        cut26e::a_caller_outlives_its_server,
    ),
    (
        "cut26e_thread_churn_gives_thread_memory_back",
        cut26e::thread_churn_gives_thread_memory_back,
    ),
    // cut27r: the hand-off's partner and PerCpu's current thread
    // uncounted (each thread's life reference).
    (
        "cut27r_fast_pairs_ended_mid_round_trip_give_threads_back",
        cut27r::fast_pairs_ended_mid_round_trip_give_threads_back,
    ),
    // cut27p: the fast path's message copied frame to frame (asm).
    (
        "cut27p_fast_messages_arrive_whole",
        cut27p::fast_messages_arrive_whole,
    ),
    // break27p: every register of a fast round trip, badged, R14/R15 garbage.
    (
        "break27p_fast_round_trip_every_register",
        break27p::fast_round_trip_every_register,
    ),
    (
        "break27p_fast_calls_into_a_bound_receiver_carry_the_badge",
        break27p::fast_calls_into_a_bound_receiver_carry_the_badge,
    ),
    // break28p: the fast call's uncommon record, the receive buffer on
    // every decode, stale notification numbers racing their slot's reuse.
    (
        "break28p_bound_receiver_fast_call_frees_the_endpoint",
        break28p::bound_receiver_fast_call_frees_the_endpoint,
    ),
    (
        "break28p_receive_buffers_on_every_decode",
        break28p::receive_buffers_on_every_decode,
    ),
    (
        "break28p_stale_notification_numbers_racing_reuse",
        break28p::stale_notification_numbers_racing_reuse,
    ),
    (
        "break28p_fast_call_into_a_bound_receiver_leaves_no_registration",
        break28p::fast_call_into_a_bound_receiver_leaves_no_registration,
    ),
    // break27r: threads end in every state, processes with them, and
    // cross-core partners are killed mid-reply; each life reference goes.
    (
        "break27r_threads_ended_in_every_state_give_everything_back",
        break27r::threads_ended_in_every_state_give_everything_back,
    ),
    (
        "break27r_process_exits_with_threads_in_every_state",
        break27r::process_exits_with_threads_in_every_state,
    ),
    (
        "break27r_cross_core_partners_killed_mid_reply_give_threads_back",
        break27r::cross_core_partners_killed_mid_reply_give_threads_back,
    ),
    // break25s: the slow path's hand-offs without the affinity test.
    (
        "break25s_slow_handoffs_with_suspends_and_timeouts_stay_on_pinned_cpus",
        break25s::slow_handoffs_with_suspends_and_timeouts_stay_on_pinned_cpus,
    ),
    // break25p: timed calls whose timeouts race the server's replies (a
    // pin left behind after a lost claim).
    (
        "break25p_timed_calls_racing_replies_end_once",
        break25p::timed_calls_racing_replies_end_once,
    ),
    // break25l: lookup3's fast decode and the fast call's claim under the
    // handle-table lock.
    (
        "break25l_decode_refusals_match_the_abi",
        break25l::decode_refusals_match_the_abi,
    ),
    (
        "break25l_handle_churn_races_fast_calls",
        break25l::handle_churn_races_fast_calls,
    ),
    // break26l: cut26l's fast_regs (RSI's upper half read as a u32 of its
    // own): each upper bit under labels with bit 31 set or not.
    (
        "break26l_rsi_high_bits_each_leave_the_fast_case",
        break26l::rsi_high_bits_each_leave_the_fast_case,
    ),
    // --- supervise (issue 11: supervision under injected faults) ---
    // Last on purpose: the trace-tests-smp4 boot checks init's restart
    // marks (`mark restart:console`, `restart:loader`) are in the rings at
    // shutdown, and the cases after a restart would push them out (the
    // break22 and xcore cases, IPC-heavy, did when they came after it: add
    // new cases above this one).
    (
        "supervise_console_and_loader_killed_at_random",
        supervise::console_and_loader_killed_at_random,
    ),
    (
        "supervise_supervised_names_are_reserved",
        supervise::supervised_names_are_reserved,
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
    // break21: a spawn whose thread is suspended at its return, then killed.
    (
        "break21_suspended_spawner_killed_leaves_no_child",
        break21::suspended_spawner_killed_leaves_no_child,
    ),
];
