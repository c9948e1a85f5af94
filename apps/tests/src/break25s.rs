//! break25s (session 25): attacks on sched3's hand-off without an affinity
//! test (`sched::direct_or_block`). The claim: every hand-off target waits
//! in a wait it entered on this CPU (`Handoff::queued_here`: its queue
//! entry's CPU; `Handoff::or_wake`: its `last_cpu`), and only the thread
//! itself changes its set, moving off a CPU outside it before
//! `set_affinity` returns. sched3's own case drives the fast pair only;
//! this one drives the slow path's hand-offs too.
//!
//! - [`slow_handoffs_with_suspends_and_timeouts_stay_on_pinned_cpus`] (ring-3): a
//!   server answering with slow `reply_recv`s (a receive timeout: its
//!   reply is `end_wait_handoff`'s `or_wake`, its receive a slow queue
//!   entry a fast call takes with `queued_here`) and clients alternating
//!   fast calls with calls with a timeout (a sleep entry whose wake-up may
//!   come stale), all of them re-pinning themselves between their waits,
//!   while a third thread suspends and resumes the clients (a resumed
//!   thread is queued by `pick_cpu`, a suspended one parks outside IPC):
//!   after every wait each thread runs on the CPU it pinned itself to.
//!
//! `Ok` with a note on one CPU (every set allows the one CPU).

use crate::note;
use crate::sched3::{check_cpu, pin_for};
use crate::util::{self, check, ok, TestResult};
use abi::status::Status;
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::ipc::{self, Endpoint, Message, Received};
use libipc::{hw, sys};

/// Calls each client makes.
const CALLS: u64 = 240;
/// Clients (at most; one per CPU up to this).
const CLIENTS: usize = 4;
/// The server's endpoint; waits that returned off the pinned CPU; bad
/// replies; clients still calling.
static EP: AtomicU64 = AtomicU64::new(0);
static OFF_CPU: AtomicU64 = AtomicU64::new(0);
static BAD: AtomicU64 = AtomicU64::new(0);
static RUNNING: AtomicU64 = AtomicU64::new(0);
/// Label of the stop message.
const STOP: u32 = 0xdead;

/// Client `k` of `cpus` (`arg`: `k << 32 | cpus`): [`CALLS`] calls, every
/// other one with a timeout (the slow path), re-pinning every 3.
extern "C" fn client(arg: u64) -> ! {
    let (k, cpus) = (arg >> 32, arg & 0xffff_ffff);
    let ep = Endpoint(EP.load(Ordering::SeqCst) as u32);
    for i in 0..CALLS {
        let pin = pin_for(i, k, cpus, 3);
        if i.is_multiple_of(3) {
            let _ = sys::set_affinity(pin.unwrap_or(u64::MAX));
        }
        let w = k << 32 | i;
        let m = Message {
            label: 1,
            words: [w, 0, 0, 0, 0, 0],
        };
        // A timeout that normally does not expire: its sleep entry's
        // wake-up may come after the wait ended (stale).
        let timeout = (i % 2 == 1).then_some(2_000_000);
        match ipc::call(ep, &m, timeout) {
            Ok(r) if r.words[0] == w + 1 => {}
            Err(abi::Error::TimedOut) => {}
            _ => {
                BAD.fetch_add(1, Ordering::SeqCst);
            }
        }
        check_cpu(pin, &OFF_CPU);
    }
    RUNNING.fetch_sub(1, Ordering::SeqCst);
    sys::thread_exit(0)
}

/// Answers with slow `reply_recv`s (a receive timeout), re-pinning every 4
/// messages, until STOP.
extern "C" fn server(cpus: u64) -> ! {
    let ep = Endpoint(EP.load(Ordering::SeqCst) as u32);
    let mut step = 0u64;
    let mut pin = pin_for(step, 0, cpus, 4);
    let _ = sys::set_affinity(pin.unwrap_or(u64::MAX));
    let mut r = ipc::recv(ep, Some(50_000_000));
    check_cpu(pin, &OFF_CPU);
    loop {
        let msg = match r {
            Ok(Received::Msg { msg, .. }) => msg,
            Err(abi::Error::TimedOut) => {
                r = ipc::recv(ep, Some(50_000_000));
                check_cpu(pin, &OFF_CPU);
                continue;
            }
            _ => sys::thread_exit(1),
        };
        if msg.label == STOP {
            let _ = ipc::reply(&msg);
            sys::thread_exit(0);
        }
        step += 1;
        if step.is_multiple_of(4) {
            pin = pin_for(step, 0, cpus, 4);
            let _ = sys::set_affinity(pin.unwrap_or(u64::MAX));
        }
        let reply = Message {
            label: 0,
            words: [msg.words[0] + 1, 0, 0, 0, 0, 0],
        };
        r = ipc::reply_recv(ep, &reply, Some(50_000_000));
        check_cpu(pin, &OFF_CPU);
    }
}

/// Case: see the module docs.
pub fn slow_handoffs_with_suspends_and_timeouts_stay_on_pinned_cpus() -> TestResult {
    if sys::cpu_count() < 2 {
        note!("one CPU: every set allows it");
        return Ok(());
    }
    let cpus = sys::cpu_count().clamp(1, 8);
    let n = (cpus as usize).min(CLIENTS);
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    EP.store(ep.0 as u64, Ordering::SeqCst);
    OFF_CPU.store(0, Ordering::SeqCst);
    BAD.store(0, Ordering::SeqCst);
    RUNNING.store(n as u64, Ordering::SeqCst);
    let s = util::spawn(server, cpus)?;
    let mut clients = [const { None }; CLIENTS];
    for (k, slot) in clients.iter_mut().enumerate().take(n) {
        *slot = Some(util::spawn(client, (k as u64) << 32 | cpus)?);
    }
    // Suspend and resume each client in turn while they call.
    let mut cycles = 0u64;
    while RUNNING.load(Ordering::SeqCst) != 0 && cycles < 20_000 {
        for c in clients.iter().flatten() {
            if hw::thread_suspend(c.handle()).is_ok() {
                sys::yield_now();
                let _ = hw::thread_resume(c.handle());
            }
        }
        cycles += 1;
    }
    for c in clients.into_iter().flatten() {
        util::expect_ok(c.join()?)?;
    }
    let stop = Message {
        label: STOP,
        words: [0; 6],
    };
    let r = ipc::call(ep, &stop, Some(5_000_000));
    let st = s.join()?;
    let _ = ipc::handle_close(ep.0);
    let (off, bad) = (OFF_CPU.load(Ordering::SeqCst), BAD.load(Ordering::SeqCst));
    note!("{cycles} suspend rounds; {off} waits off the pinned CPU, {bad} bad replies");
    if off != 0 || bad != 0 {
        return Err("a thread re-pinning itself between slow hand-offs ran off its CPU");
    }
    check(r.is_ok(), "the STOP call failed")?;
    check(st == Status::Exited(0), "the moving server did not exit 0")
}
