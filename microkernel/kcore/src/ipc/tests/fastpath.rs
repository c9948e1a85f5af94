//! What takes the fast path and what does not.

use super::*;

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
