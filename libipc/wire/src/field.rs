//! How each field type sits in a message (see the crate docs' layout).

use crate::{Decoder, Encoder, WireError};

/// A type that can be a field of a request or reply. `'de` is the lifetime
/// of the received buffer a decoded value may borrow.
pub trait Field<'de>: Sized {
    /// Words of the message this field takes (its value, or a length).
    /// [`protocol!`](crate::protocol) adds them up at compile time, so a
    /// variant past [`WORDS`](crate::WORDS) does not build.
    const WORDS: usize;
    /// Handle slots this field takes; checked against
    /// [`MAX_HANDLES`](crate::MAX_HANDLES) the same way.
    const HANDLES: usize;
    /// Appends `self` to the message.
    fn put(&self, e: &mut Encoder<'_>) -> Result<(), WireError>;
    /// Reads the next value, checking it.
    fn get(d: &mut Decoder<'de>) -> Result<Self, WireError>;
}

impl Field<'_> for u64 {
    const WORDS: usize = 1;
    const HANDLES: usize = 0;
    fn put(&self, e: &mut Encoder<'_>) -> Result<(), WireError> {
        e.word(*self)
    }
    fn get(d: &mut Decoder<'_>) -> Result<Self, WireError> {
        d.word()
    }
}

impl Field<'_> for i64 {
    const WORDS: usize = 1;
    const HANDLES: usize = 0;
    fn put(&self, e: &mut Encoder<'_>) -> Result<(), WireError> {
        e.word(*self as u64)
    }
    fn get(d: &mut Decoder<'_>) -> Result<Self, WireError> {
        d.word().map(|w| w as i64)
    }
}

/// Narrow integers take a word and must fit on decode.
macro_rules! narrow {
    ($($t:ty),*) => {$(
        impl Field<'_> for $t {
            const WORDS: usize = 1;
            const HANDLES: usize = 0;
            fn put(&self, e: &mut Encoder<'_>) -> Result<(), WireError> {
                e.word(u64::from(*self))
            }
            fn get(d: &mut Decoder<'_>) -> Result<Self, WireError> {
                <$t>::try_from(d.word()?).map_err(|_| WireError::BadValue)
            }
        }
    )*};
}
narrow!(u8, u16, u32);

impl Field<'_> for bool {
    const WORDS: usize = 1;
    const HANDLES: usize = 0;
    fn put(&self, e: &mut Encoder<'_>) -> Result<(), WireError> {
        e.word(u64::from(*self))
    }
    fn get(d: &mut Decoder<'_>) -> Result<Self, WireError> {
        match d.word()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::BadValue),
        }
    }
}

/// Bytes: a length word, the bytes in the buffer.
impl<'de: 'a, 'a> Field<'de> for &'a [u8] {
    const WORDS: usize = 1;
    const HANDLES: usize = 0;
    fn put(&self, e: &mut Encoder<'_>) -> Result<(), WireError> {
        e.word(self.len() as u64)?;
        e.bytes(self)
    }
    fn get(d: &mut Decoder<'de>) -> Result<Self, WireError> {
        let len = d.word()?;
        d.bytes(len)
    }
}

/// Text: as bytes, and must be UTF-8.
impl<'de: 'a, 'a> Field<'de> for &'a str {
    const WORDS: usize = 1;
    const HANDLES: usize = 0;
    fn put(&self, e: &mut Encoder<'_>) -> Result<(), WireError> {
        self.as_bytes().put(e)
    }
    fn get(d: &mut Decoder<'de>) -> Result<Self, WireError> {
        let b: &'de [u8] = d.get()?;
        core::str::from_utf8(b).map_err(|_| WireError::BadUtf8)
    }
}

/// A handle that travels with the message (moved out of the sender's
/// table; on the receiving side, the number in the receiver's table, which
/// the handler now owns and must close or keep).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Handle(pub u32);

impl Field<'_> for Handle {
    const WORDS: usize = 0;
    const HANDLES: usize = 1;
    fn put(&self, e: &mut Encoder<'_>) -> Result<(), WireError> {
        e.handle(self.0, false)
    }
    fn get(d: &mut Decoder<'_>) -> Result<Self, WireError> {
        d.handle().map(Handle)
    }
}

/// A handle sent as a copy: the sender keeps its own (the handle needs
/// `DUPLICATE` as well as `TRANSFER`). The receiver gets a handle like any
/// other; decoding yields its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CopiedHandle(pub u32);

impl Field<'_> for CopiedHandle {
    const WORDS: usize = 0;
    const HANDLES: usize = 1;
    fn put(&self, e: &mut Encoder<'_>) -> Result<(), WireError> {
        e.handle(self.0, true)
    }
    fn get(d: &mut Decoder<'_>) -> Result<Self, WireError> {
        d.handle().map(CopiedHandle)
    }
}
