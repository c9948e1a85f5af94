//! Kernel objects: data and their invariants.

pub mod space;
pub mod thread;
