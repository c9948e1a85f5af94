//! Phase 4's last step (ipcl, issue 10): calls through a number that a
//! sibling thread on another CPU keeps closing and refilling at random
//! (a send duplicate of one of two echo endpoints, a receive-only
//! duplicate, a notification), so the slot the number names is reused
//! while calls look it up. Every call must end as the number's own object
//! says (the right echo, `PermissionDenied`, `WrongType`) or with
//! `BadHandle` (closed under it); anything else, or a hang, is a finding.
//! The ring-3 case `ipcl_call_racing_close_and_reuse_of_its_number` is the
//! fixed-schedule version.

use crate::finding;
use crate::util::{self, Rng};
use abi::Error;
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::ipc::{self, Endpoint, Message};
use libipc::sys;

/// What the current number is (bits 32..): an echo's tag (1, 2), a
/// receive-only duplicate, or a notification.
const RECV_ONLY: u64 = 3;
const NOTIFICATION: u64 = 4;
/// The label that makes an echo reply and exit.
const STOP: u32 = 0xdead;
/// Refills of the slot.
const ROUNDS: u64 = 600;

/// The current number (low 32 bits) and its kind (high bits).
static CUR: AtomicU64 = AtomicU64::new(0);
/// Calls started (the sibling's pacing).
static CALLS: AtomicU64 = AtomicU64::new(0);
/// 0 while the sibling runs; 1 when it finished; 2 when it failed; 3 when
/// the caller stopped it.
static DONE: AtomicU64 = AtomicU64::new(0);
/// The two echo endpoints (full handles).
static EPS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// An echo on CPU 0: `arg` = endpoint | tag << 32. Answers with label =
/// tag ([`testkit::tag_echo`]).
extern "C" fn tag_echo(arg: u64) -> ! {
    let _ = sys::set_affinity(0);
    let served = testkit::tag_echo(arg as u32, (arg >> 32) as u32, STOP);
    sys::thread_exit(if served.is_ok() { 0 } else { 1 })
}

/// The sibling: `arg` = seed. Closes the current number after a random
/// number of calls (0-3) and refills the slot with a random kind.
extern "C" fn churn(seed: u64) -> ! {
    let mut r = Rng::new(seed, 0x7e05);
    let cpus = sys::cpu_count();
    let _ = sys::set_affinity(if cpus > 1 { 1 + r.below(cpus - 1) } else { 0 });
    for _ in 0..ROUNDS {
        let seen = CALLS.load(Ordering::Relaxed);
        let want = r.below(4);
        let t0 = sys::clock_ns();
        while CALLS.load(Ordering::Relaxed) < seen + want
            && DONE.load(Ordering::Relaxed) == 0
            && sys::clock_ns() - t0 < 50_000_000
        {
            if cpus == 1 {
                sys::yield_now();
            }
        }
        if DONE.load(Ordering::Acquire) != 0 {
            sys::thread_exit(0);
        }
        if ipc::handle_close(CUR.load(Ordering::Relaxed) as u32).is_err() {
            DONE.store(2, Ordering::Release);
            sys::thread_exit(2);
        }
        let tag = 1 + r.below(2);
        let src = EPS[(tag - 1) as usize].load(Ordering::Relaxed) as u32;
        let made = match r.below(4) {
            0 => ipc::handle_dup(src, ipc::rights::RECV, 0).map(|h| (h, RECV_ONLY)),
            1 => ipc::notification_create().map(|n| (n.0, NOTIFICATION)),
            _ => ipc::handle_dup(src, ipc::rights::SEND, 0).map(|h| (h, tag)),
        };
        let Ok((h, kind)) = made else {
            DONE.store(2, Ordering::Release);
            sys::thread_exit(3);
        };
        // Release: the kind travels with the number (the kernel checks the
        // number itself).
        CUR.store(h as u64 | kind << 32, Ordering::Release);
    }
    DONE.store(1, Ordering::Release);
    sys::thread_exit(0)
}

/// Runs the step; findings as the module docs say.
pub fn run(r: &mut Rng) {
    let _ = sys::set_affinity(0);
    let (Ok(e1), Ok(e2)) = (ipc::endpoint_create(), ipc::endpoint_create()) else {
        finding!("ipc reuse race: endpoint_create failed with an empty table");
        return;
    };
    EPS[0].store(e1.0 as u64, Ordering::Relaxed);
    EPS[1].store(e2.0 as u64, Ordering::Relaxed);
    let echoes = [
        util::spawn(tag_echo, e1.0 as u64 | 1 << 32).ok(),
        util::spawn(tag_echo, e2.0 as u64 | 2 << 32).ok(),
    ];
    let first = ipc::handle_dup(e1.0, ipc::rights::SEND, 0).unwrap_or(0);
    CUR.store(first as u64 | 1 << 32, Ordering::Relaxed);
    CALLS.store(0, Ordering::Relaxed);
    DONE.store(0, Ordering::Relaxed);
    let sib = if echoes.iter().all(Option::is_some) && first != 0 {
        util::spawn(churn, r.next()).ok()
    } else {
        None
    };
    let (mut calls, mut stale) = (0u64, 0u64);
    let t0 = sys::clock_ns();
    while sib.is_some() && DONE.load(Ordering::Acquire) == 0 {
        if sys::clock_ns() - t0 > 30_000_000_000 {
            finding!("ipc reuse race: the sibling's rounds did not finish (hang)");
            break;
        }
        if sys::cpu_count() == 1 {
            sys::yield_now();
        }
        let cur = CUR.load(Ordering::Acquire);
        let (h, kind) = (cur as u32, cur >> 32);
        CALLS.fetch_add(1, Ordering::Relaxed);
        let m = Message {
            label: 5,
            words: [calls, !calls, 0, 0, 0, 0],
        };
        calls += 1;
        let got = ipc::call(Endpoint(h), &m, None);
        let right = match (kind, &got) {
            (_, Err(Error::BadHandle)) => {
                stale += 1;
                true
            }
            (1 | 2, Ok(reply)) => u64::from(reply.label) == kind && reply.words == m.words,
            (RECV_ONLY, Err(Error::PermissionDenied)) => true,
            (NOTIFICATION, Err(Error::WrongType)) => true,
            _ => false,
        };
        if !right {
            finding!("ipc reuse race: call through {h:#x} (kind {kind}) ended {got:?}");
            break;
        }
    }
    // Stops the sibling if it still runs (a compare-exchange, so a result
    // it stored first is kept).
    let _ = DONE.compare_exchange(0, 3, Ordering::AcqRel, Ordering::Acquire);
    if let Some(t) = sib {
        if t.join() != Ok(0) {
            finding!("ipc reuse race: the sibling's close or refill failed");
        }
    }
    let _ = ipc::handle_close(CUR.swap(0, Ordering::AcqRel) as u32);
    let stop = Message {
        label: STOP,
        words: [0; 6],
    };
    for (e, t) in [e1, e2].into_iter().zip(echoes) {
        if let Some(t) = t {
            if ipc::call(e, &stop, Some(1_000_000)).is_err() || t.join() != Ok(0) {
                finding!("ipc reuse race: an echo did not stop cleanly");
            }
        }
        let _ = ipc::handle_close(e.0);
    }
    libipc::println!("fuzz: ipc reuse race: {calls} calls, {stale} through a closed number");
}
