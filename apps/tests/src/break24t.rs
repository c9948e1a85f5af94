//! break24e, the TF path: a syscall made with RFLAGS.TF set returns
//! through the exit's `iretq` path (label 7 of the stub), the one exit that
//! still hands back `frame.rcx` and `frame.r11` (the SYSRET path takes RCX
//! and R11 from `frame.rip` and `frame.rflags`, and since entry2 reads
//! neither). A child process single-steps through its checks after the
//! syscall, each #DB a fault message its handler (the test) resumes.

use crate::note;
use crate::util::{self, ok, wait_status as wait, TestResult};
use abi::status::Status;
use abi::{rights, Error, Sysnum};
use core::arch::global_asm;
use libipc::hw;
use libipc::ipc::{self, Received};
use libipc::sys;

/// Where the child maps its one-page stack.
const CHILD_STACK: u64 = 0x5556_0000_0000;
/// The child's RFLAGS pattern (CF PF ZF SF OF) with TF.
const FLAGS: u64 = 0x8c5 | 0x100;

// The child: waits for its first handle (a notification the test gives
// once the fault endpoint is set), maps a stack, sets every register but
// RAX/RSP to a known value, RFLAGS to `FLAGS`, and makes a `null` syscall
// with TF set. Each instruction after it runs single-stepped (the handler
// resumes each #DB): RAX must be 0, RCX the return address, R11 the
// RFLAGS (TF aside), every other register as set. Exit 0 if so, else the
// number of the first check that failed (the register's: 1 RAX, 2 RCX,
// 11 R11, ...).
global_asm!(
    ".pushsection .rodata.mica_tests_break24t_child, \"a\"",
    "mica_tests_break24t_child:",
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
    "mov rsp, {stack_top}",
    "mov rcx, 0x1001",
    "mov rdx, 0x1002",
    "mov rbx, 0x1003",
    "mov rbp, 0x1005",
    "mov rsi, 0x1006",
    "mov rdi, 0x1007",
    "mov r8, 0x1008",
    "mov r9, 0x1009",
    "mov r10, 0x100a",
    "mov r11, 0x100b",
    "mov r12, 0x100c",
    "mov r13, 0x100d",
    "mov r14, 0x100e",
    "mov r15, 0x100f",
    "push {flags}",
    "mov eax, {null}",
    "popfq",                     // TF := 1 (the trap comes after the next instruction)
    "syscall",                   // null, entered with TF set: returns through iretq
    "4:",
    "test rax, rax", "jz 40f",
    "mov eax, 1", "jmp 8f",
    "40:",
    "lea rax, [rip + 4b]",
    "cmp rcx, rax", "mov eax, 2", "jne 8f",
    "mov rax, r11",
    "and rax, -0x101",           // R11: the RFLAGS the syscall saw, TF aside
    "cmp rax, {flags_back}", "mov eax, 11", "jne 8f",
    "cmp rdx, 0x1002", "mov eax, 3", "jne 8f",
    "cmp rbx, 0x1003", "mov eax, 4", "jne 8f",
    "cmp rbp, 0x1005", "mov eax, 5", "jne 8f",
    "cmp rsi, 0x1006", "mov eax, 6", "jne 8f",
    "cmp rdi, 0x1007", "mov eax, 7", "jne 8f",
    "cmp r8, 0x1008", "mov eax, 8", "jne 8f",
    "cmp r9, 0x1009", "mov eax, 9", "jne 8f",
    "cmp r10, 0x100a", "mov eax, 10", "jne 8f",
    "cmp r12, 0x100c", "mov eax, 12", "jne 8f",
    "cmp r13, 0x100d", "mov eax, 13", "jne 8f",
    "cmp r14, 0x100e", "mov eax, 14", "jne 8f",
    "cmp r15, 0x100f", "mov eax, 15", "jne 8f",
    "xor eax, eax",
    "8:",
    "pushfq",
    "and qword ptr [rsp], -0x101", // TF := 0
    "popfq",
    "mov edi, eax",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "mica_tests_break24t_child_end:",
    ".popsection",
    first = const ipc::FIRST_HANDLE,
    bad_handle = const Error::BadHandle as u64,
    yield_ = const Sysnum::Yield as u64,
    signal = const Sysnum::NtfSignal as u64,
    pexit = const Sysnum::ProcessExit as u64,
    null = const Sysnum::Null as u64,
    map_anon = const Sysnum::MapAnon as u64,
    write = const abi::prot::WRITE,
    stack = const CHILD_STACK,
    stack_top = const CHILD_STACK + 4096,
    flags = const FLAGS,
    flags_back = const (FLAGS & !0x100) | 0x202,
);

extern "C" {
    static mica_tests_break24t_child: u8;
    static mica_tests_break24t_child_end: u8;
}

/// Case: a `null` syscall made with TF set (the exit's `iretq` path):
/// RAX 0, RCX the return address, every other register but R11 as it
/// was, and the CPU single-steps the instructions after it (at least one
/// #DB: TF came back).
pub fn exit_registers_after_a_single_stepped_syscall() -> TestResult {
    let code = crate::lifecycle::code(
        core::ptr::addr_of!(mica_tests_break24t_child),
        core::ptr::addr_of!(mica_tests_break24t_child_end),
    );
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let send = ipc::Endpoint(ok(ipc::handle_dup(ep.0, rights::SEND, 3), "dup SEND")?);
    let c = util::spawn_code(code, 0)?;
    let set = hw::process_set_fault_ep(c, Some(send));
    let _ = ipc::handle_close(send.0);
    ok(set, "process_set_fault_ep")?;
    let go = ok(ipc::notification_create(), "notification_create")?;
    let given = ipc::handle_give(c, go.0, rights::SIGNAL);
    let _ = ipc::handle_close(go.0);
    ok(given, "handle_give")?;
    let resume = ipc::Message {
        label: abi::fault::RESUME,
        words: [0; 6],
    };
    let mut steps = 0u32;
    let mut verdict = Ok(());
    loop {
        match ipc::recv(ep, Some(300_000)) {
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
                let _ = ipc::reply(&ipc::Message::default());
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
    let _ = ipc::handle_close(ep.0);
    verdict?;
    if st != Status::Exited(0) {
        note!("child status {st:?} after {steps} single steps (exited(n): check n failed)");
        return Err(
            "a syscall returned through the TF path with a register the ABI does not define",
        );
    }
    if steps == 0 {
        return Err("no #DB after a syscall made with TF set");
    }
    Ok(())
}
