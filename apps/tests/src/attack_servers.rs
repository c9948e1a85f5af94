//! breakit (issue 11, attacked): the ring-3 servers -- procmgr, the
//! loader, the console -- and the kernel calls they brought, driven as a
//! hostile client would. Each case names the finding it guards
//! (docs/decisions.md, `## breakit`). Forked children never print and end
//! with `procmgr::exit`, as in [`crate::procmgr`].

use crate::note;
use crate::util::{expect, TestResult};
use abi::status::Ended;
use libipc::procmgr::{self as pm, Fork};
use libipc::sys;
use libipc::Error;

/// procmgr's table size (`procmgr::table::MAX_PROCS`, init included).
const PROCMGR_MAX_PROCS: usize = 128;

/// How long any one real wait may take (a loaded TCG host is slow).
const WAIT_US: u32 = 10_000_000;

/// Forks; in the child runs `f` and exits with its result.
fn fork_child(f: impl FnOnce() -> i32) -> Result<u32, &'static str> {
    match pm::fork() {
        Ok(Fork::Parent(pid)) => Ok(pid),
        Ok(Fork::Child) => pm::exit(f()),
        Err(e) => {
            note!("fork: {e}");
            Err("fork")
        }
    }
}

fn wait_pid(pid: u32) -> Result<Ended, &'static str> {
    match pm::wait(Some(pid), Some(WAIT_US)) {
        Ok((p, st)) if p == pid => Ok(st),
        Ok(_) => Err("waitpid reaped another child"),
        Err(e) => {
            note!("waitpid({pid}): {e}");
            Err("waitpid failed")
        }
    }
}

/// Finding 1: procmgr's 32 waiter slots were one pool for every process,
/// and `procmgr::wait` with a timeout leaves its waiter recorded when the
/// timeout expires (procmgr cannot know the client stopped waiting). So
/// one process polling `wait(child, 1 ms)` on a long-running child filled
/// the pool, and every other process's blocking `wait` failed with
/// `NoMemory` until that child ended. Here this program times out 40
/// waits on a sleeper; meanwhile another child (with a child of its own)
/// must still be able to block in `wait`, and this program's own timed
/// waits must keep timing out (not turn into `NoMemory`).
pub fn timed_out_waits_do_not_starve_other_waiters() -> TestResult {
    if pm::endpoint().is_none() {
        return Err("init did not adopt this program into procmgr");
    }
    let sleeper = fork_child(|| {
        sys::sleep_ns(20_000_000_000);
        0
    })?;
    let mut timed_out = 0;
    let mut first_other = None;
    for _ in 0..40 {
        match pm::wait(Some(sleeper), Some(1_000)) {
            Err(Error::TimedOut) => timed_out += 1,
            other => {
                first_other.get_or_insert(other);
            }
        }
    }
    // A second child blocks in `wait` for a grandchild that ends soon.
    let other = fork_child(|| {
        let grandchild = match pm::fork() {
            Ok(Fork::Parent(pid)) => pid,
            Ok(Fork::Child) => {
                sys::sleep_ns(100_000_000);
                pm::exit(5)
            }
            Err(_) => return 3,
        };
        match pm::wait(Some(grandchild), Some(WAIT_US)) {
            Ok((_, Ended::Exited(5))) => 0,
            Err(Error::NoMemory) => 1,
            _ => 2,
        }
    });
    let other_status = other.and_then(wait_pid);
    let _ = pm::kill(sleeper);
    let sleeper_status = wait_pid(sleeper)?;
    if let Some(o) = first_other {
        note!("a timed wait on a running child answered {o:?}");
    }
    expect(
        other_status?,
        Ended::Exited(0),
        "another process's blocking wait (1: NoMemory, the waiters were full)",
    )?;
    expect(timed_out, 40, "timed waits that timed out")?;
    expect(sleeper_status, Ended::Killed, "the sleeper's status")
}

/// Entries procmgr lists (running and zombie, init included).
fn entries() -> Result<usize, &'static str> {
    let (mut n, mut i) = (0, 0);
    loop {
        match pm::list(i) {
            Ok(Some(p)) => {
                n += 1;
                i = p.index + 1;
            }
            Ok(None) => return Ok(n),
            Err(e) => {
                note!("list: {e}");
                return Err("list failed");
            }
        }
    }
}

/// procmgr's table full of zombies: `spawn` of a program that exits at
/// once (hello `quiet`), never reaped, until procmgr refuses. The refusal
/// must be `NoMemory` with the table at its 128 entries (not a kernel
/// quota first, not a crash), every zombie must then be reaped with its
/// status, a spawn must work again, and free memory must come back.
pub fn procmgr_table_full_of_zombies_is_an_error() -> TestResult {
    if pm::endpoint().is_none() {
        return Err("init did not adopt this program into procmgr");
    }
    // Warm-up: procmgr's loader lookup and the loader's scratch tables.
    let w = pm::spawn("hello", b"quiet\0", b"").map_err(|_| "warm-up spawn")?;
    wait_pid(w)?;
    let before = crate::util::free_bytes()?;
    let mut spawned = 0usize;
    let refusal = loop {
        match pm::spawn("hello", b"quiet\0", b"") {
            Ok(_) => spawned += 1,
            Err(e) => break e,
        }
        if spawned > 200 {
            return Err("procmgr took more than 200 children");
        }
    };
    let full = entries()?;
    note!("{spawned} spawned, then {refusal:?} with {full} entries");
    let mut reaped = 0;
    while let Ok((_, st)) = pm::wait(None, Some(WAIT_US)) {
        if st != Ended::Exited(0) {
            note!("a zombie ended with {st:?}");
            return Err("a zombie's status is wrong");
        }
        reaped += 1;
    }
    expect(refusal, Error::NoMemory, "the refusal at the limit")?;
    expect(full, PROCMGR_MAX_PROCS, "entries at the refusal")?;
    expect(reaped, spawned, "zombies reaped")?;
    let again = pm::spawn("hello", b"quiet\0", b"").map_err(|_| "spawn after the reaping")?;
    expect(
        wait_pid(again)?,
        Ended::Exited(0),
        "the last child's status",
    )?;
    crate::util::free_back_to(before, "procmgr table full")
}

/// Slot -> (pid, zombie) of procmgr's table, from `list`.
fn slots() -> Result<[Option<(u32, bool)>; PROCMGR_MAX_PROCS], &'static str> {
    let mut out = [None; PROCMGR_MAX_PROCS];
    let mut i = 0;
    while let Some(p) = pm::list(i).map_err(|_| "list failed")? {
        if let Some(s) = out.get_mut(p.index as usize) {
            *s = Some((p.pid, p.zombie.is_some()));
        }
        i = p.index + 1;
    }
    Ok(out)
}

fn slot_of(pid: u32) -> Result<usize, &'static str> {
    slots()?
        .iter()
        .position(|s| s.is_some_and(|(p, _)| p == pid))
        .ok_or("a child is not in procmgr's list")
}

const SLEEP: &[u8] = b"hello\0sleep\0";

/// Finding 2: procmgr tells an ended process from a running one by
/// registering it on one shared "probe" notification and looking for a
/// signal. The kernel keeps one registration per notification, so every
/// process probed while running stayed registered on the probe, and its
/// end later signalled it: the next running process probed read that
/// stale signal as its own end, and procmgr blocked in `process_wait` on
/// it -- every request hung until that process ended. A running process
/// is probed when a process sharing its end bit (slot % 64) ends: here Z
/// (slot k) ends while X (slot k + 64) runs, Z2 takes slot k, X ends, and
/// procmgr must still answer (before the fix it hung in the wait for Z2).
pub fn procmgr_end_probe_has_no_stale_signal() -> TestResult {
    if pm::endpoint().is_none() {
        return Err("init did not adopt this program into procmgr");
    }
    // Zombies in every free slot, so the slots of the next spawns are
    // the ones freed below.
    let mut n = 0;
    while pm::spawn("hello", b"quiet\0", b"").is_ok() {
        n += 1;
        if n > 200 {
            return Err("procmgr took more than 200 children");
        }
    }
    let s = slots()?;
    let k = (2..64)
        .find(|&k| matches!((s[k], s[k + 64]), (Some((_, true)), Some((_, true)))))
        .ok_or("no two zombie slots k and k + 64")?;
    for slot in [k, k + 64] {
        if let Some((pid, _)) = s[slot] {
            wait_pid(pid)?;
        }
    }
    let r = stale_probe_steps(k);
    // Everything left is a zombie (or ends now): reap it all.
    while pm::wait(None, Some(WAIT_US)).is_ok() {}
    r
}

fn spawn_sleeper(slot: usize) -> Result<u32, &'static str> {
    let pid = pm::spawn("hello", SLEEP, b"").map_err(|_| "spawn hello sleep")?;
    expect(slot_of(pid)?, slot, "the sleeper's slot")?;
    Ok(pid)
}

fn stale_probe_steps(k: usize) -> TestResult {
    let z = spawn_sleeper(k)?;
    let x = spawn_sleeper(k + 64)?;
    // Z's end makes procmgr probe X (same bit), which runs on.
    pm::kill(z).map_err(|_| "kill z")?;
    expect(wait_pid(z)?, Ended::Killed, "z's status")?;
    let z2 = spawn_sleeper(k)?;
    pm::kill(x).map_err(|_| "kill x")?;
    // procmgr must answer: a bounded call (a hung procmgr would hang a
    // plain one, and this case with it).
    let ep = pm::endpoint().ok_or("no procmgr endpoint")?;
    let mut buf = [0u8; 256];
    let t0 = sys::clock_ns();
    let mut x_status = None;
    while x_status.is_none() && sys::clock_ns() - t0 < 10_000_000_000 {
        let mut c = pm::Client::new(libipc::server::Caller::new(ep, Some(5_000_000)), &mut buf);
        match c.try_wait(u64::from(x)) {
            Ok(pm::Reply::Reaped { status, .. }) => x_status = Some(Ended::from_word(status)),
            Ok(_) => sys::sleep_ns(1_000_000),
            Err(e) => {
                note!("try_wait(x): {e:?}");
                return Err("procmgr stopped answering after x ended");
            }
        }
    }
    expect(x_status, Some(Ended::Killed), "x's status")?;
    let alive = slots()?[k].is_some_and(|(p, zombie)| p == z2 && !zombie);
    let _ = pm::kill(z2);
    let z2_status = wait_pid(z2)?;
    if !alive {
        return Err("z2 was recorded as ended while it ran");
    }
    expect(z2_status, Ended::Killed, "z2's status")
}
