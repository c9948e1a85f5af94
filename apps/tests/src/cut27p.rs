//! cut27p (session 27): frame delivery copies a register-only message from
//! the sender's syscall frame into the receiver's in assembly
//! (`ipc::fastasm::copy_msg`), both ways of the same-core fast round trip.
//!
//! - [`fast_messages_arrive_whole`]: every output register of both
//!   directions, round after round on one CPU (the fast path counted):
//!   the six words, the badge (the endpoint handle's on the call, 0 on the
//!   reply), the message info (the label, no other bit), and no handles
//!   (RBX and RBP zero, though each side passed garbage in them with a
//!   handle count of 0, so a slot the copy left unwritten shows). Seen
//!   failing with the copy storing 1 into RBP's slot (the echo cases close
//!   any received handle and never look).

use crate::fastpath::counted;
use crate::util::{self, check, ok, TestResult};
use abi::{decode_result, Error, Sysnum};
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::ipc::{self, IpcRegs};
use libipc::sys;

/// Round trips (the fast path takes at least 90% of them).
const ROUNDS: u64 = 500;
/// The label that stops the server; a reply labelled [`BAD`] reports what
/// it found wrong in the word [`SERVER_SAW`].
const STOP: u32 = 0x5709;
const BAD: u32 = 0xbad;
/// The server's first wrong finding (0: none).
static SERVER_SAW: AtomicU64 = AtomicU64::new(0);

/// Words of call `i`.
fn call_words(i: u64) -> [u64; 6] {
    [
        i,
        !i,
        i << 9 | 1,
        i ^ 0x5a5a,
        u64::MAX - i,
        i.rotate_left(17),
    ]
}

/// Words of the reply to call `i`.
fn reply_words(i: u64) -> [u64; 6] {
    call_words(i).map(|w| w ^ 0xc0ffee)
}

fn raw(n: Sysnum, r: &mut IpcRegs) -> Result<u64, Error> {
    // SAFETY: no buffer is named (R14 0, capacity 0).
    decode_result(unsafe { ipc::ipc_syscall(n, r) })
}

/// The server: `arg` = endpoint. Checks every call it receives after the
/// first (its badge against the first's), answers each with
/// [`reply_words`] and garbage in RBX and RBP.
extern "C" fn server(arg: u64) -> ! {
    if sys::set_affinity(0).is_err() {
        sys::thread_exit(1);
    }
    let mut r = IpcRegs {
        rdi: arg,
        ..IpcRegs::default()
    };
    if raw(Sysnum::IpcRecv, &mut r).is_err() {
        sys::thread_exit(2);
    }
    let badge = r.rdi;
    loop {
        let label = r.rsi as u32;
        let i = label as u64;
        let wrong = if r.rsi != label as u64 {
            1
        } else if r.handles != [0, 0] {
            2
        } else if r.rdi != badge {
            3
        } else if label != STOP && r.w != call_words(i) {
            4
        } else {
            0
        };
        if wrong != 0 {
            let _ = SERVER_SAW.compare_exchange(0, wrong, Ordering::Relaxed, Ordering::Relaxed);
        }
        let reply = if wrong != 0 {
            BAD
        } else {
            label.wrapping_add(1)
        };
        r = IpcRegs {
            rdi: arg,
            rsi: ipc::info(reply, 0, 0, 0, false),
            w: reply_words(i),
            handles: [0x1111_2222, 0x3333_4444],
            ..IpcRegs::default()
        };
        if label == STOP {
            let _ = raw(Sysnum::IpcReply, &mut r);
            sys::thread_exit(0);
        }
        if raw(Sysnum::IpcReplyRecv, &mut r).is_err() {
            sys::thread_exit(3);
        }
    }
}

/// One call with label `i` and garbage in RBX and RBP; the reply checked.
fn call(ep: u64, i: u64) -> TestResult {
    let mut r = IpcRegs {
        rdi: ep,
        rsi: ipc::info(i as u32, 0, 0, 0, false),
        w: call_words(i),
        handles: [0x5555_6666, 0x7777_8888],
        ..IpcRegs::default()
    };
    ok(raw(Sysnum::IpcCall, &mut r), "call")?;
    check(r.rsi as u32 != BAD, "the server saw a wrong call")?;
    check(r.rsi == i + 1, "the reply's info was not its label alone")?;
    check(r.rdi == 0, "the reply's badge was not 0")?;
    check(r.handles == [0, 0], "the reply carried handles (RBX/RBP)")?;
    check(r.w == reply_words(i), "the reply's words were wrong")
}

pub fn fast_messages_arrive_whole() -> TestResult {
    check(util::pin0(), "set_affinity(0)")?;
    SERVER_SAW.store(0, Ordering::Relaxed);
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let t = util::spawn(server, ep.0 as u64)?;
    // Let it reach its receive.
    sys::sleep_ns(2_000_000);
    let min = ROUNDS * 9 / 10;
    let run = counted("cut27p ping-pong", Some(min), Some(min), || {
        (1..=ROUNDS).try_for_each(|i| call(ep.0 as u64, i))
    });
    let stop = call(ep.0 as u64, STOP as u64);
    let saw = SERVER_SAW.load(Ordering::Relaxed);
    if saw != 0 {
        crate::note!("the server's finding: {saw} (1 info, 2 handles, 3 badge, 4 words)");
    }
    run?;
    check(saw == 0, "the server received a wrong call")?;
    stop?;
    util::expect_ok(t.join()?)?;
    ok(ipc::handle_close(ep.0), "close")
}
