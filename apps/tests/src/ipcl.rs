//! ipcl (issue 10, session 19): the IPC path's handle lookup against a
//! close and a reuse of the same slot on another CPU.
//!
//! A handle number carries its slot's generation, so a number names at
//! most one object for the process's whole life: a call through a number
//! that was closed (and whose slot now holds another endpoint) must fail
//! with `BadHandle`, never reach the slot's new object. This is the
//! property a lock-free lookup has to keep (docs/decisions.md
//! `## ipcl (session 19)`); the case guards today's locked lookup and any
//! later one alike.

use crate::note;
use crate::util::{self, check, ok, TestResult};
use abi::Error;
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::ipc::{self, Endpoint, Message};
use libipc::sys;

/// The label that makes a tag echo reply and exit.
const STOP: u32 = 0xdead;
/// Close-and-dup rounds of the sibling.
const ROUNDS: u64 = 3000;
/// The caller gives up when the sibling has finished no round for this
/// long (a hang is a failure). A round waits at most 100 ms for the
/// caller, so a stalled round count is a stalled sibling, not a slow
/// host: a fixed 20 s for all rounds failed twice in one full run on a
/// 2-core host running two other suites (session 28), and passed alone.
const WATCHDOG_NS: u64 = 10_000_000_000;

/// The number the caller uses now, and which endpoint it names: handle
/// (low 32 bits) | tag << 32 (1 or 2). Written by the sibling only.
static CUR: AtomicU64 = AtomicU64::new(0);
/// Set by the sibling after its last round (1: done, 2: a close or dup
/// failed), or by the caller when its watchdog fired (3: stop now).
static DONE: AtomicU64 = AtomicU64::new(0);
/// Calls the caller has started (the sibling lets a few through each
/// number before it closes it, so both outcomes occur).
static CALLS: AtomicU64 = AtomicU64::new(0);
/// Rounds the sibling has finished (the caller's watchdog).
static ROUND: AtomicU64 = AtomicU64::new(0);
/// The endpoints the sibling duplicates from (full handles).
static EPS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// A server thread: `arg` = endpoint | CPU << 32 | tag << 40. Answers
/// every call with label = its tag and the caller's words
/// ([`testkit::tag_echo`]: register-only `reply_recv`, the fast
/// path when the caller waits on the same CPU).
extern "C" fn tag_echo(arg: u64) -> ! {
    if sys::set_affinity((arg >> 32) & 0xff).is_err() {
        sys::thread_exit(1);
    }
    let served = testkit::tag_echo(arg as u32, (arg >> 40) as u32, STOP);
    sys::thread_exit(if served.is_ok() { 0 } else { 3 })
}

/// The sibling, pinned to `cpu`: closes the number the caller uses and
/// duplicates the two endpoints in turn, so the slot is reused (the free
/// list is last-in first-out) with the other object behind a new number.
extern "C" fn churn(cpu: u64) -> ! {
    let _ = sys::set_affinity(cpu);
    let single = sys::cpu_count() == 1;
    // At -smp 1 the sibling runs only when the caller yields (every call
    // there), so fewer rounds.
    let rounds = if single { ROUNDS / 10 } else { ROUNDS };
    for round in 0..rounds {
        if DONE.load(Ordering::Acquire) != 0 {
            sys::thread_exit(4);
        }
        // Let the caller start one to three calls through the number, then
        // close it under the next (no lock-step: the close lands anywhere
        // in a call). Bounded: a caller that stopped calling ends this.
        let seen = CALLS.load(Ordering::Relaxed);
        let t0 = sys::clock_ns();
        while CALLS.load(Ordering::Relaxed) < seen + 1 + round % 3
            && sys::clock_ns() - t0 < 100_000_000
        {
            if single {
                sys::yield_now();
            } else {
                crate::util::relax();
            }
        }
        let cur = CUR.load(Ordering::Relaxed);
        let tag = 1 + (round % 2);
        let src = EPS[(tag - 1) as usize].load(Ordering::Relaxed) as u32;
        let Ok(()) = ipc::handle_close(cur as u32) else {
            DONE.store(2, Ordering::Release);
            sys::thread_exit(2);
        };
        let Ok(h) = ipc::handle_dup(src, ipc::rights::SEND, 0) else {
            DONE.store(2, Ordering::Release);
            sys::thread_exit(3);
        };
        // Release: not needed for the kernel's sake (the number is checked
        // there), only so the caller's tag for `h` is this round's.
        CUR.store(h as u64 | tag << 32, Ordering::Release);
        // Relaxed: a progress count only (the caller's watchdog).
        ROUND.store(round + 1, Ordering::Relaxed);
    }
    DONE.store(1, Ordering::Release);
    sys::thread_exit(0)
}

/// Case: one thread calls (fast path: its server waits on its CPU) in a
/// loop through a number a sibling on another CPU keeps closing and
/// reusing for another endpoint; every call reaches the endpoint its
/// number was made for, or fails with `BadHandle`; nothing else.
pub fn call_racing_close_and_reuse_of_its_number() -> TestResult {
    check(util::pin0(), "set_affinity(0)")?;
    let cpus = sys::cpu_count();
    let e1 = ok(ipc::endpoint_create(), "endpoint_create")?;
    let e2 = ok(ipc::endpoint_create(), "endpoint_create")?;
    EPS[0].store(e1.0 as u64, Ordering::Relaxed);
    EPS[1].store(e2.0 as u64, Ordering::Relaxed);
    let s1 = util::spawn(tag_echo, e1.0 as u64 | 1 << 40)?;
    let s2 = util::spawn(tag_echo, e2.0 as u64 | 2 << 40)?;
    let first = ok(ipc::handle_dup(e1.0, ipc::rights::SEND, 0), "dup")?;
    CUR.store(first as u64 | 1 << 32, Ordering::Relaxed);
    CALLS.store(0, Ordering::Relaxed);
    DONE.store(0, Ordering::Relaxed);
    ROUND.store(0, Ordering::Relaxed);
    let sib = util::spawn(churn, if cpus >= 2 { 1 } else { 0 })?;
    let (mut good, mut stale) = (0u64, 0u64);
    let mut verdict = Ok(());
    let (mut seen, mut t0) = (0u64, sys::clock_ns());
    let mut i = 0u64;
    while DONE.load(Ordering::Acquire) == 0 {
        let round = ROUND.load(Ordering::Relaxed);
        if round != seen {
            (seen, t0) = (round, sys::clock_ns());
        } else if sys::clock_ns() - t0 > WATCHDOG_NS {
            note!("the sibling finished {round} rounds, then none for 10 s");
            verdict = Err("the sibling's rounds did not finish (hang)");
            break;
        }
        if cpus == 1 {
            // Give the sibling its turn (it yields back at once).
            sys::yield_now();
        }
        i += 1;
        // Acquire: pairs with the sibling's Release (the tag goes with the
        // number).
        let cur = CUR.load(Ordering::Acquire);
        let (h, tag) = (cur as u32, (cur >> 32) as u32);
        // Relaxed: a progress count only (the sibling's pacing).
        CALLS.fetch_add(1, Ordering::Relaxed);
        let m = Message {
            label: 7,
            words: [i, !i, 0, 0, 0, 0],
        };
        match ipc::call(Endpoint(h), &m, None) {
            Ok(r) if r.label == tag && r.words == m.words => good += 1,
            Ok(r) => {
                note!(
                    "call {i} through {h:#x} (tag {tag}) was answered by tag {}",
                    r.label
                );
                verdict = Err("a call through a reused number reached another endpoint");
                break;
            }
            Err(Error::BadHandle) => stale += 1,
            Err(e) => {
                note!("call {i} through {h:#x}: {e:?}");
                verdict = Err("a call through a racing number failed with another error");
                break;
            }
        }
    }
    // A caller that stopped early stops the sibling too (its pacing would
    // otherwise wait out every round).
    let _ = DONE.compare_exchange(0, 3, Ordering::AcqRel, Ordering::Acquire);
    let churned = sib.join();
    // Whatever number is current is still open.
    let _ = ipc::handle_close(CUR.load(Ordering::Acquire) as u32);
    let stop = Message {
        label: STOP,
        words: [0; 6],
    };
    for (e, s) in [(e1, s1), (e2, s2)] {
        let stopped = ipc::call(e, &stop, Some(2_000_000)).is_ok();
        let joined = s.join();
        let _ = ipc::handle_close(e.0);
        if verdict.is_ok() && (!stopped || joined != Ok(abi::status::Status::Exited(0))) {
            verdict = Err("a server did not stop cleanly");
        }
    }
    verdict?;
    if DONE.load(Ordering::Acquire) != 1 || churned != Ok(abi::status::Status::Exited(0)) {
        return Err("the sibling's close or dup failed");
    }
    if good == 0 {
        note!("{stale} calls found their number stale, none got through");
        return Err("no call got through");
    }
    Ok(())
}
