//! How a thread or process ended, as one `u64` word (what `thread_join` and
//! `process_wait` return).
//!
//! Bits 0..32 hold the exit code of a normal exit. Bit 32 set means the thread
//! was stopped by a CPU exception; bits 0..8 then hold the vector (14 = #PF,
//! 13 = #GP, 6 = #UD, ...).

/// The thread or process called exit with this code.
pub const fn exited(code: i32) -> u64 {
    code as u32 as u64
}

/// The thread or process was stopped by exception `vector`.
pub const fn faulted(vector: u8) -> u64 {
    FAULT_BIT | vector as u64
}

const FAULT_BIT: u64 = 1 << 32;

/// A decoded status word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Normal exit with a code.
    Exited(i32),
    /// Stopped by a CPU exception.
    Faulted(u8),
}

/// Decodes a status word.
pub const fn decode(word: u64) -> Status {
    if word & FAULT_BIT != 0 {
        Status::Faulted(word as u8)
    } else {
        Status::Exited(word as u32 as i32)
    }
}

// --- procmgr (issue 11 item 3) ---

/// Bit 33: the process was killed (procmgr's `kill`, or ended by someone
/// holding its process handle) rather than exiting or faulting. Only
/// procmgr's status words carry it; the kernel's say `exited(-1)`.
const KILLED_BIT: u64 = 1 << 33;

/// The process was killed (procmgr's status words).
pub const fn killed() -> u64 {
    KILLED_BIT
}

/// How a process ended, as procmgr reports it to `wait`: the kernel's
/// [`Status`] plus "killed".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this code.
    Exited(i32),
    /// It was killed.
    Killed,
    /// It was killed by a CPU exception with this vector.
    Faulted(u8),
}

impl Ended {
    /// The status word ([`exited`], [`killed`] or [`faulted`]).
    pub const fn word(self) -> u64 {
        match self {
            Ended::Exited(c) => exited(c),
            Ended::Killed => killed(),
            Ended::Faulted(v) => faulted(v),
        }
    }

    /// Decodes a status word (a kernel one too: it never has bit 33).
    pub const fn from_word(word: u64) -> Ended {
        if word & KILLED_BIT != 0 {
            return Ended::Killed;
        }
        match decode(word) {
            Status::Exited(c) => Ended::Exited(c),
            Status::Faulted(v) => Ended::Faulted(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_faults_round_trip() {
        for code in [0, 1, -1, i32::MAX, i32::MIN] {
            assert_eq!(decode(exited(code)), Status::Exited(code));
        }
        for v in [0u8, 6, 13, 14, 255] {
            assert_eq!(decode(faulted(v)), Status::Faulted(v));
        }
    }

    #[test]
    fn procmgr_statuses_round_trip_and_kernel_words_decode_alike() {
        for e in [
            Ended::Exited(0),
            Ended::Exited(-1),
            Ended::Exited(i32::MIN),
            Ended::Killed,
            Ended::Faulted(14),
            Ended::Faulted(0),
        ] {
            assert_eq!(Ended::from_word(e.word()), e);
        }
        assert_eq!(Ended::from_word(exited(7)), Ended::Exited(7));
        assert_eq!(Ended::from_word(faulted(6)), Ended::Faulted(6));
    }
}
