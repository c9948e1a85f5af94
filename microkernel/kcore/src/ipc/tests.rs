//! Example tests of the IPC rules (issue 10: peer death, cancel, timeouts,
//! several receivers, notifications, the message format).

use super::*;
use crate::handles::{Handle, TransferMode};

type Ep = Endpoint<u32>;

fn live_ep() -> Ep {
    let mut ep = Ep::new();
    ep.add_receive_ref();
    ep
}

fn take<T>(_: &T) -> Pick {
    Pick::Take
}

fn caller(t: u32) -> Caller<u32> {
    Caller {
        thread: t,
        badge: 100 + t as u64,
    }
}

fn rcv(t: u32, cpu: u32) -> Receiver<u32> {
    Receiver { thread: t, cpu }
}

// ---- endpoint ----

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

// ---- reply capability ----

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

// ---- wake claim ----

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

// ---- notifications ----

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

// ---- message format ----

#[test]
fn message_info_round_trips() {
    let i = MsgInfo::new(0xdead_beef, 3, 0b101, MAX_BUFFER).with_timeout();
    let j = MsgInfo::from_user(i.raw()).unwrap();
    assert_eq!(
        (j.label(), j.handles(), j.copy_mask(), j.buffer_len()),
        (0xdead_beef, 3, 0b101, MAX_BUFFER)
    );
    assert!(j.has_timeout());
    assert!(!j.is_register_only());
    assert!(MsgInfo::from_user(7).unwrap().is_register_only());
}

#[test]
fn malformed_message_info_is_refused() {
    assert_eq!(
        MsgInfo::from_user(5 << 32),
        Err(MsgError::Malformed),
        "five handles"
    );
    assert_eq!(
        MsgInfo::from_user(1 << 32 | 0b10 << 35),
        Err(MsgError::Malformed),
        "copy bit past count"
    );
    assert_eq!(
        MsgInfo::from_user(MsgInfo::NOTIFIED),
        Err(MsgError::Malformed),
        "output-only bit"
    );
    assert_eq!(
        MsgInfo::from_user(1 << 63),
        Err(MsgError::Malformed),
        "reserved bit"
    );
    assert_eq!(
        MsgInfo::from_user(((MAX_BUFFER as u64) + 1) << 40),
        Err(MsgError::BufferTooLarge)
    );
}

#[test]
fn handle_numbers_travel_in_rbx_and_rbp() {
    let hs = [
        Handle::from_raw(0x401),
        Handle::from_raw(0x802),
        Handle::from_raw(0xc03),
    ];
    let (rbx, rbp) = msg::pack_handles(&hs);
    let info = MsgInfo::from_user(MsgInfo::new(1, 3, 0b010, 0).raw()).unwrap();
    let t = info.transfers(rbx, rbp);
    assert_eq!(
        &t[..],
        &[
            (hs[0], TransferMode::Move),
            (hs[1], TransferMode::Copy),
            (hs[2], TransferMode::Move)
        ]
    );
    assert_eq!(rbp >> 32, 0, "unused slots are 0");
}

#[test]
fn receive_spec_checks_capacity_and_decodes_the_timeout() {
    let plain = MsgInfo::new(0, 0, 0, 0);
    let timed = plain.with_timeout();
    let r = RecvSpec::from_user(5000 | 250 << 32, timed).unwrap();
    assert_eq!(
        r,
        RecvSpec {
            capacity: 5000,
            timeout_us: Some(250)
        }
    );
    assert_eq!(RecvSpec::from_user(r.to_reg(), timed), Ok(r));
    assert_eq!(
        RecvSpec::from_user(5000 | 250 << 32, plain)
            .unwrap()
            .timeout_us,
        None
    );
    assert_eq!(
        RecvSpec::from_user(MAX_BUFFER as u64 + 1, plain),
        Err(MsgError::BufferTooLarge)
    );
    assert_eq!(r.accepts(5000), Ok(()));
    assert_eq!(r.accepts(5001), Err(MsgError::DoesNotFit));
}

// ---- fast path ----

#[test]
fn the_fast_path_takes_only_register_only_calls_to_a_receiver_on_the_same_cpu() {
    let regs = MsgInfo::new(1, 0, 0, 0);
    let here = rcv(1, 2);
    let there = rcv(1, 3);
    assert!(fastpath_eligible(regs, 2, Some(&here)));
    assert!(
        !fastpath_eligible(regs, 2, Some(&there)),
        "cross-CPU needs an IPI"
    );
    assert!(
        !fastpath_eligible::<u32>(regs, 2, None),
        "no receiver waiting"
    );
    assert!(!fastpath_eligible(regs.with_timeout(), 2, Some(&here)));
    assert!(
        !fastpath_eligible(MsgInfo::new(1, 1, 0, 0), 2, Some(&here)),
        "handles"
    );
    assert!(
        !fastpath_eligible(MsgInfo::new(1, 0, 0, 8), 2, Some(&here)),
        "buffer"
    );
}

#[test]
fn reply_recv_takes_the_fast_path_only_back_to_a_same_cpu_caller_with_no_one_queued() {
    let regs = MsgInfo::new(1, 0, 0, 0);
    assert!(reply_recv_fastpath_eligible(regs, 1, Some(1), false));
    assert!(!reply_recv_fastpath_eligible(regs, 1, Some(0), false));
    assert!(
        !reply_recv_fastpath_eligible(regs, 1, None, false),
        "caller gone"
    );
    assert!(
        !reply_recv_fastpath_eligible(regs, 1, Some(1), true),
        "next call waits"
    );
    assert!(!reply_recv_fastpath_eligible(
        MsgInfo::new(1, 0, 0, 1),
        1,
        Some(1),
        false
    ));
}

#[test]
fn ipc_errors_map_onto_abi_codes() {
    assert_eq!(abi::Error::from(IpcError::PeerDied), abi::Error::PeerDied);
    assert_eq!(
        abi::Error::from(IpcError::NotDelivered),
        abi::Error::NotDelivered
    );
    assert_eq!(
        abi::Error::from(IpcError::WouldBlock),
        abi::Error::WouldBlock
    );
    assert_eq!(
        abi::Error::from(MsgError::DoesNotFit),
        abi::Error::InvalidArgument
    );
}

// ---- any register value ----

use proptest::strategy::Strategy as _;

proptest::proptest! {
    /// Whatever user space puts in the registers, decoding either refuses it
    /// or yields a message within the limits; it never panics.
    #[test]
    fn any_register_values_decode_within_limits_or_are_refused(
        rsi in proptest::prop_oneof![
            proptest::prelude::any::<u64>(),
            // Mostly well-formed words, every field pushed past its limit.
            (
                proptest::prelude::any::<u32>(),
                0u64..8,
                0u64..16,
                proptest::prelude::any::<bool>(),
                0u64..(1 << 17),
                proptest::prop_oneof![4 => proptest::strategy::Just(0u64), 1 => 0u64..128],
            )
                .prop_map(|(label, n, copy, t, len, top)| {
                    label as u64 | n << 32 | copy << 35 | (t as u64) << 39 | len << 40 | top << 57
                }),
        ],
        r15 in proptest::prelude::any::<u64>(),
        rbx in proptest::prelude::any::<u64>(),
        rbp in proptest::prelude::any::<u64>(),
        rdi in proptest::prelude::any::<u64>(),
    ) {
        if let Ok(info) = MsgInfo::from_user(rsi) {
            proptest::prop_assert!(info.handles() <= crate::handles::MAX_TRANSFER);
            proptest::prop_assert!(info.buffer_len() <= MAX_BUFFER);
            proptest::prop_assert_eq!(info.copy_mask() >> info.handles(), 0);
            proptest::prop_assert_eq!(info.transfers(rbx, rbp).len(), info.handles());
            proptest::prop_assert_eq!(MsgInfo::from_user(info.raw()), Ok(info));
            if let Ok(spec) = RecvSpec::from_user(r15, info) {
                proptest::prop_assert!(spec.capacity <= MAX_BUFFER);
                let _ = spec.accepts(info.buffer_len());
            }
        }
        let _ = crate::handles::Handle::from_reg(rdi);
    }
}

// ---- review (breakit): queue memory after a burst ----

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
