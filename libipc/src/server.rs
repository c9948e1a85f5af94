//! The server toolkit: [`serve`] runs a [`wire::Handler`] over an endpoint,
//! [`Caller`] carries a [`wire`] protocol's typed client calls to one.
//!
//! A protocol is declared once with [`wire::protocol!`] (re-exported here
//! as [`protocol!`](crate::protocol)); see the README's "Writing a
//! server" for a server and its client end to end.
//!
//! # The serve loop
//! Two buffers, used in turn: a request arrives in one, its reply is
//! encoded into the other, and `reply_recv` sends the reply from it and
//! receives the next request into it. No byte is copied twice and the
//! reply may borrow the request. A message that does not decode is
//! answered with an error reply ([`wire::ERROR_LABEL`]) and any handles it
//! carried are closed before the next receive, so a hostile client can
//! neither crash the server nor fill its handle table.
//!
//! A reply with a buffer goes out with `reply` (then `recv`): if the
//! caller's receive buffer is too small the kernel refuses the reply
//! (`InvalidArgument`, the call stays held), and the loop answers with a
//! [`wire::WireError::BufferFull`] error reply instead, so the caller
//! learns why. A register-only reply uses `reply_recv` (the fast path).

use crate::ipc::{self, ipc_syscall, Endpoint, IpcRegs, Timeout, NOTIFIED};
use abi::{decode_result, Error, Sysnum};
use wire::{Dispatched, Frame, Handler, Incoming, Protocol, Transport, WireError};

/// The kernel's largest buffer (64 KiB): capacities are clamped to it.
const MAX_CAPACITY: usize = wire::MAX_BUFFER;

/// The registers of `frame` sent from `buf`, receiving into `buf` (its
/// whole length, at most 64 KiB), with `timeout`.
fn frame_regs(h: u32, f: &Frame, buf: &mut [u8], timeout: Timeout) -> IpcRegs {
    let capacity = buf.len().min(MAX_CAPACITY) as u32;
    IpcRegs {
        rdi: h as u64,
        rsi: ipc::info(
            f.label,
            f.nhandles.min(wire::MAX_HANDLES) as u64,
            u64::from(f.copy_mask & 0xf),
            f.len.min(buf.len()) as u64,
            timeout.is_some(),
        ),
        w: f.words,
        r14: buf.as_mut_ptr() as u64,
        r15: ipc::spec(capacity, timeout.unwrap_or(0)),
        handles: ipc::pack(&f.handles[..f.nhandles.min(wire::MAX_HANDLES)]),
    }
}

/// Issues `n` with `r`, whose R14/R15 name (part of) `buf`.
fn run_buf(n: Sysnum, r: &mut IpcRegs, _buf: &mut [u8]) -> Result<(), Error> {
    // SAFETY: R14/R15 name `buf` (address and at most its length, see
    // `frame_regs`/`recv_regs`), which we borrow mutably: the kernel writes
    // nothing else of ours.
    decode_result(unsafe { ipc_syscall(n, r) }).map(|_| ())
}

/// What a receive delivered, over `buf`.
enum Got<'b> {
    Msg(u64, Incoming<'b>),
    Notified(u64),
}

fn got<'b>(r: &IpcRegs, buf: &'b [u8]) -> Got<'b> {
    if r.rsi & NOTIFIED != 0 {
        return Got::Notified(r.w[0]);
    }
    Got::Msg(r.rdi, incoming(r, buf))
}

/// The message in the output registers, its bytes in `buf`.
pub(crate) fn incoming<'b>(r: &IpcRegs, buf: &'b [u8]) -> Incoming<'b> {
    let nhandles = ipc::info_handles(r.rsi).min(wire::MAX_HANDLES);
    Incoming {
        label: r.rsi as u32,
        words: r.w,
        buf: &buf[..ipc::info_len(r.rsi).min(buf.len())],
        handles: ipc::unpack(r.handles),
        nhandles,
    }
}

fn recv_into(ep: Endpoint, buf: &mut [u8]) -> Result<IpcRegs, Error> {
    let mut r = frame_regs(ep.0, &Frame::default(), buf, None);
    r.rsi = 0;
    run_buf(Sysnum::IpcRecv, &mut r, buf)?;
    Ok(r)
}

/// Closes the handles of a refused message (nobody took them).
fn close_all(m: &Incoming<'_>) {
    for &h in m.handles() {
        if h != 0 {
            let _ = ipc::handle_close(h);
        }
    }
}

/// Serves protocol `P` on `ep` with `h` for ever: receive, check, dispatch,
/// reply. `a` and `b` are the two buffers (see the module docs); each must
/// hold the largest request and reply. Returns `Ok` once the handler is
/// [`done`](Handler::done) (after sending its last reply), or an error of
/// the endpoint itself (`BadHandle`, `PermissionDenied`, `WrongType`, or
/// `PeerDied` once it is dead); a receive that fails for the moment
/// (`NoMemory`: a message's handles did not fit our table) is retried.
pub fn serve<P: Protocol, H: Handler<P>>(
    ep: Endpoint,
    h: &mut H,
    a: &mut [u8],
    b: &mut [u8],
) -> Result<(), Error> {
    let (mut rx, mut tx) = (a, b);
    let mut regs = match recv_into(ep, rx) {
        Ok(r) => r,
        Err(e) => receive_again(ep, e, rx)?,
    };
    loop {
        let (badge, m) = match got(&regs, rx) {
            Got::Notified(bits) => {
                h.notified(bits);
                regs = match recv_into(ep, rx) {
                    Ok(r) => r,
                    Err(e) => receive_again(ep, e, rx)?,
                };
                continue;
            }
            Got::Msg(badge, m) => (badge, m),
        };
        let d = wire::dispatch::<P, H>(h, badge, &m, tx);
        if let Dispatched::Refused(..) = d {
            close_all(&m);
        }
        let frame = d.frame();
        if h.done() {
            reply_buffered(&frame, tx);
            return Ok(());
        }
        let next = if frame.len == 0 && frame.nhandles == 0 {
            // Register-only: reply and receive in one (the fast path),
            // the next request landing in `tx`.
            let mut r = frame_regs(ep.0, &frame, tx, None);
            run_buf(Sysnum::IpcReplyRecv, &mut r, tx).map(|_| r)
        } else {
            reply_buffered(&frame, tx);
            recv_into(ep, tx)
        };
        core::mem::swap(&mut rx, &mut tx);
        regs = match next {
            Ok(r) => r,
            Err(e) => receive_again(ep, e, rx)?,
        };
    }
}

/// After a failed receive: an error of the endpoint (or of our own
/// arguments) ends the loop; one of the moment goes on receiving. The
/// kernel fails a receive with `NoMemory` when a message's handles do not
/// fit this process's table (the sender is retried elsewhere): that must
/// not end the server, or a client could stop it by sending handles.
fn receive_again(ep: Endpoint, mut e: Error, buf: &mut [u8]) -> Result<IpcRegs, Error> {
    loop {
        match e {
            Error::NoMemory | Error::TimedOut | Error::WouldBlock => {}
            fatal => return Err(fatal),
        }
        match recv_into(ep, buf) {
            Ok(r) => return Ok(r),
            Err(again) => e = again,
        }
    }
}

/// Sends a reply (one carrying a buffer or handles, or the last); if the kernel refuses it
/// (the caller's buffer is too small), answers with `BufferFull` instead.
/// A caller that went away (`PeerDied`) or no caller is nobody's problem.
fn reply_buffered(frame: &Frame, buf: &mut [u8]) {
    let mut r = frame_regs(0, frame, buf, None);
    r.r15 = 0;
    if run_buf(Sysnum::IpcReply, &mut r, buf) == Err(Error::InvalidArgument) {
        let e = Frame::error(WireError::BufferFull);
        let _ = ipc::reply(&ipc::Message {
            label: e.label,
            words: e.words,
        });
    }
}

/// Calls an endpoint for a protocol's typed client
/// (`Client::new(Caller::new(ep, timeout), &mut buf)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The endpoint called.
    pub ep: Endpoint,
    /// How long each call may wait (`None`: for ever).
    pub timeout: Timeout,
}

impl Caller {
    /// Calls `ep`, each call waiting at most `timeout`.
    pub const fn new(ep: Endpoint, timeout: Timeout) -> Self {
        Caller { ep, timeout }
    }
}

impl Transport for Caller {
    type Error = Error;

    fn call<'b>(&mut self, frame: &Frame, buf: &'b mut [u8]) -> Result<Incoming<'b>, Error> {
        let r = call_regs(self.ep, frame, buf, self.timeout)?;
        Ok(incoming(&r, buf))
    }
}

/// Calls `ep` with `frame` from `buf`, the reply landing in `buf`: the
/// output registers (read them with [`incoming`]). A failed call leaves
/// `buf` as it was (the kernel writes it only with a reply).
pub(crate) fn call_regs(
    ep: Endpoint,
    frame: &Frame,
    buf: &mut [u8],
    timeout: Timeout,
) -> Result<IpcRegs, Error> {
    let mut r = frame_regs(ep.0, frame, buf, timeout);
    run_buf(Sysnum::IpcCall, &mut r, buf)?;
    Ok(r)
}

/// The endpoint a parent gives this process first (`handle_give` right
/// after `process_spawn`; it lands at [`ipc::FIRST_HANDLE`]). The child may
/// run before the parent gives it: this waits (yielding) until the slot
/// names something, at most `timeout_ns`; `None` if it never did.
///
/// The probe is a zero-bit `signal`, which changes nothing: it fails with
/// `BadHandle` while the slot is empty and with `WrongType` (or another
/// error that is not `BadHandle`) once an endpoint is there. The bootstrap
/// until init's name service hands out endpoints.
pub fn first_endpoint(timeout_ns: u64) -> Option<Endpoint> {
    endpoint_at(ipc::FIRST_HANDLE, timeout_ns)
}

/// The endpoint another process gives this one at handle number `h`,
/// waiting at most `timeout_ns` for it to land (`None`: nothing came, or
/// the handle there is no endpoint).
pub fn endpoint_at(h: u32, timeout_ns: u64) -> Option<Endpoint> {
    let start = crate::sys::clock_ns();
    loop {
        match ipc::signal(ipc::Notification(h), 0) {
            Err(Error::BadHandle) => {}
            Err(Error::WrongType) => return Some(Endpoint(h)),
            _ => return None,
        }
        if crate::sys::clock_ns().wrapping_sub(start) > timeout_ns {
            return None;
        }
        crate::sys::yield_now();
    }
}
