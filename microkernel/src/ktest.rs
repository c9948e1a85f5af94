//! In-kernel tests, run when the command line says `ktest` (all cases) or
//! `ktest=<name>` for a deliberate-crash case. The run starts with
//! `ktest: <N> cases`, each case prints one line, and the run ends with
//! `<N> passed, <M> failed` and exits QEMU with the verdict (scripts/smoke.sh
//! checks both counts against its committed `KTEST_CASES`).
//!
//! The crash cases (`ktest=fault`, `ktest=stack-overflow`) never return: they
//! prove that the diagnosis path works, and the smoke test reads it.

use crate::arch::percpu::CpuId;
use crate::arch::qemu;
use crate::bootinfo::BootInfo;
use crate::mem::kstack::KernelStack;
use crate::println;
use core::sync::atomic::Ordering;

mod cpu;
mod lock;
mod memory;
mod switch;

use cpu::*;
use lock::*;
use memory::*;
use switch::*;

type Case = (&'static str, fn() -> Result<(), &'static str>);

const CASES: &[Case] = &[
    (
        "frames_are_distinct_and_hold_data",
        frames_are_distinct_and_hold_data,
    ),
    ("double_free_is_refused", double_free_is_refused),
    (
        "heap_serves_small_and_large_blocks",
        heap_serves_small_and_large_blocks,
    ),
    (
        "an_arc_thread_free_is_deferred_a_grace_period",
        an_arc_thread_free_is_deferred_a_grace_period,
    ),
    ("map_write_translate_unmap", map_write_translate_unmap),
    (
        "borrowed_record_goes_with_unmap",
        crate::object::space::ktest_borrowed_record_goes_with_unmap,
    ),
    (
        "teardown_empties_the_space",
        crate::object::space::ktest_teardown_empties_the_space,
    ),
    (
        "mapped_pages_are_charged_and_returned",
        crate::object::space::ktest_mapped_pages_are_charged_and_returned,
    ),
    (
        "shared_and_cow_frames_are_counted",
        crate::object::space::ktest_shared_and_cow_frames_are_counted,
    ),
    (
        "unmap_frees_the_tables_it_empties",
        crate::object::space::ktest_unmap_frees_the_tables_it_empties,
    ),
    (
        "a_freed_stack_is_reused_mapped_and_drained",
        crate::mem::kstack::ktest_a_freed_stack_is_reused_mapped_and_drained,
    ),
    (
        "a_half_built_stack_is_not_cached",
        crate::mem::kstack::ktest_a_half_built_stack_is_not_cached,
    ),
    ("kernel_text_is_not_writable", kernel_text_is_not_writable),
    (
        "kernel_rodata_is_not_writable",
        kernel_rodata_is_not_writable,
    ),
    (
        "syscall_table_is_not_writable",
        syscall_table_is_not_writable,
    ),
    (
        "kernel_data_is_not_executable",
        kernel_data_is_not_executable,
    ),
    (
        "kernel_stack_is_not_executable",
        kernel_stack_is_not_executable,
    ),
    ("kernel_text_is_executable", kernel_text_is_executable),
    ("boot_identity_map_is_gone", boot_identity_map_is_gone),
    ("kernel_stack_has_guard_page", kernel_stack_has_guard_page),
    (
        "percpu_fields_agree_on_every_cpu",
        percpu_fields_agree_on_every_cpu,
    ),
    ("every_ap_answers_ipis", every_ap_answers_ipis),
    (
        "isa_irq4_reaches_the_chosen_cpu",
        isa_irq4_reaches_the_chosen_cpu,
    ),
    (
        "cpu_state_is_explicit_on_every_cpu",
        cpu_state_is_explicit_on_every_cpu,
    ),
    (
        "ap_features_must_match_the_boot_cpu",
        ap_features_must_match_the_boot_cpu,
    ),
    (
        "user_write_takes_interrupts_between_lines",
        user_write_takes_interrupts_between_lines,
    ),
    ("kernel_mode_nmi_returns", kernel_mode_nmi_returns),
    (
        "kernel_db_at_syscall_entry_is_ignored",
        kernel_db_at_syscall_entry_is_ignored,
    ),
    (
        "sysret_refuses_non_canonical_rip",
        sysret_refuses_non_canonical_rip,
    ),
    (
        "switch_context_restores_callee_saved",
        switch_context_restores_callee_saved,
    ),
    (
        "irq_mutex_keeps_the_lock_and_the_flag",
        irq_mutex_keeps_the_lock_and_the_flag,
    ),
];

/// Runs the named ktest mode and exits QEMU.
pub fn run(which: &str, _boot: &BootInfo) -> ! {
    match which {
        "" | "all" => {}
        "fault" => deliberate_page_fault(),
        "stack-overflow" => deliberate_stack_overflow(),
        "ap-panic" => deliberate_ap_panic(),
        other => {
            println!("ktest: unknown mode {other:?} (all, fault, stack-overflow, ap-panic)");
            qemu::exit(false)
        }
    }
    println!("ktest: {} cases", CASES.len());
    let mut verdict = abi::report::Verdict::default();
    for (name, case) in CASES {
        let r = case();
        verdict.record(r.is_ok());
        match r {
            Ok(()) => println!("ktest {name} ... ok"),
            Err(why) => println!("ktest {name} ... FAILED: {why}"),
        }
    }
    println!("{verdict}");
    qemu::exit(verdict.success())
}

fn check(cond: bool, why: &'static str) -> Result<(), &'static str> {
    if cond {
        Ok(())
    } else {
        Err(why)
    }
}

fn deliberate_ap_panic() -> ! {
    if crate::smp::online() < 2 {
        println!("ktest: ap-panic needs at least 2 CPUs");
        qemu::exit(false)
    }
    println!("ktest: making CPU 1 panic on purpose");
    crate::arch::testhooks::PANIC_ON_PING.store(true, Ordering::SeqCst);
    let _ = crate::smp::ping(CpuId::from_index(1));
    // The panic on CPU 1 stops this CPU with an NMI; reaching here means not.
    crate::arch::apic::delay_us(500_000);
    println!("ktest: CPU 1 did not panic");
    qemu::exit(false)
}

fn deliberate_page_fault() -> ! {
    println!("ktest: reading unmapped address 0x10000000 on purpose");
    // SAFETY: deliberately invalid: the read must fault and the fault handler
    // must print a diagnosis and stop the machine.
    let v = unsafe { core::ptr::read_volatile(0x1000_0000 as *const u64) };
    println!("ktest: read 0x{v:x} from an unmapped address: the fault was missed");
    qemu::exit(false)
}

#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let pad = [depth; 64];
    core::hint::black_box(&pad);
    recurse(depth + 1) + pad[0]
}

extern "C" fn overflow_on_stack(_: u64) -> ! {
    let r = recurse(0);
    println!("ktest: recursion returned {r}: the guard page was missed");
    qemu::exit(false)
}

fn deliberate_stack_overflow() -> ! {
    println!("ktest: overflowing a guarded kernel stack on purpose");
    let stack = match KernelStack::new() {
        Ok(s) => s,
        Err(e) => {
            println!("ktest: {e}");
            qemu::exit(false)
        }
    };
    let top = stack.top();
    core::mem::forget(stack);
    // SAFETY: switches to a fresh, mapped kernel stack and calls a function that
    // never returns; the old stack is abandoned on purpose.
    unsafe {
        core::arch::asm!(
            "mov rsp, {top}",   // rsp: the new stack's top
            "xor ebp, ebp",     // rbp: end of the frame chain
            "call {f}",         // never returns
            top = in(reg) top,
            f = sym overflow_on_stack,
            in("rdi") 0,
            options(noreturn)
        )
    }
}
