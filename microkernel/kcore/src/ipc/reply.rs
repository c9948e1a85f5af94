//! The reply capability: a server thread's pending answer to one caller.
//!
//! When a receiver takes a call, the caller waits for the reply and the
//! receiving thread holds a [`ReplyCap`] naming it. One per server thread:
//! receiving the next call while holding one abandons the old caller, who is
//! woken with `PeerDied` rather than left hanging.
//!
//! Peer death both ways:
//! - the caller dies (or its call times out) while the server holds the
//!   reply: the kernel calls [`ReplyCap::caller_gone`] on that server's cap,
//!   and the server's later `reply` fails cleanly with `PeerDied` (its
//!   `reply_recv` drops the reply and goes on receiving);
//! - the server thread dies: [`ReplyCap::server_gone`] hands back the caller
//!   to wake with `PeerDied`.

use super::IpcError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State<T> {
    Empty,
    Pending(T),
    /// The caller went away; the next reply reports it once.
    CallerGone,
}

/// A server thread's reply state. The kernel keeps it in the server thread,
/// under that thread's IPC lock (see `docs/ipc.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyCap<T> {
    state: State<T>,
}

impl<T> Default for ReplyCap<T> {
    fn default() -> Self {
        ReplyCap {
            state: State::Empty,
        }
    }
}

impl<T: Copy + PartialEq> ReplyCap<T> {
    /// Nothing pending.
    pub const fn new() -> Self {
        ReplyCap {
            state: State::Empty,
        }
    }

    /// The caller awaiting this server's reply, if any.
    pub fn caller(&self) -> Option<T> {
        match self.state {
            State::Pending(t) => Some(t),
            _ => None,
        }
    }

    /// The server took `caller`'s call. Returns a caller it abandoned by not
    /// replying, to be woken with `PeerDied`.
    pub fn accept(&mut self, caller: T) -> Option<T> {
        let old = self.caller();
        self.state = State::Pending(caller);
        old
    }

    /// The server took a call whose caller's wait ended while the message was
    /// being copied (a late timeout or kill, [`WaitClaim::rearm`] failed):
    /// the server keeps the message and its reply will get `PeerDied`.
    /// Returns an abandoned earlier caller as [`accept`](Self::accept) does.
    ///
    /// [`WaitClaim::rearm`]: super::WaitClaim::rearm
    pub fn accept_gone(&mut self) -> Option<T> {
        let old = self.caller();
        self.state = State::CallerGone;
        old
    }

    /// `reply`: the caller to answer. `PeerDied` if it went away since the
    /// call (reported once), `NoCaller` if nothing is pending.
    pub fn take(&mut self) -> Result<T, IpcError> {
        match core::mem::replace(&mut self.state, State::Empty) {
            State::Pending(t) => Ok(t),
            State::CallerGone => Err(IpcError::PeerDied),
            State::Empty => Err(IpcError::NoCaller),
        }
    }

    /// `caller` died or timed out. False if this cap was not its.
    pub fn caller_gone(&mut self, caller: &T) -> bool {
        if self.state == State::Pending(*caller) {
            self.state = State::CallerGone;
            true
        } else {
            false
        }
    }

    /// The server thread died: the caller to wake with `PeerDied`.
    pub fn server_gone(&mut self) -> Option<T> {
        let c = self.caller();
        self.state = State::Empty;
        c
    }
}
