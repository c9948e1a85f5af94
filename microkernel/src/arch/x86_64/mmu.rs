//! The MMU from the kernel's side: the direct map of physical memory, CR3
//! loads, and which root each CPU has loaded (what TLB shootdowns target).

use super::percpu::{self, PerCpu};
use core::sync::atomic::Ordering;

/// Start of the direct map of physical memory (PML4 entry 256).
pub const DIRECT_MAP: u64 = 0xffff_8000_0000_0000;

/// The virtual address of physical `pa` in the direct map.
pub const fn phys_to_virt(pa: u64) -> u64 {
    pa + DIRECT_MAP
}

/// Invalidates the TLB entry of `va` on this CPU.
pub fn flush_local(va: u64) {
    x86_64::instructions::tlb::flush(x86_64::VirtAddr::new(va));
}

/// The root in this CPU's CR3 (always inlined: `load_root` reads it on each
/// switch).
#[inline(always)]
pub fn current_root() -> u64 {
    let (cur, _) = x86_64::registers::control::Cr3::read_raw();
    cur.start_address().as_u64()
}

/// The page-table root CPU `pc` runs on (0 until it loads one). TLB
/// shootdowns read it to interrupt only the CPUs that can cache a space's
/// entries: without PCID, a CPU that switched away holds none.
pub fn loaded_root(pc: &PerCpu) -> u64 {
    pc.loaded_root.load(Ordering::SeqCst)
}

/// Loads `root` into this CPU's CR3 unless it is already loaded, recording it
/// in this CPU's record first.
///
/// Ordering (the Dekker pattern with [`super::tlb::flush_range`]): this side
/// *stores* the loaded root, then *loads* page-table entries (the CPU's walks
/// after the CR3 write); the editor *stores* entries, then *loads* the roots
/// after a full fence. The record is stored right before the CR3 write,
/// which is serialising (every buffered write drained first:
/// `percpu::load_root_recorded`), so the walk cannot start before the root
/// is visible. Either the editor sees this root and shoots this CPU down,
/// or this CPU's walks see the edited tables.
///
/// "Already loaded" is the record naming `root` (switchcut; a CR3 read and
/// its mask before): after boot CR3 is written only here, right after the
/// record, so the record names the root CR3 holds, except before this CPU's
/// first call (0 then, never a root: the write is made).
///
/// # Safety
/// `root` must be a live top-level table that maps the kernel (the kernel
/// half every address space shares, or the kernel's own tables), so that
/// execution continues at the same addresses; it must stay live while loaded.
///
/// Always inlined (each switch calls it: see `percpu::set_kernel_stack`).
#[inline(always)]
pub unsafe fn load_root(root: u64) {
    debug_assert!({
        let old = percpu::this().loaded_root.load(Ordering::Relaxed);
        old == 0 || old == current_root()
    });
    // SAFETY: the caller's contract: the kernel keeps running; the user
    // half is the next thread's.
    unsafe { percpu::load_root_recorded(root) }
}
