//! break23p (session 23): proto2's fast `reply_recv` drops its spare lookup
//! reference right after its first lock and reaches the endpoint through a
//! raw pointer (`epp`) until it is queued, kept alive by its own wait
//! record. This races that window against the two things that could end
//! the endpoint's life under it: the close of its last (receive) handle and
//! a kill of the server, both from another CPU, while a client on the
//! server's CPU keeps the fast path busy. Every round must end defined (the
//! server killed or failed out of its receive, the client with a peer-death
//! error), and once every handle is closed and every thread gone the
//! endpoints are freed (the kernel heap comes back).

use crate::attack2::{echo_server, fast_client, CLIENT_RESULT};
use crate::lifecycle::{info, settle};
use crate::note;
use crate::util::{self, ok, TestResult};
use abi::status::Status;
use abi::Error;
use core::sync::atomic::Ordering;
use libipc::ipc;
use libipc::sys;

/// Case: see the module docs. Odd rounds kill first, even rounds close
/// first, each after a different number of fast round trips.
pub fn fast_reply_recv_races_close_and_kill() -> TestResult {
    let cpus = sys::cpu_count().max(1);
    let s0 = info()?;
    let rounds = 16u64;
    for round in 0..rounds {
        let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
        let send = ok(ipc::handle_dup(ep.0, abi::rights::SEND, 0), "dup send")?;
        CLIENT_RESULT.store(0, Ordering::SeqCst);
        let s = util::spawn(echo_server, ep.0 as u64)?;
        let c = util::spawn(fast_client, send as u64)?;
        let _ = sys::set_affinity(cpus - 1);
        sys::sleep_ns(1_000_000 + round * 370_000);
        let (a, b) = if round % 2 == 1 {
            (s.handle().kill(), ipc::handle_close(ep.0))
        } else {
            let b = ipc::handle_close(ep.0);
            (s.handle().kill(), b)
        };
        ok(a, "thread_kill the server")?;
        ok(b, "close the receive handle")?;
        let st = s.join()?;
        let _ = sys::set_affinity(u64::MAX);
        util::expect_ok(c.join()?)?;
        let _ = ipc::handle_close(send);
        let r = CLIENT_RESULT.load(Ordering::SeqCst);
        let code = r & 0xff;
        let peer_death = code == Error::PeerDied as u64 || code == Error::NotDelivered as u64;
        let server_ok = st == Status::Exited(-1) || st == Status::Exited(0);
        if !server_ok || !peer_death {
            note!(
                "round {round}: server {st:?}, client {} calls then code {code}",
                r >> 8
            );
            return Err("a fast reply_recv raced by a close and a kill ended wrong");
        }
    }
    // Every endpoint (136 bytes each) is gone with its handles and threads;
    // the heap figure is the whole kernel's (a few dozen bytes of noise).
    settled_since(
        &s0,
        512,
        "endpoints or threads left after a close and a kill",
    )
}

/// Waits up to 2 s for the kernel's thread count to return to `s0`'s and
/// its heap to within `slack` bytes of it (also break24p's); `err` if it
/// does not, with both figures noted.
pub(crate) fn settled_since(s0: &abi::SysInfo, slack: u64, err: &'static str) -> TestResult {
    let (s, held) = settle(2000, |s| {
        s.threads <= s0.threads && s.heap_used_bytes <= s0.heap_used_bytes + slack
    })?;
    if !held {
        note!(
            "heap {} bytes (before {}), threads {} (before {})",
            s.heap_used_bytes,
            s0.heap_used_bytes,
            s.threads,
            s0.threads
        );
        return Err(err);
    }
    Ok(())
}
