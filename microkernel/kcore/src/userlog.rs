//! Framing user output for the kernel log, so ring 3 cannot speak in the
//! kernel's voice.
//!
//! `debug_write` hands the kernel a buffer of arbitrary bytes. The kernel
//! prints it as lines, each starting with `[pid N] ` (the prefix is the
//! kernel's to add; see `logger::user_write`), so a program can never produce
//! a line that begins like one of the kernel's (`KERNEL PANIC ...`,
//! `mica: shutdown requested by init ...`).
//!
//! # Rules
//! - Every line a write contains is printed with the prefix, including the
//!   ones after embedded newlines.
//! - A write is made of whole lines: a last line without `\n` is ended by
//!   the kernel (no state is carried from one write to the next, so a
//!   partial line can never glue itself to the front of the next line,
//!   whoever prints it).
//! - A line longer than [`MAX_LINE_BYTES`] is broken into several, each
//!   with the prefix: the serial lock is held per printed line, so this
//!   bounds every lock hold.
//! - Characters that would move a terminal's cursor, start an escape
//!   sequence or reorder the line (C0 controls other than tab, DEL, the C1
//!   controls U+0080-U+009F such as NEL and CSI, line separators, bidi
//!   overrides) and bytes that are not valid UTF-8 are printed as `?`, so a
//!   line cannot visually erase its own prefix (`\r`, ESC `[2K`) or start a
//!   new, unprefixed one (NEL).

/// The most payload bytes one printed line carries.
pub const MAX_LINE_BYTES: usize = 256;

pub use abi::text::sanitize_line;

/// The lines of one write, without their `\n`: see [`lines`].
#[derive(Clone, Debug)]
pub struct Lines<'a> {
    rest: &'a [u8],
}

/// Splits one write into the lines to print (at most [`MAX_LINE_BYTES`]
/// each). A trailing `\n` ends the last line rather than starting an empty
/// one; an empty write has no lines.
pub fn lines(bytes: &[u8]) -> Lines<'_> {
    Lines { rest: bytes }
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let window = &self.rest[..self.rest.len().min(MAX_LINE_BYTES)];
        if let Some(i) = window.iter().position(|&b| b == b'\n') {
            let line = &self.rest[..i];
            self.rest = &self.rest[i + 1..];
            return Some(line);
        }
        let line = window;
        self.rest = &self.rest[window.len()..];
        // A line of exactly MAX_LINE_BYTES followed by its newline is one
        // line, not that line plus an empty one.
        if line.len() == MAX_LINE_BYTES && self.rest.first() == Some(&b'\n') {
            self.rest = &self.rest[1..];
        }
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(b: &[u8]) -> Vec<&[u8]> {
        lines(b).collect()
    }

    #[test]
    fn every_embedded_line_is_its_own_line() {
        assert_eq!(
            split(b"KERNEL PANIC on CPU 0: fake\nshutdown requested by init (success)\n0 passed, 0 failed"),
            [
                &b"KERNEL PANIC on CPU 0: fake"[..],
                b"shutdown requested by init (success)",
                b"0 passed, 0 failed"
            ]
        );
    }

    #[test]
    fn trailing_newline_does_not_add_an_empty_line() {
        assert_eq!(split(b"hello\n"), [&b"hello"[..]]);
    }

    #[test]
    fn partial_last_line_is_still_a_line() {
        assert_eq!(split(b"a\nb"), [&b"a"[..], b"b"]);
        assert_eq!(split(b"no newline"), [&b"no newline"[..]]);
    }

    #[test]
    fn empty_write_has_no_lines_and_bare_newlines_are_empty_lines() {
        assert!(split(b"").is_empty());
        assert_eq!(split(b"\n"), [&b""[..]]);
        assert_eq!(split(b"\n\n"), [&b""[..], b""]);
        assert_eq!(split(b"a\n\nb\n"), [&b"a"[..], b"", b"b"]);
    }

    #[test]
    fn long_lines_are_broken_at_the_limit() {
        let long = [b'x'; 2 * MAX_LINE_BYTES + 10];
        let got = split(&long);
        assert_eq!(
            got.iter().map(|l| l.len()).collect::<Vec<_>>(),
            [MAX_LINE_BYTES, MAX_LINE_BYTES, 10]
        );
    }

    #[test]
    fn a_line_of_exactly_the_limit_and_its_newline_is_one_line() {
        let mut w = vec![b'y'; MAX_LINE_BYTES];
        w.push(b'\n');
        w.extend_from_slice(b"next\n");
        let got = split(&w);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].len(), MAX_LINE_BYTES);
        assert_eq!(got[1], b"next");
    }

    #[test]
    fn a_newline_just_past_the_limit_of_a_shorter_line_is_honoured() {
        // 10 bytes, newline, then a long line: the newline is inside the window.
        let mut w = vec![b'a'; 10];
        w.push(b'\n');
        w.extend(core::iter::repeat_n(b'b', MAX_LINE_BYTES + 1));
        let got = split(&w);
        assert_eq!(
            got.iter().map(|l| l.len()).collect::<Vec<_>>(),
            [10, MAX_LINE_BYTES, 1]
        );
    }

    fn clean(line: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        sanitize_line(line, |b| out.push(b));
        out
    }

    #[test]
    fn c1_controls_and_invalid_utf8_are_neutralised() {
        // NEL (next line), CSI and RI as UTF-8 (U+0085, U+009B, U+008D) and as
        // raw 8-bit bytes: a terminal that honours C1 controls would start a
        // new line ("[pid 7] x" NEL "KERNEL PANIC ...") or erase the prefix.
        let out =
            clean(b"x\xc2\x85KERNEL PANIC\xc2\x9b2K\xc2\x8d\x85\x9b1G\x8d\xe2\x80\xa8\xe2\x80\xae");
        let text = core::str::from_utf8(&out).expect("output is valid UTF-8");
        assert!(
            !text.chars().any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')),
            "{text:?}"
        );
        assert_eq!(text, "x?KERNEL PANIC?2K???1G???");
        // Printable non-ASCII (continuation bytes 0x80-0x9f included) survives.
        assert_eq!(clean("é€ü→".as_bytes()), "é€ü→".as_bytes());
    }

    #[test]
    fn cursor_moving_bytes_are_neutralised() {
        let out = clean(b"ok\r\x1b[2K\x07\x7f\tx\xc3\xa9");
        assert_eq!(out, b"ok??[2K??\tx\xc3\xa9");
    }
}
