//! sched3 (session 25): the hand-off's switch tests no affinity
//! (`sched::direct_or_block`): every hand-off is to a thread waiting in a
//! wait it entered on this CPU (a receiver queued here, or a caller whose
//! `last_cpu` is this CPU), and a thread changes its own CPU set only in
//! `set_affinity`, which moves it off a CPU outside the new set before it
//! returns, so the set allowed this CPU and still does.
//!
//! - [`fast_pair_moving_between_cpus_stays_on_its_cpus`]: a server in
//!   fast `reply_recv`s and one client per CPU in fast `call`s each pin
//!   themselves to another CPU in turn (and unpin themselves) between
//!   their waits: after every wait each runs on the CPU it pinned itself
//!   to, and every reply is right. A hand-off that ignored a set changed
//!   since the wait began (or a `set_affinity` that returned on the old
//!   CPU) would run a thread off its CPU.
//!
//! `Ok` with a note on one CPU (every set allows the one CPU).

use crate::break22::counted;
use crate::note;
use crate::util::{self, check, ok, TestResult};
use abi::status::Status;
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::ipc::{self, Endpoint, Message, Received};
use libipc::sys;

/// Calls each client makes.
const CALLS: u64 = 600;
/// The server's endpoint; waits that returned off the pinned CPU; bad
/// replies.
static EP: AtomicU64 = AtomicU64::new(0);
static OFF_CPU: AtomicU64 = AtomicU64::new(0);
static BAD: AtomicU64 = AtomicU64::new(0);
/// Label of the stop message.
const STOP: u32 = 0xdead;

/// The pin for wait `step` of a thread that starts at CPU `first`:
/// `every` waits pinned to each of the `cpus` CPUs in turn, then `every`
/// unpinned (break25s's case uses it too).
pub(crate) fn pin_for(step: u64, first: u64, cpus: u64, every: u64) -> Option<u64> {
    let phase = (step / every + first) % (cpus + 1);
    (phase < cpus).then_some(phase)
}

/// Counts in `off` a wait that returned off `pin`.
pub(crate) fn check_cpu(pin: Option<u64>, off: &AtomicU64) {
    if pin.is_some_and(|p| sys::cpu_id() != p) {
        off.fetch_add(1, Ordering::SeqCst);
    }
}

/// Client `k` of `cpus` (`arg`: `k << 32 | cpus`): [`CALLS`] fast calls,
/// moving between CPUs every 5.
extern "C" fn client(arg: u64) -> ! {
    let (k, cpus) = (arg >> 32, arg & 0xffff_ffff);
    let ep = Endpoint(EP.load(Ordering::SeqCst) as u32);
    for i in 0..CALLS {
        let pin = pin_for(i, k, cpus, 5);
        if i.is_multiple_of(5) {
            let _ = sys::set_affinity(pin.unwrap_or(u64::MAX));
        }
        let w = k << 32 | i;
        let m = Message {
            label: 1,
            words: [w, 0, 0, 0, 0, 0],
        };
        match ipc::call(ep, &m, None) {
            Ok(r) if r.words[0] == w + 1 => {}
            _ => {
                BAD.fetch_add(1, Ordering::SeqCst);
            }
        }
        check_cpu(pin, &OFF_CPU);
    }
    sys::thread_exit(0)
}

/// Answers with fast `reply_recv`s (word 0 + 1), moving between CPUs
/// every 5 messages (before the `reply_recv` that answers the fifth),
/// until STOP.
extern "C" fn server(cpus: u64) -> ! {
    let ep = Endpoint(EP.load(Ordering::SeqCst) as u32);
    let mut step = 0u64;
    let mut pin = pin_for(step, 0, cpus, 5);
    let _ = sys::set_affinity(pin.unwrap_or(u64::MAX));
    let mut r = ipc::recv(ep, None);
    check_cpu(pin, &OFF_CPU);
    loop {
        let Ok(Received::Msg { msg, .. }) = r else {
            sys::thread_exit(1);
        };
        if msg.label == STOP {
            let _ = ipc::reply(&msg);
            sys::thread_exit(0);
        }
        step += 1;
        if step.is_multiple_of(5) {
            pin = pin_for(step, 0, cpus, 5);
            let _ = sys::set_affinity(pin.unwrap_or(u64::MAX));
        }
        let reply = Message {
            label: 0,
            words: [msg.words[0] + 1, 0, 0, 0, 0, 0],
        };
        r = ipc::reply_recv(ep, &reply, None);
        check_cpu(pin, &OFF_CPU);
    }
}

/// Case: see the module docs.
pub fn fast_pair_moving_between_cpus_stays_on_its_cpus() -> TestResult {
    if sys::cpu_count() < 2 {
        note!("one CPU: every set allows it");
        return Ok(());
    }
    let cpus = sys::cpu_count().clamp(1, 8);
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    EP.store(ep.0 as u64, Ordering::SeqCst);
    OFF_CPU.store(0, Ordering::SeqCst);
    BAD.store(0, Ordering::SeqCst);
    let (calls0, replies0) = (counted(1), counted(2));
    let s = util::spawn(server, cpus)?;
    let mut clients = [const { None }; 8];
    for (k, slot) in clients.iter_mut().enumerate().take(cpus as usize) {
        *slot = Some(util::spawn(client, (k as u64) << 32 | cpus)?);
    }
    for c in clients.into_iter().flatten() {
        util::expect_ok(c.join()?)?;
    }
    let stop = Message {
        label: STOP,
        words: [0; 6],
    };
    let r = ipc::call(ep, &stop, Some(5_000_000));
    let st = s.join()?;
    let _ = ipc::handle_close(ep.0);
    let (calls, replies) = (counted(1) - calls0, counted(2) - replies0);
    note!("{calls} fast calls, {replies} fast replies (with their hand-offs)");
    let (off, bad) = (OFF_CPU.load(Ordering::SeqCst), BAD.load(Ordering::SeqCst));
    if off != 0 || bad != 0 {
        note!("{off} waits returned off the pinned CPU, {bad} bad replies");
        return Err("a thread moving between CPUs ran off its CPU or was answered wrong");
    }
    check(r.is_ok(), "the STOP call failed")?;
    check(
        calls > 0 && replies > 0,
        "no fast call or no fast reply_recv: the hand-offs were not run",
    )?;
    check(st == Status::Exited(0), "the moving server did not exit 0")
}
