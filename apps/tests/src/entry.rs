//! How a thread enters ring 3, and what the kernel does with a thread whose
//! stack pointer is garbage: a new thread must start with no kernel values
//! in its registers and sane RFLAGS, and a syscall or interrupt taken with a
//! bad user RSP must not hurt the kernel (it never touches the user stack).

use crate::fpu::{self, SimdState};
use crate::note;
use crate::util::{self, deadline_ms, TestResult};
use abi::layout::USER_END;
use abi::status::Status;
use abi::Sysnum;
use core::arch::{asm, naked_asm};
use core::cell::UnsafeCell;
use libipc::sys;

/// What [`clean_entry`] found on entry: RAX..R15 (in encoding order: RAX,
/// RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15), then RFLAGS, then the
/// SIMD/FPU state.
#[repr(C, align(32))]
struct EntryDump {
    gprs: [u64; 16],
    rflags: u64,
    _pad: [u64; 3],
    simd: SimdState,
}

/// Register names in [`EntryDump::gprs`] order.
const GPR_NAMES: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];

/// The dump, written by the one [`clean_entry`] thread and read by
/// [`new_thread_starts_clean`] after joining it.
struct DumpCell(UnsafeCell<EntryDump>);
// SAFETY: only one thread touches the cell at a time: the spawned thread
// until it ends, then (after `thread_join`) the main thread.
unsafe impl Sync for DumpCell {}
static DUMP: DumpCell = DumpCell(UnsafeCell::new(EntryDump {
    gprs: [0; 16],
    rflags: 0,
    _pad: [0; 3],
    simd: SimdState::zeroed(),
}));

/// The argument [`new_thread_starts_clean`] passes.
const ARG: u64 = 0x0000_4567_89ab_cdef;

/// A thread entry that records every register before anything else runs,
/// then continues in [`clean_rest`].
#[unsafe(naked)]
extern "C" fn clean_entry(_arg: u64) -> ! {
    naked_asm!(
        "mov [rip + {d} + 0], rax",    // each register, as the kernel left it
        "mov [rip + {d} + 8], rcx",
        "mov [rip + {d} + 16], rdx",
        "mov [rip + {d} + 24], rbx",
        "mov [rip + {d} + 32], rsp",
        "mov [rip + {d} + 40], rbp",
        "mov [rip + {d} + 48], rsi",
        "mov [rip + {d} + 56], rdi",
        "mov [rip + {d} + 64], r8",
        "mov [rip + {d} + 72], r9",
        "mov [rip + {d} + 80], r10",
        "mov [rip + {d} + 88], r11",
        "mov [rip + {d} + 96], r12",
        "mov [rip + {d} + 104], r13",
        "mov [rip + {d} + 112], r14",
        "mov [rip + {d} + 120], r15",
        "pushfq",                      // (the stack is the one thread_spawn got)
        "pop rax",
        "mov [rip + {d} + 128], rax",  // RFLAGS
        "and rsp, -16",                // a call-aligned stack for Rust
        "call {rest}",                 // never returns
        "ud2",
        d = sym DUMP,
        rest = sym clean_rest,
    )
}

/// Records the SIMD/FPU state (no Rust code has touched it: soft-float) and
/// exits.
extern "C" fn clean_rest() -> ! {
    // SAFETY: this thread is the only user of `DUMP` until it ends.
    let dump = unsafe { &mut *DUMP.0.get() };
    fpu::store(&mut dump.simd, util::has_avx());
    sys::thread_exit(0)
}

/// Case: a new thread starts with RDI = its argument, RSP inside its stack,
/// no kernel-half value in any register, RFLAGS with IF set and DF, TF, AC,
/// NT and IOPL clear, and the SIMD/FPU state either clean or the spawner's.
pub fn new_thread_starts_clean() -> TestResult {
    let avx = util::has_avx();
    // The spawner's own SIMD state: a leak from elsewhere differs from both
    // this and the clean state.
    let mine = SimdState::pattern(0x6666_0000_0000_0003);
    fpu::load(&mine, avx);
    util::expect_ok(util::run(clean_entry, ARG)?)?;
    // SAFETY: the thread that wrote the dump has ended (joined above).
    let dump = unsafe { &*DUMP.0.get() };
    let g = &dump.gprs;
    if g[7] != ARG {
        note!("rdi = {:#x}", g[7]);
        return Err("RDI is not the thread's argument");
    }
    for (name, &v) in GPR_NAMES.iter().zip(g) {
        if v >= USER_END {
            note!("{name} = {v:#x} on entry");
            return Err("a kernel value leaked into a new thread's register");
        }
    }
    let f = dump.rflags;
    // IF set; TF, DF, NT, AC clear; IOPL 0.
    if f & 0x200 == 0 || f & (0x100 | 0x400 | 0x4000 | 0x4_0000 | 0x3000) != 0 {
        note!("rflags = {f:#x} on entry");
        return Err("a new thread's RFLAGS are not clean");
    }
    let mut clean = SimdState::zeroed();
    clean.mxcsr = 0x1f80;
    clean.fcw = 0x037f;
    if dump.simd.check(&clean, avx).is_err() && dump.simd.check(&mine, avx).is_err() {
        return Err("a new thread's SIMD state is neither clean nor the spawner's");
    }
    Ok(())
}

/// What [`bad_rsp_thread`] exits with when Null returned 0.
const BAD_RSP_OK: i32 = 7;
/// Stack pointers a thread may set: page 0, the kernel half, non-canonical,
/// and misaligned.
const BAD_RSPS: [u64; 4] = [
    0,
    0xffff_ffff_8010_0000,
    0x0000_8000_0000_0000,
    0x4300_0000_0003,
];

/// Sets RSP to the value passed in, spins ~25 ms (timer interrupts arrive
/// meanwhile), issues Null, and exits with [`BAD_RSP_OK`] if it returned 0
/// (8 if not) -- all without touching the stack.
extern "C" fn bad_rsp_thread(bad: u64) -> ! {
    let deadline = deadline_ms(25);
    // SAFETY: the block never returns and never uses the stack after RSP is
    // replaced: it ends the thread with a raw ThreadExit syscall.
    unsafe {
        asm!(
            "mov rsp, r12",        // rsp := the bad value
            "2:",
            "rdtsc",               // edx:eax := TSC
            "shl rdx, 32",
            "or rax, rdx",         // rax := TSC
            "cmp rax, r13",        // r13: deadline
            "jb 2b",
            "mov eax, {null}",     // rax: Null
            "syscall",             // rax := result (the kernel must not need our stack)
            "mov edi, {ok}",       // rdi: exit code if Null returned 0
            "test rax, rax",
            "jz 3f",
            "mov edi, {ok} + 1",   // rdi: exit code otherwise
            "3:",
            "mov eax, {exit}",     // rax: ThreadExit(rdi)
            "syscall",
            "ud2",                 // not reached
            in("r12") bad,
            in("r13") deadline,
            null = const Sysnum::Null as u64,
            exit = const Sysnum::ThreadExit as u64,
            ok = const BAD_RSP_OK,
            options(noreturn),
        );
    }
}

/// Case: syscalls and interrupts taken with a garbage user RSP (null,
/// kernel, non-canonical, misaligned) work and leave the kernel well.
pub fn bad_user_rsp_is_harmless() -> TestResult {
    for bad in BAD_RSPS {
        match util::run(bad_rsp_thread, bad)? {
            Status::Exited(BAD_RSP_OK) => {}
            other => {
                note!("rsp = {bad:#x}: thread ended with {other:?}");
                return Err("a thread with a bad RSP did not run to its exit");
            }
        }
    }
    if sys::null() != 0 {
        return Err("the main thread is not well afterwards");
    }
    Ok(())
}
