//! IPC (issue 10): handles and rights, call/reply with register messages
//! and badges, several clients and workers, peer death and timeouts,
//! notifications (plain and bound to an endpoint receive), malformed
//! arguments. Threads of this one process play client and server: handles
//! are per process, so each case's handles are this program's.
//!
//! This file holds the register-message cases and what they share; the
//! rest by concern: [`notify`] (notifications), [`killed`] (a process
//! killed in every IPC wait), [`buffers`] (buffers and handles),
//! [`between`] (calls to another process).

mod between;
mod buffers;
mod killed;
mod notify;
pub use between::calls_between_processes;
pub use buffers::{bad_buffers_fail_their_own_side, buffers_and_handles_travel};
pub use killed::process_killed_in_every_ipc_wait_ends_cleanly;
pub use notify::{
    bound_notification_ends_an_endpoint_receive, notification_handles_are_refused_in_order,
    notifications_accumulate_wake_and_die,
};

use crate::note;
use crate::util::{self, check, ok, want, TestResult};
use abi::{Error, Sysnum};
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::ipc::{
    self, call, endpoint_create, handle_close, handle_dup, notification_create, recv, reply,
    reply_recv, rights, send, signal, wait, Endpoint, IpcRegs, Message, Notification, Received,
};
use libipc::sys;

/// Rights: a reduced duplicate cannot receive or regain rights; badges
/// cannot be re-minted; a closed or stale number, a number with junk in its
/// upper half and a handle of the wrong kind are errors.
pub fn handles_rights_and_staleness() -> TestResult {
    let ep = ok(endpoint_create(), "endpoint_create")?;
    let send_only = ok(handle_dup(ep.0, rights::SEND, 0), "dup SEND")?;
    want(
        recv(Endpoint(send_only), Some(0)),
        Error::PermissionDenied,
        "recv through a SEND-only handle",
    )?;
    want(
        handle_dup(send_only, rights::SEND, 0),
        Error::PermissionDenied,
        "dup of a handle without DUPLICATE",
    )?;
    let send_dup = ok(
        handle_dup(ep.0, rights::SEND | rights::DUPLICATE, 0),
        "dup SEND|DUPLICATE",
    )?;
    want(
        handle_dup(send_dup, rights::SEND | rights::RECV, 0),
        Error::PermissionDenied,
        "dup asking for more rights than the source",
    )?;
    let badged = ok(
        handle_dup(ep.0, rights::SEND | rights::DUPLICATE, 7),
        "mint a badge",
    )?;
    want(
        handle_dup(badged, rights::SEND, 9),
        Error::InvalidArgument,
        "re-badging a badged handle",
    )?;
    want(
        signal(Notification(ep.0), 1),
        Error::WrongType,
        "signal on an endpoint",
    )?;
    want(
        wait(Notification(ep.0), Some(0)),
        Error::WrongType,
        "wait on an endpoint",
    )?;
    let ntf = ok(notification_create(), "notification_create")?;
    want(
        call(Endpoint(ntf.0), &Message::default(), Some(0)),
        Error::WrongType,
        "call on a notification",
    )?;
    want(
        handle_dup(ep.0, 1 << 20, 0),
        Error::InvalidArgument,
        "dup with unknown rights bits",
    )?;
    // Closed, then stale after the slot is reused.
    ok(handle_close(send_only), "close")?;
    want(handle_close(send_only), Error::BadHandle, "double close")?;
    let reused = ok(handle_dup(ep.0, rights::SEND, 0), "dup into the freed slot")?;
    check(
        reused & 0x3ff == send_only & 0x3ff,
        "the freed slot was not reused (test premise)",
    )?;
    want(
        send(Endpoint(send_only), &Message::default()),
        Error::BadHandle,
        "send through a stale number",
    )?;
    want(
        send(Endpoint(reused), &Message::default()),
        Error::WouldBlock,
        "send through the new number (nobody waits)",
    )?;
    for junk in [0u32, u32::MAX, 0x3ff, 5 << 10 | 1000] {
        want(
            handle_close(junk),
            Error::BadHandle,
            "close of a junk number",
        )?;
    }
    // A number with junk in the register's upper half.
    let mut r = IpcRegs {
        rdi: (1 << 32) | ep.0 as u64,
        ..IpcRegs::default()
    };
    // SAFETY: no buffer is named.
    let rax = unsafe { ipc::ipc_syscall(Sysnum::IpcSend, &mut r) };
    want(
        abi::decode_result(rax),
        Error::BadHandle,
        "a handle register with upper bits set",
    )?;
    for h in [reused, badged, send_dup, ntf.0, ep.0] {
        ok(handle_close(h), "close at the end")?;
    }
    Ok(())
}

/// One server thread: answers every call with label + 1 and each word
/// XOR the badge, until a call with label 0xdead.
extern "C" fn echo_server(ep: u64) -> ! {
    let ep = Endpoint(ep as u32);
    let mut next = recv(ep, GUARD_US);
    loop {
        match next {
            Ok(Received::Msg { badge, msg }) => {
                let mut a = Message {
                    label: msg.label + 1,
                    words: msg.words,
                };
                for w in a.words.iter_mut() {
                    *w ^= badge;
                }
                if msg.label == 0xdead {
                    let _ = reply(&a);
                    sys::thread_exit(0);
                }
                next = reply_recv(ep, &a, GUARD_US);
            }
            _ => sys::thread_exit(1),
        }
    }
}

/// Call and reply carry the label and all six words; the server sees the
/// badge of the handle each call came through (0 for an unbadged one).
pub fn call_reply_carries_label_words_and_badge() -> TestResult {
    let ep = ok(endpoint_create(), "endpoint_create")?;
    let server = util::spawn(echo_server, ep.0 as u64)?;
    let b1 = ok(
        handle_dup(ep.0, rights::SEND, 0x1111_0000_0000_0001),
        "mint",
    )?;
    let b2 = ok(handle_dup(ep.0, rights::SEND, 0x2222), "mint")?;
    let words = [
        0x0123_4567_89ab_cdef,
        u64::MAX,
        0,
        1 << 63,
        0x5555_5555_5555_5555,
        42,
    ];
    for (h, badge) in [(b1, 0x1111_0000_0000_0001u64), (b2, 0x2222), (ep.0, 0)] {
        for label in [1u32, 0x7fff_ffff, 0xffff_fffe] {
            let r = ok(
                call(Endpoint(h), &Message { label, words }, GUARD_US),
                "call",
            )?;
            check(r.label == label.wrapping_add(1), "wrong reply label")?;
            for (i, (got, sent)) in r.words.iter().zip(words).enumerate() {
                if *got != sent ^ badge {
                    note!("word {i}: {got:#x}, expected {:#x}", sent ^ badge);
                    return Err("a reply word (or the badge) is wrong");
                }
            }
        }
    }
    ok(
        call(
            ep,
            &Message {
                label: 0xdead,
                words,
            },
            GUARD_US,
        ),
        "stop call",
    )?;
    util::expect_ok(server.join()?)?;
    for h in [b1, b2, ep.0] {
        ok(handle_close(h), "close")?;
    }
    Ok(())
}

const CLIENTS: u64 = 4;
const WORKERS: u64 = 2;
const CALLS: u64 = 300;
static ANSWERED: AtomicU64 = AtomicU64::new(0);

/// A worker: answers (client, seq) with (client, seq, seq * 3 + client),
/// counting, until a call with label 2.
extern "C" fn seq_worker(ep: u64) -> ! {
    let ep = Endpoint(ep as u32);
    let mut next = recv(ep, GUARD_US);
    loop {
        match next {
            Ok(Received::Msg { msg, .. }) => {
                let [c, s, ..] = msg.words;
                let a = Message {
                    label: 0,
                    words: [c, s, s * 3 + c, 0, 0, 0],
                };
                if msg.label == 2 {
                    let _ = reply(&a);
                    sys::thread_exit(0);
                }
                ANSWERED.fetch_add(1, Ordering::SeqCst);
                next = reply_recv(ep, &a, GUARD_US);
            }
            _ => sys::thread_exit(1),
        }
    }
}

/// A client: `CALLS` calls with sequence numbers; exits 0 iff every reply is
/// its own and in order.
extern "C" fn seq_client(arg: u64) -> ! {
    let (ep, id) = (Endpoint(arg as u32), arg >> 32);
    for s in 0..CALLS {
        let m = Message {
            label: 1,
            words: [id, s, 0, 0, 0, 0],
        };
        match call(ep, &m, GUARD_US) {
            Ok(r) if r.words[..3] == [id, s, s * 3 + id] => {}
            _ => sys::thread_exit(1),
        }
    }
    sys::thread_exit(0)
}

/// Several clients (on several CPUs when there are) call one endpoint with
/// several worker threads: every call is answered exactly once, with its
/// own answer.
pub fn many_clients_many_workers_each_call_answered_once() -> TestResult {
    ANSWERED.store(0, Ordering::SeqCst);
    let ep = ok(endpoint_create(), "endpoint_create")?;
    let mut workers = Threads::new();
    for _ in 0..WORKERS {
        keep(&mut workers, util::spawn(seq_worker, ep.0 as u64)?)?;
    }
    let mut clients = Threads::new();
    for id in 0..CLIENTS {
        keep(
            &mut clients,
            util::spawn(seq_client, ep.0 as u64 | id << 32)?,
        )?;
    }
    let mut failed = false;
    for c in clients {
        failed |= util::expect_ok(c.join()?).is_err();
    }
    for _ in 0..WORKERS {
        ok(
            call(
                ep,
                &Message {
                    label: 2,
                    words: [0; 6],
                },
                GUARD_US,
            ),
            "stop",
        )?;
    }
    for w in workers {
        failed |= util::expect_ok(w.join()?).is_err();
    }
    ok(handle_close(ep.0), "close")?;
    check(!failed, "a client got a wrong reply, or a worker failed")?;
    let n = ANSWERED.load(Ordering::SeqCst);
    if n != CLIENTS * CALLS {
        note!("{n} calls answered, expected {}", CLIENTS * CALLS);
        return Err("calls were lost or answered twice");
    }
    Ok(())
}

/// The threads of one case (the test program has no heap).
type Threads = heapless::Vec<util::Thread, 8>;

/// Adds `t`; more than the capacity is a case bug, reported as a failure.
fn keep(v: &mut Threads, t: util::Thread) -> TestResult {
    v.push(t).map_err(|_| "more threads than the case keeps")
}

static RESULT: AtomicU64 = AtomicU64::new(0);

fn code(r: Result<Message, Error>) -> u64 {
    match r {
        Ok(_) => 1000,
        Err(e) => e as u64,
    }
}

/// Long enough never to expire in a passing run: a failure shows as
/// `TimedOut`, not as a hang.
const GUARD_US: Option<u32> = Some(3_000_000);

/// Calls `arg` (an endpoint) once and stores the error code.
extern "C" fn call_once(ep: u64) -> ! {
    let r = call(Endpoint(ep as u32), &Message::default(), GUARD_US);
    RESULT.store(code(r), Ordering::SeqCst);
    sys::thread_exit(0)
}

/// Takes one call and exits without replying.
extern "C" fn recv_then_exit(ep: u64) -> ! {
    let r = recv(Endpoint(ep as u32), GUARD_US);
    sys::thread_exit(if matches!(r, Ok(Received::Msg { .. })) {
        0
    } else {
        1
    })
}

/// Takes one call, waits 250 ms (its caller times out meanwhile), replies:
/// stores the reply's error code. (60 ms was once not enough on a loaded
/// host at -smp 4: the caller's CPU, starved by the host past the sleep,
/// took the reply before its 20 ms timeout was processed; a timeout is a
/// lower bound, so that `Ok` was correct, and the margin is the case's.)
extern "C" fn recv_sleep_reply(ep: u64) -> ! {
    if recv(Endpoint(ep as u32), GUARD_US).is_err() {
        sys::thread_exit(1);
    }
    sys::sleep_ns(250_000_000);
    let r = reply(&Message::default());
    RESULT.store(
        match r {
            Ok(()) => 1000,
            Err(e) => e as u64,
        },
        Ordering::SeqCst,
    );
    sys::thread_exit(0)
}

/// Peer death and timeouts end in errors, never hangs: the last receive
/// handle closed while a caller is queued; a server thread that exits
/// holding a call; a caller that times out while the server holds its
/// reply; calls, receives and sends with nobody on the other side.
pub fn peer_death_and_timeouts_are_errors() -> TestResult {
    // Receive handle closed while a caller is queued.
    let ep = ok(endpoint_create(), "endpoint_create")?;
    let send_h = ok(handle_dup(ep.0, rights::SEND, 0), "dup")?;
    RESULT.store(0, Ordering::SeqCst);
    let t = util::spawn(call_once, send_h as u64)?;
    sys::sleep_ns(20_000_000); // the caller queues meanwhile
    ok(handle_close(ep.0), "close the receive handle")?;
    util::expect_ok(t.join()?)?;
    // Never taken by a receiver: NotDelivered (safe to send again).
    if RESULT.load(Ordering::SeqCst) != Error::NotDelivered as u64 {
        note!("queued caller got code {}", RESULT.load(Ordering::SeqCst));
        return Err("a queued caller was not told NotDelivered when its server died");
    }
    want(
        call(Endpoint(send_h), &Message::default(), GUARD_US),
        Error::NotDelivered,
        "call to an endpoint without receivers",
    )?;
    ok(handle_close(send_h), "close")?;

    // The server thread exits holding the call.
    let ep = ok(endpoint_create(), "endpoint_create")?;
    let s = util::spawn(recv_then_exit, ep.0 as u64)?;
    want(
        call(ep, &Message::default(), GUARD_US),
        Error::PeerDied,
        "call whose server thread exited holding it",
    )?;
    util::expect_ok(s.join()?)?;

    // The caller times out while the server holds its reply.
    RESULT.store(0, Ordering::SeqCst);
    let s = util::spawn(recv_sleep_reply, ep.0 as u64)?;
    let t0 = sys::clock_ns();
    want(
        call(ep, &Message::default(), Some(20_000)),
        Error::TimedOut,
        "call with a 20 ms timeout to a slow server",
    )?;
    let waited = sys::clock_ns() - t0;
    util::expect_ok(s.join()?)?;
    if RESULT.load(Ordering::SeqCst) != Error::PeerDied as u64 {
        note!("late reply got code {}", RESULT.load(Ordering::SeqCst));
        return Err("a reply to a caller that timed out did not fail with PeerDied");
    }
    if waited < 20_000_000 {
        note!("timed out after {waited} ns");
        return Err("the call timed out early");
    }

    // Nobody on the other side.
    want(
        call(ep, &Message::default(), Some(10_000)),
        Error::TimedOut,
        "call with a timeout and no receiver",
    )?;
    want(
        call(ep, &Message::default(), Some(0)),
        Error::WouldBlock,
        "poll call",
    )?;
    want(recv(ep, Some(0)), Error::WouldBlock, "poll recv")?;
    want(
        recv(ep, Some(10_000)),
        Error::TimedOut,
        "recv with a timeout",
    )?;
    want(send(ep, &Message::default()), Error::WouldBlock, "send")?;
    want(
        reply(&Message::default()),
        Error::InvalidArgument,
        "reply with no call held",
    )?;
    ok(handle_close(ep.0), "close")?;
    Ok(())
}

/// Malformed message descriptions are refused before anything happens.
pub fn malformed_ipc_arguments_are_refused() -> TestResult {
    let ep = ok(endpoint_create(), "endpoint_create")?;
    let bad_info: [(u64, &str); 4] = [
        (1 << 63, "reserved bit"),
        (5 << 32, "five handles"),
        (1 << 32 | 0b10 << 35, "a copy bit past the count"),
        (ipc::NOTIFIED, "the output-only flag"),
    ];
    for (rsi, what) in bad_info {
        for n in [Sysnum::IpcCall, Sysnum::IpcSend, Sysnum::IpcReplyRecv] {
            let mut r = IpcRegs {
                rdi: ep.0 as u64,
                rsi,
                ..IpcRegs::default()
            };
            // SAFETY: no buffer is named.
            let rax = unsafe { ipc::ipc_syscall(n, &mut r) };
            if abi::decode_result(rax) != Err(Error::InvalidArgument) {
                note!("{n:?} with {what}: {:?}", abi::decode_result(rax));
                return Err("a malformed message-info word was accepted");
            }
        }
    }
    // A capacity above 64 KiB; a receive that names a label.
    let mut r = IpcRegs {
        rdi: ep.0 as u64,
        r15: (64 << 10) + 1,
        ..IpcRegs::default()
    };
    // SAFETY: the receive is refused before it could write.
    let rax = unsafe { ipc::ipc_syscall(Sysnum::IpcRecv, &mut r) };
    want(
        abi::decode_result(rax),
        Error::InvalidArgument,
        "capacity above 64 KiB",
    )?;
    // (With a zero timeout: were the label accepted, the receive polls.)
    let mut r = IpcRegs {
        rdi: ep.0 as u64,
        rsi: 3 | 1 << 39,
        ..IpcRegs::default()
    };
    // SAFETY: as above.
    let rax = unsafe { ipc::ipc_syscall(Sysnum::IpcRecv, &mut r) };
    want(
        abi::decode_result(rax),
        Error::InvalidArgument,
        "recv naming a label",
    )?;
    ok(handle_close(ep.0), "close")?;
    Ok(())
}

static FAST_DONE: AtomicU64 = AtomicU64::new(0);
const FAST_CALLS: u64 = 200;

/// Fast-path worker: pinned to CPU 0, answers with no timeouts (register
/// only: the hand-off back to the caller) until label 2.
extern "C" fn fast_server(ep: u64) -> ! {
    util::pin0();
    let ep = Endpoint(ep as u32);
    let mut next = recv(ep, None);
    loop {
        match next {
            Ok(Received::Msg { msg, .. }) => {
                let a = Message {
                    label: 0,
                    words: [msg.words[0], msg.words[1] + 1, 0, 0, 0, 0],
                };
                if msg.label == 2 {
                    let _ = reply(&a);
                    sys::thread_exit(0);
                }
                next = reply_recv(ep, &a, None);
            }
            _ => sys::thread_exit(1),
        }
    }
}

/// Fast-path client: pinned to CPU 0, register-only calls with no timeout.
extern "C" fn fast_client(arg: u64) -> ! {
    util::pin0();
    let (ep, id) = (Endpoint(arg as u32), arg >> 32);
    for s in 0..FAST_CALLS {
        let m = Message {
            label: 1,
            words: [id, s, 0, 0, 0, 0],
        };
        match call(ep, &m, None) {
            Ok(r) if r.words[..2] == [id, s + 1] => {}
            _ => sys::thread_exit(1),
        }
    }
    FAST_DONE.fetch_add(1, Ordering::SeqCst);
    sys::thread_exit(0)
}

/// The fast path's hand-off (register-only calls and replies with no
/// timeout, all on one CPU): several clients keep callers queued, so the
/// server's reply_recv often takes the next call at once and the caller it
/// answered must still be run. Every call is answered; no thread is lost
/// (a lost one shows as a client that never finishes).
pub fn fast_path_handoff_loses_no_thread() -> TestResult {
    FAST_DONE.store(0, Ordering::SeqCst);
    let ep = ok(endpoint_create(), "endpoint_create")?;
    let server = util::spawn(fast_server, ep.0 as u64)?;
    let mut clients = Threads::new();
    for id in 0..3u64 {
        keep(
            &mut clients,
            util::spawn(fast_client, ep.0 as u64 | id << 32)?,
        )?;
    }
    let t0 = sys::clock_ns();
    while FAST_DONE.load(Ordering::SeqCst) < 3 {
        if sys::clock_ns() - t0 > 20_000_000_000 {
            note!("{} of 3 clients finished", FAST_DONE.load(Ordering::SeqCst));
            return Err("a client never finished (a thread lost by the hand-off?)");
        }
        sys::sleep_ns(1_000_000);
    }
    let mut failed = false;
    for c in clients {
        failed |= util::expect_ok(c.join()?).is_err();
    }
    ok(
        call(
            ep,
            &Message {
                label: 2,
                words: [0; 6],
            },
            GUARD_US,
        ),
        "stop",
    )?;
    failed |= util::expect_ok(server.join()?).is_err();
    ok(handle_close(ep.0), "close")?;
    check(!failed, "a fast-path reply was wrong")
}
