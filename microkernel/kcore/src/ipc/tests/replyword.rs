//! break25p (session 25): the atomic reply word (`ReplyWord`, proto3)
//! against its state machine (`ReplyCap`), over random sequences of every
//! server-side operation the kernel makes of it (and claims that lose).
//! (break25p's pin left behind after a lost claim cannot happen since
//! cut26e removed the pin: every operation is one exchange.)

use super::super::{Held, ReplyWord, Ticket, WaitClaim};
use super::*;
use core::sync::atomic::AtomicU64;
use proptest::prelude::*;
use std::collections::HashMap;

type Word = ReplyWord<AtomicU64>;

/// One server-side operation, or a caller's kill, as the kernel makes it.
/// `won`: whether the claim the operation makes (if any) wins.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// A delivery to the server (`give_call`, `deliver`): `accept`.
    Accept { caller: u64, won: bool },
    /// A taken call whose caller's wait ended while copied (`accept_gone`).
    AcceptGone { won: bool },
    /// The fast `reply_recv`'s reply, or the server's exit (`take`).
    Take { won: bool },
    /// The slow `reply` (peek; a reply too long for the caller's buffer
    /// leaves the call held, `Refused` here for the kernel's
    /// `InvalidArgument`; else take and claim).
    SlowReply { won: bool, fits: bool },
    /// The slow receive's `take_call`: name the caller (claiming an
    /// abandoned one), the caller's rearm; gone on a late mark.
    TakeCall {
        caller: u64,
        won: bool,
        rearmed: bool,
    },
    /// The trace's look (`reply_target`): `peek`.
    Look,
    /// A caller's kill (its own claim won): `caller_gone`.
    CallerGone { caller: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let id = (1u64..4).prop_map(|i| i * 8);
    prop_oneof![
        (id.clone(), any::<bool>()).prop_map(|(caller, won)| Op::Accept { caller, won }),
        any::<bool>().prop_map(|won| Op::AcceptGone { won }),
        any::<bool>().prop_map(|won| Op::Take { won }),
        (any::<bool>(), any::<bool>()).prop_map(|(won, fits)| Op::SlowReply { won, fits }),
        (id.clone(), any::<bool>(), any::<bool>()).prop_map(|(caller, won, rearmed)| {
            Op::TakeCall {
                caller,
                won,
                rearmed,
            }
        }),
        Just(Op::Look),
        id.prop_map(|caller| Op::CallerGone { caller }),
    ]
}

/// What an operation reported, on either side.
#[derive(Debug, PartialEq)]
enum Got {
    /// A caller handed back (claimed by us), or none.
    Caller(Option<u64>),
    /// A reply's result: the caller answered (or `None`, its claim lost).
    Reply(Result<Option<u64>, IpcError>),
    /// A look (`peek`).
    Held(Option<u64>, bool),
    /// `caller_gone`.
    Gone(bool),
}

struct Real {
    w: Word,
    claims: WaitClaim<AtomicU64>,
    /// The ticket each caller was accepted with (the word must give it back).
    tk: HashMap<u64, Ticket>,
}

impl Real {
    /// A claim of `(c, t)` that wins if `won`, checking the ticket.
    fn claim(tk: &HashMap<u64, Ticket>, won: bool) -> impl FnOnce(u64, Ticket) -> bool + '_ {
        move |c, t| {
            assert_eq!(tk.get(&c), Some(&t), "the word gave back another ticket");
            won
        }
    }

    fn step(&mut self, op: Op) -> Got {
        let id = |c: Option<(u64, Ticket)>| c.map(|c| c.0);
        match op {
            Op::Accept { caller, won } => {
                let t = self.claims.begin();
                // The abandoned caller's ticket is checked before ours
                // replaces it (the same caller may be accepted again).
                let old = self.w.accept(caller, t, Self::claim(&self.tk, won));
                self.tk.insert(caller, t);
                Got::Caller(id(old))
            }
            Op::AcceptGone { won } => {
                Got::Caller(id(self.w.accept_gone(Self::claim(&self.tk, won))))
            }
            Op::Take { won } => Got::Reply(self.w.take(Self::claim(&self.tk, won)).map(id)),
            Op::SlowReply { won, fits } => Got::Reply(match self.w.peek() {
                Held::Caller(..) if !fits => Err(IpcError::Refused),
                _ => self.w.take(Self::claim(&self.tk, won)).map(id),
            }),
            Op::TakeCall {
                caller,
                won,
                rearmed,
            } => {
                // Named before the rearm (cut26e); gone on a late mark.
                let t = self.claims.begin();
                let old = self.w.accept(caller, t, Self::claim(&self.tk, won));
                self.tk.insert(caller, t);
                if !rearmed {
                    self.w.named_caller_gone();
                }
                Got::Caller(id(old))
            }
            Op::Look => match self.w.peek() {
                Held::Caller(c, _) => Got::Held(Some(c), false),
                Held::Gone => Got::Held(None, true),
                Held::Empty => Got::Held(None, false),
            },
            Op::CallerGone { caller } => Got::Gone(self.w.caller_gone(caller)),
        }
    }
}

/// The reference: `ReplyCap`, with the kernel's claim around it.
fn model_step(m: &mut ReplyCap<u64>, op: Op) -> Got {
    match op {
        Op::Accept { caller, won } => Got::Caller(m.accept(caller).filter(|_| won)),
        Op::AcceptGone { won } => Got::Caller(m.accept_gone().filter(|_| won)),
        Op::Take { won } => Got::Reply(m.take().map(|c| won.then_some(c))),
        Op::SlowReply { won, fits } => Got::Reply(match m.caller() {
            Some(_) if !fits => Err(IpcError::Refused),
            _ => m.take().map(|c| won.then_some(c)),
        }),
        Op::TakeCall {
            caller,
            won,
            rearmed,
        } => Got::Caller(
            if rearmed {
                m.accept(caller)
            } else {
                m.accept_gone()
            }
            .filter(|_| won),
        ),
        Op::Look => {
            // `GONE` is what a `take` of a copy reports as `PeerDied`.
            let mut probe = *m;
            Got::Held(m.caller(), probe.take() == Err(IpcError::PeerDied))
        }
        Op::CallerGone { caller } => Got::Gone(m.caller_gone(&caller)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]
    #[test]
    fn the_reply_word_agrees_with_reply_cap(
        ops in proptest::collection::vec(op(), 1..80)
    ) {
        let mut r = Real {
            w: Word::new(),
            claims: WaitClaim::new(),
            tk: HashMap::new(),
        };
        let mut m = ReplyCap::new();
        for op in ops {
            let got = r.step(op);
            prop_assert_eq!(&got, &model_step(&mut m, op), "{:?}", op);
            prop_assert_eq!(r.w.caller(), m.caller(), "after {:?}", op);
        }
    }
}

/// The deterministic case of the above: a lost claim (the caller's kill
/// won it first) leaves the word as the state machine says, in each
/// operation that claims, and the server's next call is accepted.
#[test]
fn a_lost_claim_leaves_the_word_consistent() {
    let tk = WaitClaim::<AtomicU64>::new().begin();
    let lose = |_: u64, _: Ticket| false;
    // `take` (fast reply_recv, the server's exit).
    let w = Word::new();
    assert_eq!(w.accept(8, tk, lose), None);
    assert_eq!(w.take(lose), Ok(None));
    assert!(!w.caller_gone(8), "the server side took it off the word");
    // `accept` over an abandoned caller.
    assert_eq!(w.accept(8, tk, lose), None);
    assert_eq!(w.accept(16, tk, lose), None);
    assert_eq!(w.caller(), Some(16));
    // `accept_gone` likewise.
    assert_eq!(w.accept_gone(lose), None);
    assert_eq!(w.take(lose), Err(IpcError::PeerDied));
    assert_eq!(w.take(lose), Err(IpcError::NoCaller));
}
