//! Lifecycle: spawning, exit, kill, wait, join and fault routing — the
//! behaviour over the [`crate::object`] records; the scheduler below only
//! blocks, wakes and switches.

use crate::arch::cpu;
use crate::arch::gdt::{USER_CS, USER_DS};
use crate::arch::percpu;
use crate::arch::trap::TrapFrame;
use crate::bootstrap;
use crate::object::kobject::{Handles, Object, MAX_HANDLES};
use crate::object::process::{self, Process, ProcessId, INIT_PID};
use crate::object::thread::{
    current, current_arc, Joined, Thread, ThreadExit, ThreadId, ThreadState,
};
use crate::sched;
use abi::layout::INIT_STACK_TOP;
use abi::Error;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;
use kcore::handles::{Entry, Handle, Rights};

/// Rights of the handle `thread_spawn` gives its caller.
pub const THREAD_RIGHTS: Rights = Rights::from_bits_retain(abi::rights_sets::THREAD_CREATOR);
/// Rights of the handle `process_spawn` gives its caller.
pub const PROCESS_RIGHTS: Rights = Rights::from_bits_retain(abi::rights_sets::PROCESS_CREATOR);

/// Installs the hooks through which the object layer hands work up: a
/// process's last thread gone ([`ended`]) and a contended address-space
/// edit (a short sleep). Once, on the boot CPU, before any thread runs.
pub fn init() {
    process::set_last_thread_hook(ended);
    // Not `sleep_ns`: a thread killed while it waits must not die here,
    // inside `map_anon` & co., holding its reference to the space and the
    // pages charged up front (both leaked for good). Its sleeps return at
    // once from then on (a killed thread never blocks), so it gives the CPU
    // away instead (the holder may need this one), finishes the operation
    // (bounded: the holder's is) and dies on its way out.
    crate::object::space::set_edit_wait(|ns| {
        if sched::sleep::sleep_ns(ns).is_err() || current().killed() {
            cpu::preemption_point();
            sched::yield_now();
        }
    });
}

/// Blocks the current thread for at least `ns` nanoseconds (the `sleep_ns`
/// syscall); a thread killed meanwhile wakes early and dies here.
///
/// The list entry is the only allocation: `NoMemory` if the heap cannot hold it.
pub fn sleep_ns(ns: u64) -> Result<(), Error> {
    sched::sleep::sleep_ns(ns)?;
    check_killed();
    Ok(())
}

/// Asks `t` to die before it next runs user code, and makes sure it
/// notices: a blocked thread is woken (its wait loop checks
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
pub fn kill(t: &Arc<Thread>) {
    t.mark_killed();
    if !sched::wake(t) && t.sched.on_cpu.load(Ordering::SeqCst) {
        let last = t.sched.last_cpu.load(Ordering::SeqCst);
        if let Some(c) = percpu::CpuId::new(last) {
            percpu::kick(c);
        }
    }
}

/// Ends the current thread with `status`. Never returns.
///
/// The status goes into the process's thread table (all that outlives the
/// thread, for `thread_join`) before the thread turns Dead; its stack, FPU
/// area and address-space reference go when the last reference to it does
/// (normally in `sched::finish_switch` on this CPU), and only then do the live
/// counts drop (`Thread`'s drop), so settled counts imply settled memory.
pub fn exit_current(status: u64) -> ! {
    let cur = current_arc();
    // IPC first: the caller awaiting this thread's reply gets PeerDied.
    crate::ipc::thread_exiting(&cur);
    if let Some(p) = &cur.process {
        let (row, last) = {
            let mut table = p.threads.lock();
            let row = table.remove(cur.tid);
            (row, table.none_live())
        };
        drop(row); // not the last reference: `cur` and its life reference hold it
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
    cur.set_state(ThreadState::Dead);
    // The status goes into the exit record (what outlives the thread, for
    // `thread_join` through a handle) together with taking its joiners.
    let joiners = cur.exit.finish(status);
    for j in joiners {
        sched::wake(&j);
    }
    drop(cur);
    sched::switch_away_dead()
}

/// For in-kernel wait loops: a thread whose process is ending dies here.
#[inline(always)]
pub fn check_killed() {
    if current().killed() {
        exit_current(abi::status::exited(-1));
    }
}

/// The slow path of every return to ring 3, taken when the current thread's
/// work word ([`crate::arch::percpu::work`]) is non-zero (one `test` in the
/// `sysret` path and in `isr_return`). Returns only when nothing is left
/// that must happen before user code runs.
#[no_mangle]
pub extern "C" fn return_to_user_work() {
    user_work(|| {});
}

/// [`return_to_user_work`]'s loop, with `before_death` run (once,
/// interrupts off) when the thread dies in it: a kill that finds the
/// thread parked by a suspend wakes it here, so the syscall exit's undo of
/// a spawn must run inside the loop, not only before it (break21:
/// `crate::syscall::syscall_return_work`).
#[inline(always)]
pub fn user_work(before_death: impl FnOnce()) {
    debug_assert!(!cpu::interrupts_enabled());
    loop {
        if current().killed() {
            before_death();
            exit_current(abi::status::exited(-1));
        }
        if !park_suspended() {
            return;
        }
    }
}

// --- hw (issue 11): suspend and resume ---

/// If the current thread is suspended, blocks it until a resume or a kill
/// wakes it and returns true (the caller checks the work word again);
/// false when it is not suspended.
///
/// # Ordering
/// The parker sets Blocked and the parked flag under the thread's
/// `suspend_parked` lock after seeing SUSPEND; [`resume`] clears SUSPEND
/// (SeqCst RMW) *then* takes that lock. Either the resume finds the flag
/// and wakes the thread, or the parker, locking after the resume, sees
/// SUSPEND clear and does not park. A kill wakes it through `sched::wake`
/// (Blocked -> Ready), and `sched::block` returns at once for a killed
/// thread.
fn park_suspended() -> bool {
    use percpu::work;
    let cur = current();
    {
        let mut parked = cur.suspend_parked.lock();
        if cur.work.load(Ordering::SeqCst) & work::SUSPEND == 0 {
            return false;
        }
        cur.set_state(ThreadState::Blocked);
        *parked = true;
    }
    sched::block();
    *cur.suspend_parked.lock() = false;
    true
}

/// `thread_suspend`: `t` stops before it next runs user code (at once if
/// it is on a CPU: the CPU is kicked, as for a kill; when it is blocked in
/// IPC, after that IPC completes). Suspending oneself parks at the
/// syscall's return.
pub fn suspend(t: &Arc<Thread>) {
    use percpu::work;
    // A locked RMW (full barrier) before the `on_cpu` load: the Dekker
    // pattern of `kill` (the victim's `on_cpu` store, then its work test).
    t.work.fetch_or(work::SUSPEND, Ordering::SeqCst);
    if t.sched.on_cpu.load(Ordering::SeqCst) && !Arc::ptr_eq(t, &current_arc()) {
        let last = t.sched.last_cpu.load(Ordering::SeqCst);
        if let Some(c) = percpu::CpuId::new(last) {
            percpu::kick(c);
        }
    }
}

/// `thread_resume`: undoes [`suspend`]; wakes `t` if it is parked.
pub fn resume(t: &Arc<Thread>) {
    use percpu::work;
    t.work.fetch_and(!work::SUSPEND, Ordering::SeqCst);
    let parked = core::mem::take(&mut *t.suspend_parked.lock());
    if parked {
        sched::wake(t);
    }
}

/// A ring-3 thread faulted: report it and end the thread (its process ends
/// when its last thread does). The kernel keeps running.
pub fn user_fault(frame: &mut TrapFrame) {
    let t = current();
    // hw (issue 11): a #GP on a port another thread enabled since this CPU
    // loaded the process's I/O bitmap is retried with the new bitmap.
    if frame.vector == 13 {
        if let Some(p) = t.process.as_ref() {
            if crate::arch::iopb::refresh(&p.io, &t.fpu) {
                return;
            }
        }
    }
    // hw (issue 11): to the process's fault handler, if it has one (not
    // for a thread already being killed: it ends on the way out).
    // CR2 now: a wait for the handler lets other threads fault.
    let cr2_value = if frame.vector == 14 { cpu::cr2() } else { 0 };
    if !t.killed() {
        match crate::ipc::fault::deliver(t, frame, cr2_value) {
            crate::ipc::fault::Verdict::Resume => return,
            crate::ipc::fault::Verdict::Kill => {
                exit_current_process(abi::status::faulted(frame.vector as u8))
            }
            crate::ipc::fault::Verdict::NotDelivered if t.killed() => {
                // Killed while it waited for the handler.
                exit_current(abi::status::exited(-1))
            }
            crate::ipc::fault::Verdict::NotDelivered => {}
        }
    }
    end_faulted(frame, cr2_value);
}

/// Today's policy for a user fault: logs it and ends the thread with status
/// `faulted(vector)` (its process ends when its last thread does). Never
/// returns. Also the path of a syscall-protocol fault (`syscall::Fault`),
/// which is never delivered to a handler: the return address it cannot
/// resume at is in registers a handler cannot change (hw, issue 11).
pub fn end_faulted(frame: &TrapFrame, cr2_value: u64) {
    let t = current();
    let (short, long) = crate::arch::trap::exception_name(frame.vector);
    let pid = t.pid();
    // The program's name lets the runner symbolize RIP against its ELF.
    let program = t
        .process
        .as_ref()
        .and_then(|p| p.program.get())
        .map_or("?", |n| n.as_str());
    let cr2 = if frame.vector == 14 {
        crate::fmt::Cr2(Some(cr2_value))
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

/// The first user frame of a thread at `entry` with `arg` in RDI and the
/// stack at `stack_top`.
fn user_frame(entry: u64, stack_top: u64, arg: u64) -> TrapFrame {
    TrapFrame {
        rip: entry,
        cs: USER_CS as u64,
        rflags: 0x202,      // IF set, reserved bit 1
        rsp: stack_top - 8, // as if `entry` had been called
        ss: USER_DS as u64,
        rdi: arg,
        ..TrapFrame::default()
    }
}

/// Starts a thread of `p` in ring 3 at `entry` with `arg` in RDI and the stack
/// at `stack_top`, with no handle to it (init's first thread).
pub fn start_thread(p: &Arc<Process>, entry: u64, stack_top: u64, arg: u64) -> Result<u64, Error> {
    let t = Thread::new_user(p, &user_frame(entry, stack_top, arg), p.initial_priority())?;
    let tid = t.tid;
    sched::start(t);
    Ok(tid.get())
}

/// Takes a thread that was created but never queued back out of its
/// process and drops it (outside every lock; frees its stack).
fn unstart(p: &Arc<Process>, t: Arc<Thread>) {
    let row = p.threads.lock().remove(t.tid);
    drop(row);
    drop(t);
}

/// Starts a thread of `p` (the caller's process) like [`start_thread`] and
/// gives the caller a handle to it ([`THREAD_RIGHTS`]); returns the handle
/// and the thread's id. The handle is installed before the thread is queued:
/// a full table (`NoMemory`) means the thread never ran and is gone again.
pub fn spawn_thread(
    p: &Arc<Process>,
    entry: u64,
    stack_top: u64,
    arg: u64,
) -> Result<(Handle, ThreadId), Error> {
    start_thread_in(p, p, entry, stack_top, arg)
}

/// Starts a thread of `p` (any process the caller holds MAP on, its own
/// included: `thread_start`) like [`start_thread`] and gives `caller` a
/// handle to it ([`THREAD_RIGHTS`]); returns the handle and the thread's id.
/// As in [`spawn_thread`], a full table means the thread never ran.
pub fn start_thread_in(
    p: &Arc<Process>,
    caller: &Arc<Process>,
    entry: u64,
    stack_top: u64,
    arg: u64,
) -> Result<(Handle, ThreadId), Error> {
    let t = Thread::new_user(p, &user_frame(entry, stack_top, arg), p.initial_priority())?;
    let handle = Entry {
        object: Object::Thread(t.exit.clone()),
        rights: THREAD_RIGHTS,
        badge: 0,
    };
    let r = caller.ipc.handles.lock().insert(handle);
    match r {
        Ok(h) => {
            let tid = t.tid;
            sched::start(t);
            Ok((h, tid))
        }
        Err(e) => {
            unstart(p, t);
            Err(e.into())
        }
    }
}

/// Spawns a process from a boot image (the `process_spawn` syscall) and
/// gives its creator a handle to it ([`PROCESS_RIGHTS`]); returns the
/// handle and the child's pid.
///
/// A child never starts after its creator was killed: building it is long
/// (the image is copied and mapped with preemption points between chunks,
/// where a kill from another CPU lands without stopping this thread, which
/// dies only on its way back to ring 3), and a child started then would run
/// on as an orphan of a process that was already ending. So its first
/// thread is queued under the creator's thread-table lock, the lock
/// `process_exit` marks the creator exiting under: either the kill comes
/// later (the child is an ordinary orphan), or the child is dropped here
/// without ever running (as Linux's `copy_process` checks for a fatal
/// signal under the siglock at its end). The handle goes into the creator's
/// table under the same locks (handle table, then thread table: the order
/// `handle_give` takes them in), so a full table also means the child never
/// ran.
pub fn spawn(image: &[u8], parent: &Arc<Process>, arg: u64) -> Result<(Handle, ProcessId), Error> {
    let (p, entry) = bootstrap::build(image, Some(parent))?;
    if let Some(name) = bootstrap::boot_program(image) {
        p.program.call_once(|| name);
    }
    crate::trace::process_start(p.pid.get(), p.program.get().map_or("", |n| n.as_str()));
    let frame = user_frame(entry, INIT_STACK_TOP, arg);
    let t = Thread::new_user(&p, &frame, p.initial_priority())?;
    let handle = Entry {
        object: Object::Process(p.clone()),
        rights: PROCESS_RIGHTS,
        badge: 0,
    };
    let mut t = Some(t);
    let r = {
        let mut handles = parent.ipc.handles.lock();
        let table = parent.threads.lock();
        if table.is_exiting() {
            Err(Error::NotFound)
        } else {
            let r = handles.insert(handle).map_err(Error::from);
            if r.is_ok() {
                // Lock order: a thread table before a run queue (as
                // `exit_current_process`).
                sched::start(t.take().expect("the thread is still ours"));
            }
            r
        }
    };
    if let Some(t) = t {
        // The creator is being killed, or its table is full. The child's
        // thread table holds the thread too (a cycle through
        // `Thread::process` until the thread exits, which it never will):
        // empty it, then drop the last references outside every lock. The
        // child ends here without having run; its record goes with `p`.
        let rows = p.threads.lock().take_rows();
        drop(rows);
        drop(t);
        return Err(r.err().unwrap_or(Error::NotFound));
    }
    r.map(|h| (h, p.pid))
}

/// The last thread of `p` is gone (called from the drop of that `Thread`,
/// after its kernel stack and address-space reference were released): record
/// the status, release the memory, settle the family's records, then wake
/// waiters — so a parent whose wait returns sees the memory already freed.
fn ended(p: Arc<Process>, status: u64) {
    let status = {
        let mut s = p.exit_status.lock();
        *s.get_or_insert(status)
    };
    let rows = p.threads.lock().take_rows();
    drop(rows); // empty: every thread left the list when it exited

    // Peers see peer death; the table's memory goes now, not with the
    // record (which handles may keep for long). After `take_rows` marked
    // the process exiting, so `handle_give` adds nothing afterwards.
    crate::ipc::close_all(&p.ipc.handles);
    let table = core::mem::replace(&mut *p.ipc.handles.lock(), Handles::new(MAX_HANDLES));
    drop(table);
    p.release_space();
    p.mark_ended();
    // hw (issue 11): the exit notification, after `mark_ended` (so a wait
    // it prompts finds the process ended; a registration racing with this
    // sees `has_ended` under the same lock and signals itself).
    let notify = core::mem::take(&mut *p.exit_notify.lock());
    for (n, bits) in notify {
        crate::ipc::slowpath::signal(&n, bits);
    }
    let waiters = core::mem::take(&mut *p.waiters.lock());
    let pid = p.pid;
    crate::trace::process_exit(pid.get(), status);
    // The dying thread's reference goes before anyone is woken (if it is
    // the last one, the process count drops now).
    drop(p);
    for w in waiters {
        sched::wake(&w);
    }
    if pid == INIT_PID {
        let code = abi::status::decode(status);
        crate::panic::power_off(
            format_args!("mica: init ended ({code:?}); powering off"),
            code == abi::status::Status::Exited(0),
        );
    }
}

/// Ends the caller's whole process with `status` (the `process_exit` syscall).
///
/// Under the thread-table lock (the lock thread creation takes to add a
/// thread) the process is marked exiting and every listed thread is killed
/// ([`kill`]): no thread can be added afterwards, and none listed
/// before escapes, so every thread dies before it runs user code again.
pub fn exit_current_process(status: u64) -> ! {
    let cur = current();
    if let Some(p) = &cur.process {
        p.exit_status.lock().get_or_insert(status);
        let mut table = p.threads.lock();
        for t in table.mark_exiting(Some(cur.tid)) {
            kill(t);
        }
    }
    exit_current(status)
}

/// Ends every thread of `p` (the `process_kill` syscall), as
/// [`exit_current_process`] does for the caller's own: marked exiting and
/// each thread killed under the thread-table lock. Its status is
/// `exited(-1)` unless it chose one already. A process that already ended
/// is left as it is; the caller's own process dies on the way out.
pub fn kill_process(p: &Arc<Process>) {
    let mut table = p.threads.lock();
    if table.none_live() {
        // A `process_create`d process that never got a thread: no last
        // thread will end it, so the kill does (once), or its waiters
        // would wait for good.
        let unstarted = table.claim_unstarted_end();
        drop(table);
        if unstarted && !p.has_ended() {
            // In preemptible chunks here, not in the space's drop.
            if let Some(space) = p.space() {
                space.teardown();
            }
            ended(p.clone(), abi::status::exited(-1));
        }
        // Otherwise its last thread already left (`thread_exit(code)`), and the
        // process is ending with that code: a kill landing during the
        // teardown must not turn it into `exited(-1)` (breakit2's note).
        return;
    }
    // Lock order: thread table, then status (nothing takes them the other
    // way round; `exit_current_process` and `ended` take one at a time).
    p.exit_status.lock().get_or_insert(abi::status::exited(-1));
    for t in table.mark_exiting(None) {
        kill(t);
    }
}

/// How a blocking wait ended: with a result, or because the waiter's own
/// process is being killed (it must then die, holding no references).
enum Woken {
    Done(Result<u64, Error>),
    Killed,
}

/// Ends the caller if `w` says it was killed. Its references are gone by
/// now: the thread never returns from `exit_current`, so anything still
/// held on this stack would leak and keep it (and its process) alive.
fn finish(w: Woken) -> Result<u64, Error> {
    match w {
        Woken::Done(r) => r,
        Woken::Killed => {
            check_killed();
            unreachable!("a killed thread returned from check_killed")
        }
    }
}

/// Waits for process `child` (named by a handle of the caller's) to end;
/// returns its status word. Exactly one wait reaps a process: later ones
/// get `NotFound`. Waiting for one's own process is `InvalidArgument`.
///
/// Takes the reference by value: a waiter killed meanwhile dies inside
/// [`finish`] and never returns, so a reference its caller still held would
/// leak and keep the child's record alive for good.
pub fn wait(child: Arc<Process>) -> Result<u64, Error> {
    let w = wait_inner(&child);
    drop(child);
    finish(w)
}

fn wait_inner(child: &Arc<Process>) -> Woken {
    let cur = current_arc();
    if cur
        .process
        .as_ref()
        .is_some_and(|me| Arc::ptr_eq(me, child))
    {
        return Woken::Done(Err(Error::InvalidArgument));
    }
    loop {
        {
            let mut w = child.waiters.lock();
            // `ended()` marks the process ended before it takes the waiters:
            // seen not ended here => it will wake us.
            if child.has_ended() {
                drop(w);
                return Woken::Done(child.reap().ok_or(Error::NotFound));
            }
            // Listed once: a spurious wake-up (a sleep-list entry that
            // outlived its sleep) brings us back here still listed, and a
            // duplicate would outlive the kill path's removal below.
            if !w.iter().any(|x| Arc::ptr_eq(x, &cur)) {
                if w.try_reserve(1).is_err() {
                    return Woken::Done(Err(Error::NoMemory));
                }
                w.push(cur.clone());
            }
            cur.set_state(ThreadState::Blocked);
        }
        sched::block();
        if cur.killed() {
            // Woken by a kill, not by the child: leave its list now. A stale
            // entry would keep this dead thread -- and so its whole process
            // -- alive until the child ends.
            let stale = {
                let mut w = child.waiters.lock();
                w.iter()
                    .position(|x| Arc::ptr_eq(x, &cur))
                    .map(|i| w.swap_remove(i))
            };
            drop(stale); // outside the lock (not the last reference: `cur`)
            return Woken::Killed;
        }
    }
}

/// Waits for the thread whose exit record `rec` is (named by a handle of the
/// caller's) to end; returns its status. Exactly one join reaps a thread:
/// later ones get `NotFound`. Joining oneself is `InvalidArgument`.
/// By value, as in [`wait`].
pub fn join(rec: Arc<ThreadExit>) -> Result<u64, Error> {
    let w = join_inner(&rec);
    drop(rec);
    finish(w)
}

fn join_inner(rec: &Arc<ThreadExit>) -> Woken {
    let cur = current_arc();
    if Arc::ptr_eq(rec, &cur.exit) {
        return Woken::Done(Err(Error::InvalidArgument));
    }
    loop {
        match rec.join(&cur) {
            Err(e) => return Woken::Done(Err(e)),
            Ok(Joined::Status(st)) => return Woken::Done(Ok(st)),
            Ok(Joined::Reaped) => return Woken::Done(Err(Error::NotFound)),
            Ok(Joined::Waiting) => {}
        }
        sched::block();
        if cur.killed() {
            // Leave the joiner list now (the joinee may be of another
            // process and live on).
            let stale = rec.leave(&cur);
            drop(stale);
            return Woken::Killed;
        }
    }
}
