//! proto3 (session 25): the fast path takes no thread-IPC lock. A server's
//! reply capability is an atomic word (`kcore::ipc::ReplyWord`): the fast
//! `reply_recv` pins it to claim its caller, and a caller's kill turns the
//! word's `Pending(caller)` into `GONE`, waiting out a pin, before the
//! caller leaves its wait (and its memory may go). The wait records are
//! owned through the claim (`WaitRecord`).
//!
//! [`killed_fast_callers_leave_the_server_serving`]: a client calling a
//! server on CPU 0 is killed from another CPU after a swept pause, round
//! after round, so the kill lands in every part of the round trip (its
//! call held by the server, its reply being claimed, its own wait ending).
//! Even rounds the client runs on CPU 0 (same-core fast ping-pong); odd
//! rounds on another CPU, where its kill's own claim and `caller_gone`
//! race the server's fast `reply_recv` (take, pin, claim) on CPU 0. Each round the server must still answer a call
//! from this thread (a reply word left pinned, or naming a dead caller,
//! would hang it or fault), and at the end a kill of the server itself
//! while a client calls it ends both defined. Then every thread and
//! endpoint is gone (thread count and kernel heap settle).
//!
//! `Ok` with a note on one CPU (no other CPU to kill from mid-round-trip).

use crate::attack2::{call_until_error, echo_server, fast_client, CLIENT_RESULT};
use crate::break22::counted;
use crate::break23p::settled_since;
use crate::lifecycle::info;
use crate::note;
use crate::util::{self, check, ok, TestResult};
use abi::status::Status;
use abi::Error;
use core::sync::atomic::Ordering;
use libipc::ipc::{self, Endpoint, Message};
use libipc::sys;

/// Kill rounds.
const ROUNDS: u64 = 40;

/// A client pinned to CPU `arg >> 32` calling endpoint `arg as u32` (word
/// 0 counting up) until an error or its kill. On CPU 0 it ping-pongs with
/// the server through the same-core fast path; on another CPU its calls
/// are cross-core (`xcall`) and the server's fast `reply_recv` claims it
/// there, so its kill's own claim on its CPU races that reply for real.
extern "C" fn pinned_client(arg: u64) -> ! {
    let _ = sys::set_affinity(arg >> 32);
    call_until_error(Endpoint(arg as u32), |_| None)
}

/// A call from this thread (on the last CPU: a cross-CPU call) must be
/// answered with word 0 + 1.
fn server_answers(send: Endpoint, n: u64) -> TestResult {
    let m = Message {
        label: 1,
        words: [n, 0, 0, 0, 0, 0],
    };
    match ipc::call(send, &m, Some(2_000_000)) {
        Ok(r) if r.words[0] == n + 1 => Ok(()),
        Ok(_) => Err("the server answered a wrong word after a caller's kill"),
        Err(e) => {
            note!("call after a caller's kill: {e:?}");
            Err("the server stopped answering after a fast caller's kill")
        }
    }
}

/// Case: see the module docs.
pub fn killed_fast_callers_leave_the_server_serving() -> TestResult {
    let cpus = sys::cpu_count();
    if cpus < 2 {
        note!("one CPU: no other CPU to kill a fast caller from");
        return Ok(());
    }
    let s0 = info()?;
    let fast0 = counted(2);
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let send = ok(ipc::handle_dup(ep.0, abi::rights::SEND, 0), "dup send")?;
    let send = Endpoint(send);
    let server = util::spawn(echo_server, ep.0 as u64)?;
    let _ = sys::set_affinity(cpus - 1);
    for round in 0..ROUNDS {
        // Even rounds on the server's CPU, odd ones on another.
        let cpu = round % 2 * (cpus - 1).min(1 + round / 2 % (cpus - 1));
        let c = util::spawn(pinned_client, cpu << 32 | send.0 as u64)?;
        // 150 us to ~2.1 ms of ping-pong: the kill lands anywhere in it.
        sys::sleep_ns(150_000 + (round * 7919) % 40 * 50_000);
        ok(c.handle().kill(), "thread_kill the client")?;
        let st = c.join()?;
        if st != Status::Exited(-1) {
            // It stopped on its own: the server failed it.
            note!(
                "round {round}: client {st:?}, result {:#x}",
                CLIENT_RESULT.load(Ordering::SeqCst)
            );
            return Err("a fast client ended on its own before its kill");
        }
        server_answers(send, round)?;
    }
    check(
        counted(2) > fast0,
        "no fast reply_recv completed (the race was not run)",
    )?;
    // The server killed while a client calls it: the client ends with a
    // peer-death error (its call held by the killed server, or queued
    // and then drained when the endpoint dies).
    CLIENT_RESULT.store(0, Ordering::SeqCst);
    let c = util::spawn(fast_client, send.0 as u64)?;
    sys::sleep_ns(1_000_000);
    ok(server.handle().kill(), "thread_kill the server")?;
    let st = server.join()?;
    ok(ipc::handle_close(ep.0), "close the receive handle")?;
    util::expect_ok(c.join()?)?;
    let _ = sys::set_affinity(u64::MAX);
    let _ = ipc::handle_close(send.0);
    let code = CLIENT_RESULT.load(Ordering::SeqCst) & 0xff;
    let peer_death = code == Error::PeerDied as u64 || code == Error::NotDelivered as u64;
    if st != Status::Exited(-1) || !peer_death {
        note!("server {st:?}, client code {code}");
        return Err("a fast server killed mid ping-pong left a wrong end");
    }
    settled_since(&s0, 1024, "threads or endpoints left after the kills")
}
