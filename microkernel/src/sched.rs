//! The scheduler: per-CPU priority run queues, preemption from the local APIC
//! timer, blocking and waking, thread exit and reaping.
//!
//! # Invariants
//! - Everything here runs with interrupts off.
//! - `PerCpu::current_thread` holds one strong reference (`Arc::into_raw`) to the
//!   running thread.
//! - A thread is in at most one run queue: only a *running* thread that is
//!   preempted or yields re-queues itself (on its own CPU; one pinned elsewhere
//!   is queued there only after the switch away, in [`finish_switch`]), and a
//!   blocked thread is queued only by the one waker whose Blocked -> Ready
//!   transition succeeds.
//! - No CPU ever waits for another to finish switching: a thread picked while
//!   its previous CPU is still switching away from it (`on_cpu`, possible when
//!   it was woken or stolen in that window) is put back and the CPU idles
//!   instead — two CPUs each waiting for the other's switch would deadlock.
//!   A CPU runs a thread only
//!   after the CPU that last ran it has finished switching away (`on_cpu`), so a
//!   thread is never on two stacks at once.
//! - A dead thread's stack is freed by the next thread on the same CPU
//!   ([`finish_switch`]), never while it is still in use.
//!
//! - Run-queue capacity is charged to the thread quotas: a thread occupies at
//!   most one slot, so the queues never hold more than `task::MAX_THREADS`
//!   plus the idle threads (their growth is a bounded high-water mark).
//!
//! # Lock order
//! A thread's wait list (joiners, process waiters, sleepers) before a run queue;
//! never two run queues at once (stealing uses `try_lock`).

use crate::arch::apic::MAX_CPUS;
use crate::arch::context::switch_context;
use crate::arch::cpu::{self, msr};
use crate::arch::percpu;
use crate::arch::trap::TrapFrame;
use crate::sync::IrqMutex;
use crate::task::{State, Thread};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use kcore::runqueue::RunQueue;

/// Timer ticks in one time slice.
const SLICE_TICKS: u32 = 10;

struct CpuSched {
    rq: IrqMutex<RunQueue<Arc<Thread>>>,
    /// Threads queued here (readable without the lock, for balancing).
    queued: AtomicUsize,
    /// The CPU sits in its idle loop.
    idle: AtomicBool,
    /// This CPU's idle thread.
    idle_thread: UnsafeCell<Option<Arc<Thread>>>,
    /// The thread switched away from, released by `finish_switch`.
    prev: UnsafeCell<Option<Arc<Thread>>>,
    /// Whether `prev` is to be queued on its pinned CPU once released.
    migrate_prev: AtomicBool,
    /// Ticks left in the current slice.
    slice: AtomicU32,
    online: AtomicBool,
}

// SAFETY: the UnsafeCell fields are touched only by their own CPU with
// interrupts off; the rest is Sync.
unsafe impl Sync for CpuSched {}

static CPUS: [CpuSched; MAX_CPUS] = [const {
    CpuSched {
        rq: IrqMutex::new(RunQueue::new()),
        queued: AtomicUsize::new(0),
        idle: AtomicBool::new(false),
        idle_thread: UnsafeCell::new(None),
        prev: UnsafeCell::new(None),
        migrate_prev: AtomicBool::new(false),
        slice: AtomicU32::new(SLICE_TICKS),
        online: AtomicBool::new(false),
    }
}; MAX_CPUS];

/// CPUs that have joined the scheduler.
static ONLINE: AtomicUsize = AtomicUsize::new(0);

#[inline(always)]
fn me() -> usize {
    percpu::cpu_index()
}

/// Makes the code running now this CPU's idle thread and joins the scheduler.
pub fn init_cpu() -> Result<(), abi::Error> {
    let idle = Thread::new_idle()?;
    let c = &CPUS[me()];
    // SAFETY: this CPU's own cells, before it schedules anything.
    unsafe {
        *c.idle_thread.get() = Some(idle.clone());
    }
    percpu::set_current(Arc::into_raw(idle) as u64);
    c.online.store(true, Ordering::SeqCst);
    ONLINE.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// The running thread.
#[inline(always)]
pub fn current() -> &'static Thread {
    let p = percpu::current_thread() as *const Thread;
    // SAFETY: current_thread always holds a live strong reference (module
    // invariant), which outlives any use on this CPU until the next switch.
    unsafe { &*p }
}

/// A new strong reference to the running thread.
pub fn current_arc() -> Arc<Thread> {
    let p = percpu::current_thread() as *const Thread;
    // SAFETY: as in `current`; incrementing first keeps PerCpu's reference.
    unsafe {
        Arc::increment_strong_count(p);
        Arc::from_raw(p)
    }
}

/// Chooses the CPU a ready thread should run on: its pinned CPU, else an idle
/// CPU, else the one it last ran on.
fn pick_cpu(t: &Thread) -> usize {
    let aff = t.affinity.load(Ordering::Relaxed);
    if (aff as usize) < MAX_CPUS && CPUS[aff as usize].online.load(Ordering::Relaxed) {
        return aff as usize;
    }
    let last = t.last_cpu.load(Ordering::Relaxed) as usize;
    if CPUS[last].idle.load(Ordering::Relaxed) && CPUS[last].queued.load(Ordering::Relaxed) == 0 {
        return last;
    }
    for (i, c) in CPUS.iter().enumerate() {
        if c.online.load(Ordering::Relaxed)
            && c.idle.load(Ordering::Relaxed)
            && c.queued.load(Ordering::Relaxed) == 0
        {
            return i;
        }
    }
    last
}

/// Puts a ready thread on a run queue and, if that is another CPU, kicks it.
/// The caller guarantees it is in no queue (see the module invariants).
pub fn enqueue(t: Arc<Thread>) {
    let cpu = pick_cpu(&t);
    push(&CPUS[cpu], t);
    if cpu != me() {
        crate::smp::kick(cpu);
    }
}

/// Queues `t` on `c`; `queued` mirrors the queue length under its lock.
fn push(c: &CpuSched, t: Arc<Thread>) {
    let prio = t.priority.load(Ordering::Relaxed) as usize;
    let mut rq = c.rq.lock_irqs_off();
    rq.push(t, prio);
    c.queued.store(rq.len(), Ordering::Relaxed);
}

fn pop_local(c: &CpuSched) -> Option<Arc<Thread>> {
    let mut rq = c.rq.lock_irqs_off();
    let t = rq.pop();
    c.queued.store(rq.len(), Ordering::Relaxed);
    t
}

/// Takes a thread from a busier CPU that may run here.
fn steal(me: usize) -> Option<Arc<Thread>> {
    for (i, c) in CPUS.iter().enumerate() {
        if i == me || c.queued.load(Ordering::Relaxed) == 0 {
            continue;
        }
        let Some(mut rq) = c.rq.try_lock() else {
            continue;
        };
        let got = rq.steal(|t| {
            let a = t.affinity.load(Ordering::Relaxed);
            a == u32::MAX || a as usize == me
        });
        c.queued.store(rq.len(), Ordering::Relaxed);
        drop(rq);
        if got.is_some() {
            return got;
        }
    }
    None
}

/// Gives the CPU to the best ready thread (possibly the current one again),
/// re-queueing the current one. Must be called with interrupts off.
pub fn schedule() {
    schedule_inner(true);
}

/// `requeue`: the current thread is running and stays ready (preemption,
/// yield). Without it the thread blocked or died, and only a waker may queue it.
fn schedule_inner(requeue: bool) {
    debug_assert!(!cpu::interrupts_enabled());
    let cpu = me();
    let c = &CPUS[cpu];
    let cur = current_arc();
    let mut migrate = false;
    if requeue && !cur.is_idle() && cur.state() == State::Ready {
        let aff = cur.affinity.load(Ordering::Relaxed) as usize;
        if aff == u32::MAX as usize || aff == cpu {
            // Back on *this* CPU's queue: it keeps running here unless something
            // better is queued.
            push(c, cur.clone());
        } else {
            // Pinned elsewhere: switch away first, queue it there afterwards.
            migrate = true;
        }
    }
    let next = match pop_local(c).or_else(|| steal(cpu)) {
        Some(n) if !Arc::ptr_eq(&n, &cur) && n.on_cpu.load(Ordering::Acquire) => {
            // Still being switched away from elsewhere: back it goes; idle
            // retries at once (it sees a non-empty queue).
            push(c, n);
            idle_thread(c)
        }
        Some(n) => n,
        None => idle_thread(c),
    };
    c.slice.store(SLICE_TICKS, Ordering::Relaxed);
    if Arc::ptr_eq(&next, &cur) {
        return;
    }
    c.migrate_prev.store(migrate, Ordering::Relaxed);
    switch_to(cur, next);
}

fn idle_thread(c: &CpuSched) -> Arc<Thread> {
    // SAFETY: this CPU's own cell, set once in init_cpu.
    unsafe { (*c.idle_thread.get()).clone().expect("idle thread exists") }
}

fn switch_to(prev: Arc<Thread>, next: Arc<Thread>) {
    let cpu = me();
    // Only the CPU that popped `next` may run it, and it was not on a CPU when
    // popped (checked in schedule_inner; the idle thread is only ever ours).
    debug_assert!(!next.on_cpu.load(Ordering::Acquire) || next.is_idle());
    // `last_cpu` before `on_cpu`, and `on_cpu` by `xchg` (a full barrier):
    // the victim half of the Dekker pattern in `Thread::kill` — this CPU's
    // later test of `next.work` cannot pass these stores, so a killer that
    // misses seeing KILL taken here sees `next` on this CPU and kicks it.
    next.last_cpu.store(cpu as u32, Ordering::SeqCst);
    next.on_cpu.swap(true, Ordering::SeqCst);
    CPUS[cpu].idle.store(next.is_idle(), Ordering::Relaxed);

    // SAFETY: interrupts are off; prev is this CPU's running thread and next is
    // owned by no other CPU (on_cpu handshake above), so their contexts are ours.
    let (pctx, nctx) = unsafe { (prev.ctx(), next.ctx()) };
    if !prev.is_idle() {
        prev.fpu.save();
        // SAFETY: reading this CPU's FS base and the parked user GS base.
        unsafe {
            pctx.fs_base = cpu::rdmsr(msr::FS_BASE);
            pctx.gs_base = cpu::rdmsr(msr::KERNEL_GS_BASE);
        }
    }
    match &next.space {
        Some(space) => {
            next.fpu.restore();
            // SAFETY: the bases were validated as user addresses when set (or
            // read back from the MSRs); the kernel's own GS base is untouched.
            unsafe {
                cpu::wrmsr(msr::FS_BASE, nctx.fs_base);
                cpu::wrmsr(msr::KERNEL_GS_BASE, nctx.gs_base);
            }
            percpu::set_kernel_stack(next.kstack_top());
            crate::mem::load_address_space(cpu, space.root());
        }
        None => crate::mem::load_address_space(cpu, crate::mem::kernel_root()),
    }

    let prev_rsp = &mut pctx.saved_rsp as *mut u64;
    let next_rsp = nctx.saved_rsp;
    percpu::set_current(Arc::into_raw(next) as u64);
    // PerCpu's reference to prev moves into `prev`, released after the switch.
    // SAFETY: current_thread held a strong reference to prev (invariant).
    let prev_ref = unsafe { Arc::from_raw(Arc::as_ptr(&prev)) };
    drop(prev);
    // SAFETY: this CPU's own cell.
    unsafe { *CPUS[cpu].prev.get() = Some(prev_ref) };
    // SAFETY: both stacks are valid kernel stacks: prev's is the one we run on,
    // next's was parked by switch_context or prepared by prepare_stack.
    unsafe { switch_context(prev_rsp, next_rsp) };
    finish_switch();
}

/// Runs on the next thread's stack right after a switch: lets other CPUs run
/// the previous thread, and frees it if it died.
#[no_mangle]
pub extern "C" fn finish_switch() {
    let c = &CPUS[me()];
    // SAFETY: this CPU's own cell, interrupts off.
    let prev = unsafe { (*c.prev.get()).take() };
    if let Some(p) = prev {
        p.on_cpu.store(false, Ordering::Release);
        if c.migrate_prev.swap(false, Ordering::Relaxed) {
            enqueue(p); // now off this CPU: its pinned CPU may run it
        } else {
            drop(p); // a dead thread's stack goes away here, if nobody else holds it
        }
    }
}

/// Timer interrupt: wakes sleepers and preempts at the end of a slice, or at
/// once when a better thread than the running one is ready here (a woken
/// high-priority sleeper must not wait out a lower one's slice). `is_tick`:
/// the tick period passed (slices count only those, not the early wake-ups
/// armed for sleepers).
pub fn tick(is_tick: bool) {
    crate::time::wake_sleepers();
    let c = &CPUS[me()];
    if c.queued.load(Ordering::Relaxed) > 0 && !current().is_idle() {
        let best = c.rq.lock_irqs_off().best_priority();
        let cur = current();
        let prio = cur.priority.load(Ordering::Relaxed) as usize;
        // A thread raised to its process's ceiling for an address-space edit
        // yields to threads at that level too: the ceiling keeps middle
        // threads from starving the edit, not the process's own best ones
        // from running (`irq_latency_worst`'s sleeper shares the level).
        let ceiling = cur.ceiling.load(Ordering::Relaxed);
        if best.is_some_and(|b| b < prio || ceiling && b == prio) {
            schedule();
            return;
        }
    }
    if current().is_idle() {
        if c.queued.load(Ordering::Relaxed) > 0 || any_stealable(me()) {
            schedule();
        }
        return;
    }
    if is_tick && c.slice.fetch_sub(1, Ordering::Relaxed) <= 1 {
        c.slice.store(SLICE_TICKS, Ordering::Relaxed);
        if c.queued.load(Ordering::Relaxed) > 0 {
            schedule();
        }
    }
}

fn any_stealable(me: usize) -> bool {
    CPUS.iter()
        .enumerate()
        .any(|(i, c)| i != me && c.queued.load(Ordering::Relaxed) > 1)
}

/// The idle loop of a CPU: runs whatever is ready, else halts until an
/// interrupt. Never returns.
pub fn idle_loop() -> ! {
    loop {
        cpu::disable_interrupts();
        if CPUS[me()].queued.load(Ordering::Relaxed) > 0 || any_stealable(me()) {
            schedule();
        }
        if CPUS[me()].queued.load(Ordering::Relaxed) > 0 {
            // Something queued here could not run yet (its old CPU is still
            // switching away from it): retry soon, with interrupts open.
            cpu::enable_interrupts();
            core::hint::spin_loop();
            continue;
        }
        CPUS[me()].idle.store(true, Ordering::Relaxed);
        // `sti; hlt` is atomic with respect to interrupts: no wake-up is lost.
        // SAFETY: enabling interrupts and halting is the idle thread's job.
        unsafe { core::arch::asm!("sti", "hlt", options(nomem, nostack)) };
    }
}

/// A preemption point for long kernel work. Syscalls run with interrupts
/// off; work that grows with an argument calls this between bounded chunks,
/// with **no lock held** (an interrupt handler may switch threads here, and
/// the thread may resume on this CPU much later). It opens the interrupt
/// window for one instruction: every interrupt already pending (the timer, a
/// reschedule or shootdown IPI) is taken at the `nop`, and the timer's
/// `tick` may switch to a better thread — a switch from kernel mode, exactly
/// as the idle loop is switched away from, resumed here by the next switch
/// back. Nothing pending costs three instructions.
/// (Called with interrupts on — boot-time callers — it does nothing: they
/// are taken anyway.)
#[inline]
pub fn preemption_point() {
    if cpu::interrupts_enabled() {
        return;
    }
    // Sound because no lock is held (caller's duty), so a handler that runs here and
    // schedules cannot deadlock or observe a half-edited structure. `sti`
    // takes effect after the next instruction (the STI shadow), so pending
    // interrupts are delivered at the `nop`; `cli` closes the window. Not
    // `nomem`: the handlers (and other threads) change memory meanwhile.
    // SAFETY: as explained just above.
    unsafe { core::arch::asm!("sti", "nop", "cli", options(nostack)) };
}

/// Gives up the CPU voluntarily.
pub fn yield_now() {
    schedule();
}

/// Blocks the current thread, whose state the caller already set to
/// Blocked while holding the lock of the list that will wake it.
///
/// A thread whose process is being killed does not block: it returns at
/// once (still Ready, still on the caller's list, which the caller's
/// `killed()` check after `block` cleans up). Without this a kill that lands
/// between the syscall's entry and the `Blocked` store is lost: the killer's
/// `wake` finds the thread Ready (nothing to wake), its kick interrupts a
/// CPU that is still in the kernel (no return-to-user test), and the thread
/// then sleeps until its event -- a child that may never end -- keeping its
/// dying process alive.
///
/// # Ordering (Dekker, the victim half for waits)
/// Victim: the caller's `set_state(Blocked)` (a SeqCst store, an `xchg`: a
/// full barrier) *then* this load of the work word. Killer
/// ([`Thread::kill`]): `fetch_or(KILL)` (locked, a full barrier) *then* the
/// Blocked -> Ready compare-exchange in [`wake`]. Either this load sees
/// KILL, or the killer's exchange sees Blocked and queues the thread.
pub fn block() {
    let cur = current();
    // Only undo our own Blocked: if the exchange fails a waker has already
    // made us Ready and queued us, and the switch below must happen (the
    // queue's reference is put back by whoever pops us, after `on_cpu`).
    if cur.killed() && cur.try_unblock() {
        return;
    }
    schedule_inner(false);
}

/// IPC's direct hand-off (DESIGN 7): switches from the current thread,
/// which is blocking (Blocked, or already made Ready and queued by a
/// waker), straight to `next`, which the caller made Ready with its own
/// successful Blocked -> Ready exchange and did not queue: no run-queue
/// trip. When `next` cannot run here now (pinned elsewhere, still being
/// switched away from) or the current thread is being killed, `next` is
/// queued and the current thread blocks as usual.
pub fn switch_direct(next: Arc<Thread>) {
    let cpu = me();
    let aff = next.affinity.load(Ordering::Relaxed);
    let pinned_elsewhere = aff != u32::MAX && aff as usize != cpu;
    if current().killed() || pinned_elsewhere || next.on_cpu.load(Ordering::Acquire) {
        enqueue(next);
        block();
        return;
    }
    CPUS[cpu].migrate_prev.store(false, Ordering::Relaxed);
    // The slice is not renewed: `next` runs out the rest of it, so a pair
    // handing the CPU back and forth is still preempted when it ends and
    // threads queued here get their turn (the queue was bypassed).
    switch_to(current_arc(), next);
}

/// Makes a blocked thread ready. Returns false if it was not blocked.
pub fn wake(t: &Arc<Thread>) -> bool {
    if t.try_unblock() {
        enqueue(t.clone());
        true
    } else {
        false
    }
}

/// Ends the current thread with `status`. Never returns.
///
/// The status goes into the process's thread table (all that outlives the
/// thread, for `thread_join`) before the thread turns Dead; its stack, FPU
/// area and address-space reference go when the last reference to it does
/// (normally in [`finish_switch`] on this CPU), and only then do the live
/// counts drop (`Thread`'s drop), so settled counts imply settled memory.
pub fn exit_current(status: u64) -> ! {
    let cur = current_arc();
    // IPC first: the caller awaiting this thread's reply gets PeerDied.
    crate::ipc::thread_exiting(&cur);
    cur.status.store(status, Ordering::SeqCst);
    if let Some(p) = &cur.process {
        let (row, last) = {
            let mut table = p.threads.lock();
            let row = table.record_exit(cur.tid, status);
            (row, table.none_live())
        };
        drop(row); // not the last reference: `cur` and PerCpu hold it
        if last {
            // The last thread of the process: no user code runs in its space
            // again, so tear it down here, in preemptible chunks with no lock
            // held, rather than with interrupts off wherever the last
            // reference to the space drops (`finish_switch`).
            if let Some(space) = &cur.space {
                space.teardown();
            }
        }
    }
    cur.set_state(State::Dead);
    let joiners: Vec<Arc<Thread>> = core::mem::take(&mut *cur.joiners.lock());
    for j in joiners {
        wake(&j);
    }
    drop(cur);
    schedule_inner(false);
    unreachable!("a dead thread was scheduled again");
}

/// For in-kernel wait loops: a thread whose process is ending dies here.
#[inline(always)]
pub fn check_killed() {
    if current().killed() {
        exit_current(abi::status::exited(-1));
    }
}

/// The slow path of every return to ring 3, taken when the current thread's
/// work word ([`crate::task::work`]) is non-zero (one `test` in the
/// `sysret` path and in `isr_return`). Returns only when nothing is left
/// that must happen before user code runs.
#[no_mangle]
pub extern "C" fn return_to_user_work() {
    debug_assert!(!cpu::interrupts_enabled());
    if current().killed() {
        exit_current(abi::status::exited(-1));
    }
}

/// A ring-3 thread faulted: report it and end the thread (its process ends
/// when its last thread does). The kernel keeps running.
pub fn user_fault(frame: &mut TrapFrame) {
    let (short, long) = crate::arch::trap::exception_name(frame.vector);
    let t = current();
    let pid = t.process.as_ref().map_or(0, |p| p.pid);
    // The program's name lets the runner symbolize RIP against its ELF.
    let program = t
        .process
        .as_ref()
        .and_then(|p| p.program.get())
        .map_or("?", |n| n.as_str());
    let cr2 = if frame.vector == 14 {
        crate::fmt::Cr2(Some(cpu::cr2()))
    } else {
        crate::fmt::Cr2(None)
    };
    log::warn!(
        "user fault: pid {pid} ({program}) tid {} {short} {long}: error=0x{:x} RIP=0x{:x} RSP=0x{:x}{cr2}; thread stopped",
        t.tid,
        frame.error_code,
        frame.rip,
        frame.rsp
    );
    exit_current(abi::status::faulted(frame.vector as u8));
}

/// Pins the current thread to `cpu` and moves it there.
pub fn set_affinity(cpu_id: u64) -> Result<u64, abi::Error> {
    let t = current();
    if cpu_id == u64::MAX {
        t.affinity.store(u32::MAX, Ordering::SeqCst);
        return Ok(0);
    }
    if cpu_id as usize >= MAX_CPUS || !CPUS[cpu_id as usize].online.load(Ordering::SeqCst) {
        return Err(abi::Error::NotFound);
    }
    t.affinity.store(cpu_id as u32, Ordering::SeqCst);
    if me() != cpu_id as usize {
        schedule(); // re-queued on the pinned CPU by `enqueue`
    }
    Ok(0)
}
