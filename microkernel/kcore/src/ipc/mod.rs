//! IPC's pure logic: the endpoint state machine, reply capabilities,
//! notifications, the wake claim that settles wake/cancel/timeout races, the
//! message format and register layout, and the fast-path conditions.
//!
//! Nothing here blocks, switches or touches user memory: each operation
//! changes one object's state and tells the kernel what to do next (deliver to
//! this thread, block, wake that one with this error). The kernel keeps each
//! object behind its own lock and follows the protocol in `docs/ipc.md`.
//!
//! - [`msg`]: [`Message`], [`MsgInfo`], [`RecvSpec`], the register table.
//! - [`endpoint`]: [`Endpoint`] queues, receiver preference, peer death.
//! - [`reply`]: [`ReplyCap`], a server thread's pending reply (the state
//!   machine); [`replyword`]: [`ReplyWord`], the same as the atomic word the
//!   kernel keeps (no lock).
//! - [`notification`]: [`Notification`] bits, waiters, binding.
//! - [`claim`]: [`WaitClaim`], who ends a blocked thread's wait.
//! - [`fastpath_eligible`], [`reply_recv_fastpath_eligible`].

pub mod claim;
pub mod endpoint;
pub mod msg;
pub mod notification;
pub mod reply;
pub mod replyword;

pub use claim::{AtomicWord, Ticket, WaitClaim, WakeReason, CLAIM_STATE_MASK};
pub use endpoint::{CallStep, Caller, Drained, Endpoint, Pick, Receiver, RecvStep, QUEUE_KEEP};
pub use msg::{Message, MsgError, MsgInfo, RecvSpec, MAX_BUFFER};
pub use notification::{Notification, SignalStep, WaitStep};
pub use reply::ReplyCap;
pub use replyword::{Held, ReplyWord};

/// Why an IPC operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpcError {
    /// The peer is gone after it may have seen the message: the server died
    /// holding the call (taken, reply pending), or the caller died before
    /// the reply.
    PeerDied,
    /// No partner was waiting and the operation may not block.
    WouldBlock,
    /// A queue could not grow.
    NoMemory,
    /// The chosen receiver cannot take this message (the kernel's `pick`
    /// said why; it returns its own, more precise error).
    Refused,
    /// `reply` with no call pending.
    NoCaller,
    /// The notification is already bound to a thread.
    AlreadyBound,
    /// The peer is gone and the message provably never reached it: a call
    /// or send on an endpoint with no receiver handle left, or a call still
    /// queued (no receiver took it) when the last receiver handle closed.
    NotDelivered,
    /// A bound receive on a notification bound to another thread.
    NotBound,
}

impl From<IpcError> for abi::Error {
    fn from(e: IpcError) -> Self {
        match e {
            IpcError::PeerDied => abi::Error::PeerDied,
            IpcError::WouldBlock => abi::Error::WouldBlock,
            IpcError::NoMemory => abi::Error::NoMemory,
            IpcError::Refused | IpcError::NoCaller | IpcError::NotBound => {
                abi::Error::InvalidArgument
            }
            IpcError::AlreadyBound => abi::Error::AlreadyExists,
            IpcError::NotDelivered => abi::Error::NotDelivered,
        }
    }
}

/// Whether a `call` may take the fast path: a register-only message (no
/// buffer, no handles, no timeout) to a receiver already waiting on the
/// caller's own CPU. `receiver` is [`Endpoint::peek_receiver`]'s answer for
/// `caller_cpu`. Everything else, including a receiver on another CPU (it
/// needs an IPI), takes the slow path.
///
/// The kernel adds what only it can see (see `docs/ipc.md`): the receiver's
/// claim must succeed, and no "work pending" bit may be set on the caller.
pub fn fastpath_eligible<T>(
    info: MsgInfo,
    caller_cpu: u32,
    receiver: Option<&Receiver<T>>,
) -> bool {
    info.is_register_only() && matches!(receiver, Some(r) if r.cpu == caller_cpu)
}

/// Whether a `reply_recv` may take the fast path back to its caller: a
/// register-only reply (and no timeout on the following receive), a caller
/// that waits on the server's CPU, and no other caller queued on the endpoint
/// (otherwise the server takes that call next, on the slow path).
pub fn reply_recv_fastpath_eligible(
    info: MsgInfo,
    server_cpu: u32,
    caller_cpu: Option<u32>,
    endpoint_has_callers: bool,
) -> bool {
    info.is_register_only() && caller_cpu == Some(server_cpu) && !endpoint_has_callers
}

#[cfg(test)]
mod loom_grace;
#[cfg(test)]
mod loom_proto3;
#[cfg(test)]
mod loom_tests;
#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;
