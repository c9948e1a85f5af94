//! cut26e (session 26): a caller's wait record names its server without a
//! reference count (`waitstate::Server`); the server's memory is kept past
//! every interrupts-off reader by a grace period instead
//! (`mem::retire`: a freed thread block goes back to the heap once every
//! CPU took a timer tick, poisoned; `ipc::unlink` checks the server it
//! dereferences for the poison).
//!
//! - [`a_caller_outlives_its_server`]: a server takes one call and then
//!   exits with it held, is killed holding it, or is killed together with
//!   its caller (the caller's own claim and unlink from the server's word
//!   racing the server's exit on another CPU), round after round, the
//!   caller on the server's CPU or another. The caller must end each time
//!   (`PeerDied`, or its kill), the kernel must not stop on the poison,
//!   and every thread and heap block must come back. Seen failing with
//!   the server's exit leaving its held caller waiting
//!   (`ipc::thread_exiting`'s `take` removed): the caller hangs, and its
//!   kill after the server's block went back to the heap stops the kernel
//!   at the poison check ("a caller unlinked from a freed server").
//! - [`thread_churn_gives_thread_memory_back`]: threads created and ended
//!   on every CPU, then the heap must settle: thread blocks waiting for
//!   their grace period are counted as used, so a grace period that never
//!   ends (or a release that frees nothing) leaves the heap grown. Seen
//!   failing with `Batches::poll`'s release freeing nothing.

use crate::break23p::settled_since;
use crate::lifecycle::info;
use crate::note;
use crate::util::{self, ok, TestResult};
use abi::status::Status;
use abi::Error;
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::ipc::{self, Endpoint, Message, Received};
use libipc::sys;

/// Rounds of [`a_caller_outlives_its_server`].
const ROUNDS: u64 = 30;
/// Threads of [`thread_churn_gives_thread_memory_back`].
const CHURN: u64 = 300;

/// Set by the server once it holds its call.
static HELD: AtomicU64 = AtomicU64::new(0);
/// The caller's end: 0 running, else 0x100 | its call's error code.
static CALLER_END: AtomicU64 = AtomicU64::new(0);

/// A server pinned to CPU `arg >> 32 & 0xff` that takes one call on the
/// endpoint `arg as u32` and holds it: exits at once if bit 40 is set,
/// else spins in user mode until killed.
extern "C" fn holding_server(arg: u64) -> ! {
    let _ = sys::set_affinity(arg >> 32 & 0xff);
    if let Ok(Received::Msg { .. }) = ipc::recv(Endpoint(arg as u32), None) {
        HELD.store(1, Ordering::SeqCst);
    }
    if arg >> 40 & 1 == 1 {
        sys::thread_exit(0)
    }
    // No PAUSE in this spin: QEMU's TCG leaves its translated code for
    // the main loop at every PAUSE, which under record/replay (one CPU,
    // where this spin lasts until the test thread's next time slice) made
    // the suite's replay of this case take minutes.
    loop {
        core::sync::atomic::compiler_fence(Ordering::SeqCst);
    }
}

/// A caller pinned to CPU `arg >> 32`: one register-only call on the
/// endpoint `arg as u32`, its end in [`CALLER_END`].
extern "C" fn one_caller(arg: u64) -> ! {
    let _ = sys::set_affinity(arg >> 32);
    let m = Message {
        label: 1,
        words: [7, 0, 0, 0, 0, 0],
    };
    let code = match ipc::call(Endpoint(arg as u32), &m, None) {
        Ok(_) => 0xff,
        Err(e) => e as u64,
    };
    CALLER_END.store(0x100 | code, Ordering::SeqCst);
    sys::thread_exit(0)
}

/// Polls `f` every 100 us for up to a second.
fn within_a_second(f: impl Fn() -> bool) -> bool {
    for _ in 0..10_000 {
        if f() {
            return true;
        }
        sys::sleep_ns(100_000);
    }
    f()
}

/// One round: see the module docs. `how`: 0 the server exits holding the
/// call, 1 it is killed holding it, 2 both are killed back to back.
fn round(cpus: u64, r: u64, how: u64) -> TestResult {
    HELD.store(0, Ordering::SeqCst);
    CALLER_END.store(0, Ordering::SeqCst);
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let send = ok(ipc::handle_dup(ep.0, abi::rights::SEND, 0), "dup send")?;
    let exits = u64::from(how == 0) << 40;
    let server = util::spawn(holding_server, exits | ep.0 as u64)?;
    let caller_cpu = r % cpus;
    let caller = util::spawn(one_caller, caller_cpu << 32 | send as u64)?;
    if !within_a_second(|| HELD.load(Ordering::SeqCst) == 1) {
        return Err("the server never took the call");
    }
    match how {
        0 => {}
        1 => ok(server.handle().kill(), "kill the server")?,
        _ if r.is_multiple_of(2) => {
            ok(caller.handle().kill(), "kill the caller")?;
            ok(server.handle().kill(), "kill the server")?;
        }
        _ => {
            ok(server.handle().kill(), "kill the server")?;
            ok(caller.handle().kill(), "kill the caller")?;
        }
    }
    let server_st = server.join()?;
    // Both killed (how 2): the caller's kill ends it, and it may never
    // store its end, so the join below is the wait (a poll here would
    // spend its whole second, 10,000 timer wake-ups a round, which made
    // the record/replay run of the suite take ten minutes for this case).
    let ended = how == 2 || within_a_second(|| CALLER_END.load(Ordering::SeqCst) != 0);
    if !ended {
        // Let the server's block go back to the heap (a sysinfo polls the
        // grace period), then end the caller: its unlink dereferences
        // the server.
        sys::sleep_ns(5_000_000);
        let _ = info()?;
        let _ = caller.handle().kill();
        let _ = caller.join();
        note!("round {r} (how {how}): the caller outlived its server's end");
        return Err("a held caller was not ended by its server's end");
    }
    let caller_st = caller.join()?;
    let _ = ipc::handle_close(send);
    let _ = ipc::handle_close(ep.0);
    let end = CALLER_END.load(Ordering::SeqCst);
    let want_server = if how == 0 {
        Status::Exited(0)
    } else {
        Status::Exited(-1)
    };
    let caller_ok = match how {
        2 => caller_st == Status::Exited(-1) || end == 0x100 | Error::PeerDied as u64,
        _ => end == 0x100 | Error::PeerDied as u64 && caller_st == Status::Exited(0),
    };
    if server_st != want_server || !caller_ok {
        note!("round {r} (how {how}): server {server_st:?}, caller {caller_st:?}, end {end:#x}");
        return Err("a server's end left its held caller with a wrong end");
    }
    Ok(())
}

/// Case: see the module docs.
pub fn a_caller_outlives_its_server() -> TestResult {
    let cpus = sys::cpu_count().max(1);
    let s0 = info()?;
    for r in 0..ROUNDS {
        round(cpus, r, r % 3)?;
    }
    settled_since(&s0, 1024, "threads or heap left after the servers' ends")
}

/// A thread that ends at once on CPU `arg`.
extern "C" fn short_lived(arg: u64) -> ! {
    let _ = sys::set_affinity(arg);
    sys::thread_exit(0)
}

/// Case: see the module docs.
pub fn thread_churn_gives_thread_memory_back() -> TestResult {
    let cpus = sys::cpu_count().max(1);
    // Once first: run queues and lists at their high-water marks.
    util::spawn(short_lived, 0)?.join()?;
    let s0 = info()?;
    for i in 0..CHURN {
        let st = util::spawn(short_lived, i % cpus)?.join()?;
        if st != Status::Exited(0) {
            return Err("a short-lived thread ended wrong");
        }
    }
    settled_since(&s0, 1024, "thread memory not given back after the churn")
}
