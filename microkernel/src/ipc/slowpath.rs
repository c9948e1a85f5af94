//! The slow path of every IPC operation: register messages, badges, several
//! receivers, peer death, timeouts, notifications and the bound
//! endpoint+notification receive. Each function follows the sequence in
//! docs/ipc.md section 6; the claim discipline is in [`super`].

use super::transfer::{self, Extra, Placed};
use super::{
    caller_ref, cancel_own, claim, claim_id, end_wait, end_wait_handoff, unlink, wait, Handoff,
};
use crate::object::endpoint::EndpointObj;
use crate::object::kobject::ObjBox;
use crate::object::notification::NotificationObj;
use crate::object::thread::Thread;
use crate::object::waitstate::{Msg, Outcome, Server, TRef, WaitOn};
use crate::sched;
use abi::Error;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;
use kcore::ipc::{
    CallStep, Caller, Held, MsgInfo, Pick, Receiver, RecvStep, SignalStep, WaitStep, WakeReason,
};

/// An endpoint reference as the handle table gives it.
pub type Ep = Arc<ObjBox<EndpointObj>>;
/// A notification reference.
pub type Ntf = Arc<ObjBox<NotificationObj>>;

/// How long an operation may wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeout {
    /// For ever.
    Never,
    /// Not at all (`WouldBlock` instead of queueing).
    Poll,
    /// Until this time (ns since boot).
    At(u64),
}

impl Timeout {
    fn may_block(self) -> bool {
        self != Timeout::Poll
    }
    fn deadline(self) -> Option<u64> {
        match self {
            Timeout::At(d) => Some(d),
            _ => None,
        }
    }
}

fn cpu() -> u32 {
    crate::arch::percpu::cpu_id().get()
}

/// `pick` for a call or send: claims a waiting receiver whose receive buffer
/// can take `len` bytes.
fn pick_receiver(len: usize) -> impl FnMut(&Receiver<TRef>) -> Pick {
    move |r| {
        // SAFETY: `r` is in the endpoint queue whose lock our caller holds.
        let t = unsafe { r.thread.thread() };
        if (t.ipc.capacity.load(Ordering::Relaxed) as usize) < len {
            return Pick::Refuse;
        }
        if claim(&r.thread, WakeReason::Delivered) {
            Pick::Take
        } else {
            Pick::Skip
        }
    }
}

/// Hands a message to receiver `r` (claimed by us, off the endpoint queue).
/// `caller`: the call `r` must answer (its reply capability takes it; a
/// caller it abandons by not replying gets `PeerDied`).
fn deliver(r: TRef, m: Msg, caller: Option<TRef>, fast: bool) -> Handoff {
    // SAFETY: we won r's claim (pick) and have not handed it an outcome.
    let arc = unsafe { r.arc() };
    unlink(&arc, r); // its bound-notification registration, if any
                     // Its reply word (no lock; we own r through its claim): an abandoned
                     // caller is claimed after the exchange that replaced it.
    let abandoned = caller.and_then(|c| {
        let tk = c.ticket.expect("a caller entry carries its ticket");
        let old = arc.ipc.reply.accept(c.id(), tk, |id, otk| {
            claim_id(id, otk, WakeReason::Cancelled)
        });
        caller_ref(old)
    });
    arc.ipc.inner.lock().result = Some(Outcome::Msg(m));
    let h = if fast {
        Handoff::or_wake(arc)
    } else {
        sched::wake(&arc);
        Handoff::none()
    };
    if let Some(o) = abandoned {
        end_wait(o, Outcome::Err(Error::PeerDied));
    }
    h
}

/// The message as the receiver sees it once `p` was placed.
fn with_placed(m: Msg, p: Placed) -> Msg {
    Msg {
        info: MsgInfo::new(m.info.label(), p.count, 0, p.len),
        handles: p.handles,
        ..m
    }
}

/// Writes the current thread's pending `extra` into claimed receiver `r`.
/// On failure (the receiver's side) `r`'s wait ends with the error, the
/// extra stays ours, and the caller tries again.
fn place_into(r: TRef, m: Msg, extra: &mut Extra) -> Result<Msg, ()> {
    if extra.is_empty() {
        return Ok(m);
    }
    // SAFETY: r is claimed by us (the pick).
    let rt = unsafe { r.thread() };
    let addr = rt.ipc.buf_addr.load(Ordering::Relaxed);
    match transfer::place(rt, addr, extra) {
        Ok(p) => Ok(with_placed(m, p)),
        Err(e) => {
            end_wait(r, Outcome::Err(e));
            Err(())
        }
    }
}

/// `call`: sends `m` (badge already set) and `extra` through `ep` and waits
/// for the reply, which is written to the current thread's receive buffer
/// (`capacity` bytes at `buf`).
pub fn call(
    ep: &Ep,
    m: Msg,
    extra: Extra,
    buf: u64,
    capacity: usize,
    timeout: Timeout,
) -> Result<Msg, Error> {
    let cur = sched::current_arc();
    {
        let mut g = cur.ipc.inner.lock();
        g.out = m;
        g.extra = extra;
    }
    cur.ipc.capacity.store(capacity as u32, Ordering::Relaxed);
    cur.ipc.buf_addr.store(buf, Ordering::Relaxed);
    // A receiver that took the queued call but could not place it on its
    // side hands it back (`Outcome::Retry`, see `take_call`): the call is
    // made again, as a new wait with the same deadline.
    let out = loop {
        let out = call_once(ep, &cur, m, timeout);
        if out != Outcome::Retry {
            break out;
        }
    };
    // Whatever no receiver took (the call failed): see transfer::restore.
    let left = core::mem::take(&mut cur.ipc.inner.lock().extra);
    transfer::restore(left);
    drop(cur);
    outcome_msg(out)
}

/// One attempt of [`call`]: the message and its extra are in `cur`'s record.
fn call_once(ep: &Ep, cur: &Arc<Thread>, m: Msg, timeout: Timeout) -> Outcome {
    // SAFETY: our own record, no wait of ours visible (`WaitRecord`).
    let old = core::mem::replace(unsafe { cur.ipc.wait.get() }, WaitOn::Endpoint(ep.clone()));
    drop(old);
    // Release (inside begin): the message, wait record and capacity above
    // are visible to whoever sees the wait.
    let tk = cur.ipc.claim.begin();
    let me = TRef::new(cur, Some(tk));
    loop {
        let step = ep.q.lock().call(
            Caller {
                thread: me,
                badge: m.badge,
            },
            cpu(),
            timeout.may_block(),
            pick_receiver(m.info.buffer_len()),
        );
        match step {
            Err(e) => {
                cancel_own(tk);
                break Outcome::Err(e.into());
            }
            Ok(CallStep::Deliver(r)) => {
                // Not visible to anyone: our own record is ours to edit.
                let mut extra = core::mem::take(&mut cur.ipc.inner.lock().extra);
                let Ok(placed) = place_into(r.thread, m, &mut extra) else {
                    cur.ipc.inner.lock().extra = extra;
                    continue; // that receiver failed on its side: the next
                };
                drop(extra);
                // SAFETY: r is claimed by us (the pick).
                let server = Server::new(unsafe { r.thread.thread() });
                // Our wait is now for r's reply: set before r's reply
                // capability names us, so our own timeout or kill finds r.
                // SAFETY: our own record: `Deliver` did not queue us, so
                // no other party can find (and claim) our wait yet.
                let old = core::mem::replace(unsafe { cur.ipc.wait.get() }, WaitOn::Reply(server));
                drop(old);
                // The fast path's hand-off: register-only, no timeout, the
                // receiver waits on this CPU.
                let fast =
                    placed.info.is_register_only() && timeout == Timeout::Never && r.cpu == cpu();
                let h = deliver(r.thread, placed, Some(me), fast);
                break wait(tk, timeout.deadline(), h);
            }
            Ok(CallStep::Queued) => break wait(tk, timeout.deadline(), Handoff::none()),
        }
    }
}

fn outcome_msg(o: Outcome) -> Result<Msg, Error> {
    match o {
        Outcome::Msg(m) => Ok(m),
        Outcome::Err(e) => Err(e),
        // A call is never bound to a notification; `call` retries a Retry;
        // a slow wait never asks for frame delivery (`IpcInner::frame_seq`).
        Outcome::Notified(_) | Outcome::Retry | Outcome::Framed => Err(Error::InvalidArgument),
    }
}

/// Non-blocking `send`: to a waiting receiver, else `WouldBlock`.
pub fn send(ep: &Ep, m: Msg, mut extra: Extra) -> Result<(), Error> {
    let r = loop {
        let r = match ep.q.lock().send(cpu(), pick_receiver(m.info.buffer_len())) {
            Ok(r) => r,
            Err(e) => {
                transfer::restore(extra);
                return Err(e.into());
            }
        };
        if let Ok(placed) = place_into(r.thread, m, &mut extra) {
            break (r, placed);
        }
    };
    drop(deliver(r.0.thread, r.1, None, false));
    Ok(())
}

/// `reply`: answers the call this thread holds. `PeerDied` if the caller
/// went away, `InvalidArgument` if no call is held.
pub fn reply(m: Msg, mut extra: Extra, fast: bool) -> Result<Handoff, Error> {
    let cur = sched::current();
    // Our reply word: the caller looked at and then taken and claimed
    // with interrupts off (a syscall, no preemption point: a caller that
    // leaves meanwhile is freed only after a grace period, `ReplyWord`).
    if let Held::Caller(id, tk) = cur.ipc.reply.peek() {
        // A reply longer than the caller's buffer is the replier's
        // error; the call stays held.
        // SAFETY: named by our word just now: alive, or freed only after
        // this CPU's next tick (`ReplyWord`, `mem::retire`).
        let cap = unsafe { TRef::from_id(id, tk).thread() }
            .ipc
            .capacity
            .load(Ordering::Relaxed);
        if m.info.buffer_len() > cap as usize {
            transfer::restore(extra);
            return Err(Error::InvalidArgument);
        }
    }
    let c = match cur
        .ipc
        .reply
        .take(|id, tk| claim_id(id, tk, WakeReason::Delivered))
    {
        Ok(c) => caller_ref(c),
        Err(e) => {
            transfer::restore(extra);
            return Err(e.into());
        }
    };
    let Some(c) = c else {
        // Its timeout or kill is ending it right now.
        transfer::restore(extra);
        return Err(Error::PeerDied);
    };
    let m = Msg { badge: 0, ..m };
    let out = if extra.is_empty() {
        Outcome::Msg(m)
    } else {
        // SAFETY: we won c's claim.
        let ct = unsafe { c.thread() };
        match transfer::place(ct, ct.ipc.buf_addr.load(Ordering::Relaxed), &mut extra) {
            Ok(p) => Outcome::Msg(with_placed(m, p)),
            // The caller's buffer or table: its error.
            Err(e) => Outcome::Err(e),
        }
    };
    transfer::restore(extra);
    if fast && matches!(out, Outcome::Msg(_)) {
        return Ok(end_wait_handoff(c, out));
    }
    end_wait(c, out);
    Ok(Handoff::none())
}

/// What a receive returns.
pub enum Received {
    /// A message and the badge it came through (in `Msg::badge`).
    Msg(Msg),
    /// The bound notification's bits.
    Notified(u64),
}

/// `recv`: takes the longest-waiting call on `ep`, or waits for one (or for
/// the bound notification).
pub fn recv(
    ep: &Ep,
    buf: u64,
    capacity: usize,
    timeout: Timeout,
    handoff: Handoff,
) -> Result<Received, Error> {
    let cur = sched::current_arc();
    let bound = cur.ipc.inner.lock().bound.clone();
    // Bits already pending on the bound notification come first.
    if let Some(n) = &bound {
        let mut s = n.s.lock();
        if s.n.pending() != 0 {
            if let Ok(Some(bits)) = s.n.bound_recv_begin(&TRef::new(&cur, None)) {
                return Ok(Received::Notified(bits));
            }
        }
    }
    // SAFETY: our own record, no wait of ours visible (`WaitRecord`).
    *unsafe { cur.ipc.wait.get() } = match &bound {
        Some(n) => WaitOn::EndpointBound(ep.clone(), n.clone()),
        None => WaitOn::Endpoint(ep.clone()),
    };
    cur.ipc.capacity.store(capacity as u32, Ordering::Relaxed);
    cur.ipc.buf_addr.store(buf, Ordering::Relaxed);
    let tk = cur.ipc.claim.begin();
    let me = TRef::new(&cur, Some(tk));
    let step = loop {
        let step = ep.q.lock().recv(
            Receiver {
                thread: me,
                cpu: cpu(),
            },
            timeout.may_block(),
            |c| match c.thread.ticket {
                // SAFETY: `c` is in the queue whose lock we hold.
                Some(ctk) => unsafe { c.thread.thread() }.ipc.claim.take(ctk),
                None => false,
            },
        );
        // A queued message longer than our buffer is its sender's error
        // (as when the receiver waits first); we go on receiving.
        if let Ok(RecvStep::Got(c)) = &step {
            if !fits(c.thread, capacity) {
                continue;
            }
        }
        break step;
    };
    match step {
        Err(e) => {
            cancel_own(tk);
            Err(e.into())
        }
        Ok(RecvStep::Got(c)) => {
            cancel_own(tk);
            let m = take_call(&cur, c.thread, buf)?;
            Ok(Received::Msg(Msg {
                badge: c.badge,
                ..m
            }))
        }
        Ok(RecvStep::Queued) => {
            if let Some(n) = &bound {
                let mut s = n.s.lock();
                // Register for a signal only while this wait is unclaimed (a
                // deliverer that claims us later unregisters us after this:
                // it removes us from the notification under this lock).
                if cur.ipc.claim.waiting() == Some(tk) {
                    if let Ok(Some(bits)) = s.n.bound_recv_begin(&TRef::new(&cur, None)) {
                        if cur.ipc.claim.try_claim(tk, WakeReason::Notified) {
                            drop(s);
                            unlink(&cur, me);
                            cur.ipc.claim.finish();
                            return Ok(Received::Notified(bits));
                        }
                        // A deliverer won meanwhile: the bits stay pending
                        // (no thread waits: `pending` was non-zero).
                        s.n.signal(bits, |_| false);
                    }
                }
            }
            drop(cur);
            match wait(tk, timeout.deadline(), handoff) {
                Outcome::Msg(m) => Ok(Received::Msg(m)),
                Outcome::Notified(bits) => Ok(Received::Notified(bits)),
                Outcome::Err(e) => Err(e),
                // Only a caller is handed back its call; a slow receive
                // never asks for frame delivery (`IpcInner::frame_seq`).
                Outcome::Retry | Outcome::Framed => Err(Error::InvalidArgument),
            }
        }
    }
}

/// The receiver `cur` took caller `c` (its wait is ours while taken): reads
/// its message, makes it wait for our reply, hands the wait back and puts it
/// in our reply capability. A timeout or kill that came meanwhile ends the
/// caller's wait here (we keep the message; our reply gets `PeerDied`).
/// The error a late timeout or kill (a failed `rearm`) ends a wait with.
fn late_error(reason: WakeReason) -> Error {
    if reason == WakeReason::TimedOut {
        Error::TimedOut
    } else {
        Error::PeerDied
    }
}

/// Whether taken caller `c`'s message fits `capacity`; if not, its wait
/// ends with `InvalidArgument` (it was taken, and is in no queue now).
fn fits(c: TRef, capacity: usize) -> bool {
    // SAFETY: we hold c's wait (take).
    let ct = unsafe { c.thread() };
    if ct.ipc.inner.lock().out.info.buffer_len() <= capacity {
        return true;
    }
    let ctk = c.ticket.expect("a caller entry carries its ticket");
    // Hand the wait back, then end it (a timeout or kill may win instead).
    match ct.ipc.claim.rearm(ctk) {
        Ok(()) => {
            if claim(&c, WakeReason::Delivered) {
                end_wait(c, Outcome::Err(Error::InvalidArgument));
            }
        }
        // A timeout or kill came while taken: the wait is ours to end.
        Err(reason) => end_wait(c, Outcome::Err(late_error(reason))),
    }
    false
}

fn take_call(cur: &Arc<Thread>, c: TRef, buf: u64) -> Result<Msg, Error> {
    // SAFETY: we hold c's wait (take); it cannot leave it until we rearm.
    let carc = unsafe { c.arc() };
    let ctk = c.ticket.expect("a caller entry carries its ticket");
    let (mut m, mut extra) = {
        let mut g = carc.ipc.inner.lock();
        (g.out, core::mem::take(&mut g.extra))
    };
    // Our own buffer and table first, while the call is still only taken:
    // a failure there is our error, and the call goes back to its caller
    // whole (its extra back in its record), which makes it again
    // (`Outcome::Retry`): nothing is delivered half, nothing is lost.
    if !extra.is_empty() {
        match transfer::place(cur, buf, &mut extra) {
            Ok(p) => m = with_placed(m, p),
            Err(e) => {
                carc.ipc.inner.lock().extra = extra;
                match carc.ipc.claim.rearm(ctk) {
                    Ok(()) => {
                        // A timeout or kill may win instead: it ends the
                        // call, and the caller drops its extra itself.
                        if claim(&c, WakeReason::Delivered) {
                            end_wait(c, Outcome::Retry);
                        }
                    }
                    Err(reason) => end_wait(c, Outcome::Err(late_error(reason))),
                }
                return Err(e);
            }
        }
    }
    // What was placed is ours now (its buffer was copied).
    transfer::restore(extra);
    // SAFETY: we hold c's wait (take) until the rearm below: its record
    // is ours (`WaitRecord`), handed back by the rearm's Release.
    let old = core::mem::replace(
        unsafe { carc.ipc.wait.get() },
        WaitOn::Reply(Server::new(cur)),
    );
    drop(old);
    // Ordering (cut26e): our reply word names the caller *before* the
    // rearm, so a timeout that wins the rearmed wait finds it there
    // (`caller_gone`); before the rearm nobody else can claim it (it is
    // taken). A caller we abandon is claimed after the exchange that
    // replaced it, with interrupts off (`ReplyWord`).
    let abandoned = caller_ref(cur.ipc.reply.accept(c.id(), ctk, |id, tk| {
        claim_id(id, tk, WakeReason::Cancelled)
    }));
    let late = match carc.ipc.claim.rearm(ctk) {
        Ok(()) => None,
        Err(reason) => {
            // Still ours (the late mark): nobody else touches the word.
            cur.ipc.reply.named_caller_gone();
            Some(reason)
        }
    };
    if let Some(reason) = late {
        end_wait(c, Outcome::Err(late_error(reason)));
    }
    if let Some(o) = abandoned {
        end_wait(o, Outcome::Err(Error::PeerDied));
    }
    drop(carc);
    Ok(m)
}

/// `signal`: ORs `bits` into the notification; wakes one waiter (or the
/// bound thread's receive) with everything pending. Never blocks.
pub fn signal(n: &Ntf, bits: u64) {
    let mut bound_tk = None;
    let step = n.s.lock().n.signal(bits, |t| match t.ticket {
        Some(_) => claim(t, WakeReason::Notified),
        None => {
            // The bound thread, registered by its current receive.
            // SAFETY: the binding is cleared (under this lock) before the
            // thread exits.
            let c = &unsafe { t.thread() }.ipc.claim;
            match c.waiting() {
                Some(tk) if c.try_claim(tk, WakeReason::Notified) => {
                    bound_tk = Some(tk);
                    true
                }
                _ => false,
            }
        }
    });
    if let SignalStep::Wake {
        thread,
        bits,
        bound,
    } = step
    {
        let t = if bound {
            // SAFETY: we won its claim just now.
            TRef::new(unsafe { thread.thread() }, bound_tk)
        } else {
            thread
        };
        end_wait(t, Outcome::Notified(bits));
    }
}

/// `wait`: the pending bits (cleared), or waits for a signal.
pub fn ntf_wait(n: &Ntf, timeout: Timeout) -> Result<u64, Error> {
    // Bits pending already: taken under the notification's lock, with no
    // wait recorded, begun and cancelled around them (the same result as
    // `wait`'s `Got` below; bits that come after this look are the wait's).
    if let Some(bits) = n.s.lock().n.take_pending() {
        return Ok(bits);
    }
    let cur = sched::current_arc();
    // SAFETY: our own record, no wait of ours visible (`WaitRecord`).
    *unsafe { cur.ipc.wait.get() } = WaitOn::Notification(n.clone());
    let tk = cur.ipc.claim.begin();
    let me = TRef::new(&cur, Some(tk));
    let step = n.s.lock().n.wait(me, timeout.may_block());
    match step {
        Err(e) => {
            cancel_own(tk);
            Err(e.into())
        }
        Ok(WaitStep::Got(bits)) => {
            cancel_own(tk);
            Ok(bits)
        }
        Ok(WaitStep::Queued) => {
            drop(cur);
            match wait(tk, timeout.deadline(), Handoff::none()) {
                Outcome::Notified(bits) => Ok(bits),
                Outcome::Err(e) => Err(e),
                Outcome::Msg(_) | Outcome::Retry | Outcome::Framed => Err(Error::InvalidArgument),
            }
        }
    }
}

/// Binds `n` to the current thread (`None`: unbinds its notification).
pub fn bind(n: Option<&Ntf>) -> Result<(), Error> {
    let cur = sched::current();
    match n {
        None => {
            let old = {
                let mut g = cur.ipc.inner.lock();
                cur.ipc.bound_set.store(false, Ordering::Relaxed);
                g.bound.take()
            };
            match old {
                Some(o) => {
                    o.s.lock().n.unbind(&TRef::new(cur, None));
                    Ok(())
                }
                None => Err(Error::NotFound),
            }
        }
        Some(n) => {
            if cur.ipc.inner.lock().bound.is_some() {
                return Err(Error::AlreadyExists);
            }
            n.s.lock().n.bind(TRef::new(cur, None))?;
            let mut g = cur.ipc.inner.lock();
            g.bound = Some(n.clone());
            // Ours alone (`ThreadIpc::bound_set`).
            cur.ipc.bound_set.store(true, Ordering::Relaxed);
            Ok(())
        }
    }
}
