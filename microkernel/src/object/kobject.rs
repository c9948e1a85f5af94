//! What a handle names, and the per-process handle table.
//!
//! Objects are reference counted; a table entry holds one reference. Object
//! creation is charged first to a kernel-wide and a per-process bound
//! ([`charge`]; the unit follows the object, not the creator's life), so the infallible `Arc::new` behind it is bounded in total
//! (4096 objects of under 128 bytes: at most 512 KiB of the 4 MiB minimum
//! heap); handle tables grow fallibly (`try_reserve`) up to
//! [`MAX_HANDLES`] each.

use super::endpoint::EndpointObj;
use super::notification::NotificationObj;
use super::process::Process;
use super::thread::ThreadExit;
use crate::sync::IrqMutex;
use abi::Error;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicUsize, Ordering};
use kcore::handles::HandleTable;

/// A kernel object a handle can name.
#[derive(Clone)]
pub enum Object {
    /// An IPC endpoint.
    Endpoint(Arc<ObjBox<EndpointObj>>),
    /// A notification.
    Notification(Arc<ObjBox<NotificationObj>>),
    /// A thread: its exit record (join, and the live thread for a kill).
    /// Charged to its process's joinable-thread count, not to [`charge`].
    Thread(Arc<ThreadExit>),
    /// A process (wait, kill, handle_give). Charged to the process quotas;
    /// an ended process is freed with the last handle naming it.
    Process(Arc<Process>),
    // --- vm (issue 11) ---
    /// A memory object (`mem_create`): frames shared into spaces by
    /// `mem_map`. Charged to [`charge`] and its frames to the creator's
    /// program pages.
    Memory(Arc<ObjBox<super::memory::MemoryObj>>),
    // --- hw (issue 11) ---
    /// A range of I/O ports (`ioport_grant`, `ioport_enable`).
    IoPorts(Arc<ObjBox<super::hw::IoPorts>>),
    /// An IRQ root or a bound line (`irq_bind`, `irq_ack`).
    Irq(Arc<ObjBox<super::hw::IrqObj>>),
}

/// The most handles one process holds (docs/ipc.md suggests 256).
pub const MAX_HANDLES: usize = 256;

/// A process's handle table.
pub type Handles = HandleTable<Object>;

/// What a process holds for IPC: its handle table (closed when the process
/// ends, so peers see peer death) and the count of objects it created.
pub struct ProcessIpc {
    /// The handle table. Lock order: before any object or thread-ipc lock;
    /// two tables in pid order.
    pub handles: IrqMutex<Handles>,
    /// Objects created by this process and still alive.
    pub objects: Arc<AtomicUsize>,
}

impl ProcessIpc {
    /// An empty table (allocates nothing until the first insert).
    pub fn new() -> Self {
        ProcessIpc {
            handles: IrqMutex::new(HandleTable::new(MAX_HANDLES)),
            objects: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Default for ProcessIpc {
    fn default() -> Self {
        Self::new()
    }
}

/// IPC objects alive kernel-wide at most.
pub const MAX_OBJECTS: usize = 4096;
/// IPC objects one process may have created and alive (a sixteenth of the
/// kernel-wide bound).
pub const MAX_OBJECTS_PER_PROCESS: usize = MAX_OBJECTS / 16;

static LIVE_OBJECTS: AtomicUsize = AtomicUsize::new(0);

/// An object together with the quota unit it was charged (given back when
/// the last reference goes).
pub struct ObjBox<T> {
    inner: T,
    program: Arc<AtomicUsize>,
}

impl<T> core::ops::Deref for ObjBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> Drop for ObjBox<T> {
    fn drop(&mut self) {
        self.program.fetch_sub(1, Ordering::SeqCst);
        LIVE_OBJECTS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Charges one object to the kernel-wide bound and to `creator`'s counter,
/// then allocates it: `NoMemory` when either bound is reached.
pub fn charge<T>(creator: &Arc<AtomicUsize>, inner: T) -> Result<Arc<ObjBox<T>>, Error> {
    if creator.fetch_add(1, Ordering::SeqCst) >= MAX_OBJECTS_PER_PROCESS {
        creator.fetch_sub(1, Ordering::SeqCst);
        return Err(Error::NoMemory);
    }
    if LIVE_OBJECTS.fetch_add(1, Ordering::SeqCst) >= MAX_OBJECTS {
        LIVE_OBJECTS.fetch_sub(1, Ordering::SeqCst);
        creator.fetch_sub(1, Ordering::SeqCst);
        return Err(Error::NoMemory);
    }
    // Bounded by the charge above (see the module docs).
    Ok(Arc::new(ObjBox {
        inner,
        program: creator.clone(),
    }))
}
