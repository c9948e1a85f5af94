//! Locks.
//!
//! Every kernel lock is a spinlock taken with interrupts off ([`IrqMutex`]): an
//! interrupt handler that needs the same lock can then never spin forever on a
//! lock its own CPU holds.
//!
//! # Lock order
//! Take locks only in this order (never the reverse):
//! 1. scheduler run queue of one CPU (never two at once; work stealing uses
//!    `try_lock` on the victim),
//! 2. address-space page-table lock,
//! 3. frame allocator,
//! 4. kernel heap,
//! 5. serial output.
//!
//! Serial output is last, so logging is allowed while holding any other lock.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, Ordering};

/// A spinlock that keeps interrupts off on this CPU while it is held.
///
/// A test-and-set lock on a 32-bit word (cut26l): taking it is one
/// `fetch_or` whose old bit is the test, a `lock bts` and a branch, where
/// `spin::Mutex`'s compare-and-swap on a byte needed the two registers
/// set up first (4 instructions; a round trip takes four locks). A
/// waiter spins on plain loads and tries again only once the lock looks
/// free (no write per spin). Modelled in kcore (`tas_loom`).
pub struct IrqMutex<T> {
    /// Bit 0: held.
    locked: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to `value` to one holder at a time
// (the Acquire `fetch_or` that set bit 0, until the Release store that
// clears it), as `spin::Mutex` does, with the same bounds.
unsafe impl<T: Send> Sync for IrqMutex<T> {}

/// Holds the lock and the interrupt state to restore.
pub struct IrqMutexGuard<'a, T> {
    lock: &'a IrqMutex<T>,
    were_enabled: bool,
    /// The guard is shared (`Sync`) only where `T` is: a shared guard
    /// hands out `&T` (as `spin::MutexGuard`).
    _value: PhantomData<&'a mut T>,
}

impl<T> IrqMutex<T> {
    /// A new unlocked mutex.
    pub const fn new(value: T) -> Self {
        IrqMutex {
            locked: AtomicU32::new(0),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock if it is free: Acquire, pairing with the Release
    /// store of the holder before (the guard's drop).
    #[inline(always)]
    fn try_acquire(&self) -> bool {
        self.locked.fetch_or(1, Ordering::Acquire) & 1 == 0
    }

    /// Disables interrupts, then spins until the lock is free. While it spins
    /// it keeps serving TLB-shootdown requests: the holder may be waiting for
    /// this CPU's acknowledgement, which the disabled interrupt cannot bring.
    pub fn lock(&self) -> IrqMutexGuard<'_, T> {
        let were_enabled = crate::arch::cpu::interrupts_enabled();
        crate::arch::cpu::disable_interrupts();
        let mut g = self.lock_irqs_off();
        g.were_enabled = were_enabled;
        g
    }

    /// Like [`Self::lock`] for callers that already run with interrupts off
    /// (the scheduler): skips saving and restoring the interrupt flag.
    #[inline(always)]
    pub fn lock_irqs_off(&self) -> IrqMutexGuard<'_, T> {
        debug_assert!(!crate::arch::cpu::interrupts_enabled());
        if !self.try_acquire() {
            self.spin_acquire();
        }
        IrqMutexGuard {
            lock: self,
            were_enabled: false,
            _value: PhantomData,
        }
    }

    /// [`Self::lock_irqs_off`]'s wait for a held lock, out of line.
    #[cold]
    #[inline(never)]
    fn spin_acquire(&self) {
        loop {
            crate::arch::tlb::service_shootdown();
            core::hint::spin_loop();
            // Until it looks free: loads only.
            if self.locked.load(Ordering::Relaxed) & 1 == 0 && self.try_acquire() {
                return;
            }
        }
    }

    /// Like [`Self::lock`], but gives up instead of spinning.
    pub fn try_lock(&self) -> Option<IrqMutexGuard<'_, T>> {
        let were_enabled = crate::arch::cpu::interrupts_enabled();
        crate::arch::cpu::disable_interrupts();
        if self.try_acquire() {
            Some(IrqMutexGuard {
                lock: self,
                were_enabled,
                _value: PhantomData,
            })
        } else {
            if were_enabled {
                crate::arch::cpu::enable_interrupts();
            }
            None
        }
    }

    /// Breaks the lock. Only for the panic path, after every other CPU stopped.
    ///
    /// # Safety
    /// No other CPU may be inside a critical section of this lock, and the caller
    /// must not be either (the guard would then alias).
    pub unsafe fn force_unlock(&self) {
        // (The caller guarantees nobody is inside the critical section.)
        self.locked.store(0, Ordering::Release);
    }
}

impl<T> Deref for IrqMutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: we hold the lock (the guard lives), so no other reference
        // to the value exists but through this guard.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for IrqMutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self`: this is the only one.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for IrqMutexGuard<'_, T> {
    // Inlined: a release store and a flag test, cheaper than the call (the
    // IPC fast path drops ten of these per round trip).
    #[inline(always)]
    fn drop(&mut self) {
        // Release: the critical section before the next holder's Acquire.
        self.lock.locked.store(0, Ordering::Release);
        if self.were_enabled {
            crate::arch::cpu::enable_interrupts();
        }
    }
}
