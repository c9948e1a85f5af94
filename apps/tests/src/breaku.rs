//! breaku (session 19's break-it review of forku, gaps and ipcl): the
//! loader maps a boot module's read-only segments straight from the
//! module's memory object, so one frame backs that page in every process
//! the module started. Nothing a program does with its own space may
//! change it for the others.

use crate::note;
use crate::util::{expect, TestResult};
use abi::status::Ended;
use libipc::procmgr as pm;

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
