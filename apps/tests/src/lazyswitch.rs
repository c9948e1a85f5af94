//! switch2 (issue 10): the switch skips the FPU and FS/GS-base work when
//! neither thread has any (one summary byte a thread, set on its first FPU
//! use and when it sets a base). A thread with its own bases and one
//! without, handing the CPU to each other on the fast path thousands of
//! times, must each keep their own: the summary must never say "none" for
//! a thread whose bases are live in the MSRs.
//!
//! The bases are small (8 and 16), so a leaked one shows as a read of the
//! next word of [`MARKS`], never as a fault: `fs:[&MARKS[0]]` reads
//! `MARKS[fs / 8]`.

use crate::fastpath::{counted, STOP};
use crate::note;
use crate::util::{self, check, ok, TestResult};
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::ipc::{self, Endpoint, Message};
use libipc::sys;

/// Round trips per run.
const CALLS: u64 = 2000;
/// Never expires in a passing run.
const GUARD_US: u32 = 3_000_000;

/// What `fs:[&MARKS[0]]` reads with FS base `8 * i`: `MARKS[i]`.
static MARKS: [AtomicU64; 3] = [
    AtomicU64::new(0x5eed_0000),
    AtomicU64::new(0x5eed_0001),
    AtomicU64::new(0x5eed_0002),
];

/// Reads that found another thread's base (each side's own count).
static BAD: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// (FS, GS) as `MARKS` indices: what `fs:[&MARKS[0]]` and `gs:[...]` read.
fn read_marks() -> (u64, u64) {
    let (fs, gs): (u64, u64);
    // SAFETY: the bases are 0, 8 or 16 (set below), so both loads read a
    // word of MARKS.
    unsafe {
        core::arch::asm!(
            "mov {f}, qword ptr fs:[{a}]",
            "mov {g}, qword ptr gs:[{a}]",
            a = in(reg) MARKS.as_ptr(),
            f = out(reg) fs,
            g = out(reg) gs,
            options(nostack, readonly, preserves_flags),
        );
    }
    (fs & 0xf, gs & 0xf)
}

/// One side: `arg` = endpoint (low 32) | server << 32 | FS index << 40 |
/// GS index << 48 (0: the base is never set). Pinned to CPU 0; a server
/// echoes until `STOP`, a client makes `CALLS` calls and sends `STOP`;
/// each checks its bases after every message.
extern "C" fn side(arg: u64) -> ! {
    let ep = Endpoint(arg as u32);
    let server = (arg >> 32) & 1 == 1;
    let (fs, gs) = ((arg >> 40) & 0xff, (arg >> 48) & 0xff);
    let bad = &BAD[server as usize];
    if !util::pin0() {
        sys::thread_exit(2);
    }
    if fs != 0 && sys::set_fs_base(8 * fs).is_err() {
        sys::thread_exit(3);
    }
    if gs != 0 && sys::set_gs_base(8 * gs).is_err() {
        sys::thread_exit(3);
    }
    let check = || {
        if read_marks() != (fs, gs) {
            bad.fetch_add(1, Ordering::SeqCst);
        }
    };
    check();
    if server {
        let mut next = ipc::recv(ep, None);
        loop {
            let Ok(ipc::Received::Msg { msg, .. }) = next else {
                sys::thread_exit(4);
            };
            check();
            if msg.label == STOP {
                let _ = ipc::reply(&Message::default());
                sys::thread_exit(0);
            }
            next = ipc::reply_recv(ep, &msg, None);
        }
    }
    for i in 0..CALLS {
        let m = Message {
            label: 7,
            words: [i, !i, 0, 0, 0, 0],
        };
        // No timeout: a timed call is not fast-path eligible.
        if ipc::call(ep, &m, None) != Ok(m) {
            sys::thread_exit(5);
        }
        check();
    }
    let stop = Message {
        label: STOP,
        words: [0; 6],
    };
    if ipc::call(ep, &stop, Some(GUARD_US)).is_err() {
        sys::thread_exit(6);
    }
    sys::thread_exit(0)
}

/// One run: a server with bases `srv` and a client with `cli` (MARKS
/// indices, 0: never set), both fresh threads on CPU 0.
fn run(srv: (u64, u64), cli: (u64, u64)) -> TestResult {
    for b in &BAD {
        b.store(0, Ordering::SeqCst);
    }
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let arg = |server: u64, (fs, gs): (u64, u64)| ep.0 as u64 | server << 32 | fs << 40 | gs << 48;
    let r = counted("base ping-pong", Some(CALLS * 9 / 10), None, || {
        let s = util::spawn(side, arg(1, srv))?;
        sys::sleep_ns(2_000_000); // the server waits in recv first
        let c = util::spawn(side, arg(0, cli));
        let cs = c.and_then(|c| c.join());
        let ss = s.join()?;
        util::expect_ok(cs?)?;
        util::expect_ok(ss)
    });
    ok(ipc::handle_close(ep.0), "close")?;
    r?;
    let (s, c) = (BAD[1].load(Ordering::SeqCst), BAD[0].load(Ordering::SeqCst));
    if s != 0 || c != 0 {
        note!("server {srv:?}: {s} wrong reads; client {cli:?}: {c}");
        return Err("a thread's FS/GS base leaked across fast-path hand-offs");
    }
    Ok(())
}

/// Case: see the module docs. Each way round (the thread with bases as
/// client, then as server), then both with bases of their own.
pub fn fast_path_keeps_fs_gs_bases_apart() -> TestResult {
    check(util::pin0(), "set_affinity(0)")?;
    run((0, 0), (1, 2))?;
    run((1, 2), (0, 0))?;
    run((2, 1), (1, 2))?;
    // Only FS, only GS.
    run((1, 0), (0, 0))?;
    run((0, 0), (0, 2))
}
