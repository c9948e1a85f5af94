//! The kernel trace (issue 12 part 4): what the kernel records and how it
//! reads the records out over serial. Shared by the kernel (which writes
//! them, `microkernel/src/trace.rs`), the runner's decoder (`src/trace.rs`,
//! which turns them into a Perfetto timeline) and user programs (the
//! `trace_mark` syscall's limits).
//!
//! # Records
//! Every event is [`WORDS`] little-endian `u64`s:
//! - word 0: the TSC when it happened (per CPU; QEMU keeps them in step);
//! - word 1: `kind` in bits 0..8, `aux` in bits 16..32, `a` in bits 32..64;
//! - words 2, 3, 4: `b`, `c`, `d`.
//!
//! What `aux`, `a`, `b`, `c`, `d` mean is listed per [`Kind`].
//!
//! # Framing on serial
//! One line per frame, each `TRACE <tag> <fields...>*<checksum>` where the
//! checksum is [`fnv1a32`] of every byte before the `*`, as 8 lower-case hex
//! digits. A line that fails its checksum (another CPU's or a ring-3
//! driver's bytes landed inside it) is dropped by the reader, not the whole
//! trace. Tags, in the order they come:
//! - `H <version> <cpus> <tsc_per_ms> <mask>`: the header;
//! - `N <pid> <name hex>`: a process's program name;
//! - `C <cpu> <recorded> <first> <len>`: a CPU's ring of `len` records:
//!   records ever written, and the index of the oldest one still there;
//! - `D <cpu> <index> <hex>`: up to [`EVENTS_PER_LINE`] records from
//!   `index` on, each word as 16 hex digits, most significant first;
//! - `V <cpu> <recorded>`: the count again, read after the `D` lines: a
//!   record with `index + len <= recorded` may have been overwritten while
//!   it was printed, and is dropped;
//! - `Z <data lines>`: the end.

/// `u64` words per record.
pub const WORDS: usize = 5;
/// Bytes per record.
pub const RECORD_BYTES: usize = WORDS * 8;
/// Records per `D` line (so a line stays under 300 bytes).
pub const EVENTS_PER_LINE: usize = 3;
/// The framing version in the `H` line.
pub const VERSION: u32 = 1;
/// What every frame line starts with.
pub const PREFIX: &str = "TRACE ";

/// Ring size (records per CPU) unless `trace.events=N` says otherwise.
pub const DEFAULT_EVENTS: usize = 4096;
/// The smallest and largest `trace.events` (a power of two).
pub const MIN_EVENTS: usize = 256;
/// See [`MIN_EVENTS`].
pub const MAX_EVENTS: usize = 65536;

/// The longest name `trace_mark` takes, in bytes (printable ASCII).
pub const MAX_MARK_NAME: usize = 16;

/// Trace categories: bits of the kernel's enable mask, named on the
/// command line (`trace=on`, `trace=ipc,sched`).
pub mod cat {
    /// Context switches.
    pub const SCHED: u32 = 1 << 0;
    /// IPC call, send, receive, reply.
    pub const IPC: u32 = 1 << 1;
    /// Interrupt entry and exit.
    pub const IRQ: u32 = 1 << 2;
    /// Exceptions taken from ring 3 (page faults and the others).
    pub const FAULT: u32 = 1 << 3;
    /// Process start and exit.
    pub const PROC: u32 = 1 << 4;
    /// Syscall entry and exit (those that go through a handler).
    pub const SYSCALL: u32 = 1 << 5;
    /// Marks that ring 3 puts in with `trace_mark`.
    pub const MARK: u32 = 1 << 6;
    /// Every category.
    pub const ALL: u32 = (1 << 7) - 1;
    /// The names, as the command line spells them.
    pub const NAMES: [(&str, u32); 7] = [
        ("sched", SCHED),
        ("ipc", IPC),
        ("irq", IRQ),
        ("fault", FAULT),
        ("proc", PROC),
        ("syscall", SYSCALL),
        ("mark", MARK),
    ];
}

/// The enable mask a `trace=` value names: `on`/`all` is every category,
/// `off` none, else a comma-separated list of [`cat::NAMES`]. `Err` names
/// the first word it does not know.
pub fn parse_categories(value: &str) -> Result<u32, &str> {
    match value {
        "on" | "all" | "" => return Ok(cat::ALL),
        "off" => return Ok(0),
        _ => {}
    }
    let mut mask = 0;
    for word in value.split(',') {
        match cat::NAMES.iter().find(|(n, _)| *n == word) {
            Some((_, bit)) => mask |= bit,
            None => return Err(word),
        }
    }
    Ok(mask)
}

/// Why a context switch happened (`aux` of [`Kind::Switch`]).
pub mod reason {
    /// The thread was still runnable: preempted, yielded or moved.
    pub const PREEMPT: u16 = 1;
    /// The thread blocked (a wait, a receive, a sleep).
    pub const BLOCK: u16 = 2;
    /// The thread ended.
    pub const EXIT: u16 = 3;
    /// IPC's direct hand-off to the partner thread (no run-queue trip).
    pub const HANDOFF: u16 = 4;
    /// The name shown for a reason code.
    pub const fn name(r: u16) -> &'static str {
        match r {
            PREEMPT => "preempt",
            BLOCK => "block",
            EXIT => "exit",
            HANDOFF => "ipc-handoff",
            _ => "?",
        }
    }
}

/// Raised by [`Kind::try_from`] for a code that names no kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownKind;

shared_enum! {
    /// What a record says happened (bits 0..8 of word 1).
    pub enum Kind: u64, else UnknownKind => UnknownKind {
        /// `aux` = [`reason`], `a` = previous tid, `b` = next tid,
        /// `c` = previous pid, `d` = next pid (0 = a kernel thread).
        Switch = 1 => "switch",
        /// `a` = caller tid, `b` = endpoint id, `c` = badge.
        IpcCall = 2 => "ipc call",
        /// `a` = sender tid, `b` = endpoint id, `c` = badge.
        IpcSend = 3 => "ipc send",
        /// A receive returned a message: `a` = receiver tid,
        /// `b` = endpoint id, `c` = badge.
        IpcRecv = 4 => "ipc recv",
        /// `a` = replier tid, `b` = endpoint id (0: a plain `reply`),
        /// `c` = the caller's tid (0: none held).
        IpcReply = 5 => "ipc reply",
        /// `aux` = vector.
        IrqEnter = 6 => "irq enter",
        /// `aux` = vector.
        IrqExit = 7 => "irq exit",
        /// An exception from ring 3: `aux` = vector, `a` = tid, `b` = RIP,
        /// `c` = CR2 (page faults), `d` = error code.
        Fault = 8 => "fault",
        /// `a` = pid, `b`, `c` = the program's name (16 bytes, NUL-padded).
        ProcStart = 9 => "process start",
        /// `a` = pid, `b` = exit status word.
        ProcExit = 10 => "process exit",
        /// `aux` = syscall number, `a` = tid.
        SyscallEnter = 11 => "syscall enter",
        /// `aux` = syscall number, `a` = tid, `b` = RAX (result).
        SyscallExit = 12 => "syscall exit",
        /// `trace_mark`: `a` = tid, `b`, `c` = the name (16 bytes,
        /// NUL-padded), `d` = the value.
        Mark = 13 => "mark",
    }
}

impl Kind {
    /// The category that enables this kind.
    pub const fn category(self) -> u32 {
        match self {
            Kind::Switch => cat::SCHED,
            Kind::IpcCall | Kind::IpcSend | Kind::IpcRecv | Kind::IpcReply => cat::IPC,
            Kind::IrqEnter | Kind::IrqExit => cat::IRQ,
            Kind::Fault => cat::FAULT,
            Kind::ProcStart | Kind::ProcExit => cat::PROC,
            Kind::SyscallEnter | Kind::SyscallExit => cat::SYSCALL,
            Kind::Mark => cat::MARK,
        }
    }
}

/// Word 1 of a record.
pub const fn head_word(kind: Kind, aux: u16, a: u32) -> u64 {
    kind as u64 | (aux as u64) << 16 | (a as u64) << 32
}

/// Word 1 split back: (kind code, aux, a).
pub const fn split_head(w: u64) -> (u64, u16, u32) {
    (w & 0xff, (w >> 16) as u16, (w >> 32) as u32)
}

/// Up to 16 name bytes as two little-endian words (NUL-padded; longer
/// names are cut).
pub fn name_words(name: &[u8]) -> [u64; 2] {
    let mut b = [0u8; 16];
    let n = name.len().min(16);
    b[..n].copy_from_slice(&name[..n]);
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&b[..8]);
    hi.copy_from_slice(&b[8..]);
    [u64::from_le_bytes(lo), u64::from_le_bytes(hi)]
}

/// FNV-1a, 32 bits: the per-line checksum (catches bytes lost or mixed
/// in, not malice).
pub const fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u32;
        h = h.wrapping_mul(0x0100_0193);
        i += 1;
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_parse_from_the_command_line() {
        assert_eq!(parse_categories("on"), Ok(cat::ALL));
        assert_eq!(parse_categories("off"), Ok(0));
        assert_eq!(parse_categories("ipc,sched"), Ok(cat::IPC | cat::SCHED));
        assert_eq!(parse_categories("ipc,bogus"), Err("bogus"));
        for (name, bit) in cat::NAMES {
            assert_eq!(parse_categories(name), Ok(bit));
            assert_eq!(bit & cat::ALL, bit);
        }
    }

    #[test]
    fn every_kind_has_a_category_and_round_trips_through_the_head_word() {
        for k in Kind::ALL {
            assert_ne!(k.category() & cat::ALL, 0);
            let (code, aux, a) = split_head(head_word(k, 0xbeef, 0xdead_cafe));
            assert_eq!(Kind::try_from(code), Ok(k));
            assert_eq!((aux, a), (0xbeef, 0xdead_cafe));
        }
        assert_eq!(Kind::try_from(0), Err(UnknownKind));
    }

    #[test]
    fn names_pack_into_two_words() {
        let w = name_words(b"procmgr");
        assert_eq!(w[0].to_le_bytes(), *b"procmgr\0");
        assert_eq!(w[1], 0);
        let long = name_words(b"0123456789abcdefXYZ");
        assert_eq!(long[1].to_le_bytes(), *b"89abcdef");
    }

    #[test]
    fn the_checksum_is_fnv1a() {
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
    }
}
