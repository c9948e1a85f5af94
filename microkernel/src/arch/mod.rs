//! Architecture support. Only x86_64 exists; portable code uses `crate::arch::*`.

mod x86_64;
pub use self::x86_64::*;
