//! The console server's protocol (issue 11 item 4) and the client side of
//! `print!`/`println!` through it.
//!
//! # Two names, one protocol
//! The server (`servers/console`) registers two endpoints with init's name
//! service: [`NAME`] (`console`), served by its main thread (writes, and the
//! UART's interrupts), and [`INPUT_NAME`] (`console.in`), served by a reader
//! thread that may hold one caller's `read` until a line is typed. A
//! server thread holds one reply capability at a time, so a blocking read
//! cannot share a thread with the writers: queued readers wait in the
//! kernel's queue of `console.in`, and `console` keeps serving. Both take
//! every [`Request`]; `read` on `console` answers at once ([`Reply::Empty`]
//! when no line is ready), `write` on `console.in` is served like on
//! `console`.
//!
//! # Who writes
//! The server prints each line as `[pid N] text`, like the kernel's log of
//! user output: `N` is the badge of the client's handle, which init's name
//! service sets to the pid of the program that looked the name up (the
//! console registers an unbadged copy; see `## console` in
//! docs/decisions.md). A client's unfinished line (no `\n` yet) is kept by
//! the server, per badge, until its newline, so concurrent writers never
//! mix inside a line; a line longer than [`MAX_LINE`] is printed in pieces
//! of [`MAX_LINE`] bytes, each cut piece ending with [`CUT_MARKER`].
//!
//! A program may [`open`](Client::open) more sessions, each a handle of
//! its own with its own unfinished line and the same pid in front (the
//! badge's low 32 bits are the pid, the session number is above): the
//! opener speaks for whoever it gives them to.
//!
//! # Reads
//! `read(max)` answers the next cooked line (at most `max` bytes of it, the
//! rest for the next read; the line's `\n` included when it fits),
//! [`Reply::Interrupt`] when Ctrl-C was typed, [`Reply::EndOfInput`] for
//! Ctrl-D on an empty line.
//!
//! # Ctrl-C
//! The console acts on Ctrl-C when it receives it, as a tty's ISIG does:
//! the line being edited and every queued entry not yet read (input typed
//! ahead) are discarded and the interrupt is queued alone. The shell, which
//! knows the foreground program, polls [`interrupted`] on `console` while
//! it waits for one and kills it; lines typed after the Ctrl-C stay
//! queued for the shell's next `read`. `max` 0 is
//! [`Reply::Invalid`]; a larger `max` than [`MAX_READ`] is clamped.
//!
//! # Who takes a Ctrl-C (gaps2)
//! Once a foreground reader is named ([`Request::Foreground`]), only it
//! takes an interrupt: to every other client a waiting Ctrl-C is invisible
//! (`interrupted` and a `read` on `console` or `console.in` answer
//! `Empty` at once, until the foreground took it: a `read` on `console.in`
//! that waited instead would hold the console's one reader thread, and the
//! foreground's own `read` queued behind it would never take the Ctrl-C,
//! breaku2; [`read`] says `WouldBlock`). Only the
//! console's controller may name one: a handle carrying
//! [`CONTROL_BADGE`], which init's name service puts on the `console`
//! lookups of the shell it started and of nobody else (no other badge can
//! have that bit: pids are below 2^32, init's counter badges count up
//! from 2^62 and a session's badge is a pid with a 31-bit number above).
//! With none named (a boot without a shell, or a console restarted since)
//! any client takes it, as before.

use wire::resend::{Fate, Resends};
use wire::{CallError, Handle};

/// The name the console's write endpoint is registered under.
pub const NAME: &str = "console";
/// The name of its input endpoint (blocking `read`).
pub const INPUT_NAME: &str = "console.in";
/// The longest line the server keeps for a client before it prints a piece.
pub const MAX_LINE: usize = 512;
/// What ends a cut piece of an over-long line.
pub const CUT_MARKER: &[u8] = b" [cut]";
/// The badge bit of the console's controller (the shell init started):
/// only a handle carrying it may name the foreground reader.
pub const CONTROL_BADGE: u64 = 1 << 63;
/// [`Request::Foreground`]'s `pid` for "the caller itself".
pub const FOREGROUND_SELF: u64 = u64::MAX;
/// Sessions one server instance opens in its life (their badges carry a
/// 31-bit number).
pub const MAX_SESSIONS: u64 = (1 << 31) - 1;
/// The most bytes one `read` answers.
pub const MAX_READ: usize = 1024;
/// The most bytes one `write` carries.
pub const MAX_WRITE: usize = 4096;
/// The piece `print!` sends at a time (its line buffer's size).
const PRINT_CHUNK: usize = crate::rt::LINE_BUFFER;
/// Bytes a client or server buffer needs: the largest write.
pub const BUFFER: usize = MAX_WRITE + 64;

wire::protocol! {
    /// The console.
    pub protocol Console<'a>;
    /// What clients ask.
    pub enum Request {
        /// Prints `bytes` (whole lines at once, an unfinished line kept for
        /// the next write): `Written`, or `Invalid` for more than
        /// [`MAX_WRITE`] bytes. Not idempotent: a retry after the server
        /// died under it could print the line twice.
        Write = 1 => fn write { bytes: &'a [u8] },
        /// The next input line, at most `max` bytes: `Line`, `Interrupt`,
        /// `EndOfInput`, `Empty` (on `console`: nothing typed yet; on
        /// either: a Ctrl-C waits for another, foreground reader) or
        /// `Invalid` (`max` 0).
        Read = 2 => fn read { max: u64 },
        /// A new handle to `console` for a session of its own (its own
        /// unfinished line), printed under the caller's pid: `Opened`
        /// (SEND | TRANSFER, moved to the caller; give it to a child or a
        /// thread), or `Invalid` once the server made [`MAX_SESSIONS`].
        Open = 3 => fn open {},
        /// Takes a Ctrl-C if one waits, and nothing else: `Interrupt`, or
        /// `Empty` (never waits, on either endpoint). Lines typed ahead
        /// stay queued; a Ctrl-C discards them when typed, so it is never
        /// behind one (a foreground job's owner polls this).
        Interrupted = 4 => fn interrupted {},
        /// Names the foreground reader, the one process that takes a
        /// Ctrl-C: the kernel pid `pid` (the low 32 bits of its handles'
        /// badges), [`FOREGROUND_SELF`] for the caller, 0 for anyone.
        /// `Set`, or `Denied` unless the caller's badge carries
        /// [`CONTROL_BADGE`] (`Invalid` for a pid that is none).
        Foreground = 5 => fn foreground { pid: u64 },
    }
    /// What the server answers.
    pub enum Reply {
        /// `len` bytes were taken.
        Written = 1 { len: u64 },
        /// Input: a line or the first part of one.
        Line = 2 { bytes: &'a [u8] },
        /// Ctrl-C was typed.
        Interrupt = 3 {},
        /// Ctrl-D on an empty line: the end of input.
        EndOfInput = 4 {},
        /// No line is ready (a `read` on the write endpoint never waits).
        Empty = 5 {},
        /// A bad argument: `max` 0, or a write longer than `limit`.
        Invalid = 6 { limit: u64 },
        /// A session's handle.
        Opened = 7 { ep: Handle },
        /// The foreground reader is named.
        Set = 8 {},
        /// The caller is not the console's controller.
        Denied = 9 {},
    }
    /// Typed calls.
    pub struct Client;
}

/// What a [`read`] gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// `n` bytes of a line were stored.
    Line(usize),
    /// Ctrl-C.
    Interrupt,
    /// Ctrl-D: no more input.
    End,
}

/// Why a console call failed.
pub type ConsoleError = CallError<abi::Error>;

pub use ring3::*;

/// The client side (ring 3 only, like the rest of libipc).
mod ring3 {
    use super::*;
    use crate::ipc::{self, Endpoint};
    use crate::names;
    use crate::server::Caller;
    use abi::Error;
    use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

    /// The name-service endpoint `print!` finds the console through (0:
    /// none: the kernel's log).
    static NAMES: AtomicU32 = AtomicU32::new(0);
    /// The console endpoint `print!` writes to: handle number in the low 32
    /// bits, its registration's instance above (0: not looked up yet).
    static CONSOLE: AtomicU64 = AtomicU64::new(0);

    /// Makes `print!`/`println!` go to the console server found through the
    /// name service `names` from now on. Programs that hold the name
    /// service call it once (a program without it keeps printing through
    /// the kernel). Returns whether the console was found.
    pub fn attach(names: Endpoint) -> bool {
        NAMES.store(names.0, Ordering::Relaxed);
        refresh(0).is_some()
    }

    /// Stops sending `print!` to the console (back to the kernel's log).
    pub fn detach() {
        NAMES.store(0, Ordering::Relaxed);
        let old = CONSOLE.swap(0, Ordering::AcqRel);
        if old != 0 {
            let _ = ipc::handle_close(old as u32);
        }
    }

    /// Looks the console up again (a registration newer than `stale`):
    /// the new packed (instance, handle) word. Lock-free: a thread that
    /// loses the race closes its copy and takes the winner's.
    fn refresh(stale: u64) -> Option<u64> {
        let names = NAMES.load(Ordering::Relaxed);
        if names == 0 {
            return None;
        }
        let stale_instance = stale >> 32;
        let (ep, instance) =
            names::lookup_newer(Endpoint(names), NAME, stale_instance, names::RECOVERY_NS).ok()?;
        let word = (instance << 32) | u64::from(ep.0);
        // AcqRel: a thread that reads the new word uses a handle this
        // thread made (the handle table is the kernel's: ordering here only
        // keeps the word itself consistent).
        match CONSOLE.compare_exchange(stale, word, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                if stale != 0 {
                    let _ = ipc::handle_close(stale as u32);
                }
                Some(word)
            }
            Err(now) => {
                let _ = ipc::handle_close(ep.0);
                (now != 0).then_some(now)
            }
        }
    }

    /// How a [`write_piece`] ended.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Printed {
        /// The console took every piece.
        Yes,
        /// A piece failed with `error` and the rest of the bytes were
        /// dropped; the next write goes to the successor. `PeerDied`: the
        /// console died holding the piece, which may have been printed, so
        /// it is never sent again (nothing is printed twice).
        /// `NotDelivered` (or a handle another thread had just replaced)
        /// means it was never taken: it was sent again to each newer
        /// successor, at most `wire::resend::MAX_RESENDS` times
        /// (`resends`), and `error` is what the last attempt got. A
        /// `NotDelivered` piece is given up only after all of them.
        Dropped {
            /// The kernel's answer to the last attempt.
            error: Error,
            /// How many times the piece was sent again.
            resends: u32,
        },
        /// No console (not attached, or it did not come back in time):
        /// the caller prints elsewhere.
        NoConsole,
    }

    /// Writes `bytes` to the console: `false` if this program has no
    /// console (the caller prints through the kernel instead). See
    /// [`write_piece`].
    pub fn write_bytes(bytes: &[u8]) -> bool {
        write_piece(bytes) != Printed::NoConsole
    }

    /// `print!`'s path: writes `bytes` to the console in pieces. A piece
    /// the console died holding (`PeerDied`) is not sent again (it may
    /// have been printed); a piece no console ever took (`NotDelivered`,
    /// or `BadHandle` because another thread replaced our copy of the
    /// handle) is sent again to the successor, since it cannot have been
    /// printed: to each newer instance while the registration keeps
    /// changing, at most `wire::resend::MAX_RESENDS` times.
    pub fn write_piece(bytes: &[u8]) -> Printed {
        let mut word = CONSOLE.load(Ordering::Acquire);
        if word == 0 {
            if NAMES.load(Ordering::Relaxed) == 0 {
                return Printed::NoConsole;
            }
            match refresh(0) {
                Some(w) => word = w,
                None => return Printed::NoConsole,
            }
        }
        // Small pieces, so a thread with a small stack can print: the
        // server joins them into lines.
        let mut buf = [0u8; PRINT_CHUNK + 64];
        for chunk in bytes.chunks(PRINT_CHUNK) {
            let mut resends = Resends::new(word >> 32);
            loop {
                let mut c = Client::new(Caller::new(Endpoint(word as u32), None), &mut buf);
                match c.write(chunk) {
                    Ok(_) => break,
                    Err(CallError::Transport(
                        e @ (Error::PeerDied | Error::NotDelivered | Error::BadHandle),
                    )) => {
                        // Dead (or our copy was replaced by another
                        // thread): find the successor.
                        let Some(w) = refresh(word) else {
                            return Printed::NoConsole;
                        };
                        word = w;
                        // Never taken: not printed, so it is sent again,
                        // to each newer instance, a bounded number of times.
                        let fate = if e == Error::PeerDied {
                            Fate::MaybeTaken
                        } else {
                            Fate::NotTaken
                        };
                        if resends.again(fate, false, false, w >> 32) {
                            continue;
                        }
                        return Printed::Dropped {
                            error: e,
                            resends: resends.count(),
                        };
                    }
                    Err(_) => return Printed::NoConsole,
                }
            }
        }
        Printed::Yes
    }

    /// Takes a waiting Ctrl-C through `console`'s endpoint `ctl` (never
    /// waits; takes no line): `true` if one was typed since the last.
    pub fn interrupted(ctl: Endpoint) -> Result<bool, ConsoleError> {
        let mut buf = [0u8; 64];
        let mut c = Client::new(Caller::new(ctl, None), &mut buf);
        match c.interrupted()? {
            Reply::Interrupt {} => Ok(true),
            Reply::Empty {} => Ok(false),
            _ => Err(CallError::Transport(Error::InvalidArgument)),
        }
    }

    /// Names the foreground reader (see [`Request::Foreground`]) through
    /// the controller's handle `ctl`: `Ok(false)` if the console refused
    /// (the handle is not the controller's).
    pub fn set_foreground(ctl: Endpoint, pid: u64) -> Result<bool, ConsoleError> {
        let mut buf = [0u8; 64];
        let mut c = Client::new(Caller::new(ctl, None), &mut buf);
        match c.foreground(pid)? {
            Reply::Set {} => Ok(true),
            Reply::Denied {} => Ok(false),
            _ => Err(CallError::Transport(Error::InvalidArgument)),
        }
    }

    /// Reads the next input line into `out` through `console.in`'s
    /// endpoint `input` (blocking until a line, Ctrl-C or Ctrl-D; at once
    /// `WouldBlock` while a Ctrl-C waits for another, foreground reader).
    pub fn read(input: Endpoint, out: &mut [u8]) -> Result<Input, ConsoleError> {
        let mut buf = [0u8; MAX_READ + 64];
        let mut c = Client::new(Caller::new(input, None), &mut buf);
        match c.read(out.len() as u64)? {
            Reply::Line { bytes } => {
                let n = bytes.len().min(out.len());
                out[..n].copy_from_slice(&bytes[..n]);
                Ok(Input::Line(n))
            }
            Reply::Interrupt {} => Ok(Input::Interrupt),
            Reply::EndOfInput {} => Ok(Input::End),
            // A Ctrl-C waits for the foreground reader, who is not us.
            Reply::Empty {} => Err(CallError::Transport(Error::WouldBlock)),
            _ => Err(CallError::Transport(Error::InvalidArgument)),
        }
    }
}
