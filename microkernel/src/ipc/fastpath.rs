//! The fast path's hand-off (DESIGN 7, issue 10 item 4), partial.
//!
//! What is done: a register-only `call` that finds a receiver waiting on
//! the caller's own CPU, and a register-only `reply_recv` whose caller last
//! ran on this CPU, make the partner Ready *without queueing it* and switch
//! straight to it when the current thread blocks ([`sched::switch_direct`]:
//! no run-queue push, pop or pick; address space and FPU switched as every
//! switch does). Everything else — buffers, handles, timeouts, a partner on
//! another CPU (woken by IPI) — wakes the partner through the run queue.
//! The "work pending" test is the one on the syscall return path.
//!
//! What is not done: the seL4-style path that skips the slow path's
//! bookkeeping (locks, claim, wait record) and returns to the partner's
//! user code directly; the hand-off still runs both threads' kernel-side
//! IPC code.
//!
//! [`sched::switch_direct`]: crate::sched::switch_direct

use crate::object::thread::Thread;
use crate::sched;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;

/// A thread made Ready by us and not queued: the current thread switches to
/// it when it blocks; if it never does, the drop queues it (a Ready thread
/// must never be left out of every run queue).
#[derive(Default)]
pub struct Handoff(Option<Arc<Thread>>);

impl Handoff {
    /// None.
    pub const fn none() -> Self {
        Handoff(None)
    }

    /// `t` has its outcome: hand it off if it last ran on this CPU and we
    /// win its Blocked -> Ready exchange; else wake it as usual.
    pub fn or_wake(t: Arc<Thread>) -> Handoff {
        let here = t.sched.last_cpu.load(Ordering::Relaxed) == crate::arch::percpu::cpu_id().get();
        if here && t.try_unblock() {
            Handoff(Some(t))
        } else {
            sched::wake(&t);
            Handoff(None)
        }
    }

    /// The thread, for the switch.
    pub fn take(&mut self) -> Option<Arc<Thread>> {
        self.0.take()
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            sched::enqueue(t);
        }
    }
}
