//! The scheduler: per-CPU priority run queues, preemption from the local APIC
//! timer, blocking, waking and switching (and the sleep list, [`sleep`]).
//! Thread exit and kill are [`crate::lifecycle`]'s; the scheduler only
//! switches away from a dead thread and frees it after the switch.
//!
//! # Invariants
//! - Everything here runs with interrupts off.
//! - Every started thread holds one strong reference to itself, its *life
//!   reference*: taken by [`start`] (an idle thread's by [`init_cpu`]) and
//!   released by [`finish_switch`] on the next thread's stack after the
//!   switch away from it once it died (cut27r). `PerCpu::current_thread`
//!   and an IPC hand-off (`ipc::Handoff`) name a thread without a count of
//!   their own: they borrow its life reference, which a running thread, or
//!   a Ready one nobody else may run, cannot lose (only its own exit and
//!   last switch-out release it). So the IPC hand-off takes no reference to
//!   the thread it switches to and drops none for the one it switches away
//!   from (two locked operations a side, `ipc_call_same_core`).
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
//!   most one slot, so the queues never hold more than `thread::MAX_THREADS`
//!   plus the idle threads (their growth is a bounded high-water mark).
//!
//! # Lock order
//! A thread's wait list (joiners, process waiters, sleepers) before a run queue;
//! never two run queues at once (stealing uses `try_lock`).

mod direct;
mod poll;
pub mod sleep;
mod steal;
mod ustate;

pub use direct::{start, switch_direct, switch_direct_frameless, wake_ref};
use poll::poll_queue;
use steal::{any_stealable, steal};

use crate::arch::context::switch_context;
use crate::arch::cpu;
use crate::arch::mmu;
use crate::arch::percpu::{self, CpuId, MAX_CPUS};
use crate::object::thread::{Thread, ThreadState};
use crate::sync::IrqMutex;
use alloc::boxed::Box;
use alloc::sync::Arc;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use kcore::idlepoll::IdlePoll;
use kcore::runqueue::RunQueue;

/// One time slice, in milliseconds of TSC time. Measured in time, not in
/// timer interrupts taken: a CPU that runs only now and then (a virtual CPU
/// on a busy host; QEMU's on this machine) takes few interrupts, and a slice
/// counted in them stretched to hundreds of milliseconds, starving the other
/// threads queued there (ring-3 case `two_cpu_bound_threads_both_progress`).
const SLICE_MS: u64 = 10;

/// The scheduler's part of a CPU's record: allocated when the CPU joins
/// ([`init_cpu`]) and reached from its [`percpu::PerCpu::sched`] (the one
/// per-CPU table; this type belongs to this layer, so the table holds a
/// pointer to it).
struct CpuSched {
    rq: IrqMutex<RunQueue<Arc<Thread>>>,
    /// Threads queued here (readable without the lock, for balancing).
    queued: AtomicUsize,
    /// The CPU sits in its idle loop.
    idle: AtomicBool,
    /// Up while a blocking thread polls this queue for its wake before
    /// the CPU would go idle ([`block`]): a waker then sends no IPI
    /// ([`enqueue`], kcore's `idlepoll`).
    poll: IdlePoll,
    /// This CPU's idle thread.
    idle_thread: UnsafeCell<Option<Arc<Thread>>>,
    /// The thread switched away from (null: none), released by
    /// `finish_switch`; uncounted (its life reference keeps it).
    prev: UnsafeCell<*const Thread>,
    /// Whether `prev` is to be queued on its pinned CPU once released.
    migrate_prev: AtomicBool,
    /// When the current slice ends (TSC).
    slice_end: AtomicU64,
}

// SAFETY: the UnsafeCell fields are touched only by their own CPU with
// interrupts off; the rest is Sync.
unsafe impl Sync for CpuSched {}

/// The scheduler's part of CPU `cpu`, once it joined.
fn sched_of(cpu: usize) -> Option<&'static CpuSched> {
    let pc = percpu::slot(CpuId::new(u32::try_from(cpu).ok()?)?);
    // Acquire: pairs with init_cpu's release store of the pointer.
    let p = pc.sched.load(Ordering::Acquire) as *const CpuSched;
    // SAFETY: non-null, the pointer is a leaked CpuSched, set once by its CPU
    // in init_cpu and never freed or changed.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// One more than the highest CPU number that joined the scheduler (a
/// high-water mark; CPU numbers are dense, so this is the joined count once
/// bring-up ends). Scans stop here, not at `MAX_CPUS`: walking 64 slots
/// cost ~700 instructions a scan (xcore, session 20).
static JOINED: AtomicUsize = AtomicUsize::new(0);

/// Unpinned threads in all run queues: the only ones another CPU may steal
/// (a thread pinned to CPU n is only ever queued on n: `pick_cpu`, and
/// `schedule_inner`'s migration). Changed by whoever queues or takes such
/// a thread, under that queue's lock, so it is exact; read without a lock
/// as a hint, like `CpuSched::queued`. While it is 0 a CPU with nothing of
/// its own does not scan the other CPUs for work (`steal`,
/// `any_stealable`), so blocking and idling cost the same at any CPU count.
static STEALABLE: AtomicUsize = AtomicUsize::new(0);

/// Every CPU that joined, with its number.
fn joined() -> impl Iterator<Item = (usize, &'static CpuSched)> {
    // Acquire: pairs with init_cpu's SeqCst fetch_max, made after its
    // pointer store (sched_of's Acquire load then sees the pointer).
    let n = JOINED.load(Ordering::Acquire);
    (0..n).filter_map(|i| sched_of(i).map(|c| (i, c)))
}

/// This CPU's part, in one `gs:` load. Only after this CPU's `init_cpu`.
#[inline(always)]
fn here() -> &'static CpuSched {
    let p = percpu::sched_part() as *const CpuSched;
    // SAFETY: set by init_cpu before this CPU schedules anything (every
    // caller runs after it); a leaked CpuSched, never freed.
    unsafe { &*p }
}

#[inline(always)]
fn me() -> usize {
    percpu::cpu_index()
}

/// Makes the code running now this CPU's idle thread and joins the scheduler.
pub fn init_cpu() -> Result<(), abi::Error> {
    let idle = Thread::new_idle()?;
    let c: &'static CpuSched = Box::leak(Box::new(CpuSched {
        rq: IrqMutex::new(RunQueue::new()),
        queued: AtomicUsize::new(0),
        idle: AtomicBool::new(false),
        poll: IdlePoll::new(AtomicBool::new(false)),
        idle_thread: UnsafeCell::new(Some(idle.clone())),
        prev: UnsafeCell::new(core::ptr::null()),
        migrate_prev: AtomicBool::new(false),
        slice_end: AtomicU64::new(0),
    }));
    // The idle thread's life reference (never released: it never dies).
    percpu::set_current(Arc::into_raw(idle) as u64);
    // Release (SeqCst): the record above is complete before any CPU sees
    // this one joined.
    percpu::this()
        .sched
        .store(c as *const CpuSched as *mut (), Ordering::SeqCst);
    // After the pointer (SeqCst, so ordered after it): a scan bounded by
    // JOINED covers this CPU from now on.
    JOINED.fetch_max(me() + 1, Ordering::SeqCst);
    Ok(())
}

pub use crate::object::thread::{current, current_arc};

/// Chooses the CPU a ready thread should run on: its pinned CPU, else an idle
/// CPU, else the one it last ran on.
fn pick_cpu(t: &Thread) -> (usize, &'static CpuSched) {
    let aff = t.sched.affinity.load(Ordering::Relaxed);
    if let Some(c) = sched_of(aff as usize) {
        return (aff as usize, c);
    }
    let last = t.sched.last_cpu.load(Ordering::Relaxed) as usize;
    let last_c = sched_of(last);
    if let Some(c) = last_c {
        if c.idle.load(Ordering::Relaxed) && c.queued.load(Ordering::Relaxed) == 0 {
            return (last, c);
        }
    }
    for (i, c) in joined() {
        if c.idle.load(Ordering::Relaxed) && c.queued.load(Ordering::Relaxed) == 0 {
            return (i, c);
        }
    }
    // A thread last ran on a CPU that joined (it was created or ran there).
    match last_c {
        Some(c) => (last, c),
        None => (me(), here()),
    }
}

/// Puts a ready thread on a run queue and, if that is another CPU, kicks it
/// -- unless that CPU is polling its queue in the idle loop, which will
/// find the thread without the IPI (the handshake: kcore's `idlepoll`;
/// `push` raised `queued` before the flag is taken). The caller guarantees
/// it is in no queue (see the module invariants).
pub fn enqueue(t: Arc<Thread>) {
    let (cpu, c) = pick_cpu(&t);
    push(c, t);
    if cpu != me() && !c.poll.take_for_wake() {
        percpu::kick(percpu::CpuId::from_index(cpu));
    }
}

/// Queues `t` on `c`; `queued` mirrors the queue length under its lock,
/// and an unpinned `t` is counted in [`STEALABLE`] (its `stealable` flag
/// says so, so the count comes back down exactly by what it went up,
/// whatever happens to the affinity meanwhile).
fn push(c: &CpuSched, t: Arc<Thread>) {
    let prio = t.sched.priority.load(Ordering::Relaxed) as usize;
    let unpinned = t.sched.affinity.load(Ordering::Relaxed) == u32::MAX;
    let mut rq = c.rq.lock_irqs_off();
    if unpinned {
        // Relaxed: the flag is only read and written under this queue's
        // lock; the count is a hint (see STEALABLE).
        t.sched.stealable.store(true, Ordering::Relaxed);
        STEALABLE.fetch_add(1, Ordering::Relaxed);
    }
    rq.push(t, prio);
    c.queued.store(rq.len(), Ordering::Relaxed);
}

/// `t` was just taken off a run queue, whose lock the caller holds.
fn taken(t: &Thread) {
    // Relaxed: as in `push`. A load first: a pinned thread (the common
    // case on the switch paths) pays no locked instruction.
    if t.sched.stealable.load(Ordering::Relaxed) {
        t.sched.stealable.store(false, Ordering::Relaxed);
        STEALABLE.fetch_sub(1, Ordering::Relaxed);
    }
}

fn pop_local(c: &CpuSched) -> Option<Arc<Thread>> {
    let mut rq = c.rq.lock_irqs_off();
    let t = rq.pop();
    if let Some(t) = &t {
        taken(t);
    }
    c.queued.store(rq.len(), Ordering::Relaxed);
    t
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
    let c = here();
    let cur = current_arc();
    let mut migrate = false;
    if requeue && !cur.is_idle() && cur.state() == ThreadState::Ready {
        let aff = cur.sched.affinity.load(Ordering::Relaxed) as usize;
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
        Some(n) if !Arc::ptr_eq(&n, &cur) && n.sched.on_cpu.load(Ordering::Acquire) => {
            // Still being switched away from elsewhere: back it goes; idle
            // retries at once (it sees a non-empty queue).
            push(c, n);
            idle_thread(c)
        }
        Some(n) => n,
        None => idle_thread(c),
    };
    c.slice_end
        .store(slice_end_from(cpu::rdtsc()), Ordering::Relaxed);
    if Arc::ptr_eq(&next, &cur) {
        return;
    }
    c.migrate_prev.store(migrate, Ordering::Relaxed);
    crate::trace::switch(|| {
        (
            crate::trace::reason(requeue, cur.state() == ThreadState::Dead),
            [cur.tid.get(), next.tid.get(), cur.pid(), next.pid()],
        )
    });
    // Our clone goes before the switch: a dying thread never comes back to
    // drop it. So does the run queue's reference to `next` (or the idle
    // clone): `next` is Ready, taken off the queue and on no CPU, so nobody
    // else may run it and its life reference holds it until it runs.
    drop(cur);
    let n = Arc::as_ptr(&next);
    drop(next);
    // SAFETY: `n` is alive (its life reference, just said).
    switch_to(current(), unsafe { &*n });
}

fn idle_thread(c: &CpuSched) -> Arc<Thread> {
    // SAFETY: this CPU's own cell, set once in init_cpu.
    unsafe { (*c.idle_thread.get()).clone().expect("idle thread exists") }
}

/// Switches from `prev`, this CPU's running thread (the one PerCpu's
/// current-thread pointer names), to `next`, a Ready thread on no CPU and
/// in no queue whose switch is ours. Both borrowed: each is kept by its
/// life reference (module invariants), so no count moves per switch.
fn switch_to(prev: &Thread, next: &Thread) {
    let (prev_rsp, next_rsp, _) = switch_prepare::<false, true>(prev, next, me());
    // SAFETY: both stacks are valid kernel stacks: prev's is the one we run on,
    // next's was parked by switch_context or prepared by prepare_stack.
    unsafe { switch_context(prev_rsp, next_rsp) };
    finish_switch();
}

/// Everything [`switch_to`] does before `switch_context`: returns where
/// prev's saved RSP goes, next's saved RSP and next's kernel-stack top (0
/// for a kernel thread; the frameless hand-off moves RSP below it).
/// Afterwards `next` is this
/// CPU's current thread and, with `PARK_PREV`, prev is named in the CPU's
/// `prev` cell, for [`finish_switch`] on next's stack; without it
/// ([`direct::switch_direct_frameless`] only), the caller must hand prev
/// to [`park_prev`] or to its own finish.
///
/// `cpu` is this CPU's index ([`me`]; the hand-off's caller read it
/// already). `USER_TO_USER`: both are user threads (the frameless IPC hand-off: a
/// thread in a syscall to its IPC partner), so the idle tests are known
/// false and the CPU's `idle` hint, false while a user thread runs (only
/// the idle loop and the blocking poll raise it, and the poll lowers it
/// before it returns), stays false: not written (ipccut: ~8 instructions
/// a switch).
#[inline(always)]
fn switch_prepare<const USER_TO_USER: bool, const PARK_PREV: bool>(
    prev: &Thread,
    next: &Thread,
    cpu: usize,
) -> (*mut u64, u64, u64) {
    debug_assert!(!USER_TO_USER || !(prev.is_idle() || next.is_idle()));
    debug_assert!(!USER_TO_USER || !here().idle.load(Ordering::Relaxed));
    debug_assert_eq!(cpu, me());
    let prev_idle = !USER_TO_USER && prev.is_idle();
    // Only the CPU that popped `next` may run it, and it was not on a CPU when
    // popped (checked in schedule_inner; the idle thread is only ever ours).
    debug_assert!(!next.sched.on_cpu.load(Ordering::Acquire) || next.is_idle());
    // `last_cpu` before `on_cpu`, and `on_cpu` by `xchg` (a full barrier):
    // the victim half of the Dekker pattern in `lifecycle::kill` — this CPU's
    // later test of `next.work` cannot pass these stores, so a killer that
    // misses seeing KILL taken here sees `next` on this CPU and kicks it.
    next.sched.last_cpu.store(cpu as u32, Ordering::SeqCst);
    next.sched.on_cpu.swap(true, Ordering::SeqCst);
    if !USER_TO_USER {
        here().idle.store(next.is_idle(), Ordering::Relaxed);
    }

    // SAFETY: interrupts are off; prev is this CPU's running thread and next is
    // owned by no other CPU (on_cpu handshake above), so their contexts are ours.
    let (pctx, nctx) = unsafe { (prev.ctx(), next.ctx()) };
    let space = if USER_TO_USER {
        // `next` is a user thread (not idle, asserted above: the hand-off's
        // partner is a thread of a process), made by `Thread::new_user`,
        // which sets both `space` and `process` (`new_idle` neither): the
        // `Option` tests here and for the process below are of known
        // values (switchcut).
        // SAFETY: as just said, `space` is `Some`.
        Some(unsafe { next.space.as_ref().unwrap_unchecked() })
    } else {
        next.space.as_ref()
    };
    // The FPU state, FS/GS bases and I/O bitmap (switch2: one test when
    // neither thread has any, the usual IPC pair; an idle prev ran on the
    // last user thread's, whatever they were, so every switch from it
    // does the work).
    let top = next.kstack_top();
    if space.is_some() {
        // Before the test below (switch2: the path without work then
        // falls through to the CR3 step with no jump).
        percpu::set_kernel_stack(top);
    }
    // A user-to-user switch tests both bytes with one `or` with memory
    // (`ustate::any_extra`), and its work reads them again.
    let (work, extra) = if USER_TO_USER {
        let both = ustate::any_extra(prev, next);
        (both != 0, Err(both))
    } else {
        let e = ustate::Extra::of(prev, next);
        (prev_idle || e.any(), Ok(e))
    };
    if work {
        let extra = extra.unwrap_or_else(|both| ustate::Extra::of_any(prev, next, both));
        ustate::switch::<USER_TO_USER>(prev, pctx, next, nctx, prev_idle, space.is_some(), extra);
    }
    match space {
        Some(space) => {
            // hw (issue 11): next's process's I/O bitmap, or none.
            let process = if USER_TO_USER {
                // SAFETY: `next` is a user thread (above); `is_idle`, which
                // the assertion tested, is exactly `process.is_none()`.
                Some(unsafe { next.process.as_deref().unwrap_unchecked() })
            } else {
                next.process.as_deref()
            };
            // Without `work` neither thread ever ran with a bitmap
            // (`fpu::IO`): the CPU's is off, as next needs it (a process
            // of next's that has one is loaded when next first uses a
            // port: `iopb::refresh`).
            if work && crate::arch::iopb::switch_to(process.map(|p| &p.io)) {
                next.fpu.note_io();
            }
            debug_assert_eq!(next.root(), space.root());
            // SAFETY: every space's root shares the kernel half, and `next`
            // holds the space (so the root) while it runs.
            unsafe { mmu::load_root(next.root()) };
        }
        None => {
            // hw (issue 11): no bitmap while kernel threads run (cpustate's
            // read-back expects none outside user threads; without `work`
            // it is off already: prev never ran with one, `fpu::IO`).
            if work {
                crate::arch::iopb::switch_to(None);
            }
            // SAFETY: the kernel's own tables, live forever.
            unsafe { mmu::load_root(crate::mem::kernel_root()) }
        }
    }

    let prev_rsp = &mut pctx.saved_rsp as *mut u64;
    let next_rsp = nctx.saved_rsp;
    // `prev` is the current thread, so its address is that pointer's.
    debug_assert_eq!(prev as *const Thread as u64, percpu::current_thread());
    // Uncounted: `next`'s life reference keeps it while it runs.
    percpu::set_current(next as *const Thread as u64);
    if PARK_PREV {
        park_prev(prev);
    }
    (prev_rsp, next_rsp, top)
}

/// The last step of [`switch_prepare`]: `prev` (the thread just switched
/// away from, no longer current) is named in the CPU's `prev` cell, for
/// [`finish_switch`] after the switch.
#[inline(always)]
fn park_prev(prev: &Thread) {
    // The cell is empty: every switch that fills it ends in `finish_switch`
    // (after `switch_context`, in `thread_start`, or in the frameless resume
    // entry), which empties it; the frameless hand-off to a frameless thread
    // does not fill it (`arch::frameless::handoff_to_frameless`).
    // SAFETY: this CPU's own cell, touched by no other CPU.
    unsafe {
        let cell = here().prev.get();
        debug_assert!((*cell).is_null());
        *cell = prev;
    }
}

/// Runs on the next thread's stack right after a switch: lets other CPUs run
/// the previous thread, and releases its life reference if it died.
#[no_mangle]
pub extern "C" fn finish_switch() {
    let c = here();
    // SAFETY: this CPU's own cell, interrupts off.
    let p = unsafe { core::ptr::replace(c.prev.get(), core::ptr::null()) };
    if p.is_null() {
        return;
    }
    // SAFETY: prev's life reference keeps it until this function releases
    // it (a dead prev) or another CPU runs it (after `on_cpu` below).
    let t = unsafe { &*p };
    // Read before `on_cpu` is released: afterwards another CPU may run a
    // live prev, which may exit and be released there. Only the thread
    // itself turns Dead (`lifecycle::exit_current`), just before its last
    // switch-out, so this is exactly "prev exited".
    let dead = t.state() == ThreadState::Dead;
    let migrate = c.migrate_prev.swap(false, Ordering::Relaxed);
    // A prev to be queued on its pinned CPU is Ready and in no queue: only
    // this CPU may queue it, so it is alive; its queue entry's reference is
    // made while this CPU still runs it (on_cpu).
    let requeue = migrate.then(|| {
        // SAFETY: alive (its life reference), as just said.
        unsafe {
            Arc::increment_strong_count(p);
            Arc::from_raw(p)
        }
    });
    t.sched.on_cpu.store(false, Ordering::Release);
    if let Some(q) = requeue {
        enqueue(q); // now off this CPU: its pinned CPU may run it
    } else if dead {
        // Its life reference (`start`): the stack goes away here if nobody
        // else holds the thread.
        // SAFETY: the reference `start` made (`Arc::clone`, forgotten);
        // a dead thread never runs again, so this is its one release.
        drop(unsafe { Arc::from_raw(p) });
    }
}

/// Timer interrupt: wakes sleepers and preempts at the end of a slice, or at
/// once when a better thread than the running one is ready here (a woken
/// high-priority sleeper must not wait out a lower one's slice). `is_tick`:
/// the tick period passed (slices count only those, not the early wake-ups
/// armed for sleepers).
pub fn tick(is_tick: bool) {
    let c = here();
    // Before this tick's own wake-ups: a thread queued on an idle CPU should
    // have been run at once (its waker's IPI, or the idle poll), not found
    // by the tick. Relaxed: a statistic read by the ring-3 `xcore` cases.
    if current().is_idle() && c.queued.load(Ordering::Relaxed) > 0 {
        percpu::this().late_wakes.fetch_add(1, Ordering::Relaxed);
    }
    sleep::wake_sleepers();
    if c.queued.load(Ordering::Relaxed) > 0 && !current().is_idle() {
        let best = c.rq.lock_irqs_off().best_priority();
        let cur = current();
        let prio = cur.sched.priority.load(Ordering::Relaxed) as usize;
        // A thread raised to its process's ceiling for an address-space edit
        // yields to threads at that level too: the ceiling keeps middle
        // threads from starving the edit, not the process's own best ones
        // from running (`irq_latency_worst`'s sleeper shares the level).
        let ceiling = cur.sched.ceiling.load(Ordering::Relaxed);
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
    if is_tick {
        let now = cpu::rdtsc();
        if now >= c.slice_end.load(Ordering::Relaxed) {
            // Nothing else to run: the thread starts a new slice.
            c.slice_end.store(slice_end_from(now), Ordering::Relaxed);
            if c.queued.load(Ordering::Relaxed) > 0 {
                schedule();
            }
        }
    }
}

/// The end of a slice starting at TSC `now`.
fn slice_end_from(now: u64) -> u64 {
    now.saturating_add(SLICE_MS * crate::arch::apic::tsc_per_ms())
}

/// The idle loop of a CPU: runs whatever is ready, else halts until an
/// interrupt. Never returns.
pub fn idle_loop() -> ! {
    loop {
        cpu::disable_interrupts();
        if here().queued.load(Ordering::Relaxed) > 0 || any_stealable(me()) {
            schedule();
        }
        if here().queued.load(Ordering::Relaxed) > 0 {
            // Something queued here could not run yet (its old CPU is still
            // switching away from it): retry soon, with interrupts open.
            cpu::enable_interrupts();
            core::hint::spin_loop();
            continue;
        }
        here().idle.store(true, Ordering::Relaxed);
        // `sti; hlt` is atomic with respect to interrupts: no wake-up is lost
        // (an IPI sent while interrupts were off is taken at the `hlt`).
        // SAFETY: enabling interrupts and halting is the idle thread's job.
        unsafe { core::arch::asm!("sti", "hlt", options(nomem, nostack)) };
    }
}

/// A preemption point for long kernel work.
pub use crate::arch::cpu::preemption_point;

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
/// (`lifecycle::kill`): `fetch_or(KILL)` (locked, a full barrier) *then* the
/// Blocked -> Ready compare-exchange in [`wake`]. Either this load sees
/// KILL, or the killer's exchange sees Blocked and queues the thread.
pub fn block() {
    block_inner(true);
}

/// [`block`] without the poll for a wake: for a wait that only a timer
/// ends (`sleep::sleep_ns`). The wake is then a timer interrupt, this
/// CPU's (masked during the poll) or, if due within it, another CPU's
/// tick: the poll ran to its bound on almost every sleep, up to 20 us of
/// spinning with interrupts masked (breakk2, ring-3 case
/// `breakk2_sleeps_do_not_poll`). A kill still ends the wait at once.
pub fn block_no_poll() {
    block_inner(false);
}

/// [`block`], polling first when `poll` says so.
#[inline(always)]
fn block_inner(poll: bool) {
    let cur = current();
    // Only undo our own Blocked: if the exchange fails a waker has already
    // made us Ready and queued us, and the switch below must happen (the
    // queue's reference is put back by whoever pops us, after `on_cpu`).
    if cur.killed() && cur.try_unblock() {
        return;
    }
    // Nothing else to run here: the CPU would go idle. Poll a bounded
    // while for our own wake first (`poll_queue`); if it comes, the
    // schedule below takes us off the queue and we run on, never
    // switched away. Relaxed: a hint; the schedule pops under the lock.
    // Only another CPU can end the poll early (interrupts are off during
    // it): with this CPU the only one that joined, every poll ran to its
    // bound, up to 20 us of spinning with interrupts masked on each block
    // (breakk2, ring-3 case
    // `breakk2_no_poll_without_another_cpu_to_wake_the_blocker`).
    // Relaxed: a hint as well; a CPU that joins meanwhile only misses
    // this one poll.
    let c = here();
    if poll && c.queued.load(Ordering::Relaxed) == 0 && JOINED.load(Ordering::Relaxed) > 1 {
        poll_queue(c);
    }
    schedule_inner(false);
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

/// Switches away from the current thread, which its caller
/// (`lifecycle::exit_current`) has just made Dead: only a waker could queue
/// it, and none will. Never returns.
pub fn switch_away_dead() -> ! {
    schedule_inner(false);
    unreachable!("a dead thread was scheduled again");
}

/// Pins the current thread to `cpu` and moves it there.
pub fn set_affinity(cpu_id: u64) -> Result<u64, abi::Error> {
    let t = current();
    if cpu_id == u64::MAX {
        t.sched.affinity.store(u32::MAX, Ordering::SeqCst);
        return Ok(0);
    }
    if cpu_id >= MAX_CPUS as u64 || sched_of(cpu_id as usize).is_none() {
        return Err(abi::Error::NotFound);
    }
    t.sched.affinity.store(cpu_id as u32, Ordering::SeqCst);
    if me() != cpu_id as usize {
        schedule(); // re-queued on the pinned CPU by `enqueue`
    }
    Ok(0)
}
