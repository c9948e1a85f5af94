//! In-kernel tests, run when the command line says `ktest` (all cases) or
//! `ktest=<name>` for a deliberate-crash case. The run starts with
//! `ktest: <N> cases`, each case prints one line, and the run ends with
//! `<N> passed, <M> failed` and exits QEMU with the verdict (scripts/smoke.sh
//! checks both counts against its committed `KTEST_CASES`).
//!
//! The crash cases (`ktest=fault`, `ktest=stack-overflow`) never return: they
//! prove that the diagnosis path works, and the smoke test reads it.

use crate::arch::percpu::CpuId;
use crate::arch::{probe, qemu};
use crate::bootinfo::BootInfo;
use crate::mem::{self, kstack::KernelStack, layout};
use crate::println;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use kcore::paging::{PageSize, PteFlags};

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
    ("kernel_text_is_not_writable", kernel_text_is_not_writable),
    (
        "kernel_rodata_is_not_writable",
        kernel_rodata_is_not_writable,
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

fn frames_are_distinct_and_hold_data() -> Result<(), &'static str> {
    let before = mem::free_frames();
    let mut frames = Vec::new();
    for i in 0..512u64 {
        let f = mem::alloc_frame().map_err(|_| "allocation failed")?;
        // SAFETY: the frame is ours until freed below; the direct map covers it.
        unsafe { *(mem::phys_to_virt(f.addr()) as *mut u64) = i ^ 0x5a5a_5a5a };
        frames.push(f);
    }
    let mut addrs: Vec<u64> = frames.iter().map(|f| f.addr()).collect();
    addrs.sort_unstable();
    addrs.dedup();
    check(addrs.len() == frames.len(), "a frame was handed out twice")?;
    for (i, f) in frames.iter().enumerate() {
        // SAFETY: as above.
        let v = unsafe { *(mem::phys_to_virt(f.addr()) as *const u64) };
        check(v == i as u64 ^ 0x5a5a_5a5a, "frame contents changed")?;
    }
    check(mem::free_frames() == before - 512, "free count is off")?;
    for f in frames {
        mem::free_frame(f).map_err(|_| "free failed")?;
    }
    check(mem::free_frames() == before, "free count not restored")
}

fn double_free_is_refused() -> Result<(), &'static str> {
    let f = mem::alloc_frame().map_err(|_| "allocation failed")?;
    mem::free_frame(f).map_err(|_| "first free failed")?;
    check(mem::free_frame(f).is_err(), "second free accepted")
}

fn heap_serves_small_and_large_blocks() -> Result<(), &'static str> {
    let v: Vec<u64> = (0..10_000).collect();
    check(v.iter().sum::<u64>() == 49_995_000, "vector contents wrong")?;
    let big = alloc::vec![0xa5u8; 1 << 20].into_boxed_slice();
    check(big.iter().all(|&b| b == 0xa5), "large block contents wrong")?;
    let boxes: Vec<Box<u32>> = (0..1000).map(Box::new).collect();
    check(
        boxes.iter().enumerate().all(|(i, b)| **b == i as u32),
        "boxes wrong",
    )?;
    drop((v, big, boxes));
    let (used, _) = mem::heap::stats();
    check(used < 1 << 20, "heap memory not returned")
}

/// A kernel virtual address no mapping uses (PML4 entry 508).
const TEST_VA: u64 = 0xffff_fe00_0000_0000;

fn map_write_translate_unmap() -> Result<(), &'static str> {
    let f = mem::alloc_zeroed_frame().map_err(|_| "allocation failed")?;
    let flags = PteFlags::WRITABLE | mem::nx_flag();
    mem::with_kernel_pt(|pt, m| pt.map(m, TEST_VA, f.addr(), PageSize::Size4K, flags))
        .map_err(|_| "map failed")?;
    // SAFETY: TEST_VA was just mapped to a frame only this test uses.
    unsafe { *((TEST_VA + 8) as *mut u64) = 0xfeed_f00d };
    // SAFETY: the same frame through the direct map.
    let via_direct = unsafe { *((mem::phys_to_virt(f.addr()) + 8) as *const u64) };
    check(
        via_direct == 0xfeed_f00d,
        "write not visible through the direct map",
    )?;
    let t = mem::with_kernel_pt(|pt, m| pt.translate(m, TEST_VA + 8));
    check(
        t.map(|(pa, _, _)| pa) == Some(f.addr() + 8),
        "translate is wrong",
    )?;
    let (pa, _) = mem::with_kernel_pt(|pt, m| pt.unmap(m, TEST_VA)).map_err(|_| "unmap failed")?;
    mem::flush_local(TEST_VA);
    check(pa == f.addr(), "unmap returned another frame")?;
    check(
        probe::read_u64(TEST_VA).is_none(),
        "unmapped page still readable",
    )?;
    mem::free_frame(f).map_err(|_| "free failed")
}

fn kernel_text_is_not_writable() -> Result<(), &'static str> {
    let target = kernel_text_is_not_writable as *const () as u64;
    // SAFETY: the write faults (text is read-only) — which is what is tested;
    // if it did not, the byte written is the one already there.
    let wrote = unsafe { probe::write_u8(target, *(target as *const u8)) };
    check(!wrote, "wrote to kernel text")
}

static RODATA_BYTE: u8 = 0x42;

fn kernel_rodata_is_not_writable() -> Result<(), &'static str> {
    let target = core::ptr::addr_of!(RODATA_BYTE) as u64;
    // SAFETY: expected to fault; otherwise rewrites the same value.
    let wrote = unsafe { probe::write_u8(target, 0x42) };
    check(!wrote, "wrote to kernel rodata")
}

/// A `ret` instruction placed in writable data.
static mut DATA_RET: [u8; 1] = [0xc3];

fn kernel_data_is_not_executable() -> Result<(), &'static str> {
    let target = core::ptr::addr_of!(DATA_RET) as u64;
    // SAFETY: the target is a `ret`; executing it (if NX failed) just returns.
    let ran = unsafe { probe::exec(target) };
    check(!ran, "executed kernel data")
}

fn kernel_stack_is_not_executable() -> Result<(), &'static str> {
    let code = [0xc3u8; 16];
    let target = code.as_ptr() as u64;
    // SAFETY: as above: the bytes are `ret`s.
    let ran = unsafe { probe::exec(target) };
    core::hint::black_box(&code);
    check(!ran, "executed the kernel stack")
}

core::arch::global_asm!(
    ".section .text.ktest, \"ax\"",
    ".global ktest_text_ret",
    "ktest_text_ret: ret", // a `ret` in kernel text
);

extern "C" {
    fn ktest_text_ret();
}

fn kernel_text_is_executable() -> Result<(), &'static str> {
    // SAFETY: the target is a bare `ret` in kernel text.
    let ran = unsafe { probe::exec(ktest_text_ret as *const () as u64) };
    check(ran, "kernel text did not execute")
}

fn boot_identity_map_is_gone() -> Result<(), &'static str> {
    // The boot stub identity-mapped 0..1 GiB; the kernel image sits at 1 MiB.
    check(
        probe::read_u64(0x10_0000).is_none(),
        "low identity map still present",
    )
}

fn kernel_stack_has_guard_page() -> Result<(), &'static str> {
    let stack = KernelStack::new()?;
    check(
        probe::read_u64(stack.bottom()).is_some(),
        "stack bottom unmapped",
    )?;
    check(
        probe::read_u64(stack.top() - 8).is_some(),
        "stack top unmapped",
    )?;
    check(
        probe::read_u64(stack.bottom() - 8).is_none(),
        "guard page is mapped",
    )?;
    check(
        stack.top() - stack.bottom() == layout::KSTACK_BYTES,
        "stack size wrong",
    )
}

fn percpu_fields_agree_on_every_cpu() -> Result<(), &'static str> {
    crate::arch::percpu::selfcheck();
    for pc in crate::arch::percpu::online_cpus() {
        check(
            crate::arch::percpu::selfcheck_ok(pc.id()),
            "a CPU's gs: view disagrees with its PerCpu",
        )?;
    }
    Ok(())
}

fn every_ap_answers_ipis() -> Result<(), &'static str> {
    for cpu in 1..crate::smp::online() {
        for _ in 0..10 {
            crate::smp::ping(CpuId::from_index(cpu)).ok_or("an AP did not answer a ping IPI")?;
        }
    }
    Ok(())
}

/// Routes the UART's IRQ 4 to the last CPU, makes the UART raise it (transmitter
/// empty), and checks it arrived there.
fn isa_irq4_reaches_the_chosen_cpu() -> Result<(), &'static str> {
    use x86_64::instructions::port::Port;
    let target = crate::smp::online() - 1;
    let (before, _) = crate::arch::ioapic::hits(4);
    let dest = crate::arch::percpu::slot(CpuId::from_index(target))
        .apic_id()
        .ok_or("the target CPU has no APIC id")?;
    crate::arch::ioapic::route_isa_irq(4, dest)?;
    let mut ier = Port::<u8>::new(0x3f9);
    // SAFETY: enabling only the UART's transmitter-empty interrupt; the kernel's
    // polled output is unaffected, and it is switched off again below.
    unsafe { ier.write(0x02) };
    crate::arch::cpu::enable_interrupts();
    let deadline = crate::arch::cpu::rdtsc() + 200 * crate::arch::apic::tsc_per_ms();
    while crate::arch::ioapic::hits(4).0 == before && crate::arch::cpu::rdtsc() < deadline {
        core::hint::spin_loop();
    }
    crate::arch::cpu::disable_interrupts();
    // SAFETY: UART interrupts off again.
    unsafe { ier.write(0x00) };
    crate::arch::ioapic::mask_isa_irq(4);
    let (after, cpu) = crate::arch::ioapic::hits(4);
    check(after > before, "IRQ 4 never arrived")?;
    check(cpu as usize == target, "IRQ 4 arrived on another CPU")
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

fn cpu_state_is_explicit_on_every_cpu() -> Result<(), &'static str> {
    use crate::arch::cpustate;
    // The boot CPU checks again now, after everything that ran since its
    // bring-up (paging, APIC, scheduler); the APs' verdicts are from the end
    // of their bring-up.
    let f = crate::arch::cpu::Features::detect();
    cpustate::record_check(&f, crate::arch::percpu::cpu_id().get());
    for cpu in 0..crate::smp::online() {
        if let Err(field) = cpustate::verdict(cpu) {
            println!("  note: CPU {cpu}: {field}");
            return Err("a CPU's state differs from the intended value");
        }
    }
    Ok(())
}

/// An AP must match the boot CPU in every feature the kernel decides once for
/// all CPUs: the FPU save format and area size (XSAVE, XSAVEOPT, AVX), the
/// page-table format (NX, 1 GiB pages in the direct map), the APIC and timer
/// modes, and
/// the protections (SMEP, SMAP, UMIP), which must not silently be weaker on
/// one CPU. QEMU gives every vCPU the same model, so the decision is tested
/// directly on synthetic feature sets.
fn ap_features_must_match_the_boot_cpu() -> Result<(), &'static str> {
    use crate::arch::cpu::Features;
    use crate::arch::cpustate::ap_mismatch;
    let all = Features {
        nx: true,
        page_1g: true,
        pge: true,
        smep: true,
        smap: true,
        umip: true,
        xsave: true,
        xsaveopt: true,
        avx: true,
        x2apic: true,
        tsc_deadline: true,
        pcid: true,
        mce: true,
        de: true,
        pat: true,
        rdtscp: true,
        rdpid: true,
    };
    check(ap_mismatch(&all, &all).is_none(), "identical CPUs refused")?;
    type Clear = fn(&mut Features);
    let must: [(&str, Clear); 10] = [
        ("NX", |f| f.nx = false),
        ("1 GiB pages", |f| f.page_1g = false),
        ("XSAVE", |f| f.xsave = false),
        ("XSAVEOPT", |f| f.xsaveopt = false),
        ("AVX", |f| f.avx = false),
        ("x2APIC", |f| f.x2apic = false),
        ("TSC-deadline timer", |f| f.tsc_deadline = false),
        ("SMEP", |f| f.smep = false),
        ("SMAP", |f| f.smap = false),
        ("UMIP", |f| f.umip = false),
    ];
    for (name, clear) in must {
        let mut less = all;
        clear(&mut less);
        // In both directions: an AP without it, and an AP with it when the
        // boot CPU (which decided for all) has none.
        if ap_mismatch(&all, &less).is_none() || ap_mismatch(&less, &all).is_none() {
            println!("  note: an AP differing in {name} was accepted");
            return Err("an AP whose features differ from the boot CPU's was accepted");
        }
    }
    // Per-CPU features the kernel decides on each CPU may differ.
    let mut ap = all;
    ap.rdtscp = false;
    ap.rdpid = false;
    ap.pat = false;
    check(
        ap_mismatch(&all, &ap).is_none(),
        "a per-CPU feature difference was refused",
    )
}

/// `debug_write` prints up to 4 KiB from a syscall, which runs with
/// interrupts off: about 350 ms on a real 115200-baud UART. The serial lock
/// is taken per line, and between lines the printing must be a preemption
/// point (issue 7 item 13), or one `debug_write` keeps interrupts off on its
/// CPU for the whole write. A self-IPI made pending before the call must have
/// been taken when it returns.
fn user_write_takes_interrupts_between_lines() -> Result<(), &'static str> {
    use crate::arch::{apic, cpu};
    let were_enabled = cpu::interrupts_enabled();
    cpu::disable_interrupts();
    let before = crate::smp::pings();
    apic::send_ipi(apic::PING_VECTOR, apic::local_id());
    apic::delay_us(1000); // delivered to this CPU and pending (IF is off)
    let held = crate::smp::pings() == before;
    crate::syscall::print_user(0, b"ktest: probe line 1 of 2\nktest: probe line 2 of 2\n");
    let taken = crate::smp::pings() != before;
    cpu::enable_interrupts(); // take it now, whatever happened
    apic::delay_us(1000);
    if !were_enabled {
        cpu::disable_interrupts();
    }
    check(held, "the self-IPI was taken with interrupts off")?;
    check(
        taken,
        "user_write kept interrupts off across its lines (no preemption point)",
    )
}

/// A self-NMI in kernel mode is counted and returns (it used to be fatal
/// whenever the machine was not stopping).
fn kernel_mode_nmi_returns() -> Result<(), &'static str> {
    use crate::arch::{apic, cpu, trap};
    let before = trap::NMIS.load(Ordering::SeqCst);
    apic::send_nmi(apic::local_id());
    let deadline = cpu::rdtsc() + 100 * apic::tsc_per_ms();
    while trap::NMIS.load(Ordering::SeqCst) == before && cpu::rdtsc() < deadline {
        core::hint::spin_loop();
    }
    check(
        trap::NMIS.load(Ordering::SeqCst) > before,
        "the self-NMI never arrived",
    )
}

fn kernel_db_at_syscall_entry_is_ignored() -> Result<(), &'static str> {
    use crate::arch::cpustate::DR6_CLEAR;
    use crate::arch::gdt::{KERNEL_CS, USER_CS};
    use crate::arch::trap::{kernel_debug, DebugVerdict, TrapFrame, DR6_BS};
    const TF: u64 = 1 << 8;
    let (entry, live) = crate::arch::syscall::entry_before_stack_switch();
    let frame = |rip: u64, cs: u16| TrapFrame {
        rip,
        cs: cs as u64,
        rflags: 0x2 | TF,
        ..TrapFrame::default()
    };
    // The held single-step trap: first instruction of the stub, only BS.
    let mut f = frame(entry, KERNEL_CS);
    check(
        kernel_debug(&mut f, DR6_CLEAR | DR6_BS) == DebugVerdict::Ignore,
        "a single step at syscall_entry was judged fatal",
    )?;
    check(f.rflags & TF == 0, "TF was left set in the ignored frame")?;
    let mut f = frame(live - 1, KERNEL_CS);
    check(
        kernel_debug(&mut f, DR6_CLEAR | DR6_BS) == DebugVerdict::Ignore,
        "a single step before the stack switch was judged fatal",
    )?;
    // Everything else stays fatal.
    let fatal: [(u64, u16, u64, &str); 5] = [
        (
            live,
            KERNEL_CS,
            DR6_BS,
            "a single step after the stack switch",
        ),
        (
            kernel_db_at_syscall_entry_is_ignored as *const () as u64,
            KERNEL_CS,
            DR6_BS,
            "a single step elsewhere in the kernel",
        ),
        (
            entry,
            KERNEL_CS,
            0x1,
            "a breakpoint hit (B0) at syscall_entry",
        ),
        (entry, KERNEL_CS, DR6_BS | 0x2, "a single step plus B1"),
        (entry, USER_CS, DR6_BS, "a frame that claims ring 3"),
    ];
    for (rip, cs, dr6, what) in fatal {
        let mut f = frame(rip, cs);
        if kernel_debug(&mut f, DR6_CLEAR | dr6) != DebugVerdict::Fatal {
            println!("  note: {what} was ignored");
            return Err("a kernel #DB that must be fatal was ignored");
        }
    }
    // The same case through the handler the #DB entry calls, with DR6 as the
    // CPU leaves it: a handler that did not consult `kernel_debug` (or read
    // DR6 wrongly) stops the machine here instead of returning.
    let mut f = frame(entry, KERNEL_CS);
    f.vector = 1;
    // SAFETY: DR6 is a status register; BS only changes what the next #DB
    // handler reads, and the handler called below resets it.
    unsafe {
        core::arch::asm!("mov dr6, {}", in(reg) DR6_CLEAR | DR6_BS, options(nostack, nomem, preserves_flags))
    };
    crate::interrupt::trap_dispatch(&mut f);
    let dr6: u64;
    // SAFETY: reading DR6 has no effect.
    unsafe {
        core::arch::asm!("mov {}, dr6", out(reg) dr6, options(nostack, nomem, preserves_flags))
    };
    check(f.rflags & TF == 0, "the #DB handler left TF set")?;
    check(dr6 == DR6_CLEAR, "the #DB handler did not reset DR6")
}

fn sysret_refuses_non_canonical_rip() -> Result<(), &'static str> {
    use crate::arch::gdt::USER_CS;
    use crate::arch::syscall::{check_return, ReturnCheck};
    use crate::arch::trap::{TrapFrame, SYSCALL_VECTOR};
    use abi::layout::USER_END;
    let frame = |rip: u64| TrapFrame {
        rip,
        rcx: rip,
        cs: USER_CS as u64,
        vector: SYSCALL_VECTOR,
        ..TrapFrame::default()
    };
    // USER_END: the return RIP of a `syscall` ending the last user page.
    for rip in [
        USER_END,
        USER_END + 1,
        0xffff_7fff_ffff_ffff,
        0xffff_8000_0000_0000,
        u64::MAX,
    ] {
        let mut f = frame(rip);
        if check_return(&mut f) != ReturnCheck::Fault {
            println!("  note: return RIP 0x{rip:x} was let through to sysretq");
            return Err("a non-canonical or kernel return RIP was not faulted");
        }
        check(
            f.vector == 13 && f.error_code == 0,
            "the faulted frame does not say #GP",
        )?;
    }
    for rip in [USER_END - 1, 0x40_0000] {
        let mut f = frame(rip);
        check(
            check_return(&mut f) == ReturnCheck::Resume && f.vector == SYSCALL_VECTOR,
            "a canonical user return RIP was faulted",
        )?;
    }
    // The same through the real dispatcher, which the entry stub calls: a
    // guard that exists but is not on the return path protects nothing (and
    // the ring-3 case cannot tell: TCG's SYSRET faults AMD-style). Numbers
    // answered in the table, through a handler, and out of range.
    for nr in [
        abi::Sysnum::Null as u64,
        abi::Sysnum::ThreadId as u64,
        abi::Sysnum::ClockNs as u64,
        u64::MAX,
    ] {
        for (rip, want) in [
            (USER_END, ReturnCheck::Fault),
            (USER_END - 2, ReturnCheck::Resume),
        ] {
            let mut f = frame(rip);
            f.rax = nr;
            let got = crate::syscall::dispatch(&mut f);
            if got != want || (want == ReturnCheck::Fault && f.vector != 13) {
                println!("  note: syscall {nr} returning to 0x{rip:x}: {got:?}");
                return Err("the syscall return path does not fault a non-canonical RIP");
            }
        }
    }
    Ok(())
}

/// Saved RSP of the ktest's context while the probe context runs.
static SWITCH_MAIN_RSP: AtomicU64 = AtomicU64::new(0);
/// Saved RSP of the probe context while the ktest runs.
static SWITCH_OTHER_RSP: AtomicU64 = AtomicU64::new(0);
/// What the probe context saw in rbx, rbp, r12-r15 when resumed.
static SWITCH_OTHER_SEEN: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];

/// The ktest side's sentinels (rbx, rbp, r12, r13, r14, r15).
const SENTINELS_MAIN: [u64; 6] = [
    0x5ca1_ab1e_0000_00b1,
    0x5ca1_ab1e_0000_00b2,
    0x5ca1_ab1e_0000_0012,
    0x5ca1_ab1e_0000_0013,
    0x5ca1_ab1e_0000_0014,
    0x5ca1_ab1e_0000_0015,
];
/// The probe side's sentinels.
const SENTINELS_OTHER: [u64; 6] = [
    0x0dd_ba11_0000_00b1,
    0x0dd_ba11_0000_00b2,
    0x0dd_ba11_0000_0012,
    0x0dd_ba11_0000_0013,
    0x0dd_ba11_0000_0014,
    0x0dd_ba11_0000_0015,
];

core::arch::global_asm!(
    r#"
    .section .text.ktest, "ax"
    // ktest_switch_there_and_back(rdi = &main saved RSP, rsi = probe's RSP,
    // rdx = *mut [u64; 6]): holds SENTINELS_MAIN in the six callee-saved
    // registers across switch_context to the probe and back, then stores
    // what they hold afterwards.
    .global ktest_switch_there_and_back
ktest_switch_there_and_back:
    push rbx                                // the caller's callee-saved registers
    push rbp
    push r12
    push r13
    push r14
    push r15
    push rdx                                // rdx: result pointer (caller-saved)
    movabs rbx, {m0}
    movabs rbp, {m1}
    movabs r12, {m2}
    movabs r13, {m3}
    movabs r14, {m4}
    movabs r15, {m5}
    call switch_context                     // to the probe; back when it switches
    pop rdx
    mov [rdx], rbx                          // what survived the round trip
    mov [rdx + 8], rbp
    mov [rdx + 16], r12
    mov [rdx + 24], r13
    mov [rdx + 32], r14
    mov [rdx + 40], r15
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret

    // The probe context (first entered by switch_context's `ret` on a fresh
    // stack): loads SENTINELS_OTHER, switches back, and when resumed records
    // what its registers hold, then switches back for good.
    .global ktest_switch_probe
ktest_switch_probe:
    movabs rbx, {o0}
    movabs rbp, {o1}
    movabs r12, {o2}
    movabs r13, {o3}
    movabs r14, {o4}
    movabs r15, {o5}
    lea rdi, [rip + {other}]                // rdi: where the probe's RSP is saved
    mov rsi, [rip + {main}]                 // rsi: the ktest's saved RSP
    call switch_context
    lea rax, [rip + {seen}]                 // rax: SWITCH_OTHER_SEEN
    mov [rax], rbx
    mov [rax + 8], rbp
    mov [rax + 16], r12
    mov [rax + 24], r13
    mov [rax + 32], r14
    mov [rax + 40], r15
    lea rdi, [rip + {other}]
    mov rsi, [rip + {main}]
    call switch_context                     // never resumed
    ud2
    "#,
    m0 = const SENTINELS_MAIN[0],
    m1 = const SENTINELS_MAIN[1],
    m2 = const SENTINELS_MAIN[2],
    m3 = const SENTINELS_MAIN[3],
    m4 = const SENTINELS_MAIN[4],
    m5 = const SENTINELS_MAIN[5],
    o0 = const SENTINELS_OTHER[0],
    o1 = const SENTINELS_OTHER[1],
    o2 = const SENTINELS_OTHER[2],
    o3 = const SENTINELS_OTHER[3],
    o4 = const SENTINELS_OTHER[4],
    o5 = const SENTINELS_OTHER[5],
    other = sym SWITCH_OTHER_RSP,
    main = sym SWITCH_MAIN_RSP,
    seen = sym SWITCH_OTHER_SEEN,
);

extern "C" {
    fn ktest_switch_there_and_back(main_rsp: *mut u64, other_rsp: u64, out: *mut [u64; 6]);
    fn ktest_switch_probe();
}

/// Two kernel contexts, each holding its own sentinels in rbx, rbp and
/// r12-r15, switch to each other twice through `switch_context`; each must
/// find all six as it left them (its caller in the scheduler saves them
/// itself today, so only this catches a missing restore).
fn switch_context_restores_callee_saved() -> Result<(), &'static str> {
    let stack = KernelStack::new()?;
    // The probe's first switch pops r15..rbp, RFLAGS (IF off) and returns
    // into ktest_switch_probe with RSP = top - 8, as if called.
    let words: [u64; 8] = [
        0,
        0,
        0,
        0,
        0,
        0,
        0x2,
        ktest_switch_probe as *const () as u64,
    ];
    let base = stack.top() - 8 - 8 * words.len() as u64;
    // SAFETY: the stack is mapped, ours and unused; the words fit in its top.
    unsafe { core::ptr::copy_nonoverlapping(words.as_ptr(), base as *mut u64, words.len()) };
    SWITCH_OTHER_RSP.store(base, Ordering::SeqCst);
    let was_on = crate::arch::cpu::interrupts_enabled();
    crate::arch::cpu::disable_interrupts();
    let mut first = [0u64; 6];
    let mut second = [0u64; 6];
    // Sound because the probe runs on its own stack, touches only the statics
    // above, and always switches back here; interrupts are off, so no other
    // code runs on this CPU in between. The probe is never resumed after the
    // second call, and its stack is freed only then.
    // SAFETY: as explained just above.
    unsafe {
        ktest_switch_there_and_back(
            SWITCH_MAIN_RSP.as_ptr(),
            SWITCH_OTHER_RSP.load(Ordering::SeqCst),
            &mut first,
        );
        ktest_switch_there_and_back(
            SWITCH_MAIN_RSP.as_ptr(),
            SWITCH_OTHER_RSP.load(Ordering::SeqCst),
            &mut second,
        );
    }
    if was_on {
        crate::arch::cpu::enable_interrupts();
    }
    drop(stack);
    let seen: [u64; 6] = core::array::from_fn(|i| SWITCH_OTHER_SEEN[i].load(Ordering::SeqCst));
    const NAMES: [&str; 6] = ["rbx", "rbp", "r12", "r13", "r14", "r15"];
    for i in 0..6 {
        if first[i] != SENTINELS_MAIN[i] || second[i] != SENTINELS_MAIN[i] {
            println!("  note: {} came back as 0x{:x}", NAMES[i], first[i]);
            return Err("a callee-saved register was not restored for the switching side");
        }
        if seen[i] != SENTINELS_OTHER[i] {
            println!(
                "  note: {} came back as 0x{:x} in the probe",
                NAMES[i], seen[i]
            );
            return Err("a callee-saved register was not restored for the resumed side");
        }
    }
    Ok(())
}
