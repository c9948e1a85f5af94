//! Adopting init's programs again after a procmgr restart (gaps2).
//!
//! A restarted procmgr starts with an empty table: the kernel gives no way
//! to rebuild it (no call lists processes or makes a handle from a pid, and
//! the handles procmgr held died with it), so its children are beyond
//! reach. The programs init started and adopted itself (the shell, the test
//! suite, the benchmarks, the fuzzer) init still holds: it records each
//! adoption here ([`record`]); when procmgr dies ([`procmgr_died`], from the
//! name service's watcher) a thread of its own waits for the successor's
//! registration and adopts each recorded process into it again (as before:
//! a child of init, no fault handling), noting where the new endpoint
//! landed in the process. The process learns it through the name service's
//! `Rejoin` ([`answer`]; libipc's procmgr client asks after a peer death).
//! It gets a new PID; its old children, PID and waits are gone.
//!
//! The re-adoption runs on its own thread, not the name service's: it calls
//! procmgr, and procmgr calls the name service (`LookupFor`) while serving
//! its clients, so the name-service thread calling procmgr could deadlock.

use crate::spawn_stack;
use core::sync::atomic::{AtomicU32, Ordering};
use libipc::ipc::{self, Notification};
use libipc::names::{self, Reply};
use libipc::println;
use libipc::sys::ProcessHandle;
use spin::Mutex;

/// Programs recorded at once (the shell, and the tests or bench program it
/// asked for, with room to spare); one more replaces the oldest record.
const RECORDS: usize = 8;

/// One program init adopted.
#[derive(Clone, Copy)]
struct Adopted {
    /// init's handle to it (closed by init when it ended: a stale number
    /// is then refused, never another object).
    process: u32,
    /// Its kernel pid: the badge of its name-service handle.
    pid: u64,
    program: &'static str,
    /// Where its current procmgr endpoint is, in its own handle table.
    handle: u32,
}

struct Records {
    at: [Option<Adopted>; RECORDS],
    next: usize,
}

/// The records. Held only to copy or update an entry, never across a call.
static RECORDS_LOCK: Mutex<Records> = Mutex::new(Records {
    at: [None; RECORDS],
    next: 0,
});
/// The notification [`procmgr_died`] signals (0: the thread did not start).
static DIED: AtomicU32 = AtomicU32::new(0);

/// Starts the re-adopting thread (said so if it cannot).
pub fn start() {
    let ntf = match ipc::notification_create() {
        Ok(n) => n,
        Err(e) => {
            println!("init: no procmgr re-adoption: {e}");
            return;
        }
    };
    // Release: pairs with `procmgr_died`'s Acquire (another thread); the
    // new thread gets it through the spawn syscall.
    DIED.store(ntf.0, Ordering::Release);
    if let Err(e) = spawn_stack(readopt_thread, u64::from(ntf.0)) {
        println!("init: no procmgr re-adoption thread: {e}");
        DIED.store(0, Ordering::Relaxed);
    }
}

/// Records that init adopted `process` (program `program`) and that its
/// procmgr endpoint is its handle `handle`.
pub fn record(process: ProcessHandle, program: &'static str, handle: u32) {
    let pid = process.id();
    if pid == 0 {
        return;
    }
    let mut r = RECORDS_LOCK.lock();
    let i = r.next % RECORDS;
    r.next = r.next.wrapping_add(1);
    r.at[i] = Some(Adopted {
        process: process.raw(),
        pid,
        program,
        handle,
    });
}

/// The name service's watcher saw procmgr die: adopt the records into
/// its successor.
pub fn procmgr_died() {
    // Acquire: pairs with `start`'s Release.
    let ntf = DIED.load(Ordering::Acquire);
    if ntf != 0 {
        let _ = ipc::signal(Notification(ntf), 1);
    }
}

/// `Rejoin` from the name-service client with `badge`: where its procmgr
/// endpoint is now.
pub fn answer(badge: u64) -> Reply<'static> {
    let r = RECORDS_LOCK.lock();
    match r.at.iter().flatten().find(|a| a.pid == badge && badge != 0) {
        Some(a) => Reply::Rejoined {
            handle: u64::from(a.handle),
        },
        None => Reply::NotFound {},
    }
}

extern "C" fn readopt_thread(ntf: u64) -> ! {
    let ntf = Notification(ntf as u32);
    // The registration the records' endpoints belong to: procmgr's now
    // (started after every server registered); a death's successor is
    // newer.
    let mut adopted_into = crate::names::own_endpoint()
        .and_then(|n| names::lookup(n, libipc::procmgr::NAME).ok())
        .map_or(0, |(ep, instance)| {
            let _ = ipc::handle_close(ep.0);
            instance
        });
    loop {
        if ipc::wait(ntf, None).is_err() {
            continue;
        }
        let Some(names_ep) = crate::names::own_endpoint() else {
            continue;
        };
        // The successor, registered after the death (init restarts it).
        let (ep, instance) = match names::lookup_newer(
            names_ep,
            libipc::procmgr::NAME,
            adopted_into,
            names::RECOVERY_NS,
        ) {
            Ok(found) => found,
            Err(e) => {
                println!("init: procmgr did not come back to re-adopt into: {e:?}");
                continue;
            }
        };
        adopted_into = instance;
        for i in 0..RECORDS {
            let Some(a) = RECORDS_LOCK.lock().at[i] else {
                continue;
            };
            let p = ProcessHandle::from_raw(a.process);
            let got = libipc::procmgr::adopt(ep, p, a.program, false);
            let mut r = RECORDS_LOCK.lock();
            // Still the same record (a new adoption may have replaced it).
            if r.at[i].is_some_and(|b| b.pid == a.pid) {
                match got {
                    Ok((_, handle)) => r.at[i] = Some(Adopted { handle, ..a }),
                    // Ended (or init closed it): nothing to rejoin.
                    Err(_) => r.at[i] = None,
                }
            }
        }
        let _ = ipc::handle_close(ep.0);
    }
}
