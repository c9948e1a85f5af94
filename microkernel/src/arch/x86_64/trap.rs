//! The saved register state of an interrupted context ([`TrapFrame`]), the
//! exception names, the exception table (`.extable`: user-memory copies and
//! probes resume at their fixup), and the kernel-mode #DB rule
//! ([`kernel_debug`]). The dispatch policy that uses them — what ends a
//! thread, what stops the machine — is `crate::interrupt::trap_dispatch`.

use core::mem::offset_of;
use core::sync::atomic::AtomicU64;

/// Every general-purpose register plus the hardware interrupt frame, in the order
/// the entry stubs push them (lowest address first). Syscall entry builds the
/// same layout, so a thread's user state always has this shape at the top of its
/// kernel stack (a syscall frame's RCX, R11, vector, CS and SS slots hold
/// whatever they held before: `arch::syscall` says who needs them and
/// fills them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TrapFrame {
    pub rax: u64,
    pub rbx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    /// RCX and R11 last, side by side: the syscall stub leaves both
    /// slots unwritten with one `sub` (SYSCALL put the return RIP and
    /// RFLAGS in them, which `rip` and `rflags` hold; cut26s). Only an
    /// interrupt or exception frame (or the TF exit, which fills them)
    /// hands them back.
    pub rcx: u64,
    pub r11: u64,
    /// Vector number. The syscall entry does not write it (cut26s: no
    /// reader of a syscall frame looks at it); a syscall that faults the
    /// thread stores the fault's.
    pub vector: u64,
    /// The CPU's error code, or 0.
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Assembly that pushes the general registers in [`TrapFrame`] order (r11
/// first, rax last), completing a frame whose vector, error code and hardware
/// part are already on the stack. Shared by every entry stub but the
/// syscall stub, which pushes [`push_gprs_but_rcx_r11`] after one `sub`.
macro_rules! push_gprs {
    () => {
        concat!(
            "push r11\n push rcx\n",
            $crate::arch::trap::push_gprs_but_rcx_r11!()
        )
    };
}
pub(crate) use push_gprs;

/// [`push_gprs`] without its first two (R11 and RCX): r15 first, rax last.
macro_rules! push_gprs_but_rcx_r11 {
    () => {
        "push r15\n push r14\n push r13\n push r12\n push r10\n push r9\n push r8\n push rbp\n push rdi\n push rsi\n push rdx\n push rbx\n push rax\n"
    };
}
pub(crate) use push_gprs_but_rcx_r11;

/// Assembly that pops the general registers pushed by [`push_gprs`].
macro_rules! pop_gprs {
    () => {
        "pop rax\n pop rbx\n pop rdx\n pop rsi\n pop rdi\n pop rbp\n pop r8\n pop r9\n pop r10\n pop r12\n pop r13\n pop r14\n pop r15\n pop rcx\n pop r11\n"
    };
}
pub(crate) use pop_gprs;

/// A vector number no CPU event has (past 255): the ktests' synthetic
/// syscall frames carry it, to see `check_return` leave a resumable
/// frame's vector alone. The syscall entry writes no vector (cut26s).
pub const SYSCALL_VECTOR: u64 = 0x100;

// The asm stubs push in exactly this order; assert the layout they rely on.
const _: () = assert!(offset_of!(TrapFrame, rax) == 0);
const _: () = assert!(offset_of!(TrapFrame, r15) == 12 * 8);
const _: () = assert!(offset_of!(TrapFrame, rcx) == 13 * 8);
const _: () = assert!(offset_of!(TrapFrame, r11) == 14 * 8);
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

/// Where to resume after a fault at `rip`, if the exception table lists it.
pub fn extable_fixup(rip: u64) -> Option<u64> {
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
pub const RFLAGS_AC: u64 = 1 << 18;
/// DR6.BS: the #DB was a single-step trap.
pub const DR6_BS: u64 = 1 << 14;
/// DR6 bits that name a #DB's cause: B0-B3, BD, BS, BT.
const DR6_CAUSES: u64 = 0xf | (1 << 13) | DR6_BS | (1 << 15);

/// NMIs taken, and how many of them interrupted ring 3 (all CPUs).
pub static NMIS: AtomicU64 = AtomicU64::new(0);
/// NMIs taken while ring 3 was running.
pub static NMIS_FROM_USER: AtomicU64 = AtomicU64::new(0);

/// Reads DR6 and resets it: the CPU never clears it, so a stale cause would
/// confuse the next #DB.
pub fn take_dr6() -> u64 {
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
