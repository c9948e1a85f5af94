//! `NotDelivered` versus `PeerDied` (issue 11, notdeliv): the kernel tells a
//! caller `NotDelivered` exactly when it can prove no receiver ever took
//! its message (the endpoint had no receive handle left at the call, or
//! the call was still queued when the last one closed), and `PeerDied`
//! when a server thread took the call and died holding it. libipc resends
//! the first (it cannot have been acted on), never the second unless it is
//! idempotent.
//!
//! - `notdeliv_call_without_receivers`: call (blocking and not), send.
//! - `notdeliv_queued_call_behind_a_busy_server_that_dies`: a child process
//!   takes call A and spins; call B queues behind it; the child is killed:
//!   A gets `PeerDied`, B `NotDelivered`, a later call `NotDelivered`.
//! - `notdeliv_taken_call_whose_server_dies_is_peer_died`: the same child
//!   takes the only call and is killed: `PeerDied`.
//! - `notdeliv_last_receiver_closing_races_callers`: clients on every CPU
//!   call in a loop while servers answer, and the last receive handle is
//!   closed from another CPU (servers that take a call after that moment
//!   die holding some of them): every call returns exactly once, answered
//!   (each reply counted once by its server), `PeerDied` only for a call a
//!   server took, `NotDelivered` only for one no server took; no hang.

use crate::lifecycle::code;
use crate::note;
use crate::util::{self, check, ok, want, TestResult};
use abi::{Error, Sysnum};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use libipc::ipc::{
    self, call, endpoint_create, handle_close, handle_dup, recv, reply, rights, send, Endpoint,
    Message, Received,
};
use libipc::sys;

/// Every wait's limit: never reached in a passing run (a hang shows as
/// `TimedOut`).
const GUARD_US: Option<u32> = Some(10_000_000);

/// Case: calls and sends to an endpoint with no receive handle left are
/// `NotDelivered`, never queued.
pub fn call_without_receivers() -> TestResult {
    let ep = ok(endpoint_create(), "endpoint_create")?;
    let s = ok(handle_dup(ep.0, rights::SEND, 0), "dup SEND")?;
    ok(handle_close(ep.0), "close the only receive handle")?;
    let m = Message::default();
    want(
        call(Endpoint(s), &m, GUARD_US),
        Error::NotDelivered,
        "blocking call without receivers",
    )?;
    want(
        call(Endpoint(s), &m, Some(0)),
        Error::NotDelivered,
        "non-blocking call without receivers",
    )?;
    want(
        send(Endpoint(s), &m),
        Error::NotDelivered,
        "send without receivers",
    )?;
    ok(handle_close(s), "close")?;
    Ok(())
}

// The receiving child: waits until its parent gives it an endpoint (its
// first handle), takes one call (register-only) and spins without ever
// replying, until it is killed.
core::arch::global_asm!(
    ".pushsection .rodata.mica_tests_notdeliv_child, \"a\"",
    "mica_tests_notdeliv_child:",
    "1:",
    "mov edi, {h}",              // rdi: the endpoint the parent gives us
    "xor esi, esi",              // rsi: a receive sends nothing
    "xor r14d, r14d",            // r14: no buffer
    "xor r15d, r15d",            // r15: capacity 0, no timeout
    "mov eax, {recv}",
    "syscall",
    "test rax, rax",
    "jz 2f",
    "mov eax, {yield_}",         // not given yet (BadHandle): wait
    "syscall",
    "jmp 1b",
    "2:",
    "pause",                     // holds the call: busy for ever
    "jmp 2b",
    "mica_tests_notdeliv_child_end:",
    ".popsection",
    recv = const Sysnum::IpcRecv as u64,
    yield_ = const Sysnum::Yield as u64,
    h = const ipc::FIRST_HANDLE,
);

extern "C" {
    static mica_tests_notdeliv_child: u8;
    static mica_tests_notdeliv_child_end: u8;
}

/// Starts the receiving child and gives it `ep`'s receive side.
fn start_child(ep: Endpoint) -> Result<sys::ProcessHandle, &'static str> {
    let text = code(
        core::ptr::addr_of!(mica_tests_notdeliv_child),
        core::ptr::addr_of!(mica_tests_notdeliv_child_end),
    );
    util::spawn_server(text, 0, ep, rights::RECV)
}

/// Per calling thread: its call's error code (1000: answered), 0 while it
/// waits.
static END: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

/// Calls once through handle `arg & 0xffff_ffff` and stores the outcome in
/// `END[arg >> 32]`.
extern "C" fn call_once(arg: u64) -> ! {
    let r = call(Endpoint(arg as u32), &Message::default(), GUARD_US);
    let code = match r {
        Ok(_) => 1000,
        Err(e) => e as u64,
    };
    // SeqCst: read after the join (which orders it anyway).
    END[(arg >> 32) as usize & 1].store(code, Ordering::SeqCst);
    sys::thread_exit(0)
}

/// One round: the child takes call A; with `queued`, call B queues behind
/// it; the child is killed. The codes of A and B (B 0 without `queued`).
fn busy_server_dies(queued: bool, wait_ns: u64) -> Result<(u64, u64), &'static str> {
    let ep = ok(endpoint_create(), "endpoint_create")?;
    let s = ok(handle_dup(ep.0, rights::SEND, 0), "dup SEND")?;
    let pid = start_child(ep)?;
    // The child's receive handle is the last one.
    ok(handle_close(ep.0), "close own receive handle")?;
    END[0].store(0, Ordering::SeqCst);
    END[1].store(0, Ordering::SeqCst);
    let a = util::spawn(call_once, s as u64)?;
    sys::sleep_ns(wait_ns); // the child takes A and spins
    let b = if queued {
        let b = util::spawn(call_once, s as u64 | 1 << 32)?;
        sys::sleep_ns(wait_ns); // B queues: the child never receives again
        Some(b)
    } else {
        None
    };
    ok(sys::process_kill(pid), "kill the child")?;
    let _ = util::wait_status(pid)?;
    util::expect_ok(a.join()?)?;
    if let Some(b) = b {
        util::expect_ok(b.join()?)?;
    }
    // After the death: not delivered at once.
    let late = call(Endpoint(s), &Message::default(), GUARD_US);
    let _ = handle_close(s);
    want(late, Error::NotDelivered, "a call after the server's death")?;
    Ok((END[0].load(Ordering::SeqCst), END[1].load(Ordering::SeqCst)))
}

/// Runs [`busy_server_dies`] until the child took A before the kill (a
/// loaded machine may not run it within the first waits: then A was never
/// taken and is `NotDelivered` too, which is right but tests nothing).
fn taken_round(queued: bool) -> Result<(u64, u64), &'static str> {
    let nd = Error::NotDelivered as u64;
    for i in 0..6 {
        let (a, b) = busy_server_dies(queued, 20_000_000 << i)?;
        if a == nd && (!queued || b == nd) {
            note!("round {i}: the child had not taken call A yet; waiting longer");
            continue;
        }
        return Ok((a, b));
    }
    Err("the child never took a call")
}

/// Case: a call queued behind a server busy with another call, when the
/// server dies, is `NotDelivered`; the one the server held is `PeerDied`.
pub fn queued_call_behind_a_busy_server_that_dies() -> TestResult {
    let (a, b) = taken_round(true)?;
    if a != Error::PeerDied as u64 || b != Error::NotDelivered as u64 {
        note!("held call A ended {a}, queued call B ended {b}");
        return Err("held call not PeerDied, or queued call not NotDelivered");
    }
    Ok(())
}

/// Case: a call the server took, when the server dies holding it, is
/// `PeerDied` (it may have been acted on).
pub fn taken_call_whose_server_dies_is_peer_died() -> TestResult {
    let (a, _) = taken_round(false)?;
    if a != Error::PeerDied as u64 {
        note!("held call ended with code {a}");
        return Err("a call the dying server held was not PeerDied");
    }
    Ok(())
}

// ---------------------------------------------------------------- race ----

const CLIENTS: usize = 4;
const SERVERS: usize = 2;
const ROUNDS: u64 = 24;

/// Per client: the highest sequence number a server received from it.
static SEEN: [AtomicU64; CLIENTS] = [const { AtomicU64::new(0) }; CLIENTS];
/// Per client: `seq << 16 | code` of its last call (code 0xffff: a wrong
/// answer), 0 while it runs.
static LAST: [AtomicU64; CLIENTS] = [const { AtomicU64::new(0) }; CLIENTS];
/// Calls answered (counted by the clients) and replies that succeeded
/// (counted by the servers).
static ANSWERED: AtomicU64 = AtomicU64::new(0);
static REPLIED: AtomicU64 = AtomicU64::new(0);
/// Set just before the last receive handle closes: a server that takes a
/// call after it dies holding every other one.
static DYING: AtomicBool = AtomicBool::new(false);

/// A server: `arg` is the receive handle, its CPU above bit 32. Echoes
/// every call (label and words) until the endpoint dies (exit 0); once
/// [`DYING`], it exits holding a call with an even sequence number.
extern "C" fn race_server(arg: u64) -> ! {
    let _ = sys::set_affinity(arg >> 32);
    let ep = Endpoint(arg as u32);
    loop {
        match recv(ep, GUARD_US) {
            Ok(Received::Msg { msg, .. }) => {
                let c = msg.words[0] as usize % CLIENTS;
                // SeqCst: read by the checker after the joins (which
                // order it anyway).
                SEEN[c].fetch_max(msg.label as u64, Ordering::SeqCst);
                if DYING.load(Ordering::SeqCst) && msg.label % 2 == 0 {
                    sys::thread_exit(0); // dies holding it: PeerDied
                }
                if reply(&msg).is_ok() {
                    REPLIED.fetch_add(1, Ordering::SeqCst);
                }
            }
            Ok(Received::Notified(_)) => sys::thread_exit(1),
            // The endpoint died under our wait, or our handle was closed.
            Err(Error::PeerDied | Error::BadHandle) => sys::thread_exit(0),
            Err(e) => sys::thread_exit(10 + e as i32),
        }
    }
}

/// A client: `arg` is the send handle, its index at bit 32, its CPU at
/// bit 40. Calls with sequence numbers 1, 2, ... until a call fails.
extern "C" fn race_client(arg: u64) -> ! {
    let c = (arg >> 32) as u8 as usize % CLIENTS;
    let _ = sys::set_affinity(arg >> 40);
    let ep = Endpoint(arg as u32);
    let mut seq = 1u64;
    loop {
        let m = Message {
            label: seq as u32,
            words: [c as u64, seq, 0, 0, 0, 0],
        };
        let code = match call(ep, &m, GUARD_US) {
            Ok(r) if r == m => {
                ANSWERED.fetch_add(1, Ordering::SeqCst);
                seq += 1;
                continue;
            }
            Ok(_) => 0xffff,
            Err(e) => e as u64,
        };
        LAST[c].store(seq << 16 | code, Ordering::SeqCst);
        sys::thread_exit(0)
    }
}

/// Case: see the module docs.
pub fn last_receiver_closing_races_callers() -> TestResult {
    let cpus = sys::cpu_count().max(1);
    let (mut not_delivered, mut peer_died, mut answered) = (0u64, 0u64, 0u64);
    let mut result = Ok(());
    for round in 0..ROUNDS {
        let ep = ok(endpoint_create(), "endpoint_create")?;
        let s = ok(handle_dup(ep.0, rights::SEND, 0), "dup SEND")?;
        for c in 0..CLIENTS {
            SEEN[c].store(0, Ordering::SeqCst);
            LAST[c].store(0, Ordering::SeqCst);
        }
        ANSWERED.store(0, Ordering::SeqCst);
        REPLIED.store(0, Ordering::SeqCst);
        DYING.store(false, Ordering::SeqCst);
        let mut servers = heapless::Vec::<util::Thread, SERVERS>::new();
        for k in 0..SERVERS as u64 {
            let cpu = (round + k + 1) % cpus;
            let _ = servers.push(util::spawn(race_server, ep.0 as u64 | cpu << 32)?);
        }
        let mut clients = heapless::Vec::<util::Thread, CLIENTS>::new();
        for c in 0..CLIENTS as u64 {
            let cpu = (round + c) % cpus;
            let arg = s as u64 | c << 32 | cpu << 40;
            let _ = clients.push(util::spawn(race_client, arg)?);
        }
        // The last receive handle closes from a CPU of its own while the
        // calls go on.
        let _ = sys::set_affinity(round % cpus);
        sys::sleep_ns(1_000_000 + (round % 8) * 400_000);
        DYING.store(true, Ordering::SeqCst);
        ok(handle_close(ep.0), "close the last receive handle")?;
        let _ = sys::set_affinity(u64::MAX);
        for t in clients {
            util::expect_ok(t.join()?)?;
        }
        for t in servers {
            util::expect_ok(t.join()?)?;
        }
        let _ = handle_close(s);
        // The joins ordered every store above.
        for c in 0..CLIENTS {
            let last = LAST[c].load(Ordering::SeqCst);
            let (seq, code) = (last >> 16, last & 0xffff);
            let seen = SEEN[c].load(Ordering::SeqCst);
            let fine = if code == Error::NotDelivered as u64 {
                not_delivered += 1;
                seen < seq // no server ever took it
            } else if code == Error::PeerDied as u64 {
                peer_died += 1;
                seen == seq // a server took it and died holding it
            } else {
                false
            };
            if !fine {
                note!("round {round}: client {c}'s call {seq} ended with code {code}; servers saw up to {seen}");
                result =
                    Err("a call ended other than NotDelivered (never taken) or PeerDied (taken)");
            }
        }
        let (a, r) = (
            ANSWERED.load(Ordering::SeqCst),
            REPLIED.load(Ordering::SeqCst),
        );
        answered += a;
        if a != r {
            note!("round {round}: {a} calls answered, {r} replies made");
            result = Err("answers and replies differ (lost or doubled)");
        }
        result?;
    }
    note!(
        "{ROUNDS} rounds: {answered} calls answered; final calls: {not_delivered} NotDelivered, {peer_died} PeerDied"
    );
    check(answered > 0, "no call was answered before the closes")?;
    check(not_delivered > 0, "no call ever ended NotDelivered")
}
