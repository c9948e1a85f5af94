//! The Rust side of every interrupt and exception: vector dispatch (the
//! timer, the IPIs, device IRQs) and the exception policy.
//!
//! A fault in kernel mode is either expected — an instruction listed in the
//! exception table (`.extable`: user-memory copies, probes) resumes at its fixup
//! — or a kernel bug, which prints a full diagnosis and stops the machine. A fault
//! in user mode is the user's problem and is handed to the lifecycle layer,
//! which ends the thread; the kernel keeps running.
//!
//! Three events are never the interrupted thread's fault and are decided
//! first: an NMI (counted and ignored, or "halt" while the machine stops on a
//! panic), a machine check (the machine stops), and a kernel-mode #DB, fatal
//! except for the single-step trap ring 3 can carry into `syscall_entry`
//! ([`kernel_debug`]). Every handler runs with RFLAGS.AC clear when SMAP is on
//! (checked on entry), and nothing that schedules runs on an IST stack.

use crate::arch::trap::{
    exception_name, extable_fixup, kernel_debug, take_dr6, DebugVerdict, TrapFrame,
    EXEC_PROBE_TARGET, NMIS, NMIS_FROM_USER, RFLAGS_AC,
};
use crate::arch::{apic, cpu, percpu, testhooks};
use core::sync::atomic::Ordering;

/// Handles an interrupt vector.
pub fn dispatch(frame: &mut TrapFrame) {
    let v = frame.vector as u8;
    match v {
        apic::TIMER_VECTOR => {
            // A quiescent state for `mem::retire` (interrupts were on).
            crate::mem::retire::tick();
            let is_tick = apic::rearm_tick();
            apic::eoi();
            crate::sched::tick(is_tick);
        }
        apic::RESCHED_VECTOR => {
            apic::eoi();
            crate::sched::schedule();
        }
        apic::TLB_VECTOR => {
            crate::arch::tlb::service_shootdown();
            apic::eoi();
        }
        apic::PING_VECTOR => {
            crate::smp::on_ping();
            apic::eoi();
        }
        v if (crate::arch::ioapic::IRQ_BASE..crate::arch::ioapic::IRQ_BASE + 16).contains(&v) => {
            let line = v - crate::arch::ioapic::IRQ_BASE;
            // hw (issue 11): a line bound to a notification is masked and
            // signalled; any other is counted and masked.
            if !crate::object::hw::irq_arrived(line, crate::ipc::slowpath::signal) {
                crate::arch::ioapic::unclaimed(line);
            }
            apic::eoi();
        }
        apic::SPURIOUS_VECTOR => {} // no EOI for spurious interrupts
        v if (crate::arch::pic::SPURIOUS_BASE..crate::arch::pic::SPURIOUS_BASE + 16)
            .contains(&v) =>
        {
            // A spurious IRQ from a masked 8259: never acknowledged to the APIC.
        }
        apic::ERROR_VECTOR => {
            log::warn!("local APIC error interrupt");
            apic::eoi();
        }
        _ => {
            log::warn!("unexpected interrupt vector {v} at RIP 0x{:x}", frame.rip);
            apic::eoi();
        }
    }
}

/// Called by every entry stub with the frame it built.
///
/// Order matters: NMI and #MC are decided before the "from user" test (an
/// NMI is never the interrupted thread's fault), and nothing reached from an
/// NMI schedules (the NMI runs on its IST stack with NMIs blocked until its
/// `iretq`). #DB and #MC from ring 3 arrive here on the thread's kernel stack
/// (see `idt.rs`), so ending the thread there is safe.
#[no_mangle]
pub extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    check_ac_clear(frame);
    let vector = frame.vector;
    if vector == 2 {
        return nmi(frame);
    }
    if vector == 18 {
        machine_check(frame);
    }
    if vector >= 32 {
        if vector == u64::from(apic::TIMER_VECTOR) {
            if let Some(n) = testhooks::nmi_storm_tick() {
                crate::println!("nmi.storm: {n} NMIs taken in ring 3 so far, no thread blamed");
            }
        }
        crate::trace::irq(vector, true);
        dispatch(frame);
        crate::trace::irq(vector, false);
        if frame.from_user() {
            crate::lifecycle::check_killed();
        }
        return;
    }
    if vector == 1 {
        let dr6 = take_dr6();
        if !frame.from_user() {
            match kernel_debug(frame, dr6) {
                DebugVerdict::Ignore => return,
                DebugVerdict::Fatal => kernel_fault(frame),
            }
        }
    }
    // A write to a present page (error code P|W) may be a copy-on-write
    // page, from ring 3 or from a kernel copy to user memory: resolved, the
    // access is retried.
    if vector == 14 && frame.error_code & 0b11 == 0b11 && resolve_cow_fault() {
        return;
    }
    if frame.from_user() {
        assert_on_thread_stack(frame);
        // #NM: a thread's first FPU instruction (fpu.rs, "First use").
        if vector == 7 && crate::arch::fpu::first_use(&crate::sched::current().fpu) {
            return;
        }
        crate::trace::fault(|| {
            (
                vector,
                crate::sched::current().tid.get(),
                frame.rip,
                frame.error_code,
            )
        });
        crate::lifecycle::user_fault(frame);
        return;
    }
    if vector == 14 || vector == 13 {
        if let Some(fixup) = extable_fixup(frame.rip) {
            frame.rip = fixup;
            return;
        }
    }
    if vector == 14 {
        let target = EXEC_PROBE_TARGET.load(Ordering::Relaxed);
        if target != 0 && frame.rip == target && cpu::cr2() == target {
            // probe_exec's `call` landed on a non-executable page: return to
            // its caller with rax = 1 as if the callee had returned.
            // SAFETY: the faulting `call` pushed its return address at RSP on
            // the current, mapped kernel stack.
            frame.rip = unsafe { *(frame.rsp as *const u64) };
            frame.rsp += 8;
            frame.rax = 1;
            return;
        }
    }
    kernel_fault(frame);
}

/// Resolves a write fault at CR2 in the current thread's space if it hit a
/// copy-on-write page (`AddressSpace::resolve_write_fault`); false for a real
/// fault (then handled as before) or when no frame was free for the copy.
fn resolve_cow_fault() -> bool {
    let addr = cpu::cr2();
    // Only user addresses, and only once threads run (a kernel-mode fault
    // during boot has no current thread).
    if addr >= abi::layout::USER_END
        || percpu::this_if_up().is_none()
        || percpu::current_thread() == 0
    {
        return false;
    }
    let t = crate::sched::current();
    // The space loaded here, which is not the thread's own while an IPC
    // delivery copies into another process (`space::with_loaded`).
    use crate::object::space::{resolve_loaded_write_fault, WriteFaultOutcome};
    resolve_loaded_write_fault(t.space.as_deref(), addr) == WriteFaultOutcome::Retry
}

/// Ending a thread schedules, which must never happen on an IST stack (the
/// stack belongs to the CPU, and the next NMI, #DB or #MC there would
/// overwrite the parked context). A frame from ring 3 always sits at the very
/// top of the thread's kernel stack: the CPU pushed it at TSS.RSP0, or the
/// paranoid entry moved it there. Checked before every user fault.
fn assert_on_thread_stack(frame: &TrapFrame) {
    let top = frame as *const TrapFrame as u64 + core::mem::size_of::<TrapFrame>() as u64;
    if top != percpu::this().kernel_rsp() {
        crate::panic::die(
            format_args!(
                "vector {} from ring 3 handled off the thread's kernel stack (frame top 0x{top:x})",
                frame.vector
            ),
            Some(frame),
        );
    }
}

/// With SMAP on, every handler must run with RFLAGS.AC clear (the entry stubs
/// `clac`); a handler entered with AC set would let the kernel touch user
/// memory unchecked. Checked on every entry: a `pushfq` is cheap next to the
/// interrupt itself, and the ring-3 case `ac_set_in_ring3_never_reaches_the_kernel`
/// relies on it to see a missing `clac`.
fn check_ac_clear(frame: &TrapFrame) {
    let rflags: u64;
    // SAFETY: reading RFLAGS through the stack has no other effect.
    unsafe {
        core::arch::asm!("pushfq", "pop {}", out(reg) rflags, options(nomem, preserves_flags))
    };
    if rflags & RFLAGS_AC != 0 && crate::arch::uaccess::smap_on() {
        crate::panic::die(
            format_args!(
                "RFLAGS.AC set in the handler of vector {} (entry without clac: SMAP is off)",
                frame.vector
            ),
            Some(frame),
        );
    }
}

/// An NMI. The kernel sends NMIs only to stop the machine (a panic, a
/// power-off); any
/// other (a watchdog, a hardware report, the `nmi.storm` test hook) is
/// counted and ignored, in either mode — never blamed on the interrupted
/// thread. Nothing here takes a lock (the NMI may have interrupted its
/// holder) or schedules.
fn nmi(frame: &TrapFrame) {
    if crate::panic::stopped_by_other() {
        // Another CPU panicked, or is powering off, and asked everyone to
        // stop. (On the CPU doing that, an NMI is counted and ignored like
        // any other: break21's `nmi.atstop` cases.)
        crate::panic::halt_stopped();
    }
    NMIS.fetch_add(1, Ordering::Relaxed);
    if frame.from_user() {
        NMIS_FROM_USER.fetch_add(1, Ordering::Relaxed);
    }
}

/// A machine check: the hardware reports an error it could not correct. The
/// kernel does not decode the MCA banks or isolate the damaged frame, so the
/// policy is to report and stop the machine, in either mode (continuing could
/// hand corrupted data to any process). Recorded in `docs/decisions.md`.
fn machine_check(frame: &TrapFrame) -> ! {
    // MCG_STATUS exists when CPUID reports MCA (leaf 1, EDX bit 14).
    let status = if cpu::cpuid(1, 0).edx & (1 << 14) != 0 {
        // SAFETY: the MSR exists (checked above); reading it has no effect.
        unsafe { cpu::rdmsr(cpu::msr::MCG_STATUS) }
    } else {
        0
    };
    crate::panic::die(
        format_args!(
            "EXCEPTION #MC machine check in {} mode: MCG_STATUS=0x{status:x} RIP=0x{:x} (policy: stop the machine)",
            if frame.from_user() { "user" } else { "kernel" },
            frame.rip
        ),
        Some(frame),
    )
}

/// Prints the diagnosis of an unexpected kernel-mode exception and stops.
fn kernel_fault(frame: &TrapFrame) -> ! {
    let (short, long) = exception_name(frame.vector);
    let cr2 = if frame.vector == 14 {
        crate::fmt::Cr2(Some(cpu::cr2()))
    } else {
        crate::fmt::Cr2(None)
    };
    let hint = if frame.vector == 8 {
        " (kernel stack overflow?)"
    } else {
        ""
    };
    crate::panic::die(format_args!(
        "EXCEPTION {short} {long}{hint} in kernel mode: error=0x{:x} RIP=0x{:x} CS=0x{:x} RFLAGS=0x{:x} RSP=0x{:x}{cr2}",
        frame.error_code, frame.rip, frame.cs, frame.rflags, frame.rsp
    ), Some(frame))
}
