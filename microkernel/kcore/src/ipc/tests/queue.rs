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

/// break22: every way a receiver leaves the queue, mixed at random with
/// bursts far above [`QUEUE_KEEP`]: whenever the queues are down to at
/// most one entry each (so each heap part is empty), their memory is back
/// to the bound. The fast call's `pop_front_trim` trims only when it takes
/// the heap part's last entry, so it relies on every other removal having
/// trimmed when *it* emptied the heap part: this checks that premise, not
/// only the fast call's own trim (seen failing with the trim in
/// `pop_front_trim`, the one in `take_receiver` or the one in
/// `Endpoint::remove` removed).
#[test]
fn every_removal_mix_gives_a_burst_back() {
    let mut ep = live_ep();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut queued: Vec<u32> = Vec::new();
    let mut id = 0u32;
    let (mut peak, mut drained) = (0, 0);
    for step in 0..60_000 {
        let r = next();
        match r % 16 {
            // A burst of receivers (some on another CPU).
            0 if (r >> 40) % 16 == 0 => {
                for _ in 0..(r >> 8) % 40 {
                    id += 1;
                    let cpu = ((r >> 20) % 2) as u32;
                    if ep.queue_receiver_if_idle(rcv(id, cpu)) {
                        queued.push(id);
                    }
                }
            }
            // The fast call's take (front receiver, CPU 0 only).
            1..=5 => {
                if let Some(x) = ep.take_front_receiver(0, |_| true) {
                    queued.retain(|t| *t != x.thread);
                }
            }
            // A slow call (prefers a receiver on its CPU, else the front).
            6 | 7 => {
                id += 1;
                let cpu = ((r >> 8) % 2) as u32;
                if let Ok(CallStep::Deliver(x)) = ep.call(caller(id), cpu, false, take) {
                    queued.retain(|t| *t != x.thread);
                }
            }
            // A timeout or kill anywhere in the queue.
            8..=11 if !queued.is_empty() => {
                let t = queued.remove((r >> 8) as usize % queued.len());
                assert!(ep.remove(&t));
            }
            // A slow receive (queues; there are no callers).
            12 | 13 => {
                id += 1;
                if let Ok(RecvStep::Queued) = ep.recv(rcv(id, 0), true, |_| true) {
                    queued.push(id);
                }
            }
            _ => {}
        }
        peak = peak.max(queued.len());
        assert_eq!(ep.callers().count(), 0);
        assert_eq!(ep.receivers().count(), queued.len(), "step {step}");
        if queued.len() <= 1 {
            if peak > QUEUE_KEEP * 2 {
                drained += 1;
            }
            peak = queued.len();
            assert!(
                ep.queue_capacity() <= QUEUE_KEEP * 2,
                "step {step}: {} entries of room for {} receivers",
                ep.queue_capacity(),
                queued.len()
            );
        }
    }
    assert!(
        drained > 50,
        "only {drained} bursts drained (peak {peak}, {} queued)",
        queued.len()
    );
}
