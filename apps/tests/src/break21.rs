//! break21 (session 21): ring-3 cases.
//!
//! - [`suspended_spawner_killed_leaves_no_child`]: a `thread_suspend` that
//!   lands while its victim is inside `process_spawn` parks the victim at
//!   the syscall's return, with the new handle only in its RAX; a
//!   `thread_kill` of the parked thread must undo the spawn as a kill
//!   inside it does (fastpath3's case): the child killed, the handle
//!   closed, the process count back where it was. Before the fix the kill
//!   woke the thread in the park, which died there without the undo (the
//!   syscall exit tested the kill only before it parked): the sleeper ran
//!   on, counted and unreachable.

use crate::lifecycle::{code, info, settle};
use crate::note;
use crate::util::{self, TestResult};
use abi::bootimg::{encode, SegmentSpec, SEG_R, SEG_X};
use abi::{prot, Sysnum};
use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::{hw, sys};

global_asm!(
    ".pushsection .rodata.mica_b21_children, \"a\"",
    // sleeper: sleeps 1 ms at a time, forever (only a kill ends it).
    "mica_b21_sleeper:",
    "1:",
    "mov edi, 1000000",
    "mov eax, {sleep}",
    "syscall",
    "jmp 1b",
    "mica_b21_sleeper_end:",
    ".popsection",
    sleep = const Sysnum::SleepNs as u64,
);

extern "C" {
    static mica_b21_sleeper: u8;
    static mica_b21_sleeper_end: u8;
}

const TEXT: u64 = 0x40_0000;
/// The segment's bytes (the sleeper, then zeros) and the encoded image: 4
/// MiB, so the spawn's copy lasts long enough for a suspend to land in it.
const SEG_AT: u64 = 0x5f30_0000_0000;
const IMG_AT: u64 = 0x5f40_0000_0000;
const SEG_LEN: u64 = 4 << 20;
const IMG_LEN: u64 = SEG_LEN + (64 << 10);

/// The image's length (set before the spawner starts).
static IMG_BYTES: AtomicU64 = AtomicU64::new(0);
/// 1 once the spawner is about to make its `process_spawn`.
static STARTED: AtomicU64 = AtomicU64::new(0);
/// The handle its `process_spawn` returned, bit 63 set (0: never returned).
static RESULT: AtomicU64 = AtomicU64::new(0);

extern "C" fn spawner(_: u64) -> ! {
    let len = IMG_BYTES.load(Ordering::SeqCst) as usize;
    // SAFETY: the case mapped IMG_LEN bytes at IMG_AT and keeps them until
    // this thread is joined; nothing writes them meanwhile.
    let img = unsafe { core::slice::from_raw_parts(IMG_AT as *const u8, len) };
    // Below the case's thread: on a shared CPU its wake-up preempts the
    // spawn at the next preemption point.
    let _ = sys::set_priority(abi::MAX_PRIORITY);
    STARTED.store(1, Ordering::SeqCst);
    if let Ok(h) = sys::process_spawn(img, 0) {
        RESULT.store(h.raw() as u64 | 1 << 63, Ordering::SeqCst);
    }
    sys::thread_exit(0)
}

/// Case: see the module docs. Up to eight rounds (two whose suspend
/// landed inside the spawn are enough): the spawner is suspended 0 to 7/40
/// of a spawn into its spawn, left to finish it and park, then killed; the
/// process count must settle back.
pub fn suspended_spawner_killed_leaves_no_child() -> TestResult {
    sys::map_anon(SEG_AT, SEG_LEN, prot::WRITE).map_err(|_| "map_anon failed")?;
    sys::map_anon(IMG_AT, IMG_LEN, prot::WRITE).map_err(|_| "map_anon failed")?;
    let r = rounds();
    // SAFETY: every thread that read these mappings has been joined.
    let _ = unsafe { sys::unmap(SEG_AT, SEG_LEN) };
    // SAFETY: as above.
    let _ = unsafe { sys::unmap(IMG_AT, IMG_LEN) };
    r
}

fn rounds() -> TestResult {
    let text = code(
        core::ptr::addr_of!(mica_b21_sleeper),
        core::ptr::addr_of!(mica_b21_sleeper_end),
    );
    // SAFETY: mapped above, writable, used only by this case.
    let seg = unsafe { core::slice::from_raw_parts_mut(SEG_AT as *mut u8, SEG_LEN as usize) };
    seg[..text.len()].copy_from_slice(text);
    // SAFETY: as above.
    let img = unsafe { core::slice::from_raw_parts_mut(IMG_AT as *mut u8, IMG_LEN as usize) };
    let spec = SegmentSpec {
        vaddr: TEXT,
        bytes: seg,
        mem_size: SEG_LEN,
        flags: SEG_R | SEG_X,
    };
    let len = encode(TEXT, &[spec], img).map_err(|_| "cannot encode the image")?;
    IMG_BYTES.store(len as u64, Ordering::SeqCst);
    let base = info()?.processes;
    let whole = spawn_duration(&img[..len])?.min(spawn_duration(&img[..len])?);
    let (mut inside, mut outside, mut early) = (0, 0, 0);
    for k in 0..8 {
        STARTED.store(0, Ordering::SeqCst);
        RESULT.store(0, Ordering::SeqCst);
        let t = util::spawn(spawner, 0)?;
        while STARTED.load(Ordering::SeqCst) == 0 {
            sys::sleep_ns(50_000);
        }
        // 0 to 7/40 of a whole spawn in (the case's own spawn, measured
        // above, can be slower than the spawner's on another CPU).
        let at = whole * k / 40;
        if at != 0 {
            sys::sleep_ns(at);
        }
        hw::thread_suspend(t.handle()).map_err(|_| "thread_suspend failed")?;
        // The spawn finishes and the spawner parks at its return (or it
        // parked before the spawn began, or the spawn returned first).
        let (_, grown) = settle(200 + (whole / 500_000) as u32, |s| s.processes == base + 1)?;
        sys::sleep_ns(5_000_000);
        let returned = RESULT.load(Ordering::SeqCst) != 0;
        let _ = sys::thread_kill(t.handle());
        let _ = t.join()?;
        let r = RESULT.load(Ordering::SeqCst);
        if r != 0 {
            // The spawn reached user space before the suspend: the
            // handle is the case's to end.
            let h = sys::ProcessHandle::from_raw(r as u32);
            let _ = sys::process_kill(h);
            let _ = sys::process_wait(h);
            early += 1;
        } else if grown && !returned {
            inside += 1;
        } else {
            outside += 1;
        }
        let (s, ok) = settle(2000, |s| s.processes == base)?;
        if !ok {
            note!(
                "processes {} after the parked spawner's kill, {base} before ({inside} parked with a child, {outside} not)",
                s.processes
            );
            return Err("a spawner killed while suspended at its return left its child behind");
        }
        if inside == 2 {
            break;
        }
    }
    note!(
        "{inside} spawns parked at their return, {early} returned first, {outside} suspended before (a whole spawn: {} us)",
        whole / 1000
    );
    if inside == 0 {
        return Err("no suspend landed inside a spawn");
    }
    Ok(())
}

/// Nanoseconds one unsuspended `process_spawn` of `img` takes (its child
/// is then killed and reaped).
fn spawn_duration(img: &[u8]) -> Result<u64, &'static str> {
    let t0 = sys::clock_ns();
    let h = sys::process_spawn(img, 0).map_err(|_| "process_spawn failed")?;
    let whole = sys::clock_ns() - t0;
    let _ = sys::process_kill(h);
    let _ = sys::process_wait(h);
    Ok(whole)
}
