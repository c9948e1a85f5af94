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
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
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
    /// Where its current procmgr endpoint is, in its own handle table (0:
    /// none; its re-adoption into `instance` failed).
    handle: u32,
    /// The procmgr registration that endpoint belongs to.
    instance: u64,
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
/// The notification [`procmgr_died`] signals (0: the thread is not
/// started yet). Only the name-service thread reads or writes it.
static DIED: AtomicU32 = AtomicU32::new(0);
/// The procmgr registration (instance) the records' endpoints belong to:
/// a death's successor is a newer one.
static INSTANCE: AtomicU64 = AtomicU64::new(0);

/// Starts the re-adopting thread (on the first procmgr death: no thread
/// of init's exists for it before, so a boot without a restart runs as
/// before); `None` (said so) if it cannot.
fn start() -> Option<u32> {
    let ntf = match ipc::notification_create() {
        Ok(n) => n,
        Err(e) => {
            println!("init: no procmgr re-adoption: {e}");
            return None;
        }
    };
    if let Err(e) = spawn_stack(readopt_thread, u64::from(ntf.0)) {
        println!("init: no procmgr re-adoption thread: {e}");
        let _ = ipc::handle_close(ntf.0);
        return None;
    }
    // Relaxed: read and written by the name-service thread only.
    DIED.store(ntf.0, Ordering::Relaxed);
    Some(ntf.0)
}

/// Records that init adopted `process` (program `program`) into procmgr's
/// registration `instance` and that its procmgr endpoint is its handle
/// `handle`.
pub fn record(process: ProcessHandle, program: &'static str, handle: u32, instance: u64) {
    let pid = process.id();
    if pid == 0 {
        return;
    }
    // Relaxed: only the largest matters; the re-adopting thread reads it
    // after a death the name service saw, long after any adoption into
    // that instance.
    INSTANCE.fetch_max(instance, Ordering::Relaxed);
    let mut r = RECORDS_LOCK.lock();
    // A free slot first; else the oldest record is replaced.
    let i = match r.at.iter().position(Option::is_none) {
        Some(i) => i,
        None => {
            let i = r.next % RECORDS;
            r.next = r.next.wrapping_add(1);
            i
        }
    };
    r.at[i] = Some(Adopted {
        process: process.raw(),
        pid,
        program,
        handle,
        instance,
    });
}

/// Drops the record of `process` (init is about to close its handle: the
/// program ended), so a long-lived record (the shell's) is never the one
/// a later adoption replaces.
pub fn forget(process: ProcessHandle) {
    let mut r = RECORDS_LOCK.lock();
    for a in r.at.iter_mut() {
        if a.is_some_and(|a| a.process == process.raw()) {
            *a = None;
        }
    }
}

/// The name service's watcher saw procmgr die: adopt the records into
/// its successor. Called by the name-service thread only.
pub fn procmgr_died() {
    // Relaxed: this thread's own variable (see `DIED`).
    let ntf = match DIED.load(Ordering::Relaxed) {
        0 => start(),
        h => Some(h),
    };
    if let Some(ntf) = ntf {
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
    loop {
        if ipc::wait(ntf, None).is_err() {
            continue;
        }
        let Some(names_ep) = crate::names::own_endpoint() else {
            continue;
        };
        // Relaxed: see `record`.
        let adopted_into = INSTANCE.load(Ordering::Relaxed);
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
        // Relaxed: see `record`.
        INSTANCE.fetch_max(instance, Ordering::Relaxed);
        for i in 0..RECORDS {
            // Adopted into this successor already (after its start).
            let Some(a) = RECORDS_LOCK.lock().at[i].filter(|a| a.instance < instance) else {
                continue;
            };
            let p = ProcessHandle::from_raw(a.process);
            let got = libipc::procmgr::adopt(ep, p, a.program, false);
            let mut r = RECORDS_LOCK.lock();
            // Still the same record (a new adoption may have replaced it).
            if r.at[i].is_some_and(|b| b.pid == a.pid) {
                // Not adopted (breaku2: the successor died under the call,
                // its table or the process's was full, or the process
                // ended): kept with no endpoint (0), so `Rejoin` answers at
                // once that there is none and the next restart tries
                // again. Dropping it made init forget the program for good
                // after one failure; the record goes when init closes the
                // process (`forget`).
                let handle = got.map_or(0, |(_, handle)| handle);
                r.at[i] = Some(Adopted {
                    handle,
                    instance,
                    ..a
                });
            }
        }
        let _ = ipc::handle_close(ep.0);
    }
}
