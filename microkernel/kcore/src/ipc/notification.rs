//! Notifications: a word of pending bits.
//!
//! `signal(bits)` never blocks: it hands the bits (with any already pending)
//! to one waiting thread, or ORs them into the word. `wait` returns the
//! pending bits and clears them, or blocks until a signal. Signals between two
//! waits accumulate; nothing is counted, so a burst of IRQs reads as one.
//!
//! A notification can be bound to one thread (seL4's bound notification): a
//! bound thread's endpoint receive also ends when the notification is
//! signalled, returning the bits flagged as a notification instead of a
//! message. That is how a server that also takes IRQs waits for both at
//! once. The kernel's sequence for such a receive is in `docs/ipc.md`.

use super::IpcError;
use alloc::collections::VecDeque;

/// The result of a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalStep<T> {
    /// Wake this thread (already claimed) with these bits. `bound`: it was
    /// in an endpoint receive, so the kernel also removes it from that
    /// endpoint's queue and returns the bits as a notification.
    Wake {
        /// The thread to wake.
        thread: T,
        /// The bits it receives (the word is now 0).
        bits: u64,
        /// It was woken out of its bound endpoint receive.
        bound: bool,
    },
    /// Nobody waited: the bits are pending.
    Pending,
}

/// The result of a wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStep {
    /// Bits were pending; they are returned and cleared.
    Got(u64),
    /// Nothing pending: the thread is queued and must block.
    Queued,
}

/// One notification object.
///
/// # Invariants
/// - `pending != 0` implies no thread waits (no plain waiter queued and the
///   bound thread not in a receive).
#[derive(Debug)]
pub struct Notification<T> {
    pending: u64,
    waiters: VecDeque<T>,
    bound: Option<T>,
    bound_waiting: bool,
}

impl<T> Default for Notification<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Notification<T> {
    /// No bits, no waiters, not bound.
    pub const fn new() -> Self {
        Notification {
            pending: 0,
            waiters: VecDeque::new(),
            bound: None,
            bound_waiting: false,
        }
    }

    /// The pending bits.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Entries the waiter queue has room for (its heap footprint).
    pub fn waiters_capacity(&self) -> usize {
        self.waiters.capacity()
    }

    /// Threads in `wait`.
    pub fn waiters(&self) -> impl Iterator<Item = &T> {
        self.waiters.iter()
    }
}

impl<T: Copy + PartialEq> Notification<T> {
    /// The bound thread, if any.
    pub fn bound(&self) -> Option<T> {
        self.bound
    }

    /// Whether the bound thread is in a receive this notification can end.
    pub fn bound_waiting(&self) -> bool {
        self.bound_waiting
    }

    /// `signal(bits)`: never blocks. `pick` claims a waiter (false: its wait
    /// already ended; it is dropped and the next tried). Plain waiters come
    /// first, in FIFO order, then the bound thread's receive.
    pub fn signal(&mut self, bits: u64, mut pick: impl FnMut(&T) -> bool) -> SignalStep<T> {
        self.pending |= bits;
        if self.pending == 0 {
            return SignalStep::Pending;
        }
        while let Some(t) = self.waiters.pop_front() {
            if pick(&t) {
                super::endpoint::trim(&mut self.waiters);
                let bits = core::mem::take(&mut self.pending);
                return SignalStep::Wake {
                    thread: t,
                    bits,
                    bound: false,
                };
            }
        }
        super::endpoint::trim(&mut self.waiters);
        if self.bound_waiting {
            if let Some(t) = self.bound {
                self.bound_waiting = false;
                if pick(&t) {
                    let bits = core::mem::take(&mut self.pending);
                    return SignalStep::Wake {
                        thread: t,
                        bits,
                        bound: true,
                    };
                }
            }
        }
        SignalStep::Pending
    }

    /// The pending bits, taken (cleared), if any: a `wait` that would get
    /// them at once, without a waiter to name (the kernel's wait takes them
    /// here before it records and begins a wait; `notify_signal_wait`).
    pub fn take_pending(&mut self) -> Option<u64> {
        (self.pending != 0).then(|| core::mem::take(&mut self.pending))
    }

    /// `wait`: the pending bits (cleared), else queue `thread` (or
    /// `WouldBlock` when it may not block).
    pub fn wait(&mut self, thread: T, may_block: bool) -> Result<WaitStep, IpcError> {
        if self.pending != 0 {
            return Ok(WaitStep::Got(core::mem::take(&mut self.pending)));
        }
        if !may_block {
            return Err(IpcError::WouldBlock);
        }
        self.waiters
            .try_reserve(1)
            .map_err(|_| IpcError::NoMemory)?;
        self.waiters.push_back(thread);
        Ok(WaitStep::Queued)
    }

    /// Removes `thread` from the waiters, or ends the bound thread's
    /// receive registration (kill, timeout, or its receive got a message).
    /// False if it was in neither.
    pub fn remove(&mut self, thread: &T) -> bool {
        if let Some(i) = self.waiters.iter().position(|t| t == thread) {
            self.waiters.remove(i);
            super::endpoint::trim(&mut self.waiters);
            return true;
        }
        if self.bound_waiting && self.bound.as_ref() == Some(thread) {
            self.bound_waiting = false;
            return true;
        }
        false
    }

    /// Binds the notification to `thread`.
    pub fn bind(&mut self, thread: T) -> Result<(), IpcError> {
        if self.bound.is_some() {
            return Err(IpcError::AlreadyBound);
        }
        self.bound = Some(thread);
        Ok(())
    }

    /// Unbinds it (the thread's request, or the thread died).
    pub fn unbind(&mut self, thread: &T) -> bool {
        if self.bound.as_ref() == Some(thread) {
            self.bound = None;
            self.bound_waiting = false;
            true
        } else {
            false
        }
    }

    /// The bound thread starts an endpoint receive (after queueing on the
    /// endpoint, with its wait ticket taken): pending bits are returned
    /// (cleared) and the thread must end its own wait and return them;
    /// otherwise the receive is registered for a later signal.
    pub fn bound_recv_begin(&mut self, thread: &T) -> Result<Option<u64>, IpcError> {
        if self.bound.as_ref() != Some(thread) {
            return Err(IpcError::NotBound);
        }
        if self.pending != 0 {
            return Ok(Some(core::mem::take(&mut self.pending)));
        }
        self.bound_waiting = true;
        Ok(None)
    }

    /// The object died (its last handle closed): every plain waiter, to be
    /// woken with `PeerDied` through its claim. The binding ends too.
    pub fn drain(&mut self) -> VecDeque<T> {
        self.bound = None;
        self.bound_waiting = false;
        core::mem::take(&mut self.waiters)
    }
}
