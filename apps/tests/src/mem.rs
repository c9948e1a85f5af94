//! `map_anon`/`unmap`/`protect`: zeroed pages, W^X, no double mapping,
//! alignment and range checks, and that protections are really enforced.

use crate::note;
use crate::util::{self, expect_err, run_expect_fault, TestResult};
use abi::status::Status;
use abi::{prot, Error};
use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use libipc::{bench::rdtsc, sys};

/// The pages this case plays with (nothing else lives near).
const BASE: u64 = 0x4200_0000_0000;
const RW: u64 = BASE;
const CODE: u64 = BASE + 0x10_000;
const DATA_CODE: u64 = BASE + 0x20_000;
const PAGE: u64 = 4096;

/// Reads the first word of [`RW`] (which must be unmapped by then).
extern "C" fn read_rw(_arg: u64) -> ! {
    // SAFETY: reads a page the test unmapped; the #PF ends this thread.
    let _ = unsafe { core::ptr::read_volatile(RW as *const u64) };
    sys::thread_exit(0)
}

/// Calls into [`CODE`] (an EXEC page holding `ret`).
extern "C" fn call_code(_arg: u64) -> ! {
    call(CODE);
    sys::thread_exit(0)
}

/// Calls into [`DATA_CODE`] (a writable, non-executable page holding `ret`).
extern "C" fn call_data(_arg: u64) -> ! {
    call(DATA_CODE);
    sys::thread_exit(0)
}

/// Writes to [`CODE`] (read + execute only).
extern "C" fn write_code(_arg: u64) -> ! {
    // SAFETY: writes a page mapped without WRITE; the #PF ends this thread.
    unsafe { core::ptr::write_volatile(CODE as *mut u8, 0x90) };
    sys::thread_exit(0)
}

/// `call addr`, where `addr` holds a lone `ret`.
fn call(addr: u64) {
    // SAFETY: the page at `addr` holds `ret` (0xc3) and nothing else runs;
    // if it is not executable the #PF ends this thread. The call's return
    // address goes on our stack and comes straight back off.
    unsafe {
        asm!(
            "call {a}",                 // push return address; rip := addr
            a = in(reg) addr,
            clobber_abi("C"),
        );
    }
}

/// Maps a page at `addr` writable and puts `ret` in its first byte.
fn ret_page(addr: u64) -> Result<(), &'static str> {
    sys::map_anon(addr, PAGE, prot::WRITE).map_err(|e| {
        note!("map_anon({addr:#x}): {e}");
        "map_anon failed"
    })?;
    // SAFETY: the page was just mapped writable; nothing else uses it.
    unsafe { core::ptr::write_volatile(addr as *mut u8, 0xc3) };
    Ok(())
}

/// Unmaps one page this case mapped (ignoring errors: cleanup only).
fn drop_page(addr: u64) {
    // SAFETY: only this case used the page, and its threads have ended.
    let _ = unsafe { sys::unmap(addr, PAGE) };
}

/// Case 17: the rules of `map_anon` and friends.
pub fn map_anon_rules() -> TestResult {
    let r = rules();
    drop_page(RW);
    drop_page(CODE);
    drop_page(DATA_CODE);
    r
}

fn rules() -> TestResult {
    use Error::{AlreadyExists, BadAddress, InvalidArgument};
    sys::map_anon(RW, PAGE, prot::WRITE).map_err(|e| {
        note!("map_anon(RW): {e}");
        "map_anon of a fresh page failed"
    })?;
    let words = RW as *mut u64;
    for i in 0..(PAGE / 8) as usize {
        // SAFETY: the page is mapped readable; `i` stays inside it.
        if unsafe { words.add(i).read_volatile() } != 0 {
            return Err("a fresh page is not zeroed");
        }
    }
    // SAFETY: as above, writable.
    unsafe { words.add(7).write_volatile(0x1234_5678_9abc_def0) };
    // SAFETY: as above.
    if unsafe { words.add(7).read_volatile() } != 0x1234_5678_9abc_def0 {
        return Err("a write to a fresh page did not stick");
    }
    expect_err(
        sys::map_anon(BASE + 0x30_000, PAGE, prot::WRITE | prot::EXEC),
        &[InvalidArgument],
        "a writable+executable mapping was not refused (W^X)",
    )?;
    expect_err(
        sys::map_anon(RW, PAGE, prot::WRITE),
        &[AlreadyExists],
        "mapping a page twice was not AlreadyExists",
    )?;
    expect_err(
        sys::map_anon(BASE + 0x30_001, PAGE, prot::WRITE),
        &[InvalidArgument],
        "an unaligned address was not refused",
    )?;
    expect_err(
        sys::map_anon(BASE + 0x30_000, PAGE, 1 << 5),
        &[InvalidArgument],
        "unknown prot bits were not refused",
    )?;
    expect_err(
        sys::map_anon(0xffff_8000_0000_0000, PAGE, prot::WRITE),
        &[BadAddress, InvalidArgument],
        "a kernel-half mapping was not refused",
    )?;
    expect_err(
        sys::map_anon(0, PAGE, prot::WRITE),
        &[BadAddress, InvalidArgument],
        "mapping page 0 was not refused",
    )?;
    expect_err(
        sys::map_anon(0x7fff_ffff_f000, 2 * PAGE, prot::WRITE),
        &[BadAddress, InvalidArgument],
        "a range crossing USER_END was not refused",
    )?;
    // SAFETY: nothing references RW any more.
    unsafe { sys::unmap(RW, PAGE) }.map_err(|_| "unmap failed")?;
    run_expect_fault(read_rw, &[14]).inspect_err(|_| note!("reading an unmapped page"))?;

    // An EXEC page holding `ret` can be called, not written.
    ret_page(CODE)?;
    // SAFETY: nothing holds a reference into the page.
    unsafe { sys::protect(CODE, PAGE, prot::EXEC) }.map_err(|e| {
        note!("protect(EXEC): {e}");
        "protect to EXEC failed"
    })?;
    match util::run(call_code, 0)? {
        Status::Exited(0) => {}
        other => {
            note!("calling an EXEC page: {other:?}");
            return Err("an EXEC page could not be executed");
        }
    }
    run_expect_fault(write_code, &[14]).inspect_err(|_| note!("writing an EXEC page"))?;
    // SAFETY: nothing holds a reference into the page (and W^X must refuse).
    let r = unsafe { sys::protect(CODE, PAGE, prot::ALL) };
    expect_err(
        r,
        &[InvalidArgument],
        "protect to WRITE|EXEC was not refused (W^X)",
    )?;

    // All or nothing: a range whose third page is taken maps nothing.
    let run = BASE + 0x50_000;
    sys::map_anon(run + 2 * PAGE, PAGE, prot::WRITE).map_err(|_| "map_anon failed")?;
    let r = sys::map_anon(run, 4 * PAGE, prot::WRITE);
    let first_free = sys::map_anon(run, 2 * PAGE, prot::WRITE);
    // SAFETY: nothing references these pages.
    let _ = unsafe { sys::unmap(run, 3 * PAGE) };
    expect_err(
        r,
        &[AlreadyExists],
        "mapping over a taken page was not AlreadyExists",
    )?;
    if first_free.is_err() {
        return Err("a failed map_anon left pages mapped (no rollback)");
    }

    // A writable page is not executable (NX).
    ret_page(DATA_CODE)?;
    run_expect_fault(call_data, &[14]).inspect_err(|_| note!("executing a writable page"))
}

/// The page the shootdown cases share with their toucher thread.
const SHARED: u64 = BASE + 0x40_000;

/// A thread that keeps reading or writing [`SHARED`] on one CPU.
struct Toucher {
    cpu: u64,
    write: bool,
    /// Set once the page has been touched (its translation is cached).
    ready: AtomicBool,
    pinned: AtomicBool,
    /// TSC right after the toucher's last access that did not fault.
    last_touch: AtomicU64,
}

extern "C" fn toucher_thread(arg: u64) -> ! {
    // SAFETY: `revoke_reaches` passes a `Toucher` with `arg_of` and joins
    // before touching or dropping it.
    let t: &Toucher = unsafe { util::from_arg(arg) };
    t.pinned
        .store(sys::set_affinity(t.cpu).is_ok(), Ordering::Relaxed);
    let end = util::deadline_ms(500);
    let p = SHARED as *mut u64;
    while rdtsc() < end {
        // SAFETY: the page is mapped writable until the spawner revokes it;
        // from then on the access faults and ends this thread.
        unsafe {
            if t.write {
                p.write_volatile(p.read_volatile() + 1);
            } else {
                let _ = p.read_volatile();
            }
        }
        t.last_touch.store(rdtsc(), Ordering::Release);
        t.ready.store(true, Ordering::Release);
    }
    sys::thread_exit(0)
}

/// Maps [`SHARED`], lets a thread on the last CPU touch it in a loop, then
/// `revoke`s access from CPU 0: the thread must fault at once (the kernel
/// must shoot down the other CPU's TLB entry).
fn revoke_reaches(write: bool, revoke: fn() -> Result<u64, Error>) -> TestResult {
    // A host that stalls this vCPU past the toucher's 500 ms loop makes the
    // revocation come after the toucher ended: that is retried (three
    // tries); a toucher access that succeeded after `revoke` returned is a
    // stale TLB entry, and fails at once.
    for _ in 0..3 {
        match revoke_once(write, revoke)? {
            Revoked::Faulted => return Ok(()),
            Revoked::TooLate => continue,
        }
    }
    Err("the revocation never came while the toucher ran (host stalls?)")
}

enum Revoked {
    Faulted,
    TooLate,
}

fn revoke_once(write: bool, revoke: fn() -> Result<u64, Error>) -> Result<Revoked, &'static str> {
    if !util::pin0() {
        return Err("set_affinity(0) failed");
    }
    sys::map_anon(SHARED, PAGE, prot::WRITE).map_err(|_| "map_anon failed")?;
    let mut t = Toucher {
        cpu: sys::cpu_count().saturating_sub(1),
        write,
        ready: AtomicBool::new(false),
        pinned: AtomicBool::new(false),
        last_touch: AtomicU64::new(0),
    };
    let th = util::spawn(toucher_thread, util::arg_of(&mut t))?;
    let give_up = util::deadline_ms(400);
    while !t.ready.load(Ordering::Acquire) && rdtsc() < give_up {
        sys::yield_now();
    }
    sys::sleep_ns(2_000_000);
    let revoked = revoke();
    let revoked_at = rdtsc();
    let st = th.join()?;
    drop_page(SHARED);
    if !t.pinned.load(Ordering::Relaxed) {
        return Err("set_affinity failed");
    }
    if revoked.is_err() {
        return Err("revoking access failed");
    }
    if st == Status::Exited(0) {
        let last = t.last_touch.load(Ordering::Acquire);
        if last > revoked_at {
            note!(
                "the toucher's access succeeded {} TSC ticks after revoke returned",
                last - revoked_at
            );
            return Err("another CPU used a revoked page (stale TLB entry)");
        }
        note!("the toucher ended before the revocation (host stall): retrying");
        return Ok(Revoked::TooLate);
    }
    util::expect_fault(st, &[14]).map(|()| Revoked::Faulted)
}

/// Case: `unmap` and `protect` (to read-only) on one CPU stop another CPU's
/// thread from reading / writing the page (TLB shootdown).
pub fn revoked_access_reaches_other_cpus() -> TestResult {
    // SAFETY: only the toucher thread uses the page, and it is meant to fault.
    revoke_reaches(false, || unsafe { sys::unmap(SHARED, PAGE) })
        .inspect_err(|_| note!("unmap while another CPU reads"))?;
    // SAFETY: as above.
    revoke_reaches(true, || unsafe { sys::protect(SHARED, PAGE, 0) })
        .inspect_err(|_| note!("protect(read-only) while another CPU writes"))
}
