//! break24s (session 24): attacks on switch2's lazy switch, which skips
//! the I/O-bitmap compare when neither thread's summary byte has
//! `fpu::IO` ("a bitmap live on a CPU implies the current thread has the
//! IO bit"). Three paths make a bitmap live: `IoPerm::enable` (the
//! caller: break22s covers its mark), the switch that loads one
//! (`sched::switch_prepare`) and the #GP retry (`iopb::refresh`). Each
//! of the last two must mark the thread it loads the bitmap for, or that
//! thread hands the CPU to a thread of another process with its bitmap
//! still live and no bitmap work done.
//!
//! [`bitmap_is_never_left_live_for_another_process`]: a child process P
//! with two threads pinned to CPU 0, E (enables one port, then exits)
//! and B (an echo server, spawned before P has a bitmap, so nothing marks
//! it until it runs with one); a child process Q (no bitmap) whose one
//! thread calls B once and then reads the port, which must fault.
//! - round "refresh": B reads the port right after each receive (Q's
//!   hand-off to B does no bitmap work, so the read faults and
//!   `refresh` loads P's bitmap), then replies: the hand-off back to Q
//!   must switch the bitmap off (fails without `refresh`'s mark);
//! - round "switch": B sleeps first (idle to B, a switch with work,
//!   loads P's bitmap), then reads and replies (fails without the
//!   switch's `note_io`).
//!
//! All the threads are asm (no FPU, no bases), so every summary byte is
//! 0 but for the IO bit under test.

use crate::note;
use crate::util::{self, check, ok, TestResult};
use abi::{rights, Sysnum};
use core::arch::global_asm;
use libipc::hw::{self, IoPorts};
use libipc::ipc;
use libipc::sys;

/// COM1's interrupt-enable register (reading it has no effect); only P
/// is granted it.
const PORT: u16 = 0x3f9;
const IOPORTS_ROOT: IoPorts = IoPorts(abi::boot_handles::tests::IOPORTS);
/// RDI of Q's thread (the victim); P's main thread gets a round.
const VICTIM: u64 = 0;
const ROUND_REFRESH: u64 = 1;
const ROUND_SWITCH: u64 = 2;

// One text, three roles (RDI at entry):
// - VICTIM (Q): pins itself to CPU 0, calls its first handle (an
//   endpoint; retried after a yield while it is not there yet), then
//   reads PORT and exits 0; exit 2 when the call fails.
// - a round (P's main thread, E): pins itself to CPU 0, spawns B (the
//   round's entry; B never touches its stack; its thread handle is P's
//   first), waits for its third handle (the port grant) and enables it
//   (exit 3 if that fails, 4 if the spawn failed), then ends its thread.
// - B: pins itself to CPU 0, receives on its second handle (the
//   endpoint; retried while it is not there yet), then for each message
//   reads PORT (after a 1 ms
//   sleep in the round "switch") and answers with `reply_recv`.
// Position-independent, no stack.
global_asm!(
    ".pushsection .rodata.mica_tests_break24s_child, \"a\"",
    "mica_tests_break24s_child:",
    "mov rbx, rdi",              // the role (kept: no output of these syscalls)
    "xor edi, edi",
    "mov eax, {affinity}",       // CPU 0
    "syscall",
    "test rbx, rbx",
    "jnz 20f",
    // Q's thread.
    "10:",
    "mov edi, {h}",
    "xor esi, esi",              // label 0, no transfers
    "xor r14d, r14d",            // no buffer
    "xor r15d, r15d",            // no timeout
    "mov eax, {call}",
    "syscall",
    "test rax, rax",
    "jz 11f",
    "cmp rax, -{bad_handle}",
    "jne 12f",
    "mov eax, {yield_}",
    "syscall",
    "jmp 10b",
    "11:",
    "mov dx, {port}",
    "in al, dx",                 // must fault: Q has no bitmap
    "xor edi, edi",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "12:",
    "mov edi, 2",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    // P's main thread E.
    "20:",
    "lea rdi, [rip + 30f]",      // B, round "refresh"
    "cmp rbx, {round_switch}",
    "jne 21f",
    "lea rdi, [rip + 40f]",      // B, round "switch"
    "21:",
    "lea rsi, [rip + mica_tests_break24s_child]",
    "and rsi, -16",              // a stack top B never uses
    "xor edx, edx",
    "mov eax, {spawn}",
    "syscall",
    "test rax, rax",
    "js 29f",
    "22:",
    "mov edi, {h} + 2",          // the grant
    "mov eax, {enable}",
    "syscall",
    "cmp rax, -{bad_handle}",    // not given yet?
    "jne 23f",
    "mov eax, {yield_}",
    "syscall",
    "jmp 22b",
    "23:",
    "test rax, rax",
    "jnz 28f",
    "xor edi, edi",
    "mov eax, {texit}",
    "syscall",
    "ud2",
    "28:",
    "mov edi, 3",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "29:",
    "mov edi, 4",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    // B, round "refresh": read, then reply.
    "30:",
    "xor edi, edi",
    "mov eax, {affinity}",
    "syscall",
    "31:",
    "mov edi, {h} + 1",
    "xor esi, esi",
    "xor r14d, r14d",
    "xor r15d, r15d",
    "mov eax, {recv}",
    "syscall",
    "test rax, rax",
    "jz 32f",
    "mov eax, {yield_}",
    "syscall",
    "jmp 31b",
    "32:",
    "mov dx, {port}",            // words[0] clobbered
    "in al, dx",                 // faults once: `refresh` loads P's bitmap
    "mov edi, {h} + 1",
    "mov eax, {reply_recv}",
    "syscall",
    "jmp 32b",
    // B, round "switch": sleep (back through idle: a switch with work),
    // read, reply.
    "40:",
    "xor edi, edi",
    "mov eax, {affinity}",
    "syscall",
    "41:",
    "mov edi, {h} + 1",
    "xor esi, esi",
    "xor r14d, r14d",
    "xor r15d, r15d",
    "mov eax, {recv}",
    "syscall",
    "test rax, rax",
    "jz 42f",
    "mov eax, {yield_}",
    "syscall",
    "jmp 41b",
    "42:",
    "mov edi, 1000000",          // 1 ms (RSI, the label, is kept)
    "mov eax, {sleep}",
    "syscall",
    "mov dx, {port}",
    "in al, dx",
    "mov edi, {h} + 1",
    "mov eax, {reply_recv}",
    "syscall",
    "jmp 42b",
    "mica_tests_break24s_child_end:",
    ".popsection",
    affinity = const Sysnum::SetAffinity as u64,
    call = const Sysnum::IpcCall as u64,
    recv = const Sysnum::IpcRecv as u64,
    reply_recv = const Sysnum::IpcReplyRecv as u64,
    yield_ = const Sysnum::Yield as u64,
    sleep = const Sysnum::SleepNs as u64,
    spawn = const Sysnum::ThreadSpawn as u64,
    enable = const Sysnum::IoportEnable as u64,
    texit = const Sysnum::ThreadExit as u64,
    pexit = const Sysnum::ProcessExit as u64,
    bad_handle = const abi::Error::BadHandle as u64,
    round_switch = const ROUND_SWITCH,
    port = const PORT,
    h = const ipc::FIRST_HANDLE,
);

extern "C" {
    static mica_tests_break24s_child: u8;
    static mica_tests_break24s_child_end: u8;
}

/// One round (see the module docs): P with `round`, then Q.
fn round(round: u64, name: &str) -> TestResult {
    let text = crate::lifecycle::code(
        core::ptr::addr_of!(mica_tests_break24s_child),
        core::ptr::addr_of!(mica_tests_break24s_child_end),
    );
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let threads0 = crate::lifecycle::info()?.threads;
    let p = util::spawn_code(text, round)?;
    let r = (|| {
        // E spawned B (its handle is P's first), then the endpoint. The
        // machine's thread count shows B (E and B: two more): a slow vCPU
        // once had not spawned B after a fixed 10 ms (q35, -smp 4).
        let mut waited = 0;
        while crate::lifecycle::info()?.threads < threads0 + 2 && waited < 2000 {
            sys::sleep_ns(1_000_000);
            waited += 1;
        }
        sys::sleep_ns(10_000_000);
        let given = ipc::handle_give(p, ep.0, rights::RECV);
        check(
            ok(given, "handle_give")? == ipc::FIRST_HANDLE + 1,
            "the endpoint is not P's second handle",
        )?;
        // B waits in its receive, spawned while P has no bitmap.
        sys::sleep_ns(10_000_000);
        let grant = ok(hw::ioport_grant(IOPORTS_ROOT, PORT as u64, 1), "grant")?;
        let given = ipc::handle_give(p, grant.0, rights::IO);
        let _ = ipc::handle_close(grant.0);
        check(
            ok(given, "handle_give")? == ipc::FIRST_HANDLE + 2,
            "the grant is not P's third handle",
        )?;
        // E enables the port and ends.
        sys::sleep_ns(10_000_000);
        let q = util::spawn_server(text, VICTIM, ep, rights::SEND)?;
        let st = util::wait_status(q)?;
        match st {
            abi::status::Status::Exited(0) => {
                note!("round {name}: Q read a port only P has");
                Err("a thread ran with another process's I/O bitmap live")
            }
            abi::status::Status::Exited(2) => {
                note!("round {name}: Q's call failed");
                Err("the call to P's echo failed")
            }
            other => util::expect_fault(other, &[13]),
        }
    })();
    let _ = sys::process_kill(p);
    let pst = util::wait_status(p);
    ok(ipc::handle_close(ep.0), "close")?;
    r?;
    match pst? {
        abi::status::Status::Faulted(v) => {
            note!("round {name}: P faulted with vector {v}");
            Err("P's echo faulted on its own port")
        }
        _ => Ok(()),
    }
}

/// Case: see the module docs.
pub fn bitmap_is_never_left_live_for_another_process() -> TestResult {
    check(util::pin0(), "set_affinity(0)")?;
    round(ROUND_REFRESH, "refresh")?;
    round(ROUND_SWITCH, "switch")
}
