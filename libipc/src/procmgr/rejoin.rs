//! Finding procmgr again after it restarted (gaps2).
//!
//! A process's procmgr endpoint is a handle badged with its PID, given by
//! the procmgr instance that knew it; a restarted procmgr starts with an
//! empty table and that handle is dead. A process init started and still
//! holds (the shell, the test suite, the benchmarks, the fuzzer) is adopted
//! again by init into the successor, which gives it a new endpoint (and a
//! new PID: its old children and PID are gone with the old table). Such a
//! process, told at start where its name service is ([`rejoin_through`]),
//! asks init's `Rejoin` where that endpoint landed after a call fails with
//! a peer death, waiting at most [`names::RECOVERY_NS`]; the call is then
//! sent again only as [`names::may_resend`] allows (never taken, or
//! idempotent; no moved handles), once. Every other process (procmgr's own
//! children: no name service) keeps the peer-death error.

use super::{endpoint, set_endpoint, Procmgr};
use crate::ipc::{self, Endpoint, Timeout};
use crate::names::{self, moves_handles};
use crate::server::{call_regs, incoming, Caller};
use crate::sys;
use abi::Error;
use core::sync::atomic::{AtomicU32, Ordering};
use wire::{Frame, Incoming, Protocol, Transport};

/// The name-service handle `Rejoin` is asked through (0: this process
/// cannot rejoin).
static NAMES: AtomicU32 = AtomicU32::new(0);

/// How long between two `Rejoin` asks while init has not adopted this
/// process into the successor yet.
const ASK_EVERY_NS: u64 = 10_000_000;

/// Lets this process find procmgr again through init's name service at
/// `names` after a procmgr restart.
pub fn rejoin_through(names: Endpoint) {
    // Relaxed: a handle number, read by this process's own calls.
    NAMES.store(names.0, Ordering::Relaxed);
}

/// A forked child holds no name service (its handle numbers are its own).
pub(super) fn forget() {
    // Relaxed: as in `rejoin_through`.
    NAMES.store(0, Ordering::Relaxed);
}

/// Asks init where this process's procmgr endpoint is now, instead of the
/// dead `dead`: the new one (made current), or `None` at once if this
/// process has no name service, init holds no record of it or init could
/// not adopt it into the successor (handle 0: the next restart tries
/// again), or when init's record did not move on within the recovery time.
pub fn rejoin(dead: Endpoint) -> Option<Endpoint> {
    // Relaxed: as in `rejoin_through`.
    let names_ep = match NAMES.load(Ordering::Relaxed) {
        0 => return None,
        h => Endpoint(h),
    };
    let start = sys::clock_ns();
    loop {
        let mut buf = [0u8; 64];
        let mut c = names::Client::new(Caller::new(names_ep, None), &mut buf);
        match c.rejoin() {
            Ok(names::Reply::Rejoined { handle }) => {
                let h = u32::try_from(handle).ok().filter(|&h| h != 0)?;
                if h != dead.0 {
                    // Another thread may have switched already: then the
                    // close fails, harmless.
                    if endpoint() == Some(dead) {
                        let _ = ipc::handle_close(dead.0);
                    }
                    set_endpoint(Endpoint(h));
                    return Some(Endpoint(h));
                }
                // init's record is still the dead instance's: not yet.
            }
            // init holds no such program: nobody will adopt it again.
            _ => return None,
        }
        if sys::clock_ns().wrapping_sub(start) > names::RECOVERY_NS {
            return None;
        }
        sys::sleep_ns(ASK_EVERY_NS);
    }
}

/// The procmgr client's transport: this process's endpoint, found again
/// once through [`rejoin`] after a peer death.
pub(super) struct Rejoining {
    pub(super) ep: Endpoint,
    pub(super) timeout: Timeout,
}

impl Transport for Rejoining {
    type Error = Error;

    fn call<'b>(&mut self, frame: &Frame, buf: &'b mut [u8]) -> Result<Incoming<'b>, Error> {
        let e = match call_regs(self.ep, frame, buf, self.timeout) {
            Err(e @ (Error::PeerDied | Error::NotDelivered)) => e,
            other => return Ok(incoming(&other?, buf)),
        };
        // The request's bytes stay in `buf` (a failed call leaves them).
        let idempotent = Procmgr::idempotent(frame.label);
        let Some(ep) = rejoin(self.ep) else {
            return Err(e);
        };
        self.ep = ep;
        if !names::may_resend(e, idempotent, moves_handles(frame)) {
            return Err(e);
        }
        Ok(incoming(&call_regs(ep, frame, buf, self.timeout)?, buf))
    }
}
