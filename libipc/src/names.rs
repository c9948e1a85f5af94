//! init's name service (issue 11 item 1): the protocol, where a program
//! finds the service, and clients built from a *name* that survive their
//! server's restart.
//!
//! # Getting the name service
//! init hands every program it starts (the supervised servers and the
//! `init=tests` program) a badged SEND copy of its name-service endpoint
//! with `handle_give` right after `process_spawn`: it is the child's first
//! handle, [`abi::bootinfo::names::HANDLE`] ([`endpoint`] waits for it).
//! The badge tells init who calls: registrations belong to it, and only
//! init itself (badge 0) may send the internal [`Request::Exited`].
//!
//! # Names
//! 1 to [`MAX_NAME`] bytes of `a-z`, `0-9`, `.`, `_`, `-`; at most
//! [`MAX_NAMES`] registered at once, of which each supervised server's name
//! keeps one slot (so other names cannot crowd out a restarted server). A
//! bad name is [`Reply::BadName`], a full table [`Reply::Full`] (with how
//! many names other than the supervised ones fit). A name init supervises
//! (its server table: each server's name and the other names it registers,
//! such as `console.in`) may be registered only by the instance init
//! started for it ([`Reply::Taken`] while its server holds it,
//! [`Reply::Denied`] while the server restarts and the name is free); any
//! other name belongs to whoever
//! registered it first ([`Reply::Taken`] for anyone else; the owner may
//! register it again, replacing the endpoint). A name is dropped when its
//! owner ends, so a lookup never hands out the endpoint of a dead
//! registrant that init has reaped.
//!
//! # Endpoints
//! `register` carries a *copy* of the server's endpoint handle
//! ([`CopiedHandle`]: the server keeps its own); init keeps a copy with only
//! `SEND | DUPLICATE | TRANSFER` (never `RECV`, so the endpoint still dies
//! with its server and callers see `PeerDied` or `NotDelivered`) and refuses a handle that is
//! no endpoint ([`Reply::NotEndpoint`]) or lacks those rights
//! ([`Reply::NoRights`]). `lookup` answers with a new handle moved to the
//! caller with `SEND | TRANSFER` (TRANSFER only so it can travel in the
//! reply) and the registration's `instance`, a number init never reuses.
//!
//! # Clients by name ([`Named`])
//! A [`Named`] transport looks a name up and calls the endpoint. When a
//! call fails with peer death it looks the name up again, waiting until
//! init hands out a *newer* instance (at most [`RECOVERY_NS`]), and then:
//! - `NotDelivered` (the kernel proves no server thread ever took the call:
//!   the endpoint was dead already, or the call was still queued when it
//!   died): any request is sent again, idempotent or not, since the
//!   old server never saw it;
//! - `PeerDied` (the server took the call and died holding it: it may
//!   have acted on it): only a request the protocol marks `(idempotent)` is
//!   sent again; any other returns `PeerDied`.
//!
//! A resent request that meets a dead successor is decided again by the
//! same rule, each time to a newer instance, at most
//! `wire::resend::MAX_RESENDS` times (`wire::resend::Resends`).
//!
//! Either way a request that moves a handle is not sent again (the failed
//! call closed the moved handles: the kernel does not give them back): it
//! returns the error and the next call goes to the new instance.

use crate::ipc::{self, Endpoint, Timeout};
use crate::server::{call_regs, incoming, Caller};
use crate::sys;
use abi::Error;
use core::marker::PhantomData;
use wire::resend::{Fate, Resends};
use wire::{CallError, CopiedHandle, Frame, Handle, Incoming, Protocol, Transport};

/// Longest name, in bytes.
pub const MAX_NAME: usize = 32;
/// Most names registered at once.
pub const MAX_NAMES: usize = 16;
/// Bytes a name-service client or server buffer needs (a name and a
/// register's or a server record's words).
pub const BUFFER: usize = 64;
const _: () = assert!(MAX_NAME <= BUFFER);
/// How long a [`Named`] client waits for a dead server's successor.
pub const RECOVERY_NS: u64 = 5_000_000_000;

/// Whether `name` is one the service accepts (see the module docs).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
}

wire::protocol! {
    /// init's name service.
    pub protocol Names<'a>;
    /// What clients ask.
    pub enum Request {
        /// Registers `ep` (a copy of the caller's endpoint handle) under
        /// `name`: `Registered`, or `BadName`, `Denied`, `Taken`, `Full`,
        /// `NotEndpoint`, `NoRights`, `NoRoom`.
        Register = 1 => fn register { name: &'a str, ep: CopiedHandle },
        /// The endpoint registered under `name`: `Found` (a new SEND handle
        /// moved to the caller), `NotFound` or `BadName`.
        Lookup = 2 (idempotent) => fn lookup { name: &'a str },
        /// The supervised server at `index` (0, 1, ... until `End`):
        /// `Server`.
        Server = 3 (idempotent) => fn server { index: u64 },
        /// TEST-ONLY control, refused (`Denied`) unless init runs
        /// `init=tests`: kills the supervised server `name` (init then
        /// restarts it as after any death): `Restarting`, `NotFound`.
        Restart = 4 => fn restart { name: &'a str },
        /// init-internal (badge 0 only, `Denied` otherwise): the watcher of
        /// supervised slot `slot` saw its process end with `status`; the
        /// reply names the next process to watch.
        Exited = 5 => fn exited { slot: u64, status: u64 },
        /// procmgr only (`Denied` for anyone else, or for `pid` 0 or not a
        /// pid): as `Lookup`, but the handle is badged as if process `pid`
        /// (a kernel pid) had looked `name` up itself. procmgr looks names
        /// up for the programs it spawns, so the console prefixes their
        /// lines with their own pid, not procmgr's.
        LookupFor = 6 (idempotent) => fn lookup_for { name: &'a str, pid: u64 },
        /// Where the caller's procmgr endpoint is now (gaps2): after a
        /// procmgr restart init adopts the programs it started (and holds)
        /// into the successor; `Rejoined` names the handle the successor's
        /// endpoint got in the caller (0: init could not adopt it into the
        /// successor; the next restart tries again), `NotFound` if init
        /// holds no such program.
        Rejoin = 7 (idempotent) => fn rejoin {},
    }
    /// What the service answers.
    pub enum Reply {
        /// Registered; lookups now return this `instance`.
        Registered = 1 { instance: u64 },
        /// The endpoint (SEND | TRANSFER) and its registration's instance.
        Found = 2 { ep: Handle, instance: u64 },
        /// No such name (or the server is restarting).
        NotFound = 3 {},
        /// The name is empty, too long or has a byte outside `a-z0-9._-`.
        BadName = 4 { max: u64 },
        /// Another process registered that name.
        Taken = 5 {},
        /// Not allowed for this caller.
        Denied = 6 {},
        /// No room for another name.
        Full = 7 { capacity: u64 },
        /// The handle is not an endpoint.
        NotEndpoint = 8 {},
        /// The handle lacks SEND, DUPLICATE or TRANSFER.
        NoRights = 9 {},
        /// init could not make a handle (its table or the kernel is full).
        NoRoom = 10 {},
        /// A supervised server: `pid` 0 while it is restarting.
        Server = 11 { name: &'a str, pid: u64, restarts: u64, registered: bool },
        /// No server at that index.
        End = 12 {},
        /// The server was killed; init restarts it.
        Restarting = 13 {},
        /// init-internal: the process handle to watch next (0: none yet,
        /// ask again later).
        Respawned = 14 { process: u64 },
        /// The caller's procmgr endpoint is handle `handle` (its own; 0:
        /// none now).
        Rejoined = 15 { handle: u64 },
    }
    /// Typed calls.
    pub struct Client;
}

/// The name-service endpoint init gave this program, waiting at most
/// `timeout_ns` for init's `handle_give` (`None`: none came, e.g. a
/// program started by another program, or by init for `bench`/`fuzz`).
pub fn endpoint(timeout_ns: u64) -> Option<Endpoint> {
    crate::server::first_endpoint(timeout_ns)
}

/// Why a [`Named`] client could not be built or re-found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupError {
    /// The name service failed us (its error).
    Service(CallError<Error>),
    /// The name is not a valid one.
    BadName,
    /// Nothing (newer) was registered under the name in time.
    NotFound,
}

/// Looks `name` up once: the endpoint and its instance.
pub fn lookup(names: Endpoint, name: &str) -> Result<(Endpoint, u64), LookupError> {
    let mut buf = [0u8; BUFFER];
    let mut c = Client::new(Caller::new(names, None), &mut buf);
    match c.lookup(name) {
        Ok(Reply::Found { ep, instance }) => Ok((Endpoint(ep.0), instance)),
        Ok(Reply::BadName { .. }) => Err(LookupError::BadName),
        Ok(_) => Err(LookupError::NotFound),
        Err(e) => Err(LookupError::Service(e)),
    }
}

/// [`lookup`] on behalf of kernel pid `pid` (procmgr only: `Request::LookupFor`).
pub fn lookup_for(names: Endpoint, name: &str, pid: u64) -> Result<(Endpoint, u64), LookupError> {
    let mut buf = [0u8; BUFFER];
    let mut c = Client::new(Caller::new(names, None), &mut buf);
    match c.lookup_for(name, pid) {
        Ok(Reply::Found { ep, instance }) => Ok((Endpoint(ep.0), instance)),
        Ok(Reply::BadName { .. }) => Err(LookupError::BadName),
        Ok(_) => Err(LookupError::NotFound),
        Err(e) => Err(LookupError::Service(e)),
    }
}

/// Looks `name` up until it names an instance other than `stale` (0:
/// any), for at most `wait_ns`.
pub fn lookup_newer(
    names: Endpoint,
    name: &str,
    stale: u64,
    wait_ns: u64,
) -> Result<(Endpoint, u64), LookupError> {
    let start = sys::clock_ns();
    loop {
        match lookup(names, name) {
            Ok((ep, instance)) if instance != stale => return Ok((ep, instance)),
            Ok((ep, _)) => {
                // init has not reaped the old instance yet.
                let _ = ipc::handle_close(ep.0);
            }
            Err(LookupError::NotFound) => {}
            Err(e) => return Err(e),
        }
        if sys::clock_ns().wrapping_sub(start) > wait_ns {
            return Err(LookupError::NotFound);
        }
        sys::yield_now();
    }
}

/// A [`Transport`] to whatever server `name` currently is (see the module
/// docs): `Client::new(Named::<P>::new(names, "kv", timeout)?, &mut buf)`.
/// Holds one endpoint handle, closed on drop.
pub struct Named<P> {
    names: Endpoint,
    name: [u8; MAX_NAME],
    len: usize,
    ep: Endpoint,
    instance: u64,
    /// The endpoint died under a call that was not retried: the next call
    /// first finds the successor.
    stale: bool,
    timeout: Timeout,
    /// How many times a call was sent again after `PeerDied` or
    /// `NotDelivered`.
    pub retries: u64,
    _p: PhantomData<P>,
}

impl<P: Protocol> Named<P> {
    /// Looks `name` up through `names` (waiting at most [`RECOVERY_NS`]
    /// for it to be registered); each call waits at most `timeout`.
    pub fn new(names: Endpoint, name: &str, timeout: Timeout) -> Result<Self, LookupError> {
        if !valid_name(name) {
            return Err(LookupError::BadName);
        }
        let (ep, instance) = lookup_newer(names, name, 0, RECOVERY_NS)?;
        let mut n = [0u8; MAX_NAME];
        n[..name.len()].copy_from_slice(name.as_bytes());
        Ok(Named {
            names,
            name: n,
            len: name.len(),
            ep,
            instance,
            stale: false,
            timeout,
            retries: 0,
            _p: PhantomData,
        })
    }

    /// The registration this client calls.
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// Replaces the dead endpoint with the newer registration's.
    fn refind(&mut self) -> Result<(), Error> {
        let name = core::str::from_utf8(&self.name[..self.len]).unwrap_or("");
        match lookup_newer(self.names, name, self.instance, RECOVERY_NS) {
            Ok((ep, instance)) => {
                let _ = ipc::handle_close(self.ep.0);
                self.ep = ep;
                self.instance = instance;
                self.stale = false;
                Ok(())
            }
            // The server did not come back: the caller sees the death.
            Err(_) => Err(Error::PeerDied),
        }
    }
}

impl<P> Drop for Named<P> {
    fn drop(&mut self) {
        let _ = ipc::handle_close(self.ep.0);
    }
}

/// Whether a call that failed with peer death `e` may be sent once more to
/// the successor: never if it moved a handle (the failed call closed it);
/// always after `NotDelivered` (the dead server never took it); after
/// `PeerDied` only if `idempotent` (the server may have acted on it).
pub fn may_resend(e: Error, idempotent: bool, moved_handles: bool) -> bool {
    !moved_handles && (e == Error::NotDelivered || (e == Error::PeerDied && idempotent))
}

/// Whether `f` moves a handle (a failed call closed it: no retry).
pub(crate) fn moves_handles(f: &Frame) -> bool {
    let all = (1u16 << f.nhandles.min(wire::MAX_HANDLES)) - 1;
    u16::from(f.copy_mask) & all != all
}

impl<P: Protocol> Transport for Named<P> {
    type Error = Error;

    fn call<'b>(&mut self, frame: &Frame, buf: &'b mut [u8]) -> Result<Incoming<'b>, Error> {
        if self.stale {
            self.refind()?;
        }
        // The request's bytes stay in `buf` until a reply arrives: a call
        // that failed left them there for the retry.
        let (idempotent, moved) = (P::idempotent(frame.label), moves_handles(frame));
        let mut resends = Resends::new(self.instance);
        loop {
            let e = match call_regs(self.ep, frame, buf, self.timeout) {
                Err(e @ (Error::PeerDied | Error::NotDelivered)) => e,
                other => return Ok(incoming(&other?, buf)),
            };
            if !may_resend(e, idempotent, moved) {
                self.stale = true;
                return Err(e);
            }
            self.refind()?;
            // To each newer instance while the registration keeps
            // changing, a bounded number of times (`wire::resend`).
            let fate = if e == Error::NotDelivered {
                Fate::NotTaken
            } else {
                Fate::MaybeTaken
            };
            if !resends.again(fate, idempotent, moved, self.instance) {
                return Err(e);
            }
            self.retries += 1;
        }
    }
}

// The slot init gives is the first one a fresh process has.
const _: () = assert!(abi::bootinfo::names::HANDLE == ipc::FIRST_HANDLE);
