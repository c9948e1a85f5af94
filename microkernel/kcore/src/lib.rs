//! The kernel's pure logic: no asm, no statics, no target cfgs, so every
//! algorithm here runs under `cargo test` on the host.
//!
//! - [`frame`]: the physical frame allocator (a bitmap in caller memory).
//! - [`memmap`]: turning the boot memory map into free page ranges.
//! - [`paging`]: x86_64 4-level page-table edits over an abstract
//!   [`paging::PhysMem`], which the kernel implements with its direct map.
//!
//! - [`handles`]: a process's handle table (numbers with generations,
//!   rights, badges, transfer between tables).
//! - [`ipc`]: the endpoint state machine, reply capabilities, notifications,
//!   the wake claim, the message format and the fast-path conditions.
//! - [`runqueue`]: per-CPU priority run queues.
//! - [`idlepoll`]: the poll handshake of a CPU about to idle (no IPI to a polling CPU).
//! - [`bootinfo`]: checking the multiboot2 boot information and copying it
//!   into fixed-size data; the kernel only loads the structure.
//! - [`userlog`]: splitting user output into pid-prefixed log lines.
//!
//! The run queue, the handle table and the IPC queues allocate (through
//! `alloc`, the last two fallibly); everything else works in buffers its
//! callers own.
#![cfg_attr(not(test), no_std)]
// All raw-pointer work lives in the kernel crate (e.g. its `PhysMem` impl);
// this crate stays safe code so its tests cover everything it does.
#![cfg_attr(not(test), forbid(unsafe_code))]
// Tests only: `multiboot2` has no safe way to view a built MBI, so one test
// helper (`bootinfo::tests::Mbi::info`) allows the `unsafe` `load`.
#![cfg_attr(test, deny(unsafe_code))]

extern crate alloc;

pub mod bootinfo;
pub mod cow;
pub mod frame;
pub mod grace;
pub mod handles;
pub mod idlepoll;
pub mod ipc;
pub mod memmap;
pub mod paging;
pub mod runqueue;
pub mod userlog;

#[cfg(test)]
mod tas_loom;
