//! What every Mica user program links against: the raw syscall layer, the
//! program entry point and the panic handler.
//!
//! Servers: declare a protocol once with [`protocol!`] ([`wire`]), serve
//! it with [`server::serve`], call it with its generated client over
//! [`server::Caller`].
//!
//! A program is a `#![no_std] #![no_main]` binary that defines
//! `#[no_mangle] fn main(arg: u64) -> i32`; `_start` (here) calls it and ends the process
//! with its return value.
#![no_std]
#![forbid(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

pub mod bench;
pub mod console;
pub mod hw;
pub mod ipc;
pub mod loader;
pub mod names;
pub mod procmgr;
pub mod programs;
pub mod rt;
pub mod server;
pub mod sys;
pub mod task;
pub mod vm;

pub use abi::Error;
pub use wire;
pub use wire::protocol;
