//! User memory as a type.
//!
//! A syscall that names user memory (`debug_write`'s text, `sysinfo`'s
//! buffer, `process_spawn`'s image) gets it as a [`UserSlice`] (to read) or a
//! [`UserSliceMut`] (to write) when its registers are decoded, never as a
//! bare `(u64, u64)` handed down: the range check happens once, in the
//! constructor, and the only ways to touch the bytes are the copies here,
//! which go through [`crate::arch::uaccess`] (SMAP bracket, exception-table
//! fixup). Like Hubris' `USlice`, a slice is an *allegation*: its range lies
//! in the user half and does not wrap, but whether it is mapped (and
//! stays mapped while another thread of the process runs) is known only
//! when a copy succeeds; a fault during a copy is [`Error::BadAddress`].
//!
//! (Here, below the object layer, so `ipc/` can carry message buffers the
//! same way.)

use crate::arch::uaccess::{copy_from_user, copy_to_user, user_range_ok};
use abi::Error;

/// `len` bytes of the caller's memory at `addr`, to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserSlice {
    addr: u64,
    len: u64,
}

/// `len` bytes of the caller's memory at `addr`, to be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserSliceMut {
    addr: u64,
    len: u64,
}

/// The range check both kinds share: `BadAddress` unless the range is in
/// the user half without wrapping (an empty range anywhere in it is fine).
fn checked(addr: u64, len: u64) -> Result<(u64, u64), Error> {
    if user_range_ok(addr, len) {
        Ok((addr, len))
    } else {
        Err(Error::BadAddress)
    }
}

impl UserSlice {
    /// The range the caller named; `BadAddress` if it is not in the user
    /// half or wraps.
    pub fn new(addr: u64, len: u64) -> Result<UserSlice, Error> {
        checked(addr, len).map(|(addr, len)| UserSlice { addr, len })
    }

    /// Its length in bytes.
    pub const fn len_bytes(&self) -> u64 {
        self.len
    }

    /// Its first `max` bytes (all of it if it is shorter).
    pub const fn prefix(self, max: u64) -> UserSlice {
        UserSlice {
            addr: self.addr,
            len: if self.len < max { self.len } else { max },
        }
    }

    /// The part from byte `offset` on (empty past the end).
    pub const fn skip(self, offset: u64) -> UserSlice {
        let offset = if offset < self.len { offset } else { self.len };
        UserSlice {
            addr: self.addr + offset,
            len: self.len - offset,
        }
    }

    /// Copies the slice's first `dst.len()` bytes into `dst` (all of them
    /// if `dst` is longer; returns how many). `BadAddress` if the memory is
    /// not mapped readable; `dst` may then hold part of the copy.
    pub fn read(self, dst: &mut [u8]) -> Result<usize, Error> {
        let n = (self.len as usize).min(dst.len());
        copy_from_user(&mut dst[..n], self.addr)?;
        Ok(n)
    }
}

impl UserSliceMut {
    /// The range the caller named; `BadAddress` if it is not in the user
    /// half or wraps.
    pub fn new(addr: u64, len: u64) -> Result<UserSliceMut, Error> {
        checked(addr, len).map(|(addr, len)| UserSliceMut { addr, len })
    }

    /// Copies `src` (at most the slice's length of it; returns how many
    /// bytes) to the start of the slice. `BadAddress` if the memory is not
    /// mapped writable; part of it may then have been written.
    pub fn write(self, src: &[u8]) -> Result<usize, Error> {
        let n = (self.len as usize).min(src.len());
        copy_to_user(self.addr, &src[..n])?;
        Ok(n)
    }
}
