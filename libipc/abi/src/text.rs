//! The one rule for user text reaching the terminal, shared by the kernel's
//! user log (`kcore::userlog`) and the ring-3 console server: characters
//! that would move a terminal's cursor, start an escape sequence or reorder
//! the line (C0 controls other than tab, DEL, the C1 controls U+0080-U+009F
//! such as NEL and CSI, line separators, bidi overrides) and bytes that are
//! not valid UTF-8 are printed as `?`, so a line cannot visually erase its
//! own `[pid N] ` prefix (`\r`, ESC `[2K`) or start a new, unprefixed one
//! (NEL).

/// Whether a character may reach the console as itself: not a control
/// character (C0 except tab, DEL, and the C1 range U+0080-U+009F, which
/// holds NEL "next line", CSI and RI "reverse index"), not a line or
/// paragraph separator, and not a bidirectional override or isolate (which
/// could make a terminal draw the prefix after the text).
fn printable(c: char) -> bool {
    c == '\t'
        || !(c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
}

/// Emits the bytes one user line is printed as: its valid UTF-8 characters
/// that are [`printable`] as themselves, every other character and every
/// byte that is not part of valid UTF-8 as `?`. Decoding matters: a raw
/// 0x85 or 0x9b byte is a C1 control to an 8-bit terminal and `C2 85` is
/// NEL to a UTF-8 one, while 0x80-0x9f are also ordinary continuation bytes
/// of printable characters (`€` is `E2 82 AC`).
pub fn sanitize_line(line: &[u8], mut emit: impl FnMut(u8)) {
    for chunk in line.utf8_chunks() {
        for c in chunk.valid().chars() {
            if printable(c) {
                let mut utf8 = [0u8; 4];
                for &b in c.encode_utf8(&mut utf8).as_bytes() {
                    emit(b);
                }
            } else {
                emit(b'?');
            }
        }
        for _ in chunk.invalid() {
            emit(b'?');
        }
    }
}
