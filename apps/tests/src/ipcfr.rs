//! The frameless resume (ipcfr, session 20): a thread that blocks in the
//! fast `call` or `reply_recv` keeps no kernel frames, and the thread that
//! wakes it next returns it to user mode from its saved registers through
//! the kernel's frameless resume entry, which must redo everything the
//! syscall's own exit does. These cases block a server frameless (a
//! same-CPU ping-pong leaves it in the receive of a fast `reply_recv`) and
//! then end or hold that wait in the ways only the exit's work test
//! handles: a kill, and a suspension.

use crate::note;
use crate::util::{self, check, ok, TestResult};
use abi::status::Status;
use abi::{decode_result, Sysnum};
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::ipc::{self, Endpoint, Message, Received};
use libipc::{hw, sys};

/// Round trips that leave the echo blocked frameless.
const PINGS: u64 = 50;
/// Rounds of each case: a round whose server last blocked with frames (a
/// timer preemption at the wrong moment) resumes through the ordinary
/// exit and tests nothing, so each case is repeated.
const ROUNDS: u32 = 4;
/// The label that makes the echo reply and exit.
const STOP: u32 = 0xdead;

/// The fast `reply_recv`s completed on every CPU (the kernel's counter).
fn fast_replies() -> u64 {
    let read = |k: u64| {
        // SAFETY: cpu_syscalls writes no memory.
        decode_result(unsafe { sys::syscall6(Sysnum::CpuSyscalls, k, 2, 0, 0, 0, 0) }).unwrap_or(0)
    };
    (0..sys::cpu_count()).map(read).sum()
}

/// Pins itself to CPU 0, then echoes every message on the endpoint `arg`
/// with `reply_recv` (register-only, no timeout: the fast path); exits 0
/// after replying to [`STOP`], 3 when a receive fails.
extern "C" fn echo(arg: u64) -> ! {
    let ep = Endpoint(arg as u32);
    if sys::set_affinity(0).is_err() {
        sys::thread_exit(1);
    }
    let mut got = ipc::recv(ep, None);
    loop {
        let m = match got {
            Ok(Received::Msg { msg, .. }) => msg,
            _ => sys::thread_exit(3),
        };
        if m.label == STOP {
            let _ = ipc::reply(&m);
            sys::thread_exit(0);
        }
        got = ipc::reply_recv(ep, &m, None);
    }
}

fn msg(i: u64) -> Message {
    Message {
        label: 7,
        words: [i, !i, i << 9, i ^ 0x5a, i + 3, u64::MAX - i],
    }
}

/// An echo on CPU 0 (with us) that is blocked frameless once this
/// returns: [`PINGS`] echoed round trips, most through the fast path.
fn frameless_echo() -> Result<(Endpoint, util::Thread), &'static str> {
    check(util::pin0(), "set_affinity(0)")?;
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let t = util::spawn(echo, ep.0 as u64)?;
    // Let it reach its receive.
    sys::sleep_ns(2_000_000);
    let before = fast_replies();
    for i in 0..PINGS {
        let m = msg(i);
        if ok(ipc::call(ep, &m, None), "call")? != m {
            return Err("a reply was not the echo of its call");
        }
    }
    let fast = fast_replies() - before;
    if fast < PINGS * 9 / 10 {
        note!("{fast} of {PINGS} replies on the fast path");
        return Err("the echo did not answer on the fast path");
    }
    Ok((ep, t))
}

/// A server blocked frameless and then killed ends as a killed thread
/// (the kernel's status `exited(-1)`) without running user code again:
/// its wake-up goes through the frameless resume, whose exit must take
/// the work test (skipping it, the server returned `PeerDied` to its loop
/// and exited 3).
pub fn killed_while_blocked_frameless_never_runs_user_code() -> TestResult {
    (0..ROUNDS).try_for_each(|_| killed_once())
}

fn killed_once() -> TestResult {
    let (ep, t) = frameless_echo()?;
    ok(sys::thread_kill(t.handle()), "thread_kill")?;
    let st = t.join()?;
    let _ = ipc::handle_close(ep.0);
    if st != Status::Exited(-1) {
        note!("the killed server ended with {st:?}");
        return Err("a thread killed while blocked frameless ran user code");
    }
    Ok(())
}

/// The client's outcome in [`suspended_frameless_server_answers_after_resume`]:
/// 0 while its call is outstanding, 1 echoed, 2 anything else.
static CALLED: AtomicU64 = AtomicU64::new(0);

/// Pins itself to CPU 0 and makes one call on the endpoint `arg`.
extern "C" fn one_call(arg: u64) -> ! {
    let ep = Endpoint(arg as u32);
    if sys::set_affinity(0).is_err() {
        sys::thread_exit(1);
    }
    let m = msg(99);
    let r = ipc::call(ep, &m, Some(5_000_000));
    CALLED.store(if r == Ok(m) { 1 } else { 2 }, Ordering::Release);
    sys::thread_exit(0)
}

/// A server blocked frameless and suspended takes a fast call (the caller
/// hands it the CPU, and it resumes through the frameless entry) but does
/// not answer until it is resumed: the resume entry's exit parks it in
/// the work test. Then it answers with the right message.
pub fn suspended_frameless_server_answers_after_resume() -> TestResult {
    (0..ROUNDS).try_for_each(|_| suspended_once())
}

fn suspended_once() -> TestResult {
    let (ep, t) = frameless_echo()?;
    ok(hw::thread_suspend(t.handle()), "thread_suspend")?;
    CALLED.store(0, Ordering::Release);
    let c = util::spawn(one_call, ep.0 as u64)?;
    // The client runs (we sleep on its CPU) and its call reaches the
    // suspended server.
    sys::sleep_ns(30_000_000);
    let early = CALLED.load(Ordering::Acquire);
    ok(hw::thread_resume(t.handle()), "thread_resume")?;
    let cst = c.join()?;
    let stop = Message {
        label: STOP,
        words: [0; 6],
    };
    let r = ipc::call(ep, &stop, Some(5_000_000));
    let st = t.join()?;
    let _ = ipc::handle_close(ep.0);
    if early != 0 {
        note!("client outcome {early} while the server was suspended");
        return Err("a suspended server answered a call");
    }
    check(cst == Status::Exited(0), "the client did not exit 0")?;
    check(
        CALLED.load(Ordering::Acquire) == 1,
        "the call was not echoed after the resume",
    )?;
    check(r.is_ok(), "the STOP call failed")?;
    check(st == Status::Exited(0), "the server did not exit 0")
}
