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
//! anywhere — including between `syscall` and its `swapgs` — so they use IST
//! stacks and the *paranoid* entry. From ring 3, #DB and #MC move to the
//! thread's kernel stack and continue as ordinary exceptions; NMIs, and every
//! event from kernel mode, stay on the IST stack and decide GS by reading
//! `GS_BASE` itself: the kernel never
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

// Offsets of the frame's words, relative to RSP at the point where the stub
// has pushed (error code, vector) and nothing else.
const STUB_ERR: usize = offset_of!(TrapFrame, error_code) - offset_of!(TrapFrame, vector);
const STUB_RIP: usize = offset_of!(TrapFrame, rip) - offset_of!(TrapFrame, vector);
const STUB_CS: usize = offset_of!(TrapFrame, cs) - offset_of!(TrapFrame, vector);
const STUB_RFLAGS: usize = offset_of!(TrapFrame, rflags) - offset_of!(TrapFrame, vector);
const STUB_RSP: usize = offset_of!(TrapFrame, rsp) - offset_of!(TrapFrame, vector);
const STUB_SS: usize = offset_of!(TrapFrame, ss) - offset_of!(TrapFrame, vector);

// The paranoid entry's copy from the IST stack to the thread's kernel stack
// pushes these in this order: each must sit one word below the previous.
const _: () = assert!(STUB_SS == STUB_RSP + 8 && STUB_RSP == STUB_RFLAGS + 8);
const _: () = assert!(STUB_RFLAGS == STUB_CS + 8 && STUB_CS == STUB_RIP + 8);
const _: () = assert!(STUB_RIP == STUB_ERR + 8 && STUB_ERR == 8);

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
    //
    // clac: an interrupt gate clears IF but not AC, and ring 3 may set AC
    // with popf; left set, every handler would run with SMAP disarmed, and
    // switch_context would carry it into another kernel context. `clac`
    // raises #UD without SMAP, so one global byte (set at boot, the same
    // on every CPU) decides; there AC has no effect in ring 0 anyway.
    // Linux does the same on every entry (ASM_CLAC). The interrupted AC
    // comes back with the frame's RFLAGS on iretq.
isr_common:
    cmp byte ptr [rip + {smap}], 0          // SMAP on? (flags are saved: free to clobber)
    je 0f
    clac                                    // AC := 0: SMAP armed in the handler
0:  test byte ptr [rsp + {cs}], 3           // came from ring 3?
    jz 1f
    swapgs                                  // GS base := this CPU's PerCpu
isr_common_gs_done:                         // (the paranoid entry joins here from ring 3)
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
    // the syscall entry before its swapgs and stack switch.
    //
    // #DB and #MC from ring 3 leave the IST stack at once: GS is certainly the
    // user's and the thread's kernel stack is empty (the thread was in ring
    // 3), so the hardware frame moves there and the event continues as an
    // ordinary exception from ring 3 — which may end the thread and schedule,
    // something that must never happen on an IST stack (the stack is the
    // CPU's, not the thread's, and the next event would overwrite it). Linux
    // does the same. NMIs always stay on their IST stack and return here: the
    // NMI handler never schedules and must not run the ring-3 return work
    // with NMIs blocked.
isr_paranoid:
    cmp byte ptr [rip + {smap}], 0          // SMAP on? (see isr_common)
    je 0f
    clac                                    // AC := 0: SMAP armed in the handler
0:  cmp qword ptr [rsp], 2                  // [rsp]: vector; NMI?
    je 5f                                   // NMIs stay on the IST stack
    test byte ptr [rsp + {cs}], 3           // #DB/#MC from ring 3?
    jz 5f
    swapgs                                  // GS base := this CPU's PerCpu
    lfence                                  // no speculation past the GS decision
    push rax                                // IST: park rax (frame now one word lower)
    mov rax, rsp                            // rax: the IST frame (rax, vector, error, ...)
    mov rsp, gs:[{krsp}]                    // rsp: top of the thread's (empty) kernel stack
    push qword ptr [rax + 8 + {ss}]         // frame.ss
    push qword ptr [rax + 8 + {ursp}]       // frame.rsp
    push qword ptr [rax + 8 + {rflags}]     // frame.rflags
    push qword ptr [rax + 8 + {cs}]         // frame.cs
    push qword ptr [rax + 8 + {rip}]        // frame.rip
    push qword ptr [rax + 8 + {err}]        // frame.error_code
    push qword ptr [rax + 8]                // frame.vector
    mov rax, [rax]                          // rax: the interrupted value again
    jmp isr_common_gs_done                  // on as an exception from ring 3

    // Kernel mode (or any NMI): r12 remembers whether we swapped GS.
5:
    "#,
    push_gprs!(),
    r#"
    xor r12d, r12d                          // r12: 0 = GS already the kernel's
    mov ecx, {gs_base}                      // ecx: IA32_GS_BASE
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
4:
    "#,
    pop_gprs!(),
    r#"
    add rsp, 16                             // drop vector and error code
    iretq
    "#,
    smap = sym super::uaccess::SMAP_ON,
    krsp = const super::percpu::OFF_KERNEL_RSP,
    err = const STUB_ERR,
    rip = const STUB_RIP,
    cs = const STUB_CS,
    rflags = const STUB_RFLAGS,
    ursp = const STUB_RSP,
    ss = const STUB_SS,
    gs_base = const super::cpu::msr::GS_BASE,
    dispatch = sym crate::interrupt::trap_dispatch,
    frame_cs = const offset_of!(TrapFrame, cs),
    cur = const super::percpu::OFF_CURRENT,
    work = const super::percpu::OFF_THREAD_WORK,
    work_mask = const super::percpu::work::MASK,
    work_fn = sym crate::lifecycle::return_to_user_work,
);
