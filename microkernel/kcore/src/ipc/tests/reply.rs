//! The reply capability: a reply reaches its caller once, or fails
//! cleanly when either side is gone.

use super::*;

#[test]
fn a_reply_reaches_the_caller_once() {
    let mut cap = ReplyCap::new();
    assert_eq!(cap.accept(7), None);
    assert_eq!(cap.take(), Ok(7));
    assert_eq!(cap.take(), Err(IpcError::NoCaller));
}

#[test]
fn a_caller_that_died_makes_the_later_reply_fail_cleanly() {
    let mut cap = ReplyCap::new();
    cap.accept(7);
    assert!(!cap.caller_gone(&8), "another thread's death is not ours");
    assert!(cap.caller_gone(&7));
    assert_eq!(cap.take(), Err(IpcError::PeerDied));
    // Reported once; the server goes on.
    assert_eq!(cap.take(), Err(IpcError::NoCaller));
    assert_eq!(cap.accept(9), None);
    assert_eq!(cap.take(), Ok(9));
}

#[test]
fn a_server_that_dies_hands_back_its_caller() {
    let mut cap = ReplyCap::new();
    cap.accept(7);
    assert_eq!(cap.server_gone(), Some(7));
    assert_eq!(cap.server_gone(), None);
}

#[test]
fn a_call_whose_caller_timed_out_while_taken_gets_a_failing_reply() {
    let mut cap = ReplyCap::<u32>::new();
    assert_eq!(cap.accept_gone(), None);
    assert_eq!(cap.take(), Err(IpcError::PeerDied));
}

#[test]
fn receiving_again_without_replying_abandons_the_old_caller() {
    let mut cap = ReplyCap::new();
    cap.accept(7);
    assert_eq!(cap.accept(8), Some(7));
    assert_eq!(cap.take(), Ok(8));
}

/// proto3's atomic word (`ReplyWord`), sequentially: the same answers as
/// the state machine above, case by case.
mod word {
    use super::super::{Held, ReplyWord, Ticket, WaitClaim};
    use super::IpcError;

    fn ticket() -> Ticket {
        WaitClaim::<core::sync::atomic::AtomicU64>::new().begin()
    }

    #[test]
    fn a_reply_reaches_the_caller_once() {
        let (cap, tk) = (ReplyWord::<core::sync::atomic::AtomicU64>::new(), ticket());
        assert_eq!(cap.accept(8, tk, |_, _| true), None);
        assert_eq!(cap.caller(), Some(8));
        assert_eq!(cap.take(|c, t| c == 8 && t == tk), Ok(Some((8, tk))));
        assert_eq!(cap.take(|_, _| true), Err(IpcError::NoCaller));
    }

    #[test]
    fn a_caller_whose_claim_was_lost_is_not_answered() {
        let (cap, tk) = (ReplyWord::<core::sync::atomic::AtomicU64>::new(), ticket());
        cap.accept(8, tk, |_, _| true);
        assert_eq!(cap.take(|_, _| false), Ok(None));
        assert_eq!(cap.caller(), None);
    }

    #[test]
    fn a_caller_that_died_makes_the_later_reply_fail_cleanly() {
        let (cap, tk) = (ReplyWord::<core::sync::atomic::AtomicU64>::new(), ticket());
        cap.accept(8, tk, |_, _| true);
        assert!(!cap.caller_gone(16), "another thread's death is not ours");
        assert!(cap.caller_gone(8));
        assert_eq!(cap.take(|_, _| true), Err(IpcError::PeerDied));
        assert_eq!(cap.take(|_, _| true), Err(IpcError::NoCaller));
        assert_eq!(cap.accept(24, tk, |_, _| true), None);
        assert_eq!(cap.take(|_, _| true), Ok(Some((24, tk))));
    }

    #[test]
    fn receiving_again_without_replying_abandons_the_old_caller() {
        let (cap, tk) = (ReplyWord::<core::sync::atomic::AtomicU64>::new(), ticket());
        cap.accept(8, tk, |_, _| true);
        assert_eq!(cap.accept(16, tk, |c, _| c == 8), Some((8, tk)));
        assert_eq!(cap.accept(24, tk, |_, _| false), None, "its claim lost");
        assert_eq!(cap.caller(), Some(24));
        assert_eq!(cap.accept_gone(|_, _| true), Some((24, tk)));
        assert_eq!(cap.take(|_, _| true), Err(IpcError::PeerDied));
    }

    #[test]
    fn a_peek_changes_nothing_and_a_named_caller_can_go() {
        let (cap, tk) = (ReplyWord::<core::sync::atomic::AtomicU64>::new(), ticket());
        assert_eq!(cap.peek(), Held::Empty);
        assert_eq!(cap.accept(8, tk, |_, _| unreachable!()), None);
        assert!(!cap.caller_gone(16));
        assert_eq!(cap.peek(), Held::Caller(8, tk));
        assert_eq!(cap.peek(), Held::Caller(8, tk));
        cap.named_caller_gone();
        assert_eq!(cap.peek(), Held::Gone);
        assert_eq!(cap.take(|_, _| true), Err(IpcError::PeerDied));
        assert_eq!(cap.peek(), Held::Empty);
    }
}
