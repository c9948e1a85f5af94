//! The console server's pure logic, host-tested: joining each client's
//! output into whole lines ([`Lines`]), making a line safe to print
//! ([`sanitize`]) and line editing with a queue of cooked input
//! ([`Editor`]). The ring-3 driver and server loops are `main.rs`; the
//! protocol is `libipc::console` (whose constants `main.rs` checks against
//! these).
#![cfg_attr(not(test), no_std)]

/// The longest line kept for a client before a piece is printed.
pub const MAX_LINE: usize = 512;
/// What ends a cut piece of an over-long line.
pub const CUT_MARKER: &[u8] = b" [cut]";
/// Clients with an unfinished line kept at once; one more evicts (prints)
/// the least recently written one's.
pub const MAX_CLIENTS: usize = 16;
/// The longest input line (further typed characters are refused).
pub const MAX_INPUT: usize = 1024;
/// Cooked input entries queued (lines, Ctrl-C, Ctrl-D); input typed while
/// the queue is full is dropped.
pub const MAX_QUEUED: usize = 8;

/// Emits `line` as it is printed: the kernel's rule for user output
/// ([`abi::text::sanitize_line`]), so a client cannot erase its `[pid N] `
/// prefix or start an unprefixed line.
pub use abi::text::sanitize_line as sanitize;

/// One client's unfinished line.
#[derive(Clone, Copy)]
struct Pending {
    badge: u64,
    len: usize,
    /// When it was last written (for eviction).
    stamp: u64,
    bytes: [u8; MAX_LINE],
}

/// Each client's unfinished line, by badge: a write's complete lines are
/// printed at once, whole, its tail kept until the client's next `\n`.
pub struct Lines {
    pending: [Option<Pending>; MAX_CLIENTS],
    clock: u64,
}

/// A line to print: the client's badge, its bytes, whether it was cut.
pub type Out<'a> = (u64, &'a [u8], bool);

impl Default for Lines {
    fn default() -> Self {
        Self::new()
    }
}

impl Lines {
    /// No client has an unfinished line.
    pub const fn new() -> Self {
        Lines {
            pending: [None; MAX_CLIENTS],
            clock: 0,
        }
    }

    /// How many clients have an unfinished line.
    pub fn unfinished(&self) -> usize {
        self.pending.iter().flatten().count()
    }

    /// Takes `bytes` from the client `badge`: calls `print` for every line
    /// it completes (the kept start first joined to it), and for a piece of
    /// [`MAX_LINE`] bytes when a line grows past that (`cut`). The tail is
    /// kept. With every slot taken by others, the least recently written
    /// client's unfinished line is printed (uncut, as if ended) to make room.
    pub fn write(&mut self, badge: u64, bytes: &[u8], mut print: impl FnMut(Out<'_>)) {
        self.clock += 1;
        let mut rest = bytes;
        let slot = self.slot(badge, &mut print);
        while !rest.is_empty() {
            let p = self.pending[slot].as_mut().expect("slot was just taken");
            p.stamp = self.clock;
            let room = MAX_LINE - p.len;
            let window = &rest[..rest.len().min(room)];
            if let Some(i) = window.iter().position(|&b| b == b'\n') {
                // A whole line: print the kept start and this piece as one.
                if p.len == 0 {
                    print((badge, &window[..i], false));
                } else {
                    p.bytes[p.len..p.len + i].copy_from_slice(&window[..i]);
                    p.len += i;
                    print((badge, &p.bytes[..p.len], false));
                    p.len = 0;
                }
                rest = &rest[i + 1..];
            } else {
                p.bytes[p.len..p.len + window.len()].copy_from_slice(window);
                p.len += window.len();
                rest = &rest[window.len()..];
                if p.len == MAX_LINE {
                    print((badge, &p.bytes[..], true));
                    p.len = 0;
                }
            }
        }
        // A client with nothing kept gives its slot back.
        if self.pending[slot].is_some_and(|p| p.len == 0) {
            self.pending[slot] = None;
        }
    }

    /// The slot of `badge`, taking a free one or evicting the oldest.
    fn slot(&mut self, badge: u64, print: &mut impl FnMut(Out<'_>)) -> usize {
        if let Some(i) = self
            .pending
            .iter()
            .position(|p| p.is_some_and(|p| p.badge == badge))
        {
            return i;
        }
        let i = match self.pending.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                let (i, old) = self
                    .pending
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| p.map(|p| (i, p)))
                    .min_by_key(|(_, p)| p.stamp)
                    .expect("every slot is taken");
                print((old.badge, &old.bytes[..old.len], false));
                i
            }
        };
        self.pending[i] = Some(Pending {
            badge,
            len: 0,
            stamp: self.clock,
            bytes: [0; MAX_LINE],
        });
        i
    }
}

/// One cooked input entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cooked<'a> {
    /// Bytes of a line (its `\n` included when it fits).
    Line(&'a [u8]),
    /// Ctrl-C.
    Interrupt,
    /// Ctrl-D on an empty line.
    End,
}

#[derive(Clone, Copy)]
enum Kind {
    Line,
    Interrupt,
    End,
}

#[derive(Clone, Copy)]
struct Entry {
    kind: Kind,
    len: usize,
    taken: usize,
    bytes: [u8; MAX_INPUT + 1],
}

const NO_ENTRY: Entry = Entry {
    kind: Kind::End,
    len: 0,
    taken: 0,
    bytes: [0; MAX_INPUT + 1],
};

/// Line editing over the typed bytes, and the queue of what is cooked.
///
/// Enter (`\r` or `\n`; a `\n` right after `\r` is the same Enter) ends a
/// line; backspace (0x08) or DEL (0x7f) erases the last character on
/// screen (`\x08 \x08`); Ctrl-C discards the line being edited and every
/// queued entry (typed ahead, not yet read) and queues an interrupt; Ctrl-D on an empty line queues the end of input, on a
/// non-empty one hands the line over without a `\n`; other control bytes
/// are ignored. Typed characters are echoed.
pub struct Editor {
    line: [u8; MAX_INPUT],
    len: usize,
    after_cr: bool,
    queue: [Entry; MAX_QUEUED],
    head: usize,
    count: usize,
    /// Typed bytes dropped because the queue or the line was full.
    pub dropped: u64,
    /// Queued entries a Ctrl-C discarded (typed ahead, never read).
    pub flushed: u64,
}

impl Default for Editor {
    fn default() -> Self {
        Self::new()
    }
}

/// Ctrl-C.
pub const CTRL_C: u8 = 0x03;
/// Ctrl-D.
pub const CTRL_D: u8 = 0x04;
/// Backspace.
pub const BACKSPACE: u8 = 0x08;
/// DEL (what most terminals send for the backspace key).
pub const DEL: u8 = 0x7f;

impl Editor {
    /// Nothing typed.
    pub const fn new() -> Self {
        Editor {
            line: [0; MAX_INPUT],
            len: 0,
            after_cr: false,
            queue: [NO_ENTRY; MAX_QUEUED],
            head: 0,
            count: 0,
            dropped: 0,
            flushed: 0,
        }
    }

    /// The line being edited.
    pub fn editing(&self) -> &[u8] {
        &self.line[..self.len]
    }

    /// Whether a cooked entry waits.
    pub fn ready(&self) -> bool {
        self.count > 0
    }

    fn push(&mut self, kind: Kind, with_newline: bool) -> bool {
        if self.count == MAX_QUEUED {
            self.dropped += 1;
            return false;
        }
        let e = &mut self.queue[(self.head + self.count) % MAX_QUEUED];
        e.kind = kind;
        e.taken = 0;
        e.len = 0;
        if let Kind::Line = kind {
            e.bytes[..self.len].copy_from_slice(&self.line[..self.len]);
            e.len = self.len;
            if with_newline {
                e.bytes[e.len] = b'\n';
                e.len += 1;
            }
        }
        self.count += 1;
        true
    }

    /// Takes one typed byte; `echo` gets what the terminal should show.
    pub fn feed(&mut self, b: u8, mut echo: impl FnMut(&[u8])) {
        let after_cr = core::mem::replace(&mut self.after_cr, false);
        match b {
            b'\n' if after_cr => {}
            b'\r' | b'\n' => {
                self.after_cr = b == b'\r';
                if self.push(Kind::Line, true) {
                    self.len = 0;
                    echo(b"\r\n");
                }
            }
            BACKSPACE | DEL => {
                if self.len > 0 {
                    // Drop a whole UTF-8 character (its continuation bytes).
                    self.len -= 1;
                    while self.len > 0 && self.line[self.len] & 0xc0 == 0x80 {
                        self.len -= 1;
                    }
                    echo(b"\x08 \x08");
                }
            }
            CTRL_C => {
                // As a tty's ISIG: the interrupt acts now, so everything
                // typed ahead (queued lines, the line being edited) is
                // discarded and the interrupt is the only entry, at the
                // head, where `take_interrupt` finds it behind no line.
                self.flushed += self.count as u64;
                self.count = 0;
                self.len = 0;
                let queued = self.push(Kind::Interrupt, false);
                debug_assert!(queued, "the queue was just emptied");
                echo(b"^C\r\n");
            }
            CTRL_D => {
                if self.len == 0 {
                    if self.push(Kind::End, false) {
                        echo(b"^D\r\n");
                    }
                } else if self.push(Kind::Line, false) {
                    self.len = 0;
                }
            }
            0..=0x1f => {}
            _ => {
                if self.len == MAX_INPUT {
                    self.dropped += 1;
                    return;
                }
                self.line[self.len] = b;
                self.len += 1;
                echo(&[b]);
            }
        }
    }

    /// Takes a Ctrl-C if one waits: `true` when the next entry was an
    /// interrupt (now taken), `false` otherwise (nothing is taken). A
    /// Ctrl-C empties the queue before it is queued, so an interrupt is
    /// always at the head, never behind a typed-ahead line: a foreground
    /// job's owner can poll for it and leave the lines typed after it
    /// queued for later.
    pub fn take_interrupt(&mut self) -> bool {
        if self.count == 0 || !matches!(self.queue[self.head].kind, Kind::Interrupt) {
            return false;
        }
        self.head = (self.head + 1) % MAX_QUEUED;
        self.count -= 1;
        true
    }

    /// Whether a cooked entry waits for a reader that may (`interrupts`)
    /// or may not take a Ctrl-C: to one that may not, an interrupt at the
    /// head hides what is queued behind it until the foreground takes it.
    pub fn ready_for(&self, interrupts: bool) -> bool {
        self.count > 0 && (interrupts || !self.interrupt_first())
    }

    fn interrupt_first(&self) -> bool {
        self.count > 0 && matches!(self.queue[self.head].kind, Kind::Interrupt)
    }

    /// As [`Editor::take`] for a reader that may (`interrupts`) or may not
    /// take a Ctrl-C: `None` for one that may not while an interrupt is at
    /// the head (it is left there for the foreground).
    pub fn take_for(&mut self, max: usize, interrupts: bool) -> Option<Cooked<'_>> {
        if !interrupts && self.interrupt_first() {
            return None;
        }
        self.take(max)
    }

    /// The next cooked entry, at most `max` (at least 1) bytes of a line:
    /// the rest of that line stays for the next call.
    pub fn take(&mut self, max: usize) -> Option<Cooked<'_>> {
        if self.count == 0 {
            return None;
        }
        let i = self.head;
        let e = &mut self.queue[i];
        let out = match e.kind {
            Kind::Interrupt => Cooked::Interrupt,
            Kind::End => Cooked::End,
            Kind::Line => {
                let n = (e.len - e.taken).min(max.max(1));
                let start = e.taken;
                e.taken += n;
                if e.taken < e.len {
                    return Some(Cooked::Line(&self.queue[i].bytes[start..start + n]));
                }
                self.head = (self.head + 1) % MAX_QUEUED;
                self.count -= 1;
                return Some(Cooked::Line(&self.queue[i].bytes[start..start + n]));
            }
        };
        self.head = (self.head + 1) % MAX_QUEUED;
        self.count -= 1;
        Some(out)
    }
}

/// Who takes a Ctrl-C (gaps2): the foreground reader the console's
/// controller named, or anyone while none is named. A reader is known by
/// its handle's badge; its low 32 bits are the pid (a session's number is
/// above, the controller's bit at the top).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Foreground {
    /// The foreground reader's pid; 0: none named (anyone takes it).
    pid: u32,
}

/// Why the foreground reader was not named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotNamed {
    /// The caller's badge lacks the controller's bit.
    Denied,
    /// The pid is out of range (above 32 bits and not "the caller").
    Invalid,
}

impl Foreground {
    /// None named.
    pub const fn new() -> Self {
        Foreground { pid: 0 }
    }

    /// Whether the client with `badge` may take a Ctrl-C.
    pub fn may_interrupt(&self, badge: u64) -> bool {
        self.pid == 0 || badge & PID_MASK == u64::from(self.pid)
    }

    /// `pid` becomes the foreground reader ([`FOREGROUND_SELF`]: the
    /// caller; 0: anyone), if the caller with `badge` carries `control`
    /// (the controller's badge bit).
    pub fn name(&mut self, badge: u64, control: u64, pid: u64) -> Result<(), NotNamed> {
        if badge & control == 0 {
            return Err(NotNamed::Denied);
        }
        let pid = if pid == FOREGROUND_SELF {
            badge & PID_MASK
        } else {
            pid
        };
        self.pid = u32::try_from(pid).map_err(|_| NotNamed::Invalid)?;
        Ok(())
    }
}

/// A badge's pid bits.
const PID_MASK: u64 = 0xffff_ffff;
/// `Foreground`'s "the caller itself" (`libipc::console::FOREGROUND_SELF`,
/// checked in `main.rs`).
pub const FOREGROUND_SELF: u64 = u64::MAX;

#[cfg(test)]
mod tests;
