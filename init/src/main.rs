//! init: the first user process. The kernel maps it from its boot image and
//! starts it in ring 3; it greets, then (as the servers land) starts them and
//! whatever the command line names.
#![no_std]
#![no_main]
#![forbid(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

use libipc::println;

#[no_mangle]
fn main() -> i32 {
    println!("Hello from userland!");
    0
}
