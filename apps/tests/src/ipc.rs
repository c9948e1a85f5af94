//! IPC (issue 10): handles and rights, call/reply with register messages
//! and badges, several clients and workers, peer death and timeouts,
//! notifications (plain and bound to an endpoint receive), malformed
//! arguments. Threads of this one process play client and server: handles
//! are per process, so each case's handles are this program's.

use crate::note;
use crate::util::{self, check, ok, want, TestResult};
use abi::{Error, Sysnum};
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::ipc::{
    self, bind, call, endpoint_create, handle_close, handle_dup, notification_create, recv, reply,
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

/// Takes one call, waits 60 ms (its caller times out meanwhile), replies:
/// stores the reply's error code.
extern "C" fn recv_sleep_reply(ep: u64) -> ! {
    if recv(Endpoint(ep as u32), GUARD_US).is_err() {
        sys::thread_exit(1);
    }
    sys::sleep_ns(60_000_000);
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

/// Waits on a notification once (no timeout), stores the bits (or error
/// code | 1 << 63).
extern "C" fn wait_once(n: u64) -> ! {
    let r = wait(Notification(n as u32), GUARD_US);
    RESULT.store(
        match r {
            Ok(bits) => bits,
            Err(e) => 1 << 63 | e as u64,
        },
        Ordering::SeqCst,
    );
    sys::thread_exit(0)
}

/// Notifications: bits signalled before a wait accumulate and are cleared
/// by it; a signal wakes a waiting thread; a wait times out; the last
/// handle closed wakes a waiter with PeerDied.
pub fn notifications_accumulate_wake_and_die() -> TestResult {
    let n = ok(notification_create(), "notification_create")?;
    want(
        wait(n, Some(0)),
        Error::WouldBlock,
        "wait with nothing pending",
    )?;
    ok(signal(n, 0b001), "signal")?;
    ok(signal(n, 0b100), "signal")?;
    ok(signal(n, 0), "signal of no bits")?;
    let bits = ok(wait(n, GUARD_US), "wait")?;
    check(bits == 0b101, "signalled bits did not accumulate")?;
    want(
        wait(n, Some(0)),
        Error::WouldBlock,
        "the wait did not clear the bits",
    )?;
    want(
        wait(n, Some(10_000)),
        Error::TimedOut,
        "wait with a timeout",
    )?;

    RESULT.store(0, Ordering::SeqCst);
    let t = util::spawn(wait_once, n.0 as u64)?;
    sys::sleep_ns(20_000_000);
    ok(signal(n, 0x80), "signal a waiter")?;
    util::expect_ok(t.join()?)?;
    check(
        RESULT.load(Ordering::SeqCst) == 0x80,
        "a waiting thread did not get the bits",
    )?;

    let t = util::spawn(wait_once, n.0 as u64)?;
    sys::sleep_ns(20_000_000);
    ok(handle_close(n.0), "close the last handle")?;
    util::expect_ok(t.join()?)?;
    check(
        RESULT.load(Ordering::SeqCst) == 1 << 63 | Error::PeerDied as u64,
        "a waiter was not woken with PeerDied when its notification died",
    )?;
    Ok(())
}

/// A server bound to a notification: its receive ends on a signal (bits
/// flagged as a notification) or on a call; bits pending before the
/// receive come at once. Reports what it saw in `RESULT` (bit per step).
extern "C" fn bound_server(arg: u64) -> ! {
    let (ep, n) = (Endpoint(arg as u32), Notification((arg >> 32) as u32));
    if bind(Some(n)).is_err() {
        sys::thread_exit(1);
    }
    // 1: a signal while waiting.
    if recv(ep, GUARD_US) != Ok(Received::Notified(0x10)) {
        sys::thread_exit(2);
    }
    RESULT.fetch_or(1, Ordering::SeqCst);
    // 2: a call while waiting.
    match recv(ep, GUARD_US) {
        Ok(Received::Msg { msg, .. }) if msg.label == 5 => {}
        _ => sys::thread_exit(3),
    }
    RESULT.fetch_or(2, Ordering::SeqCst);
    if reply(&Message::default()).is_err() {
        sys::thread_exit(6);
    }
    // Wait for the main thread to signal before our receive.
    while RESULT.load(Ordering::SeqCst) & 4 == 0 {
        sys::yield_now();
    }
    // 3: bits pending before the receive come at once.
    match recv(ep, Some(0)) {
        Ok(Received::Notified(0x20)) => {}
        _ => sys::thread_exit(4),
    }
    if bind(None).is_err() {
        sys::thread_exit(5);
    }
    sys::thread_exit(0)
}

/// Endpoint + notification wait: a server bound to a notification.
pub fn bound_notification_ends_an_endpoint_receive() -> TestResult {
    RESULT.store(0, Ordering::SeqCst);
    let ep = ok(endpoint_create(), "endpoint_create")?;
    let n = ok(notification_create(), "notification_create")?;
    let s = util::spawn(bound_server, ep.0 as u64 | (n.0 as u64) << 32)?;
    sys::sleep_ns(20_000_000);
    ok(signal(n, 0x10), "signal")?;
    let t0 = sys::clock_ns();
    while RESULT.load(Ordering::SeqCst) & 1 == 0 {
        if sys::clock_ns() - t0 > 4_000_000_000 {
            let _ = s.join();
            return Err("the bound server's receive did not end on a signal");
        }
        sys::yield_now();
    }
    // The server may not be back in its receive yet: the call waits for it.
    ok(
        call(
            ep,
            &Message {
                label: 5,
                words: [0; 6],
            },
            GUARD_US,
        )
        .map(|_| ()),
        "call",
    )
    .inspect_err(|_| {
        note!("bound server result {:#x}", RESULT.load(Ordering::SeqCst));
    })?;
    // The call above returned: make the bits pending before the server's
    // next receive (it waits for bit 4; that receive does not block).
    ok(signal(n, 0x20), "signal before the receive")?;
    RESULT.fetch_or(4, Ordering::SeqCst);
    let st = s.join()?;
    if let abi::status::Status::Exited(c) = st {
        if c != 0 {
            note!("bound server stopped at step {c}");
        }
    }
    util::expect_ok(st)?;
    ok(handle_close(ep.0), "close")?;
    ok(handle_close(n.0), "close")?;
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

/// Where the IPC child's code is mapped, and the page its threads get as a
/// (never used) stack.
const CHILD_TEXT: u64 = 0x40_0000;
const CHILD_STACK: u64 = 0x5555_0000_0000;

// The IPC child: position-independent, stackless. It creates two endpoints
// and a notification, then starts four threads that block in every IPC
// wait there is: a server that took a call and waits in its next receive
// (holding the reply), the caller waiting for that reply, a receiver queued
// on the second endpoint and a notification waiter. After 20 ms it calls
// process_exit(7), which must end all of them (no hang) and free
// everything (the parent compares counts).
core::arch::global_asm!(
    ".pushsection .rodata.mica_tests_ipc_child, \"a\"",
    "mica_tests_ipc_child:",
    "mov rdi, {stack}",          // rdi: the threads' stack page
    "mov esi, 4096",
    "mov edx, {write}",
    "mov eax, {map_anon}",
    "syscall",
    "mov eax, {ep_create}",
    "syscall",
    "mov rbx, rax",              // rbx: endpoint 1
    "mov eax, {ep_create}",
    "syscall",
    "mov r12, rax",              // r12: endpoint 2
    "mov eax, {ntf_create}",
    "syscall",
    "mov r13, rax",              // r13: the notification
    "lea rdi, [rip + 4f]",       // the server, on endpoint 1
    "mov rsi, {stack_top}",
    "mov rdx, rbx",
    "mov eax, {spawn}",
    "syscall",
    "mov edi, 5000000",          // 5 ms: the server is in its receive
    "mov eax, {sleep}",
    "syscall",
    "lea rdi, [rip + 5f]",       // the caller, on endpoint 1
    "mov rsi, {stack_top}",
    "mov rdx, rbx",
    "mov eax, {spawn}",
    "syscall",
    "lea rdi, [rip + 6f]",       // a receiver on endpoint 2
    "mov rsi, {stack_top}",
    "mov rdx, r12",
    "mov eax, {spawn}",
    "syscall",
    "lea rdi, [rip + 7f]",       // a notification waiter
    "mov rsi, {stack_top}",
    "mov rdx, r13",
    "mov eax, {spawn}",
    "syscall",
    "mov edi, 20000000",         // 20 ms: everyone blocks
    "mov eax, {sleep}",
    "syscall",
    "mov edi, 7",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "4:",                        // server: rdi = endpoint; receive for ever
    "mov rbx, rdi",
    "41:",
    "mov rdi, rbx",
    "xor esi, esi",
    "xor r15d, r15d",
    "mov eax, {recv}",
    "syscall",
    "jmp 41b",
    "5:",                        // caller: rdi = endpoint
    "xor esi, esi",
    "mov eax, {call}",
    "syscall",
    "ud2",
    "6:",                        // receiver: rdi = endpoint
    "xor esi, esi",
    "mov eax, {recv}",
    "syscall",
    "ud2",
    "7:",                        // waiter: rdi = notification
    "xor esi, esi",
    "mov eax, {wait}",
    "syscall",
    "ud2",
    "mica_tests_ipc_child_end:",
    ".popsection",
    pexit = const Sysnum::ProcessExit as u64,
    sleep = const Sysnum::SleepNs as u64,
    spawn = const Sysnum::ThreadSpawn as u64,
    map_anon = const Sysnum::MapAnon as u64,
    ep_create = const Sysnum::EndpointCreate as u64,
    ntf_create = const Sysnum::NotificationCreate as u64,
    recv = const Sysnum::IpcRecv as u64,
    call = const Sysnum::IpcCall as u64,
    wait = const Sysnum::NtfWait as u64,
    write = const abi::prot::WRITE,
    stack = const CHILD_STACK,
    stack_top = const CHILD_STACK + 4096,
);

extern "C" {
    static mica_tests_ipc_child: u8;
    static mica_tests_ipc_child_end: u8;
}

/// A process whose threads are blocked in every kind of IPC wait (a call
/// waiting for its reply, a server holding that reply in its next receive,
/// a queued receiver, a notification waiter) is killed by process_exit:
/// it ends, no hang, and its threads, objects and kernel heap come back.
pub fn process_killed_in_every_ipc_wait_ends_cleanly() -> TestResult {
    // A thread of an earlier case may still await its reaping (on the next
    // switch of its CPU): let it go first, and compare with "at most".
    sys::sleep_ns(10_000_000);
    // Twice first: high-water marks (run queues, the sleep list, process
    // table nodes) settle. Then 8 runs may not grow the heap by more than
    // one such step (2 KiB); leaking the child's three objects alone would
    // be about 3 KiB.
    run_ipc_child()?;
    run_ipc_child()?;
    sys::sleep_ns(10_000_000);
    let before = ok(sys::sysinfo(), "sysinfo")?;
    for _ in 0..8 {
        run_ipc_child()?;
    }
    sys::sleep_ns(10_000_000);
    let after = ok(sys::sysinfo(), "sysinfo")?;
    if after.threads > before.threads || after.processes > before.processes {
        note!(
            "threads {} -> {}, processes {} -> {}",
            before.threads,
            after.threads,
            before.processes,
            after.processes
        );
        return Err("threads or processes of the killed child are left");
    }
    if after.heap_used_bytes > before.heap_used_bytes + 2048 {
        note!(
            "kernel heap {} -> {} bytes",
            before.heap_used_bytes,
            after.heap_used_bytes
        );
        return Err("kernel heap not given back after the child ended");
    }
    Ok(())
}

/// Runs the IPC child once; it must end with its own exit status.
fn run_ipc_child() -> TestResult {
    // SAFETY: both symbols are in the global_asm above, start < end.
    let text = unsafe {
        let start = core::ptr::addr_of!(mica_tests_ipc_child);
        let end = core::ptr::addr_of!(mica_tests_ipc_child_end);
        core::slice::from_raw_parts(start, end as usize - start as usize)
    };
    let mut buf = [0u8; 512];
    let len = abi::bootimg::encode_code(CHILD_TEXT, text, &mut buf)
        .map_err(|_| "cannot encode the child image")?;
    let pid = ok(sys::process_spawn(&buf[..len], 0), "process_spawn")?;
    let st = ok(sys::process_wait(pid), "process_wait")?;
    check(
        abi::status::decode(st) == abi::status::Status::Exited(7),
        "the child did not end with its process_exit status",
    )?;
    Ok(())
}

/// A 64 KiB buffer per side (the test program has no heap), page aligned.
#[repr(C, align(4096))]
struct Page64([u8; 65536]);
static mut SRV_BUF: Page64 = Page64([0; 65536]);
static mut CLI_BUF: Page64 = Page64([0; 65536]);

fn srv_buf() -> &'static mut [u8; 65536] {
    // SAFETY: only the buffer-echo server thread uses SRV_BUF, one at a time
    // (the case joins it before the next starts).
    unsafe { &mut (*core::ptr::addr_of_mut!(SRV_BUF)).0 }
}

fn cli_buf() -> &'static mut [u8; 65536] {
    // SAFETY: only the case's own thread uses CLI_BUF.
    unsafe { &mut (*core::ptr::addr_of_mut!(CLI_BUF)).0 }
}

/// Raw IPC with every register (buffers and handles).
fn raw(n: Sysnum, r: &mut IpcRegs) -> Result<u64, Error> {
    // SAFETY: the buffers the tests name are the static pages above (or
    // deliberately bad addresses the kernel must refuse).
    abi::decode_result(unsafe { ipc::ipc_syscall(n, r) })
}

/// The buffer server: receives into its 64 KiB buffer, answers with the
/// bytes reversed (label = bytes received, w0 = handles received, w1..w4 =
/// their numbers), closing nothing; label 0xdead stops it. A receive error
/// is answered by exiting with 10 + the error code.
extern "C" fn buffer_server(ep: u64) -> ! {
    let buf = srv_buf();
    let mut r = IpcRegs {
        rdi: ep,
        r14: buf.as_mut_ptr() as u64,
        r15: ipc::spec(65536, 0),
        ..IpcRegs::default()
    };
    let mut n = Sysnum::IpcRecv;
    loop {
        r.rsi = if n == Sysnum::IpcRecv { 0 } else { r.rsi };
        r.rdi = ep;
        r.r14 = buf.as_mut_ptr() as u64;
        r.r15 = ipc::spec(65536, 0);
        if let Err(e) = raw(n, &mut r) {
            sys::thread_exit(10 + e as i32);
        }
        let label = r.rsi as u32;
        let len = ipc::info_len(r.rsi);
        let got = ipc::unpack(r.handles);
        let count = ipc::info_handles(r.rsi) as u64;
        buf[..len].reverse();
        r.w = [
            count,
            got[0] as u64,
            got[1] as u64,
            got[2] as u64,
            got[3] as u64,
            len as u64,
        ];
        r.handles = [0, 0];
        r.rsi = ipc::info(len as u32, 0, 0, len as u64, false);
        if label == 0xdead {
            let _ = raw(Sysnum::IpcReply, &mut r);
            sys::thread_exit(0);
        }
        n = Sysnum::IpcReplyRecv;
    }
}

/// A call with a buffer of `len` bytes (pattern `seed`) and `handles`;
/// returns the reply's registers.
fn buffer_call(
    ep: Endpoint,
    len: usize,
    seed: u8,
    handles: &[u32],
    copy: u64,
) -> Result<IpcRegs, Error> {
    let buf = cli_buf();
    for (i, b) in buf[..len].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(seed);
    }
    let mut r = IpcRegs {
        rdi: ep.0 as u64,
        rsi: ipc::info(0x77, handles.len() as u64, copy, len as u64, true),
        r14: buf.as_mut_ptr() as u64,
        r15: ipc::spec(65536, 3_000_000),
        handles: ipc::pack(handles),
        ..IpcRegs::default()
    };
    raw(Sysnum::IpcCall, &mut r)?;
    Ok(r)
}

/// Buffers of 1 byte to 64 KiB go there and back intact; handles travel
/// moved (the sender's number goes stale, the receiver's works) and copied
/// (both work); transfers without the rights are refused.
pub fn buffers_and_handles_travel() -> TestResult {
    let ep = ok(endpoint_create(), "endpoint_create")?;
    let server = util::spawn(buffer_server, ep.0 as u64)?;
    let mut fail = None;
    for (len, seed) in [(1usize, 3u8), (4096, 5), (4097, 7), (65536, 11)] {
        let r = match buffer_call(ep, len, seed, &[], 0) {
            Ok(r) => r,
            Err(e) => {
                note!("{len}-byte call: {e}");
                fail = Some("a buffer call failed");
                break;
            }
        };
        let buf = cli_buf();
        let good = r.rsi as u32 == len as u32
            && ipc::info_len(r.rsi) == len
            && (0..len).all(|i| buf[len - 1 - i] == (i as u8).wrapping_mul(31).wrapping_add(seed));
        if !good {
            note!(
                "{len} bytes: reply label {} len {}",
                r.rsi as u32,
                ipc::info_len(r.rsi)
            );
            fail = Some("a buffer did not arrive intact (or the reply's did not)");
            break;
        }
    }
    // Handles: a notification moved, another copied.
    let moved = ok(notification_create(), "notification_create")?;
    let copied = ok(notification_create(), "notification_create")?;
    if fail.is_none() {
        match buffer_call(ep, 8, 1, &[moved.0, copied.0], 0b10) {
            Ok(r) => {
                let (count, h0, h1) = (r.w[0], r.w[1] as u32, r.w[2] as u32);
                let stale = signal(moved, 1) == Err(Error::BadHandle);
                let kept = signal(copied, 2).is_ok();
                let new0 = signal(Notification(h0), 4).is_ok();
                let new1 = signal(Notification(h1), 8).is_ok();
                let bits = (wait(Notification(h0), Some(0)), wait(copied, Some(0)));
                if count != 2 || !stale || !kept || !new0 || !new1 || bits != (Ok(4), Ok(10)) {
                    note!(
                        "count {count} stale {stale} kept {kept} new {new0} {new1} bits {bits:?}"
                    );
                    fail = Some("handles did not travel as moved/copied");
                }
                for h in [h0, h1] {
                    let _ = handle_close(h);
                }
            }
            Err(e) => {
                note!("call with handles: {e}");
                fail = Some("a call with handles failed");
            }
        }
    }
    // Without TRANSFER (or DUPLICATE for a copy): refused, nothing sent.
    if fail.is_none() {
        let plain = ok(
            handle_dup(copied.0, rights::SIGNAL | rights::DUPLICATE, 0),
            "dup",
        )?;
        let r1 = buffer_call(ep, 0, 0, &[plain], 0).map(|_| ());
        let plain2 = ok(
            handle_dup(copied.0, rights::SIGNAL | rights::TRANSFER, 0),
            "dup",
        )?;
        let r2 = buffer_call(ep, 0, 0, &[plain2], 1).map(|_| ());
        let still =
            signal(Notification(plain), 1).is_ok() && signal(Notification(plain2), 1).is_ok();
        if r1 != Err(Error::PermissionDenied) || r2 != Err(Error::PermissionDenied) || !still {
            note!("without TRANSFER: {r1:?}; copy without DUPLICATE: {r2:?}; kept {still}");
            fail = Some("a transfer without the rights was not refused");
        }
        let _ = handle_close(plain);
        let _ = handle_close(plain2);
    }
    let _ = buffer_call(ep, 0, 0, &[], 0).and_then(|_| {
        let mut r = IpcRegs {
            rdi: ep.0 as u64,
            rsi: ipc::info(0xdead, 0, 0, 0, true),
            r15: ipc::spec(0, 3_000_000),
            ..IpcRegs::default()
        };
        raw(Sysnum::IpcCall, &mut r)
    });
    let st = server.join()?;
    let _ = handle_close(copied.0);
    let _ = handle_close(ep.0);
    if let Some(f) = fail {
        return Err(f);
    }
    util::expect_ok(st)
}

/// Bad buffers are the error of the side that passed them: a sender's bad
/// buffer (kernel address, unmapped, wrapping, over 64 KiB) fails its call
/// and delivers nothing; a receiver's unmapped buffer fails its receive and
/// the caller's message goes to the next receive intact.
pub fn bad_buffers_fail_their_own_side() -> TestResult {
    let ep = ok(endpoint_create(), "endpoint_create")?;
    let bad: [(u64, u64, Error); 4] = [
        (0xffff_8000_0000_0000, 16, Error::BadAddress),
        (0x3000_0000_0000, 4096, Error::BadAddress),
        (0x7fff_ffff_fff0, 0x20, Error::BadAddress),
        (cli_buf().as_ptr() as u64, 65537, Error::InvalidArgument),
    ];
    for (addr, len, e) in bad {
        let mut r = IpcRegs {
            rdi: ep.0 as u64,
            rsi: ipc::info(1, 0, 0, len, true),
            r14: addr,
            r15: ipc::spec(0, 0),
            ..IpcRegs::default()
        };
        let got = raw(Sysnum::IpcCall, &mut r);
        if got != Err(e) {
            note!("call with buffer {addr:#x}+{len}: {got:?}, expected {e:?}");
            return Err("a bad sender buffer was not refused");
        }
    }
    // Nothing was delivered: a poll receive finds nothing.
    want(
        recv(ep, Some(0)),
        Error::WouldBlock,
        "a message arrived from a bad buffer",
    )?;

    // A receiver with an unmapped buffer: its receive fails, the call goes
    // on to the next receive.
    RESULT.store(0, Ordering::SeqCst);
    let t = util::spawn(bad_receiver, ep.0 as u64)?;
    sys::sleep_ns(20_000_000);
    let r = buffer_call(ep, 100, 9, &[], 0);
    let st = t.join()?;
    match (&r, st) {
        (Ok(r), abi::status::Status::Exited(0)) if ipc::info_len(r.rsi) == 100 => Ok(()),
        _ => {
            note!(
                "call {:?}, receiver {st:?}, first receive code {}",
                r.map(|r| r.rsi),
                RESULT.load(Ordering::SeqCst)
            );
            Err("a receiver's bad buffer was not its own error")
        }
    }?;
    check(
        RESULT.load(Ordering::SeqCst) == Error::BadAddress as u64,
        "the receiver's first receive did not fail with BadAddress",
    )?;
    ok(handle_close(ep.0), "close")?;
    Ok(())
}

/// Receives into an unmapped buffer (must fail with BadAddress, stored in
/// RESULT), then into a good one and echoes the length back.
extern "C" fn bad_receiver(ep: u64) -> ! {
    let mut r = IpcRegs {
        rdi: ep,
        r14: 0x3000_0000_0000,
        r15: ipc::spec(4096, 3_000_000),
        rsi: ipc::info(0, 0, 0, 0, true),
        ..IpcRegs::default()
    };
    let first = raw(Sysnum::IpcRecv, &mut r);
    RESULT.store(first.err().map_or(1000, |e| e as u64), Ordering::SeqCst);
    let buf = srv_buf();
    let mut r = IpcRegs {
        rdi: ep,
        r14: buf.as_mut_ptr() as u64,
        r15: ipc::spec(65536, 3_000_000),
        rsi: ipc::info(0, 0, 0, 0, true),
        ..IpcRegs::default()
    };
    if raw(Sysnum::IpcRecv, &mut r).is_err() {
        sys::thread_exit(1);
    }
    let len = ipc::info_len(r.rsi);
    r.rsi = ipc::info(0, 0, 0, len as u64, false);
    r.handles = [0, 0];
    if raw(Sysnum::IpcReply, &mut r).is_err() {
        sys::thread_exit(2);
    }
    sys::thread_exit(0)
}

/// Where the echo child maps its 64 KiB buffer.
const ECHO_BUF: u64 = 0x5556_0000_0000;

// The echo child: another process, so messages cross address spaces. It
// waits until its parent gives it an endpoint (its first handle), then
// answers every call with the same label, words and buffer bytes. Label
// 0xdead: it replies and exits 0 (the first 8 bytes of every buffer it
// gets it inverts before echoing); label 0xbeef: it exits 5 without replying
// (its caller must get PeerDied). A failing receive exits 100 + the code.
core::arch::global_asm!(
    ".pushsection .rodata.mica_tests_ipc_echo, \"a\"",
    "mica_tests_ipc_echo:",
    "mov rdi, {buf}",            // rdi: the buffer
    "mov esi, 65536",
    "mov edx, {write}",
    "mov eax, {map_anon}",
    "syscall",
    "1:",
    "mov edi, {h}",              // rdi: the endpoint the parent gives us
    "xor esi, esi",
    "mov r14, {buf}",            // r14: the buffer
    "mov r15d, 65536",           // r15: capacity 64 KiB, no timeout
    "mov eax, {recv}",
    "syscall",
    "test rax, rax",
    "jz 2f",
    "mov eax, {yield_}",         // not given yet (BadHandle): wait
    "syscall",
    "jmp 1b",
    "2:",
    "cmp esi, 0xdead",
    "je 3f",
    "cmp esi, 0xbeef",
    "je 4f",
    "mov rax, {buf}",            // invert the first 8 bytes: proof they
    "not qword ptr [rax]",       // reached this address space
    "mov edi, {h}",              // echo: rsi (label, length) and words as received
    "mov r14, {buf}",
    "mov r15d, 65536",
    "xor ebx, ebx",              // rbx, rbp: no handles sent back
    "xor ebp, ebp",
    "mov eax, {reply_recv}",
    "syscall",
    "test rax, rax",
    "jz 2b",
    "neg rax",
    "lea rdi, [rax + 100]",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "3:",
    "mov eax, {reply}",
    "syscall",
    "xor edi, edi",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "4:",
    "mov edi, 5",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "mica_tests_ipc_echo_end:",
    ".popsection",
    pexit = const Sysnum::ProcessExit as u64,
    yield_ = const Sysnum::Yield as u64,
    map_anon = const Sysnum::MapAnon as u64,
    recv = const Sysnum::IpcRecv as u64,
    reply = const Sysnum::IpcReply as u64,
    reply_recv = const Sysnum::IpcReplyRecv as u64,
    write = const abi::prot::WRITE,
    buf = const ECHO_BUF,
    h = const ipc::FIRST_HANDLE,
);

extern "C" {
    static mica_tests_ipc_echo: u8;
    static mica_tests_ipc_echo_end: u8;
}

/// Starts the echo child and gives it `ep` (receive right only); returns
/// its pid.
fn start_echo(ep: Endpoint) -> Result<sys::ProcessHandle, &'static str> {
    let text = crate::lifecycle::code(
        core::ptr::addr_of!(mica_tests_ipc_echo),
        core::ptr::addr_of!(mica_tests_ipc_echo_end),
    );
    crate::util::spawn_server(text, 0, ep, rights::RECV)
}

/// Between two processes: the label, the words and buffers up to 64 KiB go
/// to the other address space and back; a server process that exits while
/// a caller waits fails the call with PeerDied; handle_give refuses what
/// is not the caller's child.
pub fn calls_between_processes() -> TestResult {
    let ep = ok(endpoint_create(), "endpoint_create")?;
    want(
        ipc::handle_give(sys::ProcessHandle::from_raw(1), ep.0, rights::SEND),
        Error::BadHandle,
        "handle_give through a number that is no process handle",
    )?;
    let pid = start_echo(ep)?;
    let mut fail = None;
    for (len, seed) in [(0usize, 0u8), (4096, 13), (65536, 17)] {
        let buf = cli_buf();
        for (i, b) in buf[..len].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(7).wrapping_add(seed);
        }
        let words = [1, 2, u64::MAX, 4, 1 << 40, seed as u64];
        let mut r = IpcRegs {
            rdi: ep.0 as u64,
            rsi: ipc::info(0x42, 0, 0, len as u64, true),
            w: words,
            r14: buf.as_mut_ptr() as u64,
            r15: ipc::spec(65536, 3_000_000),
            ..IpcRegs::default()
        };
        let res = raw(Sysnum::IpcCall, &mut r);
        // The child inverted the first 8 bytes it got.
        let intact = (0..len).all(|i| {
            let sent = (i as u8).wrapping_mul(7).wrapping_add(seed);
            buf[i] == if i < 8 { !sent } else { sent }
        });
        if res.is_err()
            || r.w != words
            || r.rsi as u32 != 0x42
            || ipc::info_len(r.rsi) != len
            || !intact
        {
            note!(
                "{len} bytes: {res:?}, label {:#x}, len {}, intact {intact}",
                r.rsi as u32,
                ipc::info_len(r.rsi)
            );
            fail = Some("a message did not cross address spaces intact");
            break;
        }
    }
    // The server process exits holding our call.
    if fail.is_none() {
        let r = call(
            ep,
            &Message {
                label: 0xbeef,
                words: [0; 6],
            },
            GUARD_US,
        );
        if r != Err(Error::PeerDied) {
            note!("call to a server process that exits: {r:?}");
            fail = Some("a caller was not told its server process died");
        }
    }
    let st = ok(sys::process_wait(pid), "process_wait")?;
    let _ = handle_close(ep.0);
    if let Some(f) = fail {
        return Err(f);
    }
    check(
        abi::status::decode(st) == abi::status::Status::Exited(5),
        "the echo child did not end as told",
    )
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
