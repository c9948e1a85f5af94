//! The notification object: `kcore`'s [`Notification`] (bits, waiters, the
//! bound thread) behind its lock, with the count of handles naming it (the
//! last one closed drains the waiters with `PeerDied`).

use super::waitstate::TRef;
use crate::sync::IrqMutex;
use kcore::ipc::Notification;

/// The state under the notification's lock.
pub struct NtfState {
    /// Bits, waiters and binding.
    pub n: Notification<TRef>,
    /// Handles naming this notification (in any table).
    pub handles: u32,
}

/// A notification: a word of bits that `signal` sets and `wait` takes.
pub struct NotificationObj {
    /// See [`NtfState`].
    pub s: IrqMutex<NtfState>,
}

impl NotificationObj {
    /// No bits, no waiters, no handles yet.
    pub const fn new() -> Self {
        NotificationObj {
            s: IrqMutex::new(NtfState {
                n: Notification::new(),
                handles: 0,
            }),
        }
    }
}
