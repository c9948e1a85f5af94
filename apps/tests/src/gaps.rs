//! gaps (session 19): the name service's `LookupFor` (a lookup badged for
//! another process's pid, so the console prints a spawned program's lines
//! under its own pid) is procmgr's alone: anyone else could otherwise
//! write console lines under any pid it names. And a request no server
//! took follows the registration while it keeps changing, a bounded
//! number of times (`wire::resend`).

use crate::util::{self, TestResult};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use libipc::console::Console;
use libipc::ipc::{self, Endpoint};
use libipc::names::{Client, Named, Reply, BUFFER};
use libipc::server::Caller;
use libipc::wire::resend::MAX_RESENDS;
use libipc::wire::{CallError, CopiedHandle};
use libipc::{sys, Error};

/// `LookupFor` from the tests program is `Denied` for every pid it could
/// name (init's, the loader's, procmgr's, its own under `init=tests`, 0,
/// a counter badge, `u64::MAX`), and hands out no handle.
pub fn names_lookup_for_is_procmgr_only() -> TestResult {
    let names_ep = Endpoint(abi::bootinfo::names::HANDLE);
    for pid in [1, 2, 5, 6, 0, 1 << 62, u64::MAX] {
        for name in [libipc::console::NAME, "kv"] {
            let mut buf = [0u8; BUFFER];
            let mut c = Client::new(Caller::new(names_ep, None), &mut buf);
            match c.lookup_for(name, pid) {
                Ok(Reply::Denied {}) => {}
                Ok(Reply::Found { ep, .. }) => {
                    let _ = ipc::handle_close(ep.0);
                    crate::note!("lookup_for({name}, {pid}) was answered");
                    return Err("LookupFor was answered for a program other than procmgr");
                }
                other => {
                    crate::note!("lookup_for({name}, {pid}): {other:?}");
                    return Err("LookupFor was not refused with Denied");
                }
            }
        }
    }
    Ok(())
}

/// The name the resend case registers (a fill-the-table case's name: if
/// that case ran first this program owns it already and re-registering
/// reuses its slot).
const DEAD_NAME: &str = "t.fa";
/// Set when the client's call returned: the registering thread stops.
static CALL_DONE: AtomicBool = AtomicBool::new(false);
/// Dead endpoints the registering thread registered.
static REGISTERED: AtomicU64 = AtomicU64::new(0);
/// The most the registering thread registers (more than the bound).
const MAX_DEAD: u64 = 3 * MAX_RESENDS as u64;

fn names_ep() -> Endpoint {
    Endpoint(abi::bootinfo::names::HANDLE)
}

/// Registers a fresh endpoint under [`DEAD_NAME`] and closes the only
/// receive handle: every call to it is `NotDelivered`.
fn register_dead() -> Result<u64, &'static str> {
    let ep = ipc::endpoint_create().map_err(|_| "endpoint_create failed")?;
    let mut buf = [0u8; BUFFER];
    let mut c = Client::new(Caller::new(names_ep(), None), &mut buf);
    let r = c.register(DEAD_NAME, CopiedHandle(ep.0));
    let _ = ipc::handle_close(ep.0);
    match r {
        Ok(Reply::Registered { instance }) => Ok(instance),
        other => {
            crate::note!("register {DEAD_NAME}: {other:?}");
            Err("registering a dead endpoint failed")
        }
    }
}

/// Registers a new dead endpoint every 20 ms until the call returned (or
/// [`MAX_DEAD`] of them).
extern "C" fn registrar(_: u64) -> ! {
    // Relaxed: a stop flag polled in a loop; the count is read after the
    // join, which orders it.
    while !CALL_DONE.load(Ordering::Relaxed) && REGISTERED.load(Ordering::Relaxed) < MAX_DEAD {
        sys::sleep_ns(20_000_000);
        if register_dead().is_err() {
            sys::thread_exit(1);
        }
        REGISTERED.fetch_add(1, Ordering::Relaxed);
    }
    sys::thread_exit(0)
}

/// A `Named` call whose server is dead, while the name is registered again
/// and again, each time to another dead endpoint: libipc resends it to
/// each newer instance and gives up with `NotDelivered` after exactly
/// `MAX_RESENDS` resends (before gaps: after one; unbounded, it would
/// follow every registration and then wait out the recovery time).
pub fn names_resend_follows_newer_instances_up_to_the_bound() -> TestResult {
    let first = register_dead()?;
    let named = Named::<Console>::new(names_ep(), DEAD_NAME, None).map_err(|e| {
        crate::note!("lookup {DEAD_NAME}: {e:?}");
        "lookup of the dead endpoint failed"
    })?;
    // Relaxed: set before the thread that reads them starts.
    CALL_DONE.store(false, Ordering::Relaxed);
    REGISTERED.store(0, Ordering::Relaxed);
    let t = util::spawn(registrar, 0)?;
    let mut buf = [0u8; 128];
    let mut c = libipc::console::Client::new(named, &mut buf);
    let r = c.read(1).map(|_| ());
    CALL_DONE.store(true, Ordering::Relaxed);
    let joined = t.join();
    let resends = c.transport().retries;
    let registered = REGISTERED.load(Ordering::Relaxed);
    crate::note!(
        "first instance {first}, {registered} dead re-registrations, {resends} resends, {r:?}"
    );
    util::check(
        joined == Ok(abi::status::Status::Exited(0)),
        "the registering thread failed",
    )?;
    util::check(
        r == Err(CallError::Transport(Error::NotDelivered)),
        "the call did not end NotDelivered",
    )?;
    util::check(
        resends == u64::from(MAX_RESENDS),
        "the call was not resent exactly MAX_RESENDS times",
    )
}
