//! The kernel-to-kernel context switch and the first entry of a new thread.
//!
//! A thread that is not running is parked inside [`switch_context`]: its kernel
//! stack holds RFLAGS and the callee-saved registers, and its saved RSP points at
//! them. Everything else (caller-saved registers, the user state) is already on
//! its kernel stack in the frames of the functions that called the switch.

use super::trap::TrapFrame;
use core::arch::global_asm;

extern "C" {
    /// Saves RFLAGS and the callee-saved registers on the current stack, stores
    /// RSP in `*prev_rsp`, loads `next_rsp` and restores the same registers from
    /// there, returning into the next thread.
    pub fn switch_context(prev_rsp: *mut u64, next_rsp: u64);
    /// Where a new thread's first switch returns to.
    fn thread_start();
}

global_asm!(
    r#"
    .section .text.switch, "ax"
    .global switch_context
switch_context:                             // rdi: &mut prev.saved_rsp, rsi: next rsp
    pushfq                                  // RFLAGS (IF state of the switching code)
    push rbp                                // callee-saved registers (SysV)
    push rbx
    push r12
    push r13
    push r14
    push r15
    mov [rdi], rsp                          // prev.saved_rsp := rsp
    mov rsp, rsi                            // rsp := next's stack
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    popfq
    ret                                     // into next's code (or thread_start)

    .global thread_start
thread_start:                               // rsp: the new thread's TrapFrame
    call {finish}                           // bookkeeping for the thread we left
    jmp isr_return                          // pop the TrapFrame, iretq to ring 3
    "#,
    finish = sym crate::sched::finish_switch,
);

/// Words `switch_context` pops: r15, r14, r13, r12, rbx, rbp, rflags, return.
const SWITCH_WORDS: usize = 8;

/// Prepares a new thread's kernel stack so that switching to it starts it in
/// ring 3 with `frame`. Returns the saved RSP to switch to.
///
/// # Safety
/// `stack_top` must be the 16-byte aligned top of a mapped, unused kernel stack
/// of at least 1 KiB.
pub unsafe fn prepare_stack(stack_top: u64, frame: &TrapFrame) -> u64 {
    let frame_addr = stack_top - core::mem::size_of::<TrapFrame>() as u64;
    let words = (frame_addr - (SWITCH_WORDS as u64) * 8) as *mut u64;
    // SAFETY: the caller guarantees the stack is mapped and unused; everything
    // written lies within its top 1 KiB.
    unsafe {
        core::ptr::write(frame_addr as *mut TrapFrame, *frame);
        let init: [u64; SWITCH_WORDS] = [
            0,                                // r15
            0,                                // r14
            0,                                // r13
            0,                                // r12
            0,                                // rbx
            0,                                // rbp: end of the frame chain
            0x2,                              // rflags: IF off until iretq
            thread_start as *const () as u64, // return address
        ];
        core::ptr::copy_nonoverlapping(init.as_ptr(), words, SWITCH_WORDS);
    }
    words as u64
}

const _: () = assert!(core::mem::size_of::<TrapFrame>().is_multiple_of(16));
