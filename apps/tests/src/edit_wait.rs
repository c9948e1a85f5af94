//! A thread killed (through its handle) while it waits for its address
//! space's edit flag: moved from handles.rs (tidy, session 19) to keep that
//! file under 700 lines; the case is the kill of a waiting thread, not the
//! handle rules.

use crate::note;
use crate::util::{self, TestResult};
use abi::status::Status;
use core::sync::atomic::{AtomicBool, Ordering};
use libipc::sys;

/// Where [`killed_while_waiting_to_edit_keeps_nothing`] maps.
const EDIT_A: u64 = 0x6200_0000_0000;
const EDIT_B: u64 = 0x6300_0000_0000;
const EDIT_PROBE: u64 = 0x6400_0000_0000;
const EDIT_BIG: u64 = 24 << 20;
const EDIT_CHUNK: u64 = 16 << 20;
static A_MAPPING: AtomicBool = AtomicBool::new(false);
static B_MAPPING: AtomicBool = AtomicBool::new(false);

extern "C" fn edit_holder(_: u64) -> ! {
    A_MAPPING.store(true, Ordering::SeqCst);
    let r = sys::map_anon(EDIT_A, EDIT_BIG, abi::prot::WRITE);
    if r.is_ok() {
        // SAFETY: nothing uses the range.
        let _ = unsafe { sys::unmap(EDIT_A, EDIT_BIG) };
    }
    sys::thread_exit(0)
}

extern "C" fn edit_waiter(_: u64) -> ! {
    while !A_MAPPING.load(Ordering::SeqCst) {
        sys::yield_now();
    }
    sys::sleep_ns(2_000_000); // the holder is inside its long map by now
    B_MAPPING.store(true, Ordering::SeqCst);
    // Charged up front, then waits for the holder's edit flag.
    let _ = sys::map_anon(EDIT_B, EDIT_CHUNK, abi::prot::WRITE);
    sys::thread_exit(0)
}

/// How many `EDIT_CHUNK`s the process can still map (at most 16), all
/// unmapped again.
fn chunks_mappable() -> u64 {
    let mut n = 0;
    while n < 16 && sys::map_anon(EDIT_PROBE + n * EDIT_CHUNK, EDIT_CHUNK, abi::prot::WRITE).is_ok()
    {
        n += 1;
    }
    // SAFETY: nothing uses the probe range.
    let _ = unsafe { sys::unmap(EDIT_PROBE, 16 * EDIT_CHUNK) };
    n
}

/// A thread killed (through its handle) while it waits for its address
/// space's edit flag inside `map_anon` finishes that call and dies on its
/// way out, keeping nothing: it used to die inside the wait, so the pages
/// charged up front and its reference to the space were never given back
/// (the process's memory quota shrank for good, the space outlived the
/// process).
pub fn killed_while_waiting_to_edit_keeps_nothing() -> TestResult {
    let before = chunks_mappable();
    for _ in 0..6 {
        A_MAPPING.store(false, Ordering::SeqCst);
        B_MAPPING.store(false, Ordering::SeqCst);
        let a = util::spawn(edit_holder, 0)?;
        let b = util::spawn(edit_waiter, 0)?;
        while !B_MAPPING.load(Ordering::SeqCst) {
            sys::sleep_ns(500_000);
        }
        sys::sleep_ns(1_000_000);
        let killed = b.handle().kill();
        let sb = b.join()?;
        let sa = a.join()?;
        // SAFETY: both threads have ended; nothing uses the ranges.
        let _ = unsafe { sys::unmap(EDIT_B, EDIT_CHUNK) };
        if killed.is_err() || sa != Status::Exited(0) {
            note!("kill {killed:?}, holder {sa:?}, waiter {sb:?}");
            return Err("the holder or the kill went wrong");
        }
    }
    let after = chunks_mappable();
    if after < before {
        note!("{before} chunks of 16 MiB mappable before, {after} after");
        return Err("a thread killed while waiting to edit its space kept its charge");
    }
    Ok(())
}
