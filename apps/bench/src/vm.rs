//! Address-space figures (issue 11): `cow_fault`, the first write to a page
//! shared copy-on-write with a clone (a write fault that copies the frame).

use abi::prot;
use libipc::bench::rdtsc;
use libipc::vm::{space_clone, Space};

/// Pages written after each clone (one sample each).
const PAGES: u64 = 64;
/// Clones taken (samples = `PAGES * CLONES`).
const CLONES: usize = 16;
/// Where the written pages live.
const REGION: u64 = 0x5c00_0000_0000;
const PAGE: u64 = 4096;

/// `space_clone` of this process (never started), then one timed write to
/// each of `PAGES` pages it shares: each write faults and copies. The clone
/// is closed (and its frames released) between rounds.
pub fn cow_fault(samples: &mut [u64]) -> Result<usize, &'static str> {
    Space::Own
        .map(REGION, PAGES * PAGE, prot::WRITE)
        .map_err(|_| "map failed")?;
    let page = |i: u64| (REGION + i * PAGE) as *mut u64;
    for i in 0..PAGES {
        // SAFETY: just mapped writable; only this function uses it.
        unsafe { page(i).write_volatile(i) };
    }
    let mut n = 0;
    // One untimed round first (the clone's first writes of the stack and
    // the sample buffer are copies too).
    for round in 0..=CLONES {
        let child = space_clone(Space::Own).map_err(|_| "space_clone failed")?;
        for i in 0..PAGES {
            let t0 = rdtsc();
            // SAFETY: mapped writable (now copy-on-write).
            unsafe { page(i).write_volatile(round as u64) };
            let dt = rdtsc() - t0;
            if round > 0 && n < samples.len() {
                samples[n] = dt;
                n += 1;
            }
        }
        child.close().map_err(|_| "close failed")?;
    }
    // SAFETY: this function's own region.
    unsafe { libipc::sys::unmap(REGION, PAGES * PAGE) }.map_err(|_| "unmap failed")?;
    Ok(n)
}
