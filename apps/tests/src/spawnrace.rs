//! What the cases that race a `process_spawn` share (fastpath3's kill,
//! break21's suspend): a 4 MiB image of a sleeper (long enough a spawn for
//! a kill or suspend to land inside it), a spawner thread that spawns it
//! once below the case's priority, and the time one whole spawn takes.

use crate::lifecycle::code;
use crate::util::{self, TestResult};
use abi::bootimg::{encode, SegmentSpec, SEG_R, SEG_X};
use abi::{prot, Sysnum};
use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::{ipc, sys};

global_asm!(
    ".pushsection .rodata.mica_spawnrace_children, \"a\"",
    // sleeper: sleeps 1 ms at a time, forever (only a kill ends it).
    "mica_spawnrace_sleeper:",
    "1:",
    "mov edi, 1000000",
    "mov eax, {sleep}",
    "syscall",
    "jmp 1b",
    "mica_spawnrace_sleeper_end:",
    ".popsection",
    sleep = const Sysnum::SleepNs as u64,
);

extern "C" {
    static mica_spawnrace_sleeper: u8;
    static mica_spawnrace_sleeper_end: u8;
}

const TEXT: u64 = 0x40_0000;
/// The segment's bytes (the sleeper, then zeros) and the encoded image.
const SEG_AT: u64 = 0x5f10_0000_0000;
const IMG_AT: u64 = 0x5f20_0000_0000;
const SEG_LEN: u64 = 4 << 20;
const IMG_LEN: u64 = SEG_LEN + (64 << 10);

/// The image's length (set before a spawner starts).
static IMG_BYTES: AtomicU64 = AtomicU64::new(0);
/// 1 once the spawner is about to make its `process_spawn`.
static STARTED: AtomicU64 = AtomicU64::new(0);
/// The handle its `process_spawn` returned, bit 63 set (0: never returned).
static RESULT: AtomicU64 = AtomicU64::new(0);

extern "C" fn spawner(_: u64) -> ! {
    let len = IMG_BYTES.load(Ordering::SeqCst) as usize;
    // SAFETY: `with_image` mapped IMG_LEN bytes at IMG_AT and keeps them
    // until the case (which joins every spawner) returns; nothing writes
    // them meanwhile.
    let img = unsafe { core::slice::from_raw_parts(IMG_AT as *const u8, len) };
    // Below the case's thread: on a shared CPU its wake-up preempts the
    // spawn at the next preemption point instead of waiting for the time
    // slice's end.
    let _ = sys::set_priority(abi::MAX_PRIORITY);
    STARTED.store(1, Ordering::SeqCst);
    if let Ok(h) = sys::process_spawn(img, 0) {
        RESULT.store(h.raw() as u64 | 1 << 63, Ordering::SeqCst);
    }
    sys::thread_exit(0)
}

/// Maps and encodes the sleeper's image, runs `f` with it and the time a
/// whole spawn of it takes (ns), then unmaps it. `f` must join every
/// spawner it started.
pub fn with_image(f: impl FnOnce(&[u8], u64) -> TestResult) -> TestResult {
    sys::map_anon(SEG_AT, SEG_LEN, prot::WRITE).map_err(|_| "map_anon failed")?;
    sys::map_anon(IMG_AT, IMG_LEN, prot::WRITE).map_err(|_| "map_anon failed")?;
    let r = encoded().and_then(|len| {
        // SAFETY: mapped above and written by `encoded`; read-only from
        // here until the unmap below, after `f` joined every reader.
        let img = unsafe { core::slice::from_raw_parts(IMG_AT as *const u8, len) };
        // The first spawn is slower (cold caches and free lists): the
        // second's time, or the first's if smaller.
        let whole = spawn_duration(img)?.min(spawn_duration(img)?);
        f(img, whole)
    });
    // SAFETY: every thread that read these mappings has been joined.
    let _ = unsafe { sys::unmap(SEG_AT, SEG_LEN) };
    // SAFETY: as above.
    let _ = unsafe { sys::unmap(IMG_AT, IMG_LEN) };
    r
}

/// Encodes the image at IMG_AT (mapped by `with_image`); returns its
/// length.
fn encoded() -> Result<usize, &'static str> {
    let text = code(
        core::ptr::addr_of!(mica_spawnrace_sleeper),
        core::ptr::addr_of!(mica_spawnrace_sleeper_end),
    );
    // SAFETY: mapped by `with_image`, writable, used only by these cases.
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
    Ok(len)
}

/// Nanoseconds one undisturbed `process_spawn` of `img` takes (its child
/// is then killed and reaped).
fn spawn_duration(img: &[u8]) -> Result<u64, &'static str> {
    let t0 = sys::clock_ns();
    let h = sys::process_spawn(img, 0).map_err(|_| "process_spawn failed")?;
    let whole = sys::clock_ns() - t0;
    let _ = sys::process_kill(h);
    let _ = sys::process_wait(h);
    Ok(whole)
}

/// The handle number the last spawner's child gets (see `start`).
static GUESS: AtomicU64 = AtomicU64::new(0);

/// A handle number's slot bits (kcore's `handles::SLOT_BITS`): the
/// generation is above them.
const SLOT_BITS: u32 = 10;

/// Starts a spawner and returns once it is about to make its spawn.
///
/// First two fresh handles are closed in reverse order: the handle
/// table's free list is LIFO, so its head is then their slots, `a`'s
/// first, each one generation on. The spawner's thread handle takes
/// `a`'s slot and its spawn's child handle `b`'s, so the child's number
/// is known even when the spawner dies after its spawn returned but
/// before it stored the number ([`end_unstored_child`]).
pub fn start() -> Result<util::Thread, &'static str> {
    STARTED.store(0, Ordering::SeqCst);
    RESULT.store(0, Ordering::SeqCst);
    let a = ipc::endpoint_create().map_err(|_| "endpoint_create failed")?;
    let b = ipc::endpoint_create().map_err(|_| "endpoint_create failed")?;
    let _ = ipc::handle_close(b.0);
    let _ = ipc::handle_close(a.0);
    GUESS.store(b.0 as u64 + (1 << SLOT_BITS), Ordering::SeqCst);
    let t = util::spawn(spawner, 0)?;
    while STARTED.load(Ordering::SeqCst) == 0 {
        sys::sleep_ns(50_000);
    }
    Ok(t)
}

/// The handle the last spawner's `process_spawn` returned to it, if its
/// user code stored one.
pub fn returned() -> Option<sys::ProcessHandle> {
    match RESULT.load(Ordering::SeqCst) {
        0 => None,
        r => Some(sys::ProcessHandle::from_raw(r as u32)),
    }
}

/// Ends the last spawner's child if its spawn returned to user mode but
/// the spawner died before storing the number (the program's own race: a
/// timer interrupt that came during the syscall's last instructions, run
/// with interrupts off, is taken on the first user instruction, and the
/// kill it brings lands there; the kernel cannot undo a spawn whose
/// result reached ring 3). True if there was such a child. The number is
/// `start`'s prediction: if it names no process of ours (the kernel undid
/// the spawn and closed it, or the spawn failed), nothing happens.
pub fn end_unstored_child() -> bool {
    let h = sys::ProcessHandle::from_raw(GUESS.load(Ordering::SeqCst) as u32);
    if sys::process_kill(h).is_err() {
        return false;
    }
    let _ = sys::process_wait(h);
    true
}

/// Ends a child the case's spawner got back (the spawn returned first).
pub fn end_child(h: sys::ProcessHandle) {
    let _ = sys::process_kill(h);
    let _ = sys::process_wait(h);
}
