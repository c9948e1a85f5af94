//! Example tests of the IPC rules (issue 10: peer death, cancel, timeouts,
//! several receivers, notifications, the message format), one file a
//! subject; the helpers every file uses are here.

use super::*;

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

mod claim;
mod endpoint;
mod fastpath;
mod message;
mod notification;
mod queue;
mod reply;
mod replyword;
