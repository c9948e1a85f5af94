//! Fixed kernel virtual addresses (see the table in [`super`]).

/// Start of the direct map of physical memory (PML4 entry 256).
pub use crate::arch::mmu::DIRECT_MAP;
/// Start of the kernel-stack region (PML4 entry 510).
pub const KSTACK_BASE: u64 = 0xffff_ff00_0000_0000;
/// Bytes of virtual space per kernel stack slot (guard page + stack).
pub const KSTACK_SLOT: u64 = 64 * 1024;
/// Bytes of one kernel stack (below its slot's top, above the guard page).
pub const KSTACK_BYTES: u64 = 32 * 1024;
/// The kernel image's link base (PML4 entry 511).
pub const KERNEL_VMA: u64 = 0xffff_ffff_8000_0000;
