//! The frameless resume (issue 10's same-core fast path): a thread that
//! blocks in the fast IPC `call` or `reply_recv` and hands the CPU straight
//! to its partner keeps no kernel frames. Its user state is its
//! [`TrapFrame`] at the top of its kernel stack, and its saved context is
//! not a `switch_context` frame but [`FRAMELESS_CONTEXT`], one read-only
//! record shared by every such thread, whose return address is
//! `frameless_resume_entry`.
//!
//! Whoever switches to such a thread next (the partner handing the CPU
//! back on the fast path, or the scheduler after any other wake-up: a kill,
//! a slow sender, a resume) restores that record with the ordinary
//! `switch_context` (or [`load_context`]) and lands in
//! `frameless_resume_entry`, which:
//! 1. moves RSP to the thread's own frame (the top of its kernel stack,
//!    which the switch just made this CPU's TSS.RSP0, `PerCpu::kernel_rsp`): RSP left
//!    the previous thread's stack before anything below runs;
//! 2. calls the resume function (`crate::syscall::frameless_resume`),
//!    which first runs `finish_switch`: it releases the previous thread
//!    (`on_cpu` := false), so only now may another CPU run it (its context
//!    was written before the switch, and RSP has left its stack); then it
//!    ends the IPC wait into the frame (the message, or the general wait
//!    loop for a wake-up without one) and does the dispatcher's `finish`
//!    (RAX, the return-RIP check);
//! 3. the resume function leaves through the syscall stub's exit
//!    (`syscall_exit_to_user`, [`exit_to_user`]: RSP := the frame, RAX :=
//!    the current thread, a jump past the exit's own load of it; in the
//!    common case [`exit_to_user_result`], the result in RAX and the
//!    thread in RCX;
//!    switchcut: no epilogue, no return into the entry): the work test (a
//!    kill), the TF test, SYSRET — the same exit every syscall takes.
//!
//! A thread leaves its frames behind only through [`load_context`], which
//! restores the next context without saving the current one; when the next
//! thread is frameless too, it goes straight to its resume entry (the
//! shared record's registers are never used, so nothing is popped).
//!
//! The IPC hand-off between two frameless threads (the same-core round
//! trip) does the entry's and the resume's work itself instead
//! ([`handoff_to_frameless`]; switchcut, sched3, cut28s): from the
//! kernel-stack top and the threads the switch has in registers, with no
//! entry, no call and no cell: it releases the previous thread (its
//! `on_cpu`, no reference dropped: PerCpu names threads uncounted,
//! cut27r), tests the return RIP, ends the wait (delivered by the hander:
//! no test of it, cut28s) and jumps to the exit; a refused RIP calls the
//! compiled resume (`crate::syscall::frameless_handoff_cold`).

use super::percpu::OFF_KERNEL_RSP;
use super::trap::TrapFrame;
use core::arch::global_asm;

extern "C" {
    /// Restores the context `next_rsp` points at (the second half of
    /// `switch_context`) and returns into it; the current stack and
    /// registers are abandoned.
    fn load_context(next_rsp: u64) -> !;
    /// The saved context of every thread blocked frameless.
    static FRAMELESS_CONTEXT: [u64; 8];
}

/// The saved RSP of a thread blocked frameless: the address of the shared
/// record `switch_context` restores it from.
#[inline(always)]
pub fn frameless_rsp() -> u64 {
    // Only the address is taken (safe for an extern static); the record is
    // never written.
    core::ptr::addr_of!(FRAMELESS_CONTEXT) as u64
}

/// Whether the thread at `thread` blocked frameless: its saved RSP (at
/// offset `SAVED_RSP`) is [`frameless_rsp`]. One compare of the word in
/// memory with the record's address and a branch (cut28s: the compiled
/// test loaded the word into a register first).
///
/// # Safety
/// `thread` is the address of a live thread whose saved RSP is at offset
/// `SAVED_RSP` and is not being written (the caller switches to it).
#[inline(always)]
pub unsafe fn is_frameless<const SAVED_RSP: usize>(thread: u64) -> bool {
    // SAFETY: the caller's contract; the block reads one word.
    unsafe {
        core::arch::asm!(
            "cmp qword ptr [{t} + {off}], offset {rec}", // its saved RSP: the shared frameless record?
            "je {yes}",
            t = in(reg) thread,                          // the thread
            off = const SAVED_RSP,
            rec = sym FRAMELESS_CONTEXT,
            yes = label { return true },
            options(nostack, readonly),
        );
    }
    false
}

/// Abandons the current kernel stack and runs the context `next_rsp`
/// names.
///
/// # Safety
/// Interrupts are off; the caller did all of a switch's bookkeeping
/// (`sched::switch_to` up to `switch_context`): the current thread's saved
/// RSP is [`frameless_rsp`] (or it never runs again), `next_rsp` is the
/// saved RSP of the thread now current, and nothing on the current stack
/// is owned (no value whose drop or release is still due: it never runs).
#[inline(always)]
pub unsafe fn abandon_stack_for(next_rsp: u64) -> ! {
    // SAFETY: the caller's contract.
    unsafe { load_context(next_rsp) }
}

/// Abandons the current kernel stack and resumes the current thread, which
/// blocked frameless, in the IPC hand-off between two frameless threads:
/// the whole common resume in one straight line (cut28s), with no call,
/// no prologue and no reload of what the switch has in registers. RSP goes
/// to the frame below `kstack_top` (the current thread's kernel-stack top,
/// which the switch just made the CPU's `kernel_rsp`), then:
/// 1. the switch's last step: `prev`'s `on_cpu` is released (a plain byte
///    store, Release on x86; RSP left prev's stack first), with no cell to
///    take and no `migrate_prev` to test (switchcut; no reference is
///    dropped, PerCpu names threads uncounted, cut27r);
/// 2. the return-RIP check (`super::syscall::check_return`'s test,
///    CVE-2012-0217: the frame's RIP below `USER_END`);
/// 3. the wait's end, "delivered by the hander" (cut28s): the claim word
///    is reset to running, same sequence (`finish_delivered`'s store,
///    as one `and` with memory; the claim's state is its low byte), with
///    no test of it: the caller guarantees that the partner who hands the
///    CPU over here wrote the message into the frame for this wait, so
///    the word is exactly `framed` (`ipc::fastpath::framed_end`'s test,
///    known true on this path: see `sched::switch_direct_frameless`);
/// 4. the stub's exit (`syscall_exit_to_user_result`: the result `Ok(0)`
///    in RAX, the current thread in RCX, RSP at the frame).
///
/// A failed RIP test changes nothing and calls
/// `crate::syscall::frameless_handoff_cold` from the frame (as
/// `frameless_resume_entry` calls its resume), which ends the wait and
/// makes the test again in the compiled resume (`resume_end`), whose cold
/// path raises the #GP. The RIP test comes first so that the cold path
/// finds the claim as the partner left it.
///
/// # Safety
/// As [`abandon_stack_for`], the current thread's saved RSP being
/// [`frameless_rsp`]; `prev` is the thread switched away from (its
/// address), which the CPU's `prev` cell does not hold, and
/// `migrate_prev` is false; `cur` is the current thread (the CPU's
/// `current_thread`) and `kstack_top` its kernel-stack top (its syscall
/// frame below it); its wait was claimed `Delivered` and its message
/// written into its frame (`framed` is its claim word); `ON_CPU` is the
/// offset of a thread's `on_cpu` byte and `CLAIM` of its claim word
/// (64-bit, state in the low byte).
#[inline(always)]
pub unsafe fn handoff_to_frameless<const ON_CPU: usize, const CLAIM: usize>(
    prev: u64,
    cur: u64,
    kstack_top: u64,
) -> ! {
    // Nothing here returns (the exit, or the cold resume, which leaves
    // through the same exit); the frame keeps RSP 16-byte aligned at the
    // cold call (the assertion at the end of this file).
    // SAFETY: the caller's contract, as just said.
    unsafe {
        core::arch::asm!(
            "lea rsp, [{top} - {size}]",        // rsp := cur's TrapFrame (RSP leaves the previous stack)
            "mov byte ptr [{prev} + {on_cpu}], 0", // prev.on_cpu := false: another CPU may run it now
            "mov {prev}, [rsp + {f_rip}]",      // the return RIP (prev's address is no longer needed)
            "shr {prev}, 47",                   // below USER_END (check_return)?
            "jnz 2f",                           // no: the cold resume (its #GP)
            "and qword ptr [rcx + {claim}], {keep}", // the claim word (== framed): the same sequence, running
            "xor eax, eax",                     // rax: the result, Ok(0)
            "jmp syscall_exit_to_user_result",  // rax: the result, rcx: the current thread, rsp: its frame
            "2:",
            "call {cold}",                      // from the frame; leaves through the exit itself
            "ud2",
            top = in(reg) kstack_top, // the current thread's kernel-stack top
            prev = in(reg) prev, // the previous thread, then a scratch register
            in("rcx") cur,       // the current thread (the exit takes it in RCX)
            size = const core::mem::size_of::<TrapFrame>(),
            on_cpu = const ON_CPU,
            f_rip = const core::mem::offset_of!(TrapFrame, rip),
            claim = const CLAIM,
            keep = const !0xffi32,
            cold = sym crate::syscall::frameless_handoff_cold,
            options(noreturn),
        )
    }
}

// The hand-off's RIP test is `check_return`'s (`rip < USER_END`) as a
// shift, and its `xor` is the encoding of `Ok(0)`.
const _: () = assert!(abi::layout::USER_END == 1 << 47);
const _: () = assert!(abi::encode_result(Ok(0)) == 0);

/// Leaves for ring 3 through the syscall stub's exit
/// (`syscall_exit_to_user`: the work test, TF, SYSRET) with RSP at the
/// syscall frame of the kernel stack whose top is `kstack_top`,
/// abandoning the current Rust frame (switchcut: both frameless resumes
/// end here, with no epilogue and no return into their entry). The exit
/// is entered past its load of the current thread, which `cur` is
/// (`syscall_exit_to_user_cur`: the resumes have it in a register).
///
/// # Safety
/// `cur` is the current thread's address (the CPU's `current_thread`) and
/// `kstack_top` the top of its kernel stack, so the frame below it is the
/// thread's syscall frame (where the resume entry put RSP before its
/// call); interrupts are off, the syscall's result is in the frame, and
/// nothing on the current stack is owned (no drop or release is still
/// due).
#[inline(always)]
pub unsafe fn exit_to_user(cur: u64, kstack_top: u64) -> ! {
    // SAFETY: the caller's contract; the exit reads only the frame, the
    // per-CPU record and the current thread.
    unsafe {
        core::arch::asm!(
            "lea rsp, [{top} - {size}]", // rsp := the frame, as the stub's exit expects
            "jmp syscall_exit_to_user_cur", // rax: the current thread, as that entry expects
            top = in(reg) kstack_top,
            size = const core::mem::size_of::<TrapFrame>(),
            in("rax") cur,
            options(noreturn),
        )
    }
}

/// [`exit_to_user`] with the syscall's result in a register rather than
/// in the frame (`syscall_exit_to_user_result`, cut26s: the frameless
/// resume's common case saves its store into the frame and the exit's
/// load of it; the exit's slow paths store it there first).
///
/// # Safety
/// As [`exit_to_user`], but the frame's RAX slot is not the result:
/// `result` is.
#[inline(always)]
pub unsafe fn exit_to_user_result(cur: u64, kstack_top: u64, result: u64) -> ! {
    // SAFETY: the caller's contract; the exit reads only the frame, the
    // per-CPU record and the current thread.
    unsafe {
        core::arch::asm!(
            "lea rsp, [{top} - {size}]", // rsp := the frame, as the stub's exit expects
            "jmp syscall_exit_to_user_result", // rax: the result, rcx: the current thread
            top = in(reg) kstack_top,
            size = const core::mem::size_of::<TrapFrame>(),
            in("rax") result,
            in("rcx") cur,
            options(noreturn),
        )
    }
}

global_asm!(
    r#"
    .section .text.switch, "ax"
    .global load_context
load_context:                               // rdi: the next thread's saved RSP
    lea rax, [rip + FRAMELESS_CONTEXT]      // rax: the shared frameless record
    cmp rdi, rax                            // next blocked frameless too?
    je frameless_resume_entry               // then nothing to pop: straight to its frame
    mov rsp, rdi                            // rsp := next's context (the old stack is left as it is)
    pop r15                                 // callee-saved registers, as switch_context saved them
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    popfq                                   // RFLAGS (IF off in every saved context)
    ret                                     // into next's code (switch_to, thread_start or the entry below)

frameless_resume_entry:                     // rsp: past FRAMELESS_CONTEXT (read-only: push nothing) or the
                                            // abandoned stack (from load_context); IF off either way
    mov rsp, gs:[{krsp}]                    // rsp := top of this thread's kernel stack (switch_to set it)
    sub rsp, {frame_size}                   // rsp := its TrapFrame (16-byte aligned, as at the stub's call;
                                            // the resume finds it from the thread itself)
    call {resume}                           // finish_switch first (RSP left the previous stack), then the
                                            // wait's outcome into the frame; RAX; the RIP check; it leaves
                                            // through the stub's exit (work test, TF, sysret) itself
                                            // (`exit_to_user`) and never returns here
    ud2

    .section .rodata.frameless, "a"
    .balign 8
    .global FRAMELESS_CONTEXT
FRAMELESS_CONTEXT:                          // what switch_context pops for a frameless thread
    .quad 0, 0, 0, 0, 0, 0                  // r15, r14, r13, r12, rbx, rbp: unused by the entry
    .quad 0x2                               // rflags: IF off (reserved bit 1)
    .quad frameless_resume_entry            // return address
    "#,
    krsp = const OFF_KERNEL_RSP,
    frame_size = const core::mem::size_of::<TrapFrame>(),
    resume = sym crate::syscall::frameless_resume,
);

// The entry puts RSP at the frame with a plain subtraction and calls from
// there: the frame must keep the stack 16-byte aligned (as the stub's own
// call relies on).
const _: () = assert!(core::mem::size_of::<TrapFrame>().is_multiple_of(16));
