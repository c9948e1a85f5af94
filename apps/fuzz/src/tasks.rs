//! Phase 4's thread and process handles: the main thread spawns quick
//! threads and short-lived children into the IPC pool, and joins, waits and
//! kills through random pool entries (threads, processes, endpoints,
//! notifications, junk and stale numbers). Wrong kinds must be `WrongType`,
//! stale numbers `BadHandle`, a second reap `NotFound`; nothing may hang
//! (every target ends on its own within milliseconds) or leak (the run's
//! final check counts threads and processes).
//!
//! Only the main thread makes these calls: a peer joining another peer that
//! joins it back would wait for ever, and the main thread itself has no
//! handle, so no random kill can end it.

use crate::finding;
use crate::util::Rng;
use abi::Error;
use libipc::sys::{self, ProcessHandle, ThreadHandle};

extern "C" {
    static mica_fuzz_quick: u8;
}

/// The quick threads' stack top: never mapped (their code touches no stack).
const QUICK_STACK_TOP: u64 = 0x6100_0000_0000;

/// One random task operation; a new handle is returned for the pool.
pub fn op(r: &mut Rng, target: u32) -> Option<u32> {
    let res = match r.below(6) {
        0 => {
            let entry = core::ptr::addr_of!(mica_fuzz_quick) as u64;
            // SAFETY: the quick code touches no memory and exits at once.
            return unsafe { sys::thread_spawn_at(entry, QUICK_STACK_TOP, 0) }
                .ok()
                .map(|h| h.raw());
        }
        1 => {
            let mut buf = [0u8; 256];
            let len = crate::storms::sleeper_image(&mut buf);
            return sys::process_spawn(&buf[..len], 0).ok().map(|h| h.raw());
        }
        2 => sys::thread_join(ThreadHandle::from_raw(target)).map(|_| ()),
        3 => sys::process_wait(ProcessHandle::from_raw(target)).map(|_| ()),
        4 => sys::thread_kill(ThreadHandle::from_raw(target)),
        _ => sys::process_kill(ProcessHandle::from_raw(target)),
    };
    match res {
        Ok(())
        | Err(
            Error::BadHandle
            | Error::WrongType
            | Error::PermissionDenied
            | Error::NotFound
            | Error::InvalidArgument,
        ) => {}
        Err(e) => finding!("tasks: a join, wait or kill through {target:#x} failed with {e:?}"),
    }
    None
}
