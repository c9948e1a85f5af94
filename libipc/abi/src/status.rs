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
}
