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

use core::ops::{Deref, DerefMut};

/// A spinlock that keeps interrupts off on this CPU while it is held.
pub struct IrqMutex<T> {
    inner: spin::Mutex<T>,
}

/// Holds the lock and the interrupt state to restore.
pub struct IrqMutexGuard<'a, T> {
    guard: Option<spin::MutexGuard<'a, T>>,
    were_enabled: bool,
}

impl<T> IrqMutex<T> {
    /// A new unlocked mutex.
    pub const fn new(value: T) -> Self {
        IrqMutex {
            inner: spin::Mutex::new(value),
        }
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
    pub fn lock_irqs_off(&self) -> IrqMutexGuard<'_, T> {
        debug_assert!(!crate::arch::cpu::interrupts_enabled());
        let guard = loop {
            if let Some(g) = self.inner.try_lock() {
                break g;
            }
            crate::arch::tlb::service_shootdown();
            core::hint::spin_loop();
        };
        IrqMutexGuard {
            guard: Some(guard),
            were_enabled: false,
        }
    }

    /// Like [`Self::lock`], but gives up instead of spinning.
    pub fn try_lock(&self) -> Option<IrqMutexGuard<'_, T>> {
        let were_enabled = crate::arch::cpu::interrupts_enabled();
        crate::arch::cpu::disable_interrupts();
        match self.inner.try_lock() {
            Some(g) => Some(IrqMutexGuard {
                guard: Some(g),
                were_enabled,
            }),
            None => {
                if were_enabled {
                    crate::arch::cpu::enable_interrupts();
                }
                None
            }
        }
    }

    /// Breaks the lock. Only for the panic path, after every other CPU stopped.
    ///
    /// # Safety
    /// No other CPU may be inside a critical section of this lock, and the caller
    /// must not be either (the guard would then alias).
    pub unsafe fn force_unlock(&self) {
        // SAFETY: the caller guarantees nobody is inside the critical section.
        unsafe { self.inner.force_unlock() }
    }
}

impl<T> Deref for IrqMutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.guard.as_ref().expect("guard present until drop")
    }
}

impl<T> DerefMut for IrqMutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard.as_mut().expect("guard present until drop")
    }
}

impl<T> Drop for IrqMutexGuard<'_, T> {
    // Inlined: a release store and a flag test, cheaper than the call (the
    // IPC fast path drops ten of these per round trip).
    #[inline(always)]
    fn drop(&mut self) {
        drop(self.guard.take());
        if self.were_enabled {
            crate::arch::cpu::enable_interrupts();
        }
    }
}
