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

use crate::note;
use crate::util::{self, check, ok, TestResult};
use core::sync::atomic::{AtomicU64, Ordering};
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
