//! The SysV x86_64 initial process stack.
//!
//! [`build`] lays out, in a buffer standing for the top `buf.len()` bytes
//! of the new stack (which end at `stack_top`), from high to low addresses:
//!
//! ```text
//! stack_top ->  (16-byte aligned)
//!               16 random bytes                  <- AT_RANDOM
//!               envp strings, then below them argv strings (each
//!               NUL-terminated, contiguous; argv[0] lowest)
//!               zero padding to 16 bytes
//!               auxv: (type, value) pairs, ending with AT_NULL
//!               NULL
//!               envp[0..m]
//!               NULL
//!               argv[0..n]
//! rsp ->        argc                             (16-byte aligned)
//! ```
//!
//! The psABI (x86-64 SysV, 3.4.1) requires `rsp` 16-byte aligned at process
//! entry, pointing at argc. The auxiliary vector carries AT_PHDR (when the
//! image's program headers are loaded), AT_PHENT, AT_PHNUM, AT_PAGESZ,
//! AT_BASE (static PIE only: its load bias), AT_ENTRY, AT_RANDOM, AT_NULL.
//!
//! Strings are passed without their NUL; one containing a NUL is refused.
//! Bounds: [`MAX_ARGS`] arguments, [`MAX_ENVS`] environment strings,
//! [`MAX_STRING`] bytes each, [`MAX_STRINGS_TOTAL`] bytes in all.

use abi::layout::{PAGE_SIZE, USER_END};

use crate::plan::AuxValues;

/// Most argv strings.
pub const MAX_ARGS: usize = 256;
/// Most envp strings.
pub const MAX_ENVS: usize = 256;
/// Longest single string, without its NUL.
pub const MAX_STRING: usize = 4096;
/// Most string bytes (NULs included) argv and envp together.
pub const MAX_STRINGS_TOTAL: usize = 32 * 1024;

/// Auxiliary-vector types (the values Linux and the psABI use).
pub mod at {
    pub const NULL: u64 = 0;
    pub const PHDR: u64 = 3;
    pub const PHENT: u64 = 4;
    pub const PHNUM: u64 = 5;
    pub const PAGESZ: u64 = 6;
    pub const BASE: u64 = 7;
    pub const ENTRY: u64 = 9;
    pub const RANDOM: u64 = 25;
}

/// Why an initial stack cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackError {
    /// More than [`MAX_ARGS`] arguments.
    TooManyArgs,
    /// More than [`MAX_ENVS`] environment strings.
    TooManyEnvs,
    /// A string longer than [`MAX_STRING`] bytes.
    StringTooLong,
    /// A string holding a NUL byte.
    StringHasNul,
    /// More than [`MAX_STRINGS_TOTAL`] string bytes.
    TooMuchData,
    /// `stack_top` not 16-byte aligned, above USER_END, or below the buffer.
    BadStackTop,
    /// The buffer cannot hold the layout.
    StackTooSmall,
}

/// The most auxv pairs [`build`] writes.
const AUXV_MAX: usize = 8;

/// Builds the initial stack into `buf` (the bytes just below `stack_top`)
/// and returns the initial `rsp`. Only `buf[rsp - (stack_top - len)..]` is
/// written; the bytes below stay as they were.
pub fn build(
    buf: &mut [u8],
    stack_top: u64,
    argv: &[&[u8]],
    envp: &[&[u8]],
    aux: &AuxValues,
    random: &[u8; 16],
) -> Result<u64, StackError> {
    if argv.len() > MAX_ARGS {
        return Err(StackError::TooManyArgs);
    }
    if envp.len() > MAX_ENVS {
        return Err(StackError::TooManyEnvs);
    }
    let mut strings = 0usize;
    for s in argv.iter().chain(envp) {
        if s.len() > MAX_STRING {
            return Err(StackError::StringTooLong);
        }
        if s.contains(&0) {
            return Err(StackError::StringHasNul);
        }
        // Bounded: at most 512 strings of at most 4097 bytes.
        strings += s.len() + 1;
    }
    if strings > MAX_STRINGS_TOTAL {
        return Err(StackError::TooMuchData);
    }
    let bottom = stack_top
        .checked_sub(buf.len() as u64)
        .ok_or(StackError::BadStackTop)?;
    if !stack_top.is_multiple_of(16) || stack_top > USER_END {
        return Err(StackError::BadStackTop);
    }

    let mut auxv = [(0u64, 0u64); AUXV_MAX];
    let mut na = 0;
    let mut push = |t: u64, v: u64| {
        auxv[na] = (t, v);
        na += 1;
    };
    if let Some(phdr) = aux.phdr {
        push(at::PHDR, phdr);
    }
    push(at::PHENT, aux.phent);
    push(at::PHNUM, aux.phnum);
    push(at::PAGESZ, PAGE_SIZE);
    if let Some(base) = aux.base {
        push(at::BASE, base);
    }
    push(at::ENTRY, aux.entry);
    let small = StackError::StackTooSmall;
    let random_at = stack_top.checked_sub(16).ok_or(small)?;
    push(at::RANDOM, random_at);
    push(at::NULL, 0);

    // Sizes are bounded above (at most 32 KiB of strings, 514 pointers);
    // only a stack_top too low for them could make a subtraction wrap.
    let strings_at = random_at.checked_sub(strings as u64).ok_or(small)?;
    let words = 1 + (argv.len() + 1) + (envp.len() + 1) + 2 * na;
    let rsp = strings_at.checked_sub(8 * words as u64).ok_or(small)? & !15;
    if rsp < bottom {
        return Err(StackError::StackTooSmall);
    }
    let mut w = Writer { buf, bottom };

    w.put(random_at, random);
    let mut at = strings_at;
    let mut slot = rsp;
    w.put(slot, &(argv.len() as u64).to_le_bytes());
    slot += 8;
    for list in [argv, envp] {
        for s in list {
            w.put(slot, &at.to_le_bytes());
            slot += 8;
            w.put(at, s);
            w.put(at + s.len() as u64, &[0]);
            at += s.len() as u64 + 1;
        }
        w.put(slot, &0u64.to_le_bytes());
        slot += 8;
    }
    for &(t, v) in &auxv[..na] {
        w.put(slot, &t.to_le_bytes());
        w.put(slot + 8, &v.to_le_bytes());
        slot += 16;
    }
    w.zero(slot, strings_at - slot);
    Ok(rsp)
}

/// Stores at user addresses into the buffer that stands for them.
struct Writer<'b> {
    buf: &'b mut [u8],
    bottom: u64,
}

impl Writer<'_> {
    fn put(&mut self, addr: u64, bytes: &[u8]) {
        let i = (addr - self.bottom) as usize;
        self.buf[i..i + bytes.len()].copy_from_slice(bytes);
    }
    fn zero(&mut self, addr: u64, len: u64) {
        let i = (addr - self.bottom) as usize;
        self.buf[i..i + len as usize].fill(0);
    }
}
