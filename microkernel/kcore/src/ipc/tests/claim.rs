//! The wake claim: exactly one party ends a wait, and a taken caller
//! keeps waiting for its reply.

use super::*;

#[test]
fn exactly_one_claim_ends_a_wait_and_the_thread_learns_why() {
    let c: WaitClaim = WaitClaim::new();
    let t = c.begin();
    assert_eq!(c.waiting(), Some(t));
    assert!(c.try_claim(t, WakeReason::TimedOut));
    assert!(!c.try_claim(t, WakeReason::Delivered));
    assert_eq!(c.waiting(), None);
    assert_eq!(c.finish(), Some(WakeReason::TimedOut));
}

#[test]
fn a_stale_timeout_cannot_end_a_later_wait() {
    let c: WaitClaim = WaitClaim::new();
    let first = c.begin();
    assert!(c.try_claim(first, WakeReason::Delivered));
    assert_eq!(c.finish(), Some(WakeReason::Delivered));
    let second = c.begin();
    assert_ne!(first, second);
    assert!(!c.try_claim(first, WakeReason::TimedOut), "old timer entry");
    assert!(c.try_claim(second, WakeReason::Cancelled));
    assert_eq!(c.finish(), Some(WakeReason::Cancelled));
}

#[test]
fn a_spurious_wake_up_is_not_an_ending() {
    let c: WaitClaim = WaitClaim::new();
    let t = c.begin();
    assert_eq!(c.finish(), None);
    assert!(c.try_claim(t, WakeReason::Delivered));
}

#[test]
fn finish_delivered_ends_only_a_delivered_claim_of_that_wait() {
    let c: WaitClaim = WaitClaim::new();
    let t = c.begin();
    assert!(!c.finish_delivered(t.delivered()), "still waiting");
    assert!(c.try_claim(t, WakeReason::Cancelled));
    assert!(!c.finish_delivered(t.delivered()), "not a delivery");
    assert_eq!(c.finish(), Some(WakeReason::Cancelled));
    let u = c.begin();
    assert!(c.try_claim(u, WakeReason::Delivered));
    assert!(!c.finish_delivered(t.delivered()), "an earlier wait");
    assert!(c.finish_delivered(u.delivered()));
    assert_eq!(c.latest(), u);
    assert_eq!(c.finish(), None, "running again");
    assert_eq!(c.next_delivered(), u.delivered() + 0x100);
}

#[test]
fn a_taken_caller_keeps_waiting_for_its_reply_after_rearm() {
    let c: WaitClaim = WaitClaim::new();
    let t = c.begin();
    assert!(c.take(t));
    assert!(!c.take(t), "one taker");
    assert!(
        !c.try_claim(t, WakeReason::Delivered),
        "no delivery while taken"
    );
    assert_eq!(c.finish(), None, "a taken thread is not woken");
    assert_eq!(c.rearm(t), Ok(()));
    assert_eq!(c.waiting(), Some(t));
    assert!(c.try_claim(t, WakeReason::Delivered), "the reply");
}

#[test]
fn a_timeout_or_kill_while_taken_is_honoured_by_the_rearm() {
    let c: WaitClaim = WaitClaim::new();
    let t = c.begin();
    assert!(c.take(t));
    assert!(!c.try_claim(t, WakeReason::TimedOut));
    assert_eq!(c.rearm(t), Err(WakeReason::TimedOut));
    assert_eq!(c.finish(), Some(WakeReason::TimedOut));

    let t = c.begin();
    assert!(c.take(t));
    assert!(!c.try_claim(t, WakeReason::TimedOut));
    assert!(!c.try_claim(t, WakeReason::Cancelled));
    assert_eq!(
        c.rearm(t),
        Err(WakeReason::Cancelled),
        "a kill wins over a timeout"
    );
    assert_eq!(c.finish(), Some(WakeReason::Cancelled));
}

#[test]
fn the_latest_ticket_names_the_last_begun_wait_in_every_state() {
    // The frameless resume recovers its wait's ticket from the word: it
    // must be the one `begin` returned, waiting, claimed, taken and
    // rearmed, or finished.
    let c: WaitClaim = WaitClaim::new();
    let first = c.begin();
    assert_eq!(c.latest(), first);
    assert!(c.try_claim(first, WakeReason::Delivered));
    assert_eq!(c.latest(), first);
    assert_eq!(c.finish(), Some(WakeReason::Delivered));
    assert_eq!(c.latest(), first);
    let second = c.begin();
    assert_eq!(c.latest(), second);
    assert!(c.take(second));
    assert!(!c.try_claim(second, WakeReason::Cancelled));
    assert_eq!(c.latest(), second);
}

#[test]
fn is_waiting_is_true_only_for_the_unclaimed_current_wait() {
    let c: WaitClaim = WaitClaim::new();
    let t = c.begin();
    assert!(c.is_waiting(t), "begun, nobody claimed it");
    assert!(c.try_claim(t, WakeReason::Delivered));
    assert!(
        !c.is_waiting(t),
        "claimed: the fast path must not block on it"
    );
    assert_eq!(c.finish(), Some(WakeReason::Delivered));
    assert!(!c.is_waiting(t), "finished");
    let u = c.begin();
    assert!(!c.is_waiting(t), "an older ticket");
    assert!(c.is_waiting(u));
    assert!(c.take(u), "a receiver took the caller");
    assert!(!c.is_waiting(u), "taken is not plain waiting");
}

#[test]
fn next_delivered_names_the_wait_the_next_begin_starts_in_every_state() {
    let c: WaitClaim = WaitClaim::new();
    for round in 0..4 {
        let promised = c.next_delivered();
        let t = c.begin();
        assert_eq!(t.delivered(), promised, "round {round}: begin");
        assert_eq!(t.seq(), round + 1, "round {round}: its sequence number");
        assert_eq!(c.next_delivered(), promised + 0x100, "while waiting");
        match round % 2 {
            0 => {
                assert!(c.try_claim(t, WakeReason::Delivered));
                assert_eq!(c.next_delivered(), promised + 0x100, "claimed");
                c.finish();
            }
            _ => {
                assert!(c.take(t));
                assert_eq!(c.next_delivered(), promised + 0x100, "taken");
                assert_eq!(c.rearm(t), Ok(()));
                assert!(c.try_claim(t, WakeReason::Cancelled));
                c.finish();
            }
        }
        assert_eq!(c.next_delivered(), promised + 0x100, "finished");
    }
}

#[test]
fn begin_next_starts_the_wait_next_delivered_named() {
    let c: WaitClaim = WaitClaim::new();
    for round in 0..3 {
        let next = c.next_delivered();
        let t = c.begin_next(next);
        assert_eq!(t.delivered(), next, "round {round}");
        assert!(c.is_waiting(t));
        assert_eq!(c.waiting(), Some(t));
        assert!(c.try_claim(t, WakeReason::Delivered));
        assert!(c.finish_delivered(next));
        let u = c.begin();
        assert_eq!(u.seq(), t.seq() + 1, "begin goes on from it");
        assert!(c.try_claim(u, WakeReason::Cancelled));
        c.finish();
    }
}

/// break23p: after a wait ends in any of the ways a fast path sees (a
/// cancel of its own, `cancel_own`; a take whose rearm meets a late kill or
/// timeout; a plain claim), the next `begin_next` names a new wait, and
/// nothing naming the old one (its ticket, its `Ticket::delivered` word as
/// `frame_seq`/`framed` hold it) claims, takes, rearms or finishes the new
/// one.
#[test]
fn an_ended_waits_names_never_match_the_next_wait() {
    let c: WaitClaim = WaitClaim::new();
    for round in 0..6u64 {
        let next = c.next_delivered();
        let t = c.begin_next(next);
        match round % 3 {
            0 => {
                // cancel_own: never visible, ended by the thread itself.
                assert!(c.try_claim(t, WakeReason::Delivered));
                assert_eq!(c.finish(), Some(WakeReason::Delivered));
            }
            1 => {
                assert!(c.take(t));
                assert!(!c.try_claim(t, WakeReason::Cancelled), "late kill");
                assert!(!c.try_claim(t, WakeReason::TimedOut), "late timeout");
                assert_eq!(c.rearm(t), Err(WakeReason::Cancelled), "a kill wins");
                assert_eq!(c.finish(), Some(WakeReason::Cancelled));
            }
            _ => {
                assert!(c.try_claim(t, WakeReason::TimedOut));
                assert_eq!(c.finish(), Some(WakeReason::TimedOut));
            }
        }
        let next2 = c.next_delivered();
        assert_ne!(next2, next, "round {round}: a new name");
        assert_ne!(next2, 0, "never frame_seq's 'none'");
        assert!(!c.finish_delivered(next), "round {round}: running");
        let u = c.begin_next(next2);
        assert_ne!(u, t);
        assert!(!c.finish_delivered(next), "an old framed word");
        assert!(!c.take(t), "an old ticket takes");
        assert!(
            !c.try_claim(t, WakeReason::Delivered),
            "an old ticket claims"
        );
        assert!(c.is_waiting(u), "round {round}: untouched");
        assert!(c.try_claim(u, WakeReason::Delivered));
        assert!(!c.finish_delivered(next), "claimed, but not the old wait");
        assert!(c.finish_delivered(next2));
    }
}

/// What the frameless hand-off's resume assumes of a wait the hander
/// claimed `Delivered` (cut28s, `arch::frameless::handoff_to_frameless`:
/// one non-atomic `and` of the word with `!CLAIM_STATE_MASK`, no test):
/// the word is exactly `delivered()` and nobody but the thread changes it
/// until then (no late mark, no take, no second claim of any reason or
/// ticket), and the `and` is `finish_delivered`'s store (break28s).
#[test]
fn a_delivered_claim_is_left_as_it_is_until_the_thread_ends_it() {
    let c: WaitClaim = WaitClaim::new();
    let _ = c.begin();
    assert_eq!(c.finish(), None);
    let t = c.begin();
    let later = Ticket::from_raw(t.raw() + 0x100);
    let earlier = Ticket::from_raw(t.raw() - 0x100);
    assert!(c.try_claim(t, WakeReason::Delivered));
    let w = c.word();
    assert_eq!(
        w,
        t.delivered(),
        "claimed Delivered: the word is delivered()"
    );
    for tk in [t, later, earlier] {
        for r in [
            WakeReason::Delivered,
            WakeReason::Cancelled,
            WakeReason::TimedOut,
            WakeReason::Notified,
        ] {
            assert!(!c.try_claim(tk, r), "{r:?} claimed a claimed word");
            assert_eq!(c.word(), w, "a failed {r:?} claim changed the word");
        }
        assert!(!c.take(tk), "a claimed word taken");
        assert_eq!(c.word(), w, "a failed take changed the word");
    }
    // The hand-off's `and` (a sign-extended 32-bit immediate).
    let anded = w & (!0xffi32 as i64 as u64);
    assert_eq!(anded, w & !CLAIM_STATE_MASK);
    let d: WaitClaim = WaitClaim::new();
    let _ = d.begin();
    assert_eq!(d.finish(), None);
    let u = d.begin();
    assert!(d.try_claim(u, WakeReason::Delivered));
    assert!(d.finish_delivered(u.delivered()));
    assert_eq!(anded, d.word(), "the `and` is finish_delivered's store");
    assert!(c.finish_delivered(w));
    assert_eq!(c.word(), anded);
}
