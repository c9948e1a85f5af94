//! The IPC fast path (DESIGN 7, issue 10 item 4).
//!
//! Two operations have a path of their own, tried by `syscall/ipc.rs`
//! before the slow path:
//!
//! - [`call`]: a register-only `call` (no buffer, no handles, no timeout)
//!   to an endpoint where a receiver already waits *on this CPU*;
//! - [`reply_recv`]: a register-only `reply_recv` (no timeout on the
//!   receive, no notification bound to the server thread) whose held caller
//!   waits for the reply, followed by a receive that finds no caller queued.
//!
//! Each is one straight line: the partner is claimed under the one lock of
//! the place it was found in (the endpoint queue, or our own reply
//! capability), the label and six words go straight into the partner's
//! outcome, our own wait is recorded, and the CPU switches directly to the
//! partner ([`sched::switch_direct`]: no run-queue push, pop or pick; CR3,
//! FPU and kernel stack switched as by every switch). The partner resumes in
//! its own wait and returns from its syscall; the "work pending" test is the
//! one on its syscall return path. No global lock is taken, nothing is
//! allocated (the endpoint queues keep their capacity), and nothing
//! touched is indexed by another CPU.
//!
//! Anything else returns `None` *before any state changed* (or, for
//! `reply_recv`, after the reply part completed, with the receive left to
//! the slow path), and the slow path does the operation. The fast path
//! keeps every protocol of the slow path (docs/ipc.md sections 4 and 6);
//! only the generic parts are left out:
//!
//! - The receiver we deliver to was found in the endpoint queue under its
//!   lock and claimed there (`try_claim`, the single-winner CAS): a
//!   notification signal, the endpoint's death or the receiver's own kill
//!   racing us on another CPU either won the claim first (we leave it to the
//!   slow path) or loses it to us (it backs off, as on the slow path).
//! - Our own wait becomes visible (in the receiver's reply capability) only
//!   after its record names the receiver and `begin()` published it.
//! - A caller we reply to is taken from our reply word with one exchange
//!   and claimed with interrupts off (`kcore::ipc::ReplyWord`: a caller
//!   that leaves meanwhile is freed only after a grace period, cut26e); a
//!   caller whose kill or timeout won first is dropped silently, as
//!   `reply_recv` does on the slow path.
//! - No thread-IPC lock on either side (proto3): the wait records and
//!   `frame_seq` are owned through the claim (`WaitRecord`), the reply
//!   capability is an atomic word; only the result slot (a wait that did
//!   not ask for frame delivery) is written under the partner's lock.

use super::fastasm::{FrameMsg, MsgSource};
use super::slowpath::Ep;
use super::{claim, end_wait, wait, Handoff};
use crate::arch::trap::TrapFrame;
use crate::object::thread::{Thread, ThreadState};
use crate::object::waitstate::{Msg, Outcome, Server, TRef, WaitOn};
use crate::sched;
use abi::Error;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;
use kcore::ipc::{Receiver, Ticket, WakeReason};

/// Which fast-path counter ([`hits`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// `call`s completed on the fast path.
    Calls,
    /// `reply_recv`s completed on the fast path.
    Replies,
}

/// The fast-path operations of kind `c` CPU `pc` completed (a test hook:
/// the ring-3 fast-path cases prove the path is taken, and that the
/// excluded cases are not, by these counts).
pub fn hits(pc: &crate::arch::percpu::PerCpu, c: Counter) -> u64 {
    match c {
        Counter::Calls => pc.fast_calls.load(Ordering::Relaxed),
        Counter::Replies => pc.fast_replies.load(Ordering::Relaxed),
    }
}

fn cpu() -> u32 {
    crate::arch::percpu::cpu_index() as u32
}

/// Step 1 of the fast `call` through `ep` (borrowed from the caller's
/// handle-table entry, under that table's lock: table before endpoint,
/// the lock order, so the lookup takes and drops no reference of its own):
/// the receiver at the front of its queue claimed, if it waits *on this
/// CPU*. The caller has tested that the current thread is not being killed
/// (before its lookup: `cur.killed()`; a killed thread takes the slow path,
/// which notices the kill). `None`: not eligible, nothing changed; the
/// caller takes the slow path.
#[inline(always)]
pub fn call_claim(ep: &Ep) -> Option<Receiver<TRef>> {
    // Under the endpoint lock, where it was found (the claim discipline).
    // A lost claim (its wait is ending elsewhere) or any other receiver is
    // the slow path's; nothing changed.
    ep.q.lock_irqs_off()
        .take_front_receiver(cpu(), |r| claim(&r.thread, WakeReason::Delivered))
}

/// The fast `call`: the register-only message `out` holds (label `label`,
/// the six words in its registers, [`frame_msg`]) with `badge`, to the
/// receiver `r` whose claim [`call_claim`] won, then the wait for its
/// reply, which may come back through [`reply_recv`] or the slow path.
/// `buf` and `capacity` are the reply's receive buffer (checked by the
/// decoder). The reply goes straight into `out`'s output registers
/// ([`put_msg`]).
///
/// `FRAMELESS` (the dispatcher's own IPC entry, `syscall::ipc`): the wait
/// may end frameless ([`fast_wait`]); the caller holds no endpoint
/// reference (and no lock), so nothing on the stack is owned when it
/// blocks. `out` is a raw pointer (the stub's frame): only short-lived
/// references to it are made, none across the block.
#[inline(always)]
pub fn call<const FRAMELESS: bool>(
    cur: &Thread,
    r: Receiver<TRef>,
    label: u32,
    badge: u64,
    buf: u64,
    capacity: usize,
    out: *mut TrapFrame,
) -> Result<(), Error> {
    // Frame delivery (`hand`) writes the reply where the stub's frame is.
    debug_assert_eq!(out, cur.syscall_frame());
    // From here the receiver is ours: nothing else may end its wait.
    // Uncounted (cut27r): alive until its outcome is out (`give_call`),
    // and its memory after that while interrupts stay off (`Handoff`).
    // SAFETY: we won r's claim and have not handed it an outcome.
    let rt = unsafe { r.thread.thread() };
    // 2 and 3: our wait recorded, the call handed to rt (`give_call`).
    // SAFETY: `out` is the current thread's own frame (the caller's
    // contract); nothing else writes it while the thread runs.
    let msg = unsafe { FrameMsg::<true>::new(out, label, badge) };
    let (tk, abandoned) = give_call(cur, rt, r.thread.ticket, FRAMELESS, buf, capacity, msg);
    // 4. Switch straight to rt (or wake it, if it cannot run here now);
    //    it was queued as waiting on this CPU (`take_front_receiver`).
    // SAFETY: rt found in the endpoint queue and claimed there, interrupts
    // off since (`call_claim`'s lock, then this straight line).
    let h = unsafe { Handoff::queued_here(rt) };
    if let Some(o) = abandoned {
        end_wait(o, Outcome::Err(Error::PeerDied));
    }
    crate::arch::percpu::count::<{ crate::arch::percpu::OFF_FAST_CALLS }>();
    // A call is never bound; `Retry` ends only a *queued* caller that a
    // receiver took and handed back (`take_call`), and this one was
    // delivered straight to its receiver, never queued: both are
    // `InvalidArgument` in `deliver`.
    fast_wait::<FRAMELESS>(cur, tk, h, out)
}

/// Steps 2 and 3 of a register-only call to the receiver `rt` (in wait
/// `rtk`) whose claim the current thread `cur` won (the same-core fast [`call`] and the
/// cross-core `xcall::call`); returns our wait's ticket and the caller rt
/// had held and abandoned, if its claim was won here (to be ended
/// `PeerDied` after the hand-off).
///
/// 2. Our wait, for rt's reply: recorded (so our own kill finds rt's
///    reply capability) and published by `begin` (Release) before rt's
///    reply capability names us (step 3). Nobody else can see us yet.
/// 3. rt: our call goes into its reply capability, the message (`msg`,
///    built from our own frame) into its outcome, the last thing written.
///    Its wait record is taken first (we took it off that queue
///    ourselves; no lock: we own it through its claim): a record left in place kept its endpoint
///    allocated, and charged to its creator, after every handle to it was
///    closed, for as long as rt did not wait again (breakit2, ring-3 case
///    `attack2_endpoint_freed_after_a_fast_call_and_close`). A bound
///    receiver is also registered with its notification: unregistered
///    before it gets its outcome, as `unlink` does (a stale registration
///    would let a later signal claim an unrelated wait).
#[inline(always)]
pub(super) fn give_call(
    cur: &Thread,
    rt: &Thread,
    rtk: Option<Ticket>,
    frame_ok: bool,
    buf: u64,
    capacity: usize,
    msg: impl MsgSource,
) -> (Ticket, Option<TRef>) {
    // Our wait's name (begun below, `begin_next`).
    let next = cur.ipc.claim.next_delivered();
    if frame_ok {
        // Our wait ends with our syscall frame as its output, and no
        // reference to that frame is live across it (`frame_ok`): the
        // reply may be written into it directly ([`hand`]). Relaxed:
        // published by `begin_next` (`ThreadIpc::frame_seq`).
        cur.ipc.frame_seq.store(next, Ordering::Relaxed);
    }
    // No lock (proto3): the record is ours until `begin_next` publishes
    // the wait (`WaitRecord`).
    // SAFETY: our own record; no wait of ours is visible.
    let old = set_record(
        unsafe { cur.ipc.wait.get() },
        WaitOn::Reply(Server::new(rt)),
    );
    if let Some(old) = old {
        drop_cold(old);
    }
    cur.ipc.capacity.store(capacity as u32, Ordering::Relaxed);
    cur.ipc.buf_addr.store(buf, Ordering::Relaxed);
    let tk = cur.ipc.claim.begin_next(next);
    let me = TRef::new(cur, Some(tk));
    // rt's record: ours since we won its claim, taken before its outcome
    // is published (`hand`), with no lock (`WaitRecord`). The common
    // record, `Endpoint`, is taken here as its one reference, without
    // moving the enum through the stack (cut28p); any other record is
    // taken whole in the `None` arm below, still before the outcome.
    // SAFETY: we won rt's claim and have not handed it an outcome.
    let ep = unsafe { take_endpoint_record(rt.ipc.wait.get()) };
    // Its reply word names us (no lock, proto3: we own rt through its
    // claim, the server side of the word; `ReplyWord::accept`). An
    // abandoned caller is claimed after the exchange that replaced it.
    let abandoned = super::caller_ref(rt.ipc.reply.accept(me.id(), tk, |id, otk| {
        super::claim_id(id, otk, WakeReason::Cancelled)
    }));
    match ep {
        Some(ep) => {
            hand(rt, rtk, &msg);
            // After the outcome, with no lock held: it may be the last
            // reference to the endpoint.
            drop(ep);
        }
        None => {
            // Any other record, taken now (still before the outcome).
            // SAFETY: as for the take above.
            let old = unsafe { rt.ipc.wait.take() };
            if let WaitOn::EndpointBound(_, n) = &old {
                unregister_bound(rt, n);
                rt.ipc.inner.lock_irqs_off().result = Some(Outcome::Msg(msg.msg()));
            } else {
                hand(rt, rtk, &msg);
            }
            // Outside rt's lock: it may hold the last reference to an
            // object.
            drop_cold(old);
        }
    }
    (tk, abandoned)
}

/// Takes the record in `rec` if it is the common receive record,
/// `Endpoint` (leaving `None`): its endpoint reference, read as one word
/// (the enum is neither copied through the stack nor tested again; a
/// whole-record `take` cost about 8 a round trip, cut28p). `None` leaves
/// any other record in place.
///
/// # Safety
/// The caller owns `rec` (`WaitRecord`'s protocol).
#[inline(always)]
unsafe fn take_endpoint_record(rec: &mut WaitOn) -> Option<Ep> {
    match rec {
        WaitOn::Endpoint(e) => {
            // SAFETY: the reference is moved out bitwise and the slot
            // overwritten without dropping it, so it is owned once.
            let e = unsafe { core::ptr::read(e) };
            // SAFETY: `rec` is valid for writes (a `&mut`); its old value
            // (now moved out) is not dropped.
            unsafe { core::ptr::write(rec, WaitOn::None) };
            Some(e)
        }
        _ => None,
    }
}

/// A bound receiver (`EndpointBound`, [`give_call`]) is also registered
/// with its notification: unregistered before it gets its outcome, as
/// `unlink` does (a stale registration would let a later signal claim an
/// unrelated wait). Out of line: the fast call's rare case.
#[inline(never)]
fn unregister_bound(rt: &Thread, n: &crate::object::notification::NotificationObj) {
    n.s.lock_irqs_off().n.remove(&TRef::new(rt, None));
}

/// Hands the register-only message `msg` to `t`, whose wait `tk` we won
/// and have not handed an outcome yet, as the last thing written:
/// straight into `t`'s syscall frame when that wait asked for it
/// ([`ThreadIpc::frame_seq`]: a fast wait, whose outcome ends in its frame
/// anyway; no lock, proto3), else into its result slot under `t`'s IPC
/// lock. Everything else the winner does to `t`'s wait state (its record
/// taken, its reply capability) comes before. The frame delivery
/// saves building the message in the slot and the partner's copy of it
/// into its frame when it resumes ([`wait_end`]; -25 a round trip net, frame
/// delivery, session 22).
///
/// Ordering: the frame's registers first, then `framed` (SeqCst); the
/// thread reads its frame only after it saw `framed` name its wait (an
/// Acquire or SeqCst load: `wait_end`, `ipc::wait`), and our wake of it
/// (its Blocked -> Ready exchange, SeqCst) comes after, so its wait loop
/// either sees `framed` or is queued by that exchange (the Dekker pattern
/// of `ipc::wait`, with `framed` beside the result slot).
///
/// [`ThreadIpc::frame_seq`]: crate::object::waitstate::ThreadIpc::frame_seq
#[inline(always)]
pub(super) fn hand(t: &Thread, tk: Option<Ticket>, msg: &impl MsgSource) {
    match tk {
        // Relaxed: written by t before its `begin`, whose Release our
        // claim acquired (`ThreadIpc::frame_seq`).
        Some(tk) if t.ipc.frame_seq.load(Ordering::Relaxed) == tk.delivered() => {
            // The frame is the stub's, at the top of t's kernel stack: t is
            // in its syscall, in the wait `frame_seq` named, which ends
            // with that frame as its output. Nothing else writes a
            // thread's syscall frame, and t itself reads or writes its
            // output registers only once it saw `framed` (below) or, for
            // any other ending, only after taking a result we have not
            // written; we won the claim, so no other party writes one.
            // SAFETY: t is a live user thread (our `Arc`) and its frame's
            // output registers are ours until `framed` (as just argued).
            unsafe { msg.put(t) };
            t.ipc.framed.store(tk.delivered(), Ordering::SeqCst);
        }
        _ => t.ipc.inner.lock_irqs_off().result = Some(Outcome::Msg(msg.msg())),
    }
}

/// Replaces the wait record in `slot` with `new`: the old record if there
/// was one, to be dropped outside the lock ([`drop_cold`]). The round
/// trip's common old record is `None` (the partner took it): tested first,
/// so that it is neither copied out through the stack (protocut: -8 a
/// round trip) nor dropped out of line (fastpath4: a call and a return).
#[inline(always)]
fn set_record(slot: &mut WaitOn, new: WaitOn) -> Option<WaitOn> {
    if matches!(slot, WaitOn::None) {
        // Nothing to release: `None` holds no reference.
        core::mem::forget(core::mem::replace(slot, new));
        None
    } else {
        Some(core::mem::replace(slot, new))
    }
}

/// A wait record's drop, out of line: the fast path's uncommon records
/// ([`set_record`], the caller's record in [`reply_recv`]; the receiver's
/// in [`give_call`]'s uncommon arm).
#[inline(never)]
fn drop_cold(w: WaitOn) {
    drop(w);
}

/// The register-only message a fast `call` or `reply_recv` sends: label
/// `label`, the six words of `f`'s registers (docs/ipc.md section 2),
/// `badge`. Built where it is written into the partner's result slot
/// (ipcfast): built earlier, its words were spilled to the stack across
/// the claims and locks and copied twice (two instructions a word more).
/// The frame is the current thread's own, which nothing else writes while
/// the thread runs, so the words are those of the syscall's entry.
#[inline(always)]
pub fn frame_msg(f: &TrapFrame, label: u32, badge: u64) -> Msg {
    Msg {
        badge,
        info: kcore::ipc::MsgInfo::new(label, 0, 0, 0),
        words: [f.rdx, f.r10, f.r8, f.r9, f.r12, f.r13],
        handles: [0; 4],
    }
}

/// Writes a received message into `f`'s output registers (the register
/// layout of docs/ipc.md section 2).
#[inline(always)]
pub fn put_msg(f: &mut TrapFrame, m: &Msg) {
    f.rdi = m.badge;
    f.rsi = m.info.raw();
    [f.rdx, f.r10, f.r8, f.r9, f.r12, f.r13] = m.words;
    (f.rbx, f.rbp) = (
        m.handles[0] as u64 | (m.handles[1] as u64) << 32,
        m.handles[2] as u64 | (m.handles[3] as u64) << 32,
    );
}

/// A fast wait's outcome into `out`: a message into its registers, an
/// error returned. Neither fast wait is bound to a notification (a call
/// never is; `reply_recv` checked), so `Notified` cannot come, nor `Retry`
/// (see `call`).
fn deliver(o: Outcome, out: *mut TrapFrame) -> Result<(), Error> {
    match o {
        Outcome::Msg(m) => {
            // SAFETY: the current thread's own frame (callers' contract),
            // written only by the thread itself.
            put_msg(unsafe { &mut *out }, &m);
            Ok(())
        }
        // The message is in the frame already.
        Outcome::Framed => Ok(()),
        Outcome::Err(e) => Err(e),
        Outcome::Notified(_) | Outcome::Retry => Err(Error::InvalidArgument),
    }
}

/// The current thread's (`cur`, the caller's: not read from the per-CPU
/// area again, -3 a round trip, proto2) wait for `ticket` (no deadline),
/// switching to the hand-off first: [`wait`]'s common case in a few steps, and [`wait`]
/// itself for everything else (a kill, a result that came before we
/// blocked, a wake-up without a result). The outcome goes to `out`
/// ([`deliver`]); a message is written into the frame straight from our
/// result slot, under our IPC lock, with no copy of it on the way.
///
/// `FRAMELESS`: the switch to the hand-off leaves this stack behind
/// (`sched::switch_direct_frameless`); the wait then ends in
/// [`framed_end`] or [`wait_end`], run by `syscall::frameless_resume` when this thread
/// next runs, and this function returns only when it did not block
/// frameless. The caller's frames must own nothing (the fast entry's
/// contract, see [`call`]).
#[inline(always)]
fn fast_wait<const FRAMELESS: bool>(
    cur: &Thread,
    ticket: Ticket,
    mut h: Handoff,
    out: *mut TrapFrame,
) -> Result<(), Error> {
    cur.set_state(ThreadState::Blocked);
    // Ordering: `set_state` is a SeqCst store (an `xchg`, a full barrier)
    // before the SeqCst loads of the kill flag and our claim word; a
    // partner claims our wait (a locked compare-and-swap) before it writes
    // the result and exchanges Blocked -> Ready in `sched::wake`; a killer
    // sets KILL, then exchanges. So either we see the claim (or the kill)
    // here, or its exchange sees Blocked and queues us (the Dekker pattern
    // of `wait`). The claim word stands in for the result slot, which
    // needed our IPC lock (ipccut: one lock round trip less a side): a
    // claim whose result is not written yet is `wait`'s to wait for.
    // (In assembly: `killed() || !claim.is_waiting(ticket)`, cut26s.)
    if super::fastasm::killed_or_claimed(cur, ticket) && cur.try_unblock() {
        return deliver(wait(ticket, None, h), out);
    }
    let next = h.take();
    // Empty now: nothing to queue (and nothing owned across the switch).
    drop(h);
    match next {
        // SAFETY: the caller's contract (FRAMELESS: nothing owned on the
        // stack; a user thread in the fast IPC entry, whose wait ends in
        // `frameless_resume`); we are Blocked (set above).
        Some(next) if FRAMELESS => unsafe { sched::switch_direct_frameless(cur, next) },
        Some(next) => sched::switch_direct(next),
        None => sched::block(),
    }
    wait_end(ticket, out)
}

/// The frameless resume's common case (`syscall::frameless_resume`): the
/// partner wrote the message into our frame ([`hand`]) for our latest
/// wait, which then ends (true); false changes nothing and leaves the wait
/// to [`wait_end`] (the caller's cold path). [`wait_end`]'s own test
/// (`framed` names the latest wait, then `finish`) with one load of the
/// claim word instead of two and no decoding of its state: a wait that
/// `framed` names was claimed `Delivered` (both callers of [`hand`] won
/// such a claim before it), and only the thread's own `finish` changes a
/// claimed word, so "the word is `framed`'s wait, claimed `Delivered`" is
/// that test.
#[inline(always)]
pub fn framed_end(cur: &Thread) -> bool {
    // Acquire pairs with [`hand`]'s store after the frame's registers.
    // `framed` holds the claim word of the wait it names, claimed
    // `Delivered` (`Ticket::delivered`): the word itself is the test
    // (`finish_delivered`, in assembly: cut26s).
    // SAFETY: `cur` is the current thread (the resume's).
    unsafe { super::fastasm::framed_end(cur) }
}

/// The end of a fast wait for `ticket` once the thread runs again: the
/// message from the result slot into `out`'s registers, or the outcome
/// [`deliver`]ed, or (woken without a result: a kill, a suspension) the
/// general [`wait`] loop. Run by [`fast_wait`], or by the frameless resume
/// (`syscall::frameless_resume`, its cold path: [`framed_end`] is its
/// common case) for a thread that blocked frameless.
#[inline(always)]
pub fn wait_end(ticket: Ticket, out: *mut TrapFrame) -> Result<(), Error> {
    let cur = sched::current();
    // The common case: the partner wrote the message into our frame
    // ([`hand`]); Acquire pairs with its store after the frame's registers.
    if cur.ipc.framed.load(Ordering::Acquire) == ticket.delivered() {
        cur.ipc.claim.finish();
        return Ok(());
    }
    let got = {
        let mut g = cur.ipc.inner.lock_irqs_off();
        match &g.result {
            // The common case: the message, from the slot to the frame.
            Some(Outcome::Msg(m)) => {
                // SAFETY: the current thread's own frame (callers'
                // contract), written only by the thread itself.
                put_msg(unsafe { &mut *out }, m);
                g.result = None;
                None
            }
            _ => Some(g.result.take()),
        }
    };
    match got {
        None => {
            cur.ipc.claim.finish();
            Ok(())
        }
        Some(Some(o)) => {
            cur.ipc.claim.finish();
            deliver(o, out)
        }
        // Woken without a result (a kill): the general loop.
        Some(None) => deliver(wait(ticket, None, Handoff::none()), out),
    }
}

/// What the fast `reply_recv` did.
pub enum ReplyRecv {
    /// The whole operation: the message received (in the frame's output
    /// registers), or the receive's error.
    Done(Result<(), Error>),
    /// Not eligible; nothing changed (the endpoint given back).
    NotTaken(Ep),
    /// The reply is done (or was dropped: its caller is gone); the receive
    /// is the slow path's, with this hand-off (and the endpoint).
    ReceiveSlow(super::Handoff, Ep),
}

/// The fast `reply_recv`: the register-only reply `out` holds (label
/// `label`, [`frame_msg`]) to the caller this
/// thread holds, then a receive on `ep` (buffer `buf`, `capacity` bytes, no
/// timeout) that queues us, and the switch back to the caller; what it
/// receives goes into `out`'s output registers. `FRAMELESS` and `out`: as
/// for [`call`] (the endpoint is dropped before the wait).
#[inline(always)]
pub fn reply_recv<const FRAMELESS: bool>(
    ep: Ep,
    label: u32,
    buf: u64,
    capacity: usize,
    out: *mut TrapFrame,
) -> ReplyRecv {
    let cur = sched::current();
    // Frame delivery (`hand`) writes the message where the stub's frame is.
    debug_assert_eq!(out, cur.syscall_frame());
    if cur.killed() {
        return ReplyRecv::NotTaken(ep);
    }
    // 1. Take and claim the caller our reply word holds (one exchange,
    //    then the claim, interrupts off: `ReplyWord`).
    //    Then our receive's wait record (used in step 3), with no lock:
    //    nobody else reads the record before our wait is published
    //    (`WaitRecord`): only a winner of our claim (`unlink`) or we
    //    ourselves (`cancel_own`, the slow receive, which overwrites it)
    //    look at it, and our ticket is begun only in step 3. Every exit after this
    //    point leaves the record to the slow receive (ReceiveSlow: it
    //    assigns its own record) or to step 3; NotTaken returns before it
    //    is touched. (A record still naming this endpoint is kept; every
    //    delivery takes the receiver's record, so this is rarely the case.)
    // The endpoint's address: the lookup's reference moves into our
    // record below (no clone for the record and no drop of the lookup's:
    // six instructions a round trip), and the record's reference keeps it
    // alive for the uses of this address (see `ep_ref`).
    let epp = Arc::as_ptr(&ep);
    //    No lock (proto3): `bound_set` is ours alone, and the caller is
    //    taken from our reply word and claimed (`ReplyWord::take`; no pin
    //    since cut26e: a caller freed meanwhile waits for our next tick).
    if cur.ipc.bound_set.load(Ordering::Relaxed) {
        return ReplyRecv::NotTaken(ep);
    }
    let c = match cur
        .ipc
        .reply
        .take(|id, tk| super::claim_id(id, tk, WakeReason::Delivered))
    {
        // Nothing held: nothing changed.
        Err(kcore::ipc::IpcError::NoCaller) => return ReplyRecv::NotTaken(ep),
        Ok(Some((id, tk))) => TRef::from_id(id, tk),
        // Gone (reported once, and `reply_recv` drops it), or its kill or
        // timeout is ending it right now (it won its claim first):
        // `reply_recv` drops a reply to a caller that is gone and goes on
        // receiving, on the slow path, with the lookup's reference. Our
        // record is not touched (the slow receive assigns its own): tested
        // here rather than after it was assigned, the fast path's common
        // case carried a flag and a test for this (cut28p).
        Ok(None) | Err(_) => return ReplyRecv::ReceiveSlow(Handoff::none(), ep),
    };
    // Our receive's name (begun in step 3, `begin_next`).
    let next = cur.ipc.claim.next_delivered();
    if FRAMELESS {
        // Our receive (step 3 begins it next, or cancels it and leaves
        // the receive to the slow path under a later ticket) ends with
        // our frame as its output, and the frameless entry holds no
        // reference to that frame across it: a caller may write it
        // there. Relaxed: published by `begin_next` (`ThreadIpc::frame_seq`).
        cur.ipc.frame_seq.store(next, Ordering::Relaxed);
    }
    // Our record, with no lock (proto3): ours until step 3 publishes the
    // wait (`WaitRecord`).
    // SAFETY: our own record; no wait of ours is visible.
    let rec = unsafe { cur.ipc.wait.get() };
    let old = if matches!(rec, WaitOn::Endpoint(e) if Arc::ptr_eq(e, &ep)) {
        // (Rare.) The record has a reference of its own, so the
        // lookup's is not the last (its drop releases nothing here);
        // the exits below take `ep_arc` instead.
        drop(ep);
        None
    } else {
        set_record(rec, WaitOn::Endpoint(ep))
    };
    // Outside the lock: the old record may hold the last reference to an
    // object or a thread.
    if let Some(old) = old {
        drop_cold(old);
    }
    // A counted reference to the endpoint again, for the slow path (the
    // rare exits below), made while our record still holds its own.
    // Our record names the endpoint and holds a reference to it until we
    // drop the record (`cancel_own`, or a winner of the wait we begin
    // below, which only exists once we are queued).
    // SAFETY: as just said; every call is made before either drop.
    let ep_arc = || unsafe {
        Arc::increment_strong_count(epp);
        Arc::from_raw(epp)
    };
    // 2. The caller's wait (for our reply) ends: its record named us, and
    //    our reply capability no longer names it, so there is nothing to
    //    unlink; its outcome is the last thing written.
    // Uncounted (cut27r), as the fast `call`'s receiver.
    // SAFETY: we won c's claim and have not handed it an outcome.
    let ct = unsafe { c.thread() };
    // Its record, ours since we won its claim, taken (no lock, proto3)
    // before its outcome is published (`WaitRecord`). The common record,
    // `Reply(us)`, holds no reference (`Server`, cut26e): only its
    // discriminant is read and overwritten, the enum not moved through
    // the stack (cut28p); anything else is taken and dropped out of line
    // (a shared helper testing both kinds measured 8 worse, protocut).
    // SAFETY: we won c's claim and have not handed it an outcome.
    let rec = unsafe { ct.ipc.wait.get() };
    if matches!(rec, WaitOn::Reply(_)) {
        // Nothing to release: `Reply` holds no reference.
        core::mem::forget(core::mem::replace(rec, WaitOn::None));
    } else {
        // No lock is held: it may release the last reference to an object.
        drop_cold(core::mem::take(rec));
    }
    // SAFETY: `out` is the current thread's own frame (the caller's
    // contract); nothing else writes it while it runs.
    let msg = unsafe { FrameMsg::<false>::new(out, label, 0) };
    hand(ct, c.ticket, &msg);
    // SAFETY: ct taken from our reply word and claimed with interrupts
    // off (`ReplyWord::take`), off since.
    let h = unsafe { Handoff::or_wake_ref(ct) };
    // 3. Our receive: recorded (step 1) and published (`begin`) before we
    //    are visible in the endpoint queue. A caller already queued (or a
    //    dead endpoint) is the slow path's: it takes the call (or fails)
    //    and switches with our hand-off.
    cur.ipc.capacity.store(capacity as u32, Ordering::Relaxed);
    cur.ipc.buf_addr.store(buf, Ordering::Relaxed);
    let tk = cur.ipc.claim.begin_next(next);
    let me = TRef::new(cur, Some(tk));
    // Our record's reference keeps the endpoint alive through this lock
    // and its release: the record is dropped only by us (`cancel_own`
    // below) or by a winner of our wait, who must first find us in a place
    // of it; the only such place is this queue, under this lock (no
    // timeout, no binding, no reply capability names a receiver).
    // SAFETY: as just argued, the endpoint outlives this reference.
    let epr = unsafe { &*epp };
    let queued = epr
        .q
        .lock_irqs_off()
        .queue_receiver_if_idle_with(|| Receiver {
            thread: me,
            cpu: cpu(),
        });
    if !queued {
        let ep = ep_arc();
        super::cancel_own(tk);
        return ReplyRecv::ReceiveSlow(h, ep);
    }
    crate::arch::percpu::count::<{ crate::arch::percpu::OFF_FAST_REPLIES }>();
    // Not bound (checked above; binding needs this thread to run), and
    // `Retry` ends only a caller's wait, never a receive: `deliver` makes
    // both `InvalidArgument`.
    ReplyRecv::Done(fast_wait::<FRAMELESS>(cur, tk, h, out))
}
