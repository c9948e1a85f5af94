//! A process killed while its threads wait in every kind of IPC wait:
//! it ends, and everything it held comes back.

use crate::note;
use crate::util::{check, ok, TestResult};
use abi::Sysnum;
use libipc::sys;

/// The page the IPC child's threads get as a (never used) stack.
const CHILD_STACK: u64 = 0x5555_0000_0000;

// The IPC child: position-independent, stackless. It creates two endpoints
// and a notification, then starts four threads that block in every IPC
// wait there is: a server that took a call and waits in its next receive
// (holding the reply), the caller waiting for that reply, a receiver queued
// on the second endpoint and a notification waiter. After 20 ms it calls
// process_exit(7), which must end all of them (no hang) and free
// everything (the parent compares counts).
core::arch::global_asm!(
    ".pushsection .rodata.mica_tests_ipc_child, \"a\"",
    "mica_tests_ipc_child:",
    "mov rdi, {stack}",          // rdi: the threads' stack page
    "mov esi, 4096",
    "mov edx, {write}",
    "mov eax, {map_anon}",
    "syscall",
    "mov eax, {ep_create}",
    "syscall",
    "mov rbx, rax",              // rbx: endpoint 1
    "mov eax, {ep_create}",
    "syscall",
    "mov r12, rax",              // r12: endpoint 2
    "mov eax, {ntf_create}",
    "syscall",
    "mov r13, rax",              // r13: the notification
    "lea rdi, [rip + 4f]",       // the server, on endpoint 1
    "mov rsi, {stack_top}",
    "mov rdx, rbx",
    "mov eax, {spawn}",
    "syscall",
    "mov edi, 5000000",          // 5 ms: the server is in its receive
    "mov eax, {sleep}",
    "syscall",
    "lea rdi, [rip + 5f]",       // the caller, on endpoint 1
    "mov rsi, {stack_top}",
    "mov rdx, rbx",
    "mov eax, {spawn}",
    "syscall",
    "lea rdi, [rip + 6f]",       // a receiver on endpoint 2
    "mov rsi, {stack_top}",
    "mov rdx, r12",
    "mov eax, {spawn}",
    "syscall",
    "lea rdi, [rip + 7f]",       // a notification waiter
    "mov rsi, {stack_top}",
    "mov rdx, r13",
    "mov eax, {spawn}",
    "syscall",
    "mov edi, 20000000",         // 20 ms: everyone blocks
    "mov eax, {sleep}",
    "syscall",
    "mov edi, 7",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "4:",                        // server: rdi = endpoint; receive for ever
    "mov rbx, rdi",
    "41:",
    "mov rdi, rbx",
    "xor esi, esi",
    "xor r15d, r15d",
    "mov eax, {recv}",
    "syscall",
    "jmp 41b",
    "5:",                        // caller: rdi = endpoint
    "xor esi, esi",
    "mov eax, {call}",
    "syscall",
    "ud2",
    "6:",                        // receiver: rdi = endpoint
    "xor esi, esi",
    "mov eax, {recv}",
    "syscall",
    "ud2",
    "7:",                        // waiter: rdi = notification
    "xor esi, esi",
    "mov eax, {wait}",
    "syscall",
    "ud2",
    "mica_tests_ipc_child_end:",
    ".popsection",
    pexit = const Sysnum::ProcessExit as u64,
    sleep = const Sysnum::SleepNs as u64,
    spawn = const Sysnum::ThreadSpawn as u64,
    map_anon = const Sysnum::MapAnon as u64,
    ep_create = const Sysnum::EndpointCreate as u64,
    ntf_create = const Sysnum::NotificationCreate as u64,
    recv = const Sysnum::IpcRecv as u64,
    call = const Sysnum::IpcCall as u64,
    wait = const Sysnum::NtfWait as u64,
    write = const abi::prot::WRITE,
    stack = const CHILD_STACK,
    stack_top = const CHILD_STACK + 4096,
);

extern "C" {
    static mica_tests_ipc_child: u8;
    static mica_tests_ipc_child_end: u8;
}

/// A process whose threads are blocked in every kind of IPC wait (a call
/// waiting for its reply, a server holding that reply in its next receive,
/// a queued receiver, a notification waiter) is killed by process_exit:
/// it ends, no hang, and its threads, objects and kernel heap come back.
pub fn process_killed_in_every_ipc_wait_ends_cleanly() -> TestResult {
    // A thread of an earlier case may still await its reaping (on the next
    // switch of its CPU): let it go first, and compare with "at most".
    sys::sleep_ns(10_000_000);
    // Twice first: high-water marks (run queues, the sleep list, process
    // table nodes) settle. Then 8 runs may not grow the heap by more than
    // one such step (2 KiB); leaking the child's three objects alone would
    // be about 3 KiB.
    run_ipc_child()?;
    run_ipc_child()?;
    sys::sleep_ns(10_000_000);
    let before = ok(sys::sysinfo(), "sysinfo")?;
    for _ in 0..8 {
        run_ipc_child()?;
    }
    sys::sleep_ns(10_000_000);
    let after = ok(sys::sysinfo(), "sysinfo")?;
    if after.threads > before.threads || after.processes > before.processes {
        note!(
            "threads {} -> {}, processes {} -> {}",
            before.threads,
            after.threads,
            before.processes,
            after.processes
        );
        return Err("threads or processes of the killed child are left");
    }
    if after.heap_used_bytes > before.heap_used_bytes + 2048 {
        note!(
            "kernel heap {} -> {} bytes",
            before.heap_used_bytes,
            after.heap_used_bytes
        );
        return Err("kernel heap not given back after the child ended");
    }
    Ok(())
}

/// Runs the IPC child once; it must end with its own exit status.
fn run_ipc_child() -> TestResult {
    let text = crate::lifecycle::code(
        core::ptr::addr_of!(mica_tests_ipc_child),
        core::ptr::addr_of!(mica_tests_ipc_child_end),
    );
    let pid = crate::util::spawn_code(text, 0)?;
    let st = ok(sys::process_wait(pid), "process_wait")?;
    check(
        abi::status::decode(st) == abi::status::Status::Exited(7),
        "the child did not end with its process_exit status",
    )?;
    Ok(())
}
