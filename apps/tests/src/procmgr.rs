//! procmgr (issue 11 item 3): fork, wait, exit, getpid/getppid, kill,
//! fault isolation and limits, through the process manager init adopted
//! this program into. Children never print and never return into the
//! harness: each ends with `procmgr::exit`. What a child must report
//! beyond its exit code goes through a page shared before the fork (a
//! memory object's leaves stay shared across `space_clone`).

use crate::note;
use crate::util::{check, expect, free_back_to, free_bytes, ok, TestResult};
use abi::status::Ended;
use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::ipc::{self, Endpoint, Notification};
use libipc::procmgr::{self as pm, Fork};
use libipc::sys;
use libipc::vm::{MemoryHandle, Space};
use libipc::Error;

/// How long any one wait may take (a loaded TCG host is slow).
const WAIT_US: u32 = 10_000_000;

/// Waits (up to 2 s) for procmgr's endpoint, which procmgr gives when init
/// adopts this program (after init's three handles): before anything here
/// makes a handle, so it lands at `abi::boot_handles::tests::PROCMGR`.
pub fn attach() {
    let h = abi::boot_handles::tests::PROCMGR;
    let t0 = sys::clock_ns();
    while sys::clock_ns() - t0 < 2_000_000_000 {
        // A zero-bit signal to an endpoint is WrongType; an empty slot is
        // BadHandle.
        if ipc::signal(Notification(h), 0) == Err(Error::WrongType) {
            pm::set_endpoint(Endpoint(h));
            // After a procmgr restart init adopts this program again; its
            // client finds the new endpoint through the name service.
            pm::rejoin_through(Endpoint(abi::bootinfo::names::HANDLE));
            return;
        }
        sys::yield_now();
    }
}

fn attached() -> TestResult {
    check(
        pm::endpoint().is_some(),
        "init did not adopt this program into procmgr",
    )
}

fn wait_pid(pid: u32) -> Result<Ended, &'static str> {
    match pm::wait(Some(pid), Some(WAIT_US)) {
        Ok((p, st)) if p == pid => Ok(st),
        Ok((p, _)) => {
            note!("waitpid({pid}) reaped {p}");
            Err("waitpid reaped another child")
        }
        Err(e) => {
            note!("waitpid({pid}): {e}");
            Err("waitpid failed")
        }
    }
}

/// Forks; in the child runs `f` and exits with its result.
fn fork_with(f: impl FnOnce() -> i32) -> Result<u32, Error> {
    match pm::fork()? {
        Fork::Parent(pid) => Ok(pid),
        Fork::Child => pm::exit(f()),
    }
}

fn fork_child(f: impl FnOnce() -> i32) -> Result<u32, &'static str> {
    ok(fork_with(f), "fork")
}

/// A page shared by this process and the children it forks afterwards.
pub(crate) struct Shared {
    mem: MemoryHandle,
}

const SHARED_AT: u64 = 0x6200_0000_0000;
const PAGE: u64 = 4096;

impl Shared {
    pub(crate) fn new() -> Result<Shared, &'static str> {
        let mem = ok(MemoryHandle::create(PAGE), "mem_create")?;
        if let Err(e) = mem.map(Space::Own, SHARED_AT, 0, PAGE, abi::prot::WRITE) {
            let _ = mem.close();
            note!("mem_map: {e}");
            return Err("mem_map");
        }
        Ok(Shared { mem })
    }

    pub(crate) fn slot(&self, i: usize) -> &AtomicU64 {
        assert!(i < (PAGE / 8) as usize);
        // SAFETY: the page is mapped writable at SHARED_AT while `self`
        // lives; AtomicU64 has u64's layout and the slot is aligned.
        unsafe { &*((SHARED_AT as *const AtomicU64).add(i)) }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: only `slot` references point into the page, and none
        // outlives `self`.
        let _ = unsafe { Space::Own.unmap(SHARED_AT, PAGE) };
        let _ = self.mem.close();
    }
}

/// Processes procmgr lists whose parent is `pid`, and zombies among them.
fn children_of(pid: u32) -> Result<(usize, usize), &'static str> {
    let (mut n, mut z, mut i) = (0, 0, 0);
    while let Some(p) = ok(pm::list(i), "list")? {
        if p.ppid == pid {
            n += 1;
            z += usize::from(p.zombie.is_some());
        }
        i = p.index + 1;
    }
    Ok((n, z))
}

/// Fork, exit codes and wait: three children exit with distinct codes;
/// `waitpid` and `wait(any)` each reap the right one once.
pub fn fork_wait_exit_codes() -> TestResult {
    attached()?;
    let a = fork_child(|| 7)?;
    let b = fork_child(|| -3)?;
    let c = fork_child(|| 250)?;
    expect(wait_pid(b)?, Ended::Exited(-3), "child b's status")?;
    let mut seen = [false; 2];
    for _ in 0..2 {
        let (p, st) = ok(pm::wait(None, Some(WAIT_US)), "wait(any)")?;
        if p == a {
            expect(st, Ended::Exited(7), "child a's status")?;
            seen[0] = true;
        } else if p == c {
            expect(st, Ended::Exited(250), "child c's status")?;
            seen[1] = true;
        } else {
            note!("wait(any) reaped {p}, not {a} or {c}");
            return Err("wait(any) reaped a stranger");
        }
    }
    check(seen == [true, true], "each child reaped once")?;
    crate::util::want(
        pm::wait(None, Some(0)),
        Error::NotFound,
        "wait with no child",
    )
}

/// getpid and getppid in parent and child.
pub fn getpid_getppid() -> TestResult {
    attached()?;
    let me = ok(pm::getpid(), "getpid")?;
    check(me > 1, "this program has a pid above init's")?;
    expect(
        ok(pm::getppid(), "getppid")?,
        1,
        "this program's parent is init",
    )?;
    let sh = Shared::new()?;
    let child = fork_child(|| {
        sh.slot(0)
            .store(u64::from(pm::getpid().unwrap_or(0)), Ordering::SeqCst);
        sh.slot(1)
            .store(u64::from(pm::getppid().unwrap_or(0)), Ordering::SeqCst);
        0
    })?;
    expect(wait_pid(child)?, Ended::Exited(0), "child status")?;
    expect(
        sh.slot(0).load(Ordering::SeqCst),
        u64::from(child),
        "the child's getpid",
    )?;
    expect(
        sh.slot(1).load(Ordering::SeqCst),
        u64::from(me),
        "the child's getppid",
    )
}

/// A chain of 10: each process forks the next and waits for it, passing
/// the depth up; no zombie and no process of the chain is left.
pub fn fork_chain_10_leaves_no_zombies() -> TestResult {
    attached()?;
    let me = ok(pm::getpid(), "getpid")?;
    let top = fork_child(|| chain(1))?;
    expect(wait_pid(top)?, Ended::Exited(10), "the chain's depth")?;
    expect(children_of(me)?, (0, 0), "children and zombies left")
}

/// In a chain member at `depth`: fork the next unless 10 deep; exit with
/// the depth the chain reached.
fn chain(depth: i32) -> i32 {
    if depth == 10 {
        return depth;
    }
    match fork_with(|| chain(depth + 1)) {
        Ok(pid) => match pm::wait(Some(pid), Some(WAIT_US)) {
            Ok((_, Ended::Exited(c))) => c,
            _ => -100 - depth,
        },
        Err(_) => -200 - depth,
    }
}

/// 100 children forked, then all waited: each status seen exactly once.
/// (A fork refused at a limit, with many children not yet reaped by the
/// kernel, is retried after reaping one: noted.)
pub fn hundred_children_all_waited() -> TestResult {
    attached()?;
    let me = ok(pm::getpid(), "getpid")?;
    let mut seen = [false; 100];
    let mut early = 0;
    for i in 0..100 {
        let mut tries = 0;
        loop {
            match fork_with(|| i) {
                Ok(_) => break,
                Err(Error::NoMemory) if tries < 100 => {
                    tries += 1;
                    let (_, st) = ok(pm::wait(None, Some(WAIT_US)), "wait at the limit")?;
                    mark(&mut seen, st)?;
                    early += 1;
                }
                Err(e) => {
                    note!("fork {i}: {e}");
                    return Err("fork failed");
                }
            }
        }
    }
    if early > 0 {
        note!("{early} children reaped early (a fork hit a limit)");
    }
    for _ in early..100 {
        let (_, st) = ok(pm::wait(None, Some(WAIT_US)), "wait(any)")?;
        mark(&mut seen, st)?;
    }
    check(seen.iter().all(|&s| s), "every child's status came once")?;
    expect(children_of(me)?, (0, 0), "children and zombies left")
}

fn mark(seen: &mut [bool; 100], st: Ended) -> TestResult {
    match st {
        Ended::Exited(c) if (0..100).contains(&c) && !seen[c as usize] => {
            seen[c as usize] = true;
            Ok(())
        }
        other => {
            note!("a child ended with {other:?}");
            Err("a status was wrong or came twice")
        }
    }
}

/// A page of this program's own (private, copy-on-write after a fork).
static mut COW_WORD: [u64; 512] = [0; 512];

fn cow_word() -> *mut u64 {
    core::ptr::addr_of_mut!(COW_WORD).cast::<u64>()
}

/// COW: after a fork, parent and child each see only their own writes,
/// in a fixed order (through a shared page): the parent writes first, the
/// child must still read the value from before the fork, then the child
/// writes, and the parent must still read its own; once the child is
/// reaped, the free figure is back to its baseline.
pub fn cow_parent_and_child_see_own_writes() -> TestResult {
    attached()?;
    // SAFETY: only this case touches COW_WORD (cases run one at a time).
    unsafe { cow_word().write_volatile(1) };
    let sh = Shared::new()?;
    // A warm-up fork, so page tables and procmgr's state exist before the
    // baseline.
    let w = fork_child(|| 0)?;
    wait_pid(w)?;
    let before = free_bytes()?;
    // Slot 0: 1 = the parent wrote, 2 = the child wrote.
    let step = sh.slot(0);
    step.store(0, Ordering::SeqCst);
    let child = fork_child(|| {
        let t0 = sys::clock_ns();
        while step.load(Ordering::SeqCst) != 1 {
            if sys::clock_ns() - t0 > 5_000_000_000 {
                return 3;
            }
            sys::yield_now();
        }
        // SAFETY: this process's own copy of the word.
        let saw = unsafe { cow_word().read_volatile() };
        // SAFETY: as above.
        unsafe { cow_word().write_volatile(2) };
        // SAFETY: as above.
        let mine = unsafe { cow_word().read_volatile() };
        step.store(2, Ordering::SeqCst);
        match (saw, mine) {
            (1, 2) => 0,
            (3, _) => 1, // saw the parent's write
            _ => 2,
        }
    })?;
    // SAFETY: as above (the parent's copy).
    unsafe { cow_word().write_volatile(3) };
    step.store(1, Ordering::SeqCst);
    expect(
        wait_pid(child)?,
        Ended::Exited(0),
        "the child saw only its own write (1: it saw the parent's)",
    )?;
    expect(step.load(Ordering::SeqCst), 2, "the child's step")?;
    // SAFETY: as above.
    let parent_word = unsafe { cow_word().read_volatile() };
    expect(parent_word, 3, "the parent's word after the child's write")?;
    drop(sh);
    free_back_to(before, "fork COW")
}

/// How a forked child faults.
#[derive(Clone, Copy)]
enum Crash {
    Null,
    WriteText,
    ExecStack,
    DivZero,
    Ud2,
}

/// A second thread of a crashing child: it would keep the process alive
/// for 30 s if only the faulting thread ended.
extern "C" fn sleeper(_: u64) -> ! {
    sys::sleep_ns(30_000_000_000);
    sys::thread_exit(0)
}

fn crash(how: Crash) -> ! {
    // procmgr kills the whole process, this thread too (the kernel's
    // default would end only the faulting thread).
    if crate::util::spawn(sleeper, 0).is_err() {
        pm::exit(98);
    }
    match how {
        Crash::Null => {
            // SAFETY: the process is meant to fault here (each arm); nothing
            // runs after the faulting instruction in this process.
            unsafe { asm!("mov rax, [0]", out("rax") _, options(nostack)) }
        }
        // SAFETY: as above: a write to this program's read-only text.
        Crash::WriteText => unsafe {
            asm!("lea rax, [rip]", "mov byte ptr [rax], 0", out("rax") _, options(nostack))
        },
        Crash::ExecStack => {
            let code = [0xc3u8; 16]; // `ret`, on the non-executable stack
                                     // SAFETY: as above: the call faults on fetching from the stack.
            unsafe { asm!("call {0}", in(reg) code.as_ptr(), clobber_abi("C")) }
        }
        // SAFETY: as above: a divide by zero.
        Crash::DivZero => unsafe {
            asm!("xor ecx, ecx", "xor edx, edx", "mov eax, 1", "div ecx", out("eax") _, out("ecx") _, out("edx") _, options(nostack))
        },
        // SAFETY: as above: an invalid opcode.
        Crash::Ud2 => unsafe { asm!("ud2", options(nostack)) },
    }
    pm::exit(99)
}

/// Fault isolation: children that dereference NULL, write their text,
/// execute their stack, divide by zero and run ud2 are each killed whole
/// (a second thread of theirs too; procmgr logs one diagnostic line each,
/// which the smoke boots check); the parent's wait sees the vector;
/// procmgr keeps serving.
pub fn faulting_children_are_killed_and_reported() -> TestResult {
    attached()?;
    let cases = [
        (Crash::Null, 14u8, "NULL dereference"),
        (Crash::WriteText, 14, "write to text"),
        (Crash::ExecStack, 14, "execute the stack"),
        (Crash::DivZero, 0, "divide by zero"),
        (Crash::Ud2, 6, "ud2"),
    ];
    for (how, vector, what) in cases {
        let pid = fork_child(|| crash(how))?;
        let st = wait_pid(pid)?;
        if st != Ended::Faulted(vector) {
            note!("{what}: the child ended with {st:?}, expected Faulted({vector})");
            return Err("a faulting child's status was wrong");
        }
        ok(pm::getpid(), "procmgr serves after a fault")?;
    }
    Ok(())
}

/// Hostile requests: waitpid of a non-child, of a bogus pid, of init and of
/// itself; kill of init, of a sibling and of the parent; all refused, and
/// nothing is left behind.
pub fn hostile_waits_and_kills_are_refused() -> TestResult {
    attached()?;
    let me = ok(pm::getpid(), "getpid")?;
    for (pid, what) in [
        (1, "waitpid(1)"),
        (99_999, "waitpid(bogus)"),
        (me, "waitpid(self)"),
    ] {
        crate::util::want(pm::wait(Some(pid), Some(0)), Error::NotFound, what)?;
    }
    crate::util::want(pm::kill(1), Error::PermissionDenied, "kill(init)")?;
    crate::util::want(pm::kill(me), Error::PermissionDenied, "kill(self)")?;
    crate::util::want(pm::kill(99_999), Error::NotFound, "kill(bogus)")?;
    let sh = Shared::new()?;
    // A sibling that waits to be killed.
    let sibling = fork_child(|| {
        sys::sleep_ns(20_000_000_000);
        1
    })?;
    sh.slot(0).store(u64::from(sibling), Ordering::SeqCst);
    let prober = fork_child(|| {
        let s = sh.slot(0).load(Ordering::SeqCst) as u32;
        let mut bad = 0;
        if pm::kill(s) != Err(Error::PermissionDenied) {
            bad |= 1;
        }
        if pm::wait(Some(s), Some(0)).map(|_| ()) != Err(Error::NotFound) {
            bad |= 2;
        }
        let parent = pm::getppid().unwrap_or(0);
        if pm::kill(parent) != Err(Error::PermissionDenied) {
            bad |= 4;
        }
        bad
    })?;
    expect(
        wait_pid(prober)?,
        Ended::Exited(0),
        "the sibling's refusals (bit mask)",
    )?;
    ok(pm::kill(sibling), "kill of our own child")?;
    expect(
        wait_pid(sibling)?,
        Ended::Killed,
        "the killed child's status",
    )?;
    expect(children_of(me)?, (0, 0), "children and zombies left")
}

/// An orphan is re-parented to init: a grandchild whose parent exited
/// reports getppid() == 1 (through the shared page), and is reaped by
/// procmgr for init.
pub fn orphan_is_reparented_to_init() -> TestResult {
    attached()?;
    let sh = Shared::new()?;
    let mid = fork_child(|| {
        match fork_with(|| {
            // Wait (bounded) until our parent is gone.
            let t0 = sys::clock_ns();
            let mut pp = pm::getppid().unwrap_or(0);
            while pp != 1 && sys::clock_ns() - t0 < 5_000_000_000 {
                sys::sleep_ns(1_000_000);
                pp = pm::getppid().unwrap_or(0);
            }
            sh.slot(1)
                .store(u64::from(pm::getpid().unwrap_or(0)), Ordering::SeqCst);
            sh.slot(0).store(u64::from(pp) | 1 << 32, Ordering::SeqCst);
            0
        }) {
            Ok(_) => 0,
            Err(_) => 1,
        }
    })?;
    expect(wait_pid(mid)?, Ended::Exited(0), "the middle process")?;
    let t0 = sys::clock_ns();
    while sh.slot(0).load(Ordering::SeqCst) == 0 && sys::clock_ns() - t0 < 10_000_000_000 {
        sys::sleep_ns(1_000_000);
    }
    expect(
        sh.slot(0).load(Ordering::SeqCst),
        1 | 1 << 32,
        "the orphan's getppid",
    )?;
    // init's zombies are reaped by procmgr: the orphan disappears.
    let orphan = sh.slot(1).load(Ordering::SeqCst) as u32;
    let t0 = sys::clock_ns();
    loop {
        let mut found = false;
        let mut i = 0;
        while let Some(p) = ok(pm::list(i), "list")? {
            found |= p.pid == orphan;
            i = p.index + 1;
        }
        if !found {
            return Ok(());
        }
        if sys::clock_ns() - t0 > 10_000_000_000 {
            return Err("the orphan was never reaped");
        }
        sys::sleep_ns(2_000_000);
    }
}

/// A fork storm to the limit: forks of children that wait to be killed
/// until one is refused with an error (`NoMemory`: procmgr's table, or the
/// kernel's per-process child limit); then every child is killed and
/// reaped, and procmgr still serves.
pub fn fork_storm_to_the_limit_is_an_error() -> TestResult {
    attached()?;
    let me = ok(pm::getpid(), "getpid")?;
    let mut pids = [0u32; 200];
    let mut n = 0;
    let refused = loop {
        if n == pids.len() {
            break None;
        }
        match fork_with(|| {
            sys::sleep_ns(30_000_000_000);
            1
        }) {
            Ok(pid) => {
                pids[n] = pid;
                n += 1;
            }
            Err(e) => break Some(e),
        }
    };
    note!("{n} children before the refusal ({refused:?})");
    for &p in &pids[..n] {
        let _ = pm::kill(p);
    }
    for &p in &pids[..n] {
        expect(wait_pid(p)?, Ended::Killed, "a storm child's status")?;
    }
    expect(refused, Some(Error::NoMemory), "the refusal")?;
    expect(children_of(me)?, (0, 0), "children and zombies left")?;
    ok(pm::getpid(), "procmgr serves after the storm").map(|_| ())
}

// --- shell2 (issue 11: spawn/exec through the loader) ---

/// `spawn("hello", argv, envp)` through procmgr (which loads it through the
/// loader): hello checks its SysV stack, prints `Hello from userland!`
/// through the console (found with procmgr's `Lookup`; it exits -8 if it
/// could not) and exits with the hash of its argv and envp, which
/// `waitpid` must return under the spawned PID. An unknown module is
/// `NotFound` and leaves no child.
pub fn spawn_hello_through_the_loader() -> TestResult {
    attached()?;
    let argv = b"hello\0spawned\0\0by procmgr\0";
    let envp = b"MICA=1\0";
    let pid = pm::spawn("hello", argv, envp).map_err(|e| {
        note!("spawn hello: {e}");
        "spawn failed"
    })?;
    expect(
        wait_pid(pid)?,
        Ended::Exited(crate::loader::args_hash(argv, envp)),
        "spawned hello's status",
    )?;
    expect(
        pm::spawn("no-such-module", b"x\0", b""),
        Err(Error::NotFound),
        "spawn of an unknown module",
    )?;
    expect(
        pm::wait(None, Some(WAIT_US)).map(|_| ()),
        Err(Error::NotFound),
        "children left after the spawns",
    )
}

/// A forked child `exec`s hello with argv: the parent's `waitpid` on the
/// child's PID sees hello's status (so the PID stayed). A failed exec
/// (unknown module) returns `NotFound` to the caller, which goes on.
pub fn fork_exec_hello_keeps_the_pid() -> TestResult {
    attached()?;
    const ARGV: &[u8] = b"hello\0exec'd\0";
    const ENVP: &[u8] = b"E=2\0";
    let pid = fork_child(|| {
        if pm::exec("no-such-module", b"x\0", b"") != Error::NotFound {
            return 90;
        }
        let _ = pm::exec("hello", ARGV, ENVP);
        91
    })?;
    expect(
        wait_pid(pid)?,
        Ended::Exited(crate::loader::args_hash(ARGV, ENVP)),
        "exec'd hello's status under the child's PID",
    )
}
