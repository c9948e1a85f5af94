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
use core::sync::atomic::{AtomicU64, Ordering};
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

/// Set by [`server`] right before its first receive.
static SERVER_UP: AtomicU64 = AtomicU64::new(0);

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
    SERVER_UP.store(1, Ordering::SeqCst);
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
    SERVER_UP.store(0, Ordering::SeqCst);
    let s = util::spawn(server, u64::from(srv.0))?;
    let fault = ok(ipc::endpoint_create(), "endpoint_create (fault)")?;
    let send = Endpoint(ok(ipc::handle_dup(fault.0, rights::SEND, 3), "dup SEND")?);
    let c = util::spawn_code(code, 0)?;
    let set = hw::process_set_fault_ep(c, Some(send));
    let _ = ipc::handle_close(send.0);
    ok(set, "process_set_fault_ep")?;
    // The server waits in its receive (a fixed 2 ms alone once was too
    // short under load, and the call took the slow path).
    util::await_flag(&SERVER_UP, 2_000_000);
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

/// Rounds of [`kill_before_a_fast_block_ends_the_caller`].
const ROUNDS: u64 = 3000;
/// The holding server's stop label.
const HOLD_STOP: u32 = 0x26_5003;
/// Set by the victim right before its call (the killer's start signal).
static CALLING: AtomicU64 = AtomicU64::new(0);
/// The victim's spin between [`CALLING`] and its call (varied by round).
static DELAY: AtomicU64 = AtomicU64::new(0);
/// Rounds the test has finished (the victim joined).
static DONE: AtomicU64 = AtomicU64::new(0);
/// Calls the holding server answered because no round ended for 500 ms
/// after it took them, and whose answer reached a live caller.
static STUCK: AtomicU64 = AtomicU64::new(0);

/// Serves endpoint `arg` on CPU 0 and holds each call until the test
/// finished a round (the caller was killed and joined), then drops it
/// unanswered; a call still held 500 ms later is answered (a killed
/// caller left blocked in its wait: the answer lets it die) and, if that
/// answer reached it, counted in [`STUCK`]. Exits 0 at [`HOLD_STOP`].
extern "C" fn holding_server(arg: u64) -> ! {
    let ep = Endpoint(arg as u32);
    if !util::pin0() {
        sys::thread_exit(2);
    }
    let reply = Message::default();
    loop {
        let Ok(Received::Msg { msg, .. }) = ipc::recv(ep, None) else {
            sys::thread_exit(1);
        };
        if msg.label == HOLD_STOP {
            let _ = ipc::reply(&reply);
            sys::thread_exit(0);
        }
        // 500 sleeps of 1 ms and 500 ms at least: the caller, if it was
        // woken (Ready on this CPU), ran meanwhile, however slow the host.
        let done = DONE.load(Ordering::SeqCst);
        let t0 = sys::clock_ns();
        let mut naps = 0;
        while DONE.load(Ordering::SeqCst) == done
            && (naps < 500 || sys::clock_ns() - t0 < 500_000_000)
        {
            sys::sleep_ns(1_000_000);
            naps += 1;
        }
        if DONE.load(Ordering::SeqCst) == done && ipc::reply(&reply).is_ok() {
            STUCK.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A victim: pinned to CPU 0 (the server's: the fast hand-off), says it
/// is calling, spins [`DELAY`] times and calls endpoint `arg`, which holds the call until the
/// victim is killed.
extern "C" fn victim(arg: u64) -> ! {
    if !util::pin0() {
        sys::thread_exit(2);
    }
    let m = Message {
        label: LABEL,
        words: [0; 6],
    };
    CALLING.store(1, Ordering::SeqCst);
    for _ in 0..DELAY.load(Ordering::SeqCst) {
        crate::util::relax();
    }
    let _ = ipc::call(Endpoint(arg as u32), &m, None);
    sys::thread_exit(3)
}

/// Case: a kill that lands while a fast `ipc_call` is on its way to its
/// block (after the caller's last return to ring 3, before its Blocked
/// store: the killer's wake finds it running, and its kick's interrupt is
/// held off until the caller switched away) ends the caller: the fast
/// wait's kill test after the Blocked store sees it. Each round a victim
/// on CPU 0 calls a server there that holds the call; the test on another
/// CPU kills it as soon as it says it is calling, a varying few
/// instructions before its call, then joins it. Fails (a killed caller still blocked in its call 500 ms
/// later) with the fast wait's test of KILL (`ipc::fastasm::
/// killed_or_claimed`) testing another bit.
pub fn kill_before_a_fast_block_ends_the_caller() -> TestResult {
    let cpus = sys::cpu_count();
    if cpus < 2 {
        note!("one CPU: no kill from another CPU to race");
        return Ok(());
    }
    DONE.store(0, Ordering::SeqCst);
    STUCK.store(0, Ordering::SeqCst);
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let s = util::spawn(holding_server, u64::from(ep.0))?;
    let _ = sys::set_affinity(cpus - 1);
    sys::sleep_ns(2_000_000);
    let (f0, _) = crate::fastpath::fast_counts();
    let mut verdict = Ok(());
    for round in 0..ROUNDS {
        CALLING.store(0, Ordering::SeqCst);
        DELAY.store((round * 3) % 1500, Ordering::SeqCst);
        let v = match util::spawn(victim, u64::from(ep.0)) {
            Ok(v) => v,
            Err(e) => {
                verdict = Err(e);
                break;
            }
        };
        let t0 = sys::clock_ns();
        while CALLING.load(Ordering::SeqCst) == 0 && sys::clock_ns() - t0 < 1_000_000_000 {
            crate::util::relax();
        }
        let _ = sys::thread_kill(v.handle());
        let st = v.join();
        DONE.fetch_add(1, Ordering::SeqCst);
        if st.is_err() {
            verdict = Err("thread_join failed");
            break;
        }
    }
    let _ = sys::set_affinity(u64::MAX);
    let (f1, _) = crate::fastpath::fast_counts();
    let stop = Message {
        label: HOLD_STOP,
        words: [0; 6],
    };
    let r = ipc::call(ep, &stop, Some(2_000_000_000));
    let ss = s.join()?;
    let _ = ipc::handle_close(ep.0);
    verdict?;
    let stuck = STUCK.load(Ordering::SeqCst);
    if stuck != 0 {
        note!("{stuck} of {ROUNDS} killed callers still blocked in their call 500 ms later");
        return Err("a kill before a fast call's block left the caller blocked");
    }
    check(f1 > f0, "the victims' calls never took the fast path")?;
    check(r.is_ok(), "the stop call failed")?;
    check(ss == Status::Exited(0), "the server did not exit 0")
}
