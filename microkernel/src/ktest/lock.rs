//! ktests of the kernel's spinlock (`sync::IrqMutex`, cut26l's
//! test-and-set lock): what its users rely on besides mutual exclusion
//! (which kcore's `tas_loom` models): a refused `try_lock` keeps the lock
//! held and the interrupt flag as it was, the guard's drop releases it and
//! restores the flag only for the outermost lock, and `force_unlock`
//! (the panic path's) breaks a lock whose guard was never dropped.

use super::check;
use crate::arch::cpu::{disable_interrupts, enable_interrupts, interrupts_enabled};
use crate::sync::IrqMutex;

static A: IrqMutex<u64> = IrqMutex::new(0);
static B: IrqMutex<u64> = IrqMutex::new(0);

pub(super) fn irq_mutex_keeps_the_lock_and_the_flag() -> Result<(), &'static str> {
    let was = interrupts_enabled();
    enable_interrupts();
    let r = cases();
    // The cases leave every lock free and interrupts on.
    if !was {
        disable_interrupts();
    }
    r
}

fn cases() -> Result<(), &'static str> {
    // Taken with interrupts on: off while held, on again after.
    let mut g = A.lock();
    check(!interrupts_enabled(), "lock left interrupts on")?;
    *g += 1;
    // Refused twice: a refused take must not release it (nor turn
    // interrupts on under the held guard).
    check(A.try_lock().is_none(), "try_lock took a held lock")?;
    check(
        !interrupts_enabled(),
        "a refused try_lock turned interrupts on",
    )?;
    check(
        A.try_lock().is_none(),
        "a refused try_lock released the lock",
    )?;
    // A refused try_lock from a context with interrupts on gives them back.
    // (Nothing takes these locks in an interrupt handler.)
    enable_interrupts();
    let refused = A.try_lock().is_none();
    let back_on = interrupts_enabled();
    disable_interrupts();
    check(refused, "try_lock took a held lock")?;
    check(back_on, "a refused try_lock left interrupts off")?;
    // Nested: the inner guard restores nothing; the outer one restores.
    let h = B.lock();
    check(B.try_lock().is_none(), "try_lock took a held lock")?;
    drop(h);
    check(!interrupts_enabled(), "an inner guard turned interrupts on")?;
    drop(g);
    check(interrupts_enabled(), "the outer guard left interrupts off")?;
    // Released: taken again, by both kinds, and the value kept.
    let g = A
        .try_lock()
        .ok_or("the guard's drop did not release the lock")?;
    check(*g == 1, "the value was lost")?;
    check(!interrupts_enabled(), "try_lock left interrupts on")?;
    drop(g);
    check(interrupts_enabled(), "try_lock's guard left interrupts off")?;
    drop(A.lock());
    // A guard never dropped (a holder stopped by the panic path), then
    // `force_unlock`.
    core::mem::forget(A.lock());
    enable_interrupts();
    check(A.try_lock().is_none(), "a forgotten guard's lock was free")?;
    // SAFETY: nobody is inside A's critical section: its only guard was
    // forgotten above, and no other code uses A.
    unsafe { A.force_unlock() };
    let g = A
        .try_lock()
        .ok_or("force_unlock did not release the lock")?;
    drop(g);
    check(interrupts_enabled(), "interrupts left off")
}
