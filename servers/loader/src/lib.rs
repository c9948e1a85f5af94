//! The ELF loader's pure logic, host-tested and fuzzed; the loader server
//! (and init, should it map the loader itself) links it.
//!
//! - [`plan()`]: validate an ELF64 image (with the `elf` crate) into a
//!   [`LoadPlan`] or a typed [`LoadError`]: one variant per rule, so a caller
//!   learns exactly which rule an image broke. What is accepted and why is
//!   in docs/decisions.md, "loader (issue 11 item 2)".
//! - [`apply()`]: carry a plan out on an abstract [`Target`] (map with
//!   rights, write, zero, protect), which the server implements over the
//!   kernel's memory syscalls.
//! - [`stack::build`]: the SysV initial stack (argc, argv, envp, auxv, the
//!   strings and AT_RANDOM's bytes) in a buffer standing for the stack's top.
//!
//! - [`ring3`] (ring 3 only): the one load path over the kernel's vm
//!   syscalls, shared by the loader server (`src/main.rs`) and init.
//!
//! No allocation, no globals: the plan borrows the image and holds its
//! segments in a fixed array; only [`ring3`] is target-specific. Nothing here panics on any input
//! (the host fuzzer, `fuzz::fuzz_timed`, checks that and the plan
//! invariants listed in [`plan`](mod@plan)).
#![cfg_attr(not(test), no_std)]

pub mod apply;
mod error;
pub mod plan;
pub mod reloc;
#[cfg(target_os = "none")]
pub mod ring3;
pub mod stack;

pub use apply::{apply, Target};
pub use error::LoadError;
pub use plan::{plan, AuxValues, Kind, Limits, LoadPlan, Perms, Segment};
pub use reloc::{Relocation, Relocations};

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod testelf;
#[cfg(test)]
mod tests;
