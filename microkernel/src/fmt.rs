//! Small formatting helpers for diagnostics.

use core::fmt;

/// Formats as ` CR2=0x...` when present, nothing otherwise.
pub struct Cr2(pub Option<u64>);

impl fmt::Display for Cr2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => write!(f, " CR2=0x{a:x}"),
            None => Ok(()),
        }
    }
}
