//! The message format and the IPC register layout.
//!
//! A message is a 32-bit label, six 64-bit words, optionally a buffer of up
//! to [`MAX_BUFFER`] bytes that the kernel copies, and up to
//! [`MAX_TRANSFER`] handles that move (or are copied) into the receiver's
//! table. Everything but the buffer and the handle numbers' *meaning* travels
//! in registers, so a register-only message never touches memory (the fast
//! path's precondition).
//!
//! # Register layout
//! The `syscall` convention of `abi` holds (RAX number and result, RCX/R11
//! clobbered by the instruction); the IPC calls use more registers, and the
//! ones listed as outputs are overwritten (the others are preserved).
//!
//! Inputs:
//!
//! | reg | call | send | recv | reply | reply_recv | signal | wait |
//! |-----|------|------|------|-------|------------|--------|------|
//! | rax | sysnum | sysnum | sysnum | sysnum | sysnum | sysnum | sysnum |
//! | rdi | endpoint | endpoint | endpoint | – | endpoint (recv) | notification | notification |
//! | rsi | [`MsgInfo`] | [`MsgInfo`] | [`MsgInfo`] (timeout bit only) | [`MsgInfo`] | [`MsgInfo`] (reply; its timeout bit is the recv's) | bits | [`MsgInfo`] (timeout bit only) |
//! | rdx r10 r8 r9 r12 r13 | w0..w5 | w0..w5 | – | w0..w5 | w0..w5 (reply) | – | – |
//! | r14 | buffer address | buffer address | buffer address | buffer address | buffer address | – | – |
//! | r15 | [`RecvSpec`] | – | [`RecvSpec`] | – | [`RecvSpec`] | – | [`RecvSpec`] (timeout) |
//! | rbx | handles 0 (low 32) and 1 (high 32) | same | – | same | same (reply) | – | – |
//! | rbp | handles 2 and 3 | same | – | same | same (reply) | – | – |
//!
//! Outputs (for call, recv and reply_recv: the message received):
//!
//! | reg | meaning |
//! |-----|---------|
//! | rax | 0, or `-(Error)` as for every syscall (then nothing else is written) |
//! | rdi | the badge of the handle the message was sent through (recv, reply_recv; 0 for a call's reply) |
//! | rsi | [`MsgInfo`] of the received message: label, handle count, buffer bytes written, [`MsgInfo::NOTIFIED`] |
//! | rdx r10 r8 r9 r12 r13 | w0..w5; after a notification (wait, or a recv woken by its bound notification) w0 holds the bits |
//! | rbx, rbp | the received handles' numbers in this process (0 where none) |
//!
//! send, reply and signal return only RAX. The buffer (r14) is one region in
//! both directions: a call sends `r14[..len]` and the reply is written to
//! `r14[..capacity]`; reply_recv does the same for its reply and next request.

use crate::handles::{Handle, TransferMode, MAX_TRANSFER};

/// The largest buffer one message carries, in bytes.
pub const MAX_BUFFER: usize = 64 * 1024;

/// The label and six words: the register part of a message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// What the message is (the protocol's operation code).
    pub label: u32,
    /// The payload words (w0..w5).
    pub words: [u64; 6],
}

/// Why a message description is refused (an error for the side that gave it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgError {
    /// Reserved bits set, more than four handles, a copy bit past the handle
    /// count, an output-only bit set on input.
    Malformed,
    /// A buffer or capacity above [`MAX_BUFFER`].
    BufferTooLarge,
    /// The message is longer than the receiver's capacity: nothing is
    /// delivered, the sender gets the error, the receiver keeps waiting.
    DoesNotFit,
}

impl From<MsgError> for abi::Error {
    fn from(_: MsgError) -> Self {
        abi::Error::InvalidArgument
    }
}

/// The message-info word (RSI): label and the shape of the message.
///
/// ```text
///  63    58 57 56        40 39 38  35 34  32 31             0
/// +--------+--+------------+--+------+-----+----------------+
/// |reserved|N | buffer len |T | copy |count|     label      |
/// +--------+--+------------+--+------+-----+----------------+
/// ```
/// - `count` (3 bits): handles sent, 0..=4 (numbers in RBX/RBP).
/// - `copy` (4 bits): bit *i* set = handle *i* is copied, else moved; only
///   bits below `count` may be set.
/// - `T`: the timeout in [`RecvSpec`] applies (call, recv, reply_recv, wait).
/// - `buffer len` (17 bits): bytes of the buffer sent (in) or written (out),
///   0..=65536.
/// - `N`: output only: the receive ended because of a notification.
/// - reserved bits must be 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsgInfo(u64);

const COUNT_SHIFT: u32 = 32;
const COPY_SHIFT: u32 = 35;
const TIMEOUT_BIT: u64 = 1 << 39;
const LEN_SHIFT: u32 = 40;
const LEN_MASK: u64 = (1 << 17) - 1;
const RESERVED: u64 = !((1u64 << 58) - 1);

impl MsgInfo {
    /// Output-only flag: the receive returned a notification (bits in w0).
    pub const NOTIFIED: u64 = 1 << 57;

    /// A message description (for the kernel's outputs and for libipc).
    pub fn new(label: u32, handles: usize, copy_mask: u8, buffer_len: usize) -> Self {
        debug_assert!(handles <= MAX_TRANSFER && buffer_len <= MAX_BUFFER);
        MsgInfo(
            label as u64
                | (handles as u64) << COUNT_SHIFT
                | ((copy_mask & 0xf) as u64) << COPY_SHIFT
                | (buffer_len as u64) << LEN_SHIFT,
        )
    }
    /// Checks a word from user space (RSI on entry).
    pub fn from_user(raw: u64) -> Result<Self, MsgError> {
        let info = MsgInfo(raw);
        if raw & (RESERVED | Self::NOTIFIED) != 0 || info.handles() > MAX_TRANSFER {
            return Err(MsgError::Malformed);
        }
        if info.copy_mask() >> info.handles() != 0 {
            return Err(MsgError::Malformed);
        }
        if info.buffer_len() > MAX_BUFFER {
            return Err(MsgError::BufferTooLarge);
        }
        Ok(info)
    }
    /// The raw word.
    pub const fn raw(self) -> u64 {
        self.0
    }
    /// The label.
    pub const fn label(self) -> u32 {
        self.0 as u32
    }
    /// Handles sent.
    pub const fn handles(self) -> usize {
        ((self.0 >> COUNT_SHIFT) & 7) as usize
    }
    /// Which handles are copied rather than moved.
    pub const fn copy_mask(self) -> u8 {
        ((self.0 >> COPY_SHIFT) & 0xf) as u8
    }
    /// The timeout in [`RecvSpec`] applies.
    pub const fn has_timeout(self) -> bool {
        self.0 & TIMEOUT_BIT != 0
    }
    /// With the timeout bit set.
    pub const fn with_timeout(self) -> Self {
        MsgInfo(self.0 | TIMEOUT_BIT)
    }
    /// With the notified bit set (kernel output).
    pub const fn with_notified(self) -> Self {
        MsgInfo(self.0 | Self::NOTIFIED)
    }
    /// Buffer bytes.
    pub const fn buffer_len(self) -> usize {
        ((self.0 >> LEN_SHIFT) & LEN_MASK) as usize
    }
    /// Nothing but registers: no buffer, no handles, no timeout.
    pub const fn is_register_only(self) -> bool {
        self.handles() == 0 && self.buffer_len() == 0 && !self.has_timeout()
    }
    /// The handle transfers named by this word and RBX/RBP.
    pub fn transfers(
        self,
        rbx: u64,
        rbp: u64,
    ) -> heapless::Vec<(Handle, TransferMode), MAX_TRANSFER> {
        let raw = [
            rbx as u32,
            (rbx >> 32) as u32,
            rbp as u32,
            (rbp >> 32) as u32,
        ];
        (0..self.handles())
            .map(|i| {
                let mode = if self.copy_mask() & (1 << i) != 0 {
                    TransferMode::Copy
                } else {
                    TransferMode::Move
                };
                (Handle::from_raw(raw[i]), mode)
            })
            .collect()
    }
}

/// Packs up to four received handle numbers into the RBX/RBP outputs.
pub fn pack_handles(handles: &[Handle]) -> (u64, u64) {
    let mut raw = [0u64; MAX_TRANSFER];
    for (r, h) in raw.iter_mut().zip(handles) {
        *r = h.raw() as u64;
    }
    (raw[0] | raw[1] << 32, raw[2] | raw[3] << 32)
}

/// The receive side's description (R15): buffer capacity and timeout.
///
/// Bits 0..32: bytes the buffer at R14 can take (0..=65536). Bits 32..64: the
/// timeout in microseconds when [`MsgInfo::has_timeout`] is set (0 = do not
/// block at all; about 71 minutes at most; longer waits loop).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvSpec {
    /// Receive buffer capacity in bytes.
    pub capacity: usize,
    /// `None`: wait for ever; `Some(0)`: poll; `Some(us)`: give up after.
    pub timeout_us: Option<u32>,
}

impl RecvSpec {
    /// Decodes R15 given the message-info word's timeout bit.
    pub fn from_user(r15: u64, info: MsgInfo) -> Result<Self, MsgError> {
        let spec = Self::of(r15, info);
        if spec.capacity > MAX_BUFFER {
            return Err(MsgError::BufferTooLarge);
        }
        Ok(spec)
    }
    /// What R15 names with `info`'s timeout bit, the capacity not checked
    /// ([`from_user`](Self::from_user) checks it; the kernel's IPC decode
    /// builds the spec once after testing its two cases apart).
    #[inline(always)]
    pub fn of(r15: u64, info: MsgInfo) -> Self {
        RecvSpec {
            capacity: r15 as u32 as usize,
            timeout_us: info.has_timeout().then_some((r15 >> 32) as u32),
        }
    }
    /// Encodes R15 (libipc's side).
    pub fn to_reg(self) -> u64 {
        self.capacity as u64 | (self.timeout_us.unwrap_or(0) as u64) << 32
    }
    /// Whether a message with `len` buffer bytes can be delivered here.
    pub fn accepts(self, len: usize) -> Result<(), MsgError> {
        if len <= self.capacity {
            Ok(())
        } else {
            Err(MsgError::DoesNotFit)
        }
    }
}
