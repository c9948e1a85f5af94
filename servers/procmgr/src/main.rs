//! procmgr (placeholder while the table lands).
#![cfg_attr(target_os = "none", no_std, no_main)]

/// On the host the server is a stub (its logic is tested in `lib.rs`).
#[cfg(not(target_os = "none"))]
fn main() {}
