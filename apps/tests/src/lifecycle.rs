//! Process and thread lifecycle (issue 7, items 1, 2, 5, 6): thread churn
//! does not grow the kernel heap, `process_exit` ends a process that keeps
//! creating threads, orphaned zombies are reaped, a dead unjoined thread's
//! kernel stack is freed, per-process quotas hold, and no program can
//! outrank its maximum controlled priority (MCP).
//!
//! Children are tiny position-independent programs (as in [`crate::process`])
//! that use no stack: every syscall takes its arguments in registers.

use crate::note;
use crate::util::{expect_err, raw_syscall, TestResult};
use abi::bootimg::encode_code;
use abi::limits::{INIT_CHILD_MCP, MAX_CHILDREN, MAX_THREADS_PER_PROCESS};
use abi::status::{self, Status};
use abi::{prot, Error, Sysnum};
use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, Ordering};
use libipc::{println, sys};

/// Where a child's code is mapped.
const CHILD_TEXT: u64 = 0x40_0000;
/// A stack top every child has mapped (its threads here never touch it).
const CHILD_STACK_TOP: u64 = abi::layout::INIT_STACK_TOP;
/// The priority the hog child's threads want when 0 is refused (its MCP).
const HOG_PRIO: u64 = 2;

global_asm!(
    ".pushsection .rodata.mica_life_children, \"a\"",
    // exit_arg: process_exit(arg).
    "mica_life_exit_arg:",
    "mov eax, {pexit}",            // rax: ProcessExit; rdi: the spawn argument
    "syscall",
    "ud2",
    "mica_life_exit_arg_end:",
    // breeder: starts 4 threads that create threads in a loop (each starts
    // its successor and ends, so creation races with everything else all
    // the time) and 2 that only `yield`, sleeps 20 ms, process_exit(5).
    "mica_life_breeder:",
    "mov r12d, 4",                 // r12: breeders left to start
    "1:",
    "lea rdi, [rip + 2f]",         // rdi: entry = a breeder
    "mov rsi, {stack_top}",        // rsi: stack top (unused by the thread)
    "xor edx, edx",                // rdx: arg
    "mov eax, {spawn}",
    "syscall",
    "dec r12d",
    "jnz 1b",
    "mov r12d, 2",                 // r12: yielders left to start
    "4:",
    "lea rdi, [rip + 3f]",         // rdi: entry = a yielder
    "mov rsi, {stack_top}",
    "xor edx, edx",
    "mov eax, {spawn}",
    "syscall",
    "dec r12d",
    "jnz 4b",
    "mov edi, 20000000",           // rdi: 20 ms
    "mov eax, {sleep}",
    "syscall",
    "mov edi, 5",                  // rdi: exit code 5
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "2:",                          // breeder: start a successor, then end;
    "lea rdi, [rip + 2b]",         // while creation fails (quota of dead
    "mov rsi, {stack_top}",        // unjoined rows full), keep trying
    "xor edx, edx",
    "mov eax, {spawn}",
    "syscall",
    "cmp rax, -4095",              // -4095..-1: an error code
    "jae 2b",
    "xor edi, edi",
    "mov eax, {texit}",
    "syscall",
    "ud2",
    "3:",                          // yielder: parked in a run queue again and again
    "mov eax, {yield_}",
    "syscall",
    "jmp 3b",
    "mica_life_breeder_end:",
    // orphaner: spawns the boot image that follows its code (length in RDI)
    // until process_spawn fails, then exits with the number started, never
    // waiting for any of them.
    "mica_life_orphaner:",
    "mov r12, rdi",                // r12: the grandchild image's length
    "lea r13, [rip + mica_life_orphaner_end]", // r13: the image, right after this code
    "xor r14d, r14d",              // r14: children started
    "1:",
    "mov rdi, r13",                // rdi: image
    "mov rsi, r12",                // rsi: length
    "xor edx, edx",                // rdx: the grandchild's argument (its exit code)
    "mov eax, {pspawn}",
    "syscall",
    "cmp rax, -4095",              // -4095..-1: an error code
    "jae 2f",
    "inc r14",
    "cmp r14, 1000",
    "jb 1b",
    "2:",
    "mov rdi, r14",                // rdi: exit code = children started
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "mica_life_orphaner_end:",
    // hog: tries priority 0 (exit bit 0 set if that was allowed, else it
    // takes HOG_PRIO), occupies every other CPU with a spinner thread and
    // polls `sysinfo` on this one until the process count reaches RDI (the
    // parent's signal that it got CPU time). After 5 s without the signal it
    // gives up with exit bit 1 set. process_exit ends the spinners.
    "mica_life_hog:",
    "mov r12, rdi",                // r12: the process count that means "stop"
    "xor r15d, r15d",              // r15: exit code bits
    "xor edi, edi",                // rdi: priority 0
    "mov eax, {setprio}",
    "syscall",
    "test rax, rax",
    "jnz 1f",
    "mov r15d, 1",                 // allowed: report it (and hog at 0)
    "jmp 2f",
    "1:",
    "mov edi, {hog_prio}",         // refused: the highest it may take
    "mov eax, {setprio}",
    "syscall",
    "2:",
    "mov eax, {clock}",
    "syscall",
    "mov rbx, 5000000000",
    "add rbx, rax",                // rbx: give up at now + 5 s
    "mov eax, {cpus}",
    "syscall",
    "lea r14, [rax - 1]",          // r14: spinner threads to start (one per other CPU)
    "3:",
    "test r14, r14",
    "jz 4f",
    "lea rdi, [rip + 5f]",         // rdi: entry = a spinner
    "mov rsi, {stack_top}",
    "xor edx, edx",
    "mov eax, {spawn}",
    "syscall",
    "dec r14",
    "jmp 3b",
    "4:",
    "sub rsp, {info_len}",         // rsp: a SysInfo buffer on the main stack
    "7:",
    "mov rdi, rsp",                // rdi: the buffer
    "mov esi, {info_len}",         // rsi: its size
    "mov eax, {sysinfo}",
    "syscall",
    "cmp [rsp + {info_procs}], r12", // the parent's signal?
    "jae 8f",
    "mov eax, {clock}",
    "syscall",
    "cmp rax, rbx",
    "jb 7b",
    "or r15d, 2",                  // gave up: the parent never ran
    "8:",
    "mov rdi, r15",
    "mov eax, {pexit}",            // ends the spinners too
    "syscall",
    "ud2",
    "5:",                          // spinner
    "xor edi, edi",
    "mov eax, {setprio}",
    "syscall",
    "test rax, rax",
    "jz 6f",
    "mov edi, {hog_prio}",
    "mov eax, {setprio}",
    "syscall",
    "6:",
    "jmp 6b",                      // spins in ring 3 until killed
    "mica_life_hog_end:",
    // sleeper: sleeps for its argument (ns), then process_exit(0).
    "mica_life_sleeper:",
    "mov eax, {sleep}",            // rdi: the spawn argument = ns to sleep
    "syscall",
    "xor edi, edi",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "mica_life_sleeper_end:",
    // waiter: spawns the image after its code (length in RDI) with a 1.5 s
    // sleep, starts a thread that waits for it, sleeps 20 ms, then
    // process_exit(6) while that thread is still blocked in process_wait.
    "mica_life_waiter:",
    "mov r12, rdi",                // r12: the grandchild image's length
    "lea rdi, [rip + mica_life_waiter_end]", // rdi: the image, right after this code
    "mov rsi, r12",                // rsi: its length
    "mov edx, 1000000000",         // rdx: the grandchild sleeps 1 s
    "mov eax, {pspawn}",
    "syscall",
    "cmp rax, -4095",              // -4095..-1: an error code
    "jae 3f",
    "mov rdx, rax",                // rdx: thread argument = the grandchild's handle
    "lea rdi, [rip + 2f]",         // rdi: entry = the waiting thread
    "mov rsi, {stack_top}",
    "mov eax, {spawn}",
    "syscall",
    "mov edi, 20000000",           // rdi: 20 ms
    "mov eax, {sleep}",
    "syscall",
    "mov edi, 6",                  // rdi: exit code 6
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "2:",                          // waiting thread: rdi = the handle
    "mov eax, {pwait}",
    "syscall",
    "xor edi, edi",
    "mov eax, {texit}",
    "syscall",
    "ud2",
    "3:",
    "mov edi, 99",                 // the spawn failed
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "mica_life_waiter_end:",
    ".popsection",
    pwait = const Sysnum::ProcessWait as u64,
    pexit = const Sysnum::ProcessExit as u64,
    texit = const Sysnum::ThreadExit as u64,
    sleep = const Sysnum::SleepNs as u64,
    spawn = const Sysnum::ThreadSpawn as u64,
    pspawn = const Sysnum::ProcessSpawn as u64,
    yield_ = const Sysnum::Yield as u64,
    setprio = const Sysnum::SetPriority as u64,
    cpus = const Sysnum::CpuCount as u64,
    sysinfo = const Sysnum::SysInfo as u64,
    info_len = const core::mem::size_of::<abi::SysInfo>(),
    info_procs = const core::mem::offset_of!(abi::SysInfo, processes),
    clock = const Sysnum::ClockNs as u64,
    hog_prio = const HOG_PRIO,
    stack_top = const CHILD_STACK_TOP,
);

extern "C" {
    static mica_life_sleeper: u8;
    static mica_life_sleeper_end: u8;
    static mica_life_waiter: u8;
    static mica_life_waiter_end: u8;
    static mica_life_exit_arg: u8;
    static mica_life_exit_arg_end: u8;
    static mica_life_breeder: u8;
    static mica_life_breeder_end: u8;
    static mica_life_orphaner: u8;
    static mica_life_orphaner_end: u8;
    static mica_life_hog: u8;
    static mica_life_hog_end: u8;
}

/// The bytes between two labels of the block above.
pub(crate) fn code(start: *const u8, end: *const u8) -> &'static [u8] {
    // SAFETY: both labels are in the same read-only section, `end` after
    // `start`, and the bytes between them never change.
    unsafe { core::slice::from_raw_parts(start, end.offset_from(start) as usize) }
}

/// Builds a one-segment image of `text` (plus `tail` right after it) into
/// `buf` and spawns it with `arg`.
pub(crate) fn spawn_code(
    text: &[u8],
    tail: &[u8],
    arg: u64,
) -> Result<sys::ProcessHandle, &'static str> {
    let mut joined = [0u8; 1024];
    let n = text.len() + tail.len();
    if n > joined.len() {
        return Err("child code too long");
    }
    joined[..text.len()].copy_from_slice(text);
    joined[text.len()..n].copy_from_slice(tail);
    let mut buf = [0u8; 2048];
    let len =
        encode_code(CHILD_TEXT, &joined[..n], &mut buf).map_err(|_| "cannot encode a child")?;
    sys::process_spawn(&buf[..len], arg).map_err(|e| {
        note!("process_spawn: {e}");
        "process_spawn failed"
    })
}

pub(crate) fn info() -> Result<abi::SysInfo, &'static str> {
    sys::sysinfo().map_err(|_| "sysinfo failed")
}

/// Polls `sysinfo` (1 ms apart, up to `ms` times) until `ok` holds; returns
/// the last sample and whether it held.
pub(crate) fn settle(
    ms: u32,
    ok: impl Fn(&abi::SysInfo) -> bool,
) -> Result<(abi::SysInfo, bool), &'static str> {
    let mut s = info()?;
    for _ in 0..ms {
        if ok(&s) {
            return Ok((s, true));
        }
        sys::sleep_ns(1_000_000);
        s = info()?;
    }
    Ok((s, ok(&s)))
}

extern "C" fn exit_at_once(code: u64) -> ! {
    sys::thread_exit(code as i32)
}

/// Case (item 1): 1024 thread spawn+join rounds leave the kernel heap exactly
/// as it was (the old kernel appended every tid to a per-process list that
/// joins never shrank, until an infallible allocation panicked).
pub fn thread_churn_does_not_grow_kernel_heap() -> TestResult {
    const ROUNDS: u32 = 1024;
    let stack = crate::util::spawn(exit_at_once, 0)?; // warm-up, and a stack slot
    crate::util::expect_ok(stack.join()?)?;
    // One stack, reused by every round (each thread is joined before the next).
    let base = 0x5f00_0000_0000u64;
    sys::map_anon(base, 16 * 1024, prot::WRITE).map_err(|_| "map_anon failed")?;
    let r = churn(base + 16 * 1024, ROUNDS);
    // SAFETY: every thread that used the stack has been joined.
    let _ = unsafe { sys::unmap(base, 16 * 1024) };
    r
}

/// Heap growth tolerated over the churn (see `churn`). At -smp 4 the
/// capacity high-water marks grow by 512 bytes in most runs, and by more
/// now and then under host load (seen failing at 512); the leak this case
/// is for grew 8 bytes a round, 8,192 over the 1,024 rounds: four times
/// this.
const HEAP_SLACK_BYTES: u64 = 2048;

fn churn(top: u64, rounds: u32) -> TestResult {
    let round = || -> TestResult {
        // SAFETY: `exit_at_once` touches only its own stack, the one given.
        let tid = abi::decode_result(unsafe {
            raw_syscall(
                Sysnum::ThreadSpawn as u64,
                exit_at_once as *const () as u64,
                top,
                0,
            )
        })
        .map_err(|_| "thread_spawn failed")?;
        match sys::thread_join(sys::ThreadHandle::from_raw(tid as u32)).map(status::decode) {
            Ok(Status::Exited(0)) => Ok(()),
            _ => Err("a churned thread did not exit with 0"),
        }
    };
    for _ in 0..64 {
        round()?; // warm-up: run-queue and table capacities reach steady state
    }
    let (before, _) = settle(200, |_| false)?;
    let t0 = sys::clock_ns();
    for _ in 0..rounds {
        round()?;
    }
    let dt = sys::clock_ns() - t0;
    // Threads freed on other CPUs settle within moments. A few capacity
    // high-water marks (a run queue, the free stack-slot list) may still
    // grow once by a few words; the old per-process tid list grew 8 bytes a
    // round (2048 rounds: 9000 -> 40744 bytes at -smp 4).
    let (after, ok) = settle(500, |a| {
        a.heap_used_bytes <= before.heap_used_bytes + HEAP_SLACK_BYTES
            && a.threads <= before.threads
    })?;
    note!(
        "{rounds} rounds in {} ms; heap used {} -> {} bytes",
        dt / 1_000_000,
        before.heap_used_bytes,
        after.heap_used_bytes
    );
    if !ok {
        return Err("thread churn grew the kernel heap");
    }
    Ok(())
}

/// Case (item 5): a thread that exited but was never joined gives back its
/// kernel stack and its global thread slot at once; only its status waits.
pub fn dead_unjoined_thread_frees_its_stack() -> TestResult {
    let base = 0x5f10_0000_0000u64;
    sys::map_anon(base, 16 * 1024, prot::WRITE).map_err(|_| "map_anon failed")?;
    let (before, _) = settle(50, |_| false)?;
    // SAFETY: `exit_at_once` touches only the stack given.
    let tid = abi::decode_result(unsafe {
        raw_syscall(
            Sysnum::ThreadSpawn as u64,
            exit_at_once as *const () as u64,
            base + 16 * 1024,
            7,
        )
    })
    .map_err(|_| "thread_spawn failed")?;
    let (after, ok) = settle(1000, |a| {
        a.threads <= before.threads && a.free_bytes >= before.free_bytes
    })?;
    let joined = sys::thread_join(sys::ThreadHandle::from_raw(tid as u32)).map(status::decode);
    // SAFETY: the thread has ended.
    let _ = unsafe { sys::unmap(base, 16 * 1024) };
    if !ok {
        note!("before: {before:?}");
        note!("unjoined: {after:?}");
        return Err("a dead, unjoined thread kept its stack or its slot");
    }
    match joined {
        Ok(Status::Exited(7)) => Ok(()),
        other => {
            note!("join: {other:?}");
            Err("the late join did not report the exit status")
        }
    }
}

static STOP_PARKED: AtomicBool = AtomicBool::new(false);

extern "C" fn parked(_: u64) -> ! {
    while !STOP_PARKED.load(Ordering::SeqCst) {
        sys::sleep_ns(2_000_000);
    }
    sys::thread_exit(0)
}

/// Case (item 5): one process cannot take more than its thread quota
/// (`NoMemory`), well short of the kernel-wide table.
pub fn thread_quota_is_per_process() -> TestResult {
    const SLOT: u64 = 16 * 1024;
    let base = 0x5f20_0000_0000u64;
    let bytes = SLOT * (MAX_THREADS_PER_PROCESS as u64 + 1);
    sys::map_anon(base, bytes, prot::WRITE).map_err(|_| "map_anon failed")?;
    STOP_PARKED.store(false, Ordering::SeqCst);
    let mut tids = [0u64; MAX_THREADS_PER_PROCESS + 1];
    let mut n = 0;
    let mut err = None;
    while n < tids.len() {
        // SAFETY: each thread gets its own stack slot; `parked` touches only it
        // and the atomic above.
        let r = abi::decode_result(unsafe {
            raw_syscall(
                Sysnum::ThreadSpawn as u64,
                parked as *const () as u64,
                base + SLOT * (n as u64 + 1),
                0,
            )
        });
        match r {
            Ok(tid) => {
                tids[n] = tid;
                n += 1;
            }
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let at_limit = info()?;
    STOP_PARKED.store(true, Ordering::SeqCst);
    let mut joined_ok = true;
    for &tid in &tids[..n] {
        joined_ok &= matches!(
            sys::thread_join(sys::ThreadHandle::from_raw(tid as u32)),
            Ok(0)
        );
    }
    // SAFETY: every thread that used the stacks has been joined.
    let _ = unsafe { sys::unmap(base, bytes) };
    note!(
        "{n} threads started, then {err:?}; kernel-wide {} threads",
        at_limit.threads
    );
    if err != Some(Error::NoMemory) {
        return Err("the thread quota was not NoMemory");
    }
    // The caller's main thread (and any unjoined rows) count too.
    if n >= MAX_THREADS_PER_PROCESS || n + 16 < MAX_THREADS_PER_PROCESS {
        return Err("the thread quota is not MAX_THREADS_PER_PROCESS");
    }
    if !joined_ok {
        return Err("a parked thread did not exit with 0");
    }
    Ok(())
}

/// Set by [`process_exit_ends_a_breeding_process`] once its wait returned.
static BREEDER_WAITED: AtomicBool = AtomicBool::new(false);

/// Fails the whole test program if the wait has not returned in 10 s
/// (a hang would otherwise stop every later case from reporting).
extern "C" fn breeder_watchdog(_: u64) -> ! {
    for _ in 0..1000 {
        if BREEDER_WAITED.load(Ordering::SeqCst) {
            sys::thread_exit(0);
        }
        sys::sleep_ns(10_000_000);
    }
    println!("test process_exit_ends_a_breeding_process ... FAILED: the wait hung for 10 s");
    sys::process_exit(1)
}

/// Case (item 2): a child whose threads create threads in a loop (and others
/// that only `yield`) calls `process_exit(5)` from its main thread: the
/// parent's wait returns 5 promptly and the kernel's thread count returns to
/// where it was (no thread of the dying process was created unkilled or ran
/// user code again).
pub fn process_exit_ends_a_breeding_process() -> TestResult {
    let (before, _) = settle(50, |_| false)?;
    BREEDER_WAITED.store(false, Ordering::SeqCst);
    let dog = crate::util::spawn(breeder_watchdog, 0)?;
    let text = code(
        core::ptr::addr_of!(mica_life_breeder),
        core::ptr::addr_of!(mica_life_breeder_end),
    );
    let t0 = sys::clock_ns();
    let pid = spawn_code(text, &[], 0)?;
    let st = sys::process_wait(pid).map(status::decode);
    let dt = sys::clock_ns() - t0;
    BREEDER_WAITED.store(true, Ordering::SeqCst);
    crate::util::expect_ok(dog.join()?)?;
    let (after, ok) = settle(1000, |a| {
        a.threads <= before.threads && a.processes <= before.processes
    })?;
    note!("wait returned {st:?} after {} ms", dt / 1_000_000);
    if st != Ok(Status::Exited(5)) {
        return Err("the breeding child did not end with status 5");
    }
    // Generous: at -smp 8 on two loaded host cores each dying thread's
    // stack shootdown can take tens of ms (3.2 s seen); the old kernel never
    // returned at all (the watchdog gives up at 10 s).
    if dt > 8_000_000_000 {
        return Err("the wait for a breeding child took over 8 s");
    }
    if !ok {
        note!("before: {before:?}");
        note!("after: {after:?}");
        return Err("threads or processes of the dead child remain");
    }
    Ok(())
}

/// Case (item 5): a child that starts children until its quota stops it and
/// exits without waiting for any leaves no zombie behind: the records are
/// reaped (orphans are reaped when they end), spawning still works, and the
/// kernel's counts return to where they were.
pub fn orphaned_zombies_are_reaped() -> TestResult {
    let (before, _) = settle(50, |_| false)?;
    let grandchild = code(
        core::ptr::addr_of!(mica_life_exit_arg),
        core::ptr::addr_of!(mica_life_exit_arg_end),
    );
    let mut gc_image = [0u8; 512];
    let gc_len = encode_code(CHILD_TEXT, grandchild, &mut gc_image).map_err(|_| "cannot encode")?;
    let text = code(
        core::ptr::addr_of!(mica_life_orphaner),
        core::ptr::addr_of!(mica_life_orphaner_end),
    );
    let pid = spawn_code(text, &gc_image[..gc_len], gc_len as u64)?;
    let st = sys::process_wait(pid).map(status::decode);
    let (after, ok) = settle(2000, |a| {
        a.processes <= before.processes && a.threads <= before.threads
    })?;
    note!(
        "the child started {st:?} grandchildren; processes {} -> {}",
        before.processes,
        after.processes
    );
    if st != Ok(Status::Exited(MAX_CHILDREN as i32)) {
        return Err("the child's spawns did not stop at MAX_CHILDREN");
    }
    if !ok {
        return Err("orphaned zombies were not reaped");
    }
    // Spawning still works for everyone.
    let pid = spawn_code(grandchild, &[], 3)?;
    match sys::process_wait(pid).map(status::decode) {
        Ok(Status::Exited(3)) => Ok(()),
        other => {
            note!("{other:?}");
            Err("spawning after the orphans failed")
        }
    }
}

/// Case (item 6): a program cannot raise itself above its maximum
/// controlled priority, cannot hand a child more than it has, and a child
/// hogging every CPU at its maximum cannot keep its parent (running above
/// that maximum) from running: the parent completes five 20 ms sleeps and
/// signals the hog, which otherwise gives up after 5 s.
pub fn priority_is_capped_by_mcp() -> TestResult {
    // init starts us with MCP INIT_CHILD_MCP.
    expect_err(
        sys::set_priority(INIT_CHILD_MCP - 1),
        &[Error::PermissionDenied],
        "set_priority above the MCP",
    )?;
    expect_err(
        sys::set_child_max_priority(INIT_CHILD_MCP - 1),
        &[Error::PermissionDenied],
        "set_child_max_priority above the own MCP",
    )?;
    expect_err(
        sys::set_child_max_priority(abi::MAX_PRIORITY + 1),
        &[Error::InvalidArgument],
        "set_child_max_priority out of range",
    )?;
    sys::set_child_max_priority(HOG_PRIO).map_err(|_| "set_child_max_priority failed")?;
    sys::set_priority(INIT_CHILD_MCP).map_err(|_| "set_priority(MCP) failed")?;
    let r = hog_test();
    let _ = sys::set_priority(4);
    let _ = sys::set_child_max_priority(INIT_CHILD_MCP);
    r
}

fn hog_test() -> TestResult {
    let text = code(
        core::ptr::addr_of!(mica_life_hog),
        core::ptr::addr_of!(mica_life_hog_end),
    );
    let (base, _) = settle(50, |_| false)?;
    // The signal: the hog plus one more child beyond the settled count.
    let pid = spawn_code(text, &[], base.processes + 2)?;
    sys::sleep_ns(50_000_000); // let the hog take every CPU
    let mut worst = 0;
    for _ in 0..5 {
        let t0 = sys::clock_ns();
        sys::sleep_ns(20_000_000);
        worst = worst.max(sys::clock_ns() - t0);
    }
    // We ran: tell the hog by adding a process (a child that exits at once
    // and stays counted until we wait for it).
    let exit_arg = code(
        core::ptr::addr_of!(mica_life_exit_arg),
        core::ptr::addr_of!(mica_life_exit_arg_end),
    );
    let flag = spawn_code(exit_arg, &[], 0)?;
    let st = sys::process_wait(pid).map(status::decode);
    let _ = sys::process_wait(flag);
    note!(
        "hog ended {st:?}; worst 20 ms sleep took {} ms",
        worst / 1_000_000
    );
    match st {
        Ok(Status::Exited(0)) => Ok(()),
        Ok(Status::Exited(c)) if c & 1 != 0 => Err("a child set priority 0 above its MCP"),
        Ok(Status::Exited(2)) => {
            Err("a child at its MCP starved its higher-priority parent for 5 s")
        }
        _ => Err("the hog child ended oddly"),
    }
}

/// Case (item 2): a process whose thread is blocked in `process_wait` for a
/// long-lived child ends at once on `process_exit`: the killed waiter leaves
/// the child's wait list rather than staying referenced there (which would
/// keep the dead thread, and so its whole process, alive until the child
/// ended). The child, orphaned, is reaped when it ends.
pub fn process_exit_with_a_thread_in_wait() -> TestResult {
    let (before, _) = settle(50, |_| false)?;
    let sleeper = code(
        core::ptr::addr_of!(mica_life_sleeper),
        core::ptr::addr_of!(mica_life_sleeper_end),
    );
    let mut image = [0u8; 512];
    let len = encode_code(CHILD_TEXT, sleeper, &mut image).map_err(|_| "cannot encode")?;
    let text = code(
        core::ptr::addr_of!(mica_life_waiter),
        core::ptr::addr_of!(mica_life_waiter_end),
    );
    let pid = spawn_code(text, &image[..len], len as u64)?;
    let st = sys::process_wait(pid).map(status::decode);
    // The grandchild sleeps 1 s: it must still be there when our wait
    // returns (it is the only process beyond the baseline by then).
    let mid = info()?;
    let (after, ok) = settle(5000, |a| {
        a.processes <= before.processes && a.threads <= before.threads
    })?;
    note!(
        "wait: {st:?}; processes {} -> {} (at the wait) -> {}",
        before.processes,
        mid.processes,
        after.processes
    );
    if st != Ok(Status::Exited(6)) {
        return Err("the child did not end with status 6");
    }
    if mid.processes != before.processes + 1 {
        return Err("the wait returned only after the grandchild ended");
    }
    if !ok {
        return Err("the orphaned grandchild was not reaped when it ended");
    }
    Ok(())
}
