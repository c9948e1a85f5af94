//! break26s: the frameless resume's exit with the result in a register
//! (`syscall_exit_to_user_result`, cut26s) on its TF path. A child process
//! makes a fast `ipc_call` with RFLAGS.TF set; it blocks frameless and
//! the test's server answers it with the fast `reply_recv` (the hand-off
//! into the frameless caller), so the call ends in the resume's exit, which
//! finds TF and must store the result (RAX) into the frame before the
//! `iretq` path reads it. Each instruction after the call runs
//! single-stepped (the test resumes each #DB, as in break24t).

use crate::note;
use crate::util::{self, check, ok, wait_status as wait, TestResult};
use abi::status::Status;
use abi::{rights, Error, Sysnum};
use core::arch::global_asm;
use libipc::hw;
use libipc::ipc::{self, Endpoint, Message, Received};
use libipc::sys;

/// Where the child maps its one-page stack.
const CHILD_STACK: u64 = 0x5557_0000_0000;
/// The child's RFLAGS pattern (CF PF ZF SF OF) with TF.
const FLAGS: u64 = 0x8c5 | 0x100;
/// The child's call's label; [`STOP`] ends the server.
const LABEL: u32 = 0x26_5001;
const STOP: u32 = 0x26_5002;
/// The reply's word 0 (RDX in the child).
const REPLY_W0: u64 = 0x26_5a5a;

// The child: waits for its first handle (the server's endpoint, given
// once the fault endpoint is set: `ntf_signal` on it stops failing with
// BadHandle), maps a stack, pins itself to CPU 0, sets every register to a known value,
// RFLAGS to `FLAGS`, and calls the endpoint with TF set (words 0x1002
// ...). Exit 0 if RAX is 0, RCX the return address, R11 the RFLAGS (TF
// aside) and RDX the reply's word 0, else the number of the first check
// that failed (1 RAX, 2 RCX, 11 R11, 3 RDX).
global_asm!(
    ".pushsection .rodata.mica_tests_break26s_child, \"a\"",
    "mica_tests_break26s_child:",
    "2:",
    "mov edi, {first}",
    "xor esi, esi",
    "mov eax, {signal}",
    "syscall",
    "cmp rax, -{bad_handle}",
    "jne 3f",
    "mov eax, {yield_}",
    "syscall",
    "jmp 2b",
    "3:",
    "mov rdi, {stack}",
    "mov esi, 4096",
    "mov edx, {write}",
    "mov eax, {map_anon}",
    "syscall",
    "xor edi, edi",
    "mov eax, {affinity}",       // set_affinity(0): the server's CPU (the hand-off)
    "syscall",
    "mov rsp, {stack_top}",
    "mov edi, {first}",          // the endpoint
    "mov esi, {label}",          // MsgInfo: the label alone (the fast case)
    "mov rdx, 0x1002",           // words 0..5: rdx r10 r8 r9 r12 r13
    "mov r10, 0x100a",
    "mov r8, 0x1008",
    "mov r9, 0x1009",
    "mov r12, 0x100c",
    "mov r13, 0x100d",
    "xor r14d, r14d",            // no receive buffer
    "xor r15d, r15d",            // capacity 0, no timeout
    "mov rcx, 0x1001",
    "mov rbx, 0x1003",
    "mov rbp, 0x1005",
    "mov r11, 0x100b",
    "push {flags}",
    "mov eax, {call}",
    "popfq",                     // TF := 1 (the trap comes after the next instruction)
    "syscall",                   // ipc_call, entered with TF set: blocks frameless
    "4:",
    "test rax, rax", "jz 40f",
    "mov eax, 1", "jmp 8f",
    "40:",
    "lea rax, [rip + 4b]",
    "cmp rcx, rax", "mov eax, 2", "jne 8f",
    "mov rax, r11",
    "and rax, -0x101",           // R11: the RFLAGS the syscall saw, TF aside
    "cmp rax, {flags_back}", "mov eax, 11", "jne 8f",
    "cmp rdx, {reply_w0}", "mov eax, 3", "jne 8f",
    "xor eax, eax",
    "8:",
    "pushfq",
    "and qword ptr [rsp], -0x101", // TF := 0
    "popfq",
    "mov edi, eax",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "mica_tests_break26s_child_end:",
    ".popsection",
    first = const ipc::FIRST_HANDLE,
    bad_handle = const Error::BadHandle as u64,
    yield_ = const Sysnum::Yield as u64,
    signal = const Sysnum::NtfSignal as u64,
    pexit = const Sysnum::ProcessExit as u64,
    call = const Sysnum::IpcCall as u64,
    map_anon = const Sysnum::MapAnon as u64,
    affinity = const Sysnum::SetAffinity as u64,
    write = const abi::prot::WRITE,
    stack = const CHILD_STACK,
    stack_top = const CHILD_STACK + 4096,
    label = const LABEL,
    reply_w0 = const REPLY_W0,
    flags = const FLAGS,
    flags_back = const (FLAGS & !0x100) | 0x202,
);

extern "C" {
    static mica_tests_break26s_child: u8;
    static mica_tests_break26s_child_end: u8;
}

/// Serves endpoint `arg` on CPU 0 (the child pins itself there too, so
/// the answer is the same-CPU hand-off): answers every call with word 0 [`REPLY_W0`]
/// through the fast `reply_recv` (the hand-off into a frameless caller);
/// exits 0 at [`STOP`] (after a plain reply), 1 on a receive error, 2
/// if it could not pin itself.
extern "C" fn server(arg: u64) -> ! {
    let ep = Endpoint(arg as u32);
    if !util::pin0() {
        sys::thread_exit(2);
    }
    let reply = Message {
        label: 0,
        words: [REPLY_W0, 0, 0, 0, 0, 0],
    };
    let mut got = ipc::recv(ep, None);
    loop {
        let Ok(Received::Msg { msg, .. }) = got else {
            sys::thread_exit(1);
        };
        if msg.label == STOP {
            let _ = ipc::reply(&reply);
            sys::thread_exit(0);
        }
        got = ipc::reply_recv(ep, &reply, None);
    }
}

/// Case: a fast `ipc_call` made with TF set that blocks frameless and is
/// answered by the fast hand-off returns through the resume's exit's TF
/// path with RAX 0 (the result the exit took in a register), RCX the
/// return address, R11 the RFLAGS and the reply in RDX. Fails (check 1,
/// RAX the syscall number) with that exit's TF branch going straight to
/// the `iretq` path (label 7) instead of through its store of RAX
/// (label 8).
pub fn single_stepped_frameless_call_result() -> TestResult {
    let code = crate::lifecycle::code(
        core::ptr::addr_of!(mica_tests_break26s_child),
        core::ptr::addr_of!(mica_tests_break26s_child_end),
    );
    let srv = ok(ipc::endpoint_create(), "endpoint_create (server)")?;
    let s = util::spawn(server, u64::from(srv.0))?;
    let fault = ok(ipc::endpoint_create(), "endpoint_create (fault)")?;
    let send = Endpoint(ok(ipc::handle_dup(fault.0, rights::SEND, 3), "dup SEND")?);
    let c = util::spawn_code(code, 0)?;
    let set = hw::process_set_fault_ep(c, Some(send));
    let _ = ipc::handle_close(send.0);
    ok(set, "process_set_fault_ep")?;
    sys::sleep_ns(2_000_000); // the server waits in its receive
    let (f0, r0) = crate::fastpath::fast_counts();
    ok(
        ipc::handle_give(c, srv.0, rights::SEND),
        "handle_give (the server's endpoint)",
    )?;
    let resume = Message {
        label: abi::fault::RESUME,
        words: [0; 6],
    };
    let mut steps = 0u32;
    let mut verdict = Ok(());
    loop {
        match ipc::recv(fault, Some(300_000)) {
            Ok(Received::Msg { msg, .. })
                if msg.label == abi::fault::LABEL
                    && msg.words[abi::fault::VECTOR] == 1
                    && steps < 500 =>
            {
                steps += 1;
                ok(ipc::reply(&resume), "resume")?;
            }
            Ok(other) => {
                note!("after {steps} single steps: {other:?}");
                let _ = ipc::reply(&Message::default());
                verdict = Err("the child faulted other than by single-stepping");
                break;
            }
            Err(Error::TimedOut) => break,
            Err(e) => {
                note!("recv on the fault endpoint: {e:?}");
                verdict = Err("the fault endpoint failed");
                break;
            }
        }
    }
    if verdict.is_err() {
        let _ = sys::process_kill(c);
    }
    let st = wait(c)?;
    let (f1, r1) = crate::fastpath::fast_counts();
    let stop = Message {
        label: STOP,
        words: [0; 6],
    };
    let r = ipc::call(srv, &stop, Some(5_000_000));
    let ss = s.join()?;
    let _ = ipc::handle_close(fault.0);
    let _ = ipc::handle_close(srv.0);
    verdict?;
    if st != Status::Exited(0) {
        note!("child status {st:?} after {steps} single steps (exited(n): check n failed)");
        return Err("a single-stepped frameless call returned a register the ABI does not define");
    }
    if steps == 0 {
        return Err("no #DB after a call made with TF set");
    }
    if f1 <= f0 || r1 <= r0 {
        note!("fast calls {f0} -> {f1}, fast replies {r0} -> {r1}");
        return Err("the single-stepped call or its answer did not take the fast path");
    }
    check(r.is_ok(), "the stop call failed")?;
    check(ss == Status::Exited(0), "the server did not exit 0")
}
