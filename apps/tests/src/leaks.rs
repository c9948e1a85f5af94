//! Resource reuse and concurrency: doing something many times (or many
//! things at once) must not use up or confuse the kernel (a leak shows as
//! NoMemory, or a kernel panic, partway through).

use crate::note;
use crate::util::{self, TestResult};
use abi::prot;
use abi::status::Status;
use libipc::sys;

extern "C" fn exit_arg(arg: u64) -> ! {
    sys::thread_exit(arg as i32)
}

/// Case: 300 threads spawned and joined one after another all work.
pub fn thread_spawn_join_does_not_leak() -> TestResult {
    for i in 0..300u64 {
        match util::run(exit_arg, i) {
            Ok(Status::Exited(c)) if c as u64 == i => {}
            other => {
                note!("thread {i}: {other:?}");
                return Err("a spawned thread failed");
            }
        }
    }
    Ok(())
}

/// Where [`map_unmap_does_not_leak`] maps.
const AREA: u64 = 0x4500_0000_0000;
/// Bytes per round.
const AREA_BYTES: u64 = 1 << 20;
/// Rounds: more memory in total than the guest has (256 MiB by default).
const ROUNDS: u64 = 320;

/// Case: mapping, touching and unmapping 1 MiB 320 times (more than the
/// guest's RAM in total) always works, and every round reads zeroes.
pub fn map_unmap_does_not_leak() -> TestResult {
    for round in 0..ROUNDS {
        if let Err(e) = sys::map_anon(AREA, AREA_BYTES, prot::WRITE) {
            note!("round {round}: map_anon: {e}");
            return Err("map_anon failed after earlier unmaps (leak?)");
        }
        let mut dirty = None;
        for page in 0..AREA_BYTES / 4096 {
            let p = (AREA + page * 4096) as *mut u64;
            // SAFETY: the area was just mapped writable and only this loop
            // uses it.
            let old = unsafe { p.read_volatile() };
            // SAFETY: as above.
            unsafe { p.write_volatile(round + 1) };
            if old != 0 {
                dirty = dirty.or(Some((page, old)));
            }
        }
        // SAFETY: nothing references the area any more.
        if unsafe { sys::unmap(AREA, AREA_BYTES) }.is_err() {
            return Err("unmap failed");
        }
        if let Some((page, old)) = dirty {
            note!("round {round}: page {page} held {old:#x}");
            return Err("a fresh mapping was not zeroed");
        }
    }
    Ok(())
}

/// Case: asking for far more memory than the machine has fails with
/// NoMemory (not a kernel panic), and everything it grabbed on the way is
/// given back: 1 MiB can be mapped right after.
pub fn map_anon_beyond_ram_fails_cleanly() -> TestResult {
    let huge = 1u64 << 30;
    match sys::map_anon(AREA, huge, prot::WRITE) {
        Err(abi::Error::NoMemory) => {}
        Ok(_) => {
            // Enough RAM after all (a big guest): nothing to check.
            // SAFETY: nothing references the area.
            let _ = unsafe { sys::unmap(AREA, huge) };
            note!("1 GiB fit in RAM: nothing to check");
            return Ok(());
        }
        Err(e) => {
            note!("map_anon(1 GiB): {e}");
            return Err("map_anon beyond RAM did not fail with NoMemory");
        }
    }
    map_unmap_once().inspect_err(|_| note!("after the failed 1 GiB map_anon"))
}

/// Maps, touches and unmaps 1 MiB at [`AREA`].
fn map_unmap_once() -> TestResult {
    sys::map_anon(AREA, AREA_BYTES, prot::WRITE).map_err(|e| {
        note!("map_anon(1 MiB): {e}");
        "map_anon failed"
    })?;
    // SAFETY: just mapped writable; nothing else uses it.
    unsafe { (AREA as *mut u64).write_volatile(1) };
    // SAFETY: nothing references the area any more.
    unsafe { sys::unmap(AREA, AREA_BYTES) }.map_err(|_| "unmap failed")?;
    Ok(())
}

/// Threads in the concurrency cases.
const CROWD: usize = 24;

extern "C" fn sleep_then_exit(arg: u64) -> ! {
    sys::sleep_ns(1_000_000 + (arg % 5) * 1_000_000);
    sys::thread_exit(arg as i32)
}

/// Case: 24 threads alive at once, each sleeping 1-5 ms (wake-ups on every
/// CPU), all exit with their own code.
pub fn many_sleeping_threads_all_wake() -> TestResult {
    let mut threads: [Option<util::Thread>; CROWD] = Default::default();
    let mut first_err = None;
    for (i, slot) in threads.iter_mut().enumerate() {
        match util::spawn(sleep_then_exit, i as u64) {
            Ok(t) => *slot = Some(t),
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    for (i, slot) in threads.iter_mut().enumerate() {
        let Some(t) = slot.take() else { continue };
        match t.join() {
            Ok(Status::Exited(c)) if c as usize == i => {}
            other => {
                note!("thread {i}: {other:?}");
                first_err = first_err.or(Some("a sleeping thread did not exit with its code"));
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Map/touch/unmap rounds per thread in [`concurrent_map_unmap`].
const MAP_ROUNDS: u64 = 40;

extern "C" fn map_churn(arg: u64) -> ! {
    let base = AREA + 0x1000_0000 + arg * 0x10_0000;
    for round in 0..MAP_ROUNDS {
        if sys::map_anon(base, 0x1_0000, prot::WRITE).is_err() {
            sys::thread_exit(1);
        }
        for page in 0..16u64 {
            let p = (base + page * 4096) as *mut u64;
            // SAFETY: this thread's own area, just mapped writable.
            unsafe {
                if p.read_volatile() != 0 {
                    sys::thread_exit(2);
                }
                p.write_volatile(round + 1);
            }
        }
        // SAFETY: nothing references the area any more.
        if unsafe { sys::unmap(base, 0x1_0000) }.is_err() {
            sys::thread_exit(3);
        }
    }
    sys::thread_exit(0)
}

/// Case: several threads of one process map, touch and unmap their own
/// areas at the same time (on every CPU): every call works, every fresh
/// page reads zero.
pub fn concurrent_map_unmap() -> TestResult {
    let n = (sys::cpu_count() as usize).clamp(2, 4);
    let mut threads: [Option<util::Thread>; 8] = Default::default();
    for (i, slot) in threads.iter_mut().enumerate().take(n) {
        *slot = Some(util::spawn(map_churn, i as u64)?);
    }
    let mut worst = Ok(());
    for t in threads.iter_mut().filter_map(Option::take) {
        match t.join()? {
            Status::Exited(0) => {}
            Status::Exited(1) => worst = Err("map_anon failed"),
            Status::Exited(2) => worst = Err("a fresh page was not zeroed"),
            Status::Exited(3) => worst = Err("unmap failed"),
            other => {
                note!("thread ended with {other:?}");
                worst = Err("a mapping thread died");
            }
        }
    }
    worst
}
