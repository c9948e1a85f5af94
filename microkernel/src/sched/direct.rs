//! The direct switch (the IPC fast path's hand-off): from the current
//! thread, which has just blocked, straight to the thread it woke, with no
//! run-queue trip; with frames ([`switch_direct`]) or frameless
//! ([`switch_direct_frameless`]); and the uncounted thread's [`start`]
//! (its life reference) and [`wake_ref`]. Split from `sched/mod.rs` (its
//! size).

use super::{block, current, enqueue, here, me, park_prev, switch_prepare, switch_to};
use crate::object::thread::{SchedState, Thread};
use crate::object::waitstate::ThreadIpc;
use alloc::sync::Arc;
use core::mem::offset_of;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kcore::ipc::WaitClaim;

/// The common start of [`switch_direct`] and [`switch_direct_frameless`]:
/// `Some(this CPU's index)` when the switch to `next` may be made here now (it
/// is no longer on a CPU); else
/// `next` was queued, the current thread blocked as usual (with its
/// frames) and has resumed: `None`. `TRACE`: record the hand-off's switch
/// (the frameless path's caller tested the trace categories already).
///
/// The current thread's kill is not tested here (ipccut): both callers
/// (`ipc::wait`, the fast path's `fast_wait`) tested it after their
/// Blocked store, and a kill that comes after that test finds the thread
/// Blocked, makes it Ready and queues it (`lifecycle::kill`'s exchange):
/// it switches to `next` all the same and dies when the queue runs it
/// again, as for a kill a few instructions later, after the switch.
#[inline(always)]
fn direct_or_block<const TRACE: bool>(next: &Thread) -> Option<usize> {
    let cpu = me();
    // `next` may run here (its affinity is not tested, sched3: -6 a round
    // trip): every hand-off is to a thread that waits in a wait it entered
    // on this CPU (`Handoff::queued_here`: its queue entry's CPU is this
    // one; `Handoff::or_wake`: its `last_cpu` is), so its set allowed this
    // CPU when it ran here, and it has not changed since: only the thread
    // itself changes its set (`set_affinity`), which switches it off a
    // CPU outside the new set before it returns (`schedule_inner`'s
    // migration), and a thread in a wait makes no other syscall.
    debug_assert!({
        let a = next.sched.affinity.load(Ordering::Relaxed);
        a == u32::MAX || a as usize == cpu
    });
    if next.sched.on_cpu.load(Ordering::Acquire) {
        // The queue's entry gets a reference of its own.
        // SAFETY: `next` is alive (the switch functions' contract).
        enqueue(unsafe {
            Arc::increment_strong_count(next);
            Arc::from_raw(next)
        });
        block();
        return None;
    }
    // No `migrate_prev` to clear for the coming `finish_switch`: only
    // `schedule_inner` raises it, right before its switch, and that
    // switch's own `finish_switch` lowers it, so it is false while any
    // thread runs (ipccut: the store here was redundant).
    debug_assert!(!here().migrate_prev.load(Ordering::Relaxed));
    // The slice is not renewed: `next` runs out the rest of it, so a pair
    // handing the CPU back and forth is still preempted when it ends and
    // threads queued here get their turn (the queue was bypassed).
    if !TRACE {
        return Some(cpu);
    }
    crate::trace::switch(|| {
        (
            abi::trace::reason::HANDOFF,
            [
                current().tid.get(),
                next.tid.get(),
                current().pid(),
                next.pid(),
            ],
        )
    });
    Some(cpu)
}

/// IPC's direct hand-off (DESIGN 7): switches from the current thread,
/// which is blocking (Blocked, or already made Ready and queued by a
/// waker), straight to `next`, which the caller made Ready with its own
/// successful Blocked -> Ready exchange and did not queue: no run-queue
/// trip. `next` waited in a wait it entered on this CPU, so its affinity
/// allows this CPU ([`direct_or_block`]); when it cannot run here now
/// (still being switched away from), `next` is queued and the current thread blocks as
/// usual. The caller tested the current thread's kill after its Blocked
/// store ([`direct_or_block`]).
///
/// `next` is uncounted (cut27r): Ready by the caller's exchange and in no
/// queue, nobody else may run it, so it cannot exit and its life reference
/// (`sched` module invariants) keeps it; it becomes PerCpu's current thread
/// as it is, with no count taken, and the current thread's is not dropped.
///
/// Always inlined (into the IPC fast path): with its trace point the
/// compiler stopped inlining it, and the call cost the fast path ~10
/// instructions per switch (`ipc_call_same_core`, docs/decisions.md "trace").
#[inline(always)]
pub fn switch_direct(next: &Thread) {
    if direct_or_block::<true>(next).is_none() {
        return;
    }
    switch_to(current(), next);
}

/// [`switch_direct`] for a thread blocking *frameless* in the IPC fast
/// path (`crate::arch::frameless`): its saved context becomes the shared
/// frameless record and its kernel stack is abandoned, so this returns
/// only when the switch could not be made here (then `next` was queued and
/// the current thread blocked as usual, with its frames: it resumes here).
///
/// # Safety
/// The caller owns nothing that must be dropped or released (every frame
/// between the syscall stub and this call is abandoned), the current
/// thread is a user thread in a syscall whose wait ends in
/// `crate::syscall::frameless_resume` (its TrapFrame is the stub's), `cur`
/// is it, and it is Blocked (or already made Ready and queued by a waker);
/// `next` as for [`switch_direct`]. The hand-off
/// is not traced: the caller (the frameless IPC entry) runs only while the
/// `SCHED` trace category is off.
#[inline(always)]
pub unsafe fn switch_direct_frameless(cur: &Thread, next: &Thread) {
    let Some(cpu) = direct_or_block::<false>(next) else {
        return;
    };
    // The caller's reference to the current thread, in a register: no
    // `gs:` load of it again (cut26s).
    debug_assert!(core::ptr::eq(cur, current()));
    let prev = cur;
    let (prev_rsp, _, next_top) = switch_prepare::<true, false>(prev, next, cpu);
    let frameless = crate::arch::frameless::frameless_rsp();
    // `prev_rsp` is the previous thread's saved-RSP slot: nothing else
    // writes it while that thread is not running, and it is read only by a
    // CPU that switches to it, after `prev`'s `on_cpu` was released (Release,
    // paired with that CPU's Acquire load in `schedule_inner`/
    // `switch_direct`) on next's stack, after the jump below.
    // SAFETY: that slot (above).
    unsafe { *prev_rsp = frameless };
    // Next's saved RSP compared in memory (cut28s: loaded only on the
    // path that needs it, below).
    // SAFETY: `next` is alive and not running (ours: the `on_cpu` handshake).
    if unsafe {
        crate::arch::frameless::is_frameless::<{ Thread::SAVED_RSP_OFFSET }>(
            next as *const Thread as u64,
        )
    } {
        // `next` blocked frameless too (its partner's hand-off, the usual
        // round trip): straight to its resume, with `prev` in a register instead of the CPU's `prev` cell
        // (switchcut): the hand-off's entry releases it (its `on_cpu`,
        // `HANDOFF_OFFSETS`), without the
        // cell's take and test and `finish_switch`'s `migrate_prev` swap
        // (false here: `direct_or_block` asserts it) and dead test (prev
        // blocked in a wait: not dead). `prev` was the current thread,
        // kept by its life reference; next's context is the
        // shared frameless record, so the entry resumes it at its frame.
        //
        // Delivered by the hander (cut28s): the entry ends next's wait with
        // no test of it (`framed_end`'s, known true here). `next` blocked
        // frameless, so in a fast wait (only `fast_wait::<true>` blocks
        // frameless, in the fast `call` or `reply_recv`, which first made
        // its frame the wait's output: `frame_seq`), and it is still in
        // that wait (Blocked until our caller's exchange). Our caller won
        // that wait's claim `Delivered` (the only threads a fast wait's
        // `Handoff` names: the fast `call`'s claimed receiver, the fast
        // `reply_recv`'s claimed caller) and handed it the message into
        // its frame (`hand` with its ticket; the receive record of a
        // frameless receiver is never `EndpointBound`: the fast
        // `reply_recv` refuses a bound thread, and a thread binds only by
        // its own syscall), so `framed` is its claim word. Only the
        // thread's own `finish` changes a claimed word (a kill or a close
        // on another CPU fails its claim: docs/ipc.md), and only the
        // claim's winner writes `framed`: both hold until the entry's
        // store. With no load of `framed`, its Acquire (which ordered the
        // frame's registers for a reader on another CPU) goes too: the
        // hander is this CPU's thread, which wrote the frame before this
        // switch, in program order, and the exit reads it here.
        debug_assert!(!here().migrate_prev.load(Ordering::Relaxed));
        debug_assert!(prev.state() != crate::object::thread::ThreadState::Dead);
        // The word itself, state and all (break28s: comparing `framed`
        // with `latest().delivered()` tested only the sequence number,
        // which `latest` takes from the word whatever its state).
        debug_assert_eq!(
            next.ipc.claim.word(),
            next.ipc.framed.load(Ordering::Relaxed),
            "the hand-off's partner is not claimed Delivered with its message in its frame"
        );
        // The caller's contract: nothing on this stack is owned, the wait
        // ends in the frameless resume; `prev` as just said, `next` is now
        // current (`switch_prepare`) and `next_top` its kernel-stack top.
        // SAFETY: as above; the offsets are the entry's (`HANDOFF_OFFSETS`).
        unsafe {
            crate::arch::frameless::handoff_to_frameless::<OFF_ON_CPU, OFF_CLAIM>(
                prev as *const Thread as u64,
                next as *const Thread as u64,
                next_top,
            )
        }
    }
    park_prev(prev);
    // SAFETY: next's context is ours (the `on_cpu` handshake, as
    // `switch_prepare` read it).
    let next_rsp = unsafe { next.ctx().saved_rsp };
    // SAFETY: the caller's contract: nothing on this stack is owned, and the
    // thread's wait ends in the frameless resume; `next_rsp` is next's saved
    // context (a `switch_context` frame), `prev` parked for `finish_switch`.
    unsafe { crate::arch::frameless::abandon_stack_for(next_rsp) }
}

// HANDOFF_OFFSETS: what `arch::frameless::handoff_to_frameless` reads and
// writes in the threads (that layer cannot name `Thread`): prev's `on_cpu`
// byte, which it releases (`finish_switch`'s Release store, here a plain
// byte store, Release on x86: prev's context and every write of its last
// run are visible to a CPU that sees it off this CPU, through the Acquire
// loads of `on_cpu` in `schedule_inner` and `direct_or_block`; prev
// blocked in an IPC wait, so it is not dead and its life reference stays:
// no reference is dropped, cut27r), and the resumed thread's claim word
// (`ipc::fastasm::framed_end`'s store: the claim's state is its low byte).
/// The offset of a thread's `on_cpu` byte.
const OFF_ON_CPU: usize = offset_of!(Thread, sched) + offset_of!(SchedState, on_cpu);
/// The offset of a thread's claim word (`WaitClaim`).
const OFF_CLAIM: usize =
    offset_of!(Thread, ipc) + offset_of!(ThreadIpc, claim) + WaitClaim::<AtomicU64>::WORD_OFFSET;
// The widths the entry assumes: a byte, a 64-bit word, the state bits
// the low byte (its `and` with a sign-extended 32-bit immediate).
const _: fn(&Thread) -> (&AtomicBool, &WaitClaim<AtomicU64>) = |t| (&t.sched.on_cpu, &t.ipc.claim);
const _: () = assert!(core::mem::size_of::<AtomicBool>() == 1);
const _: () = assert!(core::mem::size_of::<WaitClaim<AtomicU64>>() == 8);
const _: () = assert!(kcore::ipc::CLAIM_STATE_MASK == 0xff);

/// Starts `t`, a thread that never ran and is in no queue: takes its life
/// reference (the `sched` module invariants), released after its exit by
/// the [`finish_switch`](super::finish_switch) that follows its last
/// switch-out, and queues it.
pub fn start(t: Arc<Thread>) {
    core::mem::forget(t.clone());
    enqueue(t);
}

/// [`wake`](super::wake) for a thread named without a count (an IPC
/// hand-off's partner, `ipc::Handoff`).
///
/// # Safety
/// `t`'s memory is valid: the caller found it in a place of its wait and
/// runs with interrupts off since (a freed thread's memory waits a grace
/// period, `mem::retire`). A thread that exited is Dead, never Blocked, so
/// a won exchange means it is alive, kept by its life reference.
pub unsafe fn wake_ref(t: &Thread) -> bool {
    if t.try_unblock() {
        // SAFETY: Blocked -> Ready is ours: alive, as said; the queue's
        // entry gets a reference of its own.
        enqueue(unsafe {
            Arc::increment_strong_count(t);
            Arc::from_raw(t)
        });
        true
    } else {
        false
    }
}
