//! Supervision under injected faults (issue 11): `console` and `loader`
//! killed at random moments through the name service's test-only
//! `Restart` control while client threads print through the console and
//! spawn through procmgr and the loader.
//!
//! - `supervise_console_and_loader_killed_at_random`: [`kills`] kills of
//!   each (seeded; the seed is printed, `supervise.seed=` replays it),
//!   in a random order with a random pause before each. After each kill
//!   the killer waits until the name names a newer instance and a request
//!   to it succeeds (a `read` on `console`, a `load` of an unknown module
//!   on `loader`): that is the recovery time it reports (min/median/max,
//!   as a `note:` and as `BENCH` lines). Meanwhile [`WRITERS`] threads
//!   print sequence-numbered lines (`svq-w<k>-<n>-end`), all but the last
//!   through a named console client ([`Named`]), the last through
//!   `print!`'s own path ([`console::write_piece`]), and one thread spawns
//!   `hello` through procmgr and waits for it, again and again.
//!
//! A write the console died holding is *told* failed (`PeerDied`, never
//! sent again: it may or may not have been printed). A write no console
//! ever took (`NotDelivered`) must be sent again to the successor by
//! libipc, to each newer instance up to `wire::resend::MAX_RESENDS`
//! times, so it may be told failed only if all those resends failed too;
//! a writer that sees a `NotDelivered` write given up after fewer
//! resends fails the case (notdeliv; the bound is gaps, session 19). A told-failed write is reported in
//! the kernel's voice (`supervise: told-failed w<k> <n>`, through
//! `debug_write`, which does not depend on the console); at the end each
//! writer says how many it wrote (`supervise: w<k> wrote <N> lines`).
//! The smoke harness (scripts/smoke.sh, `check_supervise_seq`) then
//! checks the transcript: every `svq-w<k>-<n>-end` for `n < N` appears
//! exactly once (at most once if told failed), in order, and none beyond.
//! Here the case checks that each writer's failures were only `PeerDied`
//! or a resent `NotDelivered`, no more than the console's deaths, that a
//! spawn failed only with peer death (the loader died under procmgr's
//! retry too), never for long,
//! and that `hello` exited 0,
//! that init counted exactly the kills as restarts, and that procmgr never
//! died (same pid, no restart).
//!
//! How many kills: [`kills`], from init's argument to the suite (the boot
//! command line's `supervise.kills=`, see init's `run_tests`), else
//! [`DEFAULT_KILLS`]. scripts/smoke.sh runs 100 in `tests-smp4` and the
//! default everywhere else `init=tests` boots.

use crate::note;
use crate::util::{self, check, TestResult};
use abi::status::{Ended, Status};
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use libipc::console::{self, Console};
use libipc::ipc::{self, Endpoint};
use libipc::loader;
use libipc::names::{self, Named};
use libipc::procmgr as pm;
use libipc::server::Caller;
use libipc::wire::resend::MAX_RESENDS;
use libipc::wire::CallError;
use libipc::{println, sys, Error};

/// Kills of each server when the command line names none.
pub const DEFAULT_KILLS: u64 = 5;
/// The most kills of each a run takes (the recovery times' array).
pub const MAX_KILLS: u64 = 500;
/// Printing threads (the last one through `print!`'s path).
pub const WRITERS: u64 = 3;
/// The longest random pause before a kill.
const MAX_PAUSE_NS: u64 = 8_000_000;
/// A spawn is tried again this long before the case fails.
const SPAWN_PATIENCE_NS: u64 = 10_000_000_000;
/// Each call's limit (never reached in a passing run).
const CALL_US: Option<u32> = Some(10_000_000);

/// Kills of each server (0: [`DEFAULT_KILLS`]); set by `main` from its
/// argument before any case runs (Relaxed: the case thread's spawn orders it).
static KILLS: AtomicU64 = AtomicU64::new(0);
/// The seed (0: from the clock).
static SEED: AtomicU64 = AtomicU64::new(0);

/// Takes the suite's argument: kills of each in bits 0..16, the seed above
/// (0 for either: the default).
pub fn configure(arg: u64) {
    KILLS.store(arg & 0xffff, Ordering::Relaxed);
    SEED.store(arg >> 16, Ordering::Relaxed);
}

/// Kills of each server this run.
pub fn kills() -> u64 {
    match KILLS.load(Ordering::Relaxed) {
        0 => DEFAULT_KILLS,
        n => n.min(MAX_KILLS),
    }
}

/// Set to stop the client threads (Relaxed: polled; the joins order the end).
static STOP: AtomicBool = AtomicBool::new(false);
/// Console deaths so far (the writers' failures are bounded by it).
static CONSOLE_KILLS: AtomicU64 = AtomicU64::new(0);
/// Per writer: lines told failed.
static TOLD_FAILED: [AtomicU64; WRITERS as usize] = [const { AtomicU64::new(0) }; WRITERS as usize];
/// Per writer: the sequence numbers told failed (the first [`MAX_KILLS`];
/// reported after the run, so the kernel's log stays quiet while the
/// console prints).
static FAILED_SEQ: [[AtomicU64; MAX_KILLS as usize]; WRITERS as usize] =
    [const { [const { AtomicU64::new(0) }; MAX_KILLS as usize] }; WRITERS as usize];
/// Per writer: lines written (the next sequence number).
static WROTE: [AtomicU64; WRITERS as usize] = [const { AtomicU64::new(0) }; WRITERS as usize];
/// Spawns that succeeded and that failed (and were tried again).
static SPAWNED: AtomicU64 = AtomicU64::new(0);
static SPAWN_FAILED: AtomicU64 = AtomicU64::new(0);

/// A line of at most 96 bytes, formatted on the stack.
struct Line {
    buf: [u8; 96],
    len: usize,
}

impl Line {
    fn new() -> Self {
        Line {
            buf: [0; 96],
            len: 0,
        }
    }
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let b = s.as_bytes();
        let end = self.len + b.len();
        if end > self.buf.len() {
            return Err(core::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(b);
        self.len = end;
        Ok(())
    }
}

/// Prints `args` in the kernel's log (not through the console, which
/// may be dead right now).
fn kernel_say(args: core::fmt::Arguments<'_>) {
    let mut l = Line::new();
    let _ = l.write_fmt(args);
    let _ = sys::debug_write(l.bytes());
}

fn names_ep() -> Result<Endpoint, &'static str> {
    names::endpoint(1_000_000_000).ok_or("init gave no name-service handle")
}

/// In a [`FAILED_SEQ`] slot: the write was `NotDelivered` after it was
/// sent again [`MAX_RESENDS`] times, not `PeerDied`.
const RESENT: u64 = 1 << 63;

/// Records writer `k`'s write `n` as told failed (`how`: 0 for
/// `PeerDied`, [`RESENT`]).
fn told_failed(k: u64, n: u64, how: u64) {
    let i = TOLD_FAILED[k as usize].fetch_add(1, Ordering::Relaxed);
    if let Some(slot) = FAILED_SEQ[k as usize].get(i as usize) {
        slot.store(n | how, Ordering::Relaxed);
    }
}

/// How one line's write ended, for [`write_lines`].
enum Wrote<E> {
    /// Written.
    Yes,
    /// Told failed as it may be: [`told_failed`]'s `how` (0 for
    /// `PeerDied`, [`RESENT`]).
    Failed(u64),
    /// Anything else: the writer reports it and stops with 1.
    Other(E),
}

/// The loop both kinds of writer run: `svq-w<k>-<n>-end` for n = 0, 1, ...
/// through `write`, 300 µs apart, until told to stop; then the count goes
/// to [`WROTE`] and the thread ends: 0, or 1 after an unexpected outcome
/// (`what` names the call in the report).
fn write_lines<E: core::fmt::Debug>(
    k: u64,
    what: &str,
    mut write: impl FnMut(&[u8]) -> Wrote<E>,
) -> ! {
    let mut n = 0u64;
    let mut code = 0;
    // Relaxed: a flag polled in a loop.
    while !STOP.load(Ordering::Relaxed) {
        let mut l = Line::new();
        let _ = writeln!(l, "svq-w{k}-{n}-end");
        match write(l.bytes()) {
            Wrote::Yes => {}
            Wrote::Failed(how) => told_failed(k, n, how),
            Wrote::Other(other) => {
                kernel_say(format_args!("supervise: w{k} {what} {n}: {other:?}\n"));
                code = 1;
                n += 1;
                break;
            }
        }
        n += 1;
        sys::sleep_ns(300_000);
    }
    WROTE[k as usize].store(n, Ordering::Relaxed);
    sys::thread_exit(code)
}

/// The last writer: the same lines through `print!`'s path
/// ([`console::write_piece`], what `println!`'s flush calls). Exit 0, or 1
/// if a line was given up other than after `PeerDied` or a resend.
extern "C" fn print_writer(k: u64) -> ! {
    write_lines(k, "print", |line| match console::write_piece(line) {
        console::Printed::Yes => Wrote::Yes,
        // Maybe printed: never sent again.
        console::Printed::Dropped {
            error: Error::PeerDied,
            ..
        } => Wrote::Failed(0),
        // Never taken, sent again to each newer console up to the bound,
        // and every one failed too (gaps: fewer resends than the bound
        // would be a line given up too early).
        console::Printed::Dropped { resends, .. } if resends == MAX_RESENDS => {
            Wrote::Failed(RESENT)
        }
        other => Wrote::Other(other),
    })
}

/// A writer: prints `svq-w<k>-<n>-end` for n = 0, 1, ... until told to stop.
/// Exit 0, or 1 if a write failed with anything but `PeerDied` or a
/// `NotDelivered` that was sent again (and failed again).
extern "C" fn writer(k: u64) -> ! {
    let Some(names_ep) = names::endpoint(1_000_000_000) else {
        sys::thread_exit(2)
    };
    let Ok(named) = Named::<Console>::new(names_ep, console::NAME, CALL_US) else {
        sys::thread_exit(3)
    };
    let mut buf = [0u8; 160];
    let mut c = console::Client::new(named, &mut buf);
    write_lines(k, "write", |line| {
        let retries = c.transport().retries;
        let r = c
            .write(line)
            .map(|r| matches!(r, console::Reply::Written { .. }));
        // Sent again up to the bound (gaps), each to a newer console.
        let resent = c.transport().retries - retries == u64::from(MAX_RESENDS);
        match r {
            Ok(true) => Wrote::Yes,
            Err(CallError::Transport(Error::PeerDied)) => Wrote::Failed(0),
            // Never taken: Named sent it again up to the bound, and every
            // resend failed too.
            Err(CallError::Transport(Error::NotDelivered)) if resent => Wrote::Failed(RESENT),
            other => Wrote::Other(other),
        }
    })
}

/// The spawner: `hello quiet` through procmgr, waited for, again and again.
/// Exit 0, 1 if a spawn kept failing, 2 if hello did not exit 0, 3 if a
/// spawn failed with anything but peer death.
extern "C" fn spawner(_: u64) -> ! {
    let mut failing_since = None;
    while !STOP.load(Ordering::Relaxed) {
        match pm::spawn("hello", hello_quiet(), b"") {
            Ok(pid) => {
                failing_since = None;
                match pm::wait(Some(pid), Some(10_000_000)) {
                    Ok((_, Ended::Exited(0))) => {
                        SPAWNED.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        kernel_say(format_args!("supervise: hello pid {pid}: {other:?}\n"));
                        sys::thread_exit(2)
                    }
                }
            }
            // Only the loader dying under procmgr's retry too may fail a
            // spawn (`hello` exists: `NotFound` would be a lie).
            Err(e) if e != Error::PeerDied && e != Error::NotDelivered => {
                kernel_say(format_args!("supervise: spawn failed: {e}\n"));
                sys::thread_exit(3)
            }
            Err(e) => {
                SPAWN_FAILED.fetch_add(1, Ordering::Relaxed);
                let now = sys::clock_ns();
                let since = *failing_since.get_or_insert(now);
                if now - since > SPAWN_PATIENCE_NS {
                    kernel_say(format_args!("supervise: spawn keeps failing: {e}\n"));
                    sys::thread_exit(1)
                }
                sys::sleep_ns(1_000_000);
            }
        }
    }
    sys::thread_exit(0)
}

/// hello's argv that makes it exit 0 at once.
fn hello_quiet() -> &'static [u8] {
    b"quiet\0"
}

/// A small seeded generator (xorshift64*).
struct Rng(abi::rng::XorShift64Star);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The supervised server `name`'s record: (pid, restarts).
fn record(names_ep: Endpoint, name: &str) -> Option<(u64, u64)> {
    let mut buf = [0u8; names::BUFFER];
    for i in 0.. {
        let mut c = names::Client::new(Caller::new(names_ep, CALL_US), &mut buf);
        match c.server(i) {
            Ok(names::Reply::Server {
                name: n,
                pid,
                restarts,
                ..
            }) if n == name => return Some((pid, restarts)),
            Ok(names::Reply::Server { .. }) => {}
            _ => return None,
        }
    }
    None
}

/// Whether a request to the server behind `ep` (named `name`) is answered.
fn answers(ep: Endpoint, name: &str) -> bool {
    if name == console::NAME {
        // A read on `console` answers at once and prints nothing.
        let mut buf = [0u8; 128];
        let mut c = console::Client::new(Caller::new(ep, CALL_US), &mut buf);
        c.read(1).is_ok()
    } else {
        // Builds nothing: the module does not exist.
        let mut buf = [0u8; 256];
        let mut c = loader::Client::new(Caller::new(ep, CALL_US), &mut buf);
        matches!(
            c.load("no-such-module", b"", b""),
            Ok(loader::Reply::NotFound {})
        )
    }
}

/// Kills `name` once and waits for its successor to answer: the time from
/// the kill to that answer, in ns.
fn kill_and_recover(names_ep: Endpoint, name: &'static str) -> Result<u64, &'static str> {
    let (ep, old) = names::lookup_newer(names_ep, name, 0, names::RECOVERY_NS)
        .map_err(|_| "a server was not registered before its kill")?;
    let _ = ipc::handle_close(ep.0);
    let start = sys::clock_ns();
    let mut buf = [0u8; names::BUFFER];
    let mut c = names::Client::new(Caller::new(names_ep, CALL_US), &mut buf);
    check(
        matches!(c.restart(name), Ok(names::Reply::Restarting {})),
        "the Restart control was refused",
    )?;
    if name == console::NAME {
        CONSOLE_KILLS.fetch_add(1, Ordering::Relaxed);
    }
    let mut stale = old;
    loop {
        let (ep, instance) = names::lookup_newer(names_ep, name, stale, names::RECOVERY_NS)
            .map_err(|_| "a killed server did not come back")?;
        let ok = answers(ep, name);
        let _ = ipc::handle_close(ep.0);
        if ok {
            return Ok(sys::clock_ns() - start);
        }
        // Cannot happen unless something else killed it again.
        check(
            sys::clock_ns() - start < names::RECOVERY_NS,
            "a restarted server does not answer",
        )?;
        stale = instance;
    }
}

/// The recovery times (ns), one per kill.
static mut TIMES: [u64; 2 * MAX_KILLS as usize] = [0; 2 * MAX_KILLS as usize];

/// Case: see the module docs.
pub fn console_and_loader_killed_at_random() -> TestResult {
    let names_ep = names_ep()?;
    let r = killed_at_random(names_ep);
    reattach(names_ep);
    r
}

fn killed_at_random(names_ep: Endpoint) -> TestResult {
    let each = kills();
    let seed = match SEED.load(Ordering::Relaxed) {
        0 => (libipc::bench::rdtsc() & 0xffff_ffff_ffff) | 1,
        s => s,
    };
    note!("supervise: seed {seed} (replay with supervise.seed={seed}), {each} kills of each");
    let mut rng = Rng(abi::rng::XorShift64Star(seed));
    let (pm_pid, pm_restarts) =
        record(names_ep, libipc::procmgr::NAME).ok_or("no procmgr in init's server table")?;
    let (_, console0) = record(names_ep, console::NAME).ok_or("no console in init's table")?;
    let (_, loader0) = record(names_ep, loader::NAME).ok_or("no loader in init's table")?;

    STOP.store(false, Ordering::Relaxed);
    CONSOLE_KILLS.store(0, Ordering::Relaxed);
    SPAWNED.store(0, Ordering::Relaxed);
    SPAWN_FAILED.store(0, Ordering::Relaxed);
    let mut threads = heapless::Vec::<util::Thread, { WRITERS as usize + 1 }>::new();
    for k in 0..WRITERS - 1 {
        let _ = threads.push(util::spawn(writer, k)?);
    }
    let _ = threads.push(util::spawn(print_writer, WRITERS - 1)?);
    let _ = threads.push(util::spawn(spawner, 0)?);

    // SAFETY: only this case touches TIMES, from this one thread.
    let times = unsafe { &mut *core::ptr::addr_of_mut!(TIMES) };
    let (mut left_c, mut left_l) = (each, each);
    let mut n = 0;
    let mut failed = None;
    while left_c + left_l > 0 {
        let console_next = rng.below(left_c + left_l) < left_c;
        let name = if console_next {
            left_c -= 1;
            console::NAME
        } else {
            left_l -= 1;
            loader::NAME
        };
        sys::sleep_ns(rng.below(MAX_PAUSE_NS));
        match kill_and_recover(names_ep, name) {
            Ok(t) => {
                times[n] = t;
                n += 1;
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    // Let the clients use the last successors a moment.
    sys::sleep_ns(20_000_000);
    STOP.store(true, Ordering::Relaxed);
    let mut statuses = [None; WRITERS as usize + 1];
    for (i, t) in threads.into_iter().enumerate() {
        statuses[i] = t.join().ok();
    }
    // What the transcript's judge needs (scripts/check-supervise-seq.sh), in
    // the kernel's voice: the console may be the one that is broken.
    // Relaxed: the joins above ordered the writers' stores.
    for k in 0..WRITERS as usize {
        let told = TOLD_FAILED[k].load(Ordering::Relaxed) as usize;
        for slot in FAILED_SEQ[k].iter().take(told) {
            let v = slot.load(Ordering::Relaxed);
            let (n, how) = (
                v & !RESENT,
                if v & RESENT != 0 {
                    "resent"
                } else {
                    "peer-died"
                },
            );
            kernel_say(format_args!("supervise: told-failed w{k} {n} {how}\n"));
        }
        let wrote = WROTE[k].load(Ordering::Relaxed);
        kernel_say(format_args!("supervise: w{k} wrote {wrote} lines\n"));
    }
    if let Some(e) = failed {
        return Err(e);
    }
    for (k, st) in statuses[..WRITERS as usize].iter().enumerate() {
        if *st != Some(Status::Exited(0)) {
            note!("writer {k}: {st:?}");
            return Err("a writer's write failed other than PeerDied or a resent NotDelivered");
        }
    }
    if statuses[WRITERS as usize] != Some(Status::Exited(0)) {
        note!("spawner: {:?}", statuses[WRITERS as usize]);
        return Err(
            "a spawn through procmgr failed other than PeerDied or kept failing, or hello did not exit 0",
        );
    }
    let console_kills = CONSOLE_KILLS.load(Ordering::Relaxed);
    let mut told = 0;
    for (k, t) in TOLD_FAILED.iter().enumerate() {
        let t = t.load(Ordering::Relaxed);
        told += t;
        if t > console_kills {
            note!("writer {k}: {t} writes told failed, {console_kills} console deaths");
            return Err("more writes failed than the console died");
        }
        check(
            WROTE[k].load(Ordering::Relaxed) > 0,
            "a writer wrote nothing",
        )?;
    }
    let spawned = SPAWNED.load(Ordering::Relaxed);
    let spawn_failed = SPAWN_FAILED.load(Ordering::Relaxed);
    check(spawned > 0, "no spawn succeeded")?;
    let (_, console1) = record(names_ep, console::NAME).ok_or("no console in init's table")?;
    let (_, loader1) = record(names_ep, loader::NAME).ok_or("no loader in init's table")?;
    if console1 - console0 != each || loader1 - loader0 != each {
        note!(
            "restarts: console {} loader {}, {each} kills of each",
            console1 - console0,
            loader1 - loader0
        );
        return Err("init's restart counts differ from the kills");
    }
    check(
        record(names_ep, libipc::procmgr::NAME) == Some((pm_pid, pm_restarts)),
        "procmgr died or was restarted",
    )?;
    reattach(names_ep);
    let times = &mut times[..n];
    times.sort_unstable();
    let us = |t: u64| t / 1000;
    let (min, med, max) = (us(times[0]), us(times[n / 2]), us(times[n - 1]));
    note!(
        "supervise: {n} kills (console {each}, loader {each}), {n} recoveries; kill to answered: min {min} us, median {med} us, max {max} us; {told} writes told failed, {spawned} spawns ({spawn_failed} failed and retried)"
    );
    println!("BENCH name=supervise_recovery unit=us min={min} median={med} iters={n}");
    Ok(())
}

/// Every name a supervised server registers (init/src/names.rs SERVERS).
const RESERVED: [&str; 5] = [
    console::NAME,
    console::INPUT_NAME,
    loader::NAME,
    libipc::procmgr::NAME,
    "kv",
];

/// What registering `name` for our own endpoint `ep` is answered.
fn register(names_ep: Endpoint, name: &str, ep: Endpoint) -> Option<u64> {
    let mut buf = [0u8; names::BUFFER];
    let mut c = names::Client::new(Caller::new(names_ep, CALL_US), &mut buf);
    match c.register(name, libipc::wire::CopiedHandle(ep.0)) {
        Ok(names::Reply::Denied {}) => Some(0),
        Ok(names::Reply::Registered { .. }) => Some(1),
        Ok(names::Reply::Taken {}) => Some(2),
        _ => None,
    }
}

/// Case: a program other than the instance init started for a supervised
/// server cannot register any of that server's names (`console.in` too),
/// neither while it runs nor in the window while init restarts it (the
/// name is dropped, the successor not registered yet): `Denied`. The
/// console comes back with both its names.
pub fn supervised_names_are_reserved() -> TestResult {
    let names_ep = names_ep()?;
    let ep = ipc::endpoint_create().map_err(|_| "endpoint_create failed")?;
    let r = reserved_inner(names_ep, ep);
    let _ = ipc::handle_close(ep.0);
    reattach(names_ep);
    r
}

/// `print!` learns of a console death only from its next write, which it
/// does not send again (see libipc's console client): after the kills,
/// look the console up afresh so the notes and the verdict line (printed
/// by the harness through the same handle) reach the successor.
fn reattach(names_ep: Endpoint) {
    console::detach();
    let _ = console::attach(names_ep);
}

fn reserved_inner(names_ep: Endpoint, ep: Endpoint) -> TestResult {
    // While the servers run: refused (`Taken`: held by the server; a
    // reserved name nobody holds is `Denied`).
    for name in RESERVED {
        match register(names_ep, name, ep) {
            Some(0 | 2) => {}
            other => {
                note!("register {name} (the server running): {other:?} (0 Denied, 1 Registered, 2 Taken)");
                return Err("a supervised name was not refused");
            }
        }
    }
    // The window: the console killed, its names dropped at once, its
    // successor not started yet. Keep trying until it is back.
    let (old_ep, old) = names::lookup_newer(names_ep, console::INPUT_NAME, 0, names::RECOVERY_NS)
        .map_err(|_| "console.in is not registered")?;
    let _ = ipc::handle_close(old_ep.0);
    let mut buf = [0u8; names::BUFFER];
    let mut c = names::Client::new(Caller::new(names_ep, CALL_US), &mut buf);
    check(
        matches!(c.restart(console::NAME), Ok(names::Reply::Restarting {})),
        "the Restart control was refused",
    )?;
    let start = sys::clock_ns();
    let mut tries = 0u64;
    loop {
        for name in [console::INPUT_NAME, console::NAME] {
            tries += 1;
            // `Denied` while the name is free, `Taken` once the successor
            // holds it: refused either way.
            match register(names_ep, name, ep) {
                Some(0 | 2) => {}
                other => {
                    // In the kernel's voice too: a name taken from the
                    // console may keep it from coming back.
                    kernel_say(format_args!(
                        "supervise: register {name} during the restart: {other:?}\n"
                    ));
                    note!("register {name} during the restart (try {tries}): {other:?} (0 Denied, 1 Registered, 2 Taken)");
                    return Err("a supervised name was taken while its server restarted");
                }
            }
        }
        match names::lookup(names_ep, console::INPUT_NAME) {
            Ok((e, instance)) if instance != old => {
                let _ = ipc::handle_close(e.0);
                break;
            }
            Ok((e, _)) => {
                let _ = ipc::handle_close(e.0);
            }
            Err(_) => {}
        }
        check(
            sys::clock_ns() - start < names::RECOVERY_NS,
            "the console did not register console.in again",
        )?;
        // Not a busy loop: at one CPU (and in icount mode) the restart
        // must get the CPU between tries.
        sys::sleep_ns(100_000);
    }
    // And it serves under its name again.
    let (e, _) = names::lookup_newer(names_ep, console::NAME, 0, names::RECOVERY_NS)
        .map_err(|_| "the console did not come back")?;
    let ok = answers(e, console::NAME);
    let _ = ipc::handle_close(e.0);
    check(ok, "the restarted console does not answer")?;
    reattach(names_ep);
    note!("{tries} registrations of console names refused during a console restart");
    Ok(())
}
