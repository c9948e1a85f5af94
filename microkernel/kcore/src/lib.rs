//! The kernel's pure logic: no asm, no statics, no target cfgs, so every
//! algorithm here runs under `cargo test` on the host.
//!
//! - [`frame`]: the physical frame allocator (a bitmap in caller memory).
//! - [`memmap`]: turning the boot memory map into free page ranges.
//! - [`paging`]: x86_64 4-level page-table edits over an abstract
//!   [`paging::PhysMem`], which the kernel implements with its direct map.
//!
//! - [`runqueue`]: per-CPU priority run queues.
//!
//! Only the run queue allocates (through `alloc`); everything else works in
//! buffers its callers own.
#![cfg_attr(not(test), no_std)]
// All raw-pointer work lives in the kernel crate (e.g. its `PhysMem` impl);
// this crate stays safe code so its tests cover everything it does.
#![forbid(unsafe_code)]

extern crate alloc;

pub mod frame;
pub mod memmap;
pub mod paging;
pub mod runqueue;
