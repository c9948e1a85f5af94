//! break27r (session 27): attacks on cut27r's life references. Every
//! started thread holds one counted reference to itself (`sched::start`),
//! released once by `sched::finish_switch` after the switch away from it
//! once it died; PerCpu's current thread, the CPU's `prev` cell and the IPC
//! hand-off borrow it without a count, and the fast `reply_recv` wakes a
//! partner on another CPU through `sched::wake_ref` (a count made from an
//! uncounted thread).
//!
//! [`threads_ended_in_every_state_give_everything_back`]: round after
//! round, threads in every state a thread can end from (asleep, blocked in
//! a receive, suspended while spinning, spinning on another CPU, killed
//! before its first run, faulting, exiting on its own, migrating between
//! CPUs, blocked in `thread_join`, in a notification wait) are ended, the
//! kills in an order that rotates by round; each status must be the
//! defined one, the kernel must not stop (a life reference missing, or
//! released twice, frees a thread that still runs: its stack unmapped
//! under it), and the thread count and heap must settle (a life reference
//! never released, or taken twice, keeps every dead thread). Seen failing
//! with `finish_switch` not releasing a dead thread's life reference (the
//! threads never settle) and with `lifecycle::start_thread_in` queueing
//! its thread without one (`sched::enqueue`: the kernel stops, a double
//! free in the heap or a fault on a freed thread).
//!
//! [`process_exits_with_threads_in_every_state`]: a child process (a fork)
//! starts threads in those states and ends while they run: by its own
//! `process_exit`, by a thread's fault (no handler: the thread ends, the
//! others carry on until the exit; procmgr's handler ends the child), or
//! by a kill from the parent, racing the children's start-up. Its status
//! must be the defined one and every thread of it must go (the thread
//! count settles). Seen failing with `finish_switch` not releasing a dead
//! thread's life reference (the child's process never ends: its wait times
//! out).
//!
//! [`cross_core_partners_killed_mid_reply_give_threads_back`]: a fast
//! server on CPU 0 answers clients on the other CPUs (cross-core calls; its
//! `reply_recv` finds each caller last ran elsewhere and wakes it with
//! `sched::wake_ref`, the uncounted partner's path), and the clients are
//! killed at swept moments so that a kill lands between the reply's
//! outcome and that wake-up. Seen failing with `wake_ref` queueing the
//! thread without a reference of its own (the queue's entry consumed the
//! life reference: the kernel stops, a double free in the heap).

use crate::break22::counted;
use crate::break23p::settled_since;
use crate::lifecycle::info;
use crate::note;
use crate::util::{self, check, fork_with, ok, TestResult};
use abi::status::Status;
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::hw;
use libipc::ipc::{self, Endpoint, Notification};
use libipc::procmgr::{self, Ended};
use libipc::sys::{self, ThreadHandle};

/// Rounds of the first case.
const ROUNDS: u64 = 12;

/// Spinners' progress (so the parent waits for a state, not a time).
static SPUN: AtomicU64 = AtomicU64::new(0);
/// Threads that reached their state (asleep, waiting, joining...): a
/// bit each, set just before it enters it.
static REACHED: AtomicU64 = AtomicU64::new(0);

fn reached(bit: u64) {
    REACHED.fetch_or(1 << bit, Ordering::SeqCst);
}

extern "C" fn sleeper(_: u64) -> ! {
    reached(0);
    loop {
        sys::sleep_ns(10_000_000_000);
    }
}

extern "C" fn receiver(arg: u64) -> ! {
    reached(1);
    loop {
        let _ = ipc::recv(Endpoint(arg as u32), None);
    }
}

/// Spins on CPU `arg` (none: `u64::MAX`).
extern "C" fn spinner(arg: u64) -> ! {
    if arg != u64::MAX {
        let _ = sys::set_affinity(arg);
    }
    loop {
        SPUN.fetch_add(1, Ordering::Relaxed);
        util::relax();
    }
}

extern "C" fn faulter(_: u64) -> ! {
    // SAFETY: a deliberate fault: nothing is mapped at page 0.
    unsafe { core::ptr::write_volatile(core::ptr::null_mut::<u64>().wrapping_add(1), 1) };
    sys::thread_exit(0)
}

extern "C" fn exiter(arg: u64) -> ! {
    sys::thread_exit(arg as i32)
}

/// Moves between the CPUs for ever (a pinned thread's switch-away queues
/// it on its new CPU: `finish_switch`'s migrating prev).
extern "C" fn migrator(arg: u64) -> ! {
    let cpus = arg.max(1);
    let mut i = 0u64;
    reached(2);
    loop {
        let _ = sys::set_affinity(i % cpus);
        i += 1;
        if i.is_multiple_of(3) {
            sys::yield_now();
        }
    }
}

extern "C" fn joiner(arg: u64) -> ! {
    reached(3);
    let r = sys::thread_join(ThreadHandle::from_raw(arg as u32));
    sys::thread_exit(if r.is_ok() { 1 } else { 2 })
}

extern "C" fn ntf_waiter(arg: u64) -> ! {
    reached(4);
    loop {
        let _ = ipc::wait(Notification(arg as u32), None);
    }
}

/// Waits (yielding) until `f` holds; false after ~2 s.
fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    let t0 = sys::clock_ns();
    while !f() {
        if sys::clock_ns() - t0 > 2_000_000_000 {
            return false;
        }
        sys::yield_now();
    }
    true
}

fn want(what: &str, got: Status, ok_if: impl Fn(Status) -> bool, err: &'static str) -> TestResult {
    if ok_if(got) {
        return Ok(());
    }
    note!("{what}: {got:?}");
    Err(err)
}

fn every_state_round(r: u64) -> TestResult {
    let cpus = sys::cpu_count().max(1);
    let other = if cpus > 1 { 1 + r % (cpus - 1) } else { 0 };
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let ntf = ok(ipc::notification_create(), "notification_create")?;
    REACHED.store(0, Ordering::SeqCst);
    // Killed before it ever ran (most rounds: the spawner runs on).
    let fresh = util::spawn(spinner, u64::MAX)?;
    ok(fresh.handle().kill(), "kill the fresh thread")?;
    let sl = util::spawn(sleeper, 0)?;
    let rc = util::spawn(receiver, ep.0 as u64)?;
    let mg = util::spawn(migrator, cpus)?;
    // A copy of the sleeper's handle: a join closes the one it used.
    let sl2 = ok(sl.handle().dup(abi::rights_sets::THREAD_CREATOR), "dup")?;
    let jn = util::spawn(joiner, sl2.raw() as u64)?;
    let nw = util::spawn(ntf_waiter, ntf.0 as u64)?;
    let fl = util::spawn(faulter, 0)?;
    let ex = util::spawn(exiter, 7)?;
    SPUN.store(0, Ordering::SeqCst);
    let sp = util::spawn(spinner, other)?;
    let su = util::spawn(spinner, (other + 1) % cpus)?;
    let all_reached = wait_for(|| REACHED.load(Ordering::SeqCst) == 0x1f);
    check(all_reached, "a thread never reached its state")?;
    check(
        wait_for(|| SPUN.load(Ordering::Relaxed) > 1000),
        "the spinners never ran",
    )?;
    ok(hw::thread_suspend(su.handle()), "suspend the spinner")?;
    // Parked or not yet: both are ends to test (no wait for the park).
    if r.is_multiple_of(2) {
        sys::yield_now();
    }
    let victims = [
        sl.handle(),
        rc.handle(),
        su.handle(),
        sp.handle(),
        mg.handle(),
        jn.handle(),
        nw.handle(),
    ];
    let n = victims.len() as u64;
    for i in 0..n {
        // A rotating start, every other round backwards.
        let k = if r.is_multiple_of(2) {
            (r + i) % n
        } else {
            (r + n - i) % n
        };
        ok(victims[k as usize].kill(), "kill")?;
    }
    let killed = |s: Status| s == Status::Exited(-1);
    want(
        "fresh",
        fresh.join()?,
        killed,
        "a thread killed before it ran",
    )?;
    want(
        "faulter",
        fl.join()?,
        |s| s == Status::Faulted(14),
        "a faulter",
    )?;
    want(
        "exiter",
        ex.join()?,
        |s| s == Status::Exited(7),
        "an exiter",
    )?;
    // Joined by the joiner, or killed (its status then either's).
    if let Some(st) = sl.join_or_joined()? {
        want("sleeper", st, killed, "a sleeper killed")?;
    }
    want("receiver", rc.join()?, killed, "a receiver killed")?;
    want(
        "suspended",
        su.join()?,
        killed,
        "a suspended spinner killed",
    )?;
    want("spinner", sp.join()?, killed, "a spinner killed")?;
    want("migrator", mg.join()?, killed, "a migrator killed")?;
    // Killed in its join, or the sleeper ended first (its kill came
    // before the joiner's): joined (1), or this thread's join took its
    // status first (2).
    want(
        "joiner",
        jn.join()?,
        |s| killed(s) || s == Status::Exited(1) || s == Status::Exited(2),
        "a joiner killed",
    )?;
    want("notification waiter", nw.join()?, killed, "a waiter killed")?;
    // Still open unless the joiner's join succeeded.
    let _ = sl2.close();
    let _ = ipc::handle_close(ep.0);
    let _ = ipc::handle_close(ntf.0);
    Ok(())
}

/// Case: see the module docs.
pub fn threads_ended_in_every_state_give_everything_back() -> TestResult {
    let cpus = sys::cpu_count().max(1);
    let _ = sys::set_affinity(cpus - 1);
    // Once first: queues and lists at their high-water marks.
    let r = every_state_round(0);
    let s0 = info()?;
    let r = r.and_then(|_| (1..=ROUNDS).try_for_each(every_state_round));
    let _ = sys::set_affinity(u64::MAX);
    r?;
    settled_since(&s0, 2048, "threads or heap left after threads ended")
}

/// The child of [`process_exits_with_threads_in_every_state`]: starts the
/// threads, then ends as `how` says (0 its own exit, 1 a fault of one
/// thread then its exit, 2 waits to be killed).
fn child(how: u64, r: u64) -> i32 {
    let cpus = sys::cpu_count().max(1);
    let Ok(ep) = ipc::endpoint_create() else {
        return 90;
    };
    let entries: [(util::Entry, u64); 7] = [
        (sleeper, 0),
        (receiver, ep.0 as u64),
        (spinner, r % cpus),
        (spinner, (r + 1) % cpus),
        (migrator, cpus),
        (spinner, u64::MAX),
        (faulter, 0),
    ];
    let take = if how == 1 { 7 } else { 6 };
    for (i, (e, a)) in entries.iter().take(take).enumerate() {
        // Some of them just started (exit or kill before their first run).
        if util::spawn(*e, *a).is_err() {
            return 91 + i as i32;
        }
    }
    match how {
        0 | 1 => {
            if !r.is_multiple_of(3) {
                sys::sleep_ns(200_000 * (r % 5));
            }
            sys::process_exit(5)
        }
        _ => loop {
            sys::sleep_ns(1_000_000_000);
        },
    }
}

/// Case: see the module docs.
pub fn process_exits_with_threads_in_every_state() -> TestResult {
    let one = |r: u64| -> TestResult {
        let how = r % 3;
        let pid = fork_with(|| child(how, r))?;
        if how == 2 {
            // Anywhere in its start-up (a sweep), then killed.
            sys::sleep_ns(100_000 * (r % 7));
            ok(procmgr::kill(pid), "kill the child")?;
        }
        // Bounded: a child whose thread is kept never ends.
        let (_, end) = ok(
            procmgr::wait(Some(pid), Some(10_000_000)),
            "wait for the child (10 s)",
        )?;
        // A fault of one thread ends only that thread, or the child if
        // it has a handler that says so.
        let good = matches!(
            (how, end),
            (_, Ended::Exited(5)) | (1, Ended::Faulted(14)) | (2, Ended::Killed)
        );
        if !good {
            note!("round {r} (how {how}): child {end:?}");
            return Err("a child process's end was wrong");
        }
        Ok(())
    };
    one(0)?;
    let s0 = info()?;
    for r in 1..=12 {
        one(r)?;
    }
    settled_since(&s0, 4096, "threads or heap left after processes ended")
}

/// Calls endpoint `arg & 0xffff_ffff` from CPU `arg >> 32` until an error.
extern "C" fn client(arg: u64) -> ! {
    let _ = sys::set_affinity(arg >> 32);
    let (_, code) = crate::attack2::count_calls(Endpoint(arg as u32), |_| None);
    sys::thread_exit(if code == 0xff { 0xff } else { 3 })
}

/// Case: see the module docs.
pub fn cross_core_partners_killed_mid_reply_give_threads_back() -> TestResult {
    let cpus = sys::cpu_count();
    if cpus < 2 {
        return Ok(());
    }
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let send = ok(ipc::handle_dup(ep.0, abi::rights::SEND, 0), "dup send")?;
    let s = util::spawn(crate::attack2::echo_server, ep.0 as u64)?;
    let replies0 = counted(2);
    let mut s0 = None;
    for r in 0..30u64 {
        let cpu = 1 + r % (cpus - 1);
        let c = util::spawn(client, cpu << 32 | send as u64)?;
        let d = util::spawn(client, (cpu % (cpus - 1) + 1) << 32 | send as u64)?;
        sys::sleep_ns(50_000 + (r * 7919) % 30 * 40_000);
        ok(c.handle().kill(), "kill a client")?;
        if r.is_multiple_of(2) {
            ok(d.handle().kill(), "kill the other client")?;
        }
        let c_st = c.join()?;
        if !r.is_multiple_of(2) {
            ok(d.handle().kill(), "kill the other client")?;
        }
        let d_st = d.join()?;
        for st in [c_st, d_st] {
            if st != Status::Exited(-1) {
                note!("round {r}: client {st:?}");
                return Err("a killed cross-core client's end was wrong");
            }
        }
        if r == 0 {
            s0 = Some(info()?);
        }
    }
    ok(s.handle().kill(), "kill the server")?;
    let _ = s.join()?;
    let _ = ipc::handle_close(send);
    let _ = ipc::handle_close(ep.0);
    check(
        counted(2) > replies0,
        "no fast reply completed (the race was not run)",
    )?;
    match s0 {
        Some(s0) => settled_since(&s0, 2048, "threads or heap left after cross-core kills"),
        None => Ok(()),
    }
}
