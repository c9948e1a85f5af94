//! Throwaway child processes that run a script of syscalls.
//!
//! The parent (a worker) writes a script — entries of `[flags, number,
//! a0..a5]` — into the data segment of a two-segment boot image whose code
//! segment is the tiny interpreter below, spawns it and waits. Everything
//! that could end or maim the fuzzer itself (`thread_exit`, `process_exit`,
//! `shutdown`, `thread_spawn` at random addresses, `unmap` of ranges it does
//! not own, ...) runs there.
//!
//! # What the child reports
//! Its exit status: `Exited(0)` when the script ran to its end;
//! `Exited(EXIT_MARK | i)` when entry `i` (an exit call, whose code the
//! parent set to that) ended it; `Exited(SLOW_MARK | i << 12 | ms)` when
//! timed entry `i` took longer than the script's threshold (`ms`, capped at
//! 4095, is how long); `Faulted(v)` when the interpreter was stopped by an
//! exception (the script unmapped or protected its own pages, ...).
//!
//! # Layout of the child's address space
//! Code at [`CHILD_TEXT`] (one page: the interpreter, then zeros), data at
//! [`CHILD_DATA`] ([`DATA_PAGES`] pages: the header, the entries, then a
//! valid spawnable grandchild image), the kernel-made stack below
//! `INIT_STACK_TOP`.

use abi::bootimg::{encode, encode_code, SegmentSpec, SEG_R, SEG_W, SEG_X};
use abi::status::{self, Status};
use abi::Sysnum;
use core::arch::global_asm;

/// Where the interpreter is mapped in a child.
pub const CHILD_TEXT: u64 = 0x40_0000;
/// Where the script is mapped in a child.
pub const CHILD_DATA: u64 = 0x60_0000;
/// Pages of the data segment.
pub const DATA_PAGES: u64 = 2;
/// Offset of the first entry in the data segment.
const ENTRIES_OFF: usize = 64;
/// Bytes per entry.
const ENTRY_BYTES: usize = 64;
/// The most entries a script holds.
pub const MAX_ENTRIES: usize = 64;
/// Offset of the embedded grandchild image in the data segment.
pub const GRANDCHILD_OFF: u64 = (ENTRIES_OFF + MAX_ENTRIES * ENTRY_BYTES) as u64;
/// The grandchild image's address in the child.
pub const GRANDCHILD_ADDR: u64 = CHILD_DATA + GRANDCHILD_OFF;
/// An entry flag: time this call (blocking calls are not timed).
pub const TIMED: u64 = 1;
/// Exit codes of the script's own exit calls: this bit plus the index.
pub const EXIT_MARK: u64 = 0x2000_0000;
/// Exit code of a slow call: this bit plus index << 12 plus milliseconds.
pub const SLOW_MARK: u64 = 0x4000_0000;
/// Where grandchildren's code goes.
const GRANDCHILD_TEXT: u64 = 0x40_0000;

// The interpreter: position-independent, no stack. Registers it keeps across
// the script's syscalls (the kernel preserves all but RAX, RCX, R11):
// rbx = header, r12 = entries left, r13 = current entry, r14 = threshold in
// TSC ticks, r15 = the current call's start time, rbp = current index.
// rdtsc clobbers RAX and RDX, which are reloaded from the entry anyway.
global_asm!(
    ".pushsection .rodata.mica_fuzz_child, \"a\"",
    "mica_fuzz_interp:",
    "mov rbx, {data}",            // rbx: the script header
    "mov r14, [rbx]",             // r14: slow threshold (TSC ticks)
    "mov r12, [rbx + 8]",         // r12: entries left
    "lea r13, [rbx + {first}]",   // r13: the first entry
    "xor ebp, ebp",               // rbp: index 0
    "2:",
    "test r12, r12",              // script done?
    "jz 4f",
    "rdtsc",                      // edx:eax: start time
    "shl rdx, 32",
    "or rax, rdx",
    "mov r15, rax",               // r15: start time
    "mov rax, [r13 + 8]",         // rax: the syscall number
    "mov rdi, [r13 + 16]",        // rdi: argument 0
    "mov rsi, [r13 + 24]",        // rsi: argument 1
    "mov rdx, [r13 + 32]",        // rdx: argument 2
    "mov r10, [r13 + 40]",        // r10: argument 3
    "mov r8, [r13 + 48]",         // r8: argument 4
    "mov r9, [r13 + 56]",         // r9: argument 5
    "syscall",
    "rdtsc",                      // edx:eax: end time
    "shl rdx, 32",
    "or rax, rdx",
    "sub rax, r15",               // rax: ticks the call took
    "test qword ptr [r13], {timed}", // a timed entry?
    "jz 3f",
    "cmp rax, r14",               // slower than the threshold?
    "ja 5f",
    "3:",
    "add r13, {entry}",           // next entry
    "inc rbp",
    "dec r12",
    "jmp 2b",
    "4:",
    "xor edi, edi",               // rdi: exit code 0 (script done)
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "5:",
    "xor edx, edx",               // rdx:rax: ticks
    "div qword ptr [rbx + 16]",   // rax: milliseconds ([rbx+16] = ticks per ms, never 0)
    "cmp rax, 4095",
    "jbe 6f",
    "mov eax, 4095",              // cap at 12 bits
    "6:",
    "mov rdi, rbp",               // rdi: index << 12 | ms | SLOW_MARK
    "shl rdi, 12",
    "or rdi, rax",
    "or rdi, {slow}",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "mica_fuzz_interp_end:",
    // The grandchild: exits with its argument.
    "mica_fuzz_exit_arg:",
    "mov eax, {pexit}",           // rax: ProcessExit; rdi: the spawn argument
    "syscall",
    "ud2",
    "mica_fuzz_exit_arg_end:",
    ".popsection",
    data = const CHILD_DATA,
    first = const ENTRIES_OFF,
    entry = const ENTRY_BYTES,
    timed = const TIMED,
    slow = const SLOW_MARK,
    pexit = const Sysnum::ProcessExit as u64,
);

extern "C" {
    static mica_fuzz_interp: u8;
    static mica_fuzz_interp_end: u8;
    static mica_fuzz_exit_arg: u8;
    static mica_fuzz_exit_arg_end: u8;
}

fn code(start: *const u8, end: *const u8) -> &'static [u8] {
    // SAFETY: both labels are in the same read-only section, `end` after
    // `start`, and the bytes between them never change.
    unsafe { core::slice::from_raw_parts(start, end.offset_from(start) as usize) }
}

/// The interpreter's machine code.
pub fn interp_code() -> &'static [u8] {
    use core::ptr::addr_of;
    code(addr_of!(mica_fuzz_interp), addr_of!(mica_fuzz_interp_end))
}

/// `process_exit(arg)` as machine code (the grandchild, and the victim of
/// bit flips).
pub fn exit_arg_code() -> &'static [u8] {
    use core::ptr::addr_of;
    code(
        addr_of!(mica_fuzz_exit_arg),
        addr_of!(mica_fuzz_exit_arg_end),
    )
}

/// A valid image of the exit-with-argument program; returns its length.
pub fn exit_arg_image(out: &mut [u8]) -> usize {
    encode_code(GRANDCHILD_TEXT, exit_arg_code(), out).unwrap_or(0)
}

/// One script entry.
#[derive(Clone, Copy, Debug, Default)]
pub struct Call {
    /// [`TIMED`] or 0.
    pub flags: u64,
    /// The syscall number (any value).
    pub nr: u64,
    /// The arguments.
    pub args: [u64; 6],
}

/// A script being built.
pub struct Script {
    /// The entries.
    pub calls: [Call; MAX_ENTRIES],
    /// Valid entries.
    pub len: usize,
}

impl Script {
    /// An empty script.
    pub const fn new() -> Script {
        Script {
            calls: [Call {
                flags: 0,
                nr: 0,
                args: [0; 6],
            }; MAX_ENTRIES],
            len: 0,
        }
    }

    /// Whether no more entries fit.
    pub fn full(&self) -> bool {
        self.len == MAX_ENTRIES
    }

    /// Appends a call.
    pub fn push(&mut self, c: Call) {
        if self.len < MAX_ENTRIES {
            self.calls[self.len] = c;
            self.len += 1;
        }
    }
}

/// Bytes of a child image: the header and two records, the interpreter, and
/// the data segment's file bytes.
pub const IMAGE_BYTES: usize = 8192 + 1024;

/// Builds the child image for `script` into `out`; returns its length.
pub fn build_image(script: &Script, threshold_ticks: u64, out: &mut [u8]) -> usize {
    let mut data = [0u8; (DATA_PAGES * 4096) as usize];
    data[0..8].copy_from_slice(&threshold_ticks.to_le_bytes());
    data[8..16].copy_from_slice(&(script.len as u64).to_le_bytes());
    data[16..24].copy_from_slice(&crate::util::tsc_per_ms().max(1).to_le_bytes());
    for (i, c) in script.calls[..script.len].iter().enumerate() {
        let off = ENTRIES_OFF + i * ENTRY_BYTES;
        let words = [
            c.flags, c.nr, c.args[0], c.args[1], c.args[2], c.args[3], c.args[4], c.args[5],
        ];
        for (j, w) in words.iter().enumerate() {
            data[off + j * 8..off + j * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
    }
    let g = GRANDCHILD_OFF as usize;
    let glen = exit_arg_image(&mut data[g..]);
    let segs = [
        SegmentSpec {
            vaddr: CHILD_TEXT,
            bytes: interp_code(),
            mem_size: 4096,
            flags: SEG_R | SEG_X,
        },
        SegmentSpec {
            vaddr: CHILD_DATA,
            bytes: &data[..g + glen],
            mem_size: DATA_PAGES * 4096,
            flags: SEG_R | SEG_W,
        },
    ];
    encode(CHILD_TEXT, &segs, out).unwrap_or(0)
}

/// The length of the grandchild image embedded in every child.
pub fn grandchild_len() -> u64 {
    let mut buf = [0u8; 256];
    exit_arg_image(&mut buf) as u64
}

/// What a child's status word says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Ran to its end.
    Done,
    /// Entry `i` (an exit call) ended it.
    Exited(usize),
    /// Entry `i` was slow (`ms`).
    Slow(usize, u64),
    /// Stopped by exception `v`.
    Faulted(u8),
    /// Any other exit code.
    Other(i32),
}

/// Decodes a child's status word.
pub fn outcome(word: u64) -> Outcome {
    match status::decode(word) {
        Status::Exited(0) => Outcome::Done,
        Status::Exited(c) if c as u64 & SLOW_MARK != 0 => {
            let c = c as u64 & !SLOW_MARK;
            Outcome::Slow((c >> 12) as usize, c & 0xfff)
        }
        Status::Exited(c) if c as u64 & EXIT_MARK != 0 && (c as u64 & !EXIT_MARK) < 1 << 16 => {
            Outcome::Exited((c as u64 & !EXIT_MARK) as usize)
        }
        Status::Exited(c) => Outcome::Other(c),
        Status::Faulted(v) => Outcome::Faulted(v),
    }
}
