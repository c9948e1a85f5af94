//! break24e: the syscall exit after entry2 (the general registers loaded
//! from the frame, not popped; RCX and R11 taken from `frame.rip` and the
//! sanitised `frame.rflags`, `frame.rcx`/`frame.r11` never read) and the
//! table entry (`SYSCALL_TABLE`, a number past it clamped to
//! `syscall_unknown`). Each case sets every general register to a known
//! value, makes one syscall ([`gpr::syscall_regs`]) and checks every
//! register afterwards against what the ABI defines for that syscall:
//! RAX its result, RCX the address after the `syscall`, R11 the caller's
//! RFLAGS, an IPC's outputs the message received, every other register
//! (and every register of a refused syscall) as it was. One case per exit
//! path: the stub's own SYSRET (table-answered, handler, refused and
//! unknown numbers), the fast IPC hand-off into a frameless caller and
//! into a frameless server (`reply_recv`), the slow IPC path, a frameless
//! wait ended by the scheduler with an error (`PeerDied`), the work path
//! (a thread suspended at its own syscall's return, and one suspended in a
//! frameless wait: the resume's exit, whose result comes in a register)
//! and the TF path
//! (`iretq`, a single-stepped syscall in a child whose #DBs a fault
//! handler resumes).

use crate::fastpath::{fast_counts, start_echo, stop_echo};
use crate::gpr::{self, GprFrame, R11, R14, R15, RBP, RBX, RCX, RDI, RSI, USER_FLAGS, WORDS};
use crate::note;
use crate::util::{self, check, ok, TestResult};
use abi::{decode_result, rights, Error, Sysnum};
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::ipc::{self, Endpoint, Message};
use libipc::sys;

/// RFLAGS patterns (CF PF ZF SF OF / AF DF / all clear).
const PATTERNS: [u64; 3] = [0x8c5, 0x410, 0x000];
/// RFLAGS.TF.
const TF: u64 = 1 << 8;

/// A label no other case uses.
const LABEL: u32 = 0x24e;

/// One syscall `nr` with every register from `seed` but those in `set`.
fn regs_after(nr: u64, seed: u64, flags: u64, set: &[(usize, u64)]) -> GprFrame {
    let mut f = GprFrame::new(seed, flags);
    f.nr = nr;
    for &(i, v) in set {
        f.vals[i] = v;
    }
    gpr::syscall_regs(&mut f);
    f
}

/// Checks `f` after its syscall: RAX decodes to `rax`; each register in
/// `out` holds the value given there, every other one (but RCX, R11) its
/// value before; RCX the return address; R11 the caller's RFLAGS (TF
/// aside: the `iretq` path hands back R11 as the `syscall` left it); RSP
/// and the user RFLAGS bits unchanged.
fn check_exit(
    what: &str,
    f: &GprFrame,
    rax: Result<u64, Error>,
    out: &[(usize, u64)],
) -> TestResult {
    let got = decode_result(f.rax_out);
    if got != rax {
        note!("{what}: rax {:#x} ({got:?}), expected {rax:?}", f.rax_out);
        return Err("RAX after a syscall is not its result");
    }
    let mut want = f.vals;
    for &(i, v) in out {
        want[i] = v;
    }
    for (i, (&got, &want)) in f.out.iter().zip(&want).enumerate() {
        if i != RCX && i != R11 && got != want {
            note!("{what}: {} = {got:#x}, expected {want:#x}", gpr::NAMES[i]);
            return Err("a register after a syscall is not what the ABI defines");
        }
    }
    if f.out[RCX] != f.rip_after {
        note!(
            "{what}: rcx = {:#x}, the return address is {:#x}",
            f.out[RCX],
            f.rip_after
        );
        return Err("RCX after a syscall is not its return address");
    }
    let flags = f.flags | 0x202;
    if f.out[R11] & !TF != flags {
        note!("{what}: r11 = {:#x}, RFLAGS were {flags:#x}", f.out[R11]);
        return Err("R11 after a syscall is not the caller's RFLAGS");
    }
    if f.rsp_after != f.rsp_before {
        note!(
            "{what}: rsp {:#x}, expected {:#x}",
            f.rsp_after,
            f.rsp_before
        );
        return Err("RSP changed across a syscall");
    }
    if (f.flags_seen ^ f.flags) & USER_FLAGS != 0 {
        note!(
            "{what}: rflags {:#x} after, {:#x} before",
            f.flags_seen,
            f.flags
        );
        return Err("user RFLAGS bits changed across a syscall");
    }
    Ok(())
}

/// Case: the stub's own exit (SYSRET) after a table-answered syscall
/// (`null`), a handler's (`cpu_id`), a handler's refusal (`handle_close`
/// of a number that names nothing) and every kind of number past the
/// table (`END`, `END + 1`, `u64::MAX`, a known number with bit 32 or bit
/// 63 set: `syscall_unknown` through the clamp): RAX is the result, RCX
/// the return address, R11 the RFLAGS, every other register as it was;
/// and the CPU's syscall counter counts the unknown numbers too.
pub fn exit_registers_on_the_stub_paths() -> TestResult {
    check(util::pin0(), "set_affinity(0)")?;
    let end = Sysnum::END;
    let null = Sysnum::Null as u64;
    let calls: [(u64, Result<u64, Error>); 8] = [
        (null, Ok(0)),
        (Sysnum::CpuId as u64, Ok(0)),
        (Sysnum::HandleClose as u64, Err(Error::BadHandle)),
        (end, Err(Error::BadSyscall)),
        (end + 1, Err(Error::BadSyscall)),
        (u64::MAX, Err(Error::BadSyscall)),
        (null | 1 << 32, Err(Error::BadSyscall)),
        (null | 1 << 63, Err(Error::BadSyscall)),
    ];
    for (c, &(nr, want)) in calls.iter().enumerate() {
        for (i, &flags) in PATTERNS.iter().enumerate() {
            let seed = 0x24e0_0000_0000_0000 ^ ((c as u64) << 40) ^ ((i as u64) << 36);
            // RDI: for handle_close a number that names nothing.
            let f = regs_after(nr, seed, flags, &[(RDI, 0x7fff_f3ff)]);
            let what = name_of(nr);
            check_exit(what, &f, want, &[])?;
        }
    }
    // The counter: `cpu_syscalls` counts itself, so two reads around k
    // unknown numbers differ by k + 1 (other threads on CPU 0 may add
    // theirs: three tries).
    let k = 5u64;
    let mut last = 0;
    for _ in 0..3 {
        let c0 = ok(sys::cpu_syscalls(0), "cpu_syscalls")?;
        for n in 0..k {
            let _ = regs_after(end + n * 0x1_0000, n, 0, &[]);
        }
        let c1 = ok(sys::cpu_syscalls(0), "cpu_syscalls")?;
        last = c1 - c0;
        if last == k + 1 {
            return Ok(());
        }
    }
    note!("{k} unknown syscalls and a read moved CPU 0's counter by {last}");
    Err("the syscall counter does not count unknown numbers")
}

/// A fixed name for `nr` (notes only).
fn name_of(nr: u64) -> &'static str {
    match Sysnum::try_from(nr) {
        Ok(Sysnum::Null) => "null",
        Ok(Sysnum::CpuId) => "cpu_id",
        Ok(Sysnum::HandleClose) => "handle_close",
        _ => "an unknown number",
    }
}

/// A page an IPC may name in R14 (no buffer is sent: it must come back
/// unchanged).
#[repr(C, align(4096))]
struct Page([u8; 4096]);
static mut PAGE: Page = Page([0; 4096]);

fn page() -> u64 {
    core::ptr::addr_of_mut!(PAGE) as u64
}

/// The register values of a register-only call on `ep` labelled `label`
/// (the words stay the seed's): RBX/RBP hold garbage (no handle is sent:
/// the count is 0), R14 a page, R15 `spec`.
fn call_regs(ep: u64, info: u64, spec: u64) -> [(usize, u64); 6] {
    [
        (RDI, ep),
        (RSI, info),
        (RBX, 0x5151_0000_0000_0001),
        (RBP, 0x5151_0000_0000_0002),
        (R14, page()),
        (R15, spec),
    ]
}

/// What a call's caller holds after the echo's reply: RDI the reply's
/// badge (0), RSI its `MsgInfo` (the label), the words echoed (as they
/// were), RBX/RBP no received handle, R14/R15 kept.
fn echoed(label: u32) -> [(usize, u64); 4] {
    [(RDI, 0), (RSI, u64::from(label)), (RBX, 0), (RBP, 0)]
}

/// Case: `ipc_call`'s exit registers on its paths: the fast path (the
/// same-CPU echo server waiting: the caller resumes frameless through the
/// server's fast `reply_recv` hand-off; the fast-path counter proves it),
/// the slow path (a timed call), and refusals before anything happens (a
/// number that names nothing, the echo's endpoint with bit 32 set): those
/// write nothing but RAX.
pub fn exit_registers_after_ipc_call() -> TestResult {
    check(util::pin0(), "set_affinity(0)")?;
    let (ep, t) = start_echo(0, 0)?;
    let r = ipc_call_cases(ep);
    stop_echo(ep, t)?;
    r
}

fn ipc_call_cases(ep: Endpoint) -> TestResult {
    let call = Sysnum::IpcCall as u64;
    let h = u64::from(ep.0);
    for (i, &flags) in PATTERNS.iter().enumerate() {
        let seed = 0x24e1_0000_0000_0000 ^ ((i as u64) << 40);
        // Fast: untimed, register-only, the receiver waiting on this CPU.
        let mut moved = false;
        for _ in 0..3 {
            let (c0, _) = fast_counts();
            let f = regs_after(call, seed, flags, &call_regs(h, u64::from(LABEL), 0));
            let (c1, _) = fast_counts();
            check_exit("fast call", &f, Ok(0), &echoed(LABEL))?;
            if c1 > c0 {
                moved = true;
                break;
            }
        }
        if !moved {
            return Err("the register case's call never took the fast path");
        }
        // Slow: a timeout keeps a call off the fast path.
        let info = ipc::info(LABEL + 1, 0, 0, 0, true);
        let spec = ipc::spec(0, 3_000_000);
        let f = regs_after(call, seed ^ 1, flags, &call_regs(h, info, spec));
        check_exit("slow call", &f, Ok(0), &echoed(LABEL + 1))?;
        // Refused: every register but RAX as it was.
        let f = regs_after(call, seed ^ 2, flags, &call_regs(0x7fff_f3ff, 7, 0));
        check_exit("call on no handle", &f, Err(Error::BadHandle), &[])?;
        let f = regs_after(call, seed ^ 3, flags, &call_regs(h | 1 << 32, 7, 0));
        check_exit("call with bit 32 set", &f, Err(Error::BadHandle), &[])?;
    }
    Ok(())
}

/// What [`reply_recv_server`] found: 0 while good, else the round.
static SERVER_BAD: AtomicU64 = AtomicU64::new(0);
/// The badge the client's handle carries.
const BADGE: u64 = 0x24e0_bade;
/// Rounds of [`reply_recv_server`].
const ROUNDS: u64 = 30;

/// The client's request `i`.
fn request(i: u64) -> Message {
    Message {
        label: LABEL + i as u32,
        words: [i, !i, i << 9, i ^ 0x3c3c, u64::MAX - i, i * 7],
    }
}

/// A server pinned to CPU 0 on endpoint `arg`: receives the first
/// request, then answers each with `reply_recv` made through
/// [`gpr::syscall_regs`] (the reply is the request echoed) and checks
/// every register it gets back: the next request (RDI the client's badge,
/// RSI its label, its words), no handles, R14/R15 kept, RCX/R11 as the
/// ABI says. Exits 0 after [`ROUNDS`] rounds, else with the bad round.
extern "C" fn reply_recv_server(arg: u64) -> ! {
    let ep = Endpoint(arg as u32);
    if !util::pin0() {
        sys::thread_exit(100);
    }
    let Ok(ipc::Received::Msg { msg: mut last, .. }) = ipc::recv(ep, None) else {
        sys::thread_exit(101);
    };
    for i in 1..ROUNDS {
        // The reply: the last request echoed (its label and words).
        let mut set = [(0, 0); 12];
        set[..6].copy_from_slice(&call_regs(arg, u64::from(last.label), 0));
        for (k, &r) in WORDS.iter().enumerate() {
            set[6 + k] = (r, last.words[k]);
        }
        let f = regs_after(
            Sysnum::IpcReplyRecv as u64,
            0x24e2_0000_0000_0000 ^ i,
            PATTERNS[i as usize % 3],
            &set,
        );
        let want = request(i);
        let mut out = [(0, 0); 10];
        out[..4].copy_from_slice(&[
            (RDI, BADGE),
            (RSI, u64::from(want.label)),
            (RBX, 0),
            (RBP, 0),
        ]);
        for (k, &r) in WORDS.iter().enumerate() {
            out[4 + k] = (r, want.words[k]);
        }
        if check_exit("reply_recv", &f, Ok(0), &out).is_err() {
            SERVER_BAD.store(i, Ordering::SeqCst);
            // Answer anyway, so the client's call ends.
            let _ = ipc::reply(&want);
            sys::thread_exit(i as i32);
        }
        last = want;
    }
    let _ = ipc::reply(&last);
    sys::thread_exit(0)
}

/// Case: `ipc_reply_recv`'s exit registers: a server answering with
/// `reply_recv` (its caller on the same CPU: the fast hand-off back into
/// the frameless server) gets the next request in exactly the ABI's
/// registers, the rest kept, RCX/R11 as for any syscall.
pub fn exit_registers_after_reply_recv() -> TestResult {
    check(util::pin0(), "set_affinity(0)")?;
    SERVER_BAD.store(0, Ordering::SeqCst);
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let badged = Endpoint(ok(
        ipc::handle_dup(ep.0, rights::SEND, BADGE),
        "handle_dup with a badge",
    )?);
    let t = util::spawn(reply_recv_server, u64::from(ep.0))?;
    sys::sleep_ns(2_000_000);
    let r0 = fast_counts().1;
    let mut verdict = Ok(());
    for i in 0..ROUNDS {
        if SERVER_BAD.load(Ordering::SeqCst) != 0 {
            break; // the server found a bad register and ended
        }
        let m = request(i);
        match ipc::call(badged, &m, Some(3_000_000)) {
            Ok(reply) if reply == m => {}
            other => {
                note!("round {i}: {other:?}");
                verdict = Err("the server's reply was not the echo");
                break;
            }
        }
    }
    let r1 = fast_counts().1;
    let st = t.join()?;
    let _ = ipc::handle_close(badged.0);
    let _ = ipc::handle_close(ep.0);
    verdict?;
    let bad = SERVER_BAD.load(Ordering::SeqCst);
    if bad != 0 || st != abi::status::Status::Exited(0) {
        note!("server: bad round {bad}, status {st:?}");
        return Err("reply_recv handed back registers the ABI does not define");
    }
    if r1 == r0 {
        return Err("no reply_recv took the fast path");
    }
    Ok(())
}

/// A server that takes one call on endpoint `arg` and ends without
/// answering it.
extern "C" fn walk_away(arg: u64) -> ! {
    if !util::pin0() {
        sys::thread_exit(1);
    }
    let got = ipc::recv(Endpoint(arg as u32), None);
    sys::thread_exit(i32::from(got.is_err()))
}

/// Case: a call whose frameless wait the scheduler ends with an error
/// (its server took it and died: `PeerDied`, through
/// `frameless_resume`): every register but RAX as it was.
pub fn exit_registers_after_a_failed_frameless_wait() -> TestResult {
    check(util::pin0(), "set_affinity(0)")?;
    for (i, &flags) in PATTERNS.iter().enumerate() {
        let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
        let t = util::spawn(walk_away, u64::from(ep.0))?;
        sys::sleep_ns(2_000_000);
        let h = u64::from(ep.0);
        let f = regs_after(
            Sysnum::IpcCall as u64,
            0x24e3_0000_0000_0000 ^ ((i as u64) << 40),
            flags,
            &call_regs(h, u64::from(LABEL), 0),
        );
        let st = t.join()?;
        let _ = ipc::handle_close(ep.0);
        if st != abi::status::Status::Exited(0) {
            note!("server status {st:?}");
            return Err("the server did not take the call");
        }
        check_exit("a call its server dropped", &f, Err(Error::PeerDied), &[])?;
    }
    Ok(())
}

/// The handle of the thread [`suspend_self`] runs in (set by its spawner).
static SELF_HANDLE: AtomicU64 = AtomicU64::new(0);
/// Set by [`suspend_self`] once its syscall returned.
static RETURNED: AtomicU64 = AtomicU64::new(0);
/// What [`suspend_self`] found: 0 good.
static SUSPEND_BAD: AtomicU64 = AtomicU64::new(0);

/// Suspends itself with [`gpr::syscall_regs`] (it stops at the syscall's
/// return: the exit's work path), and once resumed checks its registers.
extern "C" fn suspend_self(_: u64) -> ! {
    let mut h = 0;
    while h == 0 {
        h = SELF_HANDLE.load(Ordering::SeqCst);
        sys::yield_now();
    }
    for (i, &flags) in PATTERNS.iter().enumerate() {
        let f = regs_after(
            Sysnum::ThreadSuspend as u64,
            0x24e4_0000_0000_0000 ^ ((i as u64) << 40),
            flags,
            &[(RDI, h)],
        );
        RETURNED.fetch_add(1, Ordering::SeqCst);
        if check_exit("thread_suspend of itself", &f, Ok(0), &[]).is_err() {
            SUSPEND_BAD.store(i as u64 + 1, Ordering::SeqCst);
        }
    }
    sys::thread_exit(0)
}

/// Case: the exit's work path (`syscall_return_work`, then the test
/// again): a thread that suspends itself stops at its syscall's return
/// and, once resumed, gets RAX 0 and every other register as it was
/// (three rounds, one per RFLAGS pattern).
pub fn exit_registers_after_the_work_path() -> TestResult {
    SELF_HANDLE.store(0, Ordering::SeqCst);
    RETURNED.store(0, Ordering::SeqCst);
    SUSPEND_BAD.store(0, Ordering::SeqCst);
    let t = util::spawn(suspend_self, 0)?;
    SELF_HANDLE.store(u64::from(t.handle().raw()), Ordering::SeqCst);
    let mut verdict = Ok(());
    for round in 0..PATTERNS.len() as u64 {
        sys::sleep_ns(20_000_000);
        if RETURNED.load(Ordering::SeqCst) != round {
            note!("round {round}: {} returns", RETURNED.load(Ordering::SeqCst));
            verdict = Err("a thread_suspend of the caller returned before its resume");
        }
        ok(libipc::hw::thread_resume(t.handle()), "thread_resume")?;
        let t0 = sys::clock_ns();
        while RETURNED.load(Ordering::SeqCst) == round && sys::clock_ns() - t0 < 2_000_000_000 {
            sys::sleep_ns(1_000_000);
        }
    }
    let st = t.join()?;
    verdict?;
    let bad = SUSPEND_BAD.load(Ordering::SeqCst);
    if bad != 0 || st != abi::status::Status::Exited(0) {
        note!("round {bad} bad, status {st:?}");
        return Err("the work path handed back registers the ABI does not define");
    }
    Ok(())
}

/// What [`suspended_caller`] found: 0 good, 1 + the pattern's index if its
/// registers were not the ABI's.
static CALLER_BAD: AtomicU64 = AtomicU64::new(0);
/// Steps of the suspended-wait case: 1 the server holds the call, 2 the
/// caller is suspended (the server may reply), 3 the caller returned.
static STEP: AtomicU64 = AtomicU64::new(0);
/// The label of [`suspended_caller`]'s calls; [`LABEL`] + 9 stops the server.
const HELD: u32 = LABEL + 8;

/// A server pinned to CPU 0 on endpoint `arg` that holds each call
/// (STEP 1) until the test suspended its caller (STEP 2), then answers
/// with the fast `reply_recv` (the hand-off into the frameless caller,
/// whose exit then finds the suspension: its work path); exits at the
/// stop label.
extern "C" fn holding_server(arg: u64) -> ! {
    let ep = Endpoint(arg as u32);
    if !util::pin0() {
        sys::thread_exit(100);
    }
    let mut got = ipc::recv(ep, None);
    loop {
        let Ok(ipc::Received::Msg { msg, .. }) = got else {
            sys::thread_exit(101);
        };
        if msg.label != HELD {
            let _ = ipc::reply(&msg);
            sys::thread_exit(0);
        }
        STEP.store(1, Ordering::SeqCst);
        while STEP.load(Ordering::SeqCst) < 2 {
            sys::yield_now();
        }
        got = ipc::reply_recv(ep, &msg, None);
    }
}

/// Calls the holding server on endpoint `arg` through
/// [`gpr::syscall_regs`] once per RFLAGS pattern and checks every register
/// after each call (STEP 3 once it returned).
extern "C" fn suspended_caller(arg: u64) -> ! {
    if !util::pin0() {
        sys::thread_exit(100);
    }
    for (i, &flags) in PATTERNS.iter().enumerate() {
        let f = regs_after(
            Sysnum::IpcCall as u64,
            0x24e5_0000_0000_0000 ^ ((i as u64) << 40),
            flags,
            &call_regs(arg, u64::from(HELD), 0),
        );
        STEP.store(3, Ordering::SeqCst);
        if check_exit("a call suspended in its wait", &f, Ok(0), &echoed(HELD)).is_err() {
            CALLER_BAD.store(i as u64 + 1, Ordering::SeqCst);
        }
        while STEP.load(Ordering::SeqCst) != 0 {
            sys::yield_now();
        }
    }
    sys::thread_exit(0)
}

/// Case (cut26s): a caller suspended while it waits frameless in a fast
/// call, then answered by the fast hand-off, stops at its exit (the
/// resume's exit takes the result in a register and must put it in the
/// frame before the work path) and, once resumed, gets RAX 0, the reply
/// and every other register as the ABI says. Fails with the exit's store
/// of RAX into the frame (`syscall_exit_to_user_result`, label 8) removed.
pub fn exit_registers_after_a_suspended_frameless_wait() -> TestResult {
    check(util::pin0(), "set_affinity(0)")?;
    STEP.store(0, Ordering::SeqCst);
    CALLER_BAD.store(0, Ordering::SeqCst);
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let h = u64::from(ep.0);
    let s = util::spawn(holding_server, h)?;
    sys::sleep_ns(2_000_000);
    let c = util::spawn(suspended_caller, h)?;
    let (f0, r0) = fast_counts();
    let mut verdict = Ok(());
    // Waits of 10 s (a loaded host's vCPU may be slow to take a kick); a
    // wait that runs out ends the case with both threads killed, never a
    // join of a thread that may wait for ever.
    for round in 0..PATTERNS.len() {
        let t0 = sys::clock_ns();
        while STEP.load(Ordering::SeqCst) != 1 && sys::clock_ns() - t0 < 10_000_000_000 {
            sys::sleep_ns(1_000_000);
        }
        if STEP.load(Ordering::SeqCst) != 1 {
            verdict = Err("the server never got the call");
            break;
        }
        ok(libipc::hw::thread_suspend(c.handle()), "thread_suspend")?;
        STEP.store(2, Ordering::SeqCst);
        sys::sleep_ns(20_000_000);
        if STEP.load(Ordering::SeqCst) == 3 {
            note!("round {round}: the call returned while its caller was suspended");
            verdict = Err("a suspended caller returned to ring 3");
        }
        ok(libipc::hw::thread_resume(c.handle()), "thread_resume")?;
        let t0 = sys::clock_ns();
        while STEP.load(Ordering::SeqCst) != 3 && sys::clock_ns() - t0 < 10_000_000_000 {
            sys::sleep_ns(1_000_000);
        }
        if STEP.load(Ordering::SeqCst) != 3 {
            // Not 0: the caller's late 3 would overwrite it and it would
            // wait for a 0 that never comes.
            verdict = Err("a resumed caller never returned");
            break;
        }
        STEP.store(0, Ordering::SeqCst);
    }
    if verdict.is_err() {
        let _ = sys::thread_kill(c.handle());
        let _ = sys::thread_kill(s.handle());
        let _ = c.join();
        let _ = s.join();
        let _ = ipc::handle_close(ep.0);
        return verdict;
    }
    let st = c.join()?;
    let (f1, r1) = fast_counts();
    let stop = Message {
        label: LABEL + 9,
        words: [0; 6],
    };
    let r = ipc::call(ep, &stop, Some(5_000_000));
    let ss = s.join()?;
    let _ = ipc::handle_close(ep.0);
    verdict?;
    let bad = CALLER_BAD.load(Ordering::SeqCst);
    if bad != 0 || st != abi::status::Status::Exited(0) {
        note!("pattern {bad} bad, caller status {st:?}");
        return Err("a caller suspended in a frameless wait got registers the ABI does not define");
    }
    check(f1 > f0, "the held calls never took the fast path")?;
    check(r1 > r0, "the held calls' answers never took the fast path")?;
    check(r.is_ok(), "the stop call failed")?;
    check(
        ss == abi::status::Status::Exited(0),
        "the server did not exit 0",
    )
}
