//! `loom` model of cut26e's uncounted server reference (the kernel's
//! `waitstate::Server` in a caller's `WaitOn::Reply` record), kept valid by
//! a grace period (`crate::grace`) instead of a reference count.

use super::claim::WakeReason;
use super::loom_tests::{model, Claim};
use crate::grace::Quiescent;
use core::sync::atomic::Ordering;
use loom::sync::atomic::AtomicU64 as LoomU64;
use loom::sync::Arc;
use loom::thread;

const ALIVE: u64 = 1;
const FREED: u64 = 0xdead;
const CALLER: u64 = 0x1000;
const SERVER_CPU: usize = 0;
const CALLER_CPU: usize = 1;

struct Race {
    /// The caller's claim word.
    claim: Claim,
    /// The server's reply word, in the server's memory.
    cap: super::ReplyWord<LoomU64>,
    /// The server's memory: "freed" (poisoned) when the heap takes its
    /// block back (`mem::retire`'s release).
    smem: LoomU64,
    q: Quiescent<2, LoomU64>,
}

/// cut26e: a caller waiting for a reply, its record naming the server
/// *uncounted*, is killed (its own claim, then its unlink from the
/// server's word: `caller_gone`, a dereference of the server) while the
/// server exits (its word's `take`, a claim of the caller that may lose)
/// and its memory is retired: given back only after every CPU passed a
/// quiescent state (a timer tick) after the retire. The caller claims and
/// unlinks with interrupts off (no quiescent state in between), so its
/// dereference never finds the server's memory freed. Seen failing ("use
/// after free") with the release not waiting for the grace period, and
/// with a quiescent state between the caller's claim and its unlink (an
/// interrupt window there).
#[test]
fn a_retired_server_outlives_its_callers_unlink() {
    model(|| {
        let s = Arc::new(Race {
            claim: Claim::new(),
            cap: super::ReplyWord::new(),
            smem: LoomU64::new(ALIVE),
            q: Quiescent::new(),
        });
        let tk = s.claim.begin();
        assert_eq!(s.cap.accept(CALLER, tk, |_, _| unreachable!()), None);
        let caller = {
            let s = s.clone();
            thread::spawn(move || {
                // Interrupts off from here (a syscall's wait loop).
                let won = s.claim.try_claim(tk, WakeReason::Cancelled);
                if won {
                    assert_eq!(
                        s.smem.load(Ordering::Relaxed),
                        ALIVE,
                        "the caller's unlink touched a freed server (use after free)"
                    );
                    s.cap.caller_gone(CALLER);
                }
                // Back in user mode: ticks from now on.
                s.q.tick(CALLER_CPU);
                s.q.toggle(CALLER_CPU);
                won
            })
        };
        // The server's exit (`thread_exiting`): the caller claimed, or its
        // own kill won first.
        let won = s
            .cap
            .take(|_, t| s.claim.try_claim(t, WakeReason::Cancelled));
        // It switches away for good: its CPU goes on ticking.
        s.q.toggle(SERVER_CPU);
        // The last reference went: the block is retired, and the heap
        // takes it back once the grace period ended.
        let snap = s.q.snapshot();
        while !s.q.elapsed(&snap, 2) {
            thread::yield_now();
        }
        s.smem.store(FREED, Ordering::Relaxed);
        let killed = caller.join().unwrap();
        // Exactly one ended the caller's wait.
        assert_eq!(killed, !matches!(won, Ok(Some(_))));
    });
}
