//! The process manager's pure logic (issue 11 item 3): the process table
//! ([`table`]). The ring-3 server is `main.rs`; its protocol is
//! `libipc::procmgr`.
#![cfg_attr(not(test), no_std)]

pub mod table;
