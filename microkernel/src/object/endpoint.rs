//! The endpoint object: `kcore`'s [`Endpoint`] state machine behind its lock.
//!
//! The queues hold [`TRef`]s (a thread and the ticket of the wait it is
//! queued for). Lock order (docs/ipc.md): at most one of {endpoint,
//! notification, thread-ipc} is held at a time; a run-queue lock may be taken
//! under it (to wake); never a handle table.

use super::waitstate::TRef;
use crate::sync::IrqMutex;
use kcore::ipc::Endpoint;

/// An endpoint: callers and receivers rendezvous here.
pub struct EndpointObj {
    /// The queues and the receive-handle count.
    pub q: IrqMutex<Endpoint<TRef>>,
}

impl EndpointObj {
    /// A new endpoint with no receive handle yet (the creator's handle adds
    /// the first).
    pub const fn new() -> Self {
        EndpointObj {
            q: IrqMutex::new(Endpoint::new()),
        }
    }
}
