//! The line buffer of init's console messages (`names::Service::say`).

/// Init's pid (the kernel's): the badge of the console handle
/// `names::Service::say` writes through.
pub const INIT_PID: u64 = 1;
/// The longest line `names::Service::say` prints (longer is cut).
pub const SAY_MAX: usize = 160;
/// How long `names::Service::say` waits for the console.
pub const SAY_TIMEOUT_US: u32 = 100_000;

/// A line being formatted for `names::Service::say`.
pub struct SayLine {
    pub buf: [u8; SAY_MAX],
    pub len: usize,
}

impl core::fmt::Write for SayLine {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(SAY_MAX - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
