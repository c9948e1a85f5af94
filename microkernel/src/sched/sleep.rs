//! The sleep list: threads blocked until a deadline, checked by the timer
//! interrupt (a scheduler wait queue; IPC timeouts will use it too).

use crate::arch::{apic, cpu};
use crate::object::thread::{Thread, ThreadState};
use crate::sched;
use crate::sync::IrqMutex;
use crate::time::now_ns;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

/// Threads sleeping until their `wake_at_ns`.
static SLEEPERS: IrqMutex<Vec<Arc<Thread>>> = IrqMutex::new(Vec::new());

/// Blocks the current thread for at least `ns` nanoseconds (less only if it
/// is being killed: the caller, `lifecycle::sleep_ns`, then ends it).
///
/// The list entry is the only allocation: `NoMemory` if the heap cannot hold it.
pub fn sleep_ns(ns: u64) -> Result<(), abi::Error> {
    let t = sched::current_arc();
    let deadline = now_ns().saturating_add(ns);
    t.sched.wake_at_ns.store(deadline, Ordering::SeqCst);
    {
        let mut s = SLEEPERS.lock();
        if s.try_reserve(1).is_err() {
            return Err(abi::Error::NoMemory);
        }
        t.set_state(ThreadState::Blocked);
        s.push(t.clone());
    }
    // This CPU's timer fires by the deadline (not at the next tick after it).
    apic::wake_me_by(cpu::rdtsc().saturating_add(apic::ns_to_tsc(ns)));
    // No poll: only a timer ends this wait (or a kill).
    sched::block_no_poll();
    if now_ns() < deadline {
        // Woken early (its process is ending): leave the list now rather than
        // letting it hold this thread until the deadline.
        let stale = {
            let mut s = SLEEPERS.lock();
            s.iter()
                .position(|x| Arc::ptr_eq(x, &t))
                .map(|i| s.swap_remove(i))
        };
        drop(stale);
    }
    drop(t);
    Ok(())
}

/// Puts the current thread `t` on the sleep list until `deadline` (an IPC
/// wait with a timeout; replaces an entry it already has) and marks it
/// Blocked under the list's lock, as [`sleep_ns`] does, so the timer cannot
/// drop the entry as "not blocked" before the thread blocks.
pub fn arm_wakeup(t: &Arc<Thread>, deadline: u64) -> Result<(), abi::Error> {
    t.sched.wake_at_ns.store(deadline, Ordering::SeqCst);
    {
        let mut s = SLEEPERS.lock();
        if !s.iter().any(|x| Arc::ptr_eq(x, t)) {
            s.try_reserve(1).map_err(|_| abi::Error::NoMemory)?;
            s.push(t.clone());
        }
        t.set_state(ThreadState::Blocked);
    }
    let ns = deadline.saturating_sub(now_ns());
    apic::wake_me_by(cpu::rdtsc().saturating_add(apic::ns_to_tsc(ns)));
    Ok(())
}

/// Takes `t` off the sleep list (its timed IPC wait ended).
pub fn disarm_wakeup(t: &Arc<Thread>) {
    let stale = {
        let mut s = SLEEPERS.lock();
        s.iter()
            .position(|x| Arc::ptr_eq(x, t))
            .map(|i| s.swap_remove(i))
    };
    drop(stale);
}

/// Wakes every sleeper whose deadline passed (from the timer interrupt).
/// Threads leave the list under its lock but are woken, and their references
/// dropped, after it is released (a last reference frees a kernel stack, which
/// shoots down TLBs: never under a lock).
pub fn wake_sleepers() {
    loop {
        let mut due: heapless::Vec<Arc<Thread>, 16> = heapless::Vec::new();
        {
            // Not try_lock: a timer armed early for a sleeper's deadline must
            // not miss it because another CPU's tick holds the list.
            let mut s = SLEEPERS.lock();
            if s.is_empty() {
                return;
            }
            let now = now_ns();
            let mut i = 0;
            while i < s.len() && !due.is_full() {
                let t = &s[i];
                if t.state() != ThreadState::Blocked
                    || t.sched.wake_at_ns.load(Ordering::Relaxed) <= now
                    || t.killed()
                {
                    let _ = due.push(s.swap_remove(i));
                } else {
                    i += 1;
                }
            }
        }
        if due.is_empty() {
            return;
        }
        for t in due {
            sched::wake(&t);
        }
    }
}
