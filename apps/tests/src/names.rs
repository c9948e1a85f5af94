//! init's name service and supervision (issue 11 item 1), through the
//! handle init gives this program ([`abi::bootinfo::names::HANDLE`]): the
//! supervised kv server found by name, every kind of bad input refused
//! with its reply, a stale endpoint after a restart, and the supervision
//! storm: the kv server killed 100 times at random moments (the test-only
//! `restart` control, allowed under `init=tests`) while client threads
//! keep calling it by name.

use crate::note;
use crate::util::{self, check, expect, TestResult};
use abi::rights;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kv::Kv;
use libipc::ipc::{endpoint_create, handle_close, handle_dup, notification_create, Endpoint};
use libipc::names::{self, Client, LookupError, Named, Reply, BUFFER, MAX_NAME, MAX_NAMES};
use libipc::server::Caller;
use libipc::sys;
use libipc::wire::{CallError, CopiedHandle, Encoder, Field, Transport, WireError, ERROR_LABEL};

/// Long enough never to expire in a passing run.
const GUARD_US: Option<u32> = Some(5_000_000);
/// How long a case waits for kv to come back.
const BACK_NS: u64 = 10_000_000_000;

/// The name-service endpoint init gave us.
fn service() -> Result<Endpoint, &'static str> {
    names::endpoint(1_000_000_000).ok_or("init gave no name-service handle")
}

/// One call through a fresh name-service client over `ep`, its reply
/// made independent of the client's buffer.
macro_rules! with {
    ($ep:expr, |$c:ident| $call:expr) => {{
        let mut buf = [0u8; BUFFER];
        let mut $c = Client::new(Caller::new($ep, GUARD_US), &mut buf);
        owned($call)
    }};
}

/// `r` without borrows (a `Server` record's name becomes `"kv"` or `"?"`).
fn owned(
    r: Result<Reply<'_>, CallError<libipc::Error>>,
) -> Result<Reply<'static>, CallError<libipc::Error>> {
    r.map(|r| match r {
        Reply::Server {
            name,
            pid,
            restarts,
            registered,
        } => Reply::Server {
            name: if name == "kv" { "kv" } else { "?" },
            pid,
            restarts,
            registered,
        },
        Reply::Registered { instance } => Reply::Registered { instance },
        Reply::Found { ep, instance } => Reply::Found { ep, instance },
        Reply::NotFound {} => Reply::NotFound {},
        Reply::BadName { max } => Reply::BadName { max },
        Reply::Taken {} => Reply::Taken {},
        Reply::Denied {} => Reply::Denied {},
        Reply::Full { capacity } => Reply::Full { capacity },
        Reply::NotEndpoint {} => Reply::NotEndpoint {},
        Reply::NoRights {} => Reply::NoRights {},
        Reply::NoRoom {} => Reply::NoRoom {},
        Reply::End {} => Reply::End {},
        Reply::Restarting {} => Reply::Restarting {},
        Reply::Respawned { process } => Reply::Respawned { process },
        Reply::Rejoined { handle } => Reply::Rejoined { handle },
    })
}

/// kv's record in `servers`: (pid, restarts, registered).
fn kv_record(ep: Endpoint) -> Result<(u64, u64, bool), &'static str> {
    for i in 0.. {
        match with!(ep, |c| c.server(i)).map(|r| format_record(&r)) {
            Ok(Some((true, pid, restarts, reg))) => return Ok((pid, restarts, reg)),
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                note!("servers({i}): {e:?}");
                return Err("servers failed");
            }
        }
    }
    Err("kv is not in init's server table")
}

/// `Some((is kv, pid, restarts, registered))` for a `Server` reply.
fn format_record(r: &Reply<'_>) -> Option<(bool, u64, u64, bool)> {
    match *r {
        Reply::Server {
            name,
            pid,
            restarts,
            registered,
        } => Some((name == "kv", pid, restarts, registered)),
        _ => None,
    }
}

/// kv by name: a put and a get through a [`Named`] client, and init's
/// `servers` record (running, registered).
pub fn kv_found_by_name() -> TestResult {
    let ep = service()?;
    let n = Named::<Kv>::new(ep, "kv", GUARD_US).map_err(|e| {
        note!("lookup kv: {e:?}");
        "kv is not registered"
    })?;
    let mut buf = [0u8; 128];
    let mut c = kv::Client::new(n, &mut buf);
    check(
        matches!(c.put(b"names", b"found"), Ok(kv::Reply::Stored { .. })),
        "put through the name failed",
    )?;
    expect(
        c.get(b"names"),
        Ok(kv::Reply::Value { value: b"found" }),
        "get through the name",
    )?;
    check(
        matches!(c.delete(b"names"), Ok(kv::Reply::Deleted {})),
        "delete failed",
    )?;
    // The handle clients get is badged: no client may stop the server.
    expect(c.shutdown(), Ok(kv::Reply::Denied {}), "shutdown by name")?;
    let (pid, _, registered) = kv_record(ep)?;
    check(pid != 0 && registered, "servers: kv is not up")
}

/// Every kind of bad input gets its reply and changes nothing: names
/// empty, too long or with a bad byte; an unknown name; a register with no
/// handle, with a notification, with an endpoint lacking SEND; `kv`
/// registered by another process (taken); the internal op and the
/// unknown op; a name of this program registered, replaced and found.
pub fn bad_input_is_refused() -> TestResult {
    let ep = service()?;
    let long = [b'a'; MAX_NAME + 1];
    let long = core::str::from_utf8(&long).unwrap_or("");
    let bad = [
        ("", "empty"),
        (long, "too long"),
        ("KV", "capital"),
        ("k v", "space"),
    ];
    for (name, what) in bad {
        let want = Ok(Reply::BadName {
            max: MAX_NAME as u64,
        });
        expect(with!(ep, |c| c.lookup(name)), want, what)?;
        let mine = util::ok(endpoint_create(), "endpoint_create")?;
        let r = with!(ep, |c| c.register(name, CopiedHandle(mine.0)));
        let _ = handle_close(mine.0);
        expect(r, want, what)?;
    }
    expect(
        with!(ep, |c| c.lookup("no.such.name")),
        Ok(Reply::NotFound {}),
        "unknown name",
    )?;
    // A register with the name but no handle: refused before init looks.
    let mut buf = [0u8; BUFFER];
    let mut e = Encoder::new(1, &mut buf);
    ok_wire("t.nohandle".put(&mut e))?;
    let frame = e.finish();
    let m = Caller::new(ep, GUARD_US).call(&frame, &mut buf);
    let got = m.map(|m| (m.label, m.words[0]));
    expect(
        got,
        Ok((ERROR_LABEL, WireError::MissingHandle.code())),
        "register without a handle",
    )?;
    // An op the protocol lacks.
    let frame = Encoder::new(77, &mut buf).finish();
    let got = Caller::new(ep, GUARD_US)
        .call(&frame, &mut buf)
        .map(|m| (m.label, m.words[0]));
    expect(
        got,
        Ok((ERROR_LABEL, WireError::UnknownOp.code())),
        "unknown op",
    )?;
    // A notification is no endpoint.
    let n = util::ok(notification_create(), "notification_create")?;
    let r = with!(ep, |c| c.register("t.ntf", CopiedHandle(n.0)));
    let _ = handle_close(n.0);
    expect(r, Ok(Reply::NotEndpoint {}), "register a notification")?;
    // An endpoint handle without SEND (copied: DUPLICATE | TRANSFER).
    let mine = util::ok(endpoint_create(), "endpoint_create")?;
    let weak = util::ok(
        handle_dup(mine.0, rights::DUPLICATE | rights::TRANSFER, 0),
        "handle_dup",
    )?;
    let r = with!(ep, |c| c.register("t.weak", CopiedHandle(weak)));
    let _ = handle_close(weak);
    expect(r, Ok(Reply::NoRights {}), "register without SEND")?;
    expect(
        with!(ep, |c| c.lookup("t.weak")),
        Ok(Reply::NotFound {}),
        "a refused name",
    )?;
    // Duplicate: `kv` is registered by the kv server, another process.
    let r = with!(ep, |c| c.register("kv", CopiedHandle(mine.0)));
    expect(r, Ok(Reply::Taken {}), "register kv from another process")?;
    // init-internal and its test control.
    expect(
        with!(ep, |c| c.exited(0, 0)),
        Ok(Reply::Denied {}),
        "exited from a client",
    )?;
    expect(
        with!(ep, |c| c.restart("no.such")),
        Ok(Reply::NotFound {}),
        "restart an unknown server",
    )?;
    expect(
        with!(ep, |c| c.server(u64::MAX)),
        Ok(Reply::End {}),
        "servers past the end",
    )?;
    // Our own name: registered, registered again (replaced: a new
    // instance), found with the newer instance.
    let r1 = with!(ep, |c| c.register("t.mine", CopiedHandle(mine.0)));
    let r2 = with!(ep, |c| c.register("t.mine", CopiedHandle(mine.0)));
    let (Ok(Reply::Registered { instance: i1 }), Ok(Reply::Registered { instance: i2 })) = (r1, r2)
    else {
        note!("register t.mine: {r1:?}, {r2:?}");
        let _ = handle_close(mine.0);
        return Err("registering our own name failed");
    };
    let found = names::lookup(ep, "t.mine");
    let _ = handle_close(mine.0);
    match found {
        Ok((h, inst)) => {
            let _ = handle_close(h.0);
            expect(inst, i2, "the instance found")?;
            check(i2 > i1, "re-registering gave no newer instance")
        }
        Err(e) => {
            note!("lookup t.mine: {e:?}");
            Err("our own name was not found")
        }
    }
}

fn ok_wire(r: Result<(), WireError>) -> TestResult {
    r.map_err(|_| "encoding failed")
}

/// A stale endpoint: after `restart("kv")` the handle a client held fails
/// with peer death, a lookup never returns the killed instance, and a
/// newer one is found once kv registered again -- even with the table
/// filled by this program's names (kv's slot is kept for it).
pub fn stale_endpoint_after_restart() -> TestResult {
    let ep = service()?;
    let (old, inst) = names::lookup_newer(ep, "kv", 0, BACK_NS).map_err(|e| {
        note!("lookup kv: {e:?}");
        "kv is not registered"
    })?;
    let (_, restarts0, _) = kv_record(ep)?;
    let r = with!(ep, |c| c.restart("kv"));
    if r != Ok(Reply::Restarting {}) {
        let _ = handle_close(old.0);
        note!("restart: {r:?}");
        return Err("restart kv failed");
    }
    // While kv is down (its name dropped), fill the table with our own
    // names: it says Full before kv's reserved slot is taken, so the
    // restarted kv can still register.
    let mine = util::ok(endpoint_create(), "endpoint_create")?;
    let mut full = None;
    for i in 0..=MAX_NAMES as u8 {
        let name = [b't', b'.', b'f', b'a' + i];
        let name = core::str::from_utf8(&name).unwrap_or("t.f");
        match with!(ep, |c| c.register(name, CopiedHandle(mine.0))) {
            Ok(Reply::Registered { .. }) => {}
            Ok(Reply::Full { capacity }) => {
                full = Some(capacity);
                break;
            }
            other => {
                note!("register {name}: {other:?}");
                let _ = handle_close(mine.0);
                let _ = handle_close(old.0);
                return Err("filling the table failed");
            }
        }
    }
    let _ = handle_close(mine.0);
    check(
        full.is_some_and(|c| c < MAX_NAMES as u64),
        "the table never said Full before its end",
    )?;
    let mut buf = [0u8; 64];
    let dead = kv::Client::new(Caller::new(old, GUARD_US), &mut buf)
        .count()
        .map(|_| ());
    let _ = handle_close(old.0);
    // `restart` answers before kv is gone: a call the dying kv still took
    // is `PeerDied` (seen at -smp 1), one that found it dead `NotDelivered`.
    if !matches!(
        dead,
        Err(CallError::Transport(
            libipc::Error::NotDelivered | libipc::Error::PeerDied
        ))
    ) {
        note!("a call on the killed instance: {dead:?}");
        return Err("a call on the killed instance was not told its peer died");
    }
    match names::lookup(ep, "kv") {
        Ok((h, i)) => {
            let _ = handle_close(h.0);
            check(i != inst, "lookup returned the killed instance")?;
        }
        Err(LookupError::NotFound) => {}
        Err(e) => {
            note!("lookup: {e:?}");
            return Err("lookup failed");
        }
    }
    let (new, inst2) = names::lookup_newer(ep, "kv", inst, BACK_NS).map_err(|e| {
        note!("lookup kv again: {e:?}");
        "kv did not come back"
    })?;
    let back = kv::Client::new(Caller::new(new, GUARD_US), &mut buf)
        .count()
        .map(|r| matches!(r, kv::Reply::Count { .. }));
    let _ = handle_close(new.0);
    check(back == Ok(true), "the new kv does not answer")?;
    check(inst2 > inst, "the new instance is not newer")?;
    let (_, restarts1, _) = kv_record(ep)?;
    expect(restarts1, restarts0 + 1, "restarts counted")
}

/// Kills in the storm.
const KILLS: u64 = 100;
/// Client threads calling during the storm.
const CLIENTS: usize = 2;

static STOP: AtomicBool = AtomicBool::new(false);
/// Per client: the newest instance it completed a call on.
static DONE_ON: [AtomicU64; CLIENTS] = [const { AtomicU64::new(0) }; CLIENTS];
/// Per client: calls that succeeded, retried calls, non-idempotent calls
/// that saw the death, and failures (wrong or failed answers).
static CALLS: AtomicU64 = AtomicU64::new(0);
static RETRIED: AtomicU64 = AtomicU64::new(0);
static DIED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);

fn fail(what: &str) {
    // Relaxed: a counter read after the clients are joined.
    FAILED.fetch_add(1, Ordering::Relaxed);
    note!("client: {what}");
}

/// A client: put/get/delete its own key in a loop through a [`Named`]
/// kv client. Idempotent calls (put, get) must always succeed (retried
/// after a death); a get on the instance the put went to must return
/// exactly that put's value (an answer to another request, or one given
/// twice, shows here); delete may see `PeerDied` (not retried; a
/// `NotDelivered` delete is sent again, and fails only if that fails too).
extern "C" fn client(id: u64) -> ! {
    let Some(ep) = names::endpoint(1_000_000_000) else {
        fail("no name service");
        sys::thread_exit(1)
    };
    let Ok(n) = Named::<Kv>::new(ep, "kv", GUARD_US) else {
        fail("kv not found");
        sys::thread_exit(1)
    };
    let key = [b'c', b'0' + id as u8];
    let mut seq = 0u64;
    let mut buf = [0u8; 128];
    let mut c = kv::Client::new(n, &mut buf);
    // Acquire: the driver's stop is the last thing it does.
    while !STOP.load(Ordering::Acquire) {
        seq += 1;
        let val = seq.to_le_bytes();
        let put = c.put(&key, &val);
        if !matches!(put, Ok(kv::Reply::Stored { .. })) {
            fail("put failed");
            note!("put: {put:?}");
            break;
        }
        let on_put = c.transport().instance();
        let got = c.get(&key).map(|r| match r {
            kv::Reply::Value { value } => Some(value == val),
            kv::Reply::NotFound {} => None,
            _ => Some(false),
        });
        let now = c.transport().instance();
        match got {
            Ok(Some(true)) => {}
            Ok(None) if now != on_put => {}
            other => {
                note!("get: {other:?} (put on {on_put}, now {now})");
                fail("get answered wrong");
                break;
            }
        }
        let del = c.delete(&key).map(|r| match r {
            kv::Reply::Deleted {} => Some(true),
            kv::Reply::NotFound {} => None,
            _ => Some(false),
        });
        match del {
            Ok(Some(true)) => {}
            Ok(None) if c.transport().instance() != on_put => {}
            Err(CallError::Transport(libipc::Error::PeerDied | libipc::Error::NotDelivered)) => {
                // Relaxed: counters.
                DIED.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            other => {
                note!("delete: {other:?}");
                fail("delete answered wrong");
                break;
            }
        }
        // Relaxed: counters; DONE_ON is read by the driver, which only
        // needs to see it eventually.
        CALLS.fetch_add(3, Ordering::Relaxed);
        DONE_ON[id as usize].fetch_max(c.transport().instance(), Ordering::Release);
    }
    RETRIED.fetch_add(c.transport().retries, Ordering::Relaxed);
    sys::thread_exit(0)
}

/// xorshift64: the random moments.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// The supervision storm: kv killed [`KILLS`] times at random moments
/// while [`CLIENTS`] threads call it by name. After each kill kv is back
/// (a newer registration), every client completes a call on it before the
/// next kill (so a kill never lands on a retry), no idempotent call fails
/// and no answer is wrong; init counts every restart. Prints the recovery
/// times.
pub fn supervision_survives_100_kills() -> TestResult {
    let ep = service()?;
    let (_, restarts0, _) = kv_record(ep)?;
    STOP.store(false, Ordering::Relaxed);
    for d in &DONE_ON {
        d.store(0, Ordering::Relaxed);
    }
    for c in [&CALLS, &RETRIED, &DIED, &FAILED] {
        c.store(0, Ordering::Relaxed);
    }
    let (h0, mut inst) = names::lookup_newer(ep, "kv", 0, BACK_NS).map_err(|_| "kv is not up")?;
    let _ = handle_close(h0.0);
    let mut threads = heapless::Vec::<util::Thread, CLIENTS>::new();
    for id in 0..CLIENTS {
        let t = util::spawn(client, id as u64)?;
        let _ = threads.push(t);
    }
    let mut rng = util_seed();
    let mut recover_us = [0u64; KILLS as usize];
    let mut outcome: TestResult = Ok(());
    for (k, recovered) in recover_us.iter_mut().enumerate() {
        // Every client has called the current instance: the kill lands on
        // a fresh call (or between calls), never on a retry.
        let t0 = sys::clock_ns();
        while DONE_ON.iter().any(|d| d.load(Ordering::Acquire) < inst)
            && FAILED.load(Ordering::Relaxed) == 0
        {
            if sys::clock_ns() - t0 > BACK_NS {
                outcome = Err("a client made no progress on the new kv");
                break;
            }
            sys::yield_now();
        }
        if outcome.is_err() || FAILED.load(Ordering::Relaxed) != 0 {
            break;
        }
        // A random moment: 0 to ~1 ms into the clients' calls.
        let spin = next(&mut rng) % 1_000_000;
        let s0 = sys::clock_ns();
        while sys::clock_ns() - s0 < spin {
            crate::util::relax();
        }
        let killed = sys::clock_ns();
        if with!(ep, |c| c.restart("kv")) != Ok(Reply::Restarting {}) {
            outcome = Err("restart kv failed");
            break;
        }
        match names::lookup_newer(ep, "kv", inst, BACK_NS) {
            Ok((h, i)) => {
                *recovered = (sys::clock_ns() - killed) / 1000;
                let _ = handle_close(h.0);
                inst = i;
            }
            Err(e) => {
                note!("after kill {k}: {e:?}");
                outcome = Err("kv did not come back");
                break;
            }
        }
    }
    // Release: pairs with the clients' Acquire load.
    STOP.store(true, Ordering::Release);
    for t in threads {
        let _ = t.join();
    }
    outcome?;
    let failed = FAILED.load(Ordering::Relaxed);
    expect(failed, 0, "client failures")?;
    let (_, restarts1, registered) = kv_record(ep)?;
    expect(restarts1 - restarts0, KILLS, "restarts init counted")?;
    check(registered, "kv is not registered after the storm")?;
    recover_us.sort_unstable();
    note!(
        "supervision: {KILLS} kills, {} recoveries; recovery min {} us, median {} us, max {} us; \
         {} client calls, {} retried, {} non-idempotent saw PeerDied",
        KILLS,
        recover_us[0],
        recover_us[KILLS as usize / 2],
        recover_us[KILLS as usize - 1],
        CALLS.load(Ordering::Relaxed),
        RETRIED.load(Ordering::Relaxed),
        DIED.load(Ordering::Relaxed),
    );
    Ok(())
}

/// A seed from the clock.
fn util_seed() -> u64 {
    libipc::bench::rdtsc() | 1
}

// The table limit is what the docs say.
const _: () = assert!(MAX_NAMES >= 8);
