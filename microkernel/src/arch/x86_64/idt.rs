//! The interrupt descriptor table and the interrupt/exception entry stubs.
//!
//! One IDT is shared by every CPU: it is written once at boot and read-only
//! afterwards, and everything that differs per CPU (IST stacks, GS base) lives in
//! the CPU's TSS and `PerCpu`.
//!
//! # Entry protocol
//! Every vector has a 16-byte stub at `isr_stubs + 16 * vector` that pushes a zero
//! error code (when the CPU pushes none) and the vector number, then jumps to a
//! common entry that completes a [`TrapFrame`](super::trap::TrapFrame) on the
//! current stack and calls [`super::trap::trap_dispatch`].
//!
//! GS: an entry from ring 3 (saved CS has RPL 3) executes `swapgs`, an entry from
//! ring 0 does not; `lfence` follows on both paths so no load through GS is
//! speculated with the wrong base (CVE-2019-1125). NMI, #DB and #MC can arrive
//! anywhere — including between `syscall` and its `swapgs` — so they use the
//! *paranoid* entry, which decides by reading `GS_BASE` itself: the kernel never
//! lets ring 3 hold a higher-half GS base (CR4.FSGSBASE stays off and the
//! base-setting syscall accepts only user addresses), so a negative GS base means
//! the kernel's is loaded.

use super::gdt::{IST_DEBUG, IST_DOUBLE_FAULT, IST_MACHINE_CHECK, IST_NMI, KERNEL_CS};
use super::trap::{pop_gprs, push_gprs, TrapFrame};
use core::arch::global_asm;
use core::mem::offset_of;

/// Vectors 0-31 are exceptions; the rest are interrupts.
pub const VECTORS: usize = 256;

#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

const _: () = assert!(core::mem::size_of::<Gate>() == 16);

#[repr(C, align(16))]
struct Idt([Gate; VECTORS]);

static mut IDT: Idt = Idt([Gate {
    offset_low: 0,
    selector: 0,
    ist: 0,
    type_attr: 0,
    offset_mid: 0,
    offset_high: 0,
    reserved: 0,
}; VECTORS]);

extern "C" {
    /// The first of 256 entry stubs, 16 bytes apart (defined in the asm below).
    static isr_stubs: [u8; VECTORS * 16];
}

/// Which IST stack each exception uses (0 = the current kernel stack).
fn ist_for(vector: usize) -> u8 {
    match vector {
        1 => IST_DEBUG,
        2 => IST_NMI,
        8 => IST_DOUBLE_FAULT,
        18 => IST_MACHINE_CHECK,
        _ => 0,
    }
}

/// Fills the shared IDT. Call once on the boot CPU before any other CPU starts.
pub fn init() {
    // Taking the address of an extern static does not read it.
    let stubs = core::ptr::addr_of!(isr_stubs) as u64;
    // SAFETY: runs once on the boot CPU before interrupts are enabled and before
    // any other CPU runs, so nothing else reads or writes the IDT concurrently.
    let idt = unsafe { &mut *core::ptr::addr_of_mut!(IDT) };
    for (vector, gate) in idt.0.iter_mut().enumerate() {
        let handler = stubs + 16 * vector as u64;
        // Present, interrupt gate (IF cleared on entry). DPL 0 everywhere except
        // #BP, so `int3` from ring 3 is a clean trap, not #GP.
        let dpl = if vector == 3 { 3u8 } else { 0 };
        *gate = Gate {
            offset_low: handler as u16,
            selector: KERNEL_CS,
            ist: ist_for(vector),
            type_attr: 0x8e | (dpl << 5),
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        };
    }
}

/// Loads the shared IDT on this CPU.
pub fn load() {
    let ptr = x86_64::structures::DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: x86_64::VirtAddr::new(core::ptr::addr_of!(IDT) as u64),
    };
    // SAFETY: the IDT is a filled static (see `init`) with valid gates.
    unsafe { x86_64::instructions::tables::lidt(&ptr) };
}

// Offsets of the hardware part of the frame, relative to RSP at the point where
// the stub has pushed (error code, vector) and nothing else.
const STUB_CS: usize = offset_of!(TrapFrame, cs) - offset_of!(TrapFrame, vector);

global_asm!(
    r#"
    .section .text.isr, "ax"
    .balign 16
    .global isr_stubs
isr_stubs:
    .set vec, 0
    .rept 256
    .balign 16
    .if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    push 0                                  // no hardware error code: push a zero
    .endif
    push vec                                // vector number
    .if (vec == 1) || (vec == 2) || (vec == 18)
    jmp isr_paranoid
    .else
    jmp isr_common
    .endif
    .set vec, vec + 1
    .endr

    // Common entry. Stack on arrival: vector, error, RIP, CS, RFLAGS, RSP, SS.
isr_common:
    test byte ptr [rsp + {cs}], 3           // came from ring 3?
    jz 1f
    swapgs                                  // GS base := this CPU's PerCpu
1:  lfence                                  // no speculation past the GS decision
    "#,
    push_gprs!(),                           // complete the TrapFrame: r15 .. rax
    r#"
    cld                                     // the kernel's ABI needs DF = 0
    mov rdi, rsp                            // rdi: &mut TrapFrame
    call {dispatch}
    .global isr_return
isr_return:                                 // also the first return of a new user thread
    test byte ptr [rsp + {frame_cs}], 3     // returning to ring 3? (rsp: the TrapFrame)
    jz 5f
    mov rax, gs:[{cur}]                     // rax: the current Thread (gs: still the kernel's)
    test dword ptr [rax + {work}], {work_mask} // deferred work (kill) before user code?
    jz 5f
    call {work_fn}                          // does it (a killed thread never returns); IF off
    jmp isr_return                          // test again: work may have been added meanwhile
5:
    "#,
    pop_gprs!(),
    r#"
    test byte ptr [rsp + {cs}], 3           // returning to ring 3?
    jz 2f
    swapgs                                  // GS base := the user's
2:  add rsp, 16                             // drop vector and error code
    iretq

    // Paranoid entry for NMI, #DB, #MC: may interrupt any instruction, including
    // the syscall entry before its swapgs. r12 remembers whether we swapped.
isr_paranoid:
    "#,
    push_gprs!(),
    r#"
    xor r12d, r12d                          // r12: 0 = GS already the kernel's
    mov ecx, 0xc0000101                     // ecx: IA32_GS_BASE
    rdmsr                                   // edx:eax = active GS base
    test edx, edx                           // higher-half base => kernel GS active
    js 3f
    swapgs
    mov r12d, 1                             // r12: 1 = swap back on exit
3:  lfence
    cld
    mov rdi, rsp                            // rdi: &mut TrapFrame
    call {dispatch}
    test r12d, r12d                         // did we swap on entry?
    jz 4f
    swapgs
4:  pop rax
    pop rbx
    pop rcx
    pop rdx
    pop rsi
    pop rdi
    pop rbp
    pop r8
    pop r9
    pop r10
    pop r11
    pop r12
    pop r13
    pop r14
    pop r15
    add rsp, 16                             // drop vector and error code
    iretq
    "#,
    cs = const STUB_CS,
    dispatch = sym super::trap::trap_dispatch,
    frame_cs = const offset_of!(TrapFrame, cs),
    cur = const super::percpu::OFF_CURRENT,
    work = const crate::task::OFF_THREAD_WORK,
    work_mask = const crate::task::work::MASK,
    work_fn = sym crate::sched::return_to_user_work,
);
