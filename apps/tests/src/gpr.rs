//! Two assembly routines that set every general-purpose register and RFLAGS
//! to known values, let the kernel run (one `syscall`, or a spin long enough
//! to be preempted), and write back what the registers hold afterwards.
//!
//! # The frame
//! Both routines take a pointer to a [`GprFrame`] in RDI. `vals` holds the
//! value for each register in [`NAMES`] order; `out` gets what each register
//! held at the end. RBX and RBP are reserved by LLVM (RBP is the frame
//! pointer: the build forces frame pointers), so the routines push and pop
//! them themselves instead of naming them as operands.

use abi::Sysnum;
use core::arch::asm;
use core::mem::offset_of;

/// The registers in `vals`/`out` order.
pub const NAMES: [&str; 14] = [
    "rbx", "rbp", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
];
/// Index of RCX in [`NAMES`] (the `syscall` instruction overwrites it).
pub const RCX: usize = 2;
/// Index of RDX in [`NAMES`] (`rdtsc` overwrites it in the spin).
pub const RDX: usize = 3;
/// Index of R11 in [`NAMES`] (the `syscall` instruction overwrites it).
pub const R11: usize = 9;
/// The other indices into [`NAMES`] (and `vals`/`out`).
pub const RBX: usize = 0;
pub const RBP: usize = 1;
pub const RSI: usize = 4;
pub const RDI: usize = 5;
pub const R8: usize = 6;
pub const R9: usize = 7;
pub const R10: usize = 8;
pub const R12: usize = 10;
pub const R13: usize = 11;
pub const R14: usize = 12;
pub const R15: usize = 13;
/// Where an IPC message's words w0..w5 travel.
pub const WORDS: [usize; 6] = [RDX, R10, R8, R9, R12, R13];

/// RFLAGS bits user code controls and the kernel must hand back unchanged:
/// CF, PF, AF, ZF, SF, DF, OF.
pub const USER_FLAGS: u64 = 0xcd5;
/// RFLAGS.DF.
pub const DF: u64 = 1 << 10;

/// In/out block of [`syscall_regs`] and [`hold`].
#[repr(C)]
pub struct GprFrame {
    /// The value each register is set to.
    pub vals: [u64; 14],
    /// What each register held at the end.
    pub out: [u64; 14],
    /// [`syscall_regs`]: the syscall number (arguments are the `vals` of
    /// RDI, RSI, RDX, R10, R8, R9).
    pub nr: u64,
    /// The RFLAGS value loaded with `popfq` (bit 1 and IF are forced by the CPU).
    pub flags: u64,
    /// [`syscall_regs`]: RFLAGS after the syscall. [`hold`]: every
    /// [`USER_FLAGS`] bit that was ever seen changed, ORed together.
    pub flags_seen: u64,
    /// [`hold`]: spin until the TSC passes this.
    pub deadline: u64,
    /// [`hold`]: iterations of the flag-preserving inner `loop`.
    pub inner: u64,
    /// RSP once the routine's own pushes are done...
    pub rsp_before: u64,
    /// ...and at the same point after the syscall / spin (must be equal).
    pub rsp_after: u64,
    /// [`syscall_regs`]: RAX after the syscall (the result).
    pub rax_out: u64,
    /// [`hold`]: the longest gap between two TSC reads.
    pub max_gap: u64,
    /// [`syscall_regs`]: the address right after its `syscall` (where
    /// SYSRET resumes: what RCX holds after it).
    pub rip_after: u64,
}

impl GprFrame {
    /// A frame whose 14 values are distinct and derived from `seed`.
    pub const fn new(seed: u64, flags: u64) -> Self {
        let mut vals = [0u64; 14];
        let mut i = 0;
        while i < 14 {
            vals[i] = seed ^ ((i as u64 + 1) * 0x0001_0203_0405_0607);
            i += 1;
        }
        GprFrame {
            vals,
            out: [0; 14],
            nr: Sysnum::Null as u64,
            flags,
            flags_seen: 0,
            deadline: 0,
            inner: 2000,
            rsp_before: 0,
            rsp_after: 1,
            rax_out: 0,
            max_gap: 0,
            rip_after: 0,
        }
    }

    /// Compares `out` with `vals` (skipping `skip`) and the two RSP samples;
    /// prints the first mismatch.
    pub fn check_regs(&self, skip: &[usize]) -> Result<(), &'static str> {
        let regs = NAMES.iter().zip(self.out.iter().zip(&self.vals));
        for (i, (name, (&got, &want))) in regs.enumerate() {
            if !skip.contains(&i) && got != want {
                crate::note!("{name} = {got:#x}, expected {want:#x}");
                return Err("a general-purpose register changed");
            }
        }
        if self.rsp_after != self.rsp_before {
            crate::note!(
                "rsp = {:#x}, expected {:#x}",
                self.rsp_after,
                self.rsp_before
            );
            return Err("rsp changed");
        }
        Ok(())
    }
}

/// Sets every register from `f.vals` and RFLAGS from `f.flags`, issues
/// `syscall` with RAX = `f.nr`, and records the registers.
pub fn syscall_regs(f: &mut GprFrame) {
    // Register roles: RDI = frame pointer until the loads, then its own value;
    // RAX = syscall number / result; every other register = its test value.
    // SAFETY: the block saves and restores RBX/RBP itself, declares every
    // other GPR clobbered, leaves RSP and DF as it found them, and writes only
    // the frame `f` points at.
    unsafe {
        asm!(
            "push rbp",                          // LLVM's frame pointer: restored at the end
            "push rbx",                          // LLVM-reserved: restored at the end
            "push rdi",                          // [rsp+8] (below): the frame pointer
            "push qword ptr [rdi + {flags}]",    // [rsp]: the RFLAGS pattern for popfq
            "mov [rdi + {rsp_before}], rsp",     // RSP expected after syscall + pushfq
            "lea rax, [rip + 2f]",               // the return address RCX must hold after
            "mov [rdi + {rip_after}], rax",
            "mov rbx, [rdi + {vals} + 0]",       // rbx: value 0
            "mov rbp, [rdi + {vals} + 8]",       // rbp: value 1
            "mov rcx, [rdi + {vals} + 16]",      // rcx: value 2 (syscall overwrites it)
            "mov rdx, [rdi + {vals} + 24]",      // rdx: value 3
            "mov rsi, [rdi + {vals} + 32]",      // rsi: value 4
            "mov r8, [rdi + {vals} + 48]",       // r8: value 6
            "mov r9, [rdi + {vals} + 56]",       // r9: value 7
            "mov r10, [rdi + {vals} + 64]",      // r10: value 8
            "mov r11, [rdi + {vals} + 72]",      // r11: value 9 (syscall overwrites it)
            "mov r12, [rdi + {vals} + 80]",      // r12: value 10
            "mov r13, [rdi + {vals} + 88]",      // r13: value 11
            "mov r14, [rdi + {vals} + 96]",      // r14: value 12
            "mov r15, [rdi + {vals} + 104]",     // r15: value 13
            "mov rax, [rdi + {nr}]",             // rax: the syscall number (mov keeps RFLAGS)
            "mov rdi, [rdi + {vals} + 40]",      // rdi: value 5 (last: it held the frame)
            "popfq",                             // RFLAGS := pattern; [rsp] = frame pointer
            "syscall",                           // rax := result; rcx, r11 := clobbered
            "2:",
            "pushfq",                            // [rsp] = RFLAGS after; [rsp+8] = frame
            "xchg rdi, [rsp + 8]",               // rdi := frame; slot := rdi after
            "mov [rdi + {rsp_after}], rsp",      // same depth as rsp_before
            "mov [rdi + {rax_out}], rax",        // the syscall's result
            "mov [rdi + {out} + 0], rbx",
            "mov [rdi + {out} + 8], rbp",
            "mov [rdi + {out} + 16], rcx",
            "mov [rdi + {out} + 24], rdx",
            "mov [rdi + {out} + 32], rsi",
            "mov [rdi + {out} + 48], r8",
            "mov [rdi + {out} + 56], r9",
            "mov [rdi + {out} + 64], r10",
            "mov [rdi + {out} + 72], r11",
            "mov [rdi + {out} + 80], r12",
            "mov [rdi + {out} + 88], r13",
            "mov [rdi + {out} + 96], r14",
            "mov [rdi + {out} + 104], r15",
            "pop rax",                           // rax := RFLAGS after the syscall
            "mov [rdi + {flags_seen}], rax",
            "pop rax",                           // rax := rdi after the syscall
            "mov [rdi + {out} + 40], rax",
            "cld",                               // the Rust ABI wants DF clear on exit
            "pop rbx",                           // LLVM's rbx back
            "pop rbp",                           // LLVM's rbp back
            flags = const offset_of!(GprFrame, flags),
            flags_seen = const offset_of!(GprFrame, flags_seen),
            rsp_before = const offset_of!(GprFrame, rsp_before),
            rsp_after = const offset_of!(GprFrame, rsp_after),
            rax_out = const offset_of!(GprFrame, rax_out),
            rip_after = const offset_of!(GprFrame, rip_after),
            vals = const offset_of!(GprFrame, vals),
            out = const offset_of!(GprFrame, out),
            nr = const offset_of!(GprFrame, nr),
            inout("rdi") f as *mut GprFrame => _,
            out("rax") _, out("rcx") _, out("rdx") _, out("rsi") _,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            out("r12") _, out("r13") _, out("r14") _, out("r15") _,
        );
    }
}

/// Sets every register but RAX and RDX from `f.vals` and spins until the
/// TSC passes `f.deadline`. Each round reloads RFLAGS from `f.flags`, runs a
/// `loop` of `f.inner` iterations (LOOP leaves RFLAGS alone, so a preemption
/// there must hand the pattern back), then ORs the changed [`USER_FLAGS`]
/// bits into `f.flags_seen`. RAX/RDX carry `rdtsc`; during the inner loop RCX
/// is the counter and RAX holds RCX's test value.
pub fn hold(f: &mut GprFrame) {
    // Stack slots once the pushes are done:
    //   [rsp]    changed flag bits     [rsp+32] longest TSC gap
    //   [rsp+8]  RFLAGS pattern        [rsp+40] inner loop count
    //   [rsp+16] deadline              [rsp+48] frame pointer
    //   [rsp+24] previous TSC read     [rsp+56] rbx, [rsp+64] rbp
    // SAFETY: as for `syscall_regs`: RBX/RBP saved and restored here, every
    // other GPR declared clobbered, RSP and DF restored, only `*f` written.
    unsafe {
        asm!(
            "push rbp",                          // [rsp+64]: LLVM's frame pointer
            "push rbx",                          // [rsp+56]: LLVM-reserved
            "push rdi",                          // [rsp+48]: the frame pointer
            "push qword ptr [rdi + {inner}]",    // [rsp+40]: inner loop count
            "push 0",                            // [rsp+32]: longest gap so far
            "rdtsc",                             // edx:eax := TSC
            "shl rdx, 32",
            "or rax, rdx",                       // rax := TSC
            "push rax",                          // [rsp+24]: previous TSC read
            "push qword ptr [rdi + {deadline}]", // [rsp+16]: deadline
            "push qword ptr [rdi + {flags}]",    // [rsp+8]: RFLAGS pattern
            "push 0",                            // [rsp]: changed flag bits
            "mov [rdi + {rsp_before}], rsp",     // RSP the spin must keep
            "mov rbx, [rdi + {vals} + 0]",       // rbx: value 0
            "mov rbp, [rdi + {vals} + 8]",       // rbp: value 1
            "mov rcx, [rdi + {vals} + 16]",      // rcx: value 2
            "mov rsi, [rdi + {vals} + 32]",      // rsi: value 4 (rdx, value 3, is scratch)
            "mov r8, [rdi + {vals} + 48]",       // r8: value 6
            "mov r9, [rdi + {vals} + 56]",       // r9: value 7
            "mov r10, [rdi + {vals} + 64]",      // r10: value 8
            "mov r11, [rdi + {vals} + 72]",      // r11: value 9
            "mov r12, [rdi + {vals} + 80]",      // r12: value 10
            "mov r13, [rdi + {vals} + 88]",      // r13: value 11
            "mov r14, [rdi + {vals} + 96]",      // r14: value 12
            "mov r15, [rdi + {vals} + 104]",     // r15: value 13
            "mov rdi, [rdi + {vals} + 40]",      // rdi: value 5 (last: it held the frame)
            "2:",
            "mov rax, [rsp + 8]",                // rax := RFLAGS pattern
            "push rax",
            "popfq",                             // RFLAGS := pattern (IF stays set)
            "mov rax, [rsp + 40]",               // rax := inner count (mov keeps RFLAGS)
            "xchg rax, rcx",                     // rcx := counter; rax := rcx's value
            "3:",
            "loop 3b",                           // spin; LOOP keeps RFLAGS
            "xchg rax, rcx",                     // rcx := its value again
            "pushfq",
            "pop rax",                           // rax := RFLAGS now
            "xor rax, [rsp + 8]",                // bits that differ (RFLAGS clobbered)
            "and rax, {user_flags}",             // only the user-controlled ones
            "or [rsp], rax",                     // accumulate
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",                       // rax := TSC now
            "mov rdx, rax",
            "sub rdx, [rsp + 24]",               // rdx := gap since the previous read
            "mov [rsp + 24], rax",               // previous := now
            "cmp rdx, [rsp + 32]",
            "jbe 4f",
            "mov [rsp + 32], rdx",               // a new longest gap
            "4:",
            "cmp rax, [rsp + 16]",
            "jb 2b",                             // until the deadline
            "xchg rdi, [rsp + 48]",              // rdi := frame; slot := rdi's value
            "mov [rdi + {rsp_after}], rsp",
            "mov [rdi + {out} + 0], rbx",
            "mov [rdi + {out} + 8], rbp",
            "mov [rdi + {out} + 16], rcx",
            "mov [rdi + {out} + 32], rsi",
            "mov [rdi + {out} + 48], r8",
            "mov [rdi + {out} + 56], r9",
            "mov [rdi + {out} + 64], r10",
            "mov [rdi + {out} + 72], r11",
            "mov [rdi + {out} + 80], r12",
            "mov [rdi + {out} + 88], r13",
            "mov [rdi + {out} + 96], r14",
            "mov [rdi + {out} + 104], r15",
            "mov rax, [rsp + 48]",               // rdi's value
            "mov [rdi + {out} + 40], rax",
            "mov rax, [rsp]",                    // changed flag bits
            "mov [rdi + {flags_seen}], rax",
            "mov rax, [rsp + 32]",               // longest gap
            "mov [rdi + {max_gap}], rax",
            "add rsp, 56",                       // drop the seven slots
            "cld",                               // the Rust ABI wants DF clear on exit
            "pop rbx",                           // LLVM's rbx back
            "pop rbp",                           // LLVM's rbp back
            flags = const offset_of!(GprFrame, flags),
            flags_seen = const offset_of!(GprFrame, flags_seen),
            deadline = const offset_of!(GprFrame, deadline),
            inner = const offset_of!(GprFrame, inner),
            rsp_before = const offset_of!(GprFrame, rsp_before),
            rsp_after = const offset_of!(GprFrame, rsp_after),
            max_gap = const offset_of!(GprFrame, max_gap),
            vals = const offset_of!(GprFrame, vals),
            out = const offset_of!(GprFrame, out),
            user_flags = const USER_FLAGS,
            inout("rdi") f as *mut GprFrame => _,
            out("rax") _, out("rcx") _, out("rdx") _, out("rsi") _,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            out("r12") _, out("r13") _, out("r14") _, out("r15") _,
        );
    }
}
