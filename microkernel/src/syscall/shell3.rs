//! `trace_dump` (shell3, issue 12 part 4): the shell's `trace` command
//! reads the kernel trace rings out over serial, in the framed encoding of
//! the shutdown and panic dumps, so the runner's `--trace FILE.json`
//! decodes them.
//!
//! # Who may call it
//! Only init: the rings show when every process ran, what it called and
//! for how long, so a dump reveals other processes' timing. The shell asks
//! init's program runner (`init/src/programs.rs`), whose endpoint init
//! gives the shell alone; any other caller gets `PermissionDenied` before
//! anything is read (the same rule as `shutdown`).
//!
//! # Bounded
//! The dump runs once per boot (`crate::trace::dump` keeps a flag; later
//! calls get `AlreadyExists`), and prints what the rings hold: at most
//! `trace.events` records per CPU, a size fixed at boot on the command
//! line, never named by the caller. It takes no argument to validate.

use super::caller_pid;
use crate::object::process::INIT_PID;
use crate::trace::{dump, Dumped};
use abi::Error;

/// `trace_dump()`: the number of record lines printed.
pub fn trace_dump() -> Result<u64, Error> {
    if caller_pid() != INIT_PID.get() {
        return Err(Error::PermissionDenied);
    }
    match dump() {
        Dumped::Lines(n) => Ok(n),
        Dumped::Off => Err(Error::NotFound),
        Dumped::Already => Err(Error::AlreadyExists),
    }
}
