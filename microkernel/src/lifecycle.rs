//! Lifecycle: spawning, exit, kill, wait, join and fault routing — the
//! behaviour over the [`crate::object`] records; the scheduler below only
//! blocks, wakes and switches.

use crate::arch::cpu;
use crate::arch::gdt::{USER_CS, USER_DS};
use crate::arch::percpu;
use crate::arch::trap::TrapFrame;
use crate::bootstrap;
use crate::object::process::{self, Process, ProcessId, INIT_PID};
use crate::object::thread::{current, current_arc, Thread, ThreadId, ThreadState};
use crate::sched;
use abi::layout::INIT_STACK_TOP;
use abi::Error;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

/// Installs the hooks through which the object layer hands work up: a
/// process's last thread gone ([`ended`]) and a contended address-space
/// edit (a short sleep). Once, on the boot CPU, before any thread runs.
pub fn init() {
    process::set_last_thread_hook(ended);
    crate::object::space::set_edit_wait(|ns| {
        if sleep_ns(ns).is_err() {
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
    cur.exit.exit_status.store(status, Ordering::SeqCst);
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
    cur.set_state(ThreadState::Dead);
    let joiners: Vec<Arc<Thread>> = core::mem::take(&mut *cur.exit.joiners.lock());
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
    let pid = t.pid();
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

/// Drops the record of a process that never started (and its quota unit).
pub fn discard(p: &Arc<Process>, parent: Option<&Arc<Process>>) {
    // Handles its parent gave it while it was being built (`handle_give`
    // finds the record from its creation on) are released as `ended` does
    // for a process that ran: an endpoint must not count a receiver in a
    // table that is dropped unreleased. Marked exiting first, under its
    // thread-table lock, so a give racing this is refused (it checks that
    // flag under the handle-table lock `close_all` takes).
    let rows = p.threads.lock().take_rows();
    drop(rows); // no live thread: status words only
    crate::ipc::close_all(&p.ipc.handles);
    process::forget_process(p.pid);
    if let Some(pp) = parent {
        pp.release_child();
    }
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
/// at `stack_top`.
pub fn start_thread(p: &Arc<Process>, entry: u64, stack_top: u64, arg: u64) -> Result<u64, Error> {
    let t = Thread::new_user(p, &user_frame(entry, stack_top, arg), p.initial_priority())?;
    let tid = t.tid;
    sched::enqueue(t);
    Ok(tid.get())
}

/// Spawns a process from a boot image (the `process_spawn` syscall).
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
/// signal under the siglock at its end).
pub fn spawn(image: &[u8], parent: &Arc<Process>, arg: u64) -> Result<u64, Error> {
    let (p, entry) = bootstrap::build(image, Some(parent))?;
    if let Some(name) = bootstrap::boot_program(image) {
        p.program.call_once(|| name);
    }
    let frame = user_frame(entry, INIT_STACK_TOP, arg);
    let t = match Thread::new_user(&p, &frame, p.initial_priority()) {
        Ok(t) => t,
        Err(e) => {
            discard(&p, Some(parent));
            return Err(e);
        }
    };
    let mut t = Some(t);
    {
        let table = parent.threads.lock();
        if !table.is_exiting() {
            // Lock order: a thread table before a run queue (as `exit_current_process`).
            sched::enqueue(t.take().expect("the thread is still ours"));
        }
    }
    if let Some(t) = t {
        // The creator is being killed. The child's thread table holds the
        // thread too (a cycle through `Thread::process` until the thread
        // exits, which it never will): empty it, then drop the last
        // reference outside every lock. The child ends here without having
        // run; its record stays the parent's child until `discard`.
        let rows = p.threads.lock().take_rows();
        drop(rows);
        drop(t);
        discard(&p, Some(parent));
        return Err(Error::NotFound);
    }
    Ok(p.pid.get())
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
    drop(rows); // only status words are left: no thread references
    crate::ipc::close_all(&p.ipc.handles); // peers see peer death
    p.release_space();
    p.mark_ended();
    let waiters = core::mem::take(&mut *p.waiters.lock());
    let pid = p.pid;
    // The dying thread's reference goes before anyone is woken (if it is
    // the last one, the process count drops now).
    drop(p);
    for w in waiters {
        sched::wake(&w);
    }
    if pid == INIT_PID {
        let code = abi::status::decode(status);
        crate::println!("mica: init ended ({code:?}); powering off");
        crate::arch::qemu::exit(code == abi::status::Status::Exited(0));
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
        for t in table.mark_exiting(cur.tid) {
            kill(t);
        }
    }
    exit_current(status)
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

/// Waits for child `pid` of the caller to end; returns its status word.
pub fn wait(pid: u64) -> Result<u64, Error> {
    finish(wait_inner(ProcessId::from_raw(pid)))
}

fn wait_inner(pid: ProcessId) -> Woken {
    let cur = current_arc();
    let Some(me) = cur.process.clone() else {
        return Woken::Done(Err(Error::NotFound));
    };
    let Some(child) = process::process_by_id(pid) else {
        return Woken::Done(Err(Error::NotFound));
    };
    if child.parent() != me.pid.get() {
        return Woken::Done(Err(Error::NotFound));
    }
    loop {
        {
            let mut w = child.waiters.lock();
            if child.has_ended() {
                drop(w);
                let st = child.exit_status.lock().unwrap_or(0);
                // Only the parent removes a child that has a parent; two of
                // its threads waiting at once: the second finds nothing.
                if process::take_process(pid).is_some() {
                    me.release_child();
                    return Woken::Done(Ok(st));
                }
                return Woken::Done(Err(Error::NotFound));
            }
            if w.try_reserve(1).is_err() {
                return Woken::Done(Err(Error::NoMemory));
            }
            cur.set_state(ThreadState::Blocked);
            w.push(cur.clone());
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

/// Waits for thread `tid` of the caller's process to end; returns its status
/// and forgets it (its row in the thread table goes).
pub fn join(tid: u64) -> Result<u64, Error> {
    finish(join_inner(ThreadId::from_raw(tid)))
}

fn join_inner(tid: ThreadId) -> Woken {
    let cur = current_arc();
    if tid == cur.tid {
        return Woken::Done(Err(Error::InvalidArgument));
    }
    let Some(p) = cur.process.clone() else {
        return Woken::Done(Err(Error::NotFound));
    };
    loop {
        let r = p.threads.lock().join(tid);
        let t = match r {
            None => return Woken::Done(Err(Error::NotFound)),
            Some(Ok(status)) => return Woken::Done(Ok(status)),
            Some(Err(t)) => t,
        };
        let mut j = t.exit.joiners.lock();
        // The exiting thread records its status in the table before it
        // turns Dead, and takes its joiners after: seen Dead => the table
        // has the status (loop); not Dead => it will wake us.
        if t.state() == ThreadState::Dead {
            continue;
        }
        if j.try_reserve(1).is_err() {
            return Woken::Done(Err(Error::NoMemory));
        }
        cur.set_state(ThreadState::Blocked);
        j.push(cur.clone());
        drop(j);
        sched::block();
        if cur.killed() {
            // The joinee is of the same process, so it is being killed too
            // and will drop its joiner list; leave it now all the same.
            let stale = {
                let mut j = t.exit.joiners.lock();
                j.iter()
                    .position(|x| Arc::ptr_eq(x, &cur))
                    .map(|i| j.swap_remove(i))
            };
            drop(stale);
            return Woken::Killed;
        }
    }
}
