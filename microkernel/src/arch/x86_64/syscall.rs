//! The `syscall`/`sysret` path: MSR setup and the entry stub.
//!
//! # Entry contract (what `syscall` leaves us)
//! RCX = user RIP, R11 = user RFLAGS, RSP = user stack (untrusted), CS/SS =
//! kernel selectors from STAR, RFLAGS masked by SFMASK (IF, DF, TF, AC, NT
//! cleared), GS = the user's. RAX = syscall number, arguments in RDI, RSI, RDX,
//! R10, R8, R9 ([`abi`]).
//!
//! The stub switches to the thread's kernel stack through `gs:`, builds a
//! [`TrapFrame`] (the same shape interrupts build, at the same place: the top of
//! the kernel stack; its RCX and R11 slots left unwritten, as SYSCALL
//! clobbered both: `rip` and `rflags` hold what they got, and the TF exit,
//! the one exit that pops them, fills them first, as it fills CS and SS,
//! unwritten too, which SYSRET takes from STAR; its vector too, which no
//! reader of a syscall frame needs), and calls the number's entry in
//! [`crate::syscall::SYSCALL_TABLE`] (a number past the known ones is
//! clamped, without a branch, to the table's last entry,
//! `crate::syscall::syscall_unknown`), which puts the result in
//! the frame's RAX and guarantees the return RIP is canonical
//! (SYSRET to a non-canonical RCX faults in ring 0 on the user stack on Intel
//! CPUs: CVE-2012-0217). The stub then sanitises the saved RFLAGS — only the
//! flags user code may set survive, IF is forced on, IOPL to 0 — and returns
//! with `sysretq`, or through the full `iretq` path shared with interrupts when
//! TF is set (single-stepping must resume exactly as the CPU defines).
//!
//! Before that, one `test` of the current thread's work word
//! ([`super::percpu::work`], Linux's TIF work mask) sends a thread with deferred
//! work — a kill above all — to `crate::syscall::syscall_return_work` (with the
//! frame: a killed thread whose spawn succeeded releases what it created, the
//! frame's `error_code` slot holding the syscall number) and from there to
//! `crate::lifecycle::return_to_user_work`; a thread
//! of a dying process therefore never runs user code again, whether it was
//! in a syscall, parked by `yield`, or blocked when the kill came.
//!
//! # Exit contract
//! Every register except RAX (result), RCX and R11 holds the value it had at
//! entry (or the value the kernel deliberately set in the frame).

use super::cpu::{self, msr};
use super::gdt::{KERNEL_CS, USER_DS};
use super::percpu::{OFF_KERNEL_RSP, OFF_SYSCALLS, OFF_USER_RSP};
use super::trap::{push_gprs_but_rcx_r11, TrapFrame};
use core::arch::global_asm;

/// RFLAGS bits cleared on entry: IF (no interrupts until the kernel stack is
/// live), DF (the kernel's string ops go forward), TF (no single-step of the
/// kernel), AC (SMAP stays armed), NT (no nested-task `iret` surprise).
const SFMASK: u64 = (1 << 9) | (1 << 10) | (1 << 8) | (1 << 18) | (1 << 14);

/// RFLAGS bits user space may keep across a syscall: CF, PF, AF, ZF, SF, TF,
/// DF, OF, AC, ID. Everything else (IF, IOPL, NT, RF, VM, VIF, VIP) is the
/// kernel's to decide.
pub const USER_RFLAGS: u64 =
    0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x400 | 0x800 | 0x4_0000 | 0x20_0000;

/// Programs the syscall MSRs on this CPU: STAR, LSTAR, SFMASK, CSTAR and the
/// three SYSENTER MSRs. EFER.SCE is part of the EFER value
/// [`super::cpustate::init_this_cpu`] writes (it calls this).
pub fn init_msrs() {
    // STAR[47:32]: kernel CS (SS = +8). STAR[63:48]: base for sysret: CS =
    // base + 16 (user code 0x20|3), SS = base + 8 (user data 0x18|3).
    let star = ((KERNEL_CS as u64) << 32) | (((USER_DS as u64 & !3) - 8) << 48);
    // Sound because these MSRs exist on every x86_64 CPU; the entry point is the stub
    // below and the selectors match this CPU's GDT (see gdt.rs). CSTAR (the
    // compatibility-mode entry) is 0: ring 3 has no 32-bit code segment (no
    // such GDT entry, a null LDT), and a `syscall` there on an AMD CPU would
    // fault in the kernel at 0, never run anything. SYSENTER_CS = 0 makes
    // SYSENTER raise #GP on Intel CPUs (which allow it in 64-bit mode); AMD
    // CPUs raise #UD for it in long mode anyway.
    // SAFETY: as explained just above.
    unsafe {
        cpu::wrmsr(msr::STAR, star);
        cpu::wrmsr(msr::LSTAR, syscall_entry as *const () as u64);
        cpu::wrmsr(msr::SFMASK, SFMASK);
        cpu::wrmsr(msr::CSTAR, 0);
        cpu::wrmsr(msr::SYSENTER_CS, 0);
        cpu::wrmsr(msr::SYSENTER_ESP, 0);
        cpu::wrmsr(msr::SYSENTER_EIP, 0);
    }
}

/// The values [`init_msrs`] writes, as (STAR, LSTAR, SFMASK), for the
/// read-back check.
pub fn intended_msrs() -> (u64, u64, u64) {
    let star = ((KERNEL_CS as u64) << 32) | (((USER_DS as u64 & !3) - 8) << 48);
    (star, syscall_entry as *const () as u64, SFMASK)
}

/// What the syscall return path does with a frame: resume it (`sysretq` or
/// `iretq`), or fault the thread instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReturnCheck {
    /// The return RIP is a canonical user address: resume.
    Resume,
    /// The return RIP is not a user address: the frame now says #GP (vector
    /// 13, error 0) and the caller must end the thread before `sysretq`.
    Fault,
}

/// Checks the return RIP of a syscall frame before `sysretq`.
///
/// A return RIP outside the canonical lower half (a `syscall` in the last user
/// page returns to 0x8000_0000_0000) would make SYSRET fault in ring 0 on the
/// user stack on Intel CPUs (CVE-2012-0217), and IRET fault in ring 0 too: it
/// is the thread's fault, reported as #GP. `ktest
/// sysret_refuses_non_canonical_rip` runs this on synthetic frames (under TCG
/// SYSRET faults AMD-style in ring 3, so the ring-3 test cannot tell).
pub fn check_return(frame: &mut TrapFrame) -> ReturnCheck {
    if frame.rip < abi::layout::USER_END {
        return ReturnCheck::Resume;
    }
    // `error_code` keeps the syscall number: the caller undoes a spawn
    // whose handle this return would have carried (`syscall`'s entries),
    // and the #GP report zeroes it (`Fault::stop`).
    frame.vector = 13;
    ReturnCheck::Fault
}

/// `syscall_entry` and the first instruction after its switch to the kernel
/// stack: a #DB in `[start, end)` arrived before the kernel stack was live.
pub fn entry_before_stack_switch() -> (u64, u64) {
    (
        syscall_entry as *const () as u64,
        syscall_entry_stack_live as *const () as u64,
    )
}

/// Where the entry's `sub` leaves RSP: frame.rcx's slot, the first (the
/// highest) the pushes after it fill, as an offset in the frame.
const SKIP_BASE: usize = core::mem::offset_of!(TrapFrame, rcx);
/// The entry's `sub` from the kernel-stack top to [`SKIP_BASE`].
const SKIP: usize = core::mem::size_of::<TrapFrame>() - SKIP_BASE;
// The pushes after the `sub` fill the frame from r15 down to rax, right
// below frame.rcx; the slots the entry writes by offset are above it.
const _: () = assert!(core::mem::offset_of!(TrapFrame, r15) + 8 == SKIP_BASE);
const _: () = assert!(core::mem::offset_of!(TrapFrame, error_code) > SKIP_BASE);

extern "C" {
    fn syscall_entry();
    /// The label right after the stub's switch to the kernel stack.
    fn syscall_entry_stack_live();
}

/// The syscall exits' common tail (RSP at the frame, RAX the result): every
/// other register the user sees from the frame, then SYSRET. Loads, not
/// pops: frame.rcx and frame.r11 are never read here (SYSRET takes RCX and
/// R11 from frame.rip and frame.rflags), two instructions fewer than popping
/// all fifteen. Each is the user's own value as saved, or what the syscall
/// deliberately set in the frame. Used twice (`syscall_exit_to_user_cur`
/// and `syscall_exit_to_user_result`): a shared copy would cost one of
/// them a jump.
macro_rules! sysret_tail {
    () => {
        r#"
    mov rbx, [rsp + {f_rbx}]                // rbx (an IPC's received handles 0, 1)
    mov rdx, [rsp + {f_rdx}]                // rdx (an IPC's word 0)
    mov rsi, [rsp + {f_rsi}]                // rsi (an IPC's MsgInfo)
    mov rdi, [rsp + {f_rdi}]                // rdi (an IPC's badge)
    mov rbp, [rsp + {f_rbp}]                // rbp (an IPC's received handles 2, 3)
    mov r8, [rsp + {f_r8}]                  // r8, r9, r10, r12, r13: an IPC's words 1-5
    mov r9, [rsp + {f_r9}]
    mov r10, [rsp + {f_r10}]
    mov r12, [rsp + {f_r12}]
    mov r13, [rsp + {f_r13}]
    mov r14, [rsp + {f_r14}]                // r14 (a receive buffer)
    mov r15, [rsp + {f_r15}]                // r15 (a receive capacity)
    mov rcx, [rsp + {f_rip}]                // rcx := frame.rip (checked canonical)
    mov r11, [rsp + {rflags}]               // r11 := frame.rflags as saved
    and r11, {user_flags}                   // keep only flags ring 3 may set
    or r11, 0x202                           // IF on, reserved bit 1 (IOPL 0, NT/RF/VM off)
    mov rsp, [rsp + {f_rsp}]                // rsp := user stack (IF is off: no IRQ here)
    swapgs                                  // GS base := the user's
    sysretq
        "#
    };
}

global_asm!(
    r#"
    .section .text.syscall, "ax"
    .global syscall_entry
    .balign 64
syscall_entry:
    swapgs                                  // GS base := this CPU's PerCpu
    mov gs:[{ursp}], rsp                    // park the user RSP
    mov rsp, gs:[{krsp}]                    // RSP := top of this thread's kernel stack
    .global syscall_entry_stack_live
syscall_entry_stack_live:                   // (a #DB before here is on the user RSP)
    // The hardware part and the error code by offset from the first slot
    // pushed below (frame.rcx), not pushed: that skips the slots nothing
    // reads on a syscall frame with no instruction for them, one `sub` for
    // all. Not written: frame.ss and frame.cs (SYSRET takes the selectors
    // from STAR; the TF exit, the one exit that reads them, fills them),
    // frame.vector (no reader of a syscall frame looks at it: the exit's
    // work path knows it has one, and a syscall that faults the thread
    // writes its own), frame.r11 and frame.rcx (SYSCALL clobbered both:
    // frame.rflags and frame.rip hold what they got; the TF exit fills
    // their slots too).
    sub rsp, {skip}                         // rsp: frame.rcx's slot (IF is off; nothing writes below it yet)
    mov [rsp + {s_rflags}], r11             // frame.rflags (SYSCALL put them in R11)
    mov [rsp + {s_rip}], rcx                // frame.rip (SYSCALL put it in RCX)
    mov [rsp + {s_err}], rax                // frame.error_code: the syscall number (Linux's orig_rax; the kill path reads it)
    mov rcx, gs:[{ursp}]                    // rcx: the user RSP (its RIP is saved)
    mov [rsp + {s_rsp}], rcx                // frame.rsp (user)
    "#,
    push_gprs_but_rcx_r11!(),               // the other general registers, r15 .. rax
    r#"
    inc qword ptr gs:[{count}]              // per-CPU syscall counter
    mov rdi, rsp                            // rdi: &mut TrapFrame
    cmp rax, {nr_end}                       // rax: the syscall number; past the known ones?
    cmova rax, [rip + syscall_nr_end]       // then syscall_unknown's index, the table's last (a
                                            // clamp, not a branch: no speculative call through a
                                            // word past the table; from memory, which cmov reads
                                            // either way: no register to load it into first)
    call [{table} + rax * 8]                // the number's entry: frame.rax := result; frame.rip canonical
    .global syscall_exit_to_user
syscall_exit_to_user:
5:  mov rax, gs:[{cur}]                     // rax: the current Thread (IF is off: it stays)
    .global syscall_exit_to_user_cur        // where a frameless IPC wait ends (frameless.rs), with rax
syscall_exit_to_user_cur:                   // the current Thread already and rsp at its frame
    test dword ptr [rax + {work}], {work_mask} // any work before ring 3 (kill, ...)?
    jnz 6f                                  // rare: the slow path below
    test byte ptr [rsp + {rflags} + 1], 1   // frame.rflags.TF (bit 8): single-step?
    jnz 7f                                  // rare: return through iretq
    mov rax, [rsp + {f_rax}]                // rax := the result
    "#,
    sysret_tail!(),                         // the other registers from the frame, SYSRET
    r#"
6:  mov rdi, rsp                            // rdi: &mut TrapFrame (a killed spawner undoes its spawn)
    call {work_fn}                          // does the work (a killed thread never returns)
    jmp 5b                                  // test again: work may have been added meanwhile
7:  mov r11, [rsp + {rflags}]               // r11: the user's RFLAGS as saved
    and r11, {user_flags}                   // keep only flags ring 3 may set
    or r11, 0x202                           // IF on, reserved bit 1
    mov [rsp + {rflags}], r11               // the iretq path reads the frame
    mov [rsp + {f_r11}], r11                // and pops R11 and RCX from it: what SYSRET would leave
    mov rcx, [rsp + {f_rip}]                // (the entry did not write their slots): R11 the RFLAGS,
    mov [rsp + {f_rcx}], rcx                // RCX the return RIP
    mov qword ptr [rsp + {f_cs}], {user_cs} // and the selectors SYSRET would load (the entry did not
    mov qword ptr [rsp + {f_ss}], {user_ss} // write them either; isr_return tests CS for its swapgs)
    jmp isr_return                          // full iretq path (swapgs there)

    // The frameless resume's exit (cut26s): the result in RAX, not yet in
    // the frame, saves the resume's store of it and the load above.
    .global syscall_exit_to_user_result
syscall_exit_to_user_result:                // rax: the result; rcx: the current Thread; rsp: its frame
    test dword ptr [rcx + {work}], {work_mask} // any work before ring 3 (kill, ...)?
    jnz 8f                                  // rare: the result into the frame, then as above
    test byte ptr [rsp + {rflags} + 1], 1   // frame.rflags.TF (bit 8): single-step?
    jnz 8f                                  // rare: likewise
    "#,
    sysret_tail!(),                         // the other registers from the frame, SYSRET
    r#"
8:  mov [rsp + {f_rax}], rax                // frame.rax := the result (the slow paths read the frame)
    mov rax, rcx                            // rax: the current Thread
    jmp syscall_exit_to_user_cur            // both tests again, on the frame

    .section .rodata.syscall, "a"
    .balign 8
syscall_nr_end:                             // the table's last index (syscall_unknown's) for the clamp
    .quad {nr_end}
    "#,
    ursp = const OFF_USER_RSP,
    krsp = const OFF_KERNEL_RSP,
    count = const OFF_SYSCALLS,
    user_ss = const USER_DS as u64,
    skip = const SKIP,
    s_rflags = const core::mem::offset_of!(TrapFrame, rflags) - SKIP_BASE,
    s_rip = const core::mem::offset_of!(TrapFrame, rip) - SKIP_BASE,
    s_err = const core::mem::offset_of!(TrapFrame, error_code) - SKIP_BASE,
    s_rsp = const core::mem::offset_of!(TrapFrame, rsp) - SKIP_BASE,
    f_cs = const core::mem::offset_of!(TrapFrame, cs),
    f_ss = const core::mem::offset_of!(TrapFrame, ss),
    user_cs = const super::gdt::USER_CS as u64,
    rflags = const core::mem::offset_of!(TrapFrame, rflags),
    f_rax = const core::mem::offset_of!(TrapFrame, rax),
    f_rbx = const core::mem::offset_of!(TrapFrame, rbx),
    f_rdx = const core::mem::offset_of!(TrapFrame, rdx),
    f_rsi = const core::mem::offset_of!(TrapFrame, rsi),
    f_rdi = const core::mem::offset_of!(TrapFrame, rdi),
    f_rbp = const core::mem::offset_of!(TrapFrame, rbp),
    f_r8 = const core::mem::offset_of!(TrapFrame, r8),
    f_r9 = const core::mem::offset_of!(TrapFrame, r9),
    f_r10 = const core::mem::offset_of!(TrapFrame, r10),
    f_r12 = const core::mem::offset_of!(TrapFrame, r12),
    f_r13 = const core::mem::offset_of!(TrapFrame, r13),
    f_r14 = const core::mem::offset_of!(TrapFrame, r14),
    f_r15 = const core::mem::offset_of!(TrapFrame, r15),
    f_rip = const core::mem::offset_of!(TrapFrame, rip),
    f_rcx = const core::mem::offset_of!(TrapFrame, rcx),
    f_r11 = const core::mem::offset_of!(TrapFrame, r11),
    f_rsp = const core::mem::offset_of!(TrapFrame, rsp),
    user_flags = const USER_RFLAGS,
    table = sym crate::syscall::SYSCALL_TABLE,
    nr_end = const abi::Sysnum::END,
    cur = const super::percpu::OFF_CURRENT,
    work = const super::percpu::OFF_THREAD_WORK,
    work_mask = const super::percpu::work::MASK,
    work_fn = sym crate::syscall::syscall_return_work,
);
