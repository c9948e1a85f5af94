//! Lifecycle review cases: kills racing the calls that block, quotas that
//! must hold for a whole process tree, and the mapped-memory limit.
//!
//! Children are tiny position-independent programs that use no stack (as in
//! [`crate::lifecycle`]).

use crate::lifecycle::{code, settle, spawn_code};
use crate::note;
use crate::util::TestResult;
use abi::bootimg::encode_code;
use abi::status::{self, Status};
use abi::Sysnum;
use core::arch::global_asm;

/// A stack top every child has mapped (its threads here never touch it).
const CHILD_STACK_TOP: u64 = abi::layout::INIT_STACK_TOP;
/// Threads of a racer that enter `process_wait` while their process dies.
const RACER_WAITERS: u64 = 4;
/// The racer's flag page (waiters spin on it until the race starts).
const RACER_FLAG: u64 = 0x50_0000;

global_asm!(
    ".pushsection .rodata.mica_rev_life_children, \"a\"",
    // sleeper: sleeps for its argument (ns), then process_exit(0).
    "mica_rev_sleeper:",
    "mov eax, {sleep}",            // rdi: the spawn argument = ns to sleep
    "syscall",
    "xor edi, edi",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "mica_rev_sleeper_end:",
    // racer: RDI = the grandchild image's length (low 32 bits) | spin count
    // << 32; the image follows the code. Maps a flag page, spawns the
    // grandchild (a 6 s sleeper), starts RACER_WAITERS threads that spin on
    // the flag and then call process_wait(grandchild), sets the flag, spins
    // for the count, then process_exit(7) -- so the kill lands while the
    // waiters that were running are on their way into the wait, at a point
    // each round moves a little.
    "mica_rev_racer:",
    "mov r15, rdi",
    "shr r15, 32",                 // r15: spin count
    "mov r12d, edi",               // r12: image length (zero-extended)
    "mov edi, {flag}",             // rdi: the flag page
    "mov esi, 4096",               // rsi: one page
    "mov edx, {write}",            // rdx: writable
    "mov eax, {map}",
    "syscall",
    "cmp rax, -4095",              // -4095..-1: an error code
    "jae 9f",
    "lea rdi, [rip + mica_rev_racer_end]", // rdi: the image
    "mov rsi, r12",                // rsi: its length
    "mov rdx, 6000000000",         // rdx: the grandchild sleeps 6 s
    "mov eax, {pspawn}",
    "syscall",
    "cmp rax, -4095",
    "jae 9f",
    "mov r13, rax",                // r13: the grandchild's pid
    "mov r14d, {waiters}",         // r14: waiters left to start
    "1:",
    "lea rdi, [rip + 2f]",         // rdi: entry = a waiter
    "mov rsi, {stack_top}",        // rsi: stack top (unused)
    "mov rdx, r13",                // rdx: arg = the pid to wait for
    "mov eax, {spawn}",
    "syscall",
    "dec r14d",
    "jnz 1b",
    "mov eax, {flag}",
    "mov dword ptr [rax], 1",      // go
    "test r15, r15",
    "jz 4f",
    "3:",
    "dec r15",
    "jnz 3b",
    "4:",
    "mov edi, 7",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "2:",                          // waiter: rdi = pid
    "mov eax, {flag}",
    "5:",
    "pause",
    "cmp dword ptr [rax], 0",      // wait for the go
    "je 5b",
    "mov eax, {pwait}",
    "syscall",
    "xor edi, edi",
    "mov eax, {texit}",
    "syscall",
    "ud2",
    "9:",
    "mov edi, 99",                 // a map or spawn failed
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "mica_rev_racer_end:",
    ".popsection",
    pwait = const Sysnum::ProcessWait as u64,
    pexit = const Sysnum::ProcessExit as u64,
    texit = const Sysnum::ThreadExit as u64,
    sleep = const Sysnum::SleepNs as u64,
    spawn = const Sysnum::ThreadSpawn as u64,
    pspawn = const Sysnum::ProcessSpawn as u64,
    waiters = const RACER_WAITERS,
    flag = const RACER_FLAG,
    write = const abi::prot::WRITE,
    map = const Sysnum::MapAnon as u64,
    stack_top = const CHILD_STACK_TOP,
);

extern "C" {
    static mica_rev_sleeper: u8;
    static mica_rev_sleeper_end: u8;
    static mica_rev_racer: u8;
    static mica_rev_racer_end: u8;
}

/// Case: `process_exit` racing threads on their way into `process_wait`
/// for a long-lived child. A kill that lands after a waiter entered the
/// kernel but before it marked itself Blocked used to be lost (the killer
/// found it Ready, kicked a CPU that was still in the kernel), so the waiter
/// slept until the grandchild ended 6 s later and the dying process lived
/// on. Each round's wait must return in well under that.
pub fn kill_racing_process_wait_is_not_lost() -> TestResult {
    const ROUNDS: u64 = 64;
    let (before, _) = settle(50, |_| false)?;
    let sleeper = code(
        core::ptr::addr_of!(mica_rev_sleeper),
        core::ptr::addr_of!(mica_rev_sleeper_end),
    );
    let mut image = [0u8; 512];
    let len = encode_code(0x40_0000, sleeper, &mut image).map_err(|_| "cannot encode")?;
    let racer = code(
        core::ptr::addr_of!(mica_rev_racer),
        core::ptr::addr_of!(mica_rev_racer_end),
    );
    let mut worst = 0;
    let mut failed = None;
    for round in 0..ROUNDS {
        let spin = (round % 32) * 64;
        let t0 = sys_clock();
        let pid = spawn_code(racer, &image[..len], len as u64 | spin << 32)?;
        let st = libipc::sys::process_wait(pid).map(status::decode);
        let dt = sys_clock() - t0;
        worst = worst.max(dt);
        if st != Ok(Status::Exited(7)) {
            note!("round {round}: {st:?}");
            return Err("a racer did not end with status 7");
        }
        if dt > 5_000_000_000 {
            failed = Some(round);
            break;
        }
        if dt > 1_000_000_000 {
            note!("round {round}: a slow wait ({} ms)", dt / 1_000_000);
        }
    }
    // Let the orphaned grandchildren end (6 s sleeps) before later cases
    // take their baselines.
    let (_, settled) = settle(9000, |a| {
        a.processes <= before.processes && a.threads <= before.threads
    })?;
    note!("worst wait {} ms", worst / 1_000_000);
    if let Some(round) = failed {
        note!("round {round}: the wait took {} ms", worst / 1_000_000);
        return Err("a killed thread slept on in process_wait (lost kill)");
    }
    if !settled {
        return Err("the racers' grandchildren were not reaped");
    }
    Ok(())
}

fn sys_clock() -> u64 {
    libipc::sys::clock_ns()
}
