//! Thread and process handles (issue 10 item 1): `thread_spawn` and
//! `process_spawn` give the creator a handle; join, wait, kill and
//! `handle_give` take one. These cases check the authority rules from ring 3:
//! the right each call needs, stale and foreign numbers, the object kind,
//! reduced duplicates, what closing the last handle frees, and that a full
//! handle table makes a spawn fail with nothing left running.

use crate::lifecycle::{code, settle, spawn_code};
use crate::note;
use crate::util::{self, ok, want, TestResult};
use abi::rights::{DUPLICATE, KILL, TRANSFER, WAIT};
use abi::status::{self, Status};
use abi::{Error, Sysnum};
use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, Ordering};
use libipc::ipc;
use libipc::sys::{self, ProcessHandle, ThreadHandle};

global_asm!(
    ".pushsection .rodata.mica_handles_children, \"a\"",
    // prober: RDI = a handle number of its parent's. Tries it with
    // thread_join, process_wait, thread_kill and process_kill and exits with
    // the four error codes (0 for a success), one per byte.
    "mica_handles_prober:",
    "mov r12, rdi",                // r12: the number to try
    "xor r13d, r13d",              // r13: the exit code being built
    "mov rdi, r12",
    "mov eax, {join}",
    "syscall",
    "neg rax",                     // rax: the error code (0: success)
    "movzx eax, al",
    "or r13, rax",                 // byte 0: thread_join
    "mov rdi, r12",
    "mov eax, {wait}",
    "syscall",
    "neg rax",
    "movzx eax, al",
    "shl eax, 8",
    "or r13, rax",                 // byte 1: process_wait
    "mov rdi, r12",
    "mov eax, {tkill}",
    "syscall",
    "neg rax",
    "movzx eax, al",
    "shl eax, 16",
    "or r13, rax",                 // byte 2: thread_kill
    "mov rdi, r12",
    "mov eax, {pkill}",
    "syscall",
    "neg rax",
    "movzx eax, al",
    "shl eax, 24",
    "or r13, rax",                 // byte 3: process_kill
    "mov rdi, r13",                // rdi: the exit code
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "mica_handles_prober_end:",
    // sleeper: sleeps for its argument (ns), then process_exit(0).
    "mica_handles_sleeper:",
    "mov eax, {sleep}",            // rdi: the spawn argument = ns to sleep
    "syscall",
    "xor edi, edi",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "mica_handles_sleeper_end:",
    // exit_arg: process_exit(its argument).
    "mica_handles_exit_arg:",
    "mov eax, {pexit}",            // rdi: the spawn argument = the code
    "syscall",
    "ud2",
    "mica_handles_exit_arg_end:",
    ".popsection",
    // quick: a thread entry that touches no stack and exits with 7 (for
    // threads nobody joins, which may share one stack).
    ".pushsection .text.mica_handles_quick, \"ax\"",
    "mica_handles_quick:",
    "mov edi, 7",
    "mov eax, {texit}",
    "syscall",
    "ud2",
    // dozer: sleeps 1 ms 2000 times (2 s, no stack used), then exits 0.
    "mica_handles_dozer:",
    "mov ebx, 2000",               // rbx: rounds left (syscalls preserve it)
    "1:",
    "mov edi, 1000000",            // rdi: 1 ms
    "mov eax, {sleep}",
    "syscall",
    "dec ebx",
    "jnz 1b",
    "xor edi, edi",
    "mov eax, {texit}",
    "syscall",
    "ud2",
    ".popsection",
    texit = const Sysnum::ThreadExit as u64,
    join = const Sysnum::ThreadJoin as u64,
    wait = const Sysnum::ProcessWait as u64,
    tkill = const Sysnum::ThreadKill as u64,
    pkill = const Sysnum::ProcessKill as u64,
    pexit = const Sysnum::ProcessExit as u64,
    sleep = const Sysnum::SleepNs as u64,
);

extern "C" {
    static mica_handles_prober: u8;
    static mica_handles_prober_end: u8;
    static mica_handles_sleeper: u8;
    static mica_handles_sleeper_end: u8;
    static mica_handles_quick: u8;
    static mica_handles_dozer: u8;
    static mica_handles_exit_arg: u8;
    static mica_handles_exit_arg_end: u8;
}

/// A page the [`mica_handles_quick`] threads are given as their (unused)
/// stack.
const QUICK_STACK: u64 = 0x5e00_0000_0000;

/// Starts a child that sleeps `ns` and exits 0.
fn sleeper(ns: u64) -> Result<ProcessHandle, &'static str> {
    let text = code(
        core::ptr::addr_of!(mica_handles_sleeper),
        core::ptr::addr_of!(mica_handles_sleeper_end),
    );
    spawn_code(text, &[], ns)
}

/// Set to let every [`parked`] thread end.
static RELEASE: AtomicBool = AtomicBool::new(false);

/// Waits for [`RELEASE`] (at most 5 s, so a kill that does not land shows
/// as a wrong status rather than a hang), then exits 0.
extern "C" fn parked(_: u64) -> ! {
    let end = sys::clock_ns() + 5_000_000_000;
    while !RELEASE.load(Ordering::SeqCst) && sys::clock_ns() < end {
        sys::sleep_ns(1_000_000);
    }
    sys::thread_exit(0)
}

extern "C" fn exit_7(_: u64) -> ! {
    sys::thread_exit(7)
}

/// Join and wait through the handle the spawn gave: the status comes back,
/// the reap closes that handle (a second try through it is BadHandle), and a
/// duplicate taken before finds the thread or process reaped (NotFound: one
/// reaper).
pub fn join_and_wait_go_through_handles() -> TestResult {
    let t = util::spawn(exit_7, 0)?;
    let h = t.handle();
    let dup = ok(h.dup(WAIT), "dup of a thread handle")?;
    if t.join()? != Status::Exited(7) {
        return Err("join through the spawn's handle did not report Exited(7)");
    }
    want(
        h.join(),
        Error::BadHandle,
        "a second join through the reaped handle",
    )?;
    want(
        dup.join(),
        Error::NotFound,
        "a join through a duplicate after the reap",
    )?;
    ok(dup.close(), "closing the duplicate")?;

    let exit_arg = code(
        core::ptr::addr_of!(mica_handles_exit_arg),
        core::ptr::addr_of!(mica_handles_exit_arg_end),
    );
    let child = spawn_code(exit_arg, &[], 42)?;
    let pdup = ok(child.dup(WAIT), "dup of a process handle")?;
    let st = ok(child.wait(), "process_wait through the handle")?;
    if status::decode(st) != Status::Exited(42) {
        note!("status {:?}", status::decode(st));
        return Err("process_wait through the handle did not report Exited(42)");
    }
    want(
        child.wait(),
        Error::BadHandle,
        "a second wait through the reaped handle",
    )?;
    want(
        pdup.wait(),
        Error::NotFound,
        "a wait through a duplicate after the reap",
    )?;
    ok(pdup.close(), "closing the duplicate")?;
    if child.id() == 0 || h.id() == 0 {
        return Err("the spawns did not report the new ids");
    }
    Ok(())
}

/// A handle without WAIT cannot join or wait, one without KILL cannot kill
/// or give, and a reduced duplicate cannot get a dropped right back.
pub fn task_handles_without_the_right_are_refused() -> TestResult {
    RELEASE.store(false, Ordering::SeqCst);
    let t = util::spawn(parked, 0)?;
    let h = t.handle();
    let r = (|| {
        let no_wait = ok(h.dup(KILL | DUPLICATE), "dup without WAIT")?;
        want(no_wait.join(), Error::PermissionDenied, "join without WAIT")?;
        let no_kill = ok(h.dup(WAIT | DUPLICATE), "dup without KILL")?;
        want(
            no_kill.kill(),
            Error::PermissionDenied,
            "thread_kill without KILL",
        )?;
        want(
            no_kill.dup(WAIT | KILL | DUPLICATE),
            Error::PermissionDenied,
            "a reduced thread handle duplicated back to KILL",
        )?;
        let bare = ok(no_kill.dup(WAIT), "dup without DUPLICATE")?;
        want(
            bare.dup(WAIT),
            Error::PermissionDenied,
            "dup without DUPLICATE",
        )?;
        for x in [no_wait, no_kill, bare] {
            ok(x.close(), "close")?;
        }
        Ok(())
    })();
    RELEASE.store(true, Ordering::SeqCst);
    if t.join()? != Status::Exited(0) {
        return Err("the parked thread was hurt by a refused call");
    }
    r?;

    let child = sleeper(5_000_000_000)?;
    let r = (|| {
        let no_wait = ok(child.dup(KILL | DUPLICATE), "dup without WAIT")?;
        want(
            no_wait.wait(),
            Error::PermissionDenied,
            "process_wait without WAIT",
        )?;
        let no_kill = ok(child.dup(WAIT | DUPLICATE | TRANSFER), "dup without KILL")?;
        want(
            no_kill.kill(),
            Error::PermissionDenied,
            "process_kill without KILL",
        )?;
        let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
        want(
            ipc::handle_give(no_kill, ep.0, abi::rights::SEND),
            Error::PermissionDenied,
            "handle_give without KILL",
        )?;
        let _ = ipc::handle_close(ep.0);
        want(
            no_kill.dup(WAIT | KILL),
            Error::PermissionDenied,
            "a reduced process handle duplicated back to KILL",
        )?;
        ok(no_wait.close(), "close")?;
        ok(no_kill.close(), "close")?;
        Ok(())
    })();
    ok(child.kill(), "process_kill with KILL")?;
    let st = ok(child.wait(), "process_wait")?;
    if status::decode(st) != Status::Exited(-1) {
        note!("status {:?}", status::decode(st));
        return Err("a killed child did not end with Exited(-1)");
    }
    r
}

/// A closed number, and a number whose slot was reused (same slot, newer
/// generation), are BadHandle for join, wait and kill; the new handle in
/// that slot works.
pub fn stale_task_handles_are_bad_handles() -> TestResult {
    RELEASE.store(false, Ordering::SeqCst);
    let t = util::spawn(parked, 0)?;
    let old = t.handle();
    let keep = ok(old.dup(WAIT | KILL | DUPLICATE), "dup")?;
    ok(old.close(), "close")?;
    let r = (|| {
        want(old.join(), Error::BadHandle, "join through a closed number")?;
        want(old.kill(), Error::BadHandle, "kill through a closed number")?;
        // The table reuses the freed slot first.
        let again = ok(keep.dup(WAIT | KILL | DUPLICATE), "dup into the freed slot")?;
        if again.raw() & 0x3ff != old.raw() & 0x3ff || again.raw() == old.raw() {
            note!("old {:#x}, new {:#x}", old.raw(), again.raw());
            return Err("the freed slot was not reused with a new generation");
        }
        want(
            old.join(),
            Error::BadHandle,
            "join through a reused slot's old number",
        )?;
        want(
            old.kill(),
            Error::BadHandle,
            "kill through a reused slot's old number",
        )?;
        ok(again.close(), "close")?;
        Ok(())
    })();
    RELEASE.store(true, Ordering::SeqCst);
    match keep.join().map(status::decode) {
        Ok(Status::Exited(0)) => {}
        other => {
            note!("join: {other:?}");
            return Err("the thread did not end through the kept handle");
        }
    }
    r?;

    let child = sleeper(0)?;
    let keep = ok(child.dup(WAIT | DUPLICATE), "dup")?;
    ok(child.close(), "close")?;
    want(
        child.wait(),
        Error::BadHandle,
        "wait through a closed number",
    )?;
    want(
        child.kill(),
        Error::BadHandle,
        "kill through a closed number",
    )?;
    let again = ok(keep.dup(WAIT), "dup into the freed slot")?;
    want(
        child.wait(),
        Error::BadHandle,
        "wait through a reused slot's old number",
    )?;
    ok(again.close(), "close")?;
    match keep.wait().map(status::decode) {
        Ok(Status::Exited(0)) => Ok(()),
        other => {
            note!("wait: {other:?}");
            Err("the child did not end through the kept handle")
        }
    }
}

/// A child tries its parent's live thread and process handle numbers: in its
/// own table they name nothing (BadHandle for join, wait and both kills),
/// and the parent's thread and sleeper are untouched.
pub fn task_handle_numbers_mean_nothing_in_another_process() -> TestResult {
    RELEASE.store(false, Ordering::SeqCst);
    let t = util::spawn(parked, 0)?;
    let sleeping = sleeper(2_000_000_000)?;
    let prober = code(
        core::ptr::addr_of!(mica_handles_prober),
        core::ptr::addr_of!(mica_handles_prober_end),
    );
    let mut r = Ok(());
    let bad = Error::BadHandle as u64;
    let all_bad = bad | bad << 8 | bad << 16 | bad << 24;
    for number in [t.handle().raw(), sleeping.raw()] {
        let st = spawn_code(prober, &[], number as u64).and_then(|c| ok(c.wait(), "wait"));
        match st.map(status::decode) {
            Ok(Status::Exited(c)) if c as u32 as u64 == all_bad => {}
            other => {
                note!("the child's tries of {number:#x}: {other:x?} (want {all_bad:#x})");
                r = Err("a parent's handle number meant something in its child");
            }
        }
    }
    // Nothing reached the parent's objects.
    RELEASE.store(true, Ordering::SeqCst);
    if t.join()? != Status::Exited(0) {
        return Err("the parent's thread was hurt by its child's tries");
    }
    ok(sleeping.kill(), "process_kill")?;
    if ok(sleeping.wait(), "wait").map(status::decode)? != Status::Exited(-1) {
        return Err("the parent's child ended before its kill");
    }
    r
}

/// Each call refuses a handle of the wrong kind with WrongType (checked
/// before the rights): a thread where a process is expected, a process where
/// a thread is, an endpoint for either, a thread for an IPC call.
pub fn task_handle_of_the_wrong_kind_is_wrong_type() -> TestResult {
    RELEASE.store(false, Ordering::SeqCst);
    let t = util::spawn(parked, 0)?;
    let th = t.handle();
    let child = sleeper(5_000_000_000)?;
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let as_proc = ProcessHandle::from_raw(th.raw());
    let as_thread = ThreadHandle::from_raw(child.raw());
    let r = (|| {
        want(
            as_proc.wait(),
            Error::WrongType,
            "process_wait on a thread handle",
        )?;
        want(
            as_proc.kill(),
            Error::WrongType,
            "process_kill on a thread handle",
        )?;
        want(
            ipc::handle_give(as_proc, ep.0, abi::rights::SEND),
            Error::WrongType,
            "handle_give into a thread handle",
        )?;
        want(
            as_thread.join(),
            Error::WrongType,
            "thread_join on a process handle",
        )?;
        want(
            as_thread.kill(),
            Error::WrongType,
            "thread_kill on a process handle",
        )?;
        want(
            ThreadHandle::from_raw(ep.0).join(),
            Error::WrongType,
            "thread_join on an endpoint",
        )?;
        want(
            ProcessHandle::from_raw(ep.0).wait(),
            Error::WrongType,
            "process_wait on an endpoint",
        )?;
        want(
            ipc::call(ipc::Endpoint(th.raw()), &ipc::Message::default(), Some(0)),
            Error::WrongType,
            "ipc_call on a thread handle",
        )?;
        // Without WAIT, the kind is still reported first.
        let weak = ok(th.dup(DUPLICATE), "dup")?;
        want(
            ProcessHandle::from_raw(weak.raw()).wait(),
            Error::WrongType,
            "process_wait on a rightless thread handle",
        )?;
        ok(weak.close(), "close")
    })();
    let _ = ipc::handle_close(ep.0);
    RELEASE.store(true, Ordering::SeqCst);
    if t.join()? != Status::Exited(0) {
        return Err("the thread was hurt by a refused call");
    }
    let _ = child.kill();
    let _ = child.wait();
    r
}

/// Closing the last handle to a child that ended and was never waited for
/// frees its record (sysinfo's process count goes back); closing
/// handles to ended threads gives their quota back, so spawning and closing
/// more threads than a process may hold never runs out.
pub fn closing_the_last_handle_reclaims_an_exited_child() -> TestResult {
    let (before, _) = settle(50, |_| false)?;
    let child = sleeper(0)?;
    // Ended: its thread is gone, its record is held by our handle.
    let (ended, ok_) = settle(2000, |a| {
        a.threads <= before.threads && a.processes == before.processes + 1
    })?;
    if !ok_ {
        note!(
            "threads {} -> {}, processes {} -> {}",
            before.threads,
            ended.threads,
            before.processes,
            ended.processes
        );
        return Err("an ended, unwaited child was not held by its handle");
    }
    ok(child.close(), "close")?;
    // (Its last thread's count drops a moment before the kernel is done
    // ending it, which holds the record briefly; a leaked record never goes.)
    let (after, _) = settle(1000, |a| a.processes <= before.processes)?;
    if after.processes != before.processes {
        note!("processes {} -> {}", before.processes, after.processes);
        return Err("closing the last handle to an ended child did not free its record");
    }
    // More children than MAX_CHILDREN and threads than the per-process
    // quota, each closed unwaited: a record kept would fill the quota.
    for i in 0..(abi::limits::MAX_CHILDREN as u64 + 8) {
        let c = spawn_retry(|| sleeper(0).map_err(|_| Error::NoMemory))?;
        if let Err(e) = c.close() {
            note!("child {i}: close: {e}");
            return Err("closing a child's handle failed");
        }
    }
    ok(
        sys::map_anon(QUICK_STACK, 4096, abi::prot::WRITE),
        "map_anon",
    )?;
    let quick = core::ptr::addr_of!(mica_handles_quick) as u64;
    for i in 0..(abi::limits::MAX_THREADS_PER_PROCESS as u64 + 8) {
        // SAFETY: the quick code touches no memory and only exits.
        let t = spawn_retry(|| unsafe { sys::thread_spawn_at(quick, QUICK_STACK + 4096, 0) })?;
        if let Err(e) = t.close() {
            note!("thread {i}: close: {e}");
            return Err("closing a thread's handle failed");
        }
    }
    let (end, ok_) = settle(3000, |a| {
        a.processes <= before.processes && a.threads <= before.threads
    })?;
    if !ok_ {
        note!(
            "processes {} -> {}, threads {} -> {}",
            before.processes,
            end.processes,
            before.threads,
            end.threads
        );
        return Err("children or threads whose handles were closed were not freed");
    }
    // SAFETY: every quick thread has ended (the thread count settled).
    let _ = unsafe { sys::unmap(QUICK_STACK, 4096) };
    Ok(())
}

/// Retries a spawn refused for a quota for up to 2 s (earlier spawns may not
/// have ended yet); a quota that never comes back is a leak.
fn spawn_retry<T>(mut f: impl FnMut() -> Result<T, Error>) -> Result<T, &'static str> {
    for _ in 0..2000 {
        match f() {
            Ok(t) => return Ok(t),
            Err(_) => sys::sleep_ns(1_000_000),
        }
    }
    Err("a spawn stayed refused for 2 s: a closed handle's quota did not come back")
}

/// With the handle table full, `thread_spawn` and `process_spawn` fail with
/// NoMemory and leave nothing running (the thread and process counts do
/// not move); after closing one handle both work again.
pub fn full_handle_table_fails_spawns_cleanly() -> TestResult {
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let mut dups = heapless::Vec::<u32, 300>::new();
    let full = loop {
        match ipc::handle_dup(ep.0, abi::rights::SEND, 0) {
            Ok(h) => {
                if dups.push(h).is_err() {
                    break Err("the handle table never filled");
                }
            }
            Err(Error::NoMemory) => break Ok(()),
            Err(e) => {
                note!("dup {}: {e}", dups.len());
                break Err("filling the handle table failed oddly");
            }
        }
    };
    let r = full.and_then(|()| {
        let (before, _) = settle(50, |_| false)?;
        // Targets that would live 2 s if started: a refused spawn that left
        // one running shows in the counts below.
        let dozer = core::ptr::addr_of!(mica_handles_dozer) as u64;
        want(
            // SAFETY: the dozer code touches no memory.
            unsafe { sys::thread_spawn_at(dozer, QUICK_STACK + 4096, 0) },
            Error::NoMemory,
            "thread_spawn with a full handle table",
        )?;
        // The raw error, not util's message.
        let text = code(
            core::ptr::addr_of!(mica_handles_sleeper),
            core::ptr::addr_of!(mica_handles_sleeper_end),
        );
        let mut buf = [0u8; 512];
        let len =
            abi::bootimg::encode_code(0x40_0000, text, &mut buf).map_err(|_| "cannot encode")?;
        want(
            sys::process_spawn(&buf[..len], 2_000_000_000),
            Error::NoMemory,
            "process_spawn with a full handle table",
        )?;
        let (after, ok_) = settle(1000, |a| {
            a.threads <= before.threads && a.processes <= before.processes
        })?;
        if !ok_ {
            note!(
                "threads {} -> {}, processes {} -> {}",
                before.threads,
                after.threads,
                before.processes,
                after.processes
            );
            return Err("a spawn refused for a full table left something running");
        }
        Ok(())
    });
    for h in dups {
        let _ = ipc::handle_close(h);
    }
    r?;
    let st = util::run(exit_7, 0)?;
    let _ = ipc::handle_close(ep.0);
    if st != Status::Exited(7) {
        return Err("thread_spawn did not work again after the table emptied");
    }
    Ok(())
}

/// `thread_kill` and `process_kill` through a handle end their target with
/// Exited(-1), and a kill of something already ended is harmless.
pub fn kill_through_a_handle() -> TestResult {
    RELEASE.store(false, Ordering::SeqCst);
    let t = util::spawn(parked, 0)?;
    ok(t.handle().kill(), "thread_kill")?;
    let st = t.join()?;
    RELEASE.store(true, Ordering::SeqCst);
    if st != Status::Exited(-1) {
        note!("status {st:?}");
        return Err("a killed thread did not end with Exited(-1)");
    }
    let child = sleeper(10_000_000_000)?;
    let t0 = sys::clock_ns();
    ok(child.kill(), "process_kill")?;
    let keep = ok(child.dup(WAIT | KILL), "dup")?;
    let st = ok(child.wait(), "process_wait")?;
    if status::decode(st) != Status::Exited(-1) || sys::clock_ns() - t0 > 5_000_000_000 {
        note!("status {:?}", status::decode(st));
        return Err("a killed child did not end at once with Exited(-1)");
    }
    ok(keep.kill(), "process_kill of an ended process")?;
    ok(keep.close(), "close")
}
