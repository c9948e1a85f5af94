//! A thread's IPC state: its wake claim, its wait record, its reply
//! capability and the outcome a partner hands it.
//!
//! # Thread references in queues ([`TRef`])
//! Endpoint and notification queues and reply capabilities name threads by
//! a plain pointer plus the ticket of the wait (`kcore` needs `Copy`). The
//! pointer is valid because of the claim protocol (docs/ipc.md, section 4):
//! a thread appears only in places of its *current* wait; whoever ends that
//! wait (the claim winner) removes it from each of them and only then hands
//! it its [`Outcome`]; and the thread does not leave the wait (and so cannot
//! exit) before it has an outcome — its own claim, or one handed to it. The
//! one place outside a wait, a notification's bound thread, is cleared when
//! the thread exits (`ipc::thread_exiting`).

use super::endpoint::EndpointObj;
use super::kobject::ObjBox;
use super::message::Extra;
use super::notification::NotificationObj;
use crate::object::thread::Thread;
use crate::sync::IrqMutex;
use abi::Error;
use alloc::sync::Arc;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use kcore::ipc::{MsgInfo, ReplyWord, Ticket, WaitClaim};

/// A thread in an IPC queue: see the module docs. `ticket` is `None` only
/// for a notification's bound thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TRef {
    ptr: *const Thread,
    /// The wait this entry belongs to.
    pub ticket: Option<Ticket>,
}

// SAFETY: a TRef is an address and a ticket; the thread it names is Sync and
// is only dereferenced under the protocol in the module docs, on any CPU.
unsafe impl Send for TRef {}

impl TRef {
    /// Names `t` in wait `ticket`.
    pub fn new(t: &Thread, ticket: Option<Ticket>) -> TRef {
        TRef {
            ptr: t as *const Thread,
            ticket,
        }
    }

    /// The thread.
    ///
    /// # Safety
    /// The caller holds this entry under the protocol of the module docs: it
    /// is in a queue whose lock the caller holds, or the caller won (or took)
    /// the thread's claim for this ticket and has not yet handed it an
    /// outcome.
    pub unsafe fn thread(&self) -> &Thread {
        // SAFETY: per the contract the thread has not exited.
        unsafe { &*self.ptr }
    }

    /// The thread's id in a reply word (`kcore::ipc::ReplyWord`): its
    /// address, a non-zero multiple of 8.
    #[inline(always)]
    pub fn id(&self) -> u64 {
        self.ptr as u64
    }

    /// The entry a reply word's caller (`id`, wait `tk`) stands for.
    #[inline(always)]
    pub fn from_id(id: u64, tk: Ticket) -> TRef {
        TRef {
            ptr: id as *const Thread,
            ticket: Some(tk),
        }
    }

    /// A counted reference to the thread (to wake it, or to keep it past the
    /// point where it may exit).
    ///
    /// # Safety
    /// As for [`TRef::thread`].
    pub unsafe fn arc(&self) -> Arc<Thread> {
        // SAFETY: the thread is alive (contract), and every Thread lives in an
        // Arc (created by `Thread::new_user`/`new_idle`); incrementing first
        // makes the `from_raw` below own a reference of its own.
        unsafe {
            Arc::increment_strong_count(self.ptr);
            Arc::from_raw(self.ptr)
        }
    }
}

/// The server a caller's wait record names ([`WaitOn::Reply`]): an
/// uncounted reference (cut26e: the record's `Arc` cost a locked increment
/// at the call and a locked decrement at the reply, every round trip).
///
/// # Lifetime
/// Only [`ipc::unlink`] dereferences it (the caller's removal from the
/// server's reply word, `ReplyWord::caller_gone`), run by a party that owns
/// the caller's record through its claim. That party is either
/// - the server side (the server itself: its reply, its exit, its accept
///   of another call; or the winner of the server's own claim, which gives
///   it a call): the server is running or owned, so it is alive; or
/// - the caller itself, which won its own claim (its kill or timeout: no
///   other party claims a wait for a reply) and unlinks at once, with
///   interrupts off from that claim to the dereference (`ipc::wait`).
///   Then the server, if it is exiting, failed to claim the caller after
///   that claim (its word named the caller from before the caller's wait
///   was visible until the caller's `caller_gone` or a server-side claim,
///   which would have won), so its memory is freed only after a grace
///   period that began after the caller's claim (`mem::retire`: a
///   `Thread` block goes back to the heap once every CPU took a timer
///   tick, which it cannot do inside the caller's interrupts-off stretch).
///
/// [`ipc::unlink`]: crate::ipc
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Server(*const Thread);

// SAFETY: an address; the thread it names is Sync and is dereferenced only
// under the lifetime rule above, on any CPU.
unsafe impl Send for Server {}
// SAFETY: as above (a copy of the address changes nothing).
unsafe impl Sync for Server {}

impl Server {
    /// Names `t`.
    #[inline(always)]
    pub fn new(t: &Thread) -> Server {
        Server(t)
    }

    /// The server thread.
    ///
    /// # Safety
    /// The caller owns the record this came from and is a party of the
    /// lifetime rule above (the server side, or the caller in the
    /// interrupts-off stretch after winning its own claim).
    #[inline(always)]
    pub unsafe fn get(&self) -> &Thread {
        // SAFETY: alive, per the contract.
        unsafe { &*self.0 }
    }
}

/// Where a thread waits (what a claim winner unlinks it from).
#[derive(Default)]
pub enum WaitOn {
    /// Not waiting.
    #[default]
    None,
    /// Queued on an endpoint (a caller, or a receiver without binding).
    Endpoint(Arc<ObjBox<EndpointObj>>),
    /// A receiver on an endpoint that also waits for its bound notification.
    EndpointBound(Arc<ObjBox<EndpointObj>>, Arc<ObjBox<NotificationObj>>),
    /// Waiting for the reply of this server thread (its reply capability
    /// names us). Uncounted (cut26e): see [`Server`].
    Reply(Server),
    /// In `wait` on a notification.
    Notification(Arc<ObjBox<NotificationObj>>),
}

/// A message as it travels: register part plus badge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Msg {
    /// The badge of the handle it was sent through (0 for a reply).
    pub badge: u64,
    /// Label and shape (the kernel's output form).
    pub info: MsgInfo,
    /// w0..w5.
    pub words: [u64; 6],
    /// Handle numbers received (in the receiver's table; 0 = none).
    pub handles: [u32; 4],
}

/// How a wait ended, as its winner hands it to the thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A message (a receive) or a reply (a call).
    Msg(Msg),
    /// Notification bits.
    Notified(u64),
    /// An error for the waiter.
    Err(Error),
    /// A caller's queued call was taken by a receiver that could not place
    /// it (its own buffer or table failed): the message and what travels
    /// with it are back in the caller's record, and the caller makes its
    /// call again (`ipc::slowpath::call`).
    Retry,
    /// The message is in the waiter's syscall frame already (the fast
    /// path's frame delivery, [`ThreadIpc::framed`]): nothing to copy.
    /// Only a fast wait, which asked for it ([`ThreadIpc::frame_seq`]), ends
    /// so.
    Framed,
}

/// The state under a thread's IPC lock.
#[derive(Default)]
pub struct IpcInner {
    /// Set by the winner of its claim, last; taken by the thread.
    pub result: Option<Outcome>,
    /// The message of its pending call (a receiver that takes the call
    /// reads it here).
    pub out: Msg,
    /// Its pending call's buffer and handles (taken with the call).
    pub extra: Extra,
    /// The notification bound to it.
    pub bound: Option<Arc<ObjBox<NotificationObj>>>,
}

/// A thread's IPC state (the one field `Thread` has for IPC).
pub struct ThreadIpc {
    /// Who ends its current wait (atomics, no lock).
    pub claim: WaitClaim,
    /// Receive capacity of its current receive (or of a call's reply),
    /// readable under an endpoint lock (the thread's own lock cannot be
    /// taken there). Written before `claim.begin()`, whose Release store
    /// publishes it.
    pub capacity: AtomicU32,
    /// Where that receive's buffer is (user address in its space; the
    /// decoder checked the range). Published like `capacity`.
    pub buf_addr: AtomicU64,
    /// The last wait whose message its winner wrote into the thread's
    /// syscall frame, named as in [`ThreadIpc::frame_seq`] (its
    /// `Ticket::delivered`, the claim word's value until the thread's
    /// `finish_delivered`), stored (SeqCst) after the frame: a wait whose
    /// ticket this names has ended with [`Outcome::Framed`], and `result`
    /// stays empty. Read by the thread itself.
    pub framed: AtomicU64,
    /// What it waits on: owned through its claim, no lock ([`WaitRecord`]).
    pub wait: WaitRecord,
    /// The wait (its claim word once claimed for a delivery,
    /// `Ticket::delivered`; 0: none) whose message a partner may write
    /// straight into the thread's syscall frame instead of `result` (the
    /// fast path's frame delivery, `ipc::fastpath`). Set by the thread
    /// just before it begins that wait (`WaitClaim::next_delivered`), only
    /// for a wait that ends in the fast path's own `wait_end` or in
    /// `ipc::wait` with the frame as its output and no reference to the
    /// frame live across the wait (the frameless IPC entry's fast `call`,
    /// cross-core `call` and fast `reply_recv` receive; not the traced
    /// handler, whose caller holds a `&mut` to the frame); read by the
    /// winner of that wait's claim. Owned as [`WaitRecord`] is (written by
    /// the thread before `begin`'s Release, read by the winner after its
    /// claim's Acquire, and written again only once the thread saw the
    /// outcome the winner published after its read), so Relaxed.
    pub frame_seq: AtomicU64,
    /// Its pending reply (as a server thread): an atomic word, no lock
    /// (proto3; `kcore::ipc::ReplyWord` has the protocol: the server side
    /// and a caller's killer; no pin since cut26e). Names the caller by [`TRef::id`].
    pub reply: ReplyWord,
    /// Whether a notification is bound to it (`IpcInner::bound` is
    /// `Some`): written and read only by the thread itself (`bind`, its
    /// exit, the fast `reply_recv`'s test), so Relaxed.
    pub bound_set: AtomicBool,
    /// See [`IpcInner`].
    pub inner: IrqMutex<IpcInner>,
}

/// A thread's wait record ([`WaitOn`]), owned through its wait claim
/// instead of a lock (proto3: the fast path takes no thread-IPC lock for
/// it, one lock round trip a side).
///
/// # Protocol
/// At any time one party owns the record, and only it reads or writes it:
/// - the thread itself while no wait of it is visible: before `begin`
///   publishes the wait (its Release store), and again once it saw that
///   wait's outcome (a result under its IPC lock, `framed`, or its own
///   claim of it) or cancelled it unseen (`ipc::cancel_own`);
/// - the winner (or taker) of the claim of its current wait, from its
///   claim (the compare-and-swap's Acquire, pairing with `begin`'s Release
///   or a `rearm`'s) until it publishes the outcome. A winner takes the
///   record (`ipc::unlink`, the fast path's take) *before* it publishes
///   the outcome, so the thread's next write of its record comes after
///   the winner's last access (the outcome's publication is a Release the
///   thread's observation of it acquires). A taker hands the record back
///   with its `rearm` (Release).
///
/// The loom model `a_claim_owned_record_is_never_raced` (kcore) checks the
/// fast path's use: the record and `frame_seq` written before `begin`, the
/// winner's take and frame delivery, the thread's next wait.
pub struct WaitRecord(UnsafeCell<WaitOn>);

// SAFETY: the record is accessed only by its owner (see the protocol
// above), each owner's accesses ordered after the previous owner's by a
// Release/Acquire pair; `WaitOn` itself is Send and Sync (its references
// are `Arc`s of Sync objects).
unsafe impl Sync for WaitRecord {}

impl WaitRecord {
    /// The record.
    ///
    /// # Safety
    /// The caller owns the record under the protocol of [`WaitRecord`], and
    /// holds no other reference from this call.
    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    pub unsafe fn get(&self) -> &mut WaitOn {
        // SAFETY: the caller's contract: no other access to it now.
        unsafe { &mut *self.0.get() }
    }

    /// Takes the record out (leaves `WaitOn::None`).
    ///
    /// # Safety
    /// As for [`get`](Self::get).
    #[inline(always)]
    pub unsafe fn take(&self) -> WaitOn {
        // SAFETY: the caller's contract.
        core::mem::take(unsafe { self.get() })
    }
}

impl ThreadIpc {
    /// Not waiting, nothing pending.
    pub fn new() -> Self {
        ThreadIpc {
            claim: WaitClaim::new(),
            capacity: AtomicU32::new(0),
            buf_addr: AtomicU64::new(0),
            framed: AtomicU64::new(0),
            wait: WaitRecord(UnsafeCell::new(WaitOn::None)),
            frame_seq: AtomicU64::new(0),
            reply: ReplyWord::new(),
            bound_set: AtomicBool::new(false),
            inner: IrqMutex::new(IpcInner::default()),
        }
    }
}

impl Default for ThreadIpc {
    fn default() -> Self {
        Self::new()
    }
}
