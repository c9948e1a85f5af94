//! Benchmarks (run by init under `init=bench`).
#![no_std]
#![no_main]

use libipc as _;

#[no_mangle]
fn main(_arg: u64) -> i32 {
    0
}
