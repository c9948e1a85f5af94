//! break25p (session 25): proto3's reply word (`kcore::ipc::ReplyWord`)
//! under timeouts. A caller's timeout is ended by the caller itself, on its
//! CPU: its own claim, then `caller_gone` on the server's word, which spins
//! (interrupts off) while the server side holds the word's pin. The server
//! side pins the word to claim the caller it names (`reply`, `reply_recv`,
//! `take_call`'s rearm), and a server that pins the word just after the
//! caller's own claim won loses its claim under the pin: that pin must be
//! released (or the caller's CPU spins for ever, and the server's next pin
//! reads the pinned word as a caller). proto3's ring-3 case killed one
//! caller per round and did not catch that bug injected; here every round
//! is a try: a timed call from another CPU whose server answers after a
//! pause that tracks the boundary between the reply and the timeout (a
//! staircase, jittered), so the reply lands just before, in and just after
//! the caller's own timeout path, round after round.
//!
//! Each call must end exactly once: the caller got the reply (the server's
//! slow `reply` then says Ok) or timed out (the `reply` says `PeerDied`);
//! odd rounds answer through `reply_recv` (the fast path's pinned `take`
//! when eligible, the caller's outcome only). Then the server still
//! answers, and every thread and endpoint is gone.
//!
//! `Ok` with a note on one CPU (the caller's timeout and the server's reply
//! need two CPUs to race).

use crate::break23p::settled_since;
use crate::lifecycle::info;
use crate::note;
use crate::util::{self, ok, spin_until, tsc_per_ms, TestResult};
use abi::Error;
use core::sync::atomic::{AtomicU8, Ordering};
use libipc::bench::rdtsc;
use libipc::ipc::{self, Endpoint, Message, Received};
use libipc::sys;

/// Timed calls (each one race).
const ROUNDS: u64 = 4000;
/// The call's timeout (us).
const TIMEOUT_US: u32 = 150;
/// The server's pause (ns) follows the boundary between the reply and the
/// timeout: this much longer after an answered call, shorter after a
/// timed-out one (a staircase), plus a scattered jitter of up to
/// `JITTER_NS` either way, so most replies land within a few hundred ns of
/// the caller's own timeout path.
const STEP_NS: u64 = 150;
const JITTER_NS: u64 = 400;
/// The label that ends the server (after its reply).
const STOP: u32 = 99;

/// What the server did with each round's call: 0 never received (its
/// caller timed out while it was queued), 1 its slow `reply` said Ok, 2
/// it said `PeerDied`, 3 answered through `reply_recv` (odd rounds: the
/// caller's outcome only), anything else the reply's error + 16.
static SRV: [AtomicU8; ROUNDS as usize] = [const { AtomicU8::new(0) }; ROUNDS as usize];
/// What each round's call ended with: 1 the reply, 2 `TimedOut`.
static CLI: [AtomicU8; ROUNDS as usize] = [const { AtomicU8::new(0) }; ROUNDS as usize];

/// On CPU 0: receives, pauses `words[1]` TSC ticks, answers `words[0] + 1`
/// (slow `reply` and `recv` on even rounds, `reply_recv` on odd ones).
extern "C" fn paused_server(ep: u64) -> ! {
    let _ = sys::set_affinity(0);
    let ep = Endpoint(ep as u32);
    let mut r = ipc::recv(ep, None);
    while let Ok(Received::Msg { msg, .. }) = r {
        let n = msg.words[0];
        let reply = Message {
            label: 0,
            words: [n + 1, 0, 0, 0, 0, 0],
        };
        if msg.label == STOP {
            let _ = ipc::reply(&reply);
            break;
        }
        spin_until(rdtsc() + msg.words[1]);
        let slot = &SRV[n as usize % SRV.len()];
        if n % 2 == 0 {
            let code = match ipc::reply(&reply) {
                Ok(()) => 1,
                Err(Error::PeerDied) => 2,
                Err(e) => 16 + e as u8,
            };
            slot.store(code, Ordering::SeqCst);
            r = ipc::recv(ep, None);
        } else {
            slot.store(3, Ordering::SeqCst);
            r = ipc::reply_recv(ep, &reply, None);
        }
    }
    sys::thread_exit(0)
}

/// Case: see the module docs.
pub fn timed_calls_racing_replies_end_once() -> TestResult {
    let cpus = sys::cpu_count();
    if cpus < 2 {
        note!("one CPU: a caller's timeout cannot race its server's reply");
        return Ok(());
    }
    let s0 = info()?;
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let send = Endpoint(ok(ipc::handle_dup(ep.0, abi::rights::SEND, 0), "dup send")?);
    for (s, c) in SRV.iter().zip(&CLI) {
        s.store(0, Ordering::SeqCst);
        c.store(0, Ordering::SeqCst);
    }
    let server = util::spawn(paused_server, ep.0 as u64)?;
    let _ = sys::set_affinity(cpus - 1);
    let tick_ns = |ns: u64| ns * tsc_per_ms() / 1_000_000;
    let (mut replied, mut timed_out) = (0u64, 0u64);
    let mut result = Ok(());
    let timeout_ns = TIMEOUT_US as u64 * 1000;
    let mut stair = timeout_ns;
    for n in 0..ROUNDS {
        // The pause: the staircase, jittered in 10 ns steps in a scattered
        // order (7919 is prime to the 80 steps).
        let pause = stair - JITTER_NS + n * 7919 % (2 * JITTER_NS / 10) * 10;
        let m = Message {
            label: 1,
            words: [n, tick_ns(pause), 0, 0, 0, 0],
        };
        let got = match ipc::call(send, &m, Some(TIMEOUT_US)) {
            Ok(r) if r.words[0] == n + 1 => true,
            Ok(_) => {
                result = Err("a timed call got another call's reply");
                break;
            }
            Err(Error::TimedOut) => false,
            Err(e) => {
                note!("round {n}: {e:?}");
                result = Err("a timed call ended with neither its reply nor TimedOut");
                break;
            }
        };
        CLI[n as usize].store(if got { 1 } else { 2 }, Ordering::SeqCst);
        if got {
            replied += 1;
            stair = (stair + STEP_NS).min(2 * timeout_ns);
        } else {
            timed_out += 1;
            stair = (stair - STEP_NS).max(timeout_ns / 2);
        }
        // Lockstep, loosely: the server done with this call (or 1 ms, when
        // it never got it), so the next call finds it receiving.
        let end = util::deadline_ms(1);
        while SRV[n as usize].load(Ordering::SeqCst) == 0 && rdtsc() < end {
            crate::util::relax();
        }
    }
    // The server still answers (a pin left behind hangs it or faults).
    let stop = Message {
        label: STOP,
        words: [ROUNDS, 0, 0, 0, 0, 0],
    };
    let last = ipc::call(send, &stop, Some(2_000_000));
    let st = server.join()?;
    let _ = sys::set_affinity(u64::MAX);
    ok(ipc::handle_close(send.0), "close send")?;
    ok(ipc::handle_close(ep.0), "close the receive handle")?;
    result?;
    if !matches!(last, Ok(r) if r.words[0] == ROUNDS + 1) {
        note!("last call: {last:?}");
        return Err("the server stopped answering after timed calls raced its replies");
    }
    util::expect_ok(st)?;
    // The server handled the calls in order and answered STOP last: every
    // round's entry is final. Each call ended exactly once.
    for n in 0..ROUNDS as usize {
        let (c, s) = (CLI[n].load(Ordering::SeqCst), SRV[n].load(Ordering::SeqCst));
        // Answered: the server's reply said Ok. Timed out: never received
        // (timed out queued), or the server's reply said `PeerDied`.
        let once = matches!((c, s), (1, 1 | 3) | (2, 0 | 2 | 3));
        if !once {
            note!("round {n}: caller {c} (1 reply, 2 TimedOut), server {s}");
            return Err("a timed call's reply and timeout disagree (ended twice or never)");
        }
    }
    if replied == 0 {
        return Err("no timed call was answered (the race was not run)");
    }
    if timed_out == 0 {
        note!("no timed call timed out in {ROUNDS} rounds (the sweep missed)");
    }
    settled_since(&s0, 1024, "threads or endpoints left after the timed calls")
}
