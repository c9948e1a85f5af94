//! The IPC hand-off ([`Handoff`]): a partner made Ready by the current
//! thread and not queued, switched to when the current thread blocks.
//! Split from `ipc/fastpath.rs` (its size) when it became uncounted
//! (cut27r).

use crate::object::thread::Thread;
use crate::sched;
use alloc::sync::Arc;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;

/// A thread made Ready by us and not queued: the current thread switches to
/// it when it blocks; if it never does, the drop queues it (a Ready thread
/// must never be left out of every run queue).
///
/// Uncounted (cut27r): the thread is Ready by our exchange and in no queue,
/// so nobody else may run it and it cannot exit; its life reference
/// (`sched` module invariants) keeps it, and it becomes PerCpu's current
/// thread as it is. Neither the fast `call` nor the fast `reply_recv`
/// takes a reference to its partner (a locked increment a side), and the
/// resume drops none for the thread switched away from (a locked
/// decrement a side).
#[derive(Default)]
pub struct Handoff(Option<NonNull<Thread>>);

impl Handoff {
    /// None.
    pub const fn none() -> Self {
        Handoff(None)
    }

    /// `t` has its outcome: hand it off if it last ran on this CPU and we
    /// win its Blocked -> Ready exchange; else wake it as usual (the slow
    /// paths' form: their reference is dropped here).
    #[inline(always)]
    pub fn or_wake(t: Arc<Thread>) -> Handoff {
        // SAFETY: counted: alive.
        unsafe { Handoff::or_wake_ref(&t) }
    }

    /// [`or_wake`](Self::or_wake) for a thread named without a count.
    ///
    /// # Safety
    /// `t`'s memory is valid: the caller won the claim of its wait and
    /// runs with interrupts off since (`sched::wake_ref`: once its outcome
    /// is out, a killed `t` may run elsewhere and exit; its memory then
    /// waits a grace period, and a dead `t` is not Blocked, so the
    /// exchange fails and nothing else touches it).
    #[inline(always)]
    pub unsafe fn or_wake_ref(t: &Thread) -> Handoff {
        // `cpu_index`, one `gs:` load: IPC runs only after this CPU's
        // per-CPU setup (`cpu_id`'s early-boot test cost 3 a side, ipccut).
        let here =
            t.sched.last_cpu.load(Ordering::Relaxed) as usize == crate::arch::percpu::cpu_index();
        if here && t.try_unblock() {
            Handoff(Some(NonNull::from(t)))
        } else {
            // SAFETY: the contract.
            unsafe { sched::wake_ref(t) };
            Handoff(None)
        }
    }

    /// [`or_wake`](Self::or_wake) for a receiver `t` that the fast `call`
    /// took off an endpoint queue where it waits *on this CPU* (its
    /// `Receiver::cpu`, tested): its `last_cpu` is not compared (-5 a round
    /// trip, proto2). A receiver queues itself with the CPU it runs on and
    /// then blocks there with interrupts off (no migration in between), so
    /// the two differ only after a wake-up without a result (a kill, or a
    /// stale timer wake-up: `sched::sleep::wake_sleepers` wakes entries
    /// after dropping its list lock; a suspension does not wake an IPC
    /// wait, break24p) let another CPU run it and it blocked again in the same
    /// wait; it is then handed off here rather than woken there, a choice
    /// of CPU only: its set allowed this CPU when it entered the wait here
    /// and cannot have changed within it (sched3: the switch no longer
    /// tests the set, `sched::direct_or_block`; ring-3 case
    /// `break25s_slow_handoffs_with_suspends_and_timeouts_stay_on_pinned_cpus`),
    /// and the switch still refuses a thread being switched away from
    /// (it queues it instead), as for any hand-off.
    ///
    /// # Safety
    /// As for [`or_wake_ref`](Self::or_wake_ref).
    #[inline(always)]
    pub unsafe fn queued_here(t: &Thread) -> Handoff {
        if t.try_unblock() {
            Handoff(Some(NonNull::from(t)))
        } else {
            // SAFETY: the contract.
            unsafe { sched::wake_ref(t) };
            Handoff(None)
        }
    }

    /// The thread, for the switch (`sched::switch_direct`'s contract: Ready,
    /// ours, kept by its life reference until it runs; so `'static` for
    /// the switch, which is its one use).
    pub fn take(&mut self) -> Option<&'static Thread> {
        // SAFETY: as just said.
        self.0.take().map(|t| unsafe { &*t.as_ptr() })
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        if let Some(t) = self.take() {
            // The queue's entry gets a reference of its own.
            // SAFETY: alive (`take`).
            sched::enqueue(unsafe {
                Arc::increment_strong_count(t);
                Arc::from_raw(t)
            });
        }
    }
}
