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
use crate::vm::AddressSpace;
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

/// A thread of execution.
pub struct Thread {
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
    /// Pinned CPU, or `u32::MAX`.
    pub affinity: AtomicU32,
    /// The CPU it last ran on.
    pub last_cpu: AtomicU32,
    /// Set while a CPU is running it (or still switching away from it).
    pub on_cpu: AtomicBool,
    /// Asked to die (its process is ending).
    pub killed: AtomicBool,
    /// Exit status word, valid once Dead.
    pub status: AtomicU64,
    /// Wake-up deadline while sleeping (ns since boot).
    pub wake_at_ns: AtomicU64,
    /// Threads waiting in `thread_join` for this one.
    pub joiners: IrqMutex<Vec<Arc<Thread>>>,
}

// SAFETY: `ctx` is only accessed by the CPU that owns the thread at that moment
// (running or switching it, interrupts off); all other fields are Sync.
unsafe impl Sync for Thread {}
// SAFETY: as above.
unsafe impl Send for Thread {}

static NEXT_TID: AtomicU64 = AtomicU64::new(1);

/// The most user threads alive at once (each costs a 32 KiB stack and about
/// 1.5 KiB of heap; the smallest heap is 4 MiB). More is an error, not a panic.
pub const MAX_THREADS: usize = 1024;
/// The most processes whose records exist at once (running or not yet waited
/// for).
pub const MAX_PROCESSES: usize = 256;

static LIVE_THREADS: AtomicUsize = AtomicUsize::new(0);
static LIVE_PROCESSES: AtomicUsize = AtomicUsize::new(0);

/// User threads alive.
pub fn live_threads() -> usize {
    LIVE_THREADS.load(Ordering::Relaxed)
}

/// Process records alive.
pub fn live_processes() -> usize {
    LIVE_PROCESSES.load(Ordering::Relaxed)
}

/// One unit of [`MAX_THREADS`], returned on drop unless forgotten.
struct ThreadSlot;

impl ThreadSlot {
    fn take() -> Result<ThreadSlot, Error> {
        if LIVE_THREADS.fetch_add(1, Ordering::SeqCst) >= MAX_THREADS {
            LIVE_THREADS.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::NoMemory);
        }
        Ok(ThreadSlot)
    }
}

impl Drop for ThreadSlot {
    fn drop(&mut self) {
        LIVE_THREADS.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Thread {
    fn drop(&mut self) {
        if self.process.is_some() {
            LIVE_THREADS.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Every live (not yet joined or reaped) thread, by id.
static THREADS: IrqMutex<BTreeMap<u64, Arc<Thread>>> = IrqMutex::new(BTreeMap::new());

impl Thread {
    /// A user thread of `process` that will enter ring 3 with `frame`.
    pub fn new_user(process: &Arc<Process>, frame: &TrapFrame) -> Result<Arc<Thread>, Error> {
        let space = process.space().ok_or(Error::NotFound)?;
        let _slot = ThreadSlot::take()?;
        let kstack = KernelStack::new().map_err(|_| Error::NoMemory)?;
        // SAFETY: the stack is freshly mapped, unused and 16-byte aligned.
        let rsp = unsafe { context::prepare_stack(kstack.top(), frame) };
        let t = Arc::new(Thread {
            tid: NEXT_TID.fetch_add(1, Ordering::Relaxed),
            process: Some(process.clone()),
            space: Some(space),
            kstack: Some(kstack),
            ctx: UnsafeCell::new(ThreadCtx {
                saved_rsp: rsp,
                fs_base: 0,
                gs_base: 0,
            }),
            fpu: FpuState::new().ok_or(Error::NoMemory)?,
            state: AtomicU8::new(State::Ready as u8),
            priority: AtomicU8::new(4),
            affinity: AtomicU32::new(u32::MAX),
            last_cpu: AtomicU32::new(crate::arch::percpu::cpu_id()),
            on_cpu: AtomicBool::new(false),
            killed: AtomicBool::new(false),
            status: AtomicU64::new(0),
            wake_at_ns: AtomicU64::new(0),
            joiners: IrqMutex::new(Vec::new()),
        });
        core::mem::forget(_slot); // released by Thread::drop
        process.live_threads.fetch_add(1, Ordering::SeqCst);
        process.threads.lock().push(t.tid);
        THREADS.lock().insert(t.tid, t.clone());
        Ok(t)
    }

    /// The idle thread of a CPU: runs kernel code on the stack it is created on
    /// (its context is filled by the first switch away from it).
    pub fn new_idle() -> Result<Arc<Thread>, Error> {
        Ok(Arc::new(Thread {
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
            affinity: AtomicU32::new(crate::arch::percpu::cpu_id()),
            last_cpu: AtomicU32::new(crate::arch::percpu::cpu_id()),
            on_cpu: AtomicBool::new(true),
            killed: AtomicBool::new(false),
            status: AtomicU64::new(0),
            wake_at_ns: AtomicU64::new(0),
            joiners: IrqMutex::new(Vec::new()),
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
}

/// Looks a live thread up by id.
pub fn thread_by_id(tid: u64) -> Option<Arc<Thread>> {
    THREADS.lock().get(&tid).cloned()
}

/// Forgets a thread id (after it was joined, or its process ended).
pub fn forget_thread(tid: u64) {
    // Bound first, so the last reference (and with it the kernel stack, whose
    // release shoots down TLBs) goes only after the table lock is released.
    let t = THREADS.lock().remove(&tid);
    drop(t);
}

/// A process: an address space and the threads running in it.
pub struct Process {
    /// Process id.
    pub pid: u64,
    /// The parent's pid (0 for init).
    pub parent: u64,
    /// Its memory, until it ends (its threads hold their own references).
    space: IrqMutex<Option<Arc<AddressSpace>>>,
    /// Threads not yet dead.
    pub live_threads: AtomicUsize,
    /// Ids of every thread it created (for kill and cleanup).
    pub threads: IrqMutex<Vec<u64>>,
    /// Exit status once ended.
    pub status: IrqMutex<Option<u64>>,
    /// Threads blocked in `process_wait` for it.
    pub waiters: IrqMutex<Vec<Arc<Thread>>>,
}

static NEXT_PID: AtomicU64 = AtomicU64::new(1);

/// Every process not yet waited for, by pid.
static PROCESSES: IrqMutex<BTreeMap<u64, Arc<Process>>> = IrqMutex::new(BTreeMap::new());

impl Process {
    /// A new process with an empty address space.
    pub fn new(parent: u64) -> Result<Arc<Process>, Error> {
        if LIVE_PROCESSES.fetch_add(1, Ordering::SeqCst) >= MAX_PROCESSES {
            LIVE_PROCESSES.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::NoMemory);
        }
        let space = match AddressSpace::new() {
            Ok(s) => s,
            Err(e) => {
                LIVE_PROCESSES.fetch_sub(1, Ordering::SeqCst);
                return Err(e);
            }
        };
        let p = Arc::new(Process {
            pid: NEXT_PID.fetch_add(1, Ordering::Relaxed),
            parent,
            space: IrqMutex::new(Some(space)),
            live_threads: AtomicUsize::new(0),
            threads: IrqMutex::new(Vec::new()),
            status: IrqMutex::new(None),
            waiters: IrqMutex::new(Vec::new()),
        });
        PROCESSES.lock().insert(p.pid, p.clone());
        Ok(p)
    }
}

impl Process {
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
}

impl Drop for Process {
    fn drop(&mut self) {
        LIVE_PROCESSES.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Looks a process up by pid.
pub fn process_by_id(pid: u64) -> Option<Arc<Process>> {
    PROCESSES.lock().get(&pid).cloned()
}

/// Forgets a process (after it was waited for).
pub fn forget_process(pid: u64) {
    // As in `forget_thread`: drop the record outside the table lock.
    let p = PROCESSES.lock().remove(&pid);
    drop(p);
}
