//! Ordering, no loss, no duplication (issue 10's test): [`CLIENTS`] client
//! threads, pinned round-robin to the CPUs, each make [`CALLS`] calls with
//! sequence numbers to one endpoint served by [`WORKERS`] worker threads
//! (also pinned round-robin), each running libipc's `serve` loop (so each
//! waits in `reply_recv`). Every call must be answered exactly once, with
//! its own answer:
//! - client side: each reply names the client, the sequence number and a
//!   check word computed from both;
//! - server side: a client's calls are sequential, so the server must see
//!   each client's numbers exactly in order (a duplicate or a lost delivery
//!   breaks the chain), and the total handled must equal the calls made.
//!
//! The workers stop on a `Stop` request (one per worker: a stopped worker
//! receives no more). Threads are joined through [`join_all`], the one
//! place this file does.

use crate::note;
use crate::util::{self, TestResult};
use abi::status::Status;
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::ipc::{endpoint_create, handle_close, Endpoint};
use libipc::server::{serve, Caller};
use libipc::sys;
use libipc::wire::Handler;

libipc::protocol! {
    /// The ordering test's protocol.
    pub protocol Order<'a>;
    /// Requests.
    pub enum Request {
        /// Call number `seq` of client `client`: `Ack`.
        Seq = 1 => fn seq { client: u64, seq: u64 },
        /// Stops the worker that takes it: `Stopped`.
        Stop = 2 => fn stop {},
    }
    /// Replies.
    pub enum Reply {
        /// The call's own answer.
        Ack = 1 { client: u64, seq: u64, check: u64 },
        /// The worker ends after this reply.
        Stopped = 2 {},
    }
    /// The client.
    pub struct Client;
}

/// Client threads.
const CLIENTS: usize = 6;
/// Calls each client makes.
const CALLS: u64 = 3000;
/// Server worker threads: fewer than the clients, so calls queue, and at
/// `-smp 4` fewer than the CPUs, so some calls always cross CPUs (the
/// client on CPU 3 has no local worker) while others can take the
/// same-CPU hand-off.
const WORKERS: usize = 3;
/// Per call: long enough never to expire in a passing run, so a lost
/// reply shows as `TimedOut`, not as a hang.
const GUARD_US: Option<u32> = Some(3_000_000);

/// The answer's check word: both numbers, mixed.
fn check_word(client: u64, seq: u64) -> u64 {
    seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ client.rotate_left(17)
}

/// Server side, per client: the next sequence number it must see.
static NEXT: [AtomicU64; CLIENTS] = [const { AtomicU64::new(0) }; CLIENTS];
/// Server side: calls handled, and those out of order (or from no client).
static HANDLED: AtomicU64 = AtomicU64::new(0);
static OUT_OF_ORDER: AtomicU64 = AtomicU64::new(0);
/// Client side: the first wrong reply or error, for the note (0: none).
static CLIENT_FAULT: AtomicU64 = AtomicU64::new(0);

/// One worker's handler.
struct Worker {
    stopped: bool,
}

impl Handler<Order> for Worker {
    fn handle<'r>(&'r mut self, _badge: u64, req: Request<'r>) -> Reply<'r> {
        match req {
            Request::Seq { client, seq } => {
                // Relaxed is enough for the checks: a client's calls are
                // ordered by the IPC itself (each call returns before the
                // next is made, the kernel's locks order the hand-over).
                let expected = NEXT
                    .get(client as usize)
                    .map(|n| n.swap(seq + 1, Ordering::Relaxed));
                if expected != Some(seq) {
                    OUT_OF_ORDER.fetch_add(1, Ordering::Relaxed);
                }
                HANDLED.fetch_add(1, Ordering::Relaxed);
                Reply::Ack {
                    client,
                    seq,
                    check: check_word(client, seq),
                }
            }
            Request::Stop {} => {
                self.stopped = true;
                Reply::Stopped {}
            }
        }
    }

    fn done(&self) -> bool {
        self.stopped
    }
}

/// The CPU for thread `i` (round-robin over the online CPUs).
fn cpu_for(i: usize) -> u64 {
    i as u64 % sys::cpu_count().max(1)
}

/// A worker: arg = endpoint | cpu << 32. Exits 0 once stopped.
extern "C" fn worker(arg: u64) -> ! {
    let _ = sys::set_affinity(arg >> 32);
    let mut w = Worker { stopped: false };
    // A register-only protocol: the buffers stay empty.
    let (mut a, mut b) = ([0u8; 64], [0u8; 64]);
    let r = serve::<Order, _>(Endpoint(arg as u32), &mut w, &mut a, &mut b);
    sys::thread_exit(i32::from(r.is_err()))
}

/// A client: arg = endpoint | id << 32 | cpu << 48. Exits 0 iff every
/// reply was its own.
extern "C" fn client(arg: u64) -> ! {
    let (ep, id, cpu) = (arg as u32, (arg >> 32) & 0xffff, arg >> 48);
    let _ = sys::set_affinity(cpu);
    let mut buf = [0u8; 64];
    let mut c = Client::new(Caller::new(Endpoint(ep), GUARD_US), &mut buf);
    for s in 0..CALLS {
        let want = Reply::Ack {
            client: id,
            seq: s,
            check: check_word(id, s),
        };
        let r = c.seq(id, s);
        if r != Ok(want) {
            // Who, at which call, and the error (or 1 for a wrong reply).
            let what = match r {
                Err(libipc::wire::CallError::Transport(e)) => e as u64,
                _ => 1000,
            };
            let _ = CLIENT_FAULT.compare_exchange(
                0,
                what | s << 16 | id << 48,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            sys::thread_exit(1);
        }
    }
    sys::thread_exit(0)
}

/// The threads of the case (the test program has no heap).
type Threads = heapless::Vec<util::Thread, { CLIENTS + WORKERS }>;

/// Joins every thread; true iff all exited with 0.
fn join_all(threads: Threads) -> Result<bool, &'static str> {
    let mut all_ok = true;
    for t in threads {
        all_ok &= t.join()? == Status::Exited(0);
    }
    Ok(all_ok)
}

fn spawn_into(v: &mut Threads, entry: util::Entry, arg: u64) -> TestResult {
    let t = util::spawn(entry, arg)?;
    v.push(t).map_err(|_| "more threads than the case keeps")
}

/// The case: see the module docs.
pub fn calls_from_many_cpus_are_answered_once_in_order() -> TestResult {
    for n in &NEXT {
        n.store(0, Ordering::Relaxed);
    }
    HANDLED.store(0, Ordering::Relaxed);
    OUT_OF_ORDER.store(0, Ordering::Relaxed);
    CLIENT_FAULT.store(0, Ordering::Relaxed);
    let ep = endpoint_create().map_err(|_| "endpoint_create failed")?;
    let start = sys::clock_ns();
    let mut workers = Threads::new();
    for w in 0..WORKERS {
        spawn_into(&mut workers, worker, ep.0 as u64 | cpu_for(w) << 32)?;
    }
    let mut clients = Threads::new();
    for id in 0..CLIENTS {
        let arg = ep.0 as u64 | (id as u64) << 32 | cpu_for(id) << 48;
        spawn_into(&mut clients, client, arg)?;
    }
    let clients_ok = join_all(clients)?;
    let elapsed_ms = (sys::clock_ns() - start) / 1_000_000;
    // Stop the workers (each takes one Stop and receives no more).
    let mut buf = [0u8; 64];
    let mut owner = Client::new(Caller::new(ep, GUARD_US), &mut buf);
    let mut stopped = 0;
    for _ in 0..WORKERS {
        stopped += usize::from(owner.stop() == Ok(Reply::Stopped {}));
    }
    // Only with every worker stopped can the joins return.
    let workers_ok = stopped == WORKERS && join_all(workers)?;
    let _ = handle_close(ep.0);
    let handled = HANDLED.load(Ordering::Relaxed);
    let out_of_order = OUT_OF_ORDER.load(Ordering::Relaxed);
    let fault = CLIENT_FAULT.load(Ordering::Relaxed);
    let ends: [u64; CLIENTS] = core::array::from_fn(|c| NEXT[c].load(Ordering::Relaxed));
    let total = CLIENTS as u64 * CALLS;
    if !clients_ok || fault != 0 {
        note!(
            "client {} at call {}: {} (1000: a wrong reply, else the error code)",
            fault >> 48,
            (fault >> 16) & 0xffff_ffff,
            fault & 0xffff
        );
    }
    if !clients_ok || !workers_ok || handled != total || out_of_order != 0 {
        note!(
            "{handled} of {total} handled, {out_of_order} out of order, per-client ends {ends:?}, \
             {stopped} of {WORKERS} workers stopped, {elapsed_ms} ms"
        );
    }
    if !clients_ok || fault != 0 {
        return Err("a client got a wrong reply or an error");
    }
    if handled != total || out_of_order != 0 || ends.iter().any(|&e| e != CALLS) {
        return Err("a call was lost or delivered twice");
    }
    if !workers_ok {
        return Err("a worker failed or did not stop");
    }
    note!("{total} calls from {CLIENTS} clients to {WORKERS} workers in {elapsed_ms} ms");
    Ok(())
}
