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
