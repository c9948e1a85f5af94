//! Multiprocessor control. Until application processors are started, the boot
//! CPU is the only one: there is nobody to stop, kick or shoot down.

use crate::vm::AddressSpace;

/// Asks every other CPU to halt (panic path).
pub fn stop_others() {}

/// Makes CPU `cpu` look at its run queue soon.
pub fn kick(_cpu: usize) {}

/// Invalidates `pages` pages from `addr` in `space` on every CPU that may cache
/// them, before returning.
pub fn flush_tlb_range(space: &AddressSpace, addr: u64, pages: u64) {
    let (cur, _) = x86_64::registers::control::Cr3::read_raw();
    if cur.start_address().as_u64() == space.root() {
        for i in 0..pages {
            crate::mem::flush_local(addr + i * 4096);
        }
    }
}
