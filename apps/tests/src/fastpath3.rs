//! fastpath3 (issue 10 item 4's leftovers): ring-3 cases.
//!
//! - [`killed_spawner_leaves_no_child`]: a `thread_kill` that lands while
//!   its victim is inside `process_spawn` (copying a 4 MiB image, with
//!   preemption points) must not leave the new child running with its
//!   handle installed where no thread can name it (breakit2's note 2):
//!   the syscall exit of the killed spawner kills the child and closes the
//!   handle, so the process count settles back.

use crate::lifecycle::{code, info, settle};
use crate::note;
use crate::util::{self, TestResult};
use abi::bootimg::{encode, SegmentSpec, SEG_R, SEG_X};
use abi::{prot, Sysnum};
use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::sys;

global_asm!(
    ".pushsection .rodata.mica_fp3_children, \"a\"",
    // sleeper: sleeps 1 ms at a time, forever (only a kill ends it).
    "mica_fp3_sleeper:",
    "1:",
    "mov edi, 1000000",
    "mov eax, {sleep}",
    "syscall",
    "jmp 1b",
    "mica_fp3_sleeper_end:",
    ".popsection",
    sleep = const Sysnum::SleepNs as u64,
);

extern "C" {
    static mica_fp3_sleeper: u8;
    static mica_fp3_sleeper_end: u8;
}

const TEXT: u64 = 0x40_0000;
/// The segment's bytes (the sleeper, then zeros) and the encoded image.
const SEG_AT: u64 = 0x5f10_0000_0000;
const IMG_AT: u64 = 0x5f20_0000_0000;
const SEG_LEN: u64 = 4 << 20;
const IMG_LEN: u64 = SEG_LEN + (64 << 10);

/// The image's length (set before the spawner starts).
static IMG_BYTES: AtomicU64 = AtomicU64::new(0);
/// 1 once the spawner is about to make its `process_spawn`.
static STARTED: AtomicU64 = AtomicU64::new(0);
/// The handle its `process_spawn` returned (0: it never returned).
static RESULT: AtomicU64 = AtomicU64::new(0);

extern "C" fn spawner(_: u64) -> ! {
    let len = IMG_BYTES.load(Ordering::SeqCst) as usize;
    // SAFETY: the case mapped IMG_LEN bytes at IMG_AT and keeps them until
    // this thread is joined; nothing writes them meanwhile.
    let img = unsafe { core::slice::from_raw_parts(IMG_AT as *const u8, len) };
    STARTED.store(1, Ordering::SeqCst);
    if let Ok(h) = sys::process_spawn(img, 0) {
        RESULT.store(h.raw() as u64 | 1 << 63, Ordering::SeqCst);
    }
    sys::thread_exit(0)
}

/// Case: see the module docs. Eight rounds; in each the spawner is killed
/// 1 ms into its spawn (or its spawn completed first: then the case ends
/// the child itself), and the process count must settle back to where it
/// was. Before the fix a kill inside the copy left the sleeper running,
/// counted and unreachable (seen: the count stayed one higher).
pub fn killed_spawner_leaves_no_child() -> TestResult {
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
        core::ptr::addr_of!(mica_fp3_sleeper),
        core::ptr::addr_of!(mica_fp3_sleeper_end),
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
    let (mut inside, mut after) = (0, 0);
    for _ in 0..8 {
        STARTED.store(0, Ordering::SeqCst);
        RESULT.store(0, Ordering::SeqCst);
        let t = util::spawn(spawner, 0)?;
        while STARTED.load(Ordering::SeqCst) == 0 {
            sys::sleep_ns(100_000);
        }
        sys::sleep_ns(1_000_000);
        let _ = sys::thread_kill(t.handle());
        let _ = t.join()?;
        let r = RESULT.load(Ordering::SeqCst);
        if r != 0 {
            // The spawn returned before the kill: end the child ourselves.
            after += 1;
            let h = sys::ProcessHandle::from_raw(r as u32);
            let _ = sys::process_kill(h);
            let _ = sys::process_wait(h);
        } else {
            inside += 1;
        }
        let (s, ok) = settle(2000, |s| s.processes == base)?;
        if !ok {
            note!(
                "processes {} after the spawner's kill, {base} before ({inside} killed inside, {after} after)",
                s.processes
            );
            return Err("a killed spawner left its child behind");
        }
    }
    note!("{inside} spawns killed inside, {after} completed first");
    Ok(())
}
