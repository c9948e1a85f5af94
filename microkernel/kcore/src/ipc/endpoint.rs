//! The endpoint state machine: who waits to send, who waits to receive.
//!
//! An endpoint holds two FIFO queues. Callers queue when no receiver waits;
//! receivers queue when no caller waits; at most one of the two is non-empty
//! after any operation (an arriving party always takes a waiting partner
//! first). A non-blocking `send` never queues.
//!
//! Every operation that takes a waiting partner calls a `pick` closure on it:
//! the kernel claims the partner's [`WaitClaim`](super::WaitClaim) there (and
//! checks what it needs, e.g. that the message fits the receiver's buffer). A
//! partner whose claim is lost (a timeout, kill or notification ended its wait
//! first) is dropped from the queue and the next one is tried, so a racing
//! wake-up never loses or duplicates a message.
//!
//! Threads are a type parameter `T` (the kernel's thread id, ideally carrying
//! the wait's ticket); the queues are `VecDeque`s that grow fallibly, so a
//! full kernel heap is `NoMemory`, and steady-state operation (a server going
//! back to its receive) reuses the capacity without allocating. A queue holds
//! each thread at most once and a thread waits in one place at a time, so the
//! queues are bounded by the thread limits (`abi::limits`): one client cannot
//! grow them beyond its own threads.
//!
//! The endpoint lives as long as there are receiver handles: when the last
//! one closes ([`Endpoint::drop_receive_ref`]) it is dead for good (rights
//! only shrink, so no RECV handle can be made again), every queued thread is
//! handed back to be woken (queued callers with `NotDelivered`: no receiver
//! ever took their message; queued receivers with `PeerDied`), and every
//! later call or send fails with `NotDelivered`.
//!
//! Exactness: a caller leaves the caller queue only under the endpoint's
//! lock, either taken by a receiver (`recv`'s pick: from then on its fate is
//! that receiver's reply or `PeerDied`) or drained here (`NotDelivered`).
//! The drain runs under the same lock, so on any CPU each caller is in
//! exactly one of the two sets; a taken call handed back (`Retry`) is
//! made again from the start and meets the dead endpoint as a new call.

use super::IpcError;
use alloc::collections::VecDeque;

/// A caller waiting for a receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller<T> {
    /// The calling thread.
    pub thread: T,
    /// The badge of the handle it called through.
    pub badge: u64,
}

/// A receiver waiting for a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receiver<T> {
    /// The receiving thread.
    pub thread: T,
    /// The CPU it waits on (a call prefers a receiver on its own CPU).
    pub cpu: u32,
}

/// What the kernel's `pick` closure says about a waiting receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// Claimed: take it off the queue and deliver.
    Take,
    /// Its wait already ended (claim lost): drop the entry, try the next.
    Skip,
    /// It cannot take this message (e.g. too long for its buffer): leave it
    /// queued and fail the operation with [`IpcError::Refused`].
    Refuse,
}

/// The result of a call or send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallStep<T> {
    /// Deliver to this receiver (already off the queue and claimed).
    Deliver(Receiver<T>),
    /// No receiver: the caller is queued and must block.
    Queued,
}

/// The result of a receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvStep<T> {
    /// Take this caller's message (already off the queue and claimed).
    Got(Caller<T>),
    /// No caller: the receiver is queued and must block.
    Queued,
}

/// The threads a dying endpoint hands back (see
/// [`Endpoint::drop_receive_ref`]); the kernel drops the queues' memory after
/// releasing the endpoint's lock.
#[derive(Debug)]
pub struct Drained<T> {
    /// Queued callers, in order.
    pub callers: VecDeque<Caller<T>>,
    /// Queued receivers, in order.
    pub receivers: RecvQueue<Receiver<T>>,
}

/// One endpoint. See the module docs.
///
/// # Invariants
/// - `callers.is_empty() || receivers.is_empty()`.
/// - No thread appears twice in the queues.
/// - Dead (`receive_refs == 0` after creation): both queues empty.
#[derive(Debug)]
pub struct Endpoint<T> {
    callers: VecDeque<Caller<T>>,
    receivers: RecvQueue<Receiver<T>>,
    receive_refs: u32,
}

/// A FIFO of queued receivers whose first entry lives inline (fastpath4).
///
/// A server's steady state is one receiver queued at a time: its
/// `reply_recv` queues it, the next call takes it. With the front entry in
/// `head` neither touches the `VecDeque` (whose push and pop are
/// out-of-line calls: about 50 instructions of a same-core round trip);
/// entries behind it (several workers waiting) go to `rest`.
///
/// # Invariant
/// `head.is_none()` implies `rest.is_empty()`: `head` is always the front.
#[derive(Debug)]
pub struct RecvQueue<X> {
    head: Option<X>,
    rest: VecDeque<X>,
}

impl<X> RecvQueue<X> {
    /// Empty, nothing allocated.
    pub const fn new() -> Self {
        RecvQueue {
            head: None,
            rest: VecDeque::new(),
        }
    }

    /// Whether no entry is queued.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// Entries queued.
    pub fn len(&self) -> usize {
        usize::from(self.head.is_some()) + self.rest.len()
    }

    /// The entries, front first.
    pub fn iter(&self) -> impl Iterator<Item = &X> {
        self.head.iter().chain(self.rest.iter())
    }

    /// The front entry.
    #[inline(always)]
    pub fn front(&self) -> Option<&X> {
        self.head.as_ref()
    }

    /// Entries the heap part has room for (the inline head is part of the
    /// endpoint object itself).
    pub fn capacity(&self) -> usize {
        self.rest.capacity()
    }

    /// Appends `x` (`NoMemory` if the heap part cannot grow; nothing
    /// changed then).
    #[inline(always)]
    fn push_back(&mut self, x: X) -> Result<(), IpcError> {
        self.push_back_with(|| x)
    }

    /// [`push_back`](Self::push_back) of the entry `make` builds, built
    /// where it goes (in the steady state, straight into the inline head:
    /// no copy of it on the caller's stack; `make` runs at most once, and
    /// not if the heap part cannot grow).
    #[inline(always)]
    fn push_back_with(&mut self, make: impl FnOnce() -> X) -> Result<(), IpcError> {
        if self.head.is_none() {
            self.head = Some(make());
            Ok(())
        } else {
            push_back_with(&mut self.rest, make)
        }
    }

    /// Takes the front entry; the next one (if any) becomes the head.
    #[inline(always)]
    pub fn pop_front(&mut self) -> Option<X> {
        let h = self.head.take()?;
        if !self.rest.is_empty() {
            self.head = self.rest.pop_front();
        }
        Some(h)
    }

    /// [`pop_front`](Self::pop_front), then [`trim`] if the heap part gave
    /// up its last entry. The heap part is trimmed whenever it empties
    /// (here, [`retain`](Self::retain), and the endpoint's removals), so an
    /// empty heap part is never above [`QUEUE_KEEP`] when this finds it
    /// empty.
    #[inline(always)]
    pub fn pop_front_trim(&mut self) -> Option<X> {
        let h = self.head.take()?;
        if !self.rest.is_empty() {
            self.head = self.rest.pop_front();
            trim(&mut self.rest);
        }
        Some(h)
    }

    /// [`pop_front_trim`](Self::pop_front_trim) of a front entry the
    /// caller copied already (it is not read again). Only for a queue that
    /// is not empty and whose entries need no drop (`Copy`).
    #[inline(always)]
    fn drop_front_trim(&mut self)
    where
        X: Copy,
    {
        debug_assert!(self.head.is_some());
        if self.rest.is_empty() {
            self.head = None;
        } else {
            self.head = self.rest.pop_front();
            trim(&mut self.rest);
        }
    }

    /// The entry at position `i` (0 = front).
    fn get(&self, i: usize) -> Option<&X> {
        match i {
            0 => self.head.as_ref(),
            _ => self.rest.get(i - 1),
        }
    }

    /// Removes and returns the entry at position `i` (0 = front).
    fn remove(&mut self, i: usize) -> Option<X> {
        match i {
            0 => self.pop_front(),
            _ => self.rest.remove(i - 1),
        }
    }

    /// Frees the heap part's memory as [`trim`] does.
    fn trim(&mut self) {
        trim(&mut self.rest);
    }

    /// Keeps the entries `f` accepts, in order; `f` sees every entry once,
    /// front first (the kernel claims each in there).
    pub fn retain(&mut self, mut f: impl FnMut(&X) -> bool) {
        let Some(h) = self.head.take() else {
            return;
        };
        let keep = f(&h);
        self.rest.retain(|x| f(x));
        self.head = if keep { Some(h) } else { self.rest.pop_front() };
        trim(&mut self.rest);
    }
}

impl<X> Default for RecvQueue<X> {
    fn default() -> Self {
        Self::new()
    }
}

impl<X> IntoIterator for RecvQueue<X> {
    type Item = X;
    type IntoIter =
        core::iter::Chain<core::option::IntoIter<X>, alloc::collections::vec_deque::IntoIter<X>>;

    /// The entries, front first.
    fn into_iter(self) -> Self::IntoIter {
        self.head.into_iter().chain(self.rest)
    }
}

impl<T> Default for Endpoint<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Queue entries an endpoint (or a notification) keeps room for once its
/// queue drains: a server's steady state (up to this many workers waiting,
/// or callers queued) reuses the memory without allocating, while the room
/// a burst took beyond it (one client's many threads queued at once) is
/// given back as soon as the queue is empty again. Without this bound every
/// queue kept its high-water mark for its object's life: one program
/// cycling 512 threads through 4096 endpoints held 64 MiB of kernel heap.
pub const QUEUE_KEEP: usize = 8;

/// Frees `q`'s memory if it is empty and holds room beyond [`QUEUE_KEEP`]
/// (no allocation: the buffer is only dropped).
pub(super) fn trim<X>(q: &mut VecDeque<X>) {
    if q.is_empty() && q.capacity() > QUEUE_KEEP {
        *q = VecDeque::new();
    }
}

/// Always inlined (fastpath4): the fast `reply_recv` queues its server
/// through here once per round trip, and the out-of-line call (prologue,
/// epilogue, argument spills) was about 20 of the 42 instructions it cost;
/// the rare growth is a cold call of its own.
#[inline(always)]
fn push_back<X>(q: &mut VecDeque<X>, x: X) -> Result<(), IpcError> {
    push_back_with(q, || x)
}

/// [`push_back`] of the entry `make` builds (run once there is room).
#[inline(always)]
fn push_back_with<X>(q: &mut VecDeque<X>, make: impl FnOnce() -> X) -> Result<(), IpcError> {
    // The steady state (a server back in its receive) has the room already:
    // only growing asks the allocator.
    if q.len() == q.capacity() {
        grow(q)?;
    }
    q.push_back(make());
    Ok(())
}

/// Room for one more entry in `q` (the allocator's failure is `NoMemory`).
#[cold]
#[inline(never)]
fn grow<X>(q: &mut VecDeque<X>) -> Result<(), IpcError> {
    q.try_reserve(1).map_err(|_| IpcError::NoMemory)
}

impl<T> Endpoint<T> {
    /// A new endpoint with no receiver handle yet: the kernel creates the
    /// first handle (with RECV) right after and calls
    /// [`add_receive_ref`](Self::add_receive_ref).
    pub const fn new() -> Self {
        Endpoint {
            callers: VecDeque::new(),
            receivers: RecvQueue::new(),
            receive_refs: 0,
        }
    }

    /// Whether any receiver handle exists.
    pub fn is_alive(&self) -> bool {
        self.receive_refs > 0
    }

    /// A handle with RECV was created (minted, duplicated or copied).
    pub fn add_receive_ref(&mut self) {
        self.receive_refs += 1;
    }

    /// A handle with RECV was closed. When it was the last, returns every
    /// queued thread, to be woken (callers with `NotDelivered`, receivers
    /// with `PeerDied`), each through its claim: a lost claim means another
    /// party is already waking it.
    pub fn drop_receive_ref(&mut self) -> Option<Drained<T>> {
        debug_assert!(self.receive_refs > 0);
        self.receive_refs = self.receive_refs.saturating_sub(1);
        (self.receive_refs == 0).then(|| Drained {
            callers: core::mem::take(&mut self.callers),
            receivers: core::mem::take(&mut self.receivers),
        })
    }

    /// Queued callers.
    pub fn callers(&self) -> impl Iterator<Item = &Caller<T>> {
        self.callers.iter()
    }

    /// Queued receivers.
    pub fn receivers(&self) -> impl Iterator<Item = &Receiver<T>> {
        self.receivers.iter()
    }

    /// Entries the two queues have room for (their heap footprint).
    pub fn queue_capacity(&self) -> usize {
        self.callers.capacity() + self.receivers.capacity()
    }

    /// Whether a caller waits (reply_recv's fast path needs none).
    pub fn has_callers(&self) -> bool {
        !self.callers.is_empty()
    }

    /// The index of the receiver a call from `cpu` takes first: the first one
    /// waiting on `cpu`, else the longest-waiting one.
    fn preferred(&self, cpu: u32) -> Option<usize> {
        if self.receivers.is_empty() {
            return None;
        }
        Some(
            self.receivers
                .iter()
                .position(|r| r.cpu == cpu)
                .unwrap_or(0),
        )
    }

    /// The receiver a call from `cpu` would try first (the fast path's check).
    pub fn peek_receiver(&self, cpu: u32) -> Option<&Receiver<T>> {
        self.preferred(cpu).and_then(|i| self.receivers.get(i))
    }

    fn take_receiver(
        &mut self,
        cpu: u32,
        pick: &mut impl FnMut(&Receiver<T>) -> Pick,
    ) -> Result<Option<Receiver<T>>, IpcError> {
        let mut got = Ok(None);
        while let Some(i) = self.preferred(cpu) {
            let Some(r) = self.receivers.get(i) else {
                break; // (never: `preferred` names an entry)
            };
            match pick(r) {
                Pick::Take => {
                    got = Ok(self.receivers.remove(i));
                    break;
                }
                Pick::Skip => {
                    self.receivers.remove(i);
                }
                Pick::Refuse => {
                    got = Err(IpcError::Refused);
                    break;
                }
            }
        }
        self.receivers.trim();
        got
    }

    /// `call`: hand the message to a waiting receiver, else queue the caller
    /// (or fail with `WouldBlock` when it may not block).
    pub fn call(
        &mut self,
        caller: Caller<T>,
        cpu: u32,
        may_block: bool,
        mut pick: impl FnMut(&Receiver<T>) -> Pick,
    ) -> Result<CallStep<T>, IpcError> {
        if !self.is_alive() {
            return Err(IpcError::NotDelivered);
        }
        if let Some(r) = self.take_receiver(cpu, &mut pick)? {
            return Ok(CallStep::Deliver(r));
        }
        if !may_block {
            return Err(IpcError::WouldBlock);
        }
        push_back(&mut self.callers, caller)?;
        Ok(CallStep::Queued)
    }

    /// Non-blocking `send`: a waiting receiver, or `WouldBlock`.
    pub fn send(
        &mut self,
        cpu: u32,
        mut pick: impl FnMut(&Receiver<T>) -> Pick,
    ) -> Result<Receiver<T>, IpcError> {
        if !self.is_alive() {
            return Err(IpcError::NotDelivered);
        }
        self.take_receiver(cpu, &mut pick)?
            .ok_or(IpcError::WouldBlock)
    }

    /// The fast path's `call`: takes the receiver at the *front* of the
    /// queue if it waits on `cpu` and `claim` (the kernel's claim of its
    /// wait) succeeds; otherwise changes nothing and returns `None` (the
    /// slow path then does the call: it also looks past the front for a
    /// receiver on `cpu`, and drops entries whose claim was lost).
    ///
    /// Always inlined: it is the fast `call`'s step 1, and with the fast
    /// path in two instances (the dispatcher's frameless IPC entry and the
    /// traced handler) the compiler called it out of line (ipcfr: +38 a
    /// round trip).
    #[inline(always)]
    pub fn take_front_receiver(
        &mut self,
        cpu: u32,
        claim: impl FnOnce(&Receiver<T>) -> bool,
    ) -> Option<Receiver<T>>
    where
        T: Copy,
    {
        // A copy, made before the claim: the claim is an atomic operation,
        // after which the compiler read the entry (and tested its `Option`)
        // again, and the kernel's later test of the claimed ticket could
        // not be folded into the claim's own (proto2).
        let r = *self.receivers.front()?;
        if r.cpu != cpu || !claim(&r) {
            return None;
        }
        // A burst of receivers gives its room back once its heap part
        // empties (`drop_front_trim`); the steady state, one receiver in
        // `head` and nothing behind it, neither pops the heap part nor
        // tests its capacity (five instructions a fast call).
        self.receivers.drop_front_trim();
        Some(r)
    }

    /// The fast path's receive: queues `receiver` when the endpoint is
    /// alive and no caller waits (true); otherwise changes nothing (false:
    /// the slow path takes the caller, or reports the dead endpoint, or the
    /// queue could not grow).
    #[inline(always)]
    pub fn queue_receiver_if_idle(&mut self, receiver: Receiver<T>) -> bool {
        self.queue_receiver_if_idle_with(|| receiver)
    }

    /// [`queue_receiver_if_idle`](Self::queue_receiver_if_idle) of the
    /// receiver `make` builds: built only once it is queued, where it is
    /// queued (the kernel's fast `reply_recv`: built on its stack and then
    /// copied into the head, it cost a store and a load a word, protocut).
    #[inline(always)]
    pub fn queue_receiver_if_idle_with(&mut self, make: impl FnOnce() -> Receiver<T>) -> bool {
        self.is_alive() && self.callers.is_empty() && self.receivers.push_back_with(make).is_ok()
    }

    /// `recv`: take the longest-waiting caller, else queue the receiver (or
    /// `WouldBlock`). `pick` *takes* the caller ([`WaitClaim::take`]: its
    /// wait goes on, for the reply); false (its wait already ended) drops the
    /// entry and the next caller is tried.
    ///
    /// [`WaitClaim::take`]: super::WaitClaim::take
    pub fn recv(
        &mut self,
        receiver: Receiver<T>,
        may_block: bool,
        mut pick: impl FnMut(&Caller<T>) -> bool,
    ) -> Result<RecvStep<T>, IpcError> {
        if !self.is_alive() {
            return Err(IpcError::PeerDied);
        }
        while let Some(c) = self.callers.pop_front() {
            if pick(&c) {
                trim(&mut self.callers);
                return Ok(RecvStep::Got(c));
            }
        }
        trim(&mut self.callers);
        if !may_block {
            return Err(IpcError::WouldBlock);
        }
        self.receivers.push_back(receiver)?;
        Ok(RecvStep::Queued)
    }
}

impl<T: PartialEq> Endpoint<T> {
    /// Removes `thread` from whichever queue holds it (kill, timeout, a
    /// notification ending a receive). False if it is not queued here.
    pub fn remove(&mut self, thread: &T) -> bool {
        if let Some(i) = self.callers.iter().position(|c| c.thread == *thread) {
            self.callers.remove(i);
            trim(&mut self.callers);
            return true;
        }
        let at = self.receivers.iter().position(|r| r.thread == *thread);
        if let Some(i) = at {
            self.receivers.remove(i);
            self.receivers.trim();
            return true;
        }
        false
    }
}
