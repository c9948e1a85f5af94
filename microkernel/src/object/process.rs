//! Processes: data and invariants only (spawning, killing and waiting are
//! [`crate::lifecycle`]'s).
//!
//! A [`Process`] owns an address space and its thread table (the thread list
//! and its "exiting" flag, under one lock); it ends when its last thread is
//! gone (or one calls `process_exit`, or a fault or a kill ends it).
//!
//! # Who keeps a record
//! Nothing looks a process up by id: authority is a handle. The record is
//! reference counted, held by its own threads while they live and by every
//! handle naming it (`Object::Process`) after, so an ended process nobody
//! can wait for any more (its last handle closed, or never given: init) is
//! freed at once, and a child whose creator ended runs on, held by its
//! threads, and is freed when it ends. Its quota units (the kernel-wide and
//! program process counts, its creator's child count) go with the record;
//! the child unit goes earlier, at the wait that reaps it.

use super::space::{AddressSpace, PageBudget};
use super::thread::{Thread, ThreadId, LIVE_THREADS, MAX_THREADS};
use crate::sync::IrqMutex;
use abi::Error;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};

/// A process's kernel-wide id (what `process_spawn` returns).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProcessId(u64);

impl ProcessId {
    /// The raw value, for user space and logs.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl core::fmt::Display for ProcessId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.fmt(f)
    }
}

/// The pid of init.
pub const INIT_PID: ProcessId = ProcessId(1);

/// What ends a process once its last thread is gone (`lifecycle::ended`:
/// records, memory, waking the waiters). Installed once at boot by the
/// lifecycle layer, so this data layer never calls up into it.
static ON_LAST_THREAD: spin::Once<fn(Arc<Process>, u64)> = spin::Once::new();

/// Installs what runs when a process's last thread is gone (once, at boot).
pub fn set_last_thread_hook(f: fn(Arc<Process>, u64)) {
    ON_LAST_THREAD.call_once(|| f);
}

/// The last thread of `p` is gone (from the drop of that `Thread`).
pub(super) fn last_thread_gone(p: Arc<Process>, status: u64) {
    let f = ON_LAST_THREAD
        .get()
        .expect("lifecycle installs the last-thread hook before any thread runs");
    f(p, status)
}

/// The most processes whose records exist at once (running or not yet waited
/// for).
pub const MAX_PROCESSES: usize = 256;
/// Per-process quotas (see docs/decisions.md, "lifecycle"): each is a
/// fraction of the global table it draws from, so one process cannot fill it.
pub use abi::limits::{
    MAX_CHILDREN, MAX_MAPPED_BYTES_PER_PROGRAM, MAX_PROCESSES_PER_PROGRAM, MAX_THREADS_PER_PROCESS,
    MAX_THREADS_PER_PROGRAM,
};

/// What one *program* holds: a process init started and every process it
/// (or they, transitively) started, orphans included. Per-process quotas
/// alone do not bound a tree (64 children with 64 children each are 4160
/// processes; 8 children with 128 threads each fill the thread table), so
/// every process, thread and mapped page is also charged here, each against
/// half of the kernel-wide table it draws from.
///
/// init and each program it starts get an account of their own; every other
/// process shares its creator's. (A process manager that starts programs on
/// others' behalf will need a way to open fresh accounts; that is for the
/// process-manager issue.)
pub struct Account {
    processes: AtomicUsize,
    threads: AtomicUsize,
    /// Frames mapped by all of the program's address spaces.
    pub pages: Arc<PageBudget>,
}

impl Account {
    fn new() -> Account {
        // Never more than three quarters of RAM, whatever the constant says.
        let cap = crate::mem::total_bytes() / 4 * 3;
        let limit = MAX_MAPPED_BYTES_PER_PROGRAM.min(cap) / abi::layout::PAGE_SIZE;
        Account {
            processes: AtomicUsize::new(0),
            threads: AtomicUsize::new(0),
            pages: Arc::new(PageBudget::new(limit)),
        }
    }

    /// Takes one unit of `counter` unless it is at `max`.
    fn take(counter: &AtomicUsize, max: usize) -> Result<(), Error> {
        if counter.fetch_add(1, Ordering::SeqCst) >= max {
            counter.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::NoMemory);
        }
        Ok(())
    }
}

static LIVE_PROCESSES: AtomicUsize = AtomicUsize::new(0);

/// Gives one unit of a quota counter back. A release without a matching take
/// is a kernel bug; it is logged and the counter stays at 0, because a
/// wrapped counter would refuse every later take (NoMemory for good).
pub(super) fn release(counter: &AtomicUsize, what: &str) {
    if counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_err()
    {
        log::error!("quota: {what} released more often than taken");
    }
}

/// Process records alive.
pub fn live_processes() -> usize {
    LIVE_PROCESSES.load(Ordering::SeqCst)
}

/// One unit of [`MAX_THREADS`] and of its program's
/// [`MAX_THREADS_PER_PROGRAM`], returned on drop.
pub(super) struct ThreadSlot<'a>(&'a Account);

impl ThreadSlot<'_> {
    /// The slot of a thread being dropped (its `ThreadSlot` was forgotten
    /// at creation): dropping this releases it.
    pub(super) fn returned(account: &Account) -> ThreadSlot<'_> {
        ThreadSlot(account)
    }

    pub(super) fn take(account: &Account) -> Result<ThreadSlot<'_>, Error> {
        Account::take(&account.threads, MAX_THREADS_PER_PROGRAM)?;
        if LIVE_THREADS.fetch_add(1, Ordering::SeqCst) >= MAX_THREADS {
            LIVE_THREADS.fetch_sub(1, Ordering::SeqCst);
            account.threads.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::NoMemory);
        }
        Ok(ThreadSlot(account))
    }
}

impl Drop for ThreadSlot<'_> {
    fn drop(&mut self) {
        release(&LIVE_THREADS, "a thread slot");
        release(&self.0.threads, "a program's thread");
    }
}

/// One unit of a process's joinable-thread count
/// ([`MAX_THREADS_PER_PROCESS`]): returned on drop unless kept.
pub(super) struct JoinableSlot<'a>(&'a Arc<AtomicUsize>);

impl JoinableSlot<'_> {
    pub(super) fn take(counter: &Arc<AtomicUsize>) -> Result<JoinableSlot<'_>, Error> {
        Account::take(counter, MAX_THREADS_PER_PROCESS)?;
        Ok(JoinableSlot(counter))
    }

    /// Hands the unit to a thread's exit record (which gives it back).
    pub(super) fn keep(self) -> Arc<AtomicUsize> {
        let c = self.0.clone();
        core::mem::forget(self);
        c
    }
}

impl Drop for JoinableSlot<'_> {
    fn drop(&mut self) {
        release(self.0, "a joinable thread");
    }
}

/// A process's live threads: the authoritative list that kill walks. A dead
/// thread leaves it at once; what is left of it for `thread_join` is its
/// exit record (`ThreadExit`), held by its handles.
pub struct ThreadTable {
    /// Set (under this lock) when the process starts ending; from then on no
    /// thread is added.
    exiting: bool,
    rows: Vec<Arc<Thread>>,
    /// A thread was ever listed (false only for a `process_create`d process
    /// before its first `thread_start`; see [`Self::claim_unstarted_end`]).
    started: bool,
}

impl ThreadTable {
    const fn new() -> ThreadTable {
        ThreadTable {
            exiting: false,
            rows: Vec::new(),
            started: false,
        }
    }

    /// Whether one more thread may be added: not ending, and room for its
    /// row (`try_reserve`: never an infallible allocation). The quota is the
    /// joinable-thread count's (`Thread::new_user`).
    pub(super) fn admit(&mut self) -> Result<(), Error> {
        if self.exiting {
            return Err(Error::NotFound);
        }
        self.rows.try_reserve(1).map_err(|_| Error::NoMemory)
    }

    /// Whether the process is ending (no thread or child may start).
    pub fn is_exiting(&self) -> bool {
        self.exiting
    }

    pub(super) fn insert(&mut self, t: &Arc<Thread>) -> Result<(), Error> {
        self.admit()?;
        self.rows.push(t.clone());
        self.started = true;
        Ok(())
    }

    /// For a kill of a process that never had a thread (nothing else would
    /// ever end it): true exactly once, and only if no thread was ever
    /// listed; marks it exiting, so none will be.
    pub fn claim_unstarted_end(&mut self) -> bool {
        self.exiting = true;
        let never = !self.started;
        self.started = true;
        never
    }

    /// Takes thread `tid` off the list (it is ending, or was never started);
    /// returns its reference for the caller to drop outside the lock.
    pub fn remove(&mut self, tid: ThreadId) -> Option<Arc<Thread>> {
        let i = self.rows.iter().position(|t| t.tid == tid)?;
        Some(self.rows.swap_remove(i))
    }

    /// Whether no thread is alive any more; if so the process is ending, so
    /// no thread is added from now on.
    pub fn none_live(&mut self) -> bool {
        let none = self.rows.is_empty();
        if none {
            self.exiting = true;
        }
        none
    }

    /// Marks the process as ending (no thread is added from now on) and
    /// returns its live threads but `except` (`None`: all of them), for the
    /// caller to kill while it still holds this lock
    /// (`lifecycle::exit_current_process`, `lifecycle::kill_process`).
    pub fn mark_exiting(&mut self, except: Option<ThreadId>) -> impl Iterator<Item = &Arc<Thread>> {
        self.exiting = true;
        self.rows.iter().filter(move |t| Some(t.tid) != except)
    }

    /// The CPU to show for the process (`ps`, issue 11): the CPU one of
    /// its threads is running on now, else the one its first listed thread
    /// last ran on; `None` with no thread listed. A snapshot (Relaxed: the
    /// answer is stale the moment the lock drops anyway).
    pub fn cpu(&self) -> Option<u32> {
        let running = self
            .rows
            .iter()
            .find(|t| t.sched.on_cpu.load(Ordering::Relaxed));
        running
            .or(self.rows.first())
            .map(|t| t.sched.last_cpu.load(Ordering::Relaxed))
    }

    /// Takes the rows (the process ended, or never started); the caller
    /// drops them outside the lock.
    pub fn take_rows(&mut self) -> Vec<Arc<Thread>> {
        self.exiting = true;
        core::mem::take(&mut self.rows)
    }
}

/// A process: an address space and the threads running in it.
pub struct Process {
    /// Process id.
    pub pid: ProcessId,
    /// Child records alive that no wait reaped yet (running, or ended and
    /// still named by a handle); at most [`MAX_CHILDREN`]. Shared with the
    /// children, which give their unit back.
    children: Arc<AtomicUsize>,
    /// The creator's `children` count this record holds a unit of (`None`
    /// for init, or once given back).
    child_unit: IrqMutex<Option<Arc<AtomicUsize>>>,
    /// Joinable thread records of this process (live threads, and dead ones
    /// not joined whose handle is open); at most [`MAX_THREADS_PER_PROCESS`].
    pub(super) joinable: Arc<AtomicUsize>,
    /// A `process_wait` took the status: later waits find nothing.
    reaped: AtomicBool,
    /// The program it belongs to (shared with its creator unless that is
    /// init, or it is init).
    pub account: Arc<Account>,
    /// Maximum controlled priority (seL4's MCP): no thread of the process may
    /// set a priority numerically below it (0 is the highest priority).
    pub mcp: u8,
    /// The MCP its future children get: never above its own (`mcp`).
    pub child_mcp: AtomicU8,
    /// Its memory, until it ends (its threads hold their own references).
    space: IrqMutex<Option<Arc<AddressSpace>>>,
    /// `Thread` objects alive (not yet dropped: a dead thread counts until
    /// its stack is freed). The process ends when this reaches 0.
    pub live_threads: AtomicUsize,
    /// Its threads, live and dead-unjoined (the authoritative list for kill).
    pub threads: IrqMutex<ThreadTable>,
    /// Exit status once ended (or once `process_exit` chose it).
    pub exit_status: IrqMutex<Option<u64>>,
    /// Set once every thread is gone and the memory released.
    ended: AtomicBool,
    /// Threads blocked in `process_wait` for it (any process holding a
    /// handle with `WAIT`).
    pub waiters: IrqMutex<Vec<Arc<Thread>>>,
    /// The program it runs, when known: the boot module whose bytes it was
    /// spawned from (`lifecycle::spawn`), named in its fault lines so the
    /// runner can symbolize them against that program's ELF. Set at most once;
    /// the hook for the loader server to name the programs it loads.
    pub program: spin::Once<kcore::bootinfo::ModuleName>,
    /// May name the processes it creates, each then a program of its own
    /// (`process_create` with a name): set by init only, with
    /// `process_allow_programs`, on the loader (issue 11).
    pub starts_programs: AtomicBool,
    /// IPC: the handle table (closed when the process ends).
    pub ipc: super::kobject::ProcessIpc,
    // --- hw (issue 11) ---
    /// Its I/O permission bitmap (switched in with its threads).
    pub io: crate::arch::iopb::IoPerm,
    /// `process_notify`: what to signal when it ends (taken, under this
    /// lock, after `mark_ended`; see `lifecycle::ended`). One entry per
    /// notification (breakhw: one holder's registration never replaces
    /// another's), pruned of notifications without handles on each insert.
    pub exit_notify: IrqMutex<Vec<(super::hw::Ntf, u64)>>,
    /// `process_set_fault_ep`: the endpoint its threads' faults are
    /// delivered to, with the badge of the handle it was set through.
    pub fault_ep: IrqMutex<Option<(super::hw::Ep, u64)>>,
}

static NEXT_PID: AtomicU64 = AtomicU64::new(1);

/// The default priority of a new thread (lowered to the process's MCP when
/// that is lower).
pub const DEFAULT_PRIORITY: u8 = 4;

impl Process {
    /// A new process with an empty address space, child of `parent` (`None`
    /// for init). Charged to the global [`MAX_PROCESSES`] and to the parent's
    /// [`MAX_CHILDREN`], both checked before anything is allocated.
    pub fn new(parent: Option<&Arc<Process>>) -> Result<Arc<Process>, Error> {
        Self::new_program(parent, false)
    }

    /// As [`Process::new`]; `program` asks for an account of its own even
    /// when the creator is not init (the loader, issue 11: its caller
    /// checked the creator [`starts_programs`](Process::starts_programs)).
    pub fn new_program(
        parent: Option<&Arc<Process>>,
        program: bool,
    ) -> Result<Arc<Process>, Error> {
        if let Some(pp) = parent {
            Account::take(&pp.children, MAX_CHILDREN)?;
        }
        let r = Self::new_charged(parent, program);
        if r.is_err() {
            if let Some(pp) = parent {
                release(&pp.children, "a child slot");
            }
        }
        r
    }

    fn new_charged(parent: Option<&Arc<Process>>, program: bool) -> Result<Arc<Process>, Error> {
        // init's children start programs of their own, and so do the named
        // children of a program starter (the loader); everyone else's
        // children belong to their creator's program. (The new account is
        // charged to MAX_PROCESSES like the record: at most one per process.)
        let account = match parent {
            Some(pp) if pp.pid != INIT_PID && !program => pp.account.clone(),
            _ => Arc::new(Account::new()),
        };
        Account::take(&account.processes, MAX_PROCESSES_PER_PROGRAM)?;
        if LIVE_PROCESSES.fetch_add(1, Ordering::SeqCst) >= MAX_PROCESSES {
            LIVE_PROCESSES.fetch_sub(1, Ordering::SeqCst);
            account.processes.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::NoMemory);
        }
        let space = match AddressSpace::new_charged(Some(account.pages.clone())) {
            Ok(s) => s,
            Err(e) => {
                LIVE_PROCESSES.fetch_sub(1, Ordering::SeqCst);
                account.processes.fetch_sub(1, Ordering::SeqCst);
                return Err(e);
            }
        };
        let mcp = parent.map_or(0, |pp| pp.child_mcp.load(Ordering::SeqCst));
        // The record is charged to the quotas above (at most MAX_PROCESSES
        // of them exist).
        let p = Arc::new(Process {
            pid: ProcessId(NEXT_PID.fetch_add(1, Ordering::Relaxed)),
            children: Arc::new(AtomicUsize::new(0)),
            child_unit: IrqMutex::new(parent.map(|pp| pp.children.clone())),
            joinable: Arc::new(AtomicUsize::new(0)),
            reaped: AtomicBool::new(false),
            account,
            mcp,
            child_mcp: AtomicU8::new(mcp),
            space: IrqMutex::new(Some(space)),
            live_threads: AtomicUsize::new(0),
            threads: IrqMutex::new(ThreadTable::new()),
            exit_status: IrqMutex::new(None),
            ended: AtomicBool::new(false),
            waiters: IrqMutex::new(Vec::new()),
            program: spin::Once::new(),
            starts_programs: AtomicBool::new(false),
            ipc: Default::default(),
            io: Default::default(),
            exit_notify: IrqMutex::new(Vec::new()),
            fault_ep: IrqMutex::new(None),
        });
        Ok(p)
    }

    /// The priority its new threads start at.
    pub fn initial_priority(&self) -> u8 {
        DEFAULT_PRIORITY.max(self.mcp)
    }

    /// Its address space, unless it has ended.
    pub fn space(&self) -> Option<Arc<AddressSpace>> {
        self.space.lock().clone()
    }

    /// Drops the process's own reference to its memory (it ended); the memory
    /// goes when the last thread is reaped.
    pub fn release_space(&self) {
        let space = self.space.lock().take();
        drop(space); // outside the lock: the last reference tears the space down
    }

    /// Whether every thread is gone (the status is final).
    pub fn has_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// Marks the process ended (its status is final, its memory released).
    pub fn mark_ended(&self) {
        self.ended.store(true, Ordering::SeqCst);
    }

    /// Takes the status for the one wait that reaps the process: `Some`
    /// exactly once after it ended (and gives its creator's child unit back
    /// then), `None` before or after.
    pub fn reap(&self) -> Option<u64> {
        if !self.has_ended() || self.reaped.swap(true, Ordering::SeqCst) {
            return None;
        }
        let unit = self.child_unit.lock().take();
        if let Some(c) = unit {
            release(&c, "a child slot");
        }
        Some(self.exit_status.lock().unwrap_or(0))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let unit = self.child_unit.lock().take();
        if let Some(c) = unit {
            release(&c, "a child slot");
        }
        release(&LIVE_PROCESSES, "a process slot");
        release(&self.account.processes, "a program's process");
    }
}
