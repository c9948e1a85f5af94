//! IPC figures (issue 10): a register-only call + reply round trip between
//! two processes on one CPU (`ipc_call_same_core`) and on two
//! (`ipc_call_cross_core`), the same with a 4 KiB buffer each way
//! (`ipc_buffer_4k_same_core`), and a notification signal + wait
//! (`notify_signal_wait`). One sample is one round trip as the client sees
//! it (its user-side stub included).
//!
//! The server is a stackless child process ([`ECHO`]): it pins itself to
//! the CPU its spawn argument names, receives on the endpoint its parent
//! gives it (its first handle) and echoes every message with
//! `reply_recv`; label 0xdead makes it reply and exit.

use crate::{CHILD_TEXT, ITERS, WARMUP};
use abi::bootimg::encode_code;
use abi::{Error, Sysnum};
use core::arch::global_asm;
use libipc::bench::rdtsc;
use libipc::ipc::{self, rights, Endpoint, IpcRegs, Message};
use libipc::sys;

/// Returned by a figure that this machine cannot measure (one CPU for a
/// cross-core figure): the figure is left out, not failed.
pub const SKIP: &str = "skipped";

const ECHO_BUF: u64 = 0x5556_0000_0000;
const STOP: u32 = 0xdead;
/// Or'ed into the echo's CPU argument: it gives itself live SIMD and x87
/// state first (`ipc_call_same_core_fpu`).
const FPU_LIVE: u64 = 0x100;

global_asm!(
    ".pushsection .rodata.mica_bench_echo, \"a\"",
    "mica_bench_echo:",
    "test edi, {fpu}",           // rdi: the CPU to pin to, | FPU_LIVE:
    "jz 4f",                     // give the echo live SIMD/x87 state
    "movq xmm1, rdi",            // xmm1, xmm2: non-zero (SSE not in init)
    "pcmpeqd xmm2, xmm2",
    "fld1",                      // st0: 1.0 (x87 not in init state)
    "4:",
    "and edi, 0xff",
    "mov eax, {affinity}",
    "syscall",
    "mov rdi, {buf}",
    "mov esi, 65536",
    "mov edx, {write}",
    "mov eax, {map_anon}",
    "syscall",
    "1:",
    "mov edi, {h}",              // rdi: the endpoint (our first handle)
    "xor esi, esi",
    "mov r14, {buf}",            // r14: buffer, r15: 64 KiB, no timeout
    "mov r15d, 65536",
    "mov eax, {recv}",
    "syscall",
    "test rax, rax",
    "jz 2f",
    "mov eax, {yield_}",         // not given yet: wait
    "syscall",
    "jmp 1b",
    "2:",
    "cmp esi, {stop}",
    "je 3f",
    "mov edi, {h}",              // echo rsi (label, length) and the words
    "mov eax, {reply_recv}",     // (r14, r15 are preserved by the kernel)
    "syscall",
    "test rax, rax",
    "jz 2b",
    "3:",
    "mov eax, {reply}",
    "syscall",
    "xor edi, edi",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "mica_bench_echo_end:",
    ".popsection",
    affinity = const Sysnum::SetAffinity as u64,
    pexit = const Sysnum::ProcessExit as u64,
    yield_ = const Sysnum::Yield as u64,
    map_anon = const Sysnum::MapAnon as u64,
    recv = const Sysnum::IpcRecv as u64,
    reply = const Sysnum::IpcReply as u64,
    reply_recv = const Sysnum::IpcReplyRecv as u64,
    write = const abi::prot::WRITE,
    buf = const ECHO_BUF,
    h = const ipc::FIRST_HANDLE,
    stop = const STOP,
    fpu = const FPU_LIVE,
);

extern "C" {
    static mica_bench_echo: u8;
    static mica_bench_echo_end: u8;
}

/// An echo server process pinned to `cpu`, serving a fresh endpoint.
struct Echo {
    ep: Endpoint,
    pid: sys::ProcessHandle,
}

impl Echo {
    fn start(cpu: u64) -> Result<Echo, &'static str> {
        let (start, end) = (
            core::ptr::addr_of!(mica_bench_echo),
            core::ptr::addr_of!(mica_bench_echo_end),
        );
        // SAFETY: both labels are in one read-only section, `end` after
        // `start`, and the bytes between them never change.
        let text = unsafe { core::slice::from_raw_parts(start, end.offset_from(start) as usize) };
        let mut buf = [0u8; 256];
        let len = encode_code(CHILD_TEXT, text, &mut buf).map_err(|_| "cannot encode the echo")?;
        let ep = ipc::endpoint_create().map_err(|_| "endpoint_create failed")?;
        let pid = sys::process_spawn(&buf[..len], cpu).map_err(|_| "process_spawn failed")?;
        if ipc::handle_give(pid, ep.0, rights::RECV).is_err() {
            return Err("handle_give failed");
        }
        Ok(Echo { ep, pid })
    }

    fn stop(self) -> Result<(), &'static str> {
        let stop = Message {
            label: STOP,
            words: [0; 6],
        };
        let r = ipc::call(self.ep, &stop, Some(1_000_000));
        let st = sys::process_wait(self.pid).map(abi::status::decode);
        let _ = ipc::handle_close(self.ep.0);
        match (r, st) {
            (Ok(_), Ok(abi::status::Status::Exited(0))) => Ok(()),
            _ => Err("the echo server did not stop cleanly"),
        }
    }
}

/// Round trips of register-only calls to an echo on `cpu`.
fn calls(samples: &mut [u64], cpu: u64) -> Result<usize, &'static str> {
    let echo = Echo::start(cpu)?;
    let m = Message {
        label: 7,
        words: [1, 2, 3, 4, 5, 6],
    };
    let mut bad = false;
    for _ in 0..WARMUP {
        bad |= ipc::call(echo.ep, &m, None) != Ok(m);
    }
    // The timed window: rdtsc, the register-only stub (`ipc::call_regs`:
    // the words in registers, `syscall`, RBX/RBP saved around it), rdtsc,
    // and the sample store; the echo's own loop (`mica_bench_echo`) is 4
    // instructions per message. The reply is checked outside the window.
    for s in samples.iter_mut() {
        let mut w = m.words;
        let t0 = rdtsc();
        let (rax, label) = ipc::call_regs(echo.ep, m.label, &mut w);
        *s = rdtsc() - t0;
        bad |= rax != 0 || label != m.label || w != m.words;
    }
    echo.stop()?;
    if bad {
        return Err("a reply was not the echo of its call");
    }
    Ok(samples.len().min(ITERS))
}

/// `ipc_call_same_core`: client and server both on CPU 0.
pub fn ipc_call_same_core(samples: &mut [u64]) -> Result<usize, &'static str> {
    calls(samples, 0)
}

/// `ipc_call_same_core_fpu`: the same, with live SIMD and x87 state on both
/// sides (so each switch saves and restores real FPU state, whatever a
/// kernel does to spare threads that never touched it).
pub fn ipc_call_same_core_fpu(samples: &mut [u64]) -> Result<usize, &'static str> {
    // SAFETY: the target is soft-float: compiled code never uses XMM or x87
    // registers, so giving them values breaks no compiler assumption.
    unsafe {
        core::arch::asm!(
            "movq xmm3, {v}",    // xmm3: non-zero (SSE state not in init)
            "pcmpeqd xmm4, xmm4", // xmm4: all ones
            "fld1",              // st0: 1.0 (x87 state not in init)
            v = in(reg) 0x5eed_u64,
            options(nostack, nomem),
        );
    }
    let r = calls(samples, FPU_LIVE);
    // SAFETY: pops the x87 value pushed above.
    unsafe { core::arch::asm!("fstp st(0)", options(nostack, nomem)) };
    r
}

/// `ipc_call_cross_core`: the server on CPU 1 (left out on one CPU).
pub fn ipc_call_cross_core(samples: &mut [u64]) -> Result<usize, &'static str> {
    if sys::cpu_count() < 2 {
        return Err(SKIP);
    }
    let n = samples.len().min(2_000); // each trip is two IPIs: fewer samples
    calls(&mut samples[..n], 1)
}

/// A page-aligned 4 KiB client buffer (static: there is no heap).
#[repr(C, align(4096))]
struct Page([u8; 4096]);
static mut PAGE: Page = Page([0; 4096]);

/// `ipc_buffer_4k_same_core`: a call with 4 KiB each way, same CPU.
pub fn ipc_buffer_4k_same_core(samples: &mut [u64]) -> Result<usize, &'static str> {
    let echo = Echo::start(0)?;
    // SAFETY: only this function uses PAGE, once.
    let page = unsafe { &mut (*core::ptr::addr_of_mut!(PAGE)).0 };
    page.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
    let mut one = || -> Result<(), Error> {
        let mut r = IpcRegs {
            rdi: echo.ep.0 as u64,
            rsi: ipc::info(9, 0, 0, 4096, false),
            r14: page.as_mut_ptr() as u64,
            r15: ipc::spec(4096, 0),
            ..IpcRegs::default()
        };
        // SAFETY: the buffer is our static page, 4096 bytes.
        abi::decode_result(unsafe { ipc::ipc_syscall(Sysnum::IpcCall, &mut r) })?;
        if ipc::info_len(r.rsi) != 4096 {
            return Err(Error::InvalidArgument);
        }
        Ok(())
    };
    let mut bad = false;
    for _ in 0..WARMUP {
        bad |= one().is_err();
    }
    for s in samples.iter_mut() {
        let t0 = rdtsc();
        let r = one();
        *s = rdtsc() - t0;
        bad |= r.is_err();
    }
    echo.stop()?;
    if bad || page.iter().enumerate().any(|(i, b)| *b != i as u8) {
        return Err("a 4 KiB reply was not the echo of its call");
    }
    Ok(samples.len())
}

/// `notify_signal_wait`: `signal` then `wait` on one notification (the
/// bits are pending: the wait returns them at once).
pub fn notify_signal_wait(samples: &mut [u64]) -> Result<usize, &'static str> {
    let n = ipc::notification_create().map_err(|_| "notification_create failed")?;
    let mut bad = false;
    for _ in 0..WARMUP {
        bad |= ipc::signal(n, 1).is_err() || ipc::wait(n, None) != Ok(1);
    }
    for s in samples.iter_mut() {
        let t0 = rdtsc();
        let r = ipc::signal(n, 2).and_then(|_| ipc::wait(n, None));
        *s = rdtsc() - t0;
        bad |= r != Ok(2);
    }
    let _ = ipc::handle_close(n.0);
    if bad {
        return Err("wait did not return the signalled bits");
    }
    Ok(samples.len())
}
