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

/// procmgr's wake-up word: what it signals to the notification a `WaitOn`
/// recorded (forku). Either the wait's outcome, so the client needs no
/// second request to reap, or "ask again".
///
/// Layout: bit 62 [`wake::DELIVERED`] with the child's PID in bits 34..50
/// and its [`Ended::word`] in bits 0..34; or exactly [`wake::AGAIN`]. Both
/// are nonzero, so a signal is never lost to a zero word. procmgr signals a
/// recorded notification once and forgets it, so a client that records
/// each of its notifications once at a time never sees two words OR-ed
/// together; any other word decodes as [`wake::Wake::Invalid`].
pub mod wake {
    use super::Ended;

    /// The word carries a delivered status.
    pub const DELIVERED: u64 = 1 << 62;
    /// No status: the wait was not met (the child went to another waiter
    /// or the waiter was replaced); ask again.
    pub const AGAIN: u64 = 1 << 63;
    const PID_SHIFT: u32 = 34;
    const PID_MASK: u64 = 0xffff;
    const STATUS_MASK: u64 = (1 << PID_SHIFT) - 1;

    /// A decoded wake-up word.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Wake {
        /// Child `pid` ended so and was reaped for this waiter.
        Delivered(u32, Ended),
        /// Ask again.
        Again,
        /// Not a word procmgr sends alone.
        Invalid,
    }

    /// The word delivering `ended` of child `pid` (below 2^16).
    pub const fn delivered(pid: u32, ended: Ended) -> u64 {
        DELIVERED | (pid as u64 & PID_MASK) << PID_SHIFT | ended.word()
    }

    /// Decodes a word.
    pub const fn decode(word: u64) -> Wake {
        if word == AGAIN {
            return Wake::Again;
        }
        let pid_bits = PID_MASK << PID_SHIFT;
        if word & !(DELIVERED | pid_bits | STATUS_MASK) != 0 || word & DELIVERED == 0 {
            return Wake::Invalid;
        }
        let pid = ((word & pid_bits) >> PID_SHIFT) as u32;
        Wake::Delivered(pid, Ended::from_word(word & STATUS_MASK))
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

    #[test]
    fn wake_words_round_trip_and_mixed_words_are_invalid() {
        use wake::{decode, delivered, Wake};
        for pid in [2u32, 77, 32767, 65535] {
            for e in [
                Ended::Exited(0),
                Ended::Exited(-1),
                Ended::Exited(i32::MIN),
                Ended::Killed,
                Ended::Faulted(14),
            ] {
                assert_eq!(decode(delivered(pid, e)), Wake::Delivered(pid, e));
                // Two signals OR-ed together are not taken for either.
                assert_eq!(decode(delivered(pid, e) | wake::AGAIN), Wake::Invalid);
            }
        }
        assert_eq!(decode(wake::AGAIN), Wake::Again);
        assert_eq!(decode(0), Wake::Invalid);
        assert_eq!(decode(1), Wake::Invalid);
        assert_eq!(decode(1 << 55 | wake::DELIVERED), Wake::Invalid);
    }
}
