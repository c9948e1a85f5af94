//! The user half of the address space, as both sides must agree on it.

/// The lowest address a user mapping may use: the first 64 KiB stay unmapped,
/// so null pointers (and small offsets from them) fault, and no process can
/// place data where the reset LDT (base 0, limit 0xffff) would look for
/// descriptors, should LDTR ever be left unloaded (the kernel loads a null
/// LDT on every CPU; this is defence in depth, as Linux's `mmap_min_addr`).
pub const USER_MIN: u64 = 0x1_0000;
/// One past the highest user address: the canonical lower half ends here.
pub const USER_END: u64 = 0x0000_8000_0000_0000;
/// Page size for every user mapping.
pub const PAGE_SIZE: u64 = 4096;
/// Where the kernel puts the top of the first process's stack (one guard page
/// below `USER_END` stays unmapped).
pub const INIT_STACK_TOP: u64 = 0x0000_7fff_ff00_0000;
/// The size of the first process's stack.
pub const INIT_STACK_BYTES: u64 = 64 * 1024;
