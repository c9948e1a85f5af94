//! IPC for user programs: typed handles, messages, safe wrappers for every
//! IPC syscall, and an untyped receive/reply loop ([`serve`]; servers with
//! a declared protocol use [`crate::server::serve`]).
//!
//! The register layout is `kcore::ipc::msg`'s table (see docs/ipc.md): RDI
//! the handle, RSI the message-info word, RDX R10 R8 R9 R12 R13 the six
//! words, R14 the buffer, R15 the receive spec, RBX/RBP the handles to send
//! (and received). RBX and RBP cannot be asm operands, so [`ipc_syscall`]
//! saves them around the `syscall` and passes the handle words through
//! memory.

use abi::{decode_result, Error, Sysnum};
use core::arch::asm;

/// Handle rights: the ABI's one declaration (`kcore::handles::Rights` takes
/// its bits from there too).
pub use abi::rights;

/// The message-info word's timeout bit (`kcore::ipc::MsgInfo`).
const TIMEOUT_BIT: u64 = 1 << 39;
/// Output flag: the receive returned a notification (bits in `words[0]`).
pub const NOTIFIED: u64 = 1 << 57;

/// Every register an IPC syscall reads or writes besides RAX.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpcRegs {
    /// Handle in; badge out.
    pub rdi: u64,
    /// Message info in and out.
    pub rsi: u64,
    /// w0..w5 (RDX R10 R8 R9 R12 R13).
    pub w: [u64; 6],
    /// Buffer address.
    pub r14: u64,
    /// Receive spec: capacity (low 32), timeout in µs (high 32).
    pub r15: u64,
    /// RBX and RBP: handles to send in, received handles out.
    pub handles: [u64; 2],
}

/// Issues IPC syscall `n` with every register in `r`; the outputs are
/// written back to `r`. Returns RAX.
///
/// # Safety
/// The kernel writes user memory only where `r` says (the buffer at R14 for
/// its capacity): the caller guarantees that range may be written.
#[inline(always)]
pub unsafe fn ipc_syscall(n: Sysnum, r: &mut IpcRegs) -> u64 {
    let ret: u64;
    let hp = r.handles.as_mut_ptr();
    // `syscall` clobbers only RCX and R11 beyond the registers named here;
    // RBX and RBP (not operands: reserved by the compiler) are saved on the
    // stack and restored; RCX carries the pointer to `r.handles` (saved
    // across the syscall on the stack).
    // SAFETY: as above; memory effects are `r.handles` and the caller's
    // contract for the buffer.
    unsafe {
        asm!(
            "push rbp",
            "push rbx",
            "push rcx",           // rcx: &mut r.handles (syscall clobbers rcx)
            "mov rbx, [rcx]",     // rbx: handles 0 and 1
            "mov rbp, [rcx + 8]", // rbp: handles 2 and 3
            "syscall",
            "mov rcx, [rsp]",
            "mov [rcx], rbx",     // received handles 0 and 1
            "mov [rcx + 8], rbp", // received handles 2 and 3
            "add rsp, 8",
            "pop rbx",
            "pop rbp",
            inlateout("rax") n as u64 => ret,
            inlateout("rdi") r.rdi => r.rdi,
            inlateout("rsi") r.rsi => r.rsi,
            inlateout("rdx") r.w[0] => r.w[0],
            inlateout("r10") r.w[1] => r.w[1],
            inlateout("r8") r.w[2] => r.w[2],
            inlateout("r9") r.w[3] => r.w[3],
            inlateout("r12") r.w[4] => r.w[4],
            inlateout("r13") r.w[5] => r.w[5],
            in("r14") r.r14,
            in("r15") r.r15,
            inlateout("rcx") hp => _,
            lateout("r11") _,
        );
    }
    ret
}

/// An endpoint handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint(pub u32);

/// A notification handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notification(pub u32);

/// The register part of a message: a label and six words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// The operation.
    pub label: u32,
    /// w0..w5.
    pub words: [u64; 6],
}

/// What a receive returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// A message, and the badge of the handle it was sent through.
    Msg {
        /// The sender's badge (0: none).
        badge: u64,
        /// The message.
        msg: Message,
    },
    /// The bound notification's bits.
    Notified(u64),
}

/// How long to wait: `None` for ever, `Some(0)` not at all, `Some(us)`.
pub type Timeout = Option<u32>;

fn regs(h: u32, label: u32, words: [u64; 6], timeout: Timeout) -> IpcRegs {
    let mut rsi = label as u64;
    let mut r15 = 0;
    if let Some(us) = timeout {
        rsi |= TIMEOUT_BIT;
        r15 = (us as u64) << 32;
    }
    IpcRegs {
        rdi: h as u64,
        rsi,
        w: words,
        r15,
        ..IpcRegs::default()
    }
}

fn run(n: Sysnum, r: &mut IpcRegs) -> Result<u64, Error> {
    // SAFETY: no buffer is named (R14 = 0, capacity 0): the kernel writes no
    // memory of ours.
    decode_result(unsafe { ipc_syscall(n, r) })
}

fn received(r: &IpcRegs) -> Received {
    if r.rsi & NOTIFIED != 0 {
        Received::Notified(r.w[0])
    } else {
        Received::Msg {
            badge: r.rdi,
            msg: Message {
                label: r.rsi as u32,
                words: r.w,
            },
        }
    }
}

/// A new endpoint (every right).
pub fn endpoint_create() -> Result<Endpoint, Error> {
    let mut r = IpcRegs::default();
    run(Sysnum::EndpointCreate, &mut r).map(|h| Endpoint(h as u32))
}

/// A new notification (every right).
pub fn notification_create() -> Result<Notification, Error> {
    let mut r = IpcRegs::default();
    run(Sysnum::NotificationCreate, &mut r).map(|h| Notification(h as u32))
}

/// A new handle to `h`'s object with `rights` (a subset) and `badge` (0:
/// keep the source's).
pub fn handle_dup(h: u32, rights: u32, badge: u64) -> Result<u32, Error> {
    let mut r = IpcRegs {
        rdi: h as u64,
        rsi: rights as u64,
        ..IpcRegs::default()
    };
    r.w[0] = badge;
    run(Sysnum::HandleDup, &mut r).map(|h| h as u32)
}

/// Puts a copy of `h` with `rights` into the table of the process `to`
/// names (needs `KILL` on `to`); returns its number there (a fresh child's
/// first handle is [`FIRST_HANDLE`]).
pub fn handle_give(to: crate::task::ProcessHandle, h: u32, rights: u32) -> Result<u32, Error> {
    handle_give_badged(to, h, rights, 0)
}

/// As [`handle_give`], the copy badged `badge` (non-zero; `h` unbadged):
/// one call for what a `handle_dup` with the badge, a give and a close do.
pub fn handle_give_badged(
    to: crate::task::ProcessHandle,
    h: u32,
    rights: u32,
    badge: u64,
) -> Result<u32, Error> {
    let mut r = IpcRegs {
        rdi: to.raw() as u64,
        rsi: h as u64,
        ..IpcRegs::default()
    };
    r.w[0] = rights as u64;
    r.w[1] = badge;
    run(Sysnum::HandleGive, &mut r).map(|h| h as u32)
}

/// The number of the first handle a fresh process gets (slot 0,
/// generation 1).
pub const FIRST_HANDLE: u32 = 1 << 10;

/// Closes a handle.
pub fn handle_close(h: u32) -> Result<(), Error> {
    let mut r = IpcRegs {
        rdi: h as u64,
        ..IpcRegs::default()
    };
    run(Sysnum::HandleClose, &mut r).map(|_| ())
}

/// Sends `m` and waits for the reply.
pub fn call(ep: Endpoint, m: &Message, timeout: Timeout) -> Result<Message, Error> {
    let mut r = regs(ep.0, m.label, m.words, timeout);
    run(Sysnum::IpcCall, &mut r)?;
    Ok(Message {
        label: r.rsi as u32,
        words: r.w,
    })
}

/// The register-only call: `label` and six words to `ep`, no buffer, no
/// handles, no timeout; the reply's label and words come back in the same
/// registers. The shape the kernel's fast path takes (docs/ipc.md section
/// 5): nothing is marshalled through memory, so the user side of a round
/// trip is the `syscall` and a few register moves. Returns the raw RAX
/// (0 or a negated [`Error`]: [`abi::decode_result`]) so a timed loop can
/// test it without building a `Result`.
#[inline(always)]
pub fn call_regs(ep: Endpoint, label: u32, words: &mut [u64; 6]) -> (u64, u32) {
    let ret: u64;
    let info: u64;
    // RBX and RBP (the received handle numbers, 0 here) cannot be asm
    // operands: they are saved on the stack around the `syscall`. RCX and
    // R11 are clobbered by `syscall`; the kernel preserves every other
    // register (the `abi` convention).
    // SAFETY: a register-only call touches no user memory (RSI's buffer
    // length and handle count are 0, R14/R15 are 0: no receive buffer, no timeout).
    unsafe {
        asm!(
            "push rbp",
            "push rbx",
            "syscall",
            "pop rbx",
            "pop rbp",
            inlateout("rax") Sysnum::IpcCall as u64 => ret,
            inlateout("rdi") ep.0 as u64 => _,          // in: endpoint; out: badge
            inlateout("rsi") label as u64 => info,      // in/out: MsgInfo (label only)
            inlateout("rdx") words[0] => words[0],
            inlateout("r10") words[1] => words[1],
            inlateout("r8") words[2] => words[2],
            inlateout("r9") words[3] => words[3],
            inlateout("r12") words[4] => words[4],
            inlateout("r13") words[5] => words[5],
            in("r14") 0u64,                              // no buffer
            in("r15") 0u64,                              // capacity 0, no timeout
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    (ret, info as u32)
}

/// Delivers `m` to a waiting receiver; `WouldBlock` if none waits.
pub fn send(ep: Endpoint, m: &Message) -> Result<(), Error> {
    let mut r = regs(ep.0, m.label, m.words, None);
    run(Sysnum::IpcSend, &mut r).map(|_| ())
}

/// Waits for a message (or the bound notification).
pub fn recv(ep: Endpoint, timeout: Timeout) -> Result<Received, Error> {
    let mut r = regs(ep.0, 0, [0; 6], timeout);
    run(Sysnum::IpcRecv, &mut r)?;
    Ok(received(&r))
}

/// Answers the call this thread holds.
pub fn reply(m: &Message) -> Result<(), Error> {
    let mut r = regs(0, m.label, m.words, None);
    run(Sysnum::IpcReply, &mut r).map(|_| ())
}

/// Answers the held call (if any; a caller that went away is skipped), then
/// waits for the next message.
pub fn reply_recv(ep: Endpoint, m: &Message, timeout: Timeout) -> Result<Received, Error> {
    let mut r = regs(ep.0, m.label, m.words, timeout);
    run(Sysnum::IpcReplyRecv, &mut r)?;
    Ok(received(&r))
}

/// ORs `bits` into a notification. Never blocks.
pub fn signal(n: Notification, bits: u64) -> Result<(), Error> {
    let mut r = IpcRegs {
        rdi: n.0 as u64,
        rsi: bits,
        ..IpcRegs::default()
    };
    run(Sysnum::NtfSignal, &mut r).map(|_| ())
}

/// Waits for bits; returns (and clears) them.
pub fn wait(n: Notification, timeout: Timeout) -> Result<u64, Error> {
    let mut r = regs(n.0, 0, [0; 6], timeout);
    run(Sysnum::NtfWait, &mut r)?;
    Ok(r.w[0])
}

/// Binds `n` to the calling thread (its endpoint receives also end on a
/// signal); `None` unbinds.
pub fn bind(n: Option<Notification>) -> Result<(), Error> {
    let mut r = IpcRegs {
        rdi: n.map_or(0, |n| n.0 as u64),
        ..IpcRegs::default()
    };
    run(Sysnum::NtfBind, &mut r).map(|_| ())
}

/// What a server does with each request.
pub trait Handler {
    /// Answers one request from the client with `badge`.
    fn handle(&mut self, badge: u64, msg: &Message) -> Message;
    /// The bound notification fired (default: ignored).
    fn notified(&mut self, _bits: u64) {}
}

/// The server loop: receive, dispatch to `h`, reply and receive the next in
/// one `reply_recv`. Returns only on an error of the endpoint itself (e.g.
/// `PeerDied` once no receive handle is left, `BadHandle`).
pub fn serve(ep: Endpoint, h: &mut impl Handler) -> Error {
    let mut next = recv(ep, None);
    loop {
        let answer = match next {
            Err(e) => return e,
            Ok(Received::Msg { badge, msg }) => Some(h.handle(badge, &msg)),
            Ok(Received::Notified(bits)) => {
                h.notified(bits);
                None
            }
        };
        next = match answer {
            Some(a) => reply_recv(ep, &a, None),
            None => recv(ep, None),
        };
    }
}

/// The message-info word (`kcore::ipc::MsgInfo`'s layout): `label`,
/// `handles` sent (0..=4, numbers in [`IpcRegs::handles`]), `copy_mask`
/// (bit i: handle i is copied, else moved), `len` buffer bytes sent, and
/// whether the timeout in R15 applies.
pub const fn info(label: u32, handles: u64, copy_mask: u64, len: u64, timeout: bool) -> u64 {
    label as u64
        | handles << 32
        | copy_mask << 35
        | if timeout { TIMEOUT_BIT } else { 0 }
        | len << 40
}

/// The buffer length of a received message-info word.
pub const fn info_len(info: u64) -> usize {
    ((info >> 40) & ((1 << 17) - 1)) as usize
}

/// The handle count of a received message-info word.
pub const fn info_handles(info: u64) -> usize {
    ((info >> 32) & 7) as usize
}

/// The receive spec (R15): buffer capacity and timeout in µs.
pub const fn spec(capacity: u32, timeout_us: u32) -> u64 {
    capacity as u64 | (timeout_us as u64) << 32
}

/// Packs up to four handle numbers for [`IpcRegs::handles`].
pub fn pack(h: &[u32]) -> [u64; 2] {
    let g = |i: usize| h.get(i).copied().unwrap_or(0) as u64;
    [g(0) | g(1) << 32, g(2) | g(3) << 32]
}

/// Unpacks received handle numbers.
pub fn unpack(h: [u64; 2]) -> [u32; 4] {
    [
        h[0] as u32,
        (h[0] >> 32) as u32,
        h[1] as u32,
        (h[1] >> 32) as u32,
    ]
}
