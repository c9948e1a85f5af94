//! Threads and processes.
//!
//! A [`Thread`] owns a kernel stack (guard page below), the saved kernel RSP of
//! its parked context, an FPU/SIMD save area and its user FS/GS bases; its user
//! register state lives in the [`TrapFrame`] at the top of its kernel stack. A
//! [`Process`] owns an address space and counts its live threads; it ends when
//! the last one does (or one calls `process_exit`, or a fault kills it).
//!
//! # Concurrency
//! The fields in [`ThreadCtx`] are touched only by the CPU that runs the thread
//! or is switching it in or out (with interrupts off); everything shared between
//! CPUs is atomic or behind an [`IrqMutex`].

use crate::arch::context;
use crate::arch::fpu::FpuState;
use crate::arch::trap::TrapFrame;
use crate::mem::kstack::KernelStack;
use crate::sync::IrqMutex;
use crate::vm::{AddressSpace, PageBudget};
use abi::Error;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

/// Thread states.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// In a run queue or running.
    Ready = 0,
    /// Waiting for an event (join, wait, sleep).
    Blocked = 1,
    /// Finished; its stack is freed once another thread runs on its CPU.
    Dead = 2,
}

/// Per-thread state private to the CPU that runs it.
pub struct ThreadCtx {
    /// Kernel RSP while parked in `switch_context`.
    pub saved_rsp: u64,
    /// User FS base.
    pub fs_base: u64,
    /// User GS base (lives in KERNEL_GS_BASE while the thread is in the kernel).
    pub gs_base: u64,
}

/// Bits of [`Thread::work`]: deferred work the thread must do before it runs
/// user code again (Linux's TIF work mask). The return-to-user paths test the
/// whole word once (`syscall.rs`, `isr_return` in `idt.rs`).
pub mod work {
    /// Its process is ending: the thread dies instead of returning to ring 3.
    pub const KILL: u32 = 1 << 0;
    /// Every bit the return paths look at.
    pub const MASK: u32 = KILL;
}

/// A thread of execution.
///
/// Its kernel stack, FPU area and address-space reference go when the last
/// reference to the `Thread` does, which for a dead thread is the CPU that
/// switched away from it ([`crate::sched::finish_switch`]); only its status
/// word outlives it, in its process's thread table, until it is joined.
#[repr(C)]
pub struct Thread {
    /// Deferred work bits ([`work`]). First, at a fixed offset the return
    /// paths reach with one `test` ([`OFF_THREAD_WORK`]).
    pub work: AtomicU32,
    /// Unique id.
    pub tid: u64,
    /// The owning process (`None` for per-CPU idle threads).
    pub process: Option<Arc<Process>>,
    /// The address space it runs in (`None` for idle threads, which run on the
    /// kernel's tables). Threads hold it, not just their process, so the
    /// memory of an ended process goes away with its last thread even while
    /// the process record waits for its parent.
    pub space: Option<Arc<AddressSpace>>,
    /// The kernel stack (`None` for the boot CPU's idle thread, which runs on
    /// the boot stack).
    kstack: Option<KernelStack>,
    ctx: UnsafeCell<ThreadCtx>,
    /// Saved FPU/SIMD registers.
    pub fpu: FpuState,
    state: AtomicU8,
    /// Scheduling priority (0 highest).
    pub priority: AtomicU8,
    /// Set while `priority` is raised to its process's ceiling for an
    /// address-space edit (`vm::AddressSpace::edit`): a thread queued at that
    /// level or better may then preempt it (see `sched::tick`).
    pub ceiling: AtomicBool,
    /// Pinned CPU, or `u32::MAX`.
    pub affinity: AtomicU32,
    /// The CPU it last ran on.
    pub last_cpu: AtomicU32,
    /// Set while a CPU is running it (or still switching away from it).
    pub on_cpu: AtomicBool,
    /// Exit status word, valid once Dead.
    pub status: AtomicU64,
    /// Wake-up deadline while sleeping (ns since boot).
    pub wake_at_ns: AtomicU64,
    /// Threads waiting in `thread_join` for this one.
    pub joiners: IrqMutex<Vec<Arc<Thread>>>,
    /// IPC: wake claim, wait record, reply capability (`ipc/`).
    pub ipc: crate::object::waitstate::ThreadIpc,
}

/// Offset of [`Thread::work`] inside a `Thread` (what `PerCpu::current_thread`
/// points at), for the return-to-user asm.
pub const OFF_THREAD_WORK: usize = core::mem::offset_of!(Thread, work);
const _: () = assert!(OFF_THREAD_WORK == 0);

// SAFETY: `ctx` is only accessed by the CPU that owns the thread at that moment
// (running or switching it, interrupts off); all other fields are Sync.
unsafe impl Sync for Thread {}
// SAFETY: as above.
unsafe impl Send for Thread {}

static NEXT_TID: AtomicU64 = AtomicU64::new(1);

/// The most user threads alive at once (each costs a 32 KiB stack and about
/// 1.5 KiB of heap; the smallest heap is 4 MiB). More is an error, not a panic.
pub const MAX_THREADS: usize = 1024;

// Every thread's kernel stack, and the five stacks of each CPU, sit in slots
// whose page tables exist from boot (no table is allocated per thread).
const _: () = assert!(
    MAX_THREADS as u64 + 5 * crate::arch::apic::MAX_CPUS as u64
        <= crate::mem::kstack::PREALLOC_SLOTS
);
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

static LIVE_THREADS: AtomicUsize = AtomicUsize::new(0);
static LIVE_PROCESSES: AtomicUsize = AtomicUsize::new(0);

/// Gives one unit of a quota counter back. A release without a matching take
/// is a kernel bug; it is logged and the counter stays at 0, because a
/// wrapped counter would refuse every later take (NoMemory for good).
fn release(counter: &AtomicUsize, what: &str) {
    if counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_err()
    {
        log::error!("quota: {what} released more often than taken");
    }
}

/// User threads alive (a thread counts until its kernel stack is freed).
pub fn live_threads() -> usize {
    LIVE_THREADS.load(Ordering::SeqCst)
}

/// Process records alive.
pub fn live_processes() -> usize {
    LIVE_PROCESSES.load(Ordering::SeqCst)
}

/// One unit of [`MAX_THREADS`] and of its program's
/// [`MAX_THREADS_PER_PROGRAM`], returned on drop.
struct ThreadSlot<'a>(&'a Account);

impl ThreadSlot<'_> {
    fn take(account: &Account) -> Result<ThreadSlot<'_>, Error> {
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

impl Drop for Thread {
    fn drop(&mut self) {
        // Memory first, counts after: whoever sees the counts settle (a
        // parent's `process_wait`, `sysinfo`) also sees the memory back.
        drop(self.kstack.take()); // unmapped, TLBs shot down, frames freed
        drop(self.space.take()); // the process keeps its own reference
        if let Some(p) = self.process.take() {
            let last = p.live_threads.fetch_sub(1, Ordering::SeqCst) == 1;
            // The global and program slots (its `ThreadSlot` was forgotten
            // at creation).
            drop(ThreadSlot(&p.account));
            if last {
                // Only now does the process end: its waiters are woken after
                // this thread's stack, slot and process reference are gone.
                crate::process::ended(p, self.status.load(Ordering::SeqCst));
            }
        }
    }
}

impl Thread {
    /// A user thread of `process` that will enter ring 3 with `frame`, at
    /// `priority`. Entered in the process's thread table (the authoritative
    /// list kill walks) unless the process is ending (`NotFound`) or at its
    /// thread quota (`NoMemory`); the caller queues it.
    pub fn new_user(
        process: &Arc<Process>,
        frame: &TrapFrame,
        priority: u8,
    ) -> Result<Arc<Thread>, Error> {
        // Cheap checks first, so a process at its quota allocates nothing.
        process.threads.lock().admit()?;
        let space = process.space().ok_or(Error::NotFound)?;
        let slot = ThreadSlot::take(&process.account)?;
        let kstack = KernelStack::new().map_err(|_| Error::NoMemory)?;
        let fpu = FpuState::new().ok_or(Error::NoMemory)?;
        // SAFETY: the stack is freshly mapped, unused and 16-byte aligned.
        let rsp = unsafe { context::prepare_stack(kstack.top(), frame) };
        // From here the Thread's drop releases the slot (the global and the
        // program's unit) and the process count.
        core::mem::forget(slot);
        process.live_threads.fetch_add(1, Ordering::SeqCst);
        let t = Arc::new(Thread {
            work: AtomicU32::new(0),
            tid: NEXT_TID.fetch_add(1, Ordering::Relaxed),
            process: Some(process.clone()),
            space: Some(space),
            kstack: Some(kstack),
            ctx: UnsafeCell::new(ThreadCtx {
                saved_rsp: rsp,
                fs_base: 0,
                gs_base: 0,
            }),
            fpu,
            state: AtomicU8::new(State::Ready as u8),
            priority: AtomicU8::new(priority),
            ceiling: AtomicBool::new(false),
            affinity: AtomicU32::new(u32::MAX),
            last_cpu: AtomicU32::new(crate::arch::percpu::cpu_id()),
            on_cpu: AtomicBool::new(false),
            status: AtomicU64::new(0),
            wake_at_ns: AtomicU64::new(0),
            joiners: IrqMutex::new(Vec::new()),
            ipc: Default::default(),
        });
        // Under the table lock: either the process is not ending and the
        // thread is listed (so a later kill finds it), or creation fails.
        let r = process.threads.lock().insert(&t);
        match r {
            Ok(()) => Ok(t),
            Err(e) => {
                drop(t); // outside the lock: frees the stack (shootdown)
                Err(e)
            }
        }
    }

    /// The idle thread of a CPU: runs kernel code on the stack it is created on
    /// (its context is filled by the first switch away from it).
    pub fn new_idle() -> Result<Arc<Thread>, Error> {
        Ok(Arc::new(Thread {
            work: AtomicU32::new(0),
            tid: NEXT_TID.fetch_add(1, Ordering::Relaxed),
            process: None,
            space: None,
            kstack: None,
            ctx: UnsafeCell::new(ThreadCtx {
                saved_rsp: 0,
                fs_base: 0,
                gs_base: 0,
            }),
            fpu: FpuState::new().ok_or(Error::NoMemory)?,
            state: AtomicU8::new(State::Ready as u8),
            priority: AtomicU8::new(abi::MAX_PRIORITY as u8),
            ceiling: AtomicBool::new(false),
            affinity: AtomicU32::new(crate::arch::percpu::cpu_id()),
            last_cpu: AtomicU32::new(crate::arch::percpu::cpu_id()),
            on_cpu: AtomicBool::new(true),
            status: AtomicU64::new(0),
            wake_at_ns: AtomicU64::new(0),
            joiners: IrqMutex::new(Vec::new()),
            ipc: Default::default(),
        }))
    }

    /// The thread's CPU-private context.
    ///
    /// # Safety
    /// Only the CPU running this thread, or switching it in or out with
    /// interrupts off, may call this, and not while another reference from
    /// this function is alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn ctx(&self) -> &mut ThreadCtx {
        // SAFETY: exclusive per the caller's contract.
        unsafe { &mut *self.ctx.get() }
    }

    /// Top of the kernel stack (0 for the boot idle thread).
    pub fn kstack_top(&self) -> u64 {
        self.kstack.as_ref().map_or(0, |k| k.top())
    }

    /// The current state.
    pub fn state(&self) -> State {
        match self.state.load(Ordering::SeqCst) {
            0 => State::Ready,
            1 => State::Blocked,
            _ => State::Dead,
        }
    }

    /// Sets the state.
    pub fn set_state(&self, s: State) {
        self.state.store(s as u8, Ordering::SeqCst);
    }

    /// Blocked -> Ready; false if it was not blocked.
    pub fn try_unblock(&self) -> bool {
        self.state
            .compare_exchange(
                State::Blocked as u8,
                State::Ready as u8,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
    }

    /// Whether it is an idle thread.
    pub fn is_idle(&self) -> bool {
        self.process.is_none()
    }

    /// Whether its process is ending (it must not run user code again).
    pub fn killed(&self) -> bool {
        self.work.load(Ordering::SeqCst) & work::KILL != 0
    }

    /// Asks the thread to die before it next runs user code, and makes sure
    /// it notices: a blocked thread is woken (its wait loop checks
    /// [`Thread::killed`]), one running on another CPU is kicked (the
    /// interrupt's return path tests the work word), and a queued or
    /// just-created one tests the word on its way out of the kernel.
    ///
    /// # Ordering (Dekker)
    /// Kill side: `fetch_or(KILL)` (a locked RMW, a full barrier) *then* load
    /// `on_cpu`/`last_cpu`. Victim side (`sched::switch_to`): store
    /// `last_cpu`, `on_cpu.swap(true)` (`xchg`, a full barrier) *then*, later,
    /// load the work word on the way back to ring 3. Each side stores before it
    /// loads with a full barrier between, so at least one sees the other:
    /// either the victim sees KILL, or the killer sees it on its new CPU and
    /// kicks that CPU, whose interrupt return then sees KILL.
    pub fn kill(self: &Arc<Self>) {
        self.work.fetch_or(work::KILL, Ordering::SeqCst);
        if !crate::sched::wake(self) && self.on_cpu.load(Ordering::SeqCst) {
            crate::smp::kick(self.last_cpu.load(Ordering::SeqCst) as usize);
        }
    }
}

/// One row of a process's thread table: a live thread, or the status word
/// of a dead one not yet joined.
pub struct ThreadEntry {
    tid: u64,
    /// `None` once the thread died (its status is in `status`).
    thread: Option<Arc<Thread>>,
    status: u64,
}

/// A process's threads: the authoritative list that kill walks. Live threads
/// and dead unjoined ones (status only, 24 bytes) both count against
/// [`MAX_THREADS_PER_PROCESS`]; a join removes the row.
pub struct ThreadTable {
    /// Set (under this lock) when the process starts ending; from then on no
    /// thread is added.
    exiting: bool,
    rows: Vec<ThreadEntry>,
}

impl ThreadTable {
    const fn new() -> ThreadTable {
        ThreadTable {
            exiting: false,
            rows: Vec::new(),
        }
    }

    /// Whether one more thread may be added: not ending, under quota, and
    /// room for its row (`try_reserve`: never an infallible allocation).
    fn admit(&mut self) -> Result<(), Error> {
        if self.exiting {
            return Err(Error::NotFound);
        }
        if self.rows.len() >= MAX_THREADS_PER_PROCESS {
            return Err(Error::NoMemory);
        }
        self.rows.try_reserve(1).map_err(|_| Error::NoMemory)
    }

    /// Whether the process is ending (no thread or child may start).
    pub fn is_exiting(&self) -> bool {
        self.exiting
    }

    fn insert(&mut self, t: &Arc<Thread>) -> Result<(), Error> {
        self.admit()?;
        self.rows.push(ThreadEntry {
            tid: t.tid,
            thread: Some(t.clone()),
            status: 0,
        });
        Ok(())
    }

    /// Records that thread `tid` died with `status`; returns its reference
    /// for the caller to drop outside the lock.
    pub fn record_exit(&mut self, tid: u64, status: u64) -> Option<Arc<Thread>> {
        let row = self.rows.iter_mut().find(|r| r.tid == tid)?;
        row.status = status;
        row.thread.take()
    }

    /// Whether no listed thread is alive any more (all have recorded their
    /// exit); if so the process is ending, so no thread is added from now on.
    pub fn none_live(&mut self) -> bool {
        let none = self.rows.iter().all(|r| r.thread.is_none());
        if none {
            self.exiting = true;
        }
        none
    }

    /// Thread `tid`: `Ok(status)` (and the row removed) if it is dead,
    /// `Err(thread)` if it still runs; `None` if there is no such thread.
    pub fn join(&mut self, tid: u64) -> Option<Result<u64, Arc<Thread>>> {
        let i = self.rows.iter().position(|r| r.tid == tid)?;
        match &self.rows[i].thread {
            Some(t) => Some(Err(t.clone())),
            None => Some(Ok(self.rows.swap_remove(i).status)),
        }
    }

    /// Marks the process as ending (no thread is added from now on) and kills
    /// every live thread but `except`.
    pub fn kill_all(&mut self, except: u64) {
        self.exiting = true;
        for t in self.rows.iter().filter_map(|r| r.thread.as_ref()) {
            if t.tid != except {
                t.kill();
            }
        }
    }

    /// Takes the rows (the process ended: nothing is left to join); the
    /// caller drops them outside the lock.
    pub fn take_rows(&mut self) -> Vec<ThreadEntry> {
        self.exiting = true;
        core::mem::take(&mut self.rows)
    }
}

/// A process: an address space and the threads running in it.
pub struct Process {
    /// Process id.
    pub pid: u64,
    /// The parent's pid; 0 for init and for orphans (whose parent ended: an
    /// orphan's record is reaped as soon as it ends, nobody can wait for it).
    parent: AtomicU64,
    /// Child records alive (running, or ended and not yet waited for);
    /// at most [`MAX_CHILDREN`].
    children: AtomicUsize,
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
    pub status: IrqMutex<Option<u64>>,
    /// Set once every thread is gone and the memory released.
    ended: AtomicBool,
    /// Threads blocked in `process_wait` for it.
    pub waiters: IrqMutex<Vec<Arc<Thread>>>,
    /// The program it runs, when known: the boot module whose bytes it was
    /// spawned from (`process::spawn`), named in its fault lines so the
    /// runner can symbolize them against that program's ELF. Set at most once;
    /// the hook for the loader server to name the programs it loads.
    pub program: spin::Once<kcore::bootinfo::ModuleName>,
    /// IPC: the handle table (closed when the process ends).
    pub ipc: crate::object::kobject::ProcessIpc,
}

static NEXT_PID: AtomicU64 = AtomicU64::new(1);

/// Every process not yet waited for (or reaped), by pid.
static PROCESSES: IrqMutex<BTreeMap<u64, Arc<Process>>> = IrqMutex::new(BTreeMap::new());

/// The default priority of a new thread (lowered to the process's MCP when
/// that is lower).
pub const DEFAULT_PRIORITY: u8 = 4;

impl Process {
    /// A new process with an empty address space, child of `parent` (`None`
    /// for init). Charged to the global [`MAX_PROCESSES`] and to the parent's
    /// [`MAX_CHILDREN`], both checked before anything is allocated.
    pub fn new(parent: Option<&Arc<Process>>) -> Result<Arc<Process>, Error> {
        if let Some(pp) = parent {
            if pp.children.fetch_add(1, Ordering::SeqCst) >= MAX_CHILDREN {
                pp.children.fetch_sub(1, Ordering::SeqCst);
                return Err(Error::NoMemory);
            }
        }
        let r = Self::new_charged(parent);
        if r.is_err() {
            if let Some(pp) = parent {
                pp.children.fetch_sub(1, Ordering::SeqCst);
            }
        }
        r
    }

    fn new_charged(parent: Option<&Arc<Process>>) -> Result<Arc<Process>, Error> {
        // init's children start programs of their own; everyone else's
        // children belong to their creator's program. (The new account is
        // charged to MAX_PROCESSES like the record: at most one per process.)
        let account = match parent {
            Some(pp) if pp.pid != crate::process::INIT_PID => pp.account.clone(),
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
        // The record and its map node are charged to the quotas above (at
        // most MAX_PROCESSES of them exist).
        let p = Arc::new(Process {
            pid: NEXT_PID.fetch_add(1, Ordering::Relaxed),
            parent: AtomicU64::new(parent.map_or(0, |pp| pp.pid)),
            children: AtomicUsize::new(0),
            account,
            mcp,
            child_mcp: AtomicU8::new(mcp),
            space: IrqMutex::new(Some(space)),
            live_threads: AtomicUsize::new(0),
            threads: IrqMutex::new(ThreadTable::new()),
            status: IrqMutex::new(None),
            ended: AtomicBool::new(false),
            waiters: IrqMutex::new(Vec::new()),
            program: spin::Once::new(),
            ipc: Default::default(),
        });
        PROCESSES.lock().insert(p.pid, p.clone());
        Ok(p)
    }

    /// The parent's pid (0: none, or it ended).
    pub fn parent(&self) -> u64 {
        self.parent.load(Ordering::SeqCst)
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

    /// Marks the process ended and settles the records of the family:
    /// its children become orphans (those already ended are reaped now, the
    /// others when they end), and it reaps itself if it is an orphan.
    ///
    /// # Ordering
    /// `ended` is stored before the table lock is taken, and both this
    /// process's check of its own `parent` and a parent's check of a child's
    /// `ended` happen under that lock, so whichever of parent and child gets
    /// the lock second sees the other's state: an ended orphan is always
    /// reaped exactly once.
    pub fn mark_ended(&self) {
        self.ended.store(true, Ordering::SeqCst);
        let mut table = PROCESSES.lock();
        // Removed records are dropped inside the lock: an ended process holds
        // no memory or threads any more, so that drop only frees heap.
        table.retain(|_, c| {
            if c.parent.load(Ordering::SeqCst) != self.pid {
                return true;
            }
            c.parent.store(0, Ordering::SeqCst);
            !c.ended.load(Ordering::SeqCst)
        });
        if self.parent.load(Ordering::SeqCst) == 0 && self.pid != 1 {
            table.remove(&self.pid);
        }
    }

    /// Returns one unit of the children quota (a child record was removed).
    pub fn release_child(&self) {
        release(&self.children, "a child slot");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        release(&LIVE_PROCESSES, "a process slot");
        release(&self.account.processes, "a program's process");
    }
}

/// Looks a process up by pid.
pub fn process_by_id(pid: u64) -> Option<Arc<Process>> {
    PROCESSES.lock().get(&pid).cloned()
}

/// Forgets a process (after it was waited for, or failed to start).
pub fn forget_process(pid: u64) {
    // Drop the record outside the table lock.
    let p = PROCESSES.lock().remove(&pid);
    drop(p);
}

/// Removes a process record and returns it (a parent reaping its child).
pub fn take_process(pid: u64) -> Option<Arc<Process>> {
    PROCESSES.lock().remove(&pid)
}
