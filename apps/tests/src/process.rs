//! Child processes built on the fly: tiny position-independent programs
//! (assembled below into `.rodata`, copied into a boot image with
//! [`abi::bootimg::encode_code`]) check the process lifecycle: exit codes and the
//! spawn argument, faults, isolation from the parent's memory, that
//! `process_exit` ends every thread (spinning or blocked), and that spawning
//! and reaping many processes does not leak.

use crate::lifecycle::code;
use crate::note;
use crate::util::{expect_err, TestResult};
use abi::bootimg::encode_code;
use abi::status::{self, Status};
use abi::{prot, Error, Sysnum};
use core::arch::global_asm;
use libipc::sys;

/// Where a child's code is mapped.
const CHILD_TEXT: u64 = 0x40_0000;
/// A page the parent maps (and the child must not see).
const PARENT_PAGE: u64 = 0x4400_0000_0000;
/// Where the thread-spawning child maps a page for its threads' stack.
const CHILD_STACK: u64 = 0x5555_0000_0000;

// Each child is position-independent and uses no stack (it starts with
// RDI = the spawn argument, and every syscall takes its arguments in
// registers).
global_asm!(
    ".pushsection .rodata.mica_tests_children, \"a\"",
    // exit_arg: process_exit(arg).
    "mica_tests_child_exit_arg:",
    "mov eax, {pexit}",          // rax: ProcessExit; rdi: the spawn argument
    "syscall",
    "ud2",
    "mica_tests_child_exit_arg_end:",
    // ud2: faults at once.
    "mica_tests_child_ud2:",
    "ud2",
    "mica_tests_child_ud2_end:",
    // read_parent: reads the parent's page (must fault), else exits 1.
    "mica_tests_child_read_parent:",
    "mov rax, {parent_page}",    // rax: an address mapped only in the parent
    "mov rax, [rax]",            // must #PF
    "mov edi, 1",                // rdi: exit code 1 (the read worked)
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "mica_tests_child_read_parent_end:",
    // threads: starts a spinning and a sleeping thread, sleeps 5 ms, then
    // process_exit(5) must end all three.
    "mica_tests_child_threads:",
    "mov rdi, {stack}",          // rdi: a page for the threads' stack
    "mov esi, 4096",             // rsi: one page
    "mov edx, {write}",          // rdx: writable
    "mov eax, {map_anon}",
    "syscall",
    "lea rdi, [rip + 2f]",       // rdi: entry = the spinner
    "mov rsi, {stack_top}",      // rsi: stack top
    "xor edx, edx",              // rdx: arg 0
    "mov eax, {spawn}",
    "syscall",
    "lea rdi, [rip + 3f]",       // rdi: entry = the sleeper
    "mov rsi, {stack_top}",      // rsi: stack top (neither thread uses it)
    "xor edx, edx",
    "mov eax, {spawn}",
    "syscall",
    "mov edi, 5000000",          // rdi: 5 ms
    "mov eax, {sleep}",
    "syscall",
    "mov edi, 5",                // rdi: exit code 5
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "2:",
    "jmp 2b",                    // the spinner
    "3:",
    "mov rdi, 10000000000",      // the sleeper: rdi = 10 s
    "mov eax, {sleep}",
    "syscall",
    "jmp 3b",
    "mica_tests_child_threads_end:",
    ".popsection",
    pexit = const Sysnum::ProcessExit as u64,
    sleep = const Sysnum::SleepNs as u64,
    spawn = const Sysnum::ThreadSpawn as u64,
    map_anon = const Sysnum::MapAnon as u64,
    write = const prot::WRITE,
    parent_page = const PARENT_PAGE,
    stack = const CHILD_STACK,
    stack_top = const CHILD_STACK + 4096,
);

extern "C" {
    static mica_tests_child_exit_arg: u8;
    static mica_tests_child_exit_arg_end: u8;
    static mica_tests_child_ud2: u8;
    static mica_tests_child_ud2_end: u8;
    static mica_tests_child_read_parent: u8;
    static mica_tests_child_read_parent_end: u8;
    static mica_tests_child_threads: u8;
    static mica_tests_child_threads_end: u8;
}

/// The children's code.
#[derive(Clone, Copy)]
enum Child {
    ExitArg,
    Ud2,
    ReadParent,
    Threads,
}

impl Child {
    fn code(self) -> &'static [u8] {
        use core::ptr::addr_of;
        // Only the labels' addresses are taken (no read of an extern static).
        match self {
            Child::ExitArg => code(
                addr_of!(mica_tests_child_exit_arg),
                addr_of!(mica_tests_child_exit_arg_end),
            ),
            Child::Ud2 => code(
                addr_of!(mica_tests_child_ud2),
                addr_of!(mica_tests_child_ud2_end),
            ),
            Child::ReadParent => code(
                addr_of!(mica_tests_child_read_parent),
                addr_of!(mica_tests_child_read_parent_end),
            ),
            Child::Threads => code(
                addr_of!(mica_tests_child_threads),
                addr_of!(mica_tests_child_threads_end),
            ),
        }
    }
}

/// Builds `child`'s boot image, starts it with `arg` and waits for it.
fn run_child(child: Child, arg: u64) -> Result<Status, &'static str> {
    let text = child.code();
    let mut buf = [0u8; 512];
    let len = encode_code(CHILD_TEXT, text, &mut buf).map_err(|_| "cannot encode a child image")?;
    let pid = sys::process_spawn(&buf[..len], arg).map_err(|e| {
        note!("process_spawn: {e}");
        "process_spawn of a valid image failed"
    })?;
    let st = sys::process_wait(pid).map_err(|e| {
        note!("process_wait({pid}): {e}");
        "process_wait failed"
    })?;
    // The reaping wait closed the handle.
    expect_err(
        sys::process_wait(pid),
        &[Error::BadHandle],
        "waiting twice through one handle was not BadHandle",
    )?;
    Ok(status::decode(st))
}

/// Checks a child ended with `want`.
fn expect(child: Child, arg: u64, want: Status, what: &'static str) -> TestResult {
    match run_child(child, arg)? {
        st if st == want => Ok(()),
        st => {
            note!("child ended with {st:?}, expected {want:?}");
            Err(what)
        }
    }
}

/// Case: a child gets its argument and exits with it; a faulting child is
/// reported as faulted; a child cannot read the parent's memory.
pub fn child_processes_exit_fault_and_are_isolated() -> TestResult {
    expect(
        Child::ExitArg,
        42,
        Status::Exited(42),
        "a child did not exit with its argument",
    )?;
    expect(
        Child::Ud2,
        0,
        Status::Faulted(6),
        "a faulting child was not reported as Faulted(6)",
    )?;
    sys::map_anon(PARENT_PAGE, 4096, prot::WRITE).map_err(|_| "map_anon failed")?;
    // SAFETY: the page was just mapped writable; nothing else uses it.
    unsafe { (PARENT_PAGE as *mut u64).write_volatile(0x5ec2e7) };
    let r = expect(
        Child::ReadParent,
        0,
        Status::Faulted(14),
        "a child could read its parent's memory",
    );
    // SAFETY: nothing references the page.
    let _ = unsafe { sys::unmap(PARENT_PAGE, 4096) };
    r
}

/// Case: `process_exit` from a child's main thread ends its other threads,
/// one spinning and one blocked in a 10 s sleep (the wait returns promptly).
pub fn process_exit_ends_every_thread() -> TestResult {
    let t0 = sys::clock_ns();
    expect(
        Child::Threads,
        0,
        Status::Exited(5),
        "the child did not exit with 5",
    )?;
    let dt = sys::clock_ns() - t0;
    if dt > 2_000_000_000 {
        note!("the wait took {dt} ns");
        return Err("process_exit waited for the sleeping thread");
    }
    Ok(())
}

/// Case: 100 child processes spawned and reaped one after another all work,
/// and afterwards the kernel has exactly as much free memory, and as many
/// thread and process records, as after the first (warm-up) child: kernel
/// stacks, page tables, FPU areas and image copies are all freed.
pub fn spawn_wait_does_not_leak() -> TestResult {
    for i in 0..100u64 {
        if i == 1 {
            // Let the previous cases' last threads be reaped first: the
            // baseline is two equal samples 1 ms apart (up to 100 ms).
            let mut prev = sys::sysinfo().ok();
            for _ in 0..100 {
                sys::sleep_ns(1_000_000);
                let now = sys::sysinfo().ok();
                let key =
                    |s: &Option<abi::SysInfo>| s.map(|s| (s.free_bytes, s.threads, s.processes));
                if key(&now) == key(&prev) {
                    break;
                }
                prev = now;
            }
            BASELINE.with(|b| *b = prev);
        }
        match run_child(Child::ExitArg, i) {
            Ok(Status::Exited(c)) if c as u64 == i => {}
            other => {
                note!("child {i}: {other:?}");
                return Err("a child process failed");
            }
        }
    }
    let before = BASELINE.with(|b| *b).ok_or("sysinfo failed")?;
    // The kernel drops its counts only after the memory behind them is
    // free, so once the counts are back, free memory is final: at least the
    // baseline (more if something else freed memory meanwhile). 100 ms
    // covers other CPUs finishing their switches away from old threads. At
    // most the baseline's counts, not exactly them: a thread of an earlier
    // case may still have been dying when the baseline was taken (seen once
    // at -smp 4 with an AP withheld: threads 4 before, 3 after).
    let same = |a: &abi::SysInfo| {
        a.threads <= before.threads
            && a.processes <= before.processes
            && a.free_bytes >= before.free_bytes
    };
    let mut after = sys::sysinfo().map_err(|_| "sysinfo failed")?;
    for _ in 0..100 {
        if same(&after) {
            break;
        }
        sys::sleep_ns(1_000_000);
        after = sys::sysinfo().map_err(|_| "sysinfo failed")?;
    }
    if !same(&after) {
        note!("after 99 children: {after:?}; after the first: {before:?}");
        return Err("reaped children left memory or records behind");
    }
    Ok(())
}

/// A single-threaded cell for the baseline of [`spawn_wait_does_not_leak`].
struct Baseline(core::cell::UnsafeCell<Option<abi::SysInfo>>);
// SAFETY: only the test program's main thread touches it, one call at a time.
unsafe impl Sync for Baseline {}
static BASELINE: Baseline = Baseline(core::cell::UnsafeCell::new(None));

impl Baseline {
    fn with<R>(&self, f: impl FnOnce(&mut Option<abi::SysInfo>) -> R) -> R {
        // SAFETY: see the Sync impl: no other reference exists during `f`.
        f(unsafe { &mut *self.0.get() })
    }
}

/// Where [`user_copy_races_with_unmap`] builds its two-page image: the
/// header page stays; the code page is unmapped and remapped all the time.
const RACE_IMAGE: u64 = 0x4600_0000_0000;
const RACE_CODE_PAGE: u64 = RACE_IMAGE + 4096;

/// Unmaps and remaps (and refills) the code page until the deadline in
/// `arg`; exits 1 if a map_anon/unmap failed.
extern "C" fn toggle_code_page(deadline: u64) -> ! {
    let text = Child::ExitArg.code();
    while libipc::bench::rdtsc() < deadline {
        // SAFETY: only this thread and the kernel's copies (which must cope
        // with the page vanishing) use the page.
        if unsafe { sys::unmap(RACE_CODE_PAGE, 4096) }.is_err()
            || sys::map_anon(RACE_CODE_PAGE, 4096, prot::WRITE).is_err()
        {
            sys::thread_exit(1);
        }
        // SAFETY: the page was just mapped writable; `text` is far shorter
        // than a page.
        unsafe {
            core::ptr::copy_nonoverlapping(text.as_ptr(), RACE_CODE_PAGE as *mut u8, text.len())
        };
    }
    sys::thread_exit(0)
}

/// Case: `process_spawn` copies an image whose second page another thread
/// (on another CPU when there is one) keeps unmapping and remapping. Each
/// spawn must either fail with BadAddress (page gone), or start a child that
/// exits with its argument (page full) or faults (page freshly zeroed) --
/// never a kernel fault.
pub fn user_copy_races_with_unmap() -> TestResult {
    let text = Child::ExitArg.code();
    // The image: header and record in page 0, file bytes at page 1.
    let mut head = [0u8; 512];
    let len = encode_code(CHILD_TEXT, text, &mut head).map_err(|_| "cannot encode")?;
    let rec = abi::bootimg::HEADER_BYTES;
    head[rec + 8..rec + 16].copy_from_slice(&4096u64.to_le_bytes()); // file_offset
    sys::map_anon(RACE_IMAGE, 8192, prot::WRITE).map_err(|_| "map_anon failed")?;
    // SAFETY: both pages were just mapped writable; only this case uses them.
    unsafe {
        core::ptr::copy_nonoverlapping(head.as_ptr(), RACE_IMAGE as *mut u8, len);
        core::ptr::copy_nonoverlapping(text.as_ptr(), RACE_CODE_PAGE as *mut u8, text.len());
    }
    let image_len = 4096 + text.len() as u64;
    let r = race(image_len);
    // SAFETY: the toggler has ended; nothing references the pages.
    let _ = unsafe { sys::unmap(RACE_IMAGE, 8192) };
    r
}

fn race(image_len: u64) -> TestResult {
    let toggler = crate::util::spawn(toggle_code_page, crate::util::deadline_ms(80))?;
    let (mut ok, mut gone, mut zeroed) = (0u32, 0u32, 0u32);
    let mut result = Ok(());
    let end = crate::util::deadline_ms(80);
    let mut i = 0u64;
    while libipc::bench::rdtsc() < end {
        i += 1;
        // SAFETY: process_spawn only reads the image (or refuses).
        let r = abi::decode_result(unsafe {
            crate::util::raw_syscall(Sysnum::ProcessSpawn as u64, RACE_IMAGE, image_len, i)
        });
        match r
            .map(|h| sys::process_wait(sys::ProcessHandle::from_raw(h as u32)).map(status::decode))
        {
            Err(Error::BadAddress) => gone += 1,
            Ok(Ok(Status::Exited(c))) if c as u64 == i => ok += 1,
            Ok(Ok(Status::Faulted(_))) => zeroed += 1,
            other => {
                note!("spawn {i}: {other:?}");
                result = Err("a racing process_spawn ended oddly");
                break;
            }
        }
    }
    crate::util::expect_ok(toggler.join()?)?;
    if ok + gone + zeroed == 0 {
        return Err("no spawn completed");
    }
    result
}

/// Case: a boot image whose segments span more memory than the bootstrap
/// bound (16 MiB) or than is free is refused with NoMemory at once, before the
/// kernel fills memory for it (a huge `mem_size` costs the caller one word).
pub fn spawn_of_huge_image_is_refused_at_once() -> TestResult {
    let mut buf = [0u8; 512];
    let len = encode_code(CHILD_TEXT, Child::ExitArg.code(), &mut buf)
        .map_err(|_| "cannot encode a child image")?;
    // The first segment record starts at byte 24; its mem_size is at +24.
    for mem_size in [(16u64 << 20) + 4096, 1 << 30, 1 << 46] {
        buf[48..56].copy_from_slice(&mem_size.to_le_bytes());
        let mut fast = false;
        for _ in 0..3 {
            let free_before = sys::sysinfo().map_err(|_| "sysinfo failed")?.free_bytes;
            let t0 = libipc::bench::rdtsc();
            let r = sys::process_spawn(&buf[..len], 0);
            let dt = libipc::bench::rdtsc() - t0;
            if let Ok(pid) = r {
                note!("mem_size {mem_size:#x}: started pid {pid}");
                let _ = sys::process_wait(pid);
                return Err("a boot image beyond the memory bound was started");
            }
            expect_err(
                r.map(|h| h.raw() as u64),
                &[Error::NoMemory],
                "a huge boot image was not NoMemory",
            )?;
            if sys::sysinfo().map_err(|_| "sysinfo failed")?.free_bytes < free_before {
                return Err("a refused spawn kept memory");
            }
            // Refused before any allocation: far below a millisecond
            // (three tries, so one host stall is not a failure).
            if dt < crate::util::tsc_per_ms() {
                fast = true;
                break;
            }
        }
        if !fast {
            note!("mem_size {mem_size:#x}");
            return Err("a huge boot image was refused only after a long time");
        }
    }
    Ok(())
}
