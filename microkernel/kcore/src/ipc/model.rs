//! Model-based test of the endpoint state machine together with the reply
//! capability and the wake claim, driven the way the kernel will drive them.
//!
//! A small "kernel" runs random operation sequences (call, send, recv, the
//! fast path's call and receive (which must behave exactly as the slow
//! ones), reply,
//! timeouts, races where another CPU has claimed a thread but not yet removed
//! it, kills, receiver handles closing) on the real [`Endpoint`],
//! [`ReplyCap`]s and [`WaitClaim`]s, and a reference model (plain vectors and
//! the rules of `docs/ipc.md`) runs the same sequence. After every step:
//! every thread's state, every wake-up's outcome and the queue orders agree,
//! at most one queue is non-empty, a dead endpoint queues nothing, a
//! stale ticket never ends a wait, and a call that ends `NotDelivered` was
//! never handed to a receiver (while one a receiver got ends answered,
//! expired or `PeerDied`, never `NotDelivered`).

use super::*;
use alloc::vec::Vec;
use proptest::prelude::*;

const N: usize = 6;

#[derive(Clone, Copy, Debug)]
enum Op {
    Call(usize, u32, bool),
    Send(usize, u32),
    Recv(usize, u32, bool),
    /// The kernel's fast-path call: `take_front_receiver`, else the slow
    /// path's `Call` (blocking). The model: exactly a blocking `Call`.
    FastCall(usize, u32),
    /// The fast-path receive of a `reply_recv`: `queue_receiver_if_idle`,
    /// else the slow path's `Recv`. The model: exactly a blocking `Recv`.
    FastRecv(usize, u32),
    Reply(usize),
    Timeout(usize),
    Race(usize),
    FinishRace(usize),
    Kill(usize),
    AddRef,
    DropRef,
}

fn op() -> impl Strategy<Value = Op> {
    let t = 0..N;
    let cpu = 0u32..2;
    prop_oneof![
        4 => (t.clone(), cpu.clone(), prop::bool::weighted(0.9)).prop_map(|(t, c, b)| Op::Call(t, c, b)),
        1 => (t.clone(), cpu.clone()).prop_map(|(t, c)| Op::Send(t, c)),
        4 => (t.clone(), cpu.clone(), prop::bool::weighted(0.9)).prop_map(|(t, c, b)| Op::Recv(t, c, b)),
        3 => (t.clone(), cpu.clone()).prop_map(|(t, c)| Op::FastCall(t, c)),
        3 => (t.clone(), cpu).prop_map(|(t, c)| Op::FastRecv(t, c)),
        4 => t.clone().prop_map(Op::Reply),
        1 => t.clone().prop_map(Op::Timeout),
        1 => t.clone().prop_map(Op::Race),
        1 => t.clone().prop_map(Op::FinishRace),
        1 => t.prop_map(Op::Kill),
        1 => Just(Op::AddRef),
        1 => Just(Op::DropRef),
    ]
}

/// What a thread last learnt (a wake-up or a syscall's immediate result).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Out {
    Msg(u32, u64),
    Reply(u32),
    Sent,
    Replied,
    Err(IpcError),
    Expired,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    Idle,
    CallQ,
    RecvQ,
    AwaitReply(u32),
    Dead,
}

fn badge(t: usize) -> u64 {
    100 + t as u64
}

// ---------------------------------------------------------------- real ----

struct Real {
    ep: Endpoint<u32>,
    caps: Vec<ReplyCap<u32>>,
    claims: Vec<WaitClaim>,
    tickets: [Option<Ticket>; N],
    old: [Option<Ticket>; N],
    raced: [bool; N],
    dead: [bool; N],
    out: [Option<Out>; N],
    /// The thread's current call reached a receiver (its message was
    /// handed over): it may never end `NotDelivered`.
    delivered: [bool; N],
}

impl Real {
    fn new() -> Self {
        let mut ep = Endpoint::new();
        ep.add_receive_ref();
        Real {
            ep,
            caps: (0..N).map(|_| ReplyCap::new()).collect(),
            claims: (0..N).map(|_| WaitClaim::new()).collect(),
            tickets: [None; N],
            old: [None; N],
            raced: [false; N],
            dead: [false; N],
            out: [None; N],
            delivered: [false; N],
        }
    }

    fn begin(&mut self, t: usize) {
        self.old[t] = self.tickets[t];
        self.tickets[t] = Some(self.claims[t].begin());
    }

    /// Claims `t`'s wait for `reason` and finishes it with `out`; false if
    /// another party holds the claim.
    fn wake(&mut self, t: usize, reason: WakeReason, out: Out) -> bool {
        let Some(tk) = self.tickets[t] else {
            return false;
        };
        if !self.claims[t].try_claim(tk, reason) {
            return false;
        }
        assert_eq!(self.claims[t].finish(), Some(reason));
        // NotDelivered only for a call no receiver was handed.
        assert!(
            !(out == Out::Err(IpcError::NotDelivered) && self.delivered[t]),
            "thread {t}: its message reached a receiver, yet NotDelivered"
        );
        self.out[t] = Some(out);
        true
    }

    /// The thread ends its own just-begun wait (the syscall returns at once).
    fn ret(&mut self, t: usize, out: Out) {
        assert!(self.wake(t, WakeReason::Delivered, out), "own wait");
    }

    fn server_of(&self, t: usize) -> Option<usize> {
        (0..N).find(|s| self.caps[*s].caller() == Some(t as u32))
    }

    /// Removes `t` from wherever its wait put it (after a claim won).
    fn unlink(&mut self, t: usize) {
        self.ep.remove(&(t as u32));
        if let Some(s) = self.server_of(t) {
            assert!(self.caps[s].caller_gone(&(t as u32)));
        }
    }

    fn abandon(&mut self, a: Option<u32>) {
        if let Some(a) = a {
            // Loses (and changes nothing) when a racer holds `a`'s claim.
            self.wake(
                a as usize,
                WakeReason::Cancelled,
                Out::Err(IpcError::PeerDied),
            );
        }
    }

    fn pick_receiver<'a>(
        claims: &'a [WaitClaim],
        tickets: &'a [Option<Ticket>; N],
    ) -> impl FnMut(&Receiver<u32>) -> Pick + 'a {
        move |r| {
            let tk = tickets[r.thread as usize].unwrap();
            if claims[r.thread as usize].try_claim(tk, WakeReason::Delivered) {
                Pick::Take
            } else {
                Pick::Skip
            }
        }
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Call(t, cpu, block) => {
                self.begin(t);
                self.delivered[t] = false;
                let got = self.ep.call(
                    Caller {
                        thread: t as u32,
                        badge: badge(t),
                    },
                    cpu,
                    block,
                    Self::pick_receiver(&self.claims, &self.tickets),
                );
                match got {
                    Ok(CallStep::Deliver(r)) => {
                        let r = r.thread as usize;
                        assert_eq!(self.claims[r].finish(), Some(WakeReason::Delivered));
                        self.out[r] = Some(Out::Msg(t as u32, badge(t)));
                        self.delivered[t] = true;
                        let a = self.caps[r].accept(t as u32);
                        self.abandon(a);
                    }
                    Ok(CallStep::Queued) => {}
                    Err(e) => self.ret(t, Out::Err(e)),
                }
            }
            Op::Send(t, cpu) => {
                // A new message: not delivered yet.
                self.delivered[t] = false;
                let got = self
                    .ep
                    .send(cpu, Self::pick_receiver(&self.claims, &self.tickets));
                match got {
                    Ok(r) => {
                        let r = r.thread as usize;
                        assert_eq!(self.claims[r].finish(), Some(WakeReason::Delivered));
                        self.out[r] = Some(Out::Msg(t as u32, badge(t)));
                        self.out[t] = Some(Out::Sent);
                        self.delivered[t] = true;
                    }
                    Err(e) => {
                        assert!(!self.delivered[t]);
                        self.out[t] = Some(Out::Err(e));
                    }
                }
            }
            Op::Recv(t, cpu, block) => {
                self.begin(t);
                let (claims, tickets) = (&self.claims, &self.tickets);
                let got = self.ep.recv(
                    Receiver {
                        thread: t as u32,
                        cpu,
                    },
                    block,
                    |c| claims[c.thread as usize].take(tickets[c.thread as usize].unwrap()),
                );
                match got {
                    Ok(RecvStep::Got(c)) => {
                        let ct = c.thread as usize;
                        // Message copied while taken; the caller now waits
                        // for the reply.
                        assert_eq!(self.claims[ct].rearm(self.tickets[ct].unwrap()), Ok(()));
                        self.delivered[ct] = true;
                        let a = self.caps[t].accept(c.thread);
                        self.abandon(a);
                        self.ret(t, Out::Msg(c.thread, c.badge));
                    }
                    Ok(RecvStep::Queued) => {}
                    Err(e) => self.ret(t, Out::Err(e)),
                }
            }
            Op::FastCall(t, cpu) => {
                let (claims, tickets) = (&self.claims, &self.tickets);
                let got = self.ep.take_front_receiver(cpu, |r| {
                    let tk = tickets[r.thread as usize].unwrap();
                    claims[r.thread as usize].try_claim(tk, WakeReason::Delivered)
                });
                match got {
                    // As the kernel: the receiver claimed first, then our
                    // wait begins, then its reply capability names us.
                    Some(r) => {
                        self.begin(t);
                        self.delivered[t] = false;
                        let r = r.thread as usize;
                        assert_eq!(self.claims[r].finish(), Some(WakeReason::Delivered));
                        self.out[r] = Some(Out::Msg(t as u32, badge(t)));
                        self.delivered[t] = true;
                        let a = self.caps[r].accept(t as u32);
                        self.abandon(a);
                    }
                    None => self.step(Op::Call(t, cpu, true)),
                }
            }
            Op::FastRecv(t, cpu) => {
                self.begin(t);
                let me = Receiver {
                    thread: t as u32,
                    cpu,
                };
                if !self.ep.queue_receiver_if_idle(me) {
                    // As the kernel: `cancel_own`, then the slow receive.
                    let tk = self.tickets[t].unwrap();
                    assert!(self.claims[t].try_claim(tk, WakeReason::Delivered));
                    self.claims[t].finish();
                    self.step(Op::Recv(t, cpu, true));
                }
            }
            Op::Reply(t) => {
                let r = match self.caps[t].take() {
                    Ok(c) => {
                        if self.wake(c as usize, WakeReason::Delivered, Out::Reply(t as u32)) {
                            Out::Replied
                        } else {
                            Out::Err(IpcError::PeerDied)
                        }
                    }
                    Err(e) => Out::Err(e),
                };
                self.out[t] = Some(r);
            }
            Op::Timeout(t) => {
                if self.wake(t, WakeReason::TimedOut, Out::Expired) {
                    self.unlink(t);
                }
            }
            Op::Race(t) => {
                if let Some(tk) = self.tickets[t] {
                    if self.claims[t].try_claim(tk, WakeReason::TimedOut) {
                        self.raced[t] = true;
                    }
                }
            }
            Op::FinishRace(t) => {
                if self.raced[t] {
                    self.raced[t] = false;
                    self.unlink(t);
                    assert_eq!(self.claims[t].finish(), Some(WakeReason::TimedOut));
                    self.out[t] = Some(Out::Expired);
                }
            }
            Op::Kill(t) => {
                if self.dead[t] || self.raced[t] {
                    return;
                }
                if let Some(tk) = self.tickets[t] {
                    if self.claims[t].try_claim(tk, WakeReason::Cancelled) {
                        self.unlink(t);
                        self.claims[t].finish();
                    }
                }
                let c = self.caps[t].server_gone();
                self.abandon(c);
                self.dead[t] = true;
                self.out[t] = None;
            }
            Op::AddRef => self.ep.add_receive_ref(),
            Op::DropRef => {
                if !self.ep.is_alive() {
                    return;
                }
                if let Some(Drained { callers, receivers }) = self.ep.drop_receive_ref() {
                    // Queued callers were never taken: NotDelivered.
                    let threads = callers
                        .iter()
                        .map(|c| (c.thread, IpcError::NotDelivered))
                        .chain(receivers.iter().map(|r| (r.thread, IpcError::PeerDied)));
                    for (th, e) in threads.collect::<Vec<_>>() {
                        self.wake(th as usize, WakeReason::Cancelled, Out::Err(e));
                    }
                }
            }
        }
    }

    fn state(&self, t: usize) -> St {
        let id = t as u32;
        if self.dead[t] {
            St::Dead
        } else if self.ep.callers().any(|c| c.thread == id) {
            St::CallQ
        } else if self.ep.receivers().any(|r| r.thread == id) {
            St::RecvQ
        } else if let Some(s) = self.server_of(t) {
            St::AwaitReply(s as u32)
        } else {
            St::Idle
        }
    }
}

// ----------------------------------------------------------- reference ----

#[derive(Clone, Copy, PartialEq)]
enum Cap {
    Empty,
    Pending(usize),
    Gone,
}

struct Model {
    st: [St; N],
    raced: [bool; N],
    callers: Vec<usize>,
    receivers: Vec<(usize, u32)>,
    caps: [Cap; N],
    refs: u32,
    out: [Option<Out>; N],
}

impl Model {
    fn new() -> Self {
        Model {
            st: [St::Idle; N],
            raced: [false; N],
            callers: Vec::new(),
            receivers: Vec::new(),
            caps: [Cap::Empty; N],
            refs: 1,
            out: [None; N],
        }
    }

    fn waiting(&self, t: usize) -> bool {
        matches!(self.st[t], St::CallQ | St::RecvQ | St::AwaitReply(_))
    }

    fn end(&mut self, t: usize, out: Option<Out>) {
        match self.st[t] {
            St::CallQ => self.callers.retain(|c| *c != t),
            St::RecvQ => self.receivers.retain(|r| r.0 != t),
            St::AwaitReply(s) if self.caps[s as usize] == Cap::Pending(t) => {
                self.caps[s as usize] = Cap::Gone;
            }
            _ => {}
        }
        self.st[t] = St::Idle;
        self.out[t] = out;
    }

    fn abandon(&mut self, cap: Cap) {
        if let Cap::Pending(a) = cap {
            if !self.raced[a] {
                self.st[a] = St::Idle;
                self.out[a] = Some(Out::Err(IpcError::PeerDied));
            }
        }
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Call(t, cpu, block) => {
                if self.refs == 0 {
                    self.out[t] = Some(Out::Err(IpcError::NotDelivered));
                    return;
                }
                let live: Vec<(usize, u32)> = self
                    .receivers
                    .iter()
                    .copied()
                    .filter(|r| !self.raced[r.0])
                    .collect();
                match live.iter().find(|r| r.1 == cpu).or(live.first()).copied() {
                    Some((r, _)) => {
                        self.receivers.retain(|x| x.0 != r);
                        self.st[r] = St::Idle;
                        self.out[r] = Some(Out::Msg(t as u32, badge(t)));
                        let old = core::mem::replace(&mut self.caps[r], Cap::Pending(t));
                        self.abandon(old);
                        self.st[t] = St::AwaitReply(r as u32);
                    }
                    None if block => {
                        self.callers.push(t);
                        self.st[t] = St::CallQ;
                    }
                    None => self.out[t] = Some(Out::Err(IpcError::WouldBlock)),
                }
            }
            Op::Send(t, cpu) => {
                if self.refs == 0 {
                    self.out[t] = Some(Out::Err(IpcError::NotDelivered));
                    return;
                }
                let live: Vec<(usize, u32)> = self
                    .receivers
                    .iter()
                    .copied()
                    .filter(|r| !self.raced[r.0])
                    .collect();
                match live.iter().find(|r| r.1 == cpu).or(live.first()).copied() {
                    Some((r, _)) => {
                        self.receivers.retain(|x| x.0 != r);
                        self.st[r] = St::Idle;
                        self.out[r] = Some(Out::Msg(t as u32, badge(t)));
                        self.out[t] = Some(Out::Sent);
                    }
                    None => self.out[t] = Some(Out::Err(IpcError::WouldBlock)),
                }
            }
            Op::Recv(t, cpu, block) => {
                if self.refs == 0 {
                    self.out[t] = Some(Out::Err(IpcError::PeerDied));
                    return;
                }
                match self.callers.iter().copied().find(|c| !self.raced[*c]) {
                    Some(c) => {
                        self.callers.retain(|x| *x != c);
                        self.st[c] = St::AwaitReply(t as u32);
                        let old = core::mem::replace(&mut self.caps[t], Cap::Pending(c));
                        self.abandon(old);
                        self.out[t] = Some(Out::Msg(c as u32, badge(c)));
                    }
                    None if block => {
                        self.receivers.push((t, cpu));
                        self.st[t] = St::RecvQ;
                    }
                    None => self.out[t] = Some(Out::Err(IpcError::WouldBlock)),
                }
            }
            Op::FastCall(t, cpu) => self.step(Op::Call(t, cpu, true)),
            Op::FastRecv(t, cpu) => self.step(Op::Recv(t, cpu, true)),
            Op::Reply(t) => {
                self.out[t] = Some(match core::mem::replace(&mut self.caps[t], Cap::Empty) {
                    Cap::Pending(c) if self.raced[c] => Out::Err(IpcError::PeerDied),
                    Cap::Pending(c) => {
                        self.st[c] = St::Idle;
                        self.out[c] = Some(Out::Reply(t as u32));
                        Out::Replied
                    }
                    Cap::Gone => Out::Err(IpcError::PeerDied),
                    Cap::Empty => Out::Err(IpcError::NoCaller),
                });
            }
            Op::Timeout(t) => {
                if self.waiting(t) && !self.raced[t] {
                    self.end(t, Some(Out::Expired));
                }
            }
            Op::Race(t) => {
                if self.waiting(t) && !self.raced[t] {
                    self.raced[t] = true;
                }
            }
            Op::FinishRace(t) => {
                if self.raced[t] {
                    self.raced[t] = false;
                    self.end(t, Some(Out::Expired));
                }
            }
            Op::Kill(t) => {
                if self.st[t] == St::Dead || self.raced[t] {
                    return;
                }
                self.end(t, None);
                let cap = core::mem::replace(&mut self.caps[t], Cap::Empty);
                self.abandon(cap);
                self.st[t] = St::Dead;
            }
            Op::AddRef => self.refs += 1,
            Op::DropRef => {
                if self.refs == 0 {
                    return;
                }
                self.refs -= 1;
                if self.refs == 0 {
                    // A queued caller's message reached nobody.
                    let queued: Vec<(usize, IpcError)> = self
                        .callers
                        .drain(..)
                        .map(|c| (c, IpcError::NotDelivered))
                        .chain(self.receivers.drain(..).map(|r| (r.0, IpcError::PeerDied)))
                        .collect();
                    for (q, e) in queued {
                        if !self.raced[q] {
                            self.st[q] = St::Idle;
                            self.out[q] = Some(Out::Err(e));
                        }
                    }
                }
            }
        }
    }
}

fn runnable(m: &Model, op: Op) -> bool {
    // A thread that is blocked or dead makes no syscalls.
    match op {
        Op::Call(t, ..)
        | Op::Send(t, _)
        | Op::Recv(t, ..)
        | Op::FastCall(t, _)
        | Op::FastRecv(t, _)
        | Op::Reply(t) => m.st[t] == St::Idle && !m.raced[t],
        _ => true,
    }
}

fn check(r: &mut Real, m: &Model) -> Result<(), TestCaseError> {
    for t in 0..N {
        prop_assert_eq!(r.raced[t], m.raced[t], "thread {} raced", t);
        prop_assert_eq!(r.out[t], m.out[t], "thread {} outcome", t);
        if !m.raced[t] {
            prop_assert_eq!(r.state(t), m.st[t], "thread {} state", t);
            let waiting = matches!(m.st[t], St::CallQ | St::RecvQ | St::AwaitReply(_));
            prop_assert_eq!(
                r.claims[t].waiting().is_some(),
                waiting,
                "thread {} claim",
                t
            );
        }
        // A ticket from an earlier wait never ends the current one.
        if let Some(old) = r.old[t] {
            prop_assert!(!r.claims[t].try_claim(old, WakeReason::TimedOut));
        }
    }
    let callers: Vec<usize> =
        r.ep.callers()
            .map(|c| c.thread as usize)
            .filter(|t| !m.raced[*t])
            .collect();
    let want: Vec<usize> = m.callers.iter().copied().filter(|t| !m.raced[*t]).collect();
    prop_assert_eq!(callers, want);
    for c in r.ep.callers() {
        prop_assert_eq!(c.badge, badge(c.thread as usize));
    }
    let receivers: Vec<(usize, u32)> =
        r.ep.receivers()
            .map(|x| (x.thread as usize, x.cpu))
            .filter(|x| !m.raced[x.0])
            .collect();
    let want: Vec<(usize, u32)> = m
        .receivers
        .iter()
        .copied()
        .filter(|x| !m.raced[x.0])
        .collect();
    prop_assert_eq!(&receivers, &want);
    // At most one queue is in use; a dead endpoint queues nothing.
    prop_assert!(r.ep.callers().count() == 0 || r.ep.receivers().count() == 0);
    prop_assert_eq!(r.ep.is_alive(), m.refs > 0);
    if !r.ep.is_alive() {
        prop_assert_eq!(r.ep.callers().count() + r.ep.receivers().count(), 0);
    }
    // No thread twice in the queues.
    let mut seen = [0; N];
    for t in
        r.ep.callers()
            .map(|c| c.thread)
            .chain(r.ep.receivers().map(|x| x.thread))
    {
        seen[t as usize] += 1;
    }
    prop_assert!(seen.iter().all(|n| *n <= 1));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
    #[test]
    fn endpoint_agrees_with_the_reference_model(ops in proptest::collection::vec(op(), 1..120)) {
        let mut r = Real::new();
        let mut m = Model::new();
        for op in ops {
            if !runnable(&m, op) {
                continue;
            }
            r.step(op);
            m.step(op);
            check(&mut r, &m)?;
        }
    }
}
