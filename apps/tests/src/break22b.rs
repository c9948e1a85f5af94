//! break22 (session 22), continued: a caller's wait ending (its timeout)
//! while its server's fast `reply_recv` claims it.
//!
//! - [`timed_out_callers_leave_the_receive_unframed`]: when the fast
//!   `reply_recv` loses its caller's claim (the caller's timeout or kill
//!   is ending that wait right now), it leaves the receive to the slow
//!   path, whose wait must not be named for frame delivery
//!   (`IpcInner::frame_seq` is set only once the claim is won). Callers
//!   with timeouts that land around the server's reply (two CPUs), and another
//!   caller with register-only calls (the cross-core path, which hands
//!   its message straight into a frame when asked to), four CPUs in all:
//!   every receive of the server must be a message. Seen failing with
//!   `frame_seq` set whether or not the claim was won (the server's slow
//!   receive ended `Framed`, which it turns into `InvalidArgument`): in
//!   two runs of four (three of seven with an earlier, lighter mix), so
//!   a race detector, not a proof; no unmutated run has failed.

use crate::note;
use crate::util::{self, check, TestResult};
use abi::status::Status;
use abi::Error;
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::ipc::{self, Endpoint, Message, Received};
use libipc::sys;

static EP: AtomicU64 = AtomicU64::new(0);
/// Calls answered, timeouts seen, and the register-only caller's calls.
static ANSWERED: AtomicU64 = AtomicU64::new(0);
static TIMED_OUT: AtomicU64 = AtomicU64::new(0);
static PLAIN: AtomicU64 = AtomicU64::new(0);
/// Set to stop both callers.
static STOP: AtomicU64 = AtomicU64::new(0);

const STOP_LABEL: u32 = 0xdead;

fn echo_of(m: &Message) -> Message {
    Message {
        label: m.label + 1,
        words: m.words.map(|w| w.wrapping_add(1)),
    }
}

/// Busy for about `ns` nanoseconds.
fn spin_ns(ns: u64) {
    let t0 = sys::clock_ns();
    while sys::clock_ns() - t0 < ns {
        crate::util::relax();
    }
}

/// On CPU 1: echoes with fast `reply_recv`s, each reply after a spin the
/// message names (words[1] ns), until [`STOP_LABEL`]; exits 3 for a
/// receive that failed.
extern "C" fn server(_: u64) -> ! {
    if sys::set_affinity(1).is_err() {
        sys::thread_exit(1);
    }
    let ep = Endpoint(EP.load(Ordering::SeqCst) as u32);
    let mut r = ipc::recv(ep, None);
    loop {
        let m = match r {
            Ok(Received::Msg { msg, .. }) => msg,
            _ => sys::thread_exit(3),
        };
        if m.label == STOP_LABEL {
            let _ = ipc::reply(&m);
            sys::thread_exit(0);
        }
        spin_ns(m.words[1]);
        r = ipc::reply_recv(ep, &echo_of(&m), None);
    }
}

/// On CPU 2: [`time_calls`] until stopped; exits 5 for a wrong answer.
extern "C" fn timing_caller(_: u64) -> ! {
    if sys::set_affinity(2).is_err() {
        sys::thread_exit(1);
    }
    let ok = time_calls(0, || STOP.load(Ordering::Relaxed) == 0);
    sys::thread_exit(if ok { 0 } else { 5 })
}

/// Calls (while `go`) with a timeout of 20 to 83 us, the server asked to
/// spin about as long before it replies; false for a wrong answer.
fn time_calls(seed: u64, go: impl Fn() -> bool) -> bool {
    let ep = Endpoint(EP.load(Ordering::SeqCst) as u32);
    let mut i = seed;
    while go() {
        let us = 20 + (i * 7) % 64;
        let spin = us * 1000 - 2000 + (i * 13) % 4000;
        let m = Message {
            label: 3,
            words: [i, spin, 0, 0, 0, 0],
        };
        match ipc::call(ep, &m, Some(us as u32)) {
            Ok(r) if r == echo_of(&m) => {
                ANSWERED.fetch_add(1, Ordering::Relaxed);
            }
            Err(Error::TimedOut) => {
                TIMED_OUT.fetch_add(1, Ordering::Relaxed);
            }
            _ => return false,
        }
        i += 1;
    }
    true
}

/// On CPU 3: register-only calls with no timeout (the cross-core call),
/// the server asked for no spin; exits 6 for a failed or wrong answer.
extern "C" fn plain_caller(_: u64) -> ! {
    if sys::set_affinity(3).is_err() {
        sys::thread_exit(1);
    }
    let ep = Endpoint(EP.load(Ordering::SeqCst) as u32);
    let mut i = 0u64;
    while STOP.load(Ordering::Relaxed) == 0 {
        let m = Message {
            label: 9,
            words: [i, 0, !i, i << 3, i ^ 0x55, 7],
        };
        match ipc::call(ep, &m, None) {
            Ok(r) if r == echo_of(&m) => {
                PLAIN.fetch_add(1, Ordering::Relaxed);
            }
            _ => sys::thread_exit(6),
        }
        // Now and then the server's receive waits for us (a queued call
        // would be taken at once, with no wait to hand into).
        spin_ns((i * 17) % 20_000);
        i += 1;
    }
    sys::thread_exit(0)
}

/// Case: see the module docs.
pub fn timed_out_callers_leave_the_receive_unframed() -> TestResult {
    if sys::cpu_count() < 4 {
        note!("fewer than four CPUs: the case needs three beside its own");
        return Ok(());
    }
    check(util::pin0(), "set_affinity(0)")?;
    let ep = ipc::endpoint_create().map_err(|_| "endpoint_create")?;
    EP.store(ep.0 as u64, Ordering::SeqCst);
    for c in [&ANSWERED, &TIMED_OUT, &PLAIN, &STOP] {
        c.store(0, Ordering::SeqCst);
    }
    let s = util::spawn(server, 0)?;
    let a = util::spawn(timing_caller, 0)?;
    let b = util::spawn(plain_caller, 0)?;
    // A third caller with timeouts: this thread, on CPU 0.
    let t0 = sys::clock_ns();
    let mine = time_calls(1 << 20, || sys::clock_ns() - t0 < RUN_NS);
    STOP.store(1, Ordering::SeqCst);
    let ast = a.join()?;
    let bst = b.join()?;
    let stop = Message {
        label: STOP_LABEL,
        words: [0; 6],
    };
    // The server may be gone already (then the call fails at once).
    let _ = ipc::call(ep, &stop, Some(1_000_000));
    let sst = s.join()?;
    let _ = ipc::handle_close(ep.0);
    let (answered, timed_out, plain) = (
        ANSWERED.load(Ordering::SeqCst),
        TIMED_OUT.load(Ordering::SeqCst),
        PLAIN.load(Ordering::SeqCst),
    );
    if !mine || sst != Status::Exited(0) || ast != Status::Exited(0) || bst != Status::Exited(0) {
        note!("server {sst:?}, timing callers {mine} and {ast:?} ({answered} answered, {timed_out} timed out), plain caller {bst:?} ({plain} calls)");
        return Err("a receive of the server failed while its callers timed out");
    }
    check(
        timed_out > 0 && answered > 0 && plain > 0,
        "the callers did not both time out and get answers",
    )
}

/// How long the callers run.
const RUN_NS: u64 = 3_000_000_000;
