//! IPC between two processes: the echo child (another address space)
//! gets an endpoint through `handle_give`; labels, words and buffers up to
//! 64 KiB cross to it and back.

use super::buffers::{cli_buf, raw};
use super::GUARD_US;
use crate::note;
use crate::util::{check, ok, want, TestResult};
use abi::{Error, Sysnum};
use libipc::ipc::{self, call, endpoint_create, handle_close, rights, Endpoint, IpcRegs, Message};
use libipc::sys;

/// Where the echo child maps its 64 KiB buffer.
const ECHO_BUF: u64 = 0x5556_0000_0000;

// The echo child: another process, so messages cross address spaces. It
// waits until its parent gives it an endpoint (its first handle), then
// answers every call with the same label, words and buffer bytes. Label
// 0xdead: it replies and exits 0 (the first 8 bytes of every buffer it
// gets it inverts before echoing); label 0xbeef: it exits 5 without replying
// (its caller must get PeerDied). A failing receive exits 100 + the code.
core::arch::global_asm!(
    ".pushsection .rodata.mica_tests_ipc_echo, \"a\"",
    "mica_tests_ipc_echo:",
    "mov rdi, {buf}",            // rdi: the buffer
    "mov esi, 65536",
    "mov edx, {write}",
    "mov eax, {map_anon}",
    "syscall",
    "1:",
    "mov edi, {h}",              // rdi: the endpoint the parent gives us
    "xor esi, esi",
    "mov r14, {buf}",            // r14: the buffer
    "mov r15d, 65536",           // r15: capacity 64 KiB, no timeout
    "mov eax, {recv}",
    "syscall",
    "test rax, rax",
    "jz 2f",
    "mov eax, {yield_}",         // not given yet (BadHandle): wait
    "syscall",
    "jmp 1b",
    "2:",
    "cmp esi, 0xdead",
    "je 3f",
    "cmp esi, 0xbeef",
    "je 4f",
    "mov rax, {buf}",            // invert the first 8 bytes: proof they
    "not qword ptr [rax]",       // reached this address space
    "mov edi, {h}",              // echo: rsi (label, length) and words as received
    "mov r14, {buf}",
    "mov r15d, 65536",
    "xor ebx, ebx",              // rbx, rbp: no handles sent back
    "xor ebp, ebp",
    "mov eax, {reply_recv}",
    "syscall",
    "test rax, rax",
    "jz 2b",
    "neg rax",
    "lea rdi, [rax + 100]",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "3:",
    "mov eax, {reply}",
    "syscall",
    "xor edi, edi",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "4:",
    "mov edi, 5",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "mica_tests_ipc_echo_end:",
    ".popsection",
    pexit = const Sysnum::ProcessExit as u64,
    yield_ = const Sysnum::Yield as u64,
    map_anon = const Sysnum::MapAnon as u64,
    recv = const Sysnum::IpcRecv as u64,
    reply = const Sysnum::IpcReply as u64,
    reply_recv = const Sysnum::IpcReplyRecv as u64,
    write = const abi::prot::WRITE,
    buf = const ECHO_BUF,
    h = const ipc::FIRST_HANDLE,
);

extern "C" {
    static mica_tests_ipc_echo: u8;
    static mica_tests_ipc_echo_end: u8;
}

/// Starts the echo child and gives it `ep` (receive right only); returns
/// its pid.
fn start_echo(ep: Endpoint) -> Result<sys::ProcessHandle, &'static str> {
    let text = crate::lifecycle::code(
        core::ptr::addr_of!(mica_tests_ipc_echo),
        core::ptr::addr_of!(mica_tests_ipc_echo_end),
    );
    crate::util::spawn_server(text, 0, ep, rights::RECV)
}

/// Between two processes: the label, the words and buffers up to 64 KiB go
/// to the other address space and back; a server process that exits while
/// a caller waits fails the call with PeerDied; handle_give refuses what
/// is not the caller's child.
pub fn calls_between_processes() -> TestResult {
    let ep = ok(endpoint_create(), "endpoint_create")?;
    want(
        ipc::handle_give(sys::ProcessHandle::from_raw(1), ep.0, rights::SEND),
        Error::BadHandle,
        "handle_give through a number that is no process handle",
    )?;
    let pid = start_echo(ep)?;
    let mut fail = None;
    for (len, seed) in [(0usize, 0u8), (4096, 13), (65536, 17)] {
        let buf = cli_buf();
        for (i, b) in buf[..len].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(7).wrapping_add(seed);
        }
        let words = [1, 2, u64::MAX, 4, 1 << 40, seed as u64];
        let mut r = IpcRegs {
            rdi: ep.0 as u64,
            rsi: ipc::info(0x42, 0, 0, len as u64, true),
            w: words,
            r14: buf.as_mut_ptr() as u64,
            r15: ipc::spec(65536, 3_000_000),
            ..IpcRegs::default()
        };
        let res = raw(Sysnum::IpcCall, &mut r);
        // The child inverted the first 8 bytes it got.
        let intact = (0..len).all(|i| {
            let sent = (i as u8).wrapping_mul(7).wrapping_add(seed);
            buf[i] == if i < 8 { !sent } else { sent }
        });
        if res.is_err()
            || r.w != words
            || r.rsi as u32 != 0x42
            || ipc::info_len(r.rsi) != len
            || !intact
        {
            note!(
                "{len} bytes: {res:?}, label {:#x}, len {}, intact {intact}",
                r.rsi as u32,
                ipc::info_len(r.rsi)
            );
            fail = Some("a message did not cross address spaces intact");
            break;
        }
    }
    // The server process exits holding our call.
    if fail.is_none() {
        let r = call(
            ep,
            &Message {
                label: 0xbeef,
                words: [0; 6],
            },
            GUARD_US,
        );
        if r != Err(Error::PeerDied) {
            note!("call to a server process that exits: {r:?}");
            fail = Some("a caller was not told its server process died");
        }
    }
    let st = ok(sys::process_wait(pid), "process_wait")?;
    let _ = handle_close(ep.0);
    if let Some(f) = fail {
        return Err(f);
    }
    check(
        abi::status::decode(st) == abi::status::Status::Exited(5),
        "the echo child did not end as told",
    )
}
