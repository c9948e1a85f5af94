//! The IPC fast path (issue 10 item 4): that it is taken where it applies
//! (the kernel's per-CPU fast-path counters, read through `cpu_syscalls`'
//! counter selector), that every excluded case still goes through the slow
//! path and is answered correctly, that both sides' FPU/SIMD state survives
//! thousands of fast round trips, and that a kill racing fast calls from
//! another CPU ends in the defined errors, never a hang (watchdogs).

use crate::fpu::{self, SimdState};
use crate::note;
use crate::util::{self, check, ok, TestResult};
use abi::{decode_result, Error, Sysnum};
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::ipc::{self, Endpoint, IpcRegs, Message};
use libipc::sys;
use libipc::task::ProcessHandle;

/// Round trips of the "taken" and FPU checks.
const CALLS: u64 = 2000;
/// The label that makes an echo thread reply and exit.
pub(crate) const STOP: u32 = 0xdead;
/// Never expires in a passing run: a failure shows as `TimedOut`.
const GUARD_US: u32 = 3_000_000;

/// Echo modes (bits of the spawn argument above bit 40).
const TIMED: u64 = 1;
const BOUND: u64 = 2;

/// The fast-path counters of every CPU, summed: (calls, reply_recvs).
pub(crate) fn fast_counts() -> (u64, u64) {
    let cpus = sys::cpu_count();
    let read = |k: u64, sel: u64| {
        // SAFETY: cpu_syscalls writes no memory.
        decode_result(unsafe { sys::syscall6(Sysnum::CpuSyscalls, k, sel, 0, 0, 0, 0) })
            .unwrap_or(0)
    };
    (0..cpus).fold((0, 0), |(c, r), k| (c + read(k, 1), r + read(k, 2)))
}

/// Raw IPC with every register.
fn raw(n: Sysnum, r: &mut IpcRegs) -> Result<u64, Error> {
    // SAFETY: the buffers named are the static pages below.
    decode_result(unsafe { ipc::ipc_syscall(n, r) })
}

/// A 4 KiB page per side (no heap), page aligned.
#[repr(C, align(4096))]
struct Page([u8; 4096]);
static mut SRV_PAGE: Page = Page([0; 4096]);
static mut CLI_PAGE: Page = Page([0; 4096]);

fn srv_page() -> u64 {
    core::ptr::addr_of_mut!(SRV_PAGE) as u64
}

fn cli_page() -> u64 {
    core::ptr::addr_of_mut!(CLI_PAGE) as u64
}

/// An echo server thread: `arg` = endpoint (low 32) | CPU << 32 | mode <<
/// 40. Pins itself, receives into its 4 KiB page, answers every message
/// with its label and words (register-only; received handles are closed)
/// through `reply_recv`, and exits after replying to [`STOP`]. Mode
/// [`TIMED`]: every receive has a (long) timeout; [`BOUND`]: a notification
/// is bound to it.
extern "C" fn echo(arg: u64) -> ! {
    let ep = arg as u32 as u64;
    let mode = arg >> 40;
    if sys::set_affinity((arg >> 32) & 0xff).is_err() {
        sys::thread_exit(1);
    }
    if mode & BOUND != 0 {
        let bound = ipc::notification_create().and_then(|n| ipc::bind(Some(n)));
        if bound.is_err() {
            sys::thread_exit(2);
        }
    }
    let timed = mode & TIMED != 0;
    let regs = |label: u32, w: [u64; 6]| IpcRegs {
        rdi: ep,
        rsi: ipc::info(label, 0, 0, 0, timed),
        w,
        r14: srv_page(),
        r15: ipc::spec(4096, if timed { GUARD_US } else { 0 }),
        ..IpcRegs::default()
    };
    let mut r = regs(0, [0; 6]);
    let mut rc = raw(Sysnum::IpcRecv, &mut r);
    loop {
        if rc.is_err() {
            sys::thread_exit(3);
        }
        for h in ipc::unpack(r.handles) {
            if h != 0 {
                let _ = ipc::handle_close(h);
            }
        }
        let label = r.rsi as u32;
        if label == STOP {
            let _ = ipc::reply(&Message::default());
            sys::thread_exit(0);
        }
        r = regs(label, r.w);
        rc = raw(Sysnum::IpcReplyRecv, &mut r);
    }
}

/// A fresh endpoint with an echo thread on `cpu` in `mode`.
pub(crate) fn start_echo(cpu: u64, mode: u64) -> Result<(Endpoint, util::Thread), &'static str> {
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let t = util::spawn(echo, ep.0 as u64 | cpu << 32 | mode << 40)?;
    // Let it reach its receive (the "taken" counts assume it waits).
    sys::sleep_ns(2_000_000);
    Ok((ep, t))
}

/// Stops the echo thread `t` serving `ep`, then closes `ep`.
pub(crate) fn stop_echo(ep: Endpoint, t: util::Thread) -> TestResult {
    stop_echo_thread(ep, t)?;
    ok(ipc::handle_close(ep.0), "close")
}

fn msg(i: u64) -> Message {
    Message {
        label: 7,
        words: [i, !i, i << 7, i ^ 0x55, i + 1, u64::MAX - i],
    }
}

/// `n` register-only calls without a timeout; each reply must be the echo.
fn ping(ep: Endpoint, n: u64) -> TestResult {
    for i in 0..n {
        let m = msg(i);
        if ok(ipc::call(ep, &m, None), "call")? != m {
            return Err("a reply was not the echo of its call");
        }
    }
    Ok(())
}

/// Runs `f` and checks which fast-path counters moved: `calls` / `replies`
/// say whether each may (`true`: must, at least `min`) or must not move.
pub(crate) fn counted(
    what: &'static str,
    calls: Option<u64>,
    replies: Option<u64>,
    mut f: impl FnMut() -> TestResult,
) -> TestResult {
    let bad = |want: Option<u64>, got: u64| match want {
        Some(0) => got != 0,
        Some(min) => got < min,
        None => false,
    };
    // The counters are the whole machine's: a round trip of another
    // process in the window counts too (seen once: 2 fast calls beside a
    // timed call). Up to three tries; a path that is wrong is wrong in
    // each.
    let mut last = (0, 0);
    for _ in 0..3 {
        let (c0, r0) = fast_counts();
        f()?;
        let (c1, r1) = fast_counts();
        last = (c1 - c0, r1 - r0);
        if !bad(calls, last.0) && !bad(replies, last.1) {
            return Ok(());
        }
    }
    let (dc, dr) = last;
    note!("{what}: {dc} fast calls, {dr} fast reply_recvs (wanted {calls:?}, {replies:?}), three tries");
    Err(what)
}

/// A same-CPU ping-pong takes the fast path both ways; every excluded case
/// (timeout, buffer, handle transfer, receiver on another CPU, no receiver
/// waiting; a reply_recv with a timeout or a bound notification) is
/// answered correctly by the slow path and moves no fast-path counter of
/// its side.
pub fn fast_path_is_taken_and_excluded_cases_are_not() -> TestResult {
    check(util::pin0(), "set_affinity(0)")?;
    let (ep, t) = start_echo(0, 0)?;
    // 90%: a timer interrupt may land between a reply and the next receive.
    let min = CALLS * 9 / 10;
    counted("same-CPU ping-pong", Some(min), Some(min), || {
        ping(ep, CALLS)
    })?;
    counted("a call with a timeout", Some(0), None, || {
        let m = msg(3);
        let r = ok(ipc::call(ep, &m, Some(GUARD_US)), "call with timeout")?;
        check(r == m, "the timed call's reply was wrong")
    })?;
    counted("a call with a buffer", Some(0), None, || {
        let mut r = IpcRegs {
            rdi: ep.0 as u64,
            rsi: ipc::info(9, 0, 0, 64, false),
            r14: cli_page(),
            ..IpcRegs::default()
        };
        ok(raw(Sysnum::IpcCall, &mut r), "call with a buffer")?;
        check(r.rsi as u32 == 9, "the buffer call's reply was wrong")
    })?;
    counted("a call moving a handle", Some(0), None, || {
        let rights = ipc::rights::SEND | ipc::rights::TRANSFER;
        let h = ok(ipc::handle_dup(ep.0, rights, 0), "dup")?;
        let mut r = IpcRegs {
            rdi: ep.0 as u64,
            rsi: ipc::info(11, 1, 0, 0, false),
            handles: ipc::pack(&[h]),
            ..IpcRegs::default()
        };
        ok(raw(Sysnum::IpcCall, &mut r), "call moving a handle")?;
        check(r.rsi as u32 == 11, "the handle call's reply was wrong")
    })?;
    stop_echo(ep, t)?;

    // Nobody receiving yet: the call queues (slow); the echo takes it.
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    counted("a call with no receiver waiting", Some(0), None, || {
        let t = util::spawn(echo_late, ep.0 as u64)?;
        let m = msg(5);
        let r = ok(ipc::call(ep, &m, None), "queued call")?;
        check(r == m, "the queued call's reply was wrong")?;
        stop_echo_thread(ep, t)
    })?;
    ok(ipc::handle_close(ep.0), "close")?;

    // The reply side's exclusions: the receive has a timeout; the server
    // has a bound notification.
    for (mode, what) in [
        (TIMED, "a reply_recv with a timeout"),
        (BOUND, "a reply_recv with a bound notification"),
    ] {
        let (ep, t) = start_echo(0, mode)?;
        counted(what, None, Some(0), || ping(ep, 50))?;
        stop_echo(ep, t)?;
    }

    // A receiver on another CPU: the call needs an IPI (slow path).
    if sys::cpu_count() >= 2 {
        let (ep, t) = start_echo(1, 0)?;
        counted("a call to a receiver on another CPU", Some(0), None, || {
            ping(ep, 50)
        })?;
        stop_echo(ep, t)?;
    }
    Ok(())
}

/// An echo that starts receiving only 5 ms after it was spawned (so the
/// first call finds nobody waiting and queues); `arg`: the endpoint.
extern "C" fn echo_late(arg: u64) -> ! {
    sys::sleep_ns(5_000_000);
    echo(arg)
}

fn stop_echo_thread(ep: Endpoint, t: util::Thread) -> TestResult {
    ok(
        ipc::call(
            ep,
            &Message {
                label: STOP,
                words: [0; 6],
            },
            Some(GUARD_US),
        ),
        "stop the echo",
    )?;
    util::expect_ok(t.join()?)
}

/// Whether `got` holds `want` as far as `fpu::store` reads it back (XMM, and
/// the YMM upper halves with `avx`; MXCSR and FCW without their status
/// bits), as [`SimdState::check`] compares, without its note.
pub(crate) fn same(got: &SimdState, want: &SimdState, avx: bool) -> bool {
    let lanes = if avx { 4 } else { 2 };
    got.regs
        .iter()
        .zip(want.regs.iter())
        .all(|(g, w)| g[..lanes] == w[..lanes])
        && got.mxcsr & !0x3f == want.mxcsr & !0x3f
        && got.fcw & 0x0f3f == want.fcw & 0x0f3f
}

/// Set by the FPU echo when its registers were wrong after a round trip.
pub(crate) static FPU_BAD: AtomicU64 = AtomicU64::new(0);

/// An echo on CPU 0 whose SIMD/FPU registers hold pattern `arg >> 32` for
/// its whole life: checked after every receive. `arg`: endpoint (low 32).
pub(crate) extern "C" fn fpu_echo(arg: u64) -> ! {
    let ep = Endpoint(arg as u32);
    if sys::set_affinity(0).is_err() {
        sys::thread_exit(1);
    }
    let avx = util::has_avx();
    let want = SimdState::pattern(arg >> 32);
    fpu::load(&want, avx);
    let mut got = SimdState::zeroed();
    let mut next = ipc::recv(ep, None);
    loop {
        let Ok(ipc::Received::Msg { msg, .. }) = next else {
            sys::thread_exit(3);
        };
        fpu::store(&mut got, avx);
        if !same(&got, &want, avx) {
            FPU_BAD.fetch_add(1, Ordering::SeqCst);
        }
        if msg.label == STOP {
            let _ = ipc::reply(&Message::default());
            sys::thread_exit(0);
        }
        next = ipc::reply_recv(ep, &msg, None);
    }
}

/// Both sides of a fast-path ping-pong have live SIMD/FPU state (every XMM
/// or YMM register, MXCSR, the x87 control word, each side its own
/// pattern): after thousands of round trips each still has its own.
pub fn fast_path_keeps_both_sides_fpu_state() -> TestResult {
    check(util::pin0(), "set_affinity(0)")?;
    FPU_BAD.store(0, Ordering::SeqCst);
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let t = util::spawn(fpu_echo, ep.0 as u64 | 0x5eed_0001 << 32)?;
    sys::sleep_ns(2_000_000);
    let avx = util::has_avx();
    let want = SimdState::pattern(0x0c1e_0002);
    let mut got = SimdState::zeroed();
    fpu::load(&want, avx);
    let mut wrong = 0u64;
    let r = counted("FPU ping-pong", Some(CALLS * 9 / 10), None, || {
        for i in 0..CALLS {
            let m = msg(i);
            if ok(ipc::call(ep, &m, None), "call")? != m {
                return Err("a reply was not the echo of its call");
            }
            fpu::store(&mut got, avx);
            if !same(&got, &want, avx) {
                if wrong == 0 {
                    let _ = got.check(&want, avx); // notes the first difference
                }
                wrong += 1;
            }
        }
        Ok(())
    });
    stop_echo_thread(ep, t)?;
    ok(ipc::handle_close(ep.0), "close")?;
    r?;
    let srv = FPU_BAD.load(Ordering::SeqCst);
    if wrong != 0 || srv != 0 {
        note!("client's registers wrong after {wrong} calls, server's after {srv}");
        return Err("SIMD/FPU state changed across fast-path round trips");
    }
    Ok(())
}

// The kill-race child: its first handle (given by the parent) is an
// endpoint. `arg` (rdi): mode | CPU-for-the-killer << 8.
// - mode 0 (server killed): a server thread on CPU 0 answers every call
//   with reply_recv (fast-path eligible); the main thread moves to the
//   killer CPU, sleeps 100 ms and calls process_exit(7) while the parent's
//   clients ping-pong with the server.
// - mode 1 (client killed): a client thread on CPU 0 calls the parent's
//   server in a loop (register-only, no timeout); the main thread kills
//   the process the same way.
core::arch::global_asm!(
    ".pushsection .rodata.mica_tests_fastpath_child, \"a\"",
    "mica_tests_fastpath_child:",
    "mov r12, rdi",              // r12: the argument
    // Wait for the parent's handle_give before thread_spawn: the spawn's
    // thread handle would otherwise take the first slot (FIRST_HANDLE)
    // and the endpoint land in the next, so the server (or client) used
    // a thread handle for ever (breakit2: 0 calls answered in about one
    // boot of five at -smp 2, where the child runs before the give). A
    // zero-bit signal is BadHandle until the slot names something.
    "30:",
    "mov edi, {h}",
    "xor esi, esi",
    "mov eax, {signal}",
    "syscall",
    "cmp rax, -{bad_handle}",
    "jne 31f",
    "mov eax, {yield_}",
    "syscall",
    "jmp 30b",
    "31:",
    "mov rdi, {stack}",          // a page for the spawned thread's stack
    "mov esi, 4096",
    "mov edx, {write}",
    "mov eax, {map_anon}",
    "syscall",
    "lea rdi, [rip + 4f]",       // mode 0: the server
    "lea rax, [rip + 5f]",       // mode 1: the client
    "test r12b, 1",
    "cmovnz rdi, rax",
    "mov rsi, {stack_top}",
    "mov eax, {spawn}",
    "syscall",
    "mov rdi, r12",              // the killer CPU
    "shr rdi, 8",
    "mov eax, {affinity}",
    "syscall",
    "mov edi, 100000000",        // 100 ms of fast calls
    "mov eax, {sleep}",
    "syscall",
    "mov edi, 7",
    "mov eax, {pexit}",          // kills the other thread mid-ping-pong
    "syscall",
    "ud2",
    "4:",                        // server (on the endpoint FIRST_HANDLE)
    "xor edi, edi",
    "mov eax, {affinity}",
    "syscall",
    "40:",
    "mov edi, {h}",
    "xor esi, esi",
    "xor r15d, r15d",
    "mov eax, {recv}",
    "syscall",
    "test rax, rax",
    "jz 41f",
    "mov eax, {yield_}",         // the handle is not given yet: wait
    "syscall",
    "jmp 40b",
    "41:",
    "mov edi, {h}",              // echo: rsi (label) and the words stay
    "mov eax, {reply_recv}",     // (rdi is the badge and rbx/rbp the
    "syscall",                   // received handles after a receive)
    "jmp 41b",
    "5:",                        // client (on the endpoint FIRST_HANDLE)
    "xor edi, edi",
    "mov eax, {affinity}",
    "syscall",
    "51:",                       // (a call before the handle is given
    "mov edi, {h}",              // fails: it is simply repeated)
    "mov esi, 7",                // label 7, register-only, no timeout
    "xor r15d, r15d",
    "mov eax, {call}",
    "syscall",
    "jmp 51b",
    "mica_tests_fastpath_child_end:",
    ".popsection",
    stack = const CHILD_STACK,
    stack_top = const CHILD_STACK + 4096,
    write = const abi::prot::WRITE,
    map_anon = const Sysnum::MapAnon as u64,
    spawn = const Sysnum::ThreadSpawn as u64,
    affinity = const Sysnum::SetAffinity as u64,
    sleep = const Sysnum::SleepNs as u64,
    pexit = const Sysnum::ProcessExit as u64,
    recv = const Sysnum::IpcRecv as u64,
    reply_recv = const Sysnum::IpcReplyRecv as u64,
    call = const Sysnum::IpcCall as u64,
    yield_ = const Sysnum::Yield as u64,
    signal = const Sysnum::NtfSignal as u64,
    bad_handle = const Error::BadHandle as u64,
    h = const ipc::FIRST_HANDLE,
);

extern "C" {
    static mica_tests_fastpath_child: u8;
    static mica_tests_fastpath_child_end: u8;
}

/// Where the child's spawned thread's stack is (its image is at
/// [`util::CHILD_TEXT`]).
const CHILD_STACK: u64 = 0x5555_0000_0000;

/// Spawns the kill-race child in `mode` with a copy of `ep` (`rights`).
fn spawn_child(mode: u64, ep: Endpoint, rights: u32) -> Result<ProcessHandle, &'static str> {
    let text = crate::lifecycle::code(
        core::ptr::addr_of!(mica_tests_fastpath_child),
        core::ptr::addr_of!(mica_tests_fastpath_child_end),
    );
    let killer = if sys::cpu_count() >= 2 { 1 } else { 0 };
    crate::util::spawn_server(text, mode | killer << 8, ep, rights)
}

/// Result of a client thread of [`clients_until_error`]: the error code
/// its call loop ended with, or 0 while it runs.
static CLIENT_END: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
static CALLS_MADE: AtomicU64 = AtomicU64::new(0);

/// A client on CPU 0 calling `arg & 0xffff_ffff` (register-only, no
/// timeout) until a call fails; stores the error in `CLIENT_END[arg >> 32]`.
extern "C" fn client_until_error(arg: u64) -> ! {
    let slot = &CLIENT_END[(arg >> 32) as usize & 1];
    if sys::set_affinity(0).is_err() {
        slot.store(1000, Ordering::SeqCst);
        sys::thread_exit(1);
    }
    let ep = Endpoint(arg as u32);
    let m = msg(1);
    loop {
        match ipc::call(ep, &m, None) {
            Ok(r) if r == m => {
                CALLS_MADE.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {
                slot.store(1001, Ordering::SeqCst);
                sys::thread_exit(1);
            }
            Err(e) => {
                slot.store(e as u64, Ordering::SeqCst);
                sys::thread_exit(0);
            }
        }
    }
}

/// Waits up to `ms` for `cond`.
fn within(ms: u64, cond: impl Fn() -> bool) -> bool {
    let end = sys::clock_ns() + ms * 1_000_000;
    while !cond() {
        if sys::clock_ns() > end {
            return false;
        }
        sys::sleep_ns(1_000_000);
    }
    true
}

/// Set by the waiter thread when `process_wait` returned: status + 1.
static CHILD_STATUS: AtomicU64 = AtomicU64::new(0);

/// `arg`: the raw number of the child's process handle.
extern "C" fn waiter(arg: u64) -> ! {
    let st = ProcessHandle::from_raw(arg as u32)
        .wait()
        .unwrap_or(u64::MAX - 1);
    CHILD_STATUS.store(st.wrapping_add(1), Ordering::SeqCst);
    sys::thread_exit(0)
}

/// Waits (watchdog: 10 s) for child `pid` to end with `process_exit(7)`.
fn child_ends(pid: ProcessHandle) -> TestResult {
    CHILD_STATUS.store(0, Ordering::SeqCst);
    let w = util::spawn(waiter, pid.raw() as u64)?;
    if !within(10_000, || CHILD_STATUS.load(Ordering::SeqCst) != 0) {
        return Err("the killed child never ended (hang)");
    }
    w.join()?;
    let st = CHILD_STATUS.load(Ordering::SeqCst) - 1;
    check(
        abi::status::decode(st) == abi::status::Status::Exited(7),
        "the child did not end with its process_exit status",
    )
}

/// A kill racing fast-path calls from another CPU ends exactly as on the
/// slow path: (1) the server's process dies while two clients ping-pong
/// with it: each client's call fails with `PeerDied` (the server held it)
/// or `NotDelivered` (queued or made after the death); (2) a client's
/// process dies while it ping-pongs with our server: the server goes on
/// and answers the next caller. Watchdogs turn a hang into a failure.
pub fn fast_path_kill_races_end_in_errors() -> TestResult {
    check(util::pin0(), "set_affinity(0)")?;
    // (1) The server dies.
    let mut answered = 0;
    for round in 0..3 {
        let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
        let send = ok(ipc::handle_dup(ep.0, ipc::rights::SEND, 0), "dup")?;
        let pid = spawn_child(0, ep, ipc::rights::RECV)?;
        // Our own receive handle goes: the child's is the last one.
        ok(ipc::handle_close(ep.0), "close")?;
        CALLS_MADE.store(0, Ordering::SeqCst);
        let mut ts = heapless::Vec::<util::Thread, 2>::new();
        for k in 0..2u64 {
            CLIENT_END[k as usize].store(0, Ordering::SeqCst);
            let t = util::spawn(client_until_error, send as u64 | k << 32)?;
            let _ = ts.push(t);
        }
        child_ends(pid)?;
        let ended = within(5_000, || {
            CLIENT_END.iter().all(|c| c.load(Ordering::SeqCst) != 0)
        });
        if !ended {
            return Err("a client's call never returned after the server died (hang)");
        }
        for t in ts {
            t.join()?;
        }
        for c in &CLIENT_END {
            let code = c.load(Ordering::SeqCst);
            if code != Error::PeerDied as u64 && code != Error::NotDelivered as u64 {
                note!("round {round}: a client ended with code {code}");
                return Err("a client of a killed server did not get PeerDied or NotDelivered");
            }
        }
        answered += CALLS_MADE.load(Ordering::SeqCst);
        ok(ipc::handle_close(send), "close")?;
    }
    note!("{answered} calls answered before the kills");
    check(answered > 0, "no call was answered before the kills")?;
    // (2) The client dies; our server goes on.
    for _ in 0..3 {
        let (ep, t) = start_echo(0, 0)?;
        let pid = spawn_child(1, ep, ipc::rights::SEND)?;
        child_ends(pid)?;
        // The server survived and answers the next caller.
        let m = msg(9);
        let r = ok(
            ipc::call(ep, &m, Some(GUARD_US)),
            "call after the client died",
        )?;
        check(
            r == m,
            "the server's answer after its client died was wrong",
        )?;
        stop_echo(ep, t)?;
    }
    Ok(())
}

/// The fast paths' register decode (`syscall/ipc.rs` `decode`, which reads
/// a label-only RSI straight from the register) refuses what the generic
/// decoder refuses, in the same order: a receive capacity over 64 KiB is
/// `InvalidArgument` and a receive buffer outside the user half
/// `BadAddress`, both before the handle is looked up (so a bad handle
/// number does not mask them), for `call`, `recv` and `reply_recv`.
pub fn fast_decode_refuses_what_the_decoder_refuses() -> TestResult {
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let cases: [(u64, u64, u64, Error); 4] = [
        // (handle, buffer, R15, expected)
        (ep.0 as u64, cli_page(), 65537, Error::InvalidArgument),
        (0x7fff_0000, cli_page(), 65537, Error::InvalidArgument),
        (ep.0 as u64, 0xffff_8000_0000_0000, 4096, Error::BadAddress),
        (0x7fff_0000, 0xffff_8000_0000_0000, 4096, Error::BadAddress),
    ];
    for n in [Sysnum::IpcCall, Sysnum::IpcRecv, Sysnum::IpcReplyRecv] {
        for (h, buf, r15, want) in cases {
            let mut r = IpcRegs {
                rdi: h,
                rsi: ipc::info(if n == Sysnum::IpcRecv { 0 } else { 1 }, 0, 0, 0, false),
                r14: buf,
                r15,
                ..IpcRegs::default()
            };
            let got = raw(n, &mut r);
            if got != Err(want) {
                note!("{n:?} h {h:#x} buf {buf:#x} r15 {r15:#x}: {got:?}, expected {want:?}");
                let _ = ipc::handle_close(ep.0);
                return Err("the fast decode did not refuse as the decoder does");
            }
        }
    }
    ok(ipc::handle_close(ep.0), "handle_close")?;
    Ok(())
}
