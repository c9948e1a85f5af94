//! Kernel objects: data and invariants, never blocking (DESIGN 6a, L3).
//!
//! This file exists only for the IPC objects until the layering branch's
//! `object/` (thread, process, space) lands; merging the two is adding these
//! module lines to that `mod.rs`.

pub mod endpoint;
pub mod kobject;
pub mod notification;
pub mod waitstate;
