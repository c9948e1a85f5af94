//! Notifications: bits accumulate, wake the first waiter, end a bound
//! endpoint receive.

use super::*;

type Ntf = Notification<u32>;

#[test]
fn signal_before_wait_is_returned_by_the_wait_and_cleared() {
    let mut n = Ntf::new();
    assert_eq!(n.signal(0b101, |_| true), SignalStep::Pending);
    assert_eq!(n.wait(1, true), Ok(WaitStep::Got(0b101)));
    assert_eq!(n.pending(), 0);
    assert_eq!(n.wait(1, false), Err(IpcError::WouldBlock));
}

#[test]
fn take_pending_is_a_wait_that_gets_bits_at_once_and_nothing_else() {
    let mut n = Ntf::new();
    assert_eq!(n.take_pending(), None, "nothing pending");
    assert_eq!(n.wait(7, true), Ok(WaitStep::Queued));
    assert_eq!(n.take_pending(), None, "a waiter is no bits");
    // The waiter takes the signal; nothing is left pending.
    assert!(matches!(
        n.signal(2, |_| true),
        SignalStep::Wake {
            thread: 7,
            bits: 2,
            ..
        }
    ));
    assert_eq!(n.take_pending(), None);
    n.signal(1, |_| true);
    n.signal(8, |_| true);
    assert_eq!(n.take_pending(), Some(9), "accumulated bits, taken");
    assert_eq!(n.pending(), 0, "and cleared");
    assert_eq!(n.wait(1, false), Err(IpcError::WouldBlock));
}

#[test]
fn bits_accumulate_between_waits() {
    let mut n = Ntf::new();
    n.signal(1, |_| true);
    n.signal(4, |_| true);
    n.signal(1, |_| true);
    assert_eq!(n.wait(1, true), Ok(WaitStep::Got(5)));
}

#[test]
fn signal_while_waiting_wakes_the_first_waiter_with_the_bits() {
    let mut n = Ntf::new();
    assert_eq!(n.wait(1, true), Ok(WaitStep::Queued));
    assert_eq!(n.wait(2, true), Ok(WaitStep::Queued));
    assert_eq!(
        n.signal(8, |_| true),
        SignalStep::Wake {
            thread: 1,
            bits: 8,
            bound: false
        }
    );
    assert_eq!(n.pending(), 0);
    // A waiter whose wait already ended is skipped; the bits stay pending.
    assert_eq!(n.signal(2, |_| false), SignalStep::Pending);
    assert_eq!(n.pending(), 2);
    assert_eq!(n.waiters().count(), 0);
}

#[test]
fn signalling_nothing_wakes_nobody() {
    let mut n = Ntf::new();
    n.wait(1, true).unwrap();
    assert_eq!(
        n.signal(0, |_| panic!("no claim for zero bits")),
        SignalStep::Pending
    );
    assert_eq!(n.waiters().count(), 1);
}

#[test]
fn a_bound_notification_ends_its_threads_endpoint_receive() {
    let mut n = Ntf::new();
    n.bind(5).unwrap();
    assert_eq!(n.bind(6), Err(IpcError::AlreadyBound));
    assert_eq!(n.bound_recv_begin(&6), Err(IpcError::NotBound));
    // Nothing pending: the receive is registered.
    assert_eq!(n.bound_recv_begin(&5), Ok(None));
    assert_eq!(
        n.signal(3, |_| true),
        SignalStep::Wake {
            thread: 5,
            bits: 3,
            bound: true
        }
    );
    assert!(!n.bound_waiting());
    // Pending before the receive: returned at once.
    n.signal(4, |_| true);
    assert_eq!(n.bound_recv_begin(&5), Ok(Some(4)));
    // A message ended the receive first: the registration is removed.
    assert_eq!(n.bound_recv_begin(&5), Ok(None));
    assert!(n.remove(&5));
    assert_eq!(n.signal(1, |_| true), SignalStep::Pending);
    assert!(n.unbind(&5));
    assert_eq!(n.bound(), None);
}

#[test]
fn plain_waiters_come_before_the_bound_receive() {
    let mut n = Ntf::new();
    n.bind(5).unwrap();
    n.bound_recv_begin(&5).unwrap();
    n.wait(1, true).unwrap();
    assert_eq!(
        n.signal(1, |_| true),
        SignalStep::Wake {
            thread: 1,
            bits: 1,
            bound: false
        }
    );
    assert_eq!(
        n.signal(2, |_| true),
        SignalStep::Wake {
            thread: 5,
            bits: 2,
            bound: true
        }
    );
}

#[test]
fn a_dying_notification_hands_back_its_waiters() {
    let mut n = Ntf::new();
    n.wait(1, true).unwrap();
    n.wait(2, true).unwrap();
    assert_eq!(
        n.drain().into_iter().collect::<alloc::vec::Vec<_>>(),
        [1, 2]
    );
}
