//! breakhw (issue 11): attacks on the hw syscalls — fault delivery, exit
//! notification — each case a finding that failed on the hw branch.
//!
//! Children are tiny flat images built on the fly, as in `hw.rs`.

use crate::note;
use crate::util::{self, ok, wait_status as wait, TestResult};
use abi::status::Status;
use abi::{rights, Error, Sysnum};
use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, Ordering};
use libipc::hw;
use libipc::ipc::{self, Notification};
use libipc::sys::{self, ProcessHandle};

// The children. Position-independent, no stack; RDI = the spawn argument.
global_asm!(
    ".pushsection .rodata.mica_tests_attackhw_children, \"a\"",
    // load: waits for its first handle (a notification the parent gives
    // once the fault endpoint is set), then loads a byte from address
    // `arg` (a kernel address: a #PF from ring 3), then exits 0.
    "mica_tests_attackhw_child_load:",
    "mov r12, rdi",              // r12: the address to load from
    "2:",
    "mov edi, {first}",          // rdi: the first handle of this table
    "xor esi, esi",              // rsi: no bits (only "is it there?")
    "mov eax, {signal}",
    "syscall",
    "cmp rax, -{bad_handle}",
    "jne 3f",
    "mov eax, {yield_}",
    "syscall",
    "jmp 2b",
    "3:",
    "mov al, byte ptr [r12]",    // #PF: a user access to a kernel address
    "xor edi, edi",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "mica_tests_attackhw_child_load_end:",
    // regs: waits for its first handle as `load` does, then sets every
    // general register but RSP to a known value and executes `int3` twice,
    // checking all of them after each resume; exit 0 when all held, 1 when
    // one did not (after the second `int3` in any case, so the handler
    // always gets two faults).
    "mica_tests_attackhw_child_regs:",
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
    "mov rax, 0x1000",           // every register: 0x1000 + its number
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
    "int3",                      // first fault (the handler: fast reply_recv)
    "cmp rax, 0x1000", "jne 8f",
    "cmp rcx, 0x1001", "jne 8f",
    "cmp rdx, 0x1002", "jne 8f",
    "cmp rbx, 0x1003", "jne 8f",
    "cmp rbp, 0x1005", "jne 8f",
    "cmp rsi, 0x1006", "jne 8f",
    "cmp rdi, 0x1007", "jne 8f",
    "cmp r8, 0x1008", "jne 8f",
    "cmp r9, 0x1009", "jne 8f",
    "cmp r10, 0x100a", "jne 8f",
    "cmp r11, 0x100b", "jne 8f",
    "cmp r12, 0x100c", "jne 8f",
    "cmp r13, 0x100d", "jne 8f",
    "cmp r14, 0x100e", "jne 8f",
    "cmp r15, 0x100f", "jne 8f",
    "int3",                      // second fault (the handler: slow reply)
    "cmp rax, 0x1000", "jne 9f",
    "cmp rcx, 0x1001", "jne 9f",
    "cmp rdx, 0x1002", "jne 9f",
    "cmp rbx, 0x1003", "jne 9f",
    "cmp rbp, 0x1005", "jne 9f",
    "cmp rsi, 0x1006", "jne 9f",
    "cmp rdi, 0x1007", "jne 9f",
    "cmp r8, 0x1008", "jne 9f",
    "cmp r9, 0x1009", "jne 9f",
    "cmp r10, 0x100a", "jne 9f",
    "cmp r11, 0x100b", "jne 9f",
    "cmp r12, 0x100c", "jne 9f",
    "cmp r13, 0x100d", "jne 9f",
    "cmp r14, 0x100e", "jne 9f",
    "cmp r15, 0x100f", "jne 9f",
    "xor edi, edi",              // exit 0: every register held
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "8:",
    "int3",                      // the handler still gets its second fault
    "9:",
    "mov edi, 1",                // exit 1: a register changed
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "mica_tests_attackhw_child_regs_end:",
    // spin: runs until killed.
    "mica_tests_attackhw_child_spin:",             // no PAUSE: util::relax
    "jmp mica_tests_attackhw_child_spin",
    "mica_tests_attackhw_child_spin_end:",
    ".popsection",
    first = const ipc::FIRST_HANDLE,
    bad_handle = const Error::BadHandle as u64,
    yield_ = const Sysnum::Yield as u64,
    signal = const Sysnum::NtfSignal as u64,
    pexit = const Sysnum::ProcessExit as u64,
);

extern "C" {
    static mica_tests_attackhw_child_load: u8;
    static mica_tests_attackhw_child_load_end: u8;
    static mica_tests_attackhw_child_regs: u8;
    static mica_tests_attackhw_child_regs_end: u8;
    static mica_tests_attackhw_child_spin: u8;
    static mica_tests_attackhw_child_spin_end: u8;
}

#[derive(Clone, Copy)]
enum Child {
    Load,
    Regs,
    Spin,
}

impl Child {
    fn code(self) -> &'static [u8] {
        use core::ptr::addr_of;
        let (start, end) = match self {
            Child::Load => (
                addr_of!(mica_tests_attackhw_child_load),
                addr_of!(mica_tests_attackhw_child_load_end),
            ),
            Child::Regs => (
                addr_of!(mica_tests_attackhw_child_regs),
                addr_of!(mica_tests_attackhw_child_regs_end),
            ),
            Child::Spin => (
                addr_of!(mica_tests_attackhw_child_spin),
                addr_of!(mica_tests_attackhw_child_spin_end),
            ),
        };
        crate::lifecycle::code(start, end)
    }
}

fn spawn(child: Child, arg: u64) -> Result<ProcessHandle, &'static str> {
    util::spawn_code(child.code(), arg)
}

/// Waits up to `ms` for `n`; the bits, or the error.
fn ntf_wait(n: Notification, ms: u32) -> Result<u64, Error> {
    ipc::wait(n, Some(ms * 1000))
}

// --- fault messages must not map the kernel half ---

/// A kernel address that is certainly mapped: physical 1 MiB (where the
/// kernel image is loaded) in the direct map (`mmu::DIRECT_MAP`).
const KERNEL_MAPPED: u64 = 0xffff_8000_0010_0000;
/// A canonical kernel-half address that is certainly not mapped: PML4 entry
/// 384, between the direct map (256..) and the kernel stacks (510).
const KERNEL_UNMAPPED: u64 = 0xffff_c000_0000_0000;

/// The #PF error code a fault handler gets for the child's load at `addr`.
fn pf_error_code(addr: u64) -> Result<u64, &'static str> {
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let send = ipc::Endpoint(ok(ipc::handle_dup(ep.0, rights::SEND, 1), "dup SEND")?);
    let c = spawn(Child::Load, addr)?;
    let set = hw::process_set_fault_ep(c, Some(send));
    let _ = ipc::handle_close(send.0);
    ok(set, "process_set_fault_ep")?;
    let go = ok(ipc::notification_create(), "notification_create")?;
    let given = ipc::handle_give(c, go.0, rights::SIGNAL);
    let _ = ipc::handle_close(go.0);
    ok(given, "handle_give")?;
    let got = match ipc::recv(ep, Some(2_000_000)) {
        Ok(ipc::Received::Msg { msg, .. }) if msg.label == abi::fault::LABEL => {
            let w = msg.words;
            // End the child: a reply label other than RESUME.
            let _ = ipc::reply(&ipc::Message {
                label: 1,
                words: [0; 6],
            });
            if w[abi::fault::VECTOR] != 14 || w[abi::fault::CR2] != addr {
                note!("fault words {w:x?}");
                Err("the fault message is not the child's #PF")
            } else {
                Ok(w[abi::fault::ERROR_CODE])
            }
        }
        other => {
            note!("recv on the fault endpoint: {other:?}");
            let _ = sys::process_kill(c);
            Err("no fault message arrived")
        }
    };
    let st = wait(c)?;
    let _ = ipc::handle_close(ep.0);
    let code = got?;
    if st != Status::Faulted(14) {
        note!("child status {st:?}");
        return Err("the refused #PF did not end the child faulted(14)");
    }
    Ok(code)
}

/// Case: a ring-3 access to a kernel address is reported to the fault
/// handler with the same error code whether the kernel maps that address or
/// not (a protection fault, as Linux's `sanitize_error_code`), so a
/// process with a fault endpoint cannot map the kernel's page tables by
/// probing. On the hw branch the mapped page's code had P (bit 0) set and
/// the unmapped one's did not.
pub fn fault_error_code_hides_kernel_layout() -> TestResult {
    let mapped = pf_error_code(KERNEL_MAPPED)?;
    let unmapped = pf_error_code(KERNEL_UNMAPPED)?;
    // P (present/protection) and U (user) set; W, RSVD, I/D clear (a read).
    if mapped != 0b101 || unmapped != 0b101 {
        note!("error code at a mapped kernel page {mapped:#x}, at an unmapped one {unmapped:#x}");
        return Err("the fault message tells mapped kernel pages from unmapped ones");
    }
    Ok(())
}

// --- exit notification: one holder cannot cancel another's ---

/// Case: two holders of a process handle (here two handles with WAIT, as a
/// supervisor and the process's parent would hold) each register their own
/// notification; both are signalled when it dies. On the hw branch the
/// second registration replaced the first, so any holder of WAIT could
/// silently cancel a supervisor's exit notification. Registering the same
/// notification again replaces its bits (no duplicate signal), and a
/// registration whose notification lost its last handle costs nothing.
pub fn exit_notify_is_per_notification() -> TestResult {
    let supervisor = ok(ipc::notification_create(), "notification_create")?;
    let other = ok(ipc::notification_create(), "notification_create")?;
    let dropped = ok(ipc::notification_create(), "notification_create")?;
    let c = spawn(Child::Spin, 0)?;
    let second =
        ProcessHandle::from_raw(ok(ipc::handle_dup(c.raw(), rights::WAIT, 0), "dup WAIT")?);
    ok(hw::process_notify(c, supervisor, 1), "notify supervisor")?;
    // Same notification again: its bits are replaced, not added twice.
    ok(
        hw::process_notify(c, supervisor, 2),
        "notify supervisor again",
    )?;
    ok(hw::process_notify(second, dropped, 8), "notify dropped")?;
    let _ = ipc::handle_close(dropped.0);
    ok(hw::process_notify(second, other, 4), "notify other")?;
    ok(sys::process_kill(c), "kill")?;
    let a = ntf_wait(supervisor, 2000);
    let b = ntf_wait(other, 2000);
    let st = wait(c)?;
    let _ = ipc::handle_close(second.raw());
    let _ = ipc::handle_close(supervisor.0);
    let _ = ipc::handle_close(other.0);
    if a != Ok(2) || b != Ok(4) {
        note!("supervisor's notification {a:?}, the other holder's {b:?}");
        return Err("a second registration cancelled the first holder's exit notification");
    }
    if st != Status::Exited(-1) {
        return Err("the killed child's status was not exited(-1)");
    }
    Ok(())
}

// --- a resumed fault keeps every user register ---

/// Set once the handler got its second fault (the watchdog stands down).
static SECOND_FAULT: AtomicBool = AtomicBool::new(false);

/// If the second fault has not come within 3 s, sends the handler's
/// endpoint (`arg`) a plain message, so its untimed receive ends.
extern "C" fn fault_watchdog(arg: u64) -> ! {
    let t0 = sys::clock_ns();
    while !SECOND_FAULT.load(Ordering::SeqCst) && sys::clock_ns() - t0 < 3_000_000_000 {
        sys::sleep_ns(10_000_000);
    }
    if !SECOND_FAULT.load(Ordering::SeqCst) {
        let _ = ipc::call(
            ipc::Endpoint(arg as u32),
            &ipc::Message {
                label: 0x77,
                words: [0; 6],
            },
            Some(1000),
        );
    }
    sys::thread_exit(0)
}

/// Case: a fault the handler resumes returns to ring 3 with every general
/// register as it was, whichever reply path carried the verdict: the first
/// through `reply_recv` with no receive timeout (the IPC fast path's
/// shape, which writes a reply's words straight into a register caller's
/// frame), the second through a plain `reply`; both replies carry non-zero
/// words that must land nowhere.
pub fn fault_resume_keeps_registers() -> TestResult {
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let send = ipc::Endpoint(ok(ipc::handle_dup(ep.0, rights::SEND, 2), "dup SEND")?);
    let c = spawn(Child::Regs, 0)?;
    let set = hw::process_set_fault_ep(c, Some(send));
    let _ = ipc::handle_close(send.0);
    ok(set, "process_set_fault_ep")?;
    let go = ok(ipc::notification_create(), "notification_create")?;
    let given = ipc::handle_give(c, go.0, rights::SIGNAL);
    let _ = ipc::handle_close(go.0);
    ok(given, "handle_give")?;
    let resume = ipc::Message {
        label: abi::fault::RESUME,
        words: [
            0xdead_0001,
            0xdead_0002,
            0xdead_0003,
            0xdead_0004,
            0xdead_0005,
            0xdead_0006,
        ],
    };
    let is_int3 = |r: &Result<ipc::Received, Error>| {
        matches!(r, Ok(ipc::Received::Msg { msg, .. })
            if msg.label == abi::fault::LABEL && msg.words[abi::fault::VECTOR] == 3)
    };
    let first = ipc::recv(ep, Some(2_000_000));
    let mut verdict = Ok(());
    if is_int3(&first) {
        SECOND_FAULT.store(false, Ordering::SeqCst);
        let dog = crate::util::spawn(fault_watchdog, u64::from(ep.0))?;
        let second = ipc::reply_recv(ep, &resume, None);
        SECOND_FAULT.store(true, Ordering::SeqCst);
        if is_int3(&second) {
            ok(ipc::reply(&resume), "the second resume")?;
        } else {
            note!("after the first resume: {second:?}");
            verdict = Err("the resumed child did not reach its second int3");
        }
        let _ = dog.join()?;
    } else {
        note!("first fault: {first:?}");
        verdict = Err("no int3 fault message arrived");
    }
    if verdict.is_err() {
        let _ = sys::process_kill(c);
    }
    let st = wait(c)?;
    let _ = ipc::handle_close(ep.0);
    verdict?;
    if st != Status::Exited(0) {
        note!("child status {st:?} (exited(1): a register changed across a resume)");
        return Err("a resumed fault did not keep the thread's registers");
    }
    Ok(())
}
