//! Copy-on-write cloning (`space_clone`): parent and clone see only their
//! own writes, every copied frame comes back, kills and protects racing a
//! clone, private mappings of memory objects.

use super::{want_exit, warm, BASE, PAGE};
use crate::note;
use crate::util::{check, free_back_to, free_bytes, ok, TestResult};
use abi::prot;
use libipc::sys;
use libipc::vm::{space_clone, MemoryHandle, Space};

/// What a clone's thread gets: where to look and what to expect.
#[repr(C)]
struct CowJob {
    region: u64,
    pages: u64,
    /// The value every page's first word had at the clone.
    expect: u64,
    /// The child writes `expect + 1` into every page's first word when set.
    write_all: u64,
    /// For the racing-writer case: a word the parent keeps changing.
    racing: u64,
}

/// The clone's thread: checks that it sees the memory as it was at the
/// clone, writes its own values, and exits with 0 (or a code naming what
/// was wrong). Runs in the clone (a copy of this program), on a stack of
/// its own; touches only the job and the region.
extern "C" fn cow_child(arg: u64) -> ! {
    // SAFETY: `arg` points at a `CowJob` in the clone's copy of the caller's
    // memory (set up before the clone, never changed after).
    let job = unsafe { &*(arg as *const CowJob) };
    for i in 0..job.pages {
        let p = (job.region + i * PAGE) as *mut u64;
        // SAFETY: the region is mapped in the clone as in the parent.
        unsafe {
            if core::ptr::read_volatile(p) != job.expect {
                sys::process_exit(10)
            }
            if job.write_all != 0 {
                core::ptr::write_volatile(p, job.expect + 1);
            }
        }
    }
    if job.racing != 0 {
        let p = job.racing as *const u64;
        // SAFETY: as above.
        let first = unsafe { core::ptr::read_volatile(p) };
        sys::sleep_ns(5_000_000);
        // SAFETY: as above.
        let again = unsafe { core::ptr::read_volatile(p) };
        if first != again || first == 0 {
            sys::process_exit(11) // the parent's writes reach the clone
        }
    }
    sys::process_exit(0)
}

/// Maps `pages` writable pages at `at` (plus a stack for the clone's
/// thread after them) and fills each page's first word with `v`.
fn region(at: u64, pages: u64, v: u64) -> Result<u64, &'static str> {
    ok(
        Space::Own.map(at, (pages + 4) * PAGE, prot::WRITE),
        "map the region and a stack",
    )?;
    for i in 0..pages {
        // SAFETY: just mapped writable.
        unsafe { core::ptr::write_volatile((at + i * PAGE) as *mut u64, v) };
    }
    Ok(at + (pages + 4) * PAGE)
}

/// Clones this process, starts `cow_child` in the clone with `job` and the
/// stack at `stack_top`, and returns the clone's handle and thread handle.
fn start_clone(
    job: &CowJob,
    stack_top: u64,
) -> Result<(libipc::sys::ProcessHandle, libipc::sys::ThreadHandle), &'static str> {
    let child = ok(space_clone(Space::Own), "space_clone")?;
    let t = start_cow_child(&child, job, stack_top)?;
    Ok((child, t))
}

/// Starts `cow_child` with `job` and the stack at `stack_top` in `child`, a
/// clone of this process (so `job` and the stack are at the same addresses
/// there).
fn start_cow_child(
    child: &libipc::sys::ProcessHandle,
    job: &CowJob,
    stack_top: u64,
) -> Result<libipc::sys::ThreadHandle, &'static str> {
    // SAFETY: the thread runs `cow_child` in the clone.
    ok(
        unsafe {
            child.space().start_thread(
                cow_child as *const () as usize as u64,
                stack_top,
                job as *const CowJob as u64,
            )
        },
        "thread_start in the clone",
    )
}

/// After a clone, parent and child each see only their own writes (the
/// child checks it sees the values from before the parent's later writes;
/// the parent checks the child's writes did not reach it), including a
/// kernel copy (`sysinfo`) into a page the clone shares; every frame comes
/// back once the child has exited.
pub fn cow_parent_and_child_see_only_their_own_writes() -> TestResult {
    const PAGES: u64 = 8;
    let at = BASE + 0x100_0000;
    let stack = region(at, PAGES, 7)?;
    let before = free_bytes()?;
    let job = CowJob {
        region: at,
        pages: PAGES,
        expect: 7,
        write_all: 1,
        racing: 0,
    };
    // The child is created but not started until the parent has written.
    let child = ok(space_clone(Space::Own), "space_clone")?;
    // Every page but the last, which only the kernel writes (below).
    for i in 0..PAGES - 1 {
        // SAFETY: mapped above (now copy-on-write).
        unsafe { core::ptr::write_volatile((at + i * PAGE) as *mut u64, 99) };
    }
    // A kernel copy into a copy-on-write page nothing wrote since the
    // clone (`copy_to_user` faults in ring 0 and the fault resolves): the
    // last page's second half.
    let info_at = at + (PAGES - 1) * PAGE + 2048;
    // SAFETY: sysinfo writes exactly one SysInfo into this mapped page.
    let r = unsafe {
        sys::syscall6(
            abi::Sysnum::SysInfo,
            info_at,
            core::mem::size_of::<abi::SysInfo>() as u64,
            0,
            0,
            0,
            0,
        )
    };
    check(
        abi::decode_result(r).is_ok(),
        "sysinfo into a copy-on-write page",
    )?;
    check(
        // SAFETY: sysinfo filled it.
        unsafe { (*(info_at as *const abi::SysInfo)).cpus_online } >= 1,
        "the kernel's copy landed in the parent's page",
    )?;
    let t = start_cow_child(&child, &job, stack)?;
    let st = ok(child.wait(), "wait for the clone")?;
    let _ = t.close();
    want_exit(st, 0, "clone's view of memory")?;
    for i in 0..PAGES {
        // SAFETY: mapped above.
        let v = unsafe { core::ptr::read_volatile((at + i * PAGE) as *const u64) };
        if v != if i == PAGES - 1 { 7 } else { 99 } {
            note!("page {i}: {v}");
            return Err("the clone's write reached the parent");
        }
    }
    // The parent's pages were copied on its writes; the clone's frames went
    // with it.
    let r = free_back_to(before, "cow parent/child");
    // SAFETY: this function's own region.
    let _ = unsafe { Space::Own.unmap(at, (PAGES + 4) * PAGE) };
    r
}

/// A clone that writes every page of a 1 MiB region and exits returns
/// every frame it copied (and its tables): the free figure is back at its
/// baseline.
pub fn cow_child_writing_1mib_returns_every_frame() -> TestResult {
    const PAGES: u64 = 256;
    let at = BASE + 0x200_0000;
    let stack = region(at, PAGES, 3)?;
    let before = free_bytes()?;
    let job = CowJob {
        region: at,
        pages: PAGES,
        expect: 3,
        write_all: 1,
        racing: 0,
    };
    let (child, t) = start_clone(&job, stack)?;
    let st = ok(child.wait(), "wait")?;
    let _ = t.close();
    want_exit(st, 0, "1 MiB writer")?;
    let r = free_back_to(before, "1 MiB cow writer");
    // SAFETY: this function's own region.
    let _ = unsafe { Space::Own.unmap(at, (PAGES + 4) * PAGE) };
    r
}

/// The clone's thread for the kill race: writes every page of its region
/// over and over (a copy-on-write fault per page the first time round).
extern "C" fn cow_writer(arg: u64) -> ! {
    // SAFETY: as in `cow_child`.
    let job = unsafe { &*(arg as *const CowJob) };
    let _ = sys::set_affinity(1);
    let mut v = 0u64;
    loop {
        for i in 0..job.pages {
            // SAFETY: mapped in the clone.
            unsafe {
                core::ptr::write_volatile((job.region + i * PAGE + (v % 512) * 8) as *mut u64, v)
            };
        }
        v += 1;
    }
}

/// A kill lands while the clone's thread is taking copy-on-write faults on
/// another CPU: the clone ends, the parent's memory is intact, and every
/// frame comes back.
pub fn kill_races_a_cow_fault() -> TestResult {
    const PAGES: u64 = 512;
    let at = BASE + 0x400_0000;
    let stack = region(at, PAGES, 5)?;
    let before = free_bytes()?;
    for round in 0..4u64 {
        let job = CowJob {
            region: at,
            pages: PAGES,
            expect: 5,
            write_all: 0,
            racing: 0,
        };
        let child = ok(space_clone(Space::Own), "space_clone")?;
        // SAFETY: the thread runs `cow_writer` in the clone.
        let t = ok(
            unsafe {
                child.space().start_thread(
                    cow_writer as *const () as usize as u64,
                    stack,
                    &job as *const CowJob as u64,
                )
            },
            "thread_start",
        )?;
        sys::sleep_ns(500_000 + round * 1_500_000);
        ok(child.kill(), "kill the clone")?;
        let st = ok(child.wait(), "wait")?;
        let _ = t.close();
        want_exit(st, -1, "killed writer")?;
    }
    for i in 0..PAGES {
        // SAFETY: mapped above.
        if unsafe { core::ptr::read_volatile((at + i * PAGE) as *const u64) } != 5 {
            return Err("the clone's writes reached the parent");
        }
    }
    let r = free_back_to(before, "kill racing cow faults");
    // SAFETY: this function's own region.
    let _ = unsafe { Space::Own.unmap(at, (PAGES + 4) * PAGE) };
    r
}

/// The parent's writer thread for the clone race: stores 1, 2, 3, ... into
/// the first word of its page (one atomic store each) until told to stop.
extern "C" fn page_filler(arg: u64) -> ! {
    // `arg` is the page (mapped, writable); the next page's first word is
    // the stop flag, its second the count of stores so far.
    let page = arg as *mut u64;
    let stop = (arg + PAGE) as *const u64;
    let count = (arg + PAGE + 8) as *mut u64;
    let _ = sys::set_affinity(1);
    let mut v = 1u64;
    // SAFETY: both pages are mapped writable for this thread's whole life.
    unsafe {
        while core::ptr::read_volatile(stop) == 0 {
            core::ptr::write_volatile(page, v);
            core::ptr::write_volatile(count, v);
            v += 1;
        }
    }
    sys::thread_exit(0)
}

/// A clone taken while another thread of the source keeps storing to a
/// word: the clone holds one value the writer stored (a word store is one
/// store: never torn) and keeps it while the writer goes on (the page is
/// not shared with the source after the clone returns).
pub fn clone_while_another_thread_writes() -> TestResult {
    let at = BASE + 0x800_0000;
    ok(
        Space::Own.map(at, 2 * PAGE, prot::WRITE),
        "map the racing pages",
    )?;
    let stack = region(at + 0x10_0000, 0, 0)?;
    let writer = crate::util::spawn(page_filler, at)?;
    // Let it write for a while.
    sys::sleep_ns(2_000_000);
    let job = CowJob {
        region: at,
        pages: 0,
        expect: 0,
        write_all: 0,
        racing: at,
    };
    let mut result = Ok(());
    for _ in 0..5 {
        // SAFETY: the count word is mapped.
        let count0 = unsafe { core::ptr::read_volatile((at + PAGE + 8) as *const u64) };
        let (child, t) = start_clone(&job, stack)?;
        let st = ok(child.wait(), "wait")?;
        let _ = t.close();
        // SAFETY: the count word is mapped.
        let count1 = unsafe { core::ptr::read_volatile((at + PAGE + 8) as *const u64) };
        if let Err(e) = want_exit(st, 0, "clone during writes") {
            result = Err(e);
            break;
        }
        if count1 <= count0 {
            note!("the writer made no progress ({count0} -> {count1})");
        }
    }
    // SAFETY: the stop flag is mapped.
    unsafe { core::ptr::write_volatile((at + PAGE) as *mut u64, 1) };
    let st = writer.join()?;
    crate::util::expect_ok(st)?;
    // SAFETY: this function's own pages (the writer has ended).
    let _ = unsafe { Space::Own.unmap(at, 2 * PAGE) };
    // SAFETY: as above.
    let _ = unsafe { Space::Own.unmap(at + 0x10_0000, 4 * PAGE) };
    result
}

/// A page made read-only, cloned, then made writable again in the source:
/// the protect must not expose the frame the clone shares (it stays
/// copy-on-write), so the source's write copies and the clone keeps the
/// old value.
pub fn protect_after_clone_keeps_the_shared_frame_private() -> TestResult {
    let at = BASE + 0xa00_0000;
    let stack = region(at, 1, 21)?;
    ok(Space::Own.protect(at, PAGE, 0), "make the page read-only")?;
    // Before the clone: the clone sees this stack as it is at the clone.
    let job = CowJob {
        region: at,
        pages: 1,
        expect: 21,
        write_all: 0,
        racing: 0,
    };
    let child = ok(space_clone(Space::Own), "space_clone")?;
    ok(
        Space::Own.protect(at, PAGE, prot::WRITE),
        "make it writable again after the clone",
    )?;
    // SAFETY: mapped and writable again.
    unsafe { core::ptr::write_volatile(at as *mut u64, 22) };
    let t = start_cow_child(&child, &job, stack)?;
    let st = ok(child.wait(), "wait")?;
    let _ = t.close();
    // SAFETY: mapped above.
    let mine = unsafe { core::ptr::read_volatile(at as *const u64) };
    // SAFETY: this function's own region.
    let _ = unsafe { Space::Own.unmap(at, 5 * PAGE) };
    want_exit(st, 0, "the clone's view after the source's protect")?;
    check(mine == 22, "the source's write is its own")
}

/// Reads the first word of page `i` of the region at `at`.
fn word(at: u64, i: u64) -> u64 {
    // SAFETY: the callers read only pages they mapped.
    unsafe { core::ptr::read_volatile((at + i * PAGE) as *const u64) }
}

/// `mem_map` with `abi::vm::MAP_PRIVATE` (how the loader maps programs):
/// the pages read the object's bytes, a write gives the space a copy of
/// its own that the object never sees, and a `space_clone` of a space
/// whose private pages were never written copies them on write like any
/// private page -- the clone's writes reach neither the parent nor the
/// object. Every frame comes back afterwards.
pub fn private_mapping_is_copy_on_write() -> TestResult {
    const PAGES: u64 = 4;
    let (a, b, c) = (BASE + 0x300_0000, BASE + 0x310_0000, BASE + 0x320_0000);
    let stack = BASE + 0x330_0000;
    for at in [a, b, c, stack] {
        warm(at, PAGES * PAGE)?;
    }
    let before = free_bytes()?;
    let private = prot::WRITE | abi::vm::MAP_PRIVATE;
    let mem = ok(MemoryHandle::create(PAGES * PAGE), "mem_create")?;
    ok(
        mem.map(Space::Own, a, 0, PAGES * PAGE, prot::WRITE),
        "map A shared",
    )?;
    for i in 0..PAGES {
        // SAFETY: A was just mapped writable.
        unsafe { core::ptr::write_volatile((a + i * PAGE) as *mut u64, 0x11) };
    }
    ok(
        mem.map(Space::Own, b, 0, PAGES * PAGE, private),
        "map B private",
    )?;
    check(
        word(b, 0) == 0x11,
        "a private page reads the object's bytes",
    )?;
    // SAFETY: B is mapped, logically writable.
    unsafe { core::ptr::write_volatile(b as *mut u64, 0x22) };
    check(word(b, 0) == 0x22, "a private write is seen by its writer")?;
    check(word(a, 0) == 0x11, "a private write reached the object")?;
    // SAFETY: as above (A is the object's shared view).
    unsafe { core::ptr::write_volatile((a + PAGE) as *mut u64, 0x33) };
    check(
        word(b, 1) == 0x33,
        "an unwritten private page shows the object's later writes (MAP_PRIVATE)",
    )?;
    check(word(b, 0) == 0x22, "a written private page kept its copy")?;
    // A read-only private view made writable writes its own copy too.
    ok(
        mem.map(Space::Own, c, 0, PAGES * PAGE, abi::vm::MAP_PRIVATE),
        "map C private read-only",
    )?;
    ok(
        Space::Own.protect(c, PAGES * PAGE, prot::WRITE),
        "protect C writable",
    )?;
    // SAFETY: C is now writable.
    unsafe { core::ptr::write_volatile((c + 2 * PAGE) as *mut u64, 0x44) };
    check(
        word(a, 2) == 0x11,
        "a write after protect reached the object",
    )?;
    // SAFETY: this function's own views.
    ok(unsafe { Space::Own.unmap(c, PAGES * PAGE) }, "unmap C")?;
    // The loader's case: the object closed and its shared view gone, the
    // private pages are the frames' only owners, never written -- then a
    // clone writes them.
    ok(
        mem.map(Space::Own, c, 0, PAGES * PAGE, private),
        "map C private again",
    )?;
    ok(mem.close(), "close the object")?;
    // SAFETY: as above.
    ok(unsafe { Space::Own.unmap(a, PAGES * PAGE) }, "unmap A")?;
    ok(
        Space::Own.map(stack, PAGES * PAGE, prot::WRITE),
        "map the clone's stack",
    )?;
    for i in 0..PAGES {
        check(
            word(c, i) == if i == 1 { 0x33 } else { 0x11 },
            "the private view lost the object's bytes",
        )?;
    }
    // Every page's first word equal, as the clone's check wants.
    // SAFETY: C page 1 is mapped, logically writable (this copies it).
    unsafe { core::ptr::write_volatile((c + PAGE) as *mut u64, 0x11) };
    let job = CowJob {
        region: c,
        pages: PAGES,
        expect: 0x11,
        write_all: 1,
        racing: 0,
    };
    let (child, t) = start_clone(&job, stack + PAGES * PAGE)?;
    let st = ok(child.wait(), "wait for the clone")?;
    let _ = t.close();
    want_exit(st, 0, "the clone's view of the private pages")?;
    for i in 0..PAGES {
        if word(c, i) != 0x11 {
            note!("page {i}: {:#x}", word(c, i));
            return Err("the clone's write to a private page reached the parent");
        }
    }
    // SAFETY: as above.
    unsafe {
        ok(Space::Own.unmap(b, PAGES * PAGE), "unmap B")?;
        ok(Space::Own.unmap(c, PAGES * PAGE), "unmap C")?;
        ok(Space::Own.unmap(stack, PAGES * PAGE), "unmap the stack")?;
    }
    free_back_to(before, "private mappings")
}
