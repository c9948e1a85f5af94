//! break22s (session 22): attacks on switchcut's shortened IPC hand-off
//! switch (`sched::switch_prepare::<true, _>`, the frameless hand-off).
//!
//! - [`handoff_keeps_each_threads_fs_gs_bases`]: the user-to-user switch
//!   compares next's FS/GS bases with prev's as the RDMSRs read them
//!   (e03112e) and writes an MSR only when they differ. Two threads on one
//!   CPU ping-pong through the fast path (frameless hand-offs both ways)
//!   with their own FS bases and, at first, one shared GS base (so the GS
//!   write is skipped and the FS write made on every switch); half-way the
//!   client moves both of its bases (`set_fs_base`/`set_gs_base`: the MSR
//!   and its context), after which both differ. Each side reads `fs:[0]`
//!   and `gs:[0]` after every message: always its own.
//!   (`tls::fs_gs_base_survive_preemption` covers the scheduler's generic
//!   switch only.)
//! - [`handoff_switches_the_io_bitmap_out`]: the user-to-user switch's
//!   I/O bitmap compare (the live key in `PerCpu`, 9e20b68). A child
//!   process granted one port echoes on CPU 0, reading that port before
//!   every reply (a #GP there loads its bitmap through `iopb::refresh`:
//!   its bitmap is live whenever it hands the CPU back); a thread of this
//!   program (which has a bitmap of its own without that port) calls it
//!   through the fast path, then reads the port: it must fault (#GP). A
//!   hand-off that left the child's bitmap live would let it read.

use crate::note;
use crate::util::{self, check, ok, TestResult};
use abi::{rights, Sysnum};
use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::hw::{self, IoPorts};
use libipc::ipc::{self, Endpoint, Message, Received};
use libipc::sys;

/// What each base points at (distinct values, so a swapped or stale base
/// reads the wrong one).
static FS_ECHO: AtomicU64 = AtomicU64::new(0xe0f5_0001);
static FS_CLIENT: AtomicU64 = AtomicU64::new(0xc1f5_0002);
static FS_CLIENT2: AtomicU64 = AtomicU64::new(0xc1f5_0003);
static GS_SHARED: AtomicU64 = AtomicU64::new(0x5a9e_0004);
static GS_CLIENT2: AtomicU64 = AtomicU64::new(0xc195_0005);

/// Receives where the echo read bases not its own (or 1 << 32 when it
/// could not set them).
static ECHO_BAD: AtomicU64 = AtomicU64::new(0);

/// Round trips (half before the client's bases move, half after).
const CALLS: u64 = 2000;
const STOP: u32 = 0xdead;

/// The fast `reply_recv`s completed on every CPU (the kernel's counter).
fn fast_replies() -> u64 {
    let read = |k: u64| {
        // SAFETY: cpu_syscalls writes no memory.
        abi::decode_result(unsafe { sys::syscall6(abi::Sysnum::CpuSyscalls, k, 2, 0, 0, 0, 0) })
            .unwrap_or(0)
    };
    (0..sys::cpu_count()).map(read).sum()
}

/// Sets this thread's FS and GS bases to the two statics.
fn set_bases(fs: &AtomicU64, gs: &AtomicU64) -> bool {
    sys::set_fs_base(fs.as_ptr() as u64).is_ok() && sys::set_gs_base(gs.as_ptr() as u64).is_ok()
}

/// The two values this thread's bases should show.
fn want(fs: &AtomicU64, gs: &AtomicU64) -> (u64, u64) {
    (fs.load(Ordering::Relaxed), gs.load(Ordering::Relaxed))
}

/// Pinned to CPU 0 with FS = `FS_ECHO`, GS = `GS_SHARED`: echoes every
/// message on endpoint `arg` with `reply_recv` (the fast path), checking
/// its bases after each receive; exits 0 after replying to [`STOP`].
extern "C" fn echo(arg: u64) -> ! {
    let ep = Endpoint(arg as u32);
    if !util::pin0() || !set_bases(&FS_ECHO, &GS_SHARED) {
        ECHO_BAD.store(1 << 32, Ordering::SeqCst);
        sys::thread_exit(1);
    }
    let mine = want(&FS_ECHO, &GS_SHARED);
    let mut got = ipc::recv(ep, None);
    loop {
        let m = match got {
            Ok(Received::Msg { msg, .. }) => msg,
            _ => sys::thread_exit(3),
        };
        if util::read_fs_gs() != mine {
            ECHO_BAD.fetch_add(1, Ordering::SeqCst);
        }
        if m.label == STOP {
            let _ = ipc::reply(&m);
            sys::thread_exit(0);
        }
        got = ipc::reply_recv(ep, &m, None);
    }
}

/// `CALLS / 2` round trips; counts the calls after which the client's
/// bases were not `mine`.
fn pings(ep: Endpoint, from: u64, mine: (u64, u64), bad: &mut u64) -> TestResult {
    for i in from..from + CALLS / 2 {
        let m = Message {
            label: 7,
            words: [i, !i, i << 7, i ^ 0x55, i + 9, u64::MAX - i],
        };
        if ok(ipc::call(ep, &m, None), "call")? != m {
            return Err("a reply was not the echo of its call");
        }
        if util::read_fs_gs() != mine {
            *bad += 1;
        }
    }
    Ok(())
}

/// Case: see the module docs. The case's own thread is the client.
pub fn handoff_keeps_each_threads_fs_gs_bases() -> TestResult {
    check(util::pin0(), "set_affinity(0)")?;
    ECHO_BAD.store(0, Ordering::SeqCst);
    check(set_bases(&FS_CLIENT, &GS_SHARED), "set the client's bases")?;
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let t = util::spawn(echo, ep.0 as u64)?;
    // Let it reach its receive.
    sys::sleep_ns(2_000_000);
    let before = fast_replies();
    let mut bad_before = 0u64;
    let mut bad_after = 0u64;
    let r = (|| {
        pings(ep, 0, want(&FS_CLIENT, &GS_SHARED), &mut bad_before)?;
        check(
            set_bases(&FS_CLIENT2, &GS_CLIENT2),
            "move the client's bases",
        )?;
        pings(
            ep,
            CALLS / 2,
            want(&FS_CLIENT2, &GS_CLIENT2),
            &mut bad_after,
        )
    })();
    let fast = fast_replies() - before;
    let stop = Message {
        label: STOP,
        words: [0; 6],
    };
    ok(ipc::call(ep, &stop, Some(3_000_000)), "stop the echo")?;
    util::expect_ok(t.join()?)?;
    ok(ipc::handle_close(ep.0), "close")?;
    r?;
    let echo_bad = ECHO_BAD.load(Ordering::SeqCst);
    if bad_before != 0 || bad_after != 0 || echo_bad != 0 {
        note!(
            "client's bases wrong after {bad_before} + {bad_after} calls, echo's after {echo_bad} receives"
        );
        return Err("FS/GS bases changed across fast-path hand-offs");
    }
    if fast < CALLS * 9 / 10 {
        note!("{fast} of {CALLS} replies on the fast path");
        return Err("the echo did not answer on the fast path");
    }
    Ok(())
}

/// COM1's interrupt-enable register: reading it has no effect, and no
/// other case enables it in this program (ipcfast enables only the
/// scratch register, for good: enables are sticky).
const PORT: u16 = 0x3f9;
const IOPORTS_ROOT: IoPorts = IoPorts(abi::boot_handles::tests::IOPORTS);
/// The endpoint the client thread calls.
static IO_EP: AtomicU64 = AtomicU64::new(0);
/// Round trips before the client reads the port.
const IO_CALLS: u64 = 200;

// The child: pins itself to CPU 0, waits for its second handle (the port
// grant, given after the endpoint) and enables it (exit 3 if that fails),
// receives on its first handle (the endpoint), then forever: reads PORT
// (the first read of each hand-off's run faults and is retried with its
// bitmap loaded) and answers with `reply_recv` (register-only, no
// timeout: the fast path). Position-independent, no stack.
global_asm!(
    ".pushsection .rodata.mica_tests_break22s_child, \"a\"",
    "mica_tests_break22s_child:",
    "xor edi, edi",
    "mov eax, {affinity}",       // CPU 0
    "syscall",
    "2:",
    "mov edi, {h} + 1",          // the grant
    "mov eax, {enable}",
    "syscall",
    "cmp rax, -{bad_handle}",    // not given yet?
    "jne 3f",
    "mov eax, {yield_}",
    "syscall",
    "jmp 2b",
    "3:",
    "test rax, rax",
    "jnz 9f",
    "4:",
    "mov edi, {h}",              // the endpoint
    "xor esi, esi",
    "xor r14d, r14d",            // no buffer
    "xor r15d, r15d",            // no timeout
    "mov eax, {recv}",
    "syscall",
    "test rax, rax",
    "jz 5f",
    "mov eax, {yield_}",
    "syscall",
    "jmp 4b",
    "5:",
    "mov dx, {port}",            // dx: the granted port (words[0] clobbered)
    "in al, dx",
    "mov edi, {h}",              // echo: rsi (label) and the other words stay
    "mov eax, {reply_recv}",
    "syscall",
    "jmp 5b",
    "9:",
    "mov edi, 3",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "mica_tests_break22s_child_end:",
    ".popsection",
    affinity = const Sysnum::SetAffinity as u64,
    enable = const Sysnum::IoportEnable as u64,
    recv = const Sysnum::IpcRecv as u64,
    reply_recv = const Sysnum::IpcReplyRecv as u64,
    yield_ = const Sysnum::Yield as u64,
    pexit = const Sysnum::ProcessExit as u64,
    bad_handle = const abi::Error::BadHandle as u64,
    port = const PORT,
    h = const ipc::FIRST_HANDLE,
);

extern "C" {
    static mica_tests_break22s_child: u8;
    static mica_tests_break22s_child_end: u8;
}

/// Pinned to CPU 0: [`IO_CALLS`] register-only calls to the child (exit 2
/// if one fails), then a read of [`PORT`], which must fault; exit 0 if
/// it did not.
extern "C" fn io_client(_: u64) -> ! {
    if !util::pin0() {
        sys::thread_exit(1);
    }
    let ep = Endpoint(IO_EP.load(Ordering::SeqCst) as u32);
    for i in 0..IO_CALLS {
        let mut w = [i, 1, 2, 3, 4, 5];
        let (rc, _) = ipc::call_regs(ep, 7, &mut w);
        if rc != 0 {
            sys::thread_exit(2);
        }
    }
    let _ = hw::inb(PORT);
    sys::thread_exit(0)
}

/// Case: see the module docs.
pub fn handoff_switches_the_io_bitmap_out() -> TestResult {
    check(util::pin0(), "set_affinity(0)")?;
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    IO_EP.store(ep.0 as u64, Ordering::SeqCst);
    let text = crate::lifecycle::code(
        core::ptr::addr_of!(mica_tests_break22s_child),
        core::ptr::addr_of!(mica_tests_break22s_child_end),
    );
    let pid = util::spawn_server(text, 0, ep, rights::RECV)?;
    let r = (|| {
        let grant = ok(hw::ioport_grant(IOPORTS_ROOT, PORT as u64, 1), "grant")?;
        let given = ipc::handle_give(pid, grant.0, rights::IO);
        let _ = ipc::handle_close(grant.0);
        check(
            ok(given, "handle_give")? == ipc::FIRST_HANDLE + 1,
            "the grant is not the child's second handle",
        )?;
        let before = fast_replies();
        let st = util::run(io_client, 0)?;
        let fast = fast_replies() - before;
        if st == abi::status::Status::Exited(2) {
            return Err("a call to the child failed");
        }
        if fast < IO_CALLS * 9 / 10 {
            note!("{fast} of {IO_CALLS} replies on the fast path");
            return Err("the child did not answer on the fast path");
        }
        if st == abi::status::Status::Exited(0) {
            return Err("a thread read a port only its IPC partner's process has");
        }
        util::expect_fault(st, &[13])
    })();
    let _ = sys::process_kill(pid);
    let _ = util::wait_status(pid);
    ok(ipc::handle_close(ep.0), "close")?;
    r
}
