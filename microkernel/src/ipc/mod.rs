//! IPC behaviour (DESIGN 6a, L5): drives the `kcore` state machines held by
//! the objects in `object/` (endpoint, notification, a thread's wait state,
//! a process's handle table).
//!
//! - [`slowpath`]: call, send, recv, reply, reply_recv, signal, wait, bind.
//! - [`xcall`]: the register-only call to a receiver on another CPU.
//! - this file: what every path shares — ending another thread's wait
//!   ([`end_wait`]), a thread's own wait loop ([`wait`]), unlinking
//!   ([`unlink`]), closing handles ([`release`]) and thread exit
//!   ([`thread_exiting`]).
//!
//! # The claim discipline (docs/ipc.md, sections 4 and 6)
//! Whoever ends a thread's wait first wins its [`WaitClaim`] (or takes it)
//! *under the lock of the place the thread was found in* (an endpoint queue,
//! a notification, a server's reply capability), so the thread cannot leave
//! meanwhile; only the winner unlinks it from the other places of that wait,
//! writes its [`Outcome`] (last, under the thread's IPC lock) and wakes it.
//! The thread leaves its wait only with an outcome (handed to it, or its own
//! claim for a kill or timeout), so a queue entry always names a live
//! thread ([`TRef`]).
//!
//! # Locks
//! At most one of {endpoint, notification, thread-ipc} at a time; a handle
//! table before any of them (never under one); the run-queue lock (inside
//! `sched::wake`) under any. Claims are atomics, taken under the object lock.
//!
//! [`WaitClaim`]: kcore::ipc::WaitClaim

mod fastasm;
pub mod fastpath;
pub mod fault;
mod handoff;
pub mod slowpath;
pub mod transfer;
pub mod xcall;

use crate::object::kobject::Object;
use crate::object::thread::{Thread, ThreadState as State};
use crate::object::waitstate::{Outcome, TRef, WaitOn};
use crate::sched;
use crate::sched::sleep;
use crate::time;
use abi::Error;
use core::sync::atomic::{fence, Ordering};
use kcore::handles::{Entry, Rights};
use kcore::ipc::{Ticket, WakeReason};

/// Removes `t` (in wait `me`) from every place its wait record names and
/// clears the record. The caller won its claim (or is `t` itself after
/// winning its own) and holds no lock. Removal is idempotent: places the
/// winner already removed it from (the queue it was picked from) find
/// nothing.
pub(crate) fn unlink(t: &Thread, me: TRef) {
    // SAFETY: we won t's claim (or are t after winning its own) and have
    // not published its outcome: the record is ours (`WaitRecord`).
    let wait = unsafe { t.ipc.wait.take() };
    match &wait {
        WaitOn::None => {}
        WaitOn::Endpoint(ep) => {
            ep.q.lock().remove(&me);
        }
        WaitOn::EndpointBound(ep, n) => {
            ep.q.lock().remove(&me);
            n.s.lock().n.remove(&TRef::new(t, None));
        }
        WaitOn::Reply(server) => {
            // Uncounted (`Server`): the server side is alive, or we are the
            // caller, which won its own claim with interrupts off, still
            // off here (no tick: the server's memory stays, `mem::retire`).
            debug_assert!(!crate::arch::cpu::interrupts_enabled());
            // SAFETY: as just said (`Server`'s lifetime rule).
            let server = unsafe { server.get() };
            // A server given back to the heap is poisoned (`mem::retire`):
            // a broken lifetime rule stops here, not in someone's memory.
            let poison = u64::from_ne_bytes([crate::mem::retire::POISON; 8]);
            assert_ne!(
                server.tid.get(),
                poison,
                "a caller unlinked from a freed server"
            );
            // From here the server side never finds `t` in its word; a
            // server-side claim of `t` under way ends before its CPU's next
            // tick, and `t`'s memory waits for that (`ReplyWord`).
            server.ipc.reply.caller_gone(me.id());
        }
        WaitOn::Notification(n) => {
            n.s.lock().n.remove(&me);
        }
    }
    // Outside every lock: the record may hold the last reference to a
    // server thread or an object.
    drop(wait);
}

/// Ends `t`'s wait with `out`: unlinks it, hands it the outcome and wakes
/// it. The caller won `t`'s claim (or owns it after a failed `rearm`) and
/// holds no lock.
pub(crate) fn end_wait(t: TRef, out: Outcome) {
    // SAFETY: we own t's claim and have not handed it an outcome: it is
    // still in its wait (module docs).
    let arc = unsafe { t.arc() };
    unlink(&arc, t);
    // The outcome is the last thing written: from here the thread may run,
    // return and exit (our `arc` keeps the memory until the wake below).
    arc.ipc.inner.lock().result = Some(out);
    sched::wake(&arc);
}

/// Like [`end_wait`], but when `t` last ran on this CPU and was blocked,
/// makes it Ready without queueing it and returns it as a [`Handoff`]: the
/// current thread switches straight to it when it blocks next
/// ([`fastpath`]). Otherwise `t` is woken as usual.
pub(crate) fn end_wait_handoff(t: TRef, out: Outcome) -> Handoff {
    // SAFETY: as in `end_wait`.
    let arc = unsafe { t.arc() };
    unlink(&arc, t);
    arc.ipc.inner.lock().result = Some(out);
    Handoff::or_wake(arc)
}

pub use handoff::Handoff;

/// [`claim`] for a caller a reply word named (`id`, wait `tk`: the
/// server side found it there and took it with interrupts off).
pub(crate) fn claim_id(id: u64, tk: Ticket, reason: WakeReason) -> bool {
    claim(&TRef::from_id(id, tk), reason)
}

/// The caller a reply word's operation handed back (claimed by us).
pub(crate) fn caller_ref(c: Option<(u64, Ticket)>) -> Option<TRef> {
    c.map(|(id, tk)| TRef::from_id(id, tk))
}

/// Claims `t`'s wait for `reason` (atomics only: callable under the lock of
/// the place `t` was found in). True if we won and must [`end_wait`] it.
pub(crate) fn claim(t: &TRef, reason: WakeReason) -> bool {
    match t.ticket {
        // SAFETY: the caller found `t` in a place of its wait, under that
        // place's lock (the claim discipline).
        Some(tk) => unsafe { t.thread() }.ipc.claim.try_claim(tk, reason),
        None => false,
    }
}

/// The current thread's own wait for `ticket` (it is visible in some place
/// already): blocks until a partner hands it an outcome, or ends the wait
/// itself on a kill (`PeerDied`; the thread dies on its way out) or when
/// `deadline` (ns since boot) passes (`TimedOut`).
pub(crate) fn wait(ticket: Ticket, deadline: Option<u64>, mut handoff: Handoff) -> Outcome {
    let cur = sched::current_arc();
    let me = TRef::new(&cur, Some(ticket));
    let claim = &cur.ipc.claim;
    let framed = || cur.ipc.framed.load(Ordering::SeqCst) == ticket.delivered();
    let out = loop {
        if let Some(o) = cur.ipc.inner.lock().result.take() {
            break o;
        }
        // A fast wait's message, in our frame already (`fastpath::hand`).
        if framed() {
            break Outcome::Framed;
        }
        if cur.killed() && claim.try_claim(ticket, WakeReason::Cancelled) {
            unlink(&cur, me);
            break Outcome::Err(Error::PeerDied);
        }
        let due = deadline.is_some_and(|d| time::now_ns() >= d);
        if due && claim.try_claim(ticket, WakeReason::TimedOut) {
            unlink(&cur, me);
            break Outcome::Err(Error::TimedOut);
        }
        match deadline {
            // On the sleep list, Blocked set under its lock (so the timer
            // cannot drop the entry as "not blocked").
            Some(d) if !due => {
                if sleep::arm_wakeup(&cur, d).is_err() {
                    if claim.try_claim(ticket, WakeReason::Cancelled) {
                        unlink(&cur, me);
                        break Outcome::Err(Error::NoMemory);
                    }
                    cur.set_state(State::Blocked);
                }
            }
            _ => cur.set_state(State::Blocked),
        }
        // Ordering: `set_state` is a SeqCst store (an `xchg`, a full
        // barrier) and the result is read under the thread's IPC lock; a
        // winner writes the result under that lock *then* does the
        // Blocked -> Ready exchange in `sched::wake`. So either we see the
        // result here, or its exchange sees Blocked and queues us; the
        // same for `framed`, which a fast winner stores (SeqCst) in place
        // of the result, before that exchange. The
        // fence states the store-before-load for the kill flag too (the
        // victim half of `Thread::kill`'s Dekker pattern, as in
        // `sched::block`).
        fence(Ordering::SeqCst);
        let ready = cur.ipc.inner.lock().result.is_some()
            || framed()
            || cur.killed()
            || deadline.is_some_and(|d| time::now_ns() >= d);
        if ready && cur.try_unblock() {
            continue;
        }
        // Not ready, or a waker already made us Ready and queued us (then
        // the switch must happen so the queue's entry is consumed).
        match handoff.take() {
            Some(next) => sched::switch_direct(next),
            None => sched::block(),
        }
    };
    drop(handoff); // queued now if it was not switched to
    claim.finish();
    if deadline.is_some() {
        sleep::disarm_wakeup(&cur);
    }
    out
}

/// Ends the current thread's wait for `ticket` that never became visible
/// (the operation completed or failed at once).
pub(crate) fn cancel_own(ticket: Ticket) {
    let cur = sched::current();
    cur.ipc.claim.try_claim(ticket, WakeReason::Delivered);
    cur.ipc.claim.finish();
    // SAFETY: our own record, and the wait it was for never became
    // visible (nobody else could claim it): ours (`WaitRecord`).
    let wait = unsafe { cur.ipc.wait.take() };
    drop(wait);
}

/// Drops a closed handle-table entry: the last receive handle of an
/// endpoint kills it (its queued callers get `NotDelivered`, its queued
/// receivers `PeerDied`), the last handle of
/// a notification drains its waiters. Called with no lock held, or under
/// the table's lock only (process teardown).
pub fn release(entry: Entry<Object>) {
    match &entry.object {
        Object::Endpoint(ep) if entry.rights.contains(Rights::RECV) => {
            let won = {
                let mut q = ep.q.lock();
                q.drop_receive_ref().map(|mut d| {
                    // Claimed under the endpoint's lock, where they were
                    // found (the claim discipline); losers are being ended
                    // by someone else.
                    d.callers
                        .retain(|c| claim(&c.thread, WakeReason::Cancelled));
                    d.receivers
                        .retain(|r| claim(&r.thread, WakeReason::Cancelled));
                    d
                })
            };
            if let Some(d) = won {
                // Still queued when the last receiver handle went: no
                // receiver ever took these calls (a receiver takes a caller
                // off this queue under the same endpoint lock the drain
                // held, so each caller was either taken before it, and ends
                // with the reply or PeerDied, or drained here). Safe to
                // send again: NotDelivered.
                for c in d.callers {
                    end_wait(c.thread, Outcome::Err(Error::NotDelivered));
                }
                for r in d.receivers {
                    end_wait(r.thread, Outcome::Err(Error::PeerDied));
                }
            }
        }
        Object::Endpoint(_) | Object::Thread(_) | Object::Process(_) | Object::Memory(_) => {}
        Object::IoPorts(_) | Object::Irq(_) => {}
        Object::Notification(n) => {
            let mut won = {
                let mut s = n.s.lock();
                s.handles -= 1;
                if s.handles == 0 {
                    let mut w = s.n.drain();
                    w.retain(|t| claim(t, WakeReason::Cancelled));
                    w
                } else {
                    Default::default()
                }
            };
            for t in won.drain(..) {
                end_wait(t, Outcome::Err(Error::PeerDied));
            }
        }
    }
    drop(entry);
}

/// Registers one more handle to `obj` (created, duplicated or copied with
/// `rights`): endpoint receive count, notification handle count.
pub fn retain(obj: &Object, rights: Rights) {
    match obj {
        Object::Endpoint(ep) if rights.contains(Rights::RECV) => ep.q.lock().add_receive_ref(),
        Object::Endpoint(_) | Object::Thread(_) | Object::Process(_) | Object::Memory(_) => {}
        Object::IoPorts(_) | Object::Irq(_) => {}
        Object::Notification(n) => n.s.lock().handles += 1,
    }
}

/// The current thread is exiting: the caller awaiting its reply gets
/// `PeerDied`, and its bound notification forgets it.
pub fn thread_exiting(cur: &Thread) {
    // The server side's exchange and claim (inside `take`) run with
    // interrupts off: a caller that leaves meanwhile is freed only after
    // this CPU's next tick (`ReplyWord`, `mem::retire`).
    let were_enabled = crate::arch::cpu::interrupts_enabled();
    crate::arch::cpu::disable_interrupts();
    let caller = cur
        .ipc
        .reply
        .take(|id, tk| claim_id(id, tk, WakeReason::Cancelled));
    if were_enabled {
        crate::arch::cpu::enable_interrupts();
    }
    let caller = caller_ref(caller.ok().flatten());
    let bound = {
        let mut g = cur.ipc.inner.lock();
        cur.ipc.bound_set.store(false, Ordering::Relaxed);
        g.bound.take()
    };
    if let Some(c) = caller {
        end_wait(c, Outcome::Err(Error::PeerDied));
    }
    if let Some(n) = bound {
        n.s.lock().n.unbind(&TRef::new(cur, None));
    }
}

/// Process teardown: closes every handle (peers see peer death).
pub fn close_all(handles: &crate::sync::IrqMutex<crate::object::kobject::Handles>) {
    handles.lock().close_all(release);
}
