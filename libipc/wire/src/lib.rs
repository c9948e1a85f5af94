//! libipc's message codec: a protocol is declared once, as Rust types, with
//! [`protocol!`]; this crate turns it into checked encode/decode over a Mica
//! message, a typed [`Handler`] trait, the [`dispatch`] a server loop runs,
//! and typed client stubs over any [`Transport`].
//!
//! # The message (docs/ipc.md section 2)
//! A label (`u32`), six words, optionally a buffer (up to 64 KiB, copied by
//! the kernel) and up to four handles. A request's label is its op number;
//! a reply's label is its variant number; [`ERROR_LABEL`] is a protocol
//! error reply (word 0 = a [`WireError`] code).
//!
//! # Field layout
//! Fields are laid out in declaration order ([`Field`]): each integer or
//! `bool` takes one word; a byte slice or `&str` takes one word (its
//! length) and that many bytes of the buffer, appended in order; a
//! [`Handle`] (moved) or [`CopiedHandle`] takes the next handle slot.
//! More than six words, or than four handles, is a protocol bug reported
//! when encoding ([`WireError::TooManyWords`], [`WireError::TooManyHandles`]);
//! a server refuses every message of such an op.
//!
//! # What decode checks (before any handler runs)
//! - the label names an op ([`WireError::UnknownOp`]);
//! - every field is present and valid: lengths within the buffer
//!   ([`WireError::BadLength`]), integers in range and booleans 0 or 1
//!   ([`WireError::BadValue`]), UTF-8 where a `str` is expected
//!   ([`WireError::BadUtf8`]), a handle where one is expected
//!   ([`WireError::MissingHandle`]);
//! - nothing is left over: the buffer is consumed exactly, the words the
//!   op does not use are zero and no extra handle came
//!   ([`WireError::Trailing`]).
//!
//! Decoding only reads its input and never panics, whatever the input (a
//! property test feeds it random labels, words, buffers and handle counts).
//!
//! This crate has no dependencies and no `unsafe`; the syscalls live in
//! libipc, which implements [`Transport`] over an endpoint and runs
//! [`dispatch`] in its `serve` loop.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

mod field;
mod macros;
pub mod resend;

pub use field::{CopiedHandle, Field, Handle};

/// Words in a message's register part.
pub const WORDS: usize = 6;
/// Most handles one message carries.
pub const MAX_HANDLES: usize = 4;
/// The largest buffer the kernel copies (64 KiB).
pub const MAX_BUFFER: usize = 1 << 16;
/// The label of a protocol error reply: word 0 is a [`WireError`] code. No
/// op or reply variant may use it ([`protocol!`] checks at compile time).
pub const ERROR_LABEL: u32 = u32::MAX;

/// Why a message did not decode (or encode). Travels in error replies as
/// its code, so the values are ABI between a server and its clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum WireError {
    /// The label names no op of the protocol.
    UnknownOp = 1,
    /// A length word points past the end of the buffer.
    BadLength = 2,
    /// A handle field found no handle.
    MissingHandle = 3,
    /// A `str` field holds bytes that are not UTF-8.
    BadUtf8 = 4,
    /// An integer does not fit its field, or a `bool` is neither 0 nor 1.
    BadValue = 5,
    /// Something is left over: buffer bytes, non-zero unused words or extra
    /// handles.
    Trailing = 6,
    /// Encoding: the buffer is too small for the message.
    BufferFull = 7,
    /// Encoding: the message needs more than six words.
    TooManyWords = 8,
    /// Encoding: the message needs more than four handles.
    TooManyHandles = 9,
    /// An error reply carried a code this side does not know.
    Unknown = 10,
}

impl WireError {
    /// Every error, in code order.
    pub const ALL: [WireError; 10] = [
        WireError::UnknownOp,
        WireError::BadLength,
        WireError::MissingHandle,
        WireError::BadUtf8,
        WireError::BadValue,
        WireError::Trailing,
        WireError::BufferFull,
        WireError::TooManyWords,
        WireError::TooManyHandles,
        WireError::Unknown,
    ];

    /// The code carried in an error reply.
    pub const fn code(self) -> u64 {
        self as u64
    }

    /// The error a code names ([`WireError::Unknown`] for any other value).
    pub fn from_code(code: u64) -> WireError {
        WireError::ALL
            .iter()
            .copied()
            .find(|e| e.code() == code)
            .unwrap_or(WireError::Unknown)
    }
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            WireError::UnknownOp => "unknown op",
            WireError::BadLength => "length past the buffer",
            WireError::MissingHandle => "missing handle",
            WireError::BadUtf8 => "not UTF-8",
            WireError::BadValue => "value out of range",
            WireError::Trailing => "trailing data",
            WireError::BufferFull => "buffer too small",
            WireError::TooManyWords => "more than six words",
            WireError::TooManyHandles => "more than four handles",
            WireError::Unknown => "unknown error code",
        })
    }
}

/// A received message, as the kernel delivered it: `buf` is exactly the
/// bytes that arrived, `handles[..nhandles]` the handle numbers now in the
/// receiver's table. Nothing in it is trusted yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incoming<'b> {
    /// The label.
    pub label: u32,
    /// The six words.
    pub words: [u64; WORDS],
    /// The buffer bytes received.
    pub buf: &'b [u8],
    /// Received handle numbers (`[..nhandles]` valid).
    pub handles: [u32; MAX_HANDLES],
    /// How many handles came (a count above [`MAX_HANDLES`] is never read
    /// past the array: it decodes as [`WireError::Trailing`]).
    pub nhandles: usize,
}

impl<'b> Incoming<'b> {
    /// A message with only a label and words.
    pub fn words(label: u32, words: [u64; WORDS]) -> Self {
        Incoming {
            label,
            words,
            buf: &[],
            handles: [0; MAX_HANDLES],
            nhandles: 0,
        }
    }

    /// The valid handle numbers.
    pub fn handles(&self) -> &[u32] {
        &self.handles[..self.nhandles.min(MAX_HANDLES)]
    }
}

/// The register part of an encoded message; its buffer bytes are
/// `buf[..len]` of the buffer the [`Encoder`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    /// The label.
    pub label: u32,
    /// The six words (unused ones are zero).
    pub words: [u64; WORDS],
    /// Buffer bytes used.
    pub len: usize,
    /// Handles to send (`[..nhandles]`).
    pub handles: [u32; MAX_HANDLES],
    /// How many handles.
    pub nhandles: usize,
    /// Bit i: handle i is copied (the sender keeps it; needs `DUPLICATE`),
    /// else moved.
    pub copy_mask: u8,
}

impl Frame {
    /// A protocol error reply.
    pub fn error(e: WireError) -> Frame {
        let mut f = Frame {
            label: ERROR_LABEL,
            ..Frame::default()
        };
        f.words[0] = e.code();
        f
    }

    /// The incoming view of this frame over `buf` (what a receiver would
    /// see, handle numbers unchanged): for loopback transports and tests.
    pub fn incoming<'b>(&self, buf: &'b [u8]) -> Incoming<'b> {
        Incoming {
            label: self.label,
            words: self.words,
            buf: &buf[..self.len.min(buf.len())],
            handles: self.handles,
            nhandles: self.nhandles,
        }
    }
}

/// Writes a message: words, buffer bytes and handles in field order.
pub struct Encoder<'b> {
    frame: Frame,
    nwords: usize,
    buf: &'b mut [u8],
}

impl<'b> Encoder<'b> {
    /// An empty message with `label` writing its bytes into `buf`.
    pub fn new(label: u32, buf: &'b mut [u8]) -> Self {
        Encoder {
            frame: Frame {
                label,
                ..Frame::default()
            },
            nwords: 0,
            buf,
        }
    }

    /// Appends one word.
    pub fn word(&mut self, w: u64) -> Result<(), WireError> {
        let slot = self
            .frame
            .words
            .get_mut(self.nwords)
            .ok_or(WireError::TooManyWords)?;
        *slot = w;
        self.nwords += 1;
        Ok(())
    }

    /// Appends bytes to the buffer.
    pub fn bytes(&mut self, b: &[u8]) -> Result<(), WireError> {
        let end = self
            .frame
            .len
            .checked_add(b.len())
            .filter(|&e| e <= self.buf.len() && e <= MAX_BUFFER)
            .ok_or(WireError::BufferFull)?;
        self.buf[self.frame.len..end].copy_from_slice(b);
        self.frame.len = end;
        Ok(())
    }

    /// Appends a handle: copied to the receiver if `copy`, else moved.
    pub fn handle(&mut self, h: u32, copy: bool) -> Result<(), WireError> {
        let i = self.frame.nhandles;
        let slot = self
            .frame
            .handles
            .get_mut(i)
            .ok_or(WireError::TooManyHandles)?;
        *slot = h;
        if copy {
            self.frame.copy_mask |= 1 << i;
        }
        self.frame.nhandles += 1;
        Ok(())
    }

    /// The finished message's register part.
    pub fn finish(self) -> Frame {
        self.frame
    }
}

/// Reads a message field by field, checking as it goes; [`Decoder::finish`]
/// checks that nothing is left over.
pub struct Decoder<'de> {
    words: [u64; WORDS],
    nwords: usize,
    buf: &'de [u8],
    pos: usize,
    handles: [u32; MAX_HANDLES],
    nhandles: usize,
    taken: usize,
}

impl<'de> Decoder<'de> {
    /// Starts reading `m` (its label is the caller's business).
    pub fn new(m: &Incoming<'de>) -> Self {
        Decoder {
            words: m.words,
            nwords: 0,
            buf: m.buf,
            pos: 0,
            handles: m.handles,
            nhandles: m.nhandles,
            taken: 0,
        }
    }

    /// The next word. A missing word cannot happen on the wire (all six
    /// always arrive); asking for a seventh is a protocol bug, reported as
    /// [`WireError::TooManyWords`].
    pub fn word(&mut self) -> Result<u64, WireError> {
        let w = *self.words.get(self.nwords).ok_or(WireError::TooManyWords)?;
        self.nwords += 1;
        Ok(w)
    }

    /// The next `len` bytes of the buffer.
    pub fn bytes(&mut self, len: u64) -> Result<&'de [u8], WireError> {
        let len = usize::try_from(len).map_err(|_| WireError::BadLength)?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.buf.len())
            .ok_or(WireError::BadLength)?;
        let b = &self.buf[self.pos..end];
        self.pos = end;
        Ok(b)
    }

    /// The next handle.
    pub fn handle(&mut self) -> Result<u32, WireError> {
        if self.taken >= self.nhandles.min(MAX_HANDLES) {
            return Err(WireError::MissingHandle);
        }
        let h = self.handles[self.taken];
        if h == 0 {
            return Err(WireError::MissingHandle);
        }
        self.taken += 1;
        Ok(h)
    }

    /// The next field.
    pub fn get<T: Field<'de>>(&mut self) -> Result<T, WireError> {
        T::get(self)
    }

    /// Checks that nothing is left: every buffer byte read, unused words
    /// zero, no handle beyond those read.
    pub fn finish(&self) -> Result<(), WireError> {
        let words_clean = self.words[self.nwords..].iter().all(|&w| w == 0);
        if self.pos != self.buf.len() || !words_clean || self.taken != self.nhandles {
            return Err(WireError::Trailing);
        }
        Ok(())
    }
}

/// A request or reply enum of a protocol: generated by [`protocol!`].
pub trait Message<'de>: Sized {
    /// Decodes and checks `m` (see the crate docs for what is checked).
    fn decode(m: &Incoming<'de>) -> Result<Self, WireError>;
    /// The label this value is sent with.
    fn label(&self) -> u32;
    /// Encodes this value's fields (the label is set by [`Message::encode_into`]).
    fn encode_fields(&self, e: &mut Encoder<'_>) -> Result<(), WireError>;
    /// Encodes into `buf`; returns the register part.
    fn encode_into(&self, buf: &mut [u8]) -> Result<Frame, WireError> {
        let mut e = Encoder::new(self.label(), buf);
        self.encode_fields(&mut e)?;
        Ok(e.finish())
    }
}

/// A protocol: its request and reply types ([`protocol!`] declares a unit
/// struct implementing this).
pub trait Protocol {
    /// The requests a server takes.
    type Request<'a>: Message<'a>;
    /// The replies it sends.
    type Reply<'a>: Message<'a>;

    /// Whether request `op` is marked `(idempotent)` in the declaration:
    /// running it twice has the effect of running it once, so a client
    /// whose server died mid-call may send it again (libipc's name-based
    /// clients do, once). Unknown ops are not.
    fn idempotent(_op: u32) -> bool {
        false
    }
}

/// What a server does with each (already checked) request.
pub trait Handler<P: Protocol> {
    /// Answers `req` from the client whose handle carries `badge` (0: an
    /// unbadged handle). The reply may borrow the server's state or the
    /// request.
    fn handle<'r>(&'r mut self, badge: u64, req: P::Request<'r>) -> P::Reply<'r>;

    /// The notification bound to the serving thread fired with `bits`
    /// (default: ignored).
    fn notified(&mut self, _bits: u64) {}

    /// Whether the server is done: checked after each request; once true,
    /// the serve loop sends that request's reply and returns (default:
    /// never).
    fn done(&self) -> bool {
        false
    }
}

/// What [`dispatch`] did with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dispatched {
    /// The request was handled; the frame is its reply.
    Handled(Frame),
    /// The message was refused before any handler ran; the frame is the
    /// error reply. The received handles were not taken by anyone: the
    /// server loop closes them.
    Refused(Frame, WireError),
}

impl Dispatched {
    /// The reply to send.
    pub fn frame(&self) -> Frame {
        match *self {
            Dispatched::Handled(f) | Dispatched::Refused(f, _) => f,
        }
    }
}

/// One server step: decode `m` as a `P` request (refusing it with an error
/// reply if it does not check), run the handler, encode its reply into
/// `out`. Never panics; a reply that does not fit `out` becomes an error
/// reply ([`WireError::BufferFull`]).
pub fn dispatch<'m, P: Protocol, H: Handler<P>>(
    h: &'m mut H,
    badge: u64,
    m: &Incoming<'m>,
    out: &mut [u8],
) -> Dispatched {
    let req = match <P::Request<'m> as Message<'m>>::decode(m) {
        Ok(r) => r,
        Err(e) => return Dispatched::Refused(Frame::error(e), e),
    };
    let reply = h.handle(badge, req);
    match reply.encode_into(out) {
        Ok(f) => Dispatched::Handled(f),
        Err(e) => Dispatched::Handled(Frame::error(e)),
    }
}

/// Something that carries a call to a server and back: libipc's endpoint
/// caller, or a loopback in host tests.
pub trait Transport {
    /// What can go wrong on the way (libipc: `abi::Error`).
    type Error;
    /// Sends `frame` with `buf[..frame.len]` and returns the reply, whose
    /// bytes land in `buf`.
    fn call<'b>(&mut self, frame: &Frame, buf: &'b mut [u8]) -> Result<Incoming<'b>, Self::Error>;
}

/// Why a typed call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallError<E> {
    /// The transport failed (libipc: the kernel's error, e.g. `PeerDied`).
    Transport(E),
    /// Our request did not encode (a protocol bug or a buffer too small).
    Encode(WireError),
    /// The server refused the request with this protocol error.
    Refused(WireError),
    /// The reply did not decode.
    BadReply(WireError),
}

/// The client side of one call: encode `req` into `buf`, call, decode the
/// reply (an error reply becomes [`CallError::Refused`]). The generated
/// client stubs are one line over this.
pub fn call<'b, P: Protocol, T: Transport>(
    t: &mut T,
    req: &P::Request<'_>,
    buf: &'b mut [u8],
) -> Result<P::Reply<'b>, CallError<T::Error>> {
    let frame = req.encode_into(buf).map_err(CallError::Encode)?;
    let m = t.call(&frame, buf).map_err(CallError::Transport)?;
    if m.label == ERROR_LABEL {
        return Err(CallError::Refused(WireError::from_code(m.words[0])));
    }
    <P::Reply<'b> as Message<'b>>::decode(&m).map_err(CallError::BadReply)
}

/// A field type that can never hold a value: the hidden variant that ties
/// a protocol's lifetime to its enums carries it, so no value of that
/// variant exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Never {}

#[cfg(test)]
mod tests;
