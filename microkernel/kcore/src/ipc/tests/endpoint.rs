//! The endpoint: calls meet receivers, queued callers in order, a
//! receiver on the caller's CPU first, and what no receiver can take.

use super::*;

#[test]
fn a_call_goes_to_a_waiting_receiver_and_a_recv_takes_a_queued_caller() {
    let mut ep = live_ep();
    assert_eq!(ep.recv(rcv(1, 0), true, |_| true), Ok(RecvStep::Queued));
    assert_eq!(
        ep.call(caller(2), 0, true, take),
        Ok(CallStep::Deliver(rcv(1, 0)))
    );
    assert_eq!(ep.call(caller(3), 0, true, take), Ok(CallStep::Queued));
    assert_eq!(
        ep.recv(rcv(1, 0), true, |_| true),
        Ok(RecvStep::Got(caller(3)))
    );
    assert_eq!(ep.callers().count() + ep.receivers().count(), 0);
}

#[test]
fn the_fast_call_takes_only_a_front_receiver_on_its_cpu_whose_claim_wins() {
    let mut ep = live_ep();
    assert_eq!(ep.take_front_receiver(0, |_| true), None, "nobody waits");
    assert_eq!(ep.recv(rcv(1, 1), true, |_| true), Ok(RecvStep::Queued));
    assert_eq!(ep.recv(rcv(2, 0), true, |_| true), Ok(RecvStep::Queued));
    // The front waits on CPU 1: a call from CPU 0 is the slow path's.
    assert_eq!(ep.take_front_receiver(0, |_| panic!("not claimed")), None);
    // A lost claim changes nothing.
    assert_eq!(ep.take_front_receiver(1, |_| false), None);
    assert_eq!(ep.receivers().count(), 2);
    assert_eq!(
        ep.take_front_receiver(1, |r| r.thread == 1),
        Some(rcv(1, 1))
    );
    assert_eq!(ep.take_front_receiver(0, |_| true), Some(rcv(2, 0)));
    assert_eq!(ep.receivers().count(), 0);
}

#[test]
fn the_fast_receive_queues_only_on_an_idle_live_endpoint() {
    let mut ep = live_ep();
    assert_eq!(ep.call(caller(3), 0, true, take), Ok(CallStep::Queued));
    assert!(!ep.queue_receiver_if_idle(rcv(1, 0)), "a caller waits");
    assert_eq!(ep.receivers().count(), 0);
    assert_eq!(
        ep.recv(rcv(1, 0), true, |_| true),
        Ok(RecvStep::Got(caller(3)))
    );
    assert!(ep.queue_receiver_if_idle(rcv(1, 0)));
    assert_eq!(
        ep.call(caller(4), 0, true, take),
        Ok(CallStep::Deliver(rcv(1, 0)))
    );
    let mut dead = Ep::new();
    assert!(!dead.queue_receiver_if_idle(rcv(1, 0)), "a dead endpoint");
    assert_eq!(dead.receivers().count(), 0);
}

#[test]
fn queued_callers_are_served_in_order_with_their_badges() {
    let mut ep = live_ep();
    for t in 1..=4 {
        assert_eq!(ep.call(caller(t), 0, true, take), Ok(CallStep::Queued));
    }
    for t in 1..=4 {
        assert_eq!(
            ep.recv(rcv(9, 0), true, |_| true),
            Ok(RecvStep::Got(caller(t)))
        );
    }
}

#[test]
fn a_call_prefers_an_idle_receiver_on_its_own_cpu() {
    let mut ep = live_ep();
    for (t, cpu) in [(1, 0), (2, 1), (3, 2), (4, 1)] {
        ep.recv(rcv(t, cpu), true, |_| true).unwrap();
    }
    assert_eq!(
        ep.call(caller(10), 1, true, take),
        Ok(CallStep::Deliver(rcv(2, 1)))
    );
    assert_eq!(
        ep.call(caller(11), 1, true, take),
        Ok(CallStep::Deliver(rcv(4, 1)))
    );
    // No receiver left on CPU 1: the longest-waiting one elsewhere.
    assert_eq!(
        ep.call(caller(12), 1, true, take),
        Ok(CallStep::Deliver(rcv(1, 0)))
    );
    assert_eq!(ep.peek_receiver(2), Some(&rcv(3, 2)));
}

#[test]
fn calling_an_endpoint_without_receiver_handles_fails_not_delivered() {
    let mut ep = Ep::new();
    assert_eq!(
        ep.call(caller(1), 0, true, take),
        Err(IpcError::NotDelivered)
    );
    ep.add_receive_ref();
    ep.add_receive_ref();
    assert!(ep.drop_receive_ref().is_none());
    assert!(ep.is_alive());
    assert!(ep.drop_receive_ref().is_some());
    assert_eq!(
        ep.call(caller(1), 0, true, take),
        Err(IpcError::NotDelivered)
    );
    assert_eq!(
        ep.call(caller(1), 0, false, take),
        Err(IpcError::NotDelivered)
    );
    assert_eq!(ep.send(0, take), Err(IpcError::NotDelivered));
    // A receive on it (a stale RECV-less view cannot, but the state
    // machine still answers) is the server side: PeerDied.
    assert_eq!(ep.recv(rcv(2, 0), true, |_| true), Err(IpcError::PeerDied));
}

#[test]
fn closing_the_last_receiver_handle_hands_back_every_queued_caller() {
    let mut ep = live_ep();
    for t in 1..=3 {
        ep.call(caller(t), 0, true, take).unwrap();
    }
    let crate::ipc::Drained { callers, receivers } = ep.drop_receive_ref().unwrap();
    assert_eq!(
        callers
            .iter()
            .map(|c| c.thread)
            .collect::<alloc::vec::Vec<_>>(),
        [1, 2, 3]
    );
    assert!(receivers.is_empty());
    assert_eq!(ep.callers().count(), 0);
}

#[test]
fn send_never_blocks() {
    let mut ep = live_ep();
    assert_eq!(ep.send(0, take), Err(IpcError::WouldBlock));
    assert_eq!(ep.callers().count(), 0, "a failed send queues nothing");
    ep.recv(rcv(1, 3), true, |_| true).unwrap();
    assert_eq!(ep.send(0, take), Ok(rcv(1, 3)));
}

#[test]
fn non_blocking_call_and_recv_fail_with_would_block_and_queue_nothing() {
    let mut ep = live_ep();
    assert_eq!(
        ep.call(caller(1), 0, false, take),
        Err(IpcError::WouldBlock)
    );
    assert_eq!(
        ep.recv(rcv(2, 0), false, |_| true),
        Err(IpcError::WouldBlock)
    );
    assert_eq!(ep.callers().count() + ep.receivers().count(), 0);
}

#[test]
fn a_killed_or_timed_out_thread_leaves_its_queue() {
    let mut ep = live_ep();
    for t in 1..=3 {
        ep.call(caller(t), 0, true, take).unwrap();
    }
    assert!(ep.remove(&2));
    assert!(!ep.remove(&2), "removal is idempotent");
    assert_eq!(
        ep.recv(rcv(9, 0), true, |_| true),
        Ok(RecvStep::Got(caller(1)))
    );
    assert_eq!(
        ep.recv(rcv(9, 0), true, |_| true),
        Ok(RecvStep::Got(caller(3)))
    );
    ep.recv(rcv(9, 0), true, |_| true).unwrap();
    assert!(ep.remove(&9));
    assert_eq!(ep.receivers().count(), 0);
}

#[test]
fn a_partner_whose_wait_already_ended_is_skipped_not_delivered_to() {
    let mut ep = live_ep();
    ep.recv(rcv(1, 0), true, |_| true).unwrap();
    ep.recv(rcv(2, 0), true, |_| true).unwrap();
    // Receiver 1 was claimed by its timeout on another CPU (not yet removed).
    let got = ep.call(caller(5), 0, true, |r| {
        if r.thread == 1 {
            Pick::Skip
        } else {
            Pick::Take
        }
    });
    assert_eq!(got, Ok(CallStep::Deliver(rcv(2, 0))));
    assert!(!ep.remove(&1), "the skipped entry is gone already");
    // Same on the receive side.
    ep.call(caller(6), 0, true, take).unwrap();
    ep.call(caller(7), 0, true, take).unwrap();
    assert_eq!(
        ep.recv(rcv(3, 0), true, |c| c.thread != 6),
        Ok(RecvStep::Got(caller(7)))
    );
}

#[test]
fn a_refusing_receiver_stays_queued_and_the_caller_gets_the_error() {
    let mut ep = live_ep();
    ep.recv(rcv(1, 0), true, |_| true).unwrap();
    assert_eq!(
        ep.call(caller(5), 0, true, |_| Pick::Refuse),
        Err(IpcError::Refused)
    );
    assert_eq!(ep.receivers().count(), 1);
    assert_eq!(ep.callers().count(), 0);
}
