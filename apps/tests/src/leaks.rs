//! Resource reuse and concurrency: doing something many times (or many
//! things at once) must not use up or confuse the kernel. The leak cases
//! compare `sysinfo`'s free memory and live-thread count before and after,
//! exactly: a single lost frame or thread record fails them.

use crate::note;
use crate::util::{self, TestResult};
use abi::prot;
use abi::status::Status;
use libipc::sys;

extern "C" fn exit_arg(arg: u64) -> ! {
    sys::thread_exit(arg as i32)
}

/// What the leak cases compare: free memory and live user threads.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Usage {
    free_bytes: u64,
    threads: u64,
}

fn usage_now() -> Result<Usage, &'static str> {
    let info = sys::sysinfo().map_err(|e| {
        note!("sysinfo: {e}");
        "sysinfo failed"
    })?;
    Ok(Usage {
        free_bytes: info.free_bytes,
        threads: info.threads,
    })
}

/// [`usage_now`] once it holds still: a thread that ended on another CPU
/// gives its kernel stack back only when that CPU switches away, so the
/// figures may still rise for a moment after a join. Three reads 2 ms apart
/// must agree (a leak never comes back, so waiting cannot hide one).
fn usage() -> Result<Usage, &'static str> {
    let mut last = usage_now()?;
    let mut same = 0;
    for _ in 0..100 {
        sys::sleep_ns(2_000_000);
        let now = usage_now()?;
        if now == last {
            same += 1;
            if same == 2 {
                return Ok(now);
            }
        } else {
            same = 0;
        }
        last = now;
    }
    note!("free memory / thread count never held still for 2 ms");
    Err("sysinfo figures did not settle")
}

/// Fails if `after` has a single frame less free, or a single thread more
/// alive, than `before`: every frame and every thread record the rounds took
/// must be back. (More free memory afterwards is not this case's doing: a
/// frame an earlier case freed late, on another CPU; it is noted.)
/// [`usage`], waiting up to 2 s for it to come back to `before`: the last
/// thread a round joined is Dead, but its stack and its place in the live
/// count go only when its CPU switches away, and on a loaded host that CPU
/// may not run for a while (seen: +1 thread and its 8 stack pages, once).
/// A real leak never comes back, so it still fails.
fn usage_back_to(before: Usage) -> Result<Usage, &'static str> {
    let mut now = usage()?;
    for _ in 0..1000 {
        if now.free_bytes >= before.free_bytes && now.threads <= before.threads {
            break;
        }
        sys::sleep_ns(2_000_000);
        now = usage_now()?;
    }
    Ok(now)
}

fn expect_unchanged(before: Usage, after: Usage, rounds: u64) -> TestResult {
    if after.free_bytes >= before.free_bytes && after.threads <= before.threads {
        if after != before {
            note!(
                "over {rounds} rounds: {} bytes more free, {} fewer threads (freed late by earlier work)",
                after.free_bytes - before.free_bytes,
                before.threads - after.threads
            );
        }
        return Ok(());
    }
    let lost = before.free_bytes as i64 - after.free_bytes as i64;
    note!(
        "over {rounds} rounds: free memory {} -> {} bytes ({lost} lost, {} pages), \
         live threads {} -> {}",
        before.free_bytes,
        after.free_bytes,
        lost / 4096,
        before.threads,
        after.threads
    );
    if after.threads != before.threads {
        Err("live threads changed across the rounds (thread records leak)")
    } else {
        Err("free memory changed across the rounds (frames leak)")
    }
}

/// The stack every thread of [`thread_spawn_join_does_not_leak`] reuses
/// (one fixed stack, so the rounds create no page-table pages of their own).
const JOIN_STACK: u64 = 0x4600_0000_0000;
/// Its size.
const JOIN_STACK_BYTES: u64 = 64 * 1024;
/// Spawn/join rounds before the first measurement: kernel heaps and tables
/// reach the size this workload keeps.
const JOIN_WARMUP: u64 = 20;
/// Measured spawn/join rounds.
const JOIN_ROUNDS: u64 = 300;

/// Spawns `exit_arg(i)` on [`JOIN_STACK`], joins it and checks its code.
fn spawn_join_once(i: u64) -> TestResult {
    let tid = sys::thread_spawn(exit_arg, JOIN_STACK + JOIN_STACK_BYTES, i).map_err(|e| {
        note!("thread {i}: thread_spawn: {e}");
        "thread_spawn failed"
    })?;
    match sys::thread_join(tid).map(abi::status::decode) {
        Ok(Status::Exited(c)) if c as u64 == i => Ok(()),
        other => {
            note!("thread {i}: {other:?}");
            Err("a spawned thread did not exit with its code")
        }
    }
}

/// Case: 300 threads spawned and joined one after another all work, and
/// afterwards free memory and the live-thread count are exactly what they
/// were before (after a warm-up, so lazily grown kernel tables are counted
/// in both).
pub fn thread_spawn_join_does_not_leak() -> TestResult {
    sys::map_anon(JOIN_STACK, JOIN_STACK_BYTES, prot::WRITE).map_err(|e| {
        note!("map_anon(stack): {e}");
        "map_anon of the thread stack failed"
    })?;
    let r = (|| {
        (0..JOIN_WARMUP).try_for_each(spawn_join_once)?;
        let before = usage()?;
        (0..JOIN_ROUNDS).try_for_each(spawn_join_once)?;
        expect_unchanged(before, usage_back_to(before)?, JOIN_ROUNDS)
    })();
    // SAFETY: every thread that used the stack has been joined (or, on a
    // failed join, the case has failed anyway and the stack is not reused).
    let _ = unsafe { sys::unmap(JOIN_STACK, JOIN_STACK_BYTES) };
    r
}

/// Where [`map_unmap_does_not_leak`] maps.
const AREA: u64 = 0x4500_0000_0000;
/// Bytes per round.
const AREA_BYTES: u64 = 1 << 20;
/// Rounds: more memory in total than the guest has (256 MiB by default).
const ROUNDS: u64 = 320;
/// Page-table pages one 1 MiB area (inside one 2 MiB-aligned block) can
/// need: a PDPT, a PD and a PT.
const AREA_TABLE_PAGES: u64 = 3;

/// Maps, touches every page of, and unmaps [`AREA`]; fails if a fresh page
/// was not zero.
fn map_touch_unmap(round: u64) -> TestResult {
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
    Ok(())
}

/// Case: mapping, touching and unmapping 1 MiB 320 times (more than the
/// guest's RAM in total) always works, every round reads zeroes, and free
/// memory afterwards is exactly what it was after the first round. The
/// first round may keep only the page-table pages the area needs (at most
/// [`AREA_TABLE_PAGES`]); the kernel keeps those for the space's lifetime.
pub fn map_unmap_does_not_leak() -> TestResult {
    let start = usage()?;
    map_touch_unmap(0)?;
    let before = usage()?;
    let tables = start.free_bytes.saturating_sub(before.free_bytes) / 4096;
    if tables > AREA_TABLE_PAGES {
        note!(
            "the first round kept {} bytes ({} pages); page tables need at most {AREA_TABLE_PAGES}",
            start.free_bytes as i64 - before.free_bytes as i64,
            tables
        );
        return Err("the first map/unmap round kept more than its page tables");
    }
    (1..ROUNDS).try_for_each(map_touch_unmap)?;
    expect_unchanged(before, usage_back_to(before)?, ROUNDS - 1)
}

/// Case: asking for more memory than the machine has fails with NoMemory
/// (not a kernel panic), and everything it grabbed on the way is given
/// back: 1 MiB can be mapped right after, and a second failed attempt
/// leaves free memory exactly as it was after the first (which may keep
/// the page tables of the range).
pub fn map_anon_beyond_ram_fails_cleanly() -> TestResult {
    let info = sys::sysinfo().map_err(|_| "sysinfo failed")?;
    // More than all RAM, in whole 2 MiB blocks: it can never fit.
    let huge = (info.total_bytes + (64 << 20)).next_multiple_of(2 << 20);
    let fail_once = || -> TestResult {
        match sys::map_anon(AREA, huge, prot::WRITE) {
            Err(abi::Error::NoMemory) => {}
            Ok(_) => {
                // SAFETY: nothing references the area.
                let _ = unsafe { sys::unmap(AREA, huge) };
                note!(
                    "map_anon({huge:#x}) succeeded with {} bytes of RAM",
                    info.total_bytes
                );
                return Err("map_anon of more than all RAM succeeded");
            }
            Err(e) => {
                note!("map_anon({huge:#x}): {e}");
                return Err("map_anon beyond RAM did not fail with NoMemory");
            }
        }
        map_unmap_once().inspect_err(|_| note!("after the failed map_anon"))
    };
    fail_once()?;
    let before = usage()?;
    fail_once()?;
    expect_unchanged(before, usage_back_to(before)?, 1)
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
