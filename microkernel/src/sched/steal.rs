//! Work stealing: an idle or blocking CPU takes a queued thread from a
//! busier one.

use super::{joined, taken, STEALABLE};
use crate::object::thread::Thread;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;

/// Takes a thread from a busier CPU that may run here.
pub(super) fn steal(me: usize) -> Option<Arc<Thread>> {
    // Nothing unpinned is queued anywhere: nothing here may run (a thread
    // pinned to this CPU is queued only here). A count read just before
    // another CPU queues one misses it for this scan only; the idle loop
    // and the tick look again (the hint's guarantee, as for `queued`).
    if STEALABLE.load(Ordering::Relaxed) == 0 {
        return None;
    }
    for (i, c) in joined() {
        if i == me || c.queued.load(Ordering::Relaxed) == 0 {
            continue;
        }
        let Some(mut rq) = c.rq.try_lock() else {
            continue;
        };
        let got = rq.steal(|t| {
            let a = t.sched.affinity.load(Ordering::Relaxed);
            a == u32::MAX || a as usize == me
        });
        if let Some(t) = &got {
            taken(t);
        }
        c.queued.store(rq.len(), Ordering::Relaxed);
        drop(rq);
        if got.is_some() {
            return got;
        }
    }
    None
}

/// Whether another CPU holds more than the thread it runs next that this
/// CPU could take (the idle loop's test before it schedules).
pub(super) fn any_stealable(me: usize) -> bool {
    // Relaxed: a hint (see STEALABLE); 0 means no other CPU holds a thread
    // this one could take.
    STEALABLE.load(Ordering::Relaxed) != 0
        && joined().any(|(i, c)| i != me && c.queued.load(Ordering::Relaxed) > 1)
}
