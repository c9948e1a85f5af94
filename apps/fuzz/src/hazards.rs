//! Phase 2: register and instruction hazards, each a few bytes of machine
//! code written into a fresh executable page and run by a throwaway thread.
//!
//! Every hazard must end its thread (a CPU exception, or the `thread_exit`
//! at its tail) without hurting the kernel. Some must fault: privileged
//! instructions, every `int N`, forged `iretq` frames that name ring 0; a
//! hazard that was supposed to fault but ran to its exit is a finding. A
//! TI=1 (LDT) selector must raise #GP: a #PF means the CPU read a
//! descriptor from a stale LDT at a user address (issue 7 item 0;
//! `fuzz.skip=ldt` leaves these out).

use crate::finding;
use crate::gen::LAST_PAGE;
use crate::util::{self, bump, COUNT};
use abi::status::{self, Status};
use abi::{prot, Sysnum};
use fuzz::{Category, Config};
use libipc::sys;

/// The window the hazard pages live in (pre-touched).
pub const HAZARD_WINDOW: u64 = 0x5800_0000_0000;
/// The code page.
const CODE: u64 = HAZARD_WINDOW;
/// A data page (far pointers, descriptor-table operands).
const DATA: u64 = HAZARD_WINDOW + 0x1000;
/// Offset of the common exit tail in the code page.
const TAIL: u64 = 0x800;

/// A canonical kernel-half address.
const KERNEL: u64 = 0xffff_ffff_8010_0000;
/// The first non-canonical address.
const NON_CANONICAL: u64 = 0x0000_8000_0000_0000;

/// What a hazard must do.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// End any way (exit or fault).
    Any,
    /// Fault (with any vector).
    Fault,
    /// Fault, and with #GP/#NP/#SS (11/12/13) rather than #PF: a TI=1
    /// selector.
    LdtFault,
}

/// A few bytes of machine code.
struct Code {
    buf: [u8; 256],
    len: usize,
}

impl Code {
    fn new() -> Code {
        Code {
            buf: [0; 256],
            len: 0,
        }
    }

    fn b(&mut self, bytes: &[u8]) -> &mut Code {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        self
    }

    /// `mov rax, imm64`.
    fn mov_rax(&mut self, v: u64) -> &mut Code {
        self.b(&[0x48, 0xb8]).b(&v.to_le_bytes())
    }

    /// `mov rax, imm64; push rax`.
    fn push(&mut self, v: u64) -> &mut Code {
        self.mov_rax(v).b(&[0x50])
    }

    /// `mov eax, Null; syscall`.
    fn null_syscall(&mut self) -> &mut Code {
        self.b(&[0xb8, Sysnum::Null as u8, 0, 0, 0, 0x0f, 0x05])
    }

    /// A jump to the exit tail (`mov rax, CODE+TAIL; jmp rax`).
    fn exit(&mut self) -> &mut Code {
        self.mov_rax(CODE + TAIL).b(&[0xff, 0xe0])
    }
}

/// The tail every hazard ends in: `thread_exit(0)`.
const EXIT_TAIL: [u8; 11] = [
    0x31,
    0xff, // xor edi, edi
    0xb8,
    Sysnum::ThreadExit as u8,
    0,
    0,
    0, // mov eax, ThreadExit
    0x0f,
    0x05, // syscall
    0x0f,
    0x0b, // ud2
];

/// Runs `code` at [`CODE`] in a fresh thread; its status, or None if the
/// thread could not be started.
fn run_code(code: &Code, data: &[u8]) -> Option<Status> {
    sys::map_anon(CODE, 4096, prot::WRITE).ok()?;
    if sys::map_anon(DATA, 4096, prot::WRITE).is_err() {
        // SAFETY: only hazards use the window.
        let _ = unsafe { sys::unmap(CODE, 4096) };
        return None;
    }
    // SAFETY: both pages were just mapped writable; only this code uses them.
    unsafe {
        core::ptr::copy_nonoverlapping(code.buf.as_ptr(), CODE as *mut u8, code.len);
        // A `cli` just before the tail, for the frame that tries IOPL 3.
        ((CODE + TAIL - 1) as *mut u8).write(0xfa);
        core::ptr::copy_nonoverlapping(
            EXIT_TAIL.as_ptr(),
            (CODE + TAIL) as *mut u8,
            EXIT_TAIL.len(),
        );
        core::ptr::copy_nonoverlapping(data.as_ptr(), DATA as *mut u8, data.len());
    }
    let mut st = None;
    // SAFETY: nothing references the code page's contents as data.
    if unsafe { sys::protect(CODE, 4096, prot::EXEC) }.is_ok() {
        // SAFETY: the hazard code touches only its own pages and registers,
        // then faults or exits its thread.
        if let Ok(t) = unsafe { util::spawn_at(CODE, 0) } {
            st = t.join().ok().map(status::decode);
        }
    }
    // SAFETY: the thread has ended; only hazards use the window.
    let _ = unsafe { sys::unmap(HAZARD_WINDOW, 0x2000) };
    st
}

/// Runs one hazard and judges it.
fn hazard(name: &str, detail: u64, code: &Code, data: &[u8], expect: Expect) {
    let Some(st) = run_code(code, data) else {
        return;
    };
    if let Status::Faulted(_) = st {
        bump(&COUNT.faults);
    }
    match (expect, st) {
        (Expect::Fault | Expect::LdtFault, Status::Exited(_)) => {
            finding!("hazard {name} {detail:#x} ran to its end instead of faulting")
        }
        (Expect::LdtFault, Status::Faulted(14)) => finding!(
            "hazard {name} {detail:#x}: a TI=1 (LDT) selector raised #PF, not #GP: the CPU read a descriptor from a stale LDT"
        ),
        _ => {}
    }
}

/// Selectors for the segment hazards: the GDT's entries at every RPL, the
/// TSS's halves, past the GDT's end, and LDT (TI=1) selectors.
const SELECTORS: &[u16] = &[
    0x00, 0x03, 0x08, 0x0b, 0x10, 0x13, 0x18, 0x1b, 0x20, 0x23, 0x28, 0x2b, 0x30, 0x33, 0x38, 0x40,
    0x80, 0x1000, 0xfff8, 0xfffb, // GDT
    0x04, 0x07, 0x0c, 0x0f, 0x1f, 0x27, 0x0ff7, 0xfff4, 0xfff7, 0xffff, // LDT
];

fn segment_hazards(cfg: &Config) {
    let ldt = !cfg.skips(Category::Ldt);
    // mov <sreg>, ax: ModRM for es, ss, ds, fs, gs.
    const SREGS: [(&str, u8); 5] = [
        ("mov es", 0xc0),
        ("mov ss", 0xd0),
        ("mov ds", 0xd8),
        ("mov fs", 0xe0),
        ("mov gs", 0xe8),
    ];
    for &sel in SELECTORS {
        let ti = sel & 4 != 0;
        if ti && !ldt {
            continue;
        }
        let expect = if ti { Expect::LdtFault } else { Expect::Any };
        let s = sel.to_le_bytes();
        for (name, modrm) in SREGS {
            let mut c = Code::new();
            c.b(&[0x66, 0xb8, s[0], s[1], 0x8e, modrm]).exit();
            hazard(name, sel as u64, &c, &[], expect);
        }
        // Far call and far jump through a m16:64 pointer to the exit tail.
        let mut ptr = [0u8; 10];
        ptr[..8].copy_from_slice(&(CODE + TAIL).to_le_bytes());
        ptr[8..].copy_from_slice(&s);
        for (name, modrm) in [("lcall", 0x18u8), ("ljmp", 0x28)] {
            let mut c = Code::new();
            c.mov_rax(DATA).b(&[0x48, 0xff, modrm]).exit();
            hazard(name, sel as u64, &c, &ptr, expect);
            // The 32-bit form (m16:32).
            let mut p32 = [0u8; 6];
            p32[..4].copy_from_slice(&((CODE + TAIL) as u32).to_le_bytes());
            p32[4..].copy_from_slice(&s);
            let mut c = Code::new();
            c.mov_rax(DATA).b(&[0xff, modrm]).exit();
            hazard(name, sel as u64, &c, &p32, expect);
        }
    }
}

/// Privileged and odd instructions; each must fault (`rax` points at the
/// data page for the ones with a memory operand).
const PRIVILEGED: &[(&str, &[u8])] = &[
    ("hlt", &[0xf4]),
    ("cli", &[0xfa]),
    ("sti", &[0xfb]),
    ("clts", &[0x0f, 0x06]),
    ("mov rax, cr0", &[0x0f, 0x20, 0xc0]),
    ("mov rax, cr3", &[0x0f, 0x20, 0xd8]),
    ("mov cr3, rax", &[0x0f, 0x22, 0xd8]),
    ("mov cr4, rax", &[0x0f, 0x22, 0xe0]),
    ("mov cr8, rax", &[0x44, 0x0f, 0x22, 0xc0]),
    ("mov rax, dr7", &[0x0f, 0x21, 0xf8]),
    ("mov dr7, rax", &[0x0f, 0x23, 0xf8]),
    ("wrmsr", &[0x0f, 0x30]),
    ("rdmsr", &[0x0f, 0x32]),
    ("in al, dx", &[0xec]),
    ("out dx, al", &[0xee]),
    ("in al, 0x80", &[0xe4, 0x80]),
    ("out 0xf4, al", &[0xe6, 0xf4]),
    ("insb", &[0x6c]),
    ("outsb", &[0x6e]),
    ("lgdt [rax]", &[0x0f, 0x01, 0x10]),
    ("lidt [rax]", &[0x0f, 0x01, 0x18]),
    ("lldt ax", &[0x0f, 0x00, 0xd0]),
    ("ltr ax", &[0x0f, 0x00, 0xd8]),
    ("lmsw ax", &[0x0f, 0x01, 0xf0]),
    ("invlpg [rax]", &[0x0f, 0x01, 0x38]),
    ("swapgs", &[0x0f, 0x01, 0xf8]),
    ("sysretq", &[0x48, 0x0f, 0x07]),
    ("sysexit", &[0x0f, 0x35]),
    ("sysenter", &[0x0f, 0x34]),
    ("xsetbv", &[0x0f, 0x01, 0xd1]),
    ("vmcall", &[0x0f, 0x01, 0xc1]),
    ("monitor", &[0x0f, 0x01, 0xc8]),
    ("mwait", &[0x0f, 0x01, 0xc9]),
    ("int3", &[0xcc]),
    // `invd` and `wbinvd` are left out: QEMU 10's TCG runs them in ring 3
    // (an emulator bug; no control bit lets ring 3 run them). So is `into`
    // (invalid in 64-bit mode, which TCG executes as a no-op).
    ("icebp", &[0xf1]),
    ("ud2", &[0x0f, 0x0b]),
    (
        "iretq with NT",
        &[
            0x9c, 0x48, 0x81, 0x0c, 0x24, 0x00, 0x40, 0, 0, 0x9d, 0x48, 0xcf,
        ],
    ),
    ("push forever", &[0x50, 0xeb, 0xfd]),
    ("call forever", &[0xe8, 0xfb, 0xff, 0xff, 0xff]),
];

fn instruction_hazards() {
    for &(name, bytes) in PRIVILEGED {
        let mut c = Code::new();
        c.mov_rax(DATA).b(bytes).exit();
        hazard(name, 0, &c, &[0u8; 16], Expect::Fault);
    }
    for n in 0..=255u8 {
        let mut c = Code::new();
        c.b(&[0xcd, n]).exit();
        hazard("int", n as u64, &c, &[], Expect::Fault);
    }
}

/// RFLAGS bits set (with `popfq`) just before a `syscall`, then a spin so
/// interrupts arrive with them set: TF, AC, NT, DF (by `std`), all of them.
fn flag_hazards() {
    for bits in [0x100u32, 0x4_0000, 0x4000, 0, 0x4_4100] {
        let b = bits.to_le_bytes();
        let mut c = Code::new();
        c.b(&[0xfd]) // std
            .b(&[0x9c, 0x48, 0x81, 0x0c, 0x24, b[0], b[1], b[2], b[3], 0x9d]) // pushfq; or [rsp], bits; popfq
            .null_syscall()
            .b(&[0xb9, 0x00, 0x00, 0x10, 0x00, 0xff, 0xc9, 0x75, 0xfc]) // mov ecx, 1M; 1: dec ecx; jnz 1b
            .null_syscall()
            .exit();
        hazard("flags around syscall", bits as u64, &c, &[], Expect::Any);
    }
}

/// A bad RSP at `syscall` (saved in RBX, restored after), and a bad RSP
/// followed by a push (which must fault).
fn rsp_hazards() {
    for rsp in [
        0,
        1,
        8,
        KERNEL,
        NON_CANONICAL,
        0xffff_ffff_ffff_fff8,
        LAST_PAGE + 0xfff,
        0x1000,
    ] {
        let mut c = Code::new();
        c.b(&[0x48, 0x89, 0xe3]) // mov rbx, rsp
            .b(&[0x48, 0xbc])
            .b(&rsp.to_le_bytes()) // mov rsp, imm64
            .null_syscall()
            .b(&[0x48, 0x89, 0xdc]) // mov rsp, rbx
            .exit();
        hazard("bad rsp at syscall", rsp, &c, &[], Expect::Any);
        let mut c = Code::new();
        c.b(&[0x48, 0xbc])
            .b(&rsp.to_le_bytes())
            .null_syscall()
            .b(&[0x50])
            .exit();
        hazard("bad rsp then push", rsp, &c, &[], Expect::Fault);
    }
}

/// Forged `iretq` frames: (name, ss, rflags, cs, rip, must fault).
fn iret_hazards(cfg: &Config) {
    const UCS: u64 = 0x23;
    const UDS: u64 = 0x1b;
    let tail = CODE + TAIL;
    let frames: [(&str, u64, u64, u64, u64, bool); 12] = [
        ("valid", UDS, 0x202, UCS, tail, false),
        ("kernel cs", UDS, 0x202, 0x08, tail, true),
        ("user cs at rpl 0", UDS, 0x202, 0x20, tail, true),
        ("kernel ss", 0x10, 0x202, UCS, tail, true),
        ("null ss", 0, 0x202, UCS, tail, true),
        ("tss as cs", UDS, 0x202, 0x2b, tail, true),
        ("ldt cs", UDS, 0x202, 0x27, tail, true),
        ("non-canonical rip", UDS, 0x202, UCS, NON_CANONICAL, true),
        ("kernel rip", UDS, 0x202, UCS, KERNEL, true),
        ("iopl 3 then cli", UDS, 0x3202, UCS, CODE + TAIL - 1, true),
        ("tf", UDS, 0x302, UCS, tail, false),
        ("ac nt df vm rf", UDS, 0x7_4602, UCS, tail, false),
    ];
    for (name, ss, rflags, cs, rip, fault) in frames {
        if name == "ldt cs" && cfg.skips(Category::Ldt) {
            continue;
        }
        let mut c = Code::new();
        c.b(&[0x48, 0x89, 0xe3]) // mov rbx, rsp
            .push(ss)
            .b(&[0x53]) // push rbx (the frame's rsp)
            .push(rflags)
            .push(cs)
            .push(rip)
            .b(&[0x48, 0xcf]); // iretq
        let expect = if fault { Expect::Fault } else { Expect::Any };
        hazard(name, 0, &c, &[], expect);
    }
}

/// `syscall` as the last instruction of the user half: the return address is
/// non-canonical and must never reach `sysretq` (CVE-2012-0217).
fn last_page_hazard() {
    // SAFETY: only hazards use the last page now (the workers have ended).
    let _ = unsafe { sys::unmap(LAST_PAGE, 4096) };
    if sys::map_anon(LAST_PAGE, 4096, prot::WRITE).is_err() {
        return;
    }
    // `null`, and the IPC syscalls the dispatcher's own IPC entry runs
    // (one entry per syscall since session 23, each with its own end) or
    // that share its decode: refused (handle 0), they return to RIP
    // USER_END all the same.
    for n in [
        Sysnum::Null,
        Sysnum::IpcCall,
        Sysnum::IpcReplyRecv,
        Sysnum::IpcRecv,
    ] {
        let code = [0xb8, n as u8, 0, 0, 0, 0x0f, 0x05];
        let start = LAST_PAGE + 4096 - code.len() as u64;
        // SAFETY: nothing references the page as data (W^X: writable again
        // for the next variant's bytes).
        if unsafe { sys::protect(LAST_PAGE, 4096, prot::WRITE) }.is_err() {
            break;
        }
        // SAFETY: the page is mapped writable and nothing else uses it.
        unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), start as *mut u8, code.len()) };
        // SAFETY: nothing references the page as data.
        if unsafe { sys::protect(LAST_PAGE, 4096, prot::EXEC) }.is_err() {
            break;
        }
        // The kernel's refusals of a non-canonical return so far (the
        // workers have ended: nothing else returns to the last user byte).
        // The #GP alone proves nothing: TCG's SYSRET to that RIP raises #GP
        // in ring 3 (AMD-style), so a kernel without the check passes it
        // (ripcheck, session 24).
        let before = util::cpu_counter(6);
        // SAFETY: the thread runs the two instructions and faults.
        if let Ok(t) = unsafe { util::spawn_at(start, 0) } {
            match t.join().map(status::decode) {
                Ok(Status::Faulted(13)) if util::cpu_counter(6).wrapping_sub(before) == 1 => {
                    bump(&COUNT.faults)
                }
                Ok(st) => finding!(
                    "syscall {n:?} in the last user page ended with {st:?} after {} refusals, \
                     not one refused non-canonical return (#GP)",
                    util::cpu_counter(6).wrapping_sub(before)
                ),
                Err(_) => {}
            }
        }
    }
    // SAFETY: the thread has ended.
    let _ = unsafe { sys::unmap(LAST_PAGE, 4096) };
}

/// Runs every hazard.
pub fn run(cfg: &Config) {
    // The workers may have left the last user page mapped; the bad-RSP
    // hazards count on it being absent (a push at a non-canonical RSP
    // lands just below USER_END).
    // SAFETY: nothing of the fuzzer's lives in the last page.
    let _ = unsafe { sys::unmap(LAST_PAGE, 4096) };
    instruction_hazards();
    flag_hazards();
    rsp_hazards();
    iret_hazards(cfg);
    segment_hazards(cfg);
    last_page_hazard();
}
