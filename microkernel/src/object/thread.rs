//! Threads: data and invariants only (creation is [`crate::lifecycle`]'s,
//! running them is [`crate::sched`]'s).
//!
//! A [`Thread`] owns a kernel stack (guard page below), the saved kernel RSP of
//! its parked context, an FPU/SIMD save area and its user FS/GS bases; its user
//! register state lives in the [`TrapFrame`] at the top of its kernel stack.
//! Its shared fields are grouped by who uses them: [`SchedState`] (the
//! scheduler's), [`ThreadExit`] (exit and join: what a thread handle names);
//! IPC state comes next.
//!
//! # Concurrency
//! The fields in [`ThreadCtx`] are touched only by the CPU that runs the thread
//! or is switching it in or out (with interrupts off); everything shared between
//! CPUs is atomic or behind an [`IrqMutex`].

use super::process::{JoinableSlot, Process, ThreadSlot};
use super::space::AddressSpace;
use crate::arch::context;
use crate::arch::fpu::FpuState;
use crate::arch::percpu::{self, work, MAX_CPUS};
use crate::arch::trap::TrapFrame;
use crate::mem::kstack::KernelStack;
use crate::sync::IrqMutex;
use abi::Error;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

/// A thread's kernel-wide id (the `thread_id` syscall's value).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ThreadId(u64);

impl ThreadId {
    /// The raw value, for user space and logs.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl core::fmt::Display for ThreadId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.fmt(f)
    }
}

/// Thread states.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadState {
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

/// What the scheduler reads and writes (all atomics: any CPU may look).
pub struct SchedState {
    state: AtomicU8,
    /// Scheduling priority (0 highest).
    pub priority: AtomicU8,
    /// Set while `priority` is raised to its process's ceiling for an
    /// address-space edit (`AddressSpace::edit`): a thread queued at that
    /// level or better may then preempt it (see `sched::tick`).
    pub ceiling: AtomicBool,
    /// Pinned CPU, or `u32::MAX`.
    pub affinity: AtomicU32,
    /// The CPU it last ran on.
    pub last_cpu: AtomicU32,
    /// Set while a CPU is running it (or still switching away from it).
    pub on_cpu: AtomicBool,
    /// Counted in the scheduler's stealable-thread count: set when it was
    /// queued unpinned, cleared when taken off that queue (both under the
    /// queue's lock; `sched::push`).
    pub stealable: AtomicBool,
    /// Wake-up deadline while sleeping (ns since boot).
    pub wake_at_ns: AtomicU64,
}

const _: () = assert!(percpu::MAX_CPUS <= 64);

/// How the thread ended, and who waits for that: the record a thread handle
/// names (`Object::Thread`). The thread holds it while it lives and every
/// handle holds it after, so a joiner gets the status however long after the
/// thread's stack is gone; it is freed with the last of them.
pub struct ThreadExit {
    inner: IrqMutex<ExitInner>,
    /// The creating process's count of joinable thread records
    /// ([`MAX_THREADS_PER_PROCESS`](super::process::MAX_THREADS_PER_PROCESS)):
    /// one unit, given back by the join that reaps this record or, if none
    /// does, by its drop. `None` for idle threads.
    charge: Option<Arc<AtomicUsize>>,
}

struct ExitInner {
    /// Set (with `status`) when the thread ends.
    done: bool,
    status: u64,
    /// A join took the status: later joins find nothing.
    reaped: bool,
    /// Threads blocked in `thread_join` for it.
    joiners: Vec<Arc<Thread>>,
    /// The thread while it lives (for a kill through a handle). Weak: a
    /// handle must not keep a dead thread's memory, and no cycle forms.
    thread: Option<Weak<Thread>>,
}

/// What a join found.
pub enum Joined {
    /// The thread ended: its status (the record is now reaped).
    Status(u64),
    /// Another join reaped it already.
    Reaped,
    /// Still running: the caller was added to the joiners (Blocked).
    Waiting,
}

impl ThreadExit {
    fn new(charge: Option<Arc<AtomicUsize>>) -> ThreadExit {
        ThreadExit {
            inner: IrqMutex::new(ExitInner {
                done: false,
                status: 0,
                reaped: false,
                joiners: Vec::new(),
                thread: None,
            }),
            charge,
        }
    }

    /// The live thread, if it has not ended.
    pub fn thread(&self) -> Option<Arc<Thread>> {
        self.inner.lock().thread.as_ref().and_then(Weak::upgrade)
    }

    /// The exit status (0 until the thread ended).
    pub fn status(&self) -> u64 {
        self.inner.lock().status
    }

    /// Records that the thread ended with `status` and returns its joiners to
    /// wake. Under the record's lock, so a join either sees `done` or is on
    /// the list returned here.
    pub fn finish(&self, status: u64) -> Vec<Arc<Thread>> {
        let mut g = self.inner.lock();
        g.done = true;
        g.status = status;
        g.thread = None;
        core::mem::take(&mut g.joiners)
    }

    /// One join step for `cur`: the status (reaping the record), `Reaped`, or
    /// `cur` queued and marked Blocked (`NoMemory` if the list cannot grow).
    pub fn join(&self, cur: &Arc<Thread>) -> Result<Joined, Error> {
        let mut g = self.inner.lock();
        if g.done {
            if core::mem::replace(&mut g.reaped, true) {
                return Ok(Joined::Reaped);
            }
            let st = g.status;
            drop(g);
            if let Some(c) = &self.charge {
                super::process::release(c, "a joinable thread");
            }
            return Ok(Joined::Status(st));
        }
        // Listed once: after a spurious wake-up (a sleep-list entry that
        // outlived its sleep) the caller comes back still listed, and a
        // second entry would outlive a kill's `leave` (keeping the dead
        // thread, its stack and its process, until this thread ends).
        if !g.joiners.iter().any(|x| Arc::ptr_eq(x, cur)) {
            g.joiners.try_reserve(1).map_err(|_| Error::NoMemory)?;
            g.joiners.push(cur.clone());
        }
        cur.set_state(ThreadState::Blocked);
        Ok(Joined::Waiting)
    }

    /// Takes `cur` off the joiner list (it was woken by a kill); returns its
    /// entry for the caller to drop outside the lock.
    pub fn leave(&self, cur: &Arc<Thread>) -> Option<Arc<Thread>> {
        let mut g = self.inner.lock();
        let i = g.joiners.iter().position(|x| Arc::ptr_eq(x, cur))?;
        Some(g.joiners.swap_remove(i))
    }
}

impl Drop for ThreadExit {
    fn drop(&mut self) {
        if let Some(c) = &self.charge {
            if !self.inner.lock().reaped {
                super::process::release(c, "a joinable thread");
            }
        }
    }
}

/// A thread of execution.
///
/// Its kernel stack, FPU area and address-space reference go when the last
/// reference to the `Thread` does, which for a dead thread is the CPU that
/// switched away from it (`sched::finish_switch`); only its status
/// word outlives it, in its process's thread table, until it is joined.
#[repr(C)]
pub struct Thread {
    /// Deferred work bits ([`work`]). First, at the fixed offset the return
    /// paths reach with one `test` ([`percpu::OFF_THREAD_WORK`]).
    pub work: AtomicU32,
    /// Unique id.
    pub tid: ThreadId,
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
    /// `kstack`'s top (0 without one), computed once: every switch to the
    /// thread reads it (ipcfast: the `Option` test and the slot arithmetic
    /// cost the IPC round trip ~10 instructions). `kstack` is only taken
    /// in `drop`, so this never goes stale while the thread can run.
    kstack_top: u64,
    /// `space`'s root (0 without one), computed once: every switch to the
    /// thread loads it (switch2: one load instead of two a switch). A
    /// space's root never changes, and `space` is only taken in `drop`.
    root: u64,
    ctx: UnsafeCell<ThreadCtx>,
    /// Saved FPU/SIMD registers.
    pub fpu: FpuState,
    /// The scheduler's fields.
    pub sched: SchedState,
    /// Exit and join: the record thread handles name.
    pub exit: Arc<ThreadExit>,
    /// IPC: wake claim, wait record, reply capability (`ipc/`).
    pub ipc: super::waitstate::ThreadIpc,
    // --- hw (issue 11) ---
    /// Parked by a suspension (`lifecycle::park_suspended`): set, under
    /// this lock, with the thread's Blocked state; taken by the resume that
    /// wakes it. No other waker touches a parked thread but a kill.
    pub suspend_parked: IrqMutex<bool>,
}

// The return-to-user asm tests `[current_thread + OFF_THREAD_WORK]`.
const _: () = assert!(core::mem::offset_of!(Thread, work) == percpu::OFF_THREAD_WORK);

// SAFETY: `ctx` is only accessed by the CPU that owns the thread at that moment
// (running or switching it, interrupts off); all other fields are Sync.
unsafe impl Sync for Thread {}
// SAFETY: as above.
unsafe impl Send for Thread {}

static NEXT_TID: AtomicU64 = AtomicU64::new(1);

/// The most user threads alive at once (each costs a 32 KiB stack and about
/// 1.5 KiB of heap; the smallest heap is 4 MiB). More is an error, not a panic.
pub const MAX_THREADS: usize = 1024;

// Every thread's kernel stack, the five stacks of each CPU, the freed
// stacks awaiting their batched flush (`kstack::PURGE_BATCH`) and those
// kept for reuse (`kstack::CACHE`) sit in slots whose page tables exist
// from boot (no table is allocated per thread).
const _: () = assert!(
    MAX_THREADS as u64
        + 5 * MAX_CPUS as u64
        + crate::mem::kstack::PURGE_BATCH as u64
        + crate::mem::kstack::CACHE as u64
        <= crate::mem::kstack::PREALLOC_SLOTS
);

/// User threads alive (a thread counts until its kernel stack is freed).
pub(super) static LIVE_THREADS: AtomicUsize = AtomicUsize::new(0);

/// User threads alive (a thread counts until its kernel stack is freed).
pub fn live_threads() -> usize {
    LIVE_THREADS.load(Ordering::SeqCst)
}

/// The running thread.
#[inline(always)]
pub fn current() -> &'static Thread {
    let p = percpu::current_thread() as *const Thread;
    // SAFETY: current_thread names a thread kept by its life reference
    // (the scheduler's invariant, cut27r), which outlives any use on this
    // CPU until the switch after its exit.
    unsafe { &*p }
}

/// A new strong reference to the running thread.
pub fn current_arc() -> Arc<Thread> {
    let p = percpu::current_thread() as *const Thread;
    // SAFETY: as in `current`; incrementing first makes the `from_raw`
    // own a reference of its own (the life reference stays).
    unsafe {
        Arc::increment_strong_count(p);
        Arc::from_raw(p)
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
            drop(ThreadSlot::returned(&p.account));
            if last {
                // Only now does the process end: its waiters are woken after
                // this thread's stack, slot and process reference are gone.
                super::process::last_thread_gone(p, self.exit.status());
            }
        }
    }
}

/// The fields that differ between a user thread and an idle one.
struct Parts {
    process: Option<Arc<Process>>,
    space: Option<Arc<AddressSpace>>,
    kstack: Option<KernelStack>,
    saved_rsp: u64,
    fpu: FpuState,
    priority: u8,
    affinity: u32,
    on_cpu: bool,
    /// The unit of its process's joinable-thread count (`None`: idle).
    charge: Option<Arc<AtomicUsize>>,
}

impl Thread {
    /// The one constructor: every field is written here.
    fn from_parts(p: Parts) -> Thread {
        // Its memory is given back a grace period after its free
        // (`mem::retire`): the uncounted references of `WaitOn::Reply`.
        crate::mem::retire::defer_arcs_of::<Thread>();
        let here = percpu::cpu_id().get();
        let tid = ThreadId(NEXT_TID.fetch_add(1, Ordering::Relaxed));
        Thread {
            work: AtomicU32::new(0),
            tid,
            process: p.process,
            root: p.space.as_ref().map_or(0, |s| s.root()),
            space: p.space,
            kstack_top: p.kstack.as_ref().map_or(0, KernelStack::top),
            kstack: p.kstack,
            ctx: UnsafeCell::new(ThreadCtx {
                saved_rsp: p.saved_rsp,
                fs_base: 0,
                gs_base: 0,
            }),
            suspend_parked: IrqMutex::new(false),
            fpu: p.fpu,
            sched: SchedState {
                state: AtomicU8::new(ThreadState::Ready as u8),
                priority: AtomicU8::new(p.priority),
                ceiling: AtomicBool::new(false),
                affinity: AtomicU32::new(p.affinity),
                last_cpu: AtomicU32::new(here),
                on_cpu: AtomicBool::new(p.on_cpu),
                stealable: AtomicBool::new(false),
                wake_at_ns: AtomicU64::new(0),
            },
            // Bounded like the thread itself (a record per thread, kept
            // after it only by handles, which are bounded per table).
            exit: Arc::new(ThreadExit::new(p.charge)),
            ipc: Default::default(),
        }
    }

    /// A user thread of `process` that will enter ring 3 with `frame`, at
    /// `priority`. Entered in the process's thread table (the authoritative
    /// list kill walks) unless the process is ending (`NotFound`) or at its
    /// thread quota (`NoMemory`); the caller queues it (or, if it cannot,
    /// takes it out again with `ThreadTable::remove` and drops it).
    pub fn new_user(
        process: &Arc<Process>,
        frame: &TrapFrame,
        priority: u8,
    ) -> Result<Arc<Thread>, Error> {
        // Cheap checks first, so a process at its quota allocates nothing.
        process.threads.lock().admit()?;
        let space = process.space().ok_or(Error::NotFound)?;
        let charge = JoinableSlot::take(&process.joinable)?;
        let slot = ThreadSlot::take(&process.account)?;
        let kstack = KernelStack::new().map_err(|_| Error::NoMemory)?;
        let fpu = FpuState::new().ok_or(Error::NoMemory)?;
        // SAFETY: the stack is freshly mapped, unused and 16-byte aligned.
        let rsp = unsafe { context::prepare_stack(kstack.top(), frame) };
        // From here the Thread's drop releases the slot (the global and the
        // program's unit) and the process count.
        core::mem::forget(slot);
        process.live_threads.fetch_add(1, Ordering::SeqCst);
        let t = Arc::new(Thread::from_parts(Parts {
            process: Some(process.clone()),
            space: Some(space),
            kstack: Some(kstack),
            saved_rsp: rsp,
            fpu,
            priority,
            affinity: u32::MAX,
            on_cpu: false,
            charge: Some(charge.keep()),
        }));
        // Before any handle can name the record: a kill through one always
        // finds the thread until it ends.
        t.exit.inner.lock().thread = Some(Arc::downgrade(&t));
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
        Ok(Arc::new(Thread::from_parts(Parts {
            process: None,
            space: None,
            kstack: None,
            saved_rsp: 0,
            fpu: FpuState::new().ok_or(Error::NoMemory)?,
            priority: abi::MAX_PRIORITY as u8,
            affinity: percpu::cpu_id().get(),
            on_cpu: true,
            charge: None,
        })))
    }

    /// The offset of the saved RSP ([`ThreadCtx::saved_rsp`]) in a thread,
    /// for the frameless hand-off's compare with memory
    /// (`sched::switch_direct_frameless`, cut28s).
    pub const SAVED_RSP_OFFSET: usize =
        core::mem::offset_of!(Thread, ctx) + core::mem::offset_of!(ThreadCtx, saved_rsp);

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

    /// Where the thread's syscall frame is while it is in a syscall: the
    /// [`TrapFrame`](crate::arch::trap::TrapFrame) the entry stub builds at
    /// the top of its kernel stack (a user thread's; meaningless for a
    /// kernel thread). Only an address: who writes through it must own the
    /// frame's output registers (the IPC fast path's frame delivery, by
    /// the wait claim it won).
    #[inline(always)]
    pub fn syscall_frame(&self) -> *mut crate::arch::trap::TrapFrame {
        self.kstack_top
            .wrapping_sub(core::mem::size_of::<crate::arch::trap::TrapFrame>() as u64)
            as *mut crate::arch::trap::TrapFrame
    }

    /// Top of the kernel stack (0 for the boot idle thread).
    pub fn kstack_top(&self) -> u64 {
        self.kstack_top
    }

    /// The root (CR3 value) of the thread's space, 0 for a thread without
    /// one (an idle thread).
    #[inline(always)]
    pub fn root(&self) -> u64 {
        self.root
    }

    /// The current state.
    pub fn state(&self) -> ThreadState {
        match self.sched.state.load(Ordering::SeqCst) {
            0 => ThreadState::Ready,
            1 => ThreadState::Blocked,
            _ => ThreadState::Dead,
        }
    }

    /// Sets the state.
    pub fn set_state(&self, s: ThreadState) {
        self.sched.state.store(s as u8, Ordering::SeqCst);
    }

    /// Blocked -> Ready; false if it was not blocked.
    pub fn try_unblock(&self) -> bool {
        self.sched
            .state
            .compare_exchange(
                ThreadState::Blocked as u8,
                ThreadState::Ready as u8,
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

    /// Sets the KILL work bit (`lifecycle::kill` then makes sure the
    /// thread notices). A locked RMW: a full barrier (see `lifecycle::kill`).
    pub fn mark_killed(&self) {
        self.work.fetch_or(work::KILL, Ordering::SeqCst);
    }

    /// The pid of its process (0 for an idle thread), for logs and user output.
    pub fn pid(&self) -> u64 {
        self.process.as_ref().map_or(0, |p| p.pid.get())
    }
}
