//! ktests of the CPUs: per-CPU data, IPIs, IRQ routing, the explicit CPU
//! state, feature agreement, interrupts inside a long write, NMIs and #DB
//! in kernel mode, and the syscall return path.

use super::check;
use crate::arch::percpu::CpuId;
use crate::println;
use core::sync::atomic::Ordering;

pub(super) fn percpu_fields_agree_on_every_cpu() -> Result<(), &'static str> {
    crate::arch::percpu::selfcheck();
    for pc in crate::arch::percpu::online_cpus() {
        check(
            crate::arch::percpu::selfcheck_ok(pc.id()),
            "a CPU's gs: view disagrees with its PerCpu",
        )?;
    }
    Ok(())
}

pub(super) fn every_ap_answers_ipis() -> Result<(), &'static str> {
    for cpu in 1..crate::smp::online() {
        for _ in 0..10 {
            crate::smp::ping(CpuId::from_index(cpu)).ok_or("an AP did not answer a ping IPI")?;
        }
    }
    Ok(())
}

/// Routes the UART's IRQ 4 to the last CPU, makes the UART raise it (transmitter
/// empty), and checks it arrived there.
pub(super) fn isa_irq4_reaches_the_chosen_cpu() -> Result<(), &'static str> {
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

pub(super) fn cpu_state_is_explicit_on_every_cpu() -> Result<(), &'static str> {
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
pub(super) fn ap_features_must_match_the_boot_cpu() -> Result<(), &'static str> {
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
pub(super) fn user_write_takes_interrupts_between_lines() -> Result<(), &'static str> {
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
pub(super) fn kernel_mode_nmi_returns() -> Result<(), &'static str> {
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

pub(super) fn kernel_db_at_syscall_entry_is_ignored() -> Result<(), &'static str> {
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

/// Runs the stub's entry for `f`'s syscall number on `f` (`route_const`
/// for the numbers `sysret_refuses_non_canonical_rip` uses, and as
/// `syscall_unknown` for any other) with a `fault` that records: whether the return faulted.
fn entry_faults(f: &mut crate::arch::trap::TrapFrame) -> bool {
    use crate::syscall::route_const;
    use abi::Sysnum as S;
    const NULL: u64 = S::Null as u64;
    const THREAD_ID: u64 = S::ThreadId as u64;
    const CPU_COUNT: u64 = S::CpuCount as u64;
    const CLOCK_NS: u64 = S::ClockNs as u64;
    let mut faulted = false;
    let record = |f: &mut crate::arch::trap::TrapFrame| faulted = f.vector == 13;
    // SAFETY: a frame of our own, no other reference to it; each constant
    // is the frame's number, and none is a fast IPC one.
    unsafe {
        match f.rax {
            NULL => route_const::<NULL, _>(f, record),
            THREAD_ID => route_const::<THREAD_ID, _>(f, record),
            CPU_COUNT => route_const::<CPU_COUNT, _>(f, record),
            CLOCK_NS => route_const::<CLOCK_NS, _>(f, record),
            _ => route_const::<{ S::END }, _>(f, record),
        }
    }
    faulted
}

pub(super) fn sysret_refuses_non_canonical_rip() -> Result<(), &'static str> {
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
    // The same through the entry's own paths (the body of the stub's
    // table entries and of `syscall_unknown`, `route_const`, each with a `fault` that records instead of ending this
    // thread): a guard that exists but is not on the return path protects
    // nothing (and the ring-3 case cannot tell: TCG's SYSRET faults
    // AMD-style). Numbers answered in the table (every one), through a
    // handler, and out of range.
    for nr in [
        abi::Sysnum::Null as u64,
        abi::Sysnum::ThreadId as u64,
        abi::Sysnum::CpuCount as u64,
        abi::Sysnum::ClockNs as u64,
        u64::MAX,
    ] {
        for (rip, want) in [(USER_END, true), (USER_END - 2, false)] {
            let mut f = frame(rip);
            f.rax = nr;
            let faulted = entry_faults(&mut f);
            if faulted != want {
                println!("  note: syscall {nr} returning to 0x{rip:x}: faulted {faulted}");
                return Err("the syscall return path does not fault a non-canonical RIP");
            }
        }
    }
    Ok(())
}
