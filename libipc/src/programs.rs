//! init's program runner (shell3): the shell asks init to run the test
//! suite or the benchmarks with the handles init gives them under
//! `init=tests` / `init=bench` (the name service, the hardware roots,
//! procmgr's adoption), and waits for them in the foreground.
//!
//! The authority stays init's: the shell holds only a SEND handle to this
//! endpoint (init gives it to the shell alone, at
//! [`abi::boot_handles::shell::PROGRAMS`]), and the only thing it can ask
//! for is one of the two fixed programs with a name prefix as argv[1].
//! Every other program init starts gets no such handle.
//!
//! The protocol is registers only: label [`TESTS`] or [`BENCH`], `w0` the
//! prefix's length (at most [`MAX_PREFIX`]), `w1..w5` its bytes
//! (little-endian), starts the program: the reply is [`STARTED`],
//! [`BAD_REQUEST`] for anything malformed, [`NOT_STARTED`] if init could
//! not start it, or [`BUSY`] while an earlier one has not been waited for.
//! Then [`WAIT`] (`w0` a timeout in microseconds, at most
//! [`MAX_WAIT_US`]) answers [`RAN`] with the program's status word in
//! `w0` (`abi::status::Ended`'s word: [`KILL`]ed is `killed()`) once it
//! ended, [`RUNNING`] at the timeout, [`IDLE`] with no program; [`KILL`]
//! ends it ([`KILLED`], or [`IDLE`]). Two steps, so the shell keeps
//! polling the console for Ctrl-C while its program runs ([`run`]) and
//! init's runner is never held longer than a wait's timeout. Label
//! [`TRACE`] (with an empty prefix) makes init call `trace_dump`: the
//! reply is [`RAN`] with the kernel's raw result (`abi::encode_result`) in
//! `w0`.

use crate::ipc::{self, Endpoint, Message};
use abi::status::Ended;

/// Run the test suite (`apps/tests`).
pub const TESTS: u32 = 1;
/// Run the benchmark program (`apps/bench`).
pub const BENCH: u32 = 2;

/// Dump the kernel trace rings (`trace_dump`, which only init may call).
pub const TRACE: u32 = 3;
/// Wait (at most `w0` microseconds) for the program started last.
pub const WAIT: u32 = 4;
/// Kill the program started last.
pub const KILL: u32 = 5;

/// Reply: the program ran; `w0` is its status word.
pub const RAN: u32 = 0;
/// Reply: an unknown label, a prefix too long or not UTF-8 / with a NUL.
pub const BAD_REQUEST: u32 = 1;
/// Reply: init could not load or start the program.
pub const NOT_STARTED: u32 = 2;

/// Reply: the program was started; [`WAIT`] for it.
pub const STARTED: u32 = 3;
/// Reply: [`WAIT`] timed out, the program still runs.
pub const RUNNING: u32 = 4;
/// Reply: a program started earlier was not waited for yet.
pub const BUSY: u32 = 5;
/// Reply: no program was started (nothing to wait for or kill).
pub const IDLE: u32 = 6;
/// Reply: the program was killed; [`WAIT`] for it.
pub const KILLED: u32 = 7;

/// The longest one [`WAIT`] holds init's runner (longer is clamped).
pub const MAX_WAIT_US: u64 = 1_000_000;

/// Longest prefix: the five words after the length.
pub const MAX_PREFIX: usize = 40;

/// Why a run gave no status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunError {
    /// The prefix is longer than [`MAX_PREFIX`].
    TooLong,
    /// init refused the request.
    BadRequest,
    /// init could not start the program.
    NotStarted,
    /// init still runs a program started earlier.
    Busy,
    /// The call failed (no runner, init gone).
    Call(abi::Error),
    /// A reply label this client does not know.
    Unknown(u32),
    /// The kernel refused `trace_dump`.
    Kernel(abi::Error),
}

impl core::fmt::Display for RunError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RunError::TooLong => write!(f, "prefix longer than {MAX_PREFIX} bytes"),
            RunError::BadRequest => write!(f, "init refused the request"),
            RunError::NotStarted => write!(f, "init could not start it"),
            RunError::Busy => write!(f, "init still runs an earlier program"),
            RunError::Call(e) => write!(f, "calling init failed: {e}"),
            RunError::Unknown(l) => write!(f, "unknown reply {l}"),
            RunError::Kernel(e) => write!(f, "{e}"),
        }
    }
}

/// Packs `prefix` into a request with `label`.
pub fn encode(label: u32, prefix: &[u8]) -> Option<Message> {
    if prefix.len() > MAX_PREFIX {
        return None;
    }
    let mut words = [0u64; 6];
    words[0] = prefix.len() as u64;
    for (i, b) in prefix.iter().enumerate() {
        words[1 + i / 8] |= u64::from(*b) << (8 * (i % 8));
    }
    Some(Message { label, words })
}

/// The prefix of a request: `None` if its length is out of range or bytes
/// past it are not zero.
pub fn decode(words: &[u64; 6], out: &mut [u8; MAX_PREFIX]) -> Option<usize> {
    let len = usize::try_from(words[0])
        .ok()
        .filter(|&l| l <= MAX_PREFIX)?;
    for (i, o) in out.iter_mut().enumerate() {
        let b = (words[1 + i / 8] >> (8 * (i % 8))) as u8;
        if i >= len && b != 0 {
            return None;
        }
        *o = b;
    }
    Some(len)
}

fn ask(ep: Endpoint, label: u32, w0: u64) -> Result<Message, RunError> {
    let m = Message {
        label,
        words: [w0, 0, 0, 0, 0, 0],
    };
    ipc::call(ep, &m, None).map_err(RunError::Call)
}

/// Asks init at `ep` to run `program` ([`TESTS`] or [`BENCH`]) with argv[1]
/// `prefix` and waits for it to end, calling `interrupted` every
/// `every_us` microseconds while it runs: when that says so, init kills the
/// program (at most once), which then ends [`Ended::Killed`].
pub fn run(
    ep: Endpoint,
    program: u32,
    prefix: &[u8],
    every_us: u32,
    mut interrupted: impl FnMut() -> bool,
) -> Result<Ended, RunError> {
    let m = encode(program, prefix).ok_or(RunError::TooLong)?;
    let r = ipc::call(ep, &m, None).map_err(RunError::Call)?;
    match r.label {
        STARTED => {}
        BAD_REQUEST => return Err(RunError::BadRequest),
        NOT_STARTED => return Err(RunError::NotStarted),
        BUSY => return Err(RunError::Busy),
        other => return Err(RunError::Unknown(other)),
    }
    let mut killed = false;
    loop {
        let r = ask(ep, WAIT, u64::from(every_us))?;
        match r.label {
            RAN => return Ok(Ended::from_word(r.words[0])),
            RUNNING => {}
            other => return Err(RunError::Unknown(other)),
        }
        if !killed && interrupted() {
            killed = true;
            match ask(ep, KILL, 0)?.label {
                KILLED => {}
                other => return Err(RunError::Unknown(other)),
            }
        }
    }
}

/// Asks init at `ep` to dump the kernel trace rings over serial: the number
/// of record lines printed.
pub fn trace(ep: Endpoint) -> Result<u64, RunError> {
    let m = encode(TRACE, b"").ok_or(RunError::TooLong)?;
    let r = ipc::call(ep, &m, None).map_err(RunError::Call)?;
    match r.label {
        RAN => abi::decode_result(r.words[0]).map_err(RunError::Kernel),
        BAD_REQUEST => Err(RunError::BadRequest),
        other => Err(RunError::Unknown(other)),
    }
}
