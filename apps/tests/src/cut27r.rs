//! cut27r (session 27): the IPC hand-off names its partner without a
//! reference count. Every started thread holds one counted reference to
//! itself (its life reference, `sched::start`), released by the switch
//! away from it after its exit (`sched::finish_switch`); PerCpu's current
//! thread and the fast path's `Handoff` borrow it, so the fast `call` and
//! `reply_recv` take no reference to the partner and the frameless resume
//! drops none for the thread it switched away from.
//!
//! [`fast_pairs_ended_mid_round_trip_give_threads_back`]: a same-core
//! fast pair (server and client on CPU 0, ping-ponging through the
//! frameless hand-off) is ended from another CPU after a swept pause,
//! round after round: the server killed, the client killed, both killed
//! (in either order), the client exiting on its own after a swept number
//! of calls, or the server exiting while it holds a call. So an exit or
//! a kill lands in every part of the round trip: between a partner's
//! claim and its hand-off, in the switch, at the resume. Each end must be
//! defined (the kill's `exited(-1)`, the caller's `PeerDied` or
//! `NotDelivered`), the kernel must not stop (a reference dropped twice
//! frees a thread that still runs or waits: the poison check in
//! `ipc::unlink`, or a fault on a freed stack), and every thread and heap
//! block must come back (a life reference leaked or taken twice keeps a
//! dead thread: the thread count does not settle). Seen failing with the
//! dead thread's life reference not released in `finish_switch` (the
//! thread count never settles) and with `finish_handoff` still dropping a
//! reference (the kernel stops within the first rounds).

use crate::break22::counted;
use crate::break23p::settled_since;
use crate::lifecycle::info;
use crate::note;
use crate::util::{self, check, ok, TestResult};
use abi::status::Status;
use abi::Error;
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::ipc::{self, Endpoint};
use libipc::sys;

/// Rounds (each of the five ends comes up `ROUNDS / 5` times).
const ROUNDS: u64 = 40;

/// The client's end: 0 running, else 0x100 | calls << 16 | its error code
/// (0xff: a wrong answer).
static CLIENT_END: AtomicU64 = AtomicU64::new(0);

/// A fast echo server on CPU 0 on the endpoint `arg as u32`: answers w0 + 1
/// until its receive fails; with `arg >> 32` non-zero it exits holding its
/// call once it has taken that many.
extern "C" fn server(arg: u64) -> ! {
    let _ = sys::set_affinity(0);
    crate::attack2::echo_until(Endpoint(arg as u32), arg >> 32);
    sys::thread_exit(0)
}

/// A fast client on CPU 0 calling endpoint `arg as u32` until an error, or
/// (with `arg >> 32` non-zero) until it made that many calls: then it exits
/// at once, right after the hand-off that resumed it.
extern "C" fn client(arg: u64) -> ! {
    let _ = sys::set_affinity(0);
    let ep = Endpoint(arg as u32);
    let stop = arg >> 32;
    let (n, code) = crate::attack2::count_calls(ep, |n| (stop != 0 && n == stop).then_some(0));
    CLIENT_END.store(0x100 | n << 16 | code, Ordering::SeqCst);
    sys::thread_exit(0)
}

/// One round; `how`: 0 kill the server, 1 kill the client, 2 kill both
/// (order by round), 3 the client exits after some calls, 4 the server
/// exits holding a call.
fn round(r: u64, how: u64) -> TestResult {
    CLIENT_END.store(0, Ordering::SeqCst);
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let send = ok(ipc::handle_dup(ep.0, abi::rights::SEND, 0), "dup send")?;
    let calls = 200 + (r * 7919) % 40 * 150;
    let server_stop = if how == 4 { calls } else { 0 };
    let client_stop = if how == 3 { calls } else { 0 };
    let s = util::spawn(server, server_stop << 32 | ep.0 as u64)?;
    let c = util::spawn(client, client_stop << 32 | send as u64)?;
    // 100 us to ~2 ms of ping-pong: the kill lands anywhere in it.
    sys::sleep_ns(100_000 + (r * 7919) % 40 * 50_000);
    match how {
        0 => ok(s.handle().kill(), "kill the server")?,
        1 => ok(c.handle().kill(), "kill the client")?,
        2 if r.is_multiple_of(2) => {
            ok(c.handle().kill(), "kill the client")?;
            ok(s.handle().kill(), "kill the server")?;
        }
        2 => {
            ok(s.handle().kill(), "kill the server")?;
            ok(c.handle().kill(), "kill the client")?;
        }
        _ => {}
    }
    // The server outlives a client that ended (killed, or done): its
    // receive waits on; the kill and the close end it.
    let c_st = if how == 0 || how == 4 {
        // The client ends on the server's end (its call held: PeerDied;
        // queued when the endpoint died: NotDelivered); close the receive
        // handle so a queued call is drained.
        let s_st = s.join()?;
        let _ = ipc::handle_close(ep.0);
        let c_st = c.join()?;
        let want = if how == 0 {
            Status::Exited(-1)
        } else {
            Status::Exited(0)
        };
        if s_st != want {
            note!("round {r} (how {how}): server {s_st:?}");
            return Err("a fast server's end was wrong");
        }
        c_st
    } else {
        let c_st = c.join()?;
        let _ = s.handle().kill();
        let _ = s.join()?;
        let _ = ipc::handle_close(ep.0);
        c_st
    };
    let _ = ipc::handle_close(send);
    let end = CLIENT_END.load(Ordering::SeqCst);
    let code = end & 0xff;
    let peer_death = code == Error::PeerDied as u64 || code == Error::NotDelivered as u64;
    let client_ok = match how {
        0 | 4 => c_st == Status::Exited(0) && end != 0 && peer_death,
        1 | 2 => c_st == Status::Exited(-1) || (c_st == Status::Exited(0) && peer_death),
        _ => c_st == Status::Exited(0) && end == 0x100 | calls << 16,
    };
    if !client_ok {
        note!("round {r} (how {how}): client {c_st:?}, end {end:#x}");
        return Err("a fast client's end was wrong");
    }
    Ok(())
}

/// Case: see the module docs.
pub fn fast_pairs_ended_mid_round_trip_give_threads_back() -> TestResult {
    let cpus = sys::cpu_count().max(1);
    // Kills from another CPU when there is one (on one CPU they land at
    // this thread's wake-ups only).
    let _ = sys::set_affinity(cpus - 1);
    // Once first: queues and lists at their high-water marks.
    round(0, 3)?;
    let s0 = info()?;
    let fast0 = counted(1);
    for r in 0..ROUNDS {
        round(r, r % 5)?;
    }
    let _ = sys::set_affinity(u64::MAX);
    check(
        counted(1) > fast0,
        "no fast call completed (the race was not run)",
    )?;
    settled_since(&s0, 1024, "threads or heap left after the fast pairs' ends")
}
