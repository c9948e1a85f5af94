//! breaku (session 19's break-it review of forku, gaps and ipcl): the
//! loader maps a boot module's read-only segments straight from the
//! module's memory object, so one frame backs that page in every process
//! the module started: nothing a program does with its own space may
//! change it for the others. And procmgr delivers a child's end to the
//! oldest matching waiter: an exec must not leave the old image's waiters
//! there to take it.

use crate::note;
use crate::procmgr::Shared;
use crate::util::{expect, fork_with, TestResult};
use abi::status::Ended;
use core::sync::atomic::Ordering;
use libipc::procmgr as pm;
use libipc::sys;

/// How long one hello may take (a loaded TCG host is slow).
const WAIT_US: u32 = 10_000_000;

/// hello's `scribble` exit codes (`apps/hello`'s `scribble_exit`: this
/// crate does not link hello).
fn scribble_failure(code: i32) -> &'static str {
    match code {
        1 => "a hello found its read-only data changed by an earlier one",
        2 => "the forked hello could not write its private copy",
        3 => "the forked hello's write showed in its parent",
        4 => "hello could not write its own private copy",
        5 => "hello's fork or wait failed",
        _ => "hello scribble ended otherwise",
    }
}

/// One `hello scribble`: its outcome.
fn scribble() -> TestResult {
    let pid = pm::spawn("hello", b"scribble\0", b"").map_err(|_| "spawn hello scribble")?;
    match pm::wait(Some(pid), Some(WAIT_US)) {
        Ok((p, Ended::Exited(0))) if p == pid => Ok(()),
        Ok((p, Ended::Exited(c))) if p == pid => Err(scribble_failure(c)),
        other => {
            note!("hello scribble: {other:?}");
            Err("hello scribble did not exit")
        }
    }
}

/// A spawned hello makes its read-only data page writable (its own space:
/// `space_protect`) and writes it, after a forked child did the same: each
/// write must copy the module's frame (the mapping is private), never
/// reach it, so every later hello finds its bytes as built; and the copies
/// go when the processes do (free memory comes back: the module's frames
/// keep their owners, the copies are freed).
pub fn shared_module_pages_stay_unchanged() -> TestResult {
    if pm::endpoint().is_none() {
        return Err("init did not adopt this program into procmgr");
    }
    // Warm-up: procmgr's loader lookup, the loader's scratch tables.
    scribble()?;
    let before = crate::util::free_bytes()?;
    for _ in 0..3 {
        scribble()?;
    }
    // A plain hello still checks its loaded image (program headers in a
    // shared page) and exits with its argument hash.
    let pid = pm::spawn("hello", b"quiet\0", b"").map_err(|_| "spawn hello quiet")?;
    expect(
        pm::wait(Some(pid), Some(WAIT_US)).map_err(|_| "wait hello quiet")?,
        (pid, Ended::Exited(0)),
        "hello quiet after the scribbles",
    )?;
    crate::util::free_back_to(before, "hello scribbles")
}

/// How long procmgr may take to record a fork or an exec.
const SETTLE_NS: u64 = 5_000_000_000;

/// A thread of the image about to be replaced: waits for child `c` (for
/// ever; the exec ends it).
extern "C" fn old_image_waiter(c: u64) -> ! {
    let _ = pm::wait(Some(c as u32), None);
    sys::thread_exit(0)
}

/// Whether procmgr lists `pid` running `program`.
fn runs(pid: u32, program: &[u8]) -> Result<bool, &'static str> {
    let mut i = 0;
    while let Some(p) = pm::list(i).map_err(|_| "list failed")? {
        if p.pid == pid {
            return Ok(p.zombie.is_none() && &p.program[..p.program_len] == program);
        }
        i = p.index + 1;
    }
    Ok(false)
}

/// P forks C (which sleeps until killed); a thread of P blocks in a wait
/// for C (a waiter recorded at procmgr), and P execs `hello reap`, which
/// waits for any child. C is then killed: its end must reach the new
/// image (hello exits 100, "killed"), not the dead thread's waiter, which
/// as the oldest match took it and reaped C for nobody, so hello found no
/// child (exit 102) before procmgr's exec dropped the old image's waiters.
pub fn exec_drops_the_old_images_waiters() -> TestResult {
    if pm::endpoint().is_none() {
        return Err("init did not adopt this program into procmgr");
    }
    let shared = Shared::new()?;
    let slot = shared.slot(0);
    let p = fork_with(|| {
        let Ok(c) = fork_with(|| loop {
            sys::sleep_ns(1_000_000_000);
        }) else {
            return 1;
        };
        // Relaxed: the test polls the word itself.
        slot.store(u64::from(c), Ordering::Relaxed);
        let Ok(t) = crate::util::spawn(old_image_waiter, u64::from(c)) else {
            return 2;
        };
        // Let the thread record its waiter; the exec ends it.
        sys::sleep_ns(100_000_000);
        let _ = t;
        let _ = pm::exec("hello", b"reap\0", b"");
        3
    })?;
    let t0 = sys::clock_ns();
    let c = loop {
        match slot.load(Ordering::Relaxed) {
            0 if sys::clock_ns() - t0 > SETTLE_NS => return Err("P never forked C"),
            0 => sys::sleep_ns(1_000_000),
            c => break c as u32,
        }
    };
    while !runs(p, b"hello")? {
        if sys::clock_ns() - t0 > SETTLE_NS {
            let _ = pm::kill(c);
            let _ = pm::wait(Some(p), Some(WAIT_US));
            return Err("P never became hello");
        }
        sys::sleep_ns(2_000_000);
    }
    if pm::kill(c).is_err() {
        let _ = pm::wait(Some(p), Some(WAIT_US));
        return Err("kill C failed");
    }
    match pm::wait(Some(p), Some(WAIT_US)) {
        Ok((got, Ended::Exited(100))) if got == p => Ok(()),
        Ok((got, Ended::Exited(102))) if got == p => {
            Err("the old image's waiter took C's end: the new image found no child")
        }
        other => {
            note!("P (hello reap): {other:?}");
            Err("P did not reap C as killed")
        }
    }
}
