//! The receiver queue: memory given back after a burst (breakit), and
//! the inline head (fastpath4).

use super::*;

#[test]
fn a_drained_burst_gives_its_queue_memory_back() {
    // One client's 500 threads queue at once, then are served (or time
    // out): the endpoint must not keep heap for 500 entries for ever (a
    // program cycling its threads through 4096 endpoints held tens of MiB
    // of kernel heap this way).
    let mut ep = live_ep();
    for t in 0..500 {
        assert_eq!(ep.call(caller(t), 0, true, take), Ok(CallStep::Queued));
    }
    for t in 0..500 {
        assert_eq!(
            ep.recv(rcv(9999, 0), true, |_| true),
            Ok(RecvStep::Got(caller(t)))
        );
    }
    assert!(
        ep.queue_capacity() <= QUEUE_KEEP * 2,
        "{}",
        ep.queue_capacity()
    );
    // Receivers that leave by timeout or kill.
    for t in 0..500 {
        assert_eq!(ep.recv(rcv(t, 0), true, |_| true), Ok(RecvStep::Queued));
    }
    for t in 0..500 {
        assert!(ep.remove(&t));
    }
    assert!(
        ep.queue_capacity() <= QUEUE_KEEP * 2,
        "{}",
        ep.queue_capacity()
    );
    // Receivers served by calls.
    for t in 0..500 {
        assert_eq!(ep.recv(rcv(t, 0), true, |_| true), Ok(RecvStep::Queued));
    }
    for t in 0..500 {
        assert_eq!(
            ep.call(caller(1000 + t), 0, true, take),
            Ok(CallStep::Deliver(rcv(t, 0)))
        );
    }
    assert!(
        ep.queue_capacity() <= QUEUE_KEEP * 2,
        "{}",
        ep.queue_capacity()
    );
    // Receivers taken by the fast path's call.
    for t in 0..500 {
        assert_eq!(ep.recv(rcv(t, 0), true, |_| true), Ok(RecvStep::Queued));
    }
    for t in 0..500 {
        assert_eq!(ep.take_front_receiver(0, |_| true), Some(rcv(t, 0)));
    }
    assert!(
        ep.queue_capacity() <= QUEUE_KEEP * 2,
        "{}",
        ep.queue_capacity()
    );
    // A steady state below the bound keeps its memory (no allocation).
    let cap = {
        for t in 0..QUEUE_KEEP as u32 {
            assert_eq!(ep.recv(rcv(t, 0), true, |_| true), Ok(RecvStep::Queued));
        }
        ep.queue_capacity()
    };
    for t in 0..QUEUE_KEEP as u32 {
        assert!(ep.remove(&t));
    }
    assert_eq!(ep.queue_capacity(), cap);

    let mut n = Notification::<u32>::new();
    for t in 0..500 {
        assert_eq!(n.wait(t, true), Ok(WaitStep::Queued));
    }
    for t in 0..499 {
        assert!(n.remove(&t));
    }
    assert!(matches!(n.signal(1, |_| true), SignalStep::Wake { .. }));
    assert!(
        n.waiters_capacity() <= QUEUE_KEEP,
        "{}",
        n.waiters_capacity()
    );
}

// ---- fastpath4: the receiver queue's inline head ----

fn order(ep: &Ep) -> Vec<u32> {
    ep.receivers().map(|r| r.thread).collect()
}

#[test]
fn receivers_stay_in_order_through_the_inline_head() {
    let mut ep = live_ep();
    for t in 1..=4 {
        assert!(ep.queue_receiver_if_idle(rcv(t, 0)));
    }
    assert_eq!(order(&ep), [1, 2, 3, 4]);
    // The front is taken: the next one becomes the front (and is taken
    // next by the fast call).
    assert_eq!(ep.take_front_receiver(0, |_| true), Some(rcv(1, 0)));
    assert_eq!(ep.take_front_receiver(0, |_| true), Some(rcv(2, 0)));
    assert!(ep.queue_receiver_if_idle(rcv(5, 0)));
    assert_eq!(order(&ep), [3, 4, 5]);
    // Removing the front (a kill) and one behind it.
    assert!(ep.remove(&3));
    assert!(ep.remove(&5));
    assert_eq!(order(&ep), [4]);
    assert!(ep.remove(&4));
    assert_eq!(order(&ep), Vec::<u32>::new());
    assert!(ep.queue_receiver_if_idle(rcv(6, 0)));
    assert_eq!(ep.take_front_receiver(0, |_| true), Some(rcv(6, 0)));
    assert_eq!(ep.take_front_receiver(0, |_| true), None);
}

#[test]
fn a_dying_endpoint_drains_every_receiver_in_order_and_retain_sees_each_once() {
    let mut ep = live_ep();
    for t in 1..=4 {
        assert_eq!(ep.recv(rcv(t, t), true, |_| true), Ok(RecvStep::Queued));
    }
    let Drained { mut receivers, .. } = ep.drop_receive_ref().unwrap();
    let mut seen = Vec::new();
    // The front and one behind it lose their claims.
    receivers.retain(|r| {
        seen.push(r.thread);
        r.thread % 2 == 0
    });
    assert_eq!(seen, [1, 2, 3, 4]);
    assert_eq!(receivers.len(), 2);
    assert_eq!(receivers.front(), Some(&rcv(2, 2)));
    // A front that keeps its claim stays the front.
    receivers.retain(|r| r.thread != 4);
    assert_eq!(receivers.front(), Some(&rcv(2, 2)));
    assert!(
        !ep.queue_receiver_if_idle(rcv(9, 0)),
        "a dead endpoint queues nobody"
    );
    let left: Vec<u32> = receivers.into_iter().map(|r| r.thread).collect();
    assert_eq!(left, [2]);
    assert_eq!(ep.receivers().count(), 0);
}

#[test]
fn a_call_takes_the_receiver_on_its_cpu_behind_the_head() {
    let mut ep = live_ep();
    assert!(ep.queue_receiver_if_idle(rcv(1, 0)));
    assert!(ep.queue_receiver_if_idle(rcv(2, 1)));
    assert!(ep.queue_receiver_if_idle(rcv(3, 1)));
    assert_eq!(ep.peek_receiver(1), Some(&rcv(2, 1)));
    assert_eq!(
        ep.call(caller(9), 1, true, take),
        Ok(CallStep::Deliver(rcv(2, 1)))
    );
    assert_eq!(order(&ep), [1, 3]);
    // A receiver elsewhere at the front is not the fast path's.
    assert_eq!(ep.take_front_receiver(1, |_| true), None);
    assert_eq!(order(&ep), [1, 3]);
}
