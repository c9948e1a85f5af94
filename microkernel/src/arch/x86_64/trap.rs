//! The saved register state of an interrupted context ([`TrapFrame`]) and the
//! Rust side of every interrupt and exception.
//!
//! A fault in kernel mode is either expected — an instruction listed in the
//! exception table (`.extable`: user-memory copies, probes) resumes at its fixup
//! — or a kernel bug, which prints a full diagnosis and stops the machine. A fault
//! in user mode is the user's problem and is handed to the scheduler, which ends
//! the thread; the kernel keeps running.
//!
//! Three events are never the interrupted thread's fault and are decided
//! first: an NMI (counted and ignored, or "halt" while the machine stops on a
//! panic), a machine check (the machine stops), and a kernel-mode #DB, fatal
//! except for the single-step trap ring 3 can carry into `syscall_entry`
//! ([`kernel_debug`]). Every handler runs with RFLAGS.AC clear when SMAP is on
//! (checked on entry), and nothing that schedules runs on an IST stack.

use super::cpu;
use core::mem::offset_of;
use core::sync::atomic::{AtomicU64, Ordering};

/// Every general-purpose register plus the hardware interrupt frame, in the order
/// the entry stubs push them (lowest address first). Syscall entry builds the
/// same layout, so a thread's user state always has this shape at the top of its
/// kernel stack.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TrapFrame {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    /// Vector number (syscall entry stores [`SYSCALL_VECTOR`]).
    pub vector: u64,
    /// The CPU's error code, or 0.
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Assembly that pushes the general registers in [`TrapFrame`] order (r15
/// first, rax last), completing a frame whose vector, error code and hardware
/// part are already on the stack. Shared by every entry stub.
macro_rules! push_gprs {
    () => {
        "push r15\n push r14\n push r13\n push r12\n push r11\n push r10\n push r9\n push r8\n push rbp\n push rdi\n push rsi\n push rdx\n push rcx\n push rbx\n push rax\n"
    };
}
pub(crate) use push_gprs;

/// Assembly that pops the general registers pushed by [`push_gprs`].
macro_rules! pop_gprs {
    () => {
        "pop rax\n pop rbx\n pop rcx\n pop rdx\n pop rsi\n pop rdi\n pop rbp\n pop r8\n pop r9\n pop r10\n pop r11\n pop r12\n pop r13\n pop r14\n pop r15\n"
    };
}
pub(crate) use pop_gprs;

/// The pseudo vector number a syscall frame carries.
pub const SYSCALL_VECTOR: u64 = 0x100;

// The asm stubs push in exactly this order; assert the layout they rely on.
const _: () = assert!(offset_of!(TrapFrame, rax) == 0);
const _: () = assert!(offset_of!(TrapFrame, r15) == 14 * 8);
const _: () = assert!(offset_of!(TrapFrame, vector) == 15 * 8);
const _: () = assert!(offset_of!(TrapFrame, error_code) == 16 * 8);
const _: () = assert!(offset_of!(TrapFrame, rip) == 17 * 8);
const _: () = assert!(offset_of!(TrapFrame, cs) == 18 * 8);
const _: () = assert!(offset_of!(TrapFrame, ss) == 21 * 8);
const _: () = assert!(core::mem::size_of::<TrapFrame>() == 22 * 8);

impl TrapFrame {
    /// Whether the interrupted context was ring 3.
    #[allow(clippy::wrong_self_convention)] // "came from user mode", not a conversion
    pub fn from_user(&self) -> bool {
        self.cs & 3 == 3
    }
}

/// Short names of the architectural exceptions.
pub fn exception_name(vector: u64) -> (&'static str, &'static str) {
    match vector {
        0 => ("#DE", "divide error"),
        1 => ("#DB", "debug"),
        2 => ("NMI", "non-maskable interrupt"),
        3 => ("#BP", "breakpoint"),
        4 => ("#OF", "overflow"),
        5 => ("#BR", "bound range exceeded"),
        6 => ("#UD", "invalid opcode"),
        7 => ("#NM", "device not available"),
        8 => ("#DF", "double fault"),
        10 => ("#TS", "invalid TSS"),
        11 => ("#NP", "segment not present"),
        12 => ("#SS", "stack-segment fault"),
        13 => ("#GP", "general protection"),
        14 => ("#PF", "page fault"),
        16 => ("#MF", "x87 floating-point error"),
        17 => ("#AC", "alignment check"),
        18 => ("#MC", "machine check"),
        19 => ("#XM", "SIMD floating-point error"),
        20 => ("#VE", "virtualization exception"),
        21 => ("#CP", "control protection"),
        _ => ("#??", "reserved exception"),
    }
}

/// The address `probe_exec` is currently calling (0 = none).
pub static EXEC_PROBE_TARGET: AtomicU64 = AtomicU64::new(0);

extern "C" {
    static __extable_start: [ExtableEntry; 0];
    static __extable_end: [ExtableEntry; 0];
}

/// One exception-table entry: a faulting instruction and where to resume.
#[repr(C)]
struct ExtableEntry {
    insn: u64,
    fixup: u64,
}

fn extable_fixup(rip: u64) -> Option<u64> {
    // SAFETY: the linker script brackets the `.extable` section with these
    // symbols; the section holds only ExtableEntry records emitted by our asm.
    let table = unsafe {
        let start = core::ptr::addr_of!(__extable_start) as *const ExtableEntry;
        let end = core::ptr::addr_of!(__extable_end) as *const ExtableEntry;
        core::slice::from_raw_parts(start, end.offset_from(start) as usize)
    };
    table.iter().find(|e| e.insn == rip).map(|e| e.fixup)
}

/// RFLAGS.TF (single step).
const RFLAGS_TF: u64 = 1 << 8;
/// RFLAGS.AC (alignment check; with SMAP: user access allowed).
const RFLAGS_AC: u64 = 1 << 18;
/// DR6.BS: the #DB was a single-step trap.
pub const DR6_BS: u64 = 1 << 14;
/// DR6 bits that name a #DB's cause: B0-B3, BD, BS, BT.
const DR6_CAUSES: u64 = 0xf | (1 << 13) | DR6_BS | (1 << 15);

/// NMIs taken, and how many of them interrupted ring 3 (all CPUs).
pub static NMIS: AtomicU64 = AtomicU64::new(0);
/// NMIs taken while ring 3 was running.
pub static NMIS_FROM_USER: AtomicU64 = AtomicU64::new(0);

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
        if vector == u64::from(super::apic::TIMER_VECTOR) {
            crate::ktest::nmi_storm_tick();
        }
        crate::interrupt::dispatch(frame);
        if frame.from_user() {
            crate::sched::check_killed();
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
    if frame.from_user() {
        assert_on_thread_stack(frame);
        crate::sched::user_fault(frame);
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

/// Ending a thread schedules, which must never happen on an IST stack (the
/// stack belongs to the CPU, and the next NMI, #DB or #MC there would
/// overwrite the parked context). A frame from ring 3 always sits at the very
/// top of the thread's kernel stack: the CPU pushed it at TSS.RSP0, or the
/// paranoid entry moved it there. Checked before every user fault.
fn assert_on_thread_stack(frame: &TrapFrame) {
    let top = frame as *const TrapFrame as u64 + core::mem::size_of::<TrapFrame>() as u64;
    if top != super::percpu::this().kernel_rsp {
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
    if rflags & RFLAGS_AC != 0 && super::uaccess::smap_on() {
        crate::panic::die(
            format_args!(
                "RFLAGS.AC set in the handler of vector {} (entry without clac: SMAP is off)",
                frame.vector
            ),
            Some(frame),
        );
    }
}

/// An NMI. The kernel sends NMIs only to stop the machine on a panic; any
/// other (a watchdog, a hardware report, the `nmi.storm` test hook) is
/// counted and ignored, in either mode — never blamed on the interrupted
/// thread. Nothing here takes a lock (the NMI may have interrupted its
/// holder) or schedules.
fn nmi(frame: &TrapFrame) {
    if crate::panic::stopping() {
        // Another CPU panicked and asked everyone to stop.
        cpu::halt_forever();
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

/// Reads DR6 and resets it: the CPU never clears it, so a stale cause would
/// confuse the next #DB.
fn take_dr6() -> u64 {
    let dr6: u64;
    // SAFETY: DR6 is a status register; reading and resetting it affects only
    // what the next #DB reports.
    unsafe {
        core::arch::asm!(
            "mov {v}, dr6",         // v: this #DB's causes
            "mov dr6, {clear}",     // DR6 := no cause recorded
            v = out(reg) dr6,
            clear = in(reg) super::cpustate::DR6_CLEAR,
            options(nostack, nomem, preserves_flags)
        );
    }
    dr6
}

/// What to do with a #DB taken in kernel mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebugVerdict {
    /// A single-step trap carried in from ring 3: cleared and ignored.
    Ignore,
    /// Anything else: the kernel uses no breakpoints, so it is a bug.
    Fatal,
}

/// Decides a kernel-mode #DB with DR6 = `dr6` (clears TF in `frame` when it
/// is ignored).
///
/// The one harmless case: ring 3 sets TF and runs `mov ss, ...; syscall` (or
/// `pop ss`): the single-step trap of the `mov ss` is held across `syscall`
/// and delivered on the first instruction of `syscall_entry`, in ring 0, with
/// the user's RSP still loaded (CVE-2018-8897's cousin). SFMASK has already
/// cleared TF, so the trap fires once; Linux ignores it the same way. QEMU
/// does not deliver it, so `ktest kernel_db_at_syscall_entry_is_ignored`
/// calls this with synthetic frames. Any other kernel #DB (a different RIP,
/// or another cause in DR6) stays fatal.
pub fn kernel_debug(frame: &mut TrapFrame, dr6: u64) -> DebugVerdict {
    let (start, live) = super::syscall::entry_before_stack_switch();
    let in_entry = (start..live).contains(&frame.rip) && !frame.from_user();
    if in_entry && dr6 & DR6_CAUSES == DR6_BS {
        frame.rflags &= !RFLAGS_TF;
        DebugVerdict::Ignore
    } else {
        DebugVerdict::Fatal
    }
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
