//! Building processes through handles and copy-on-write cloning (issue 11):
//! `process_create`, `space_map`/`space_unmap`/`space_protect`,
//! `mem_create`/`mem_map`, `thread_start`, `space_clone`. Hostile arguments
//! get errors, quotas are the target's, and every frame comes back (the
//! `sysinfo` free figure returns to its baseline exactly).
//!
//! This file builds processes from scratch; the copy-on-write cases are
//! in [`cow`].

mod cow;
pub use cow::{
    clone_while_another_thread_writes, cow_child_writing_1mib_returns_every_frame,
    cow_parent_and_child_see_only_their_own_writes, kill_races_a_cow_fault,
    private_mapping_is_copy_on_write, protect_after_clone_keeps_the_shared_frame_private,
};

use crate::note;
use crate::util::{check, expect_err, free_back_to, free_bytes, ok, TestResult};
use abi::rights;
use abi::status::{self, Status};
use abi::{prot, Error};
use libipc::vm::{process_create, space_clone, MemoryHandle, Space};

const PAGE: u64 = 4096;
/// This file's own region of the tests program's space.
const BASE: u64 = 0x5b00_0000_0000;
/// Where the from-scratch child's code and stack live (in the child).
const CHILD_TEXT: u64 = 0x40_0000;
const CHILD_STACK: u64 = 0x7000_0000;

/// Position-independent child code: `push rdi; pop rdi` (the stack works),
/// `mov eax, process_exit; syscall` (exits with its argument), `ud2`.
const CHILD_CODE: [u8; 11] = [
    0x57, // push rdi
    0x5f, // pop rdi
    0xb8,
    abi::Sysnum::ProcessExit as u8,
    0,
    0,
    0, // mov eax, process_exit
    0x0f,
    0x05, // syscall
    0x0f,
    0x0b, // ud2
];

/// Maps and unmaps `[at, at + len)` in this program, so the page tables
/// for it exist before a baseline is taken (an unmap keeps its tables: they
/// are not a leak, and a case must not count them as one).
fn warm(at: u64, len: u64) -> TestResult {
    ok(Space::Own.map(at, len, 0), "warm-up map")?;
    // SAFETY: this file's own region, unused between cases.
    ok(unsafe { Space::Own.unmap(at, len) }, "warm-up unmap")
}

fn want_exit(st: u64, code: i32, what: &'static str) -> TestResult {
    match status::decode(st) {
        Status::Exited(c) if c == code => Ok(()),
        other => {
            note!("{what}: {other:?}, expected exited({code})");
            Err("the child did not end as expected")
        }
    }
}

/// Builds a child from nothing: an empty process, a memory object filled
/// through the builder's own mapping and then mapped (shared) as the child's
/// code, a fresh stack, a thread. The child exits with the argument it was
/// given; the parent sees the status; every frame comes back.
pub fn process_built_from_scratch_runs_and_exits() -> TestResult {
    warm(BASE, PAGE)?;
    let before = free_bytes()?;
    let child = ok(process_create(), "process_create")?;
    let mem = ok(MemoryHandle::create(PAGE), "mem_create")?;
    let mine = BASE;
    ok(
        mem.map(Space::Own, mine, 0, PAGE, prot::WRITE),
        "mem_map into the builder",
    )?;
    // SAFETY: the page was just mapped writable at `mine` for this code.
    unsafe {
        core::ptr::copy_nonoverlapping(CHILD_CODE.as_ptr(), mine as *mut u8, CHILD_CODE.len())
    };
    ok(
        // SAFETY: only this function uses the page at `mine`.
        unsafe { Space::Own.unmap(mine, PAGE) },
        "unmap the builder's view",
    )?;
    ok(
        mem.map(child.space(), CHILD_TEXT, 0, PAGE, prot::EXEC),
        "mem_map into the child",
    )?;
    // Closing the handle while the frame is mapped is fine.
    ok(mem.close(), "close the memory handle")?;
    ok(
        child
            .space()
            .map(CHILD_STACK - 4 * PAGE, 4 * PAGE, prot::WRITE),
        "space_map the child's stack",
    )?;
    // SAFETY: the thread runs in the child, not in this program.
    let t = ok(
        unsafe { child.space().start_thread(CHILD_TEXT, CHILD_STACK, 42) },
        "thread_start",
    )?;
    check(t.id() != 0 && child.id() != 0, "ids in RDX")?;
    let st = ok(child.wait(), "process_wait")?;
    want_exit(st, 42, "built child")?;
    let _ = t.close();
    free_back_to(before, "build from scratch")
}

/// Every vm call refuses a handle without MAP (PermissionDenied), a handle
/// of another kind (WrongType), a number naming nothing (BadHandle); bad
/// ranges and protections in the target are refused as `map_anon` refuses
/// them; nothing is mapped or started on bad input.
pub fn vm_calls_check_rights_and_ranges() -> TestResult {
    let before = free_bytes()?;
    let child = ok(process_create(), "process_create")?;
    let no_map = ok(
        child.dup(rights::WAIT | rights::KILL | rights::DUPLICATE),
        "dup without MAP",
    )?;
    let s = no_map.space();
    let denied = [Error::PermissionDenied];
    expect_err(s.map(CHILD_TEXT, PAGE, 0), &denied, "space_map without MAP")?;
    expect_err(
        s.protect(CHILD_TEXT, PAGE, 0).map(|_| 0),
        &denied,
        "space_protect without MAP",
    )?;
    expect_err(
        // SAFETY: the target is the child, not this program.
        unsafe { s.unmap(CHILD_TEXT, PAGE) }.map(|_| 0),
        &denied,
        "space_unmap without MAP",
    )?;
    expect_err(
        // SAFETY: as above (nothing starts).
        unsafe { s.start_thread(CHILD_TEXT, CHILD_STACK, 0) }.map(|_| 0),
        &denied,
        "thread_start without MAP",
    )?;
    expect_err(
        space_clone(s).map(|_| 0),
        &denied,
        "space_clone without MAP",
    )?;
    let mem = ok(MemoryHandle::create(2 * PAGE), "mem_create")?;
    expect_err(
        mem.map(s, CHILD_TEXT, 0, PAGE, 0),
        &denied,
        "mem_map into a space without MAP",
    )?;
    let mem_ro = ok(
        mem.dup(rights::DUPLICATE),
        "dup the memory handle without MAP",
    )?;
    expect_err(
        mem_ro.map(child.space(), CHILD_TEXT, 0, PAGE, 0),
        &denied,
        "mem_map of an object without MAP",
    )?;
    // Kinds and numbers.
    let as_proc = Space::Of(libipc::sys::ProcessHandle::from_raw(mem.raw()));
    expect_err(
        as_proc.map(CHILD_TEXT, PAGE, 0),
        &[Error::WrongType],
        "a memory handle as a process",
    )?;
    expect_err(
        MemoryHandle::from_raw(child.raw()).map(Space::Own, BASE, 0, PAGE, 0),
        &[Error::WrongType],
        "a process handle as a memory object",
    )?;
    let stale = Space::Of(libipc::sys::ProcessHandle::from_raw(0x3ff));
    expect_err(
        stale.map(CHILD_TEXT, PAGE, 0),
        &[Error::BadHandle],
        "a number naming nothing",
    )?;
    let huge = Space::Of(libipc::sys::ProcessHandle::from_raw(u32::MAX));
    expect_err(
        huge.map(CHILD_TEXT, PAGE, 0),
        &[Error::BadHandle],
        "a huge handle number",
    )?;
    // Ranges in the target.
    let c = child.space();
    let bad = [Error::BadAddress, Error::InvalidArgument];
    for (addr, len, what) in [
        (0xffff_8000_0000_0000, PAGE, "kernel address"),
        (0x0000_8000_0000_0000, PAGE, "non-canonical address"),
        (0x7fff_ffff_f000, 2 * PAGE, "range past the user half"),
        (u64::MAX - 0xfff, 2 * PAGE, "wrapping range"),
        (CHILD_TEXT + 1, PAGE, "unaligned address"),
        (CHILD_TEXT, 0, "empty range"),
        (CHILD_TEXT, 1 << 62, "huge length"),
        (0, PAGE, "page 0"),
    ] {
        if c.map(addr, len, prot::WRITE).is_ok() {
            note!("space_map accepted a {what}");
            return Err("a bad range was mapped");
        }
        if len != 0 && mem.map(c, addr, 0, len, 0).is_ok() {
            note!("mem_map accepted a {what}");
            return Err("a bad range was mapped");
        }
    }
    expect_err(
        c.map(CHILD_TEXT, 1 << 62, 0),
        &[Error::BadAddress, Error::NoMemory],
        "huge map",
    )?;
    expect_err(
        c.map(CHILD_TEXT, PAGE, prot::WRITE | prot::EXEC),
        &bad,
        "W+X in the target",
    )?;
    expect_err(c.map(CHILD_TEXT, PAGE, 1 << 40), &bad, "unknown prot bits")?;
    // Memory-object windows.
    for (off, len, what) in [
        (1u64, PAGE, "unaligned offset"),
        (PAGE, 2 * PAGE, "window past the end"),
        (2 * PAGE, PAGE, "offset at the end"),
        (u64::MAX - 0xfff, 2 * PAGE, "wrapping window"),
        (0, 0, "empty window"),
        (0, u64::MAX, "huge window"),
    ] {
        if mem.map(c, CHILD_TEXT, off, len, 0).is_ok() {
            note!("mem_map accepted a {what}");
            return Err("a bad memory window was mapped");
        }
    }
    expect_err(
        MemoryHandle::create(0).map(|_| 0),
        &[Error::InvalidArgument],
        "mem_create(0)",
    )?;
    expect_err(
        MemoryHandle::create(abi::vm::MAX_MEMORY_BYTES + 1).map(|_| 0),
        &[Error::InvalidArgument],
        "mem_create over the limit",
    )?;
    expect_err(
        MemoryHandle::create(u64::MAX).map(|_| 0),
        &[Error::InvalidArgument],
        "mem_create(u64::MAX)",
    )?;
    // Protect needs every page mapped; unmap of holes is fine.
    expect_err(
        c.protect(CHILD_TEXT, PAGE, 0).map(|_| 0),
        &[Error::NotFound],
        "protect of an unmapped page",
    )?;
    // Thread entries and stacks.
    for (entry, stack, what) in [
        (0xffff_ffff_8000_0000, CHILD_STACK, "kernel entry"),
        (0x0000_8000_0000_0000, CHILD_STACK, "non-canonical entry"),
        (CHILD_TEXT, 0xffff_8000_0000_0000, "kernel stack"),
        (CHILD_TEXT, CHILD_STACK + 8, "misaligned stack"),
        (CHILD_TEXT, 0, "stack at 0"),
    ] {
        // SAFETY: the target is the child; nothing may start.
        if unsafe { c.start_thread(entry, stack, 0) }.is_ok() {
            note!("thread_start accepted a {what}");
            return Err("a thread started on bad input");
        }
    }
    // Nothing was started: a kill ends the never-started child, and its
    // wait returns (it must not hang).
    ok(child.kill(), "kill the never-started child")?;
    expect_err(
        // SAFETY: the target is the child.
        unsafe { c.start_thread(CHILD_TEXT, CHILD_STACK, 0) }.map(|_| 0),
        &[Error::NotFound],
        "thread_start in a killed process",
    )?;
    let st = ok(child.wait(), "wait for the killed, never-started child")?;
    want_exit(st, -1, "killed unstarted child")?;
    let _ = no_map.close();
    let _ = mem_ro.close();
    let _ = mem.close();
    free_back_to(before, "rights and ranges")
}

/// Quotas are the target's: a map past its per-process limit is NoMemory
/// before anything is allocated, and a map that fits is charged to the
/// target (its own limit shrinks, not the caller's); everything is returned.
pub fn target_quota_exhaustion_is_no_memory_and_leaks_nothing() -> TestResult {
    warm(BASE + 0x100_0000, 1 << 20)?;
    let before = free_bytes()?;
    let child = ok(process_create(), "process_create")?;
    let c = child.space();
    let limit = abi::limits::MAX_MAPPED_BYTES_PER_PROCESS;
    expect_err(
        c.map(0x1000_0000, limit + PAGE, prot::WRITE),
        &[Error::NoMemory],
        "a map past the target's limit",
    )?;
    // 1 MiB fits; then the rest of the limit plus one page does not.
    ok(c.map(0x1000_0000, 1 << 20, prot::WRITE), "a map that fits")?;
    expect_err(
        c.map(0x2000_0000, limit - (1 << 20), prot::WRITE),
        &[Error::NoMemory],
        "a map past what is left of the target's limit",
    )?;
    // The caller's own limit is untouched: it can still map 1 MiB itself.
    ok(
        Space::Own.map(BASE + 0x100_0000, 1 << 20, prot::WRITE),
        "the caller's own map",
    )?;
    ok(
        // SAFETY: this function's own region.
        unsafe { Space::Own.unmap(BASE + 0x100_0000, 1 << 20) },
        "unmap",
    )?;
    ok(child.kill(), "kill")?;
    let _ = ok(child.wait(), "wait")?;
    free_back_to(before, "target quota")
}

/// A memory object mapped twice into this space and once into a child is
/// one set of frames: a write through one mapping is read through the
/// others; closing the handle keeps mapped frames; the last unmap frees them.
pub fn memory_object_is_shared_and_freed_with_its_last_mapping() -> TestResult {
    let (a, b) = (BASE + 0x10_0000, BASE + 0x20_0000);
    warm(a, 4 * PAGE)?;
    warm(b, 3 * PAGE)?;
    let before = free_bytes()?;
    let mem = ok(MemoryHandle::create(4 * PAGE), "mem_create")?;
    ok(mem.map(Space::Own, a, 0, 4 * PAGE, prot::WRITE), "map A")?;
    ok(
        mem.map(Space::Own, b, PAGE, 3 * PAGE, 0),
        "map B (pages 1..4, read-only)",
    )?;
    // SAFETY: both views were just mapped; A is writable.
    unsafe {
        check(*((a + PAGE) as *const u64) == 0, "fresh frames are zeroed")?;
        *((a + 2 * PAGE + 8) as *mut u64) = 0x1234_5678;
        check(
            *((b + PAGE + 8) as *const u64) == 0x1234_5678,
            "a write through A is seen through B",
        )?;
    }
    let child = ok(process_create(), "process_create")?;
    ok(
        mem.map(child.space(), CHILD_TEXT, 0, 4 * PAGE, 0),
        "map into a child",
    )?;
    ok(mem.close(), "close while mapped")?;
    // SAFETY: still mapped (the handle only named the object).
    unsafe {
        check(
            *((b + PAGE + 8) as *const u64) == 0x1234_5678,
            "frames outlive the handle",
        )?;
    }
    // SAFETY: this function's own views.
    ok(unsafe { Space::Own.unmap(a, 4 * PAGE) }, "unmap A")?;
    // SAFETY: as above.
    ok(unsafe { Space::Own.unmap(b, 3 * PAGE) }, "unmap B")?;
    ok(child.kill(), "kill")?;
    let _ = ok(child.wait(), "wait")?;
    free_back_to(before, "memory object")
}
