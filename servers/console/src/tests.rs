use super::*;

fn collect(lines: &mut Lines, badge: u64, bytes: &[u8], out: &mut Vec<(u64, Vec<u8>, bool)>) {
    lines.write(badge, bytes, |(b, l, cut)| out.push((b, l.to_vec(), cut)));
}

#[test]
fn whole_lines_print_at_once_and_a_tail_waits_for_its_newline() {
    let mut l = Lines::new();
    let mut out = Vec::new();
    collect(&mut l, 7, b"one\ntw", &mut out);
    assert_eq!(out, vec![(7, b"one".to_vec(), false)]);
    assert_eq!(l.unfinished(), 1);
    collect(&mut l, 7, b"o\n", &mut out);
    assert_eq!(out[1], (7, b"two".to_vec(), false));
    assert_eq!(l.unfinished(), 0);
}

#[test]
fn concurrent_writers_never_mix_inside_a_line() {
    let mut l = Lines::new();
    let mut out = Vec::new();
    collect(&mut l, 1, b"aaa", &mut out);
    collect(&mut l, 2, b"bbb", &mut out);
    collect(&mut l, 1, b"AAA\n", &mut out);
    collect(&mut l, 2, b"BBB\n", &mut out);
    assert_eq!(
        out,
        vec![
            (1, b"aaaAAA".to_vec(), false),
            (2, b"bbbBBB".to_vec(), false)
        ]
    );
}

#[test]
fn an_over_long_line_is_cut_at_the_bound_and_nothing_is_lost() {
    let mut l = Lines::new();
    let mut out = Vec::new();
    let long = vec![b'x'; MAX_LINE * 2 + 10];
    collect(&mut l, 3, &long, &mut out);
    collect(&mut l, 3, b"\n", &mut out);
    assert_eq!(out.len(), 3);
    assert!(out[0].2 && out[1].2 && !out[2].2);
    assert_eq!(out[0].1.len(), MAX_LINE);
    assert_eq!(out[2].1.len(), 10);
}

#[test]
fn a_full_table_prints_the_oldest_unfinished_line_to_make_room() {
    let mut l = Lines::new();
    let mut out = Vec::new();
    for b in 0..MAX_CLIENTS as u64 {
        collect(&mut l, b, b"part", &mut out);
    }
    assert!(out.is_empty());
    collect(&mut l, 99, b"new", &mut out);
    assert_eq!(out, vec![(0, b"part".to_vec(), false)]);
    assert_eq!(l.unfinished(), MAX_CLIENTS);
}

#[test]
fn controls_and_invalid_utf8_print_as_question_marks() {
    let mut s = Vec::new();
    sanitize(b"a\rb\x1b[2K\xc2\x85c\x9b\xe2\x82\xac\t", |b| s.push(b));
    assert_eq!(s, "a?b?[2K?c?€\t".as_bytes());
}

fn typed(e: &mut Editor, bytes: &[u8]) -> Vec<u8> {
    let mut echo = Vec::new();
    for &b in bytes {
        e.feed(b, |x| echo.extend_from_slice(x));
    }
    echo
}

#[test]
fn backspace_erases_on_screen_and_in_the_line() {
    let mut e = Editor::new();
    let echo = typed(&mut e, b"helx\x7fp\x08lo\n");
    assert_eq!(e.take(100), Some(Cooked::Line(b"hello\n")));
    assert_eq!(echo, b"helx\x08 \x08p\x08 \x08lo\r\n");
    assert_eq!(e.take(100), None);
}

#[test]
fn backspace_on_an_empty_line_does_nothing() {
    let mut e = Editor::new();
    assert!(typed(&mut e, b"\x08\x08").is_empty());
    typed(&mut e, b"a\n");
    assert_eq!(e.take(100), Some(Cooked::Line(b"a\n")));
}

#[test]
fn crlf_is_one_enter() {
    let mut e = Editor::new();
    typed(&mut e, b"a\r\nb\r\n");
    assert_eq!(e.take(100), Some(Cooked::Line(b"a\n")));
    assert_eq!(e.take(100), Some(Cooked::Line(b"b\n")));
    assert_eq!(e.take(100), None);
}

#[test]
fn ctrl_c_drops_the_line_and_queues_an_interrupt() {
    let mut e = Editor::new();
    let echo = typed(&mut e, b"rm -rf\x03ls\n");
    assert_eq!(e.take(100), Some(Cooked::Interrupt));
    assert_eq!(e.take(100), Some(Cooked::Line(b"ls\n")));
    assert!(echo.starts_with(b"rm -rf^C\r\n"));
}

#[test]
fn ctrl_d_ends_input_on_an_empty_line_and_hands_over_a_partial_one() {
    let mut e = Editor::new();
    typed(&mut e, b"ab\x04\x04");
    assert_eq!(e.take(100), Some(Cooked::Line(b"ab")));
    assert_eq!(e.take(100), Some(Cooked::End));
}

#[test]
fn a_short_read_leaves_the_rest_of_the_line_for_the_next() {
    let mut e = Editor::new();
    typed(&mut e, b"abcdef\n");
    assert_eq!(e.take(4), Some(Cooked::Line(b"abcd")));
    assert_eq!(e.take(0), Some(Cooked::Line(b"e")));
    assert_eq!(e.take(100), Some(Cooked::Line(b"f\n")));
    assert_eq!(e.take(100), None);
}

#[test]
fn a_full_queue_drops_input_and_counts_it() {
    let mut e = Editor::new();
    for _ in 0..MAX_QUEUED + 2 {
        typed(&mut e, b"x\n");
    }
    assert!(e.dropped >= 2);
    for _ in 0..MAX_QUEUED {
        assert_eq!(e.take(10), Some(Cooked::Line(b"x\n")));
    }
    assert_eq!(e.take(10), None);
}

#[test]
fn ctrl_c_discards_the_lines_typed_ahead_and_is_seen_first() {
    let mut e = Editor::new();
    typed(&mut e, b"echo one\necho two\nhalf");
    let echo = typed(&mut e, b"\x03after\n");
    assert!(echo.starts_with(b"^C\r\n"));
    assert_eq!(e.flushed, 2);
    // The interrupt is at the head: a poll for it finds it at once ...
    assert!(e.take_interrupt());
    // ... and leaves what was typed after it queued.
    assert!(!e.take_interrupt());
    assert_eq!(e.take(100), Some(Cooked::Line(b"after\n")));
    assert_eq!(e.take(100), None);
}

#[test]
fn ctrl_c_is_queued_even_when_the_queue_was_full() {
    let mut e = Editor::new();
    for _ in 0..MAX_QUEUED {
        typed(&mut e, b"x\n");
    }
    typed(&mut e, b"\x03");
    assert!(e.take_interrupt());
    assert_eq!(e.take(10), None);
}

#[test]
fn a_poll_for_ctrl_c_takes_no_line() {
    let mut e = Editor::new();
    typed(&mut e, b"ls\n");
    assert!(!e.take_interrupt());
    assert_eq!(e.take(100), Some(Cooked::Line(b"ls\n")));
    assert!(!e.take_interrupt());
}

/// The controller's badge bit, as `libipc::console::CONTROL_BADGE`.
const CONTROL: u64 = 1 << 63;

#[test]
fn only_the_named_foreground_reader_takes_a_ctrl_c() {
    let (shell, program) = (7u64, 9u64);
    let mut fg = Foreground::new();
    // None named: anyone may (a boot without a shell).
    assert!(fg.may_interrupt(program));
    assert_eq!(fg.name(shell | CONTROL, CONTROL, FOREGROUND_SELF), Ok(()));
    assert!(fg.may_interrupt(shell));
    // The shell's other handles (no control bit, a session) are the shell.
    assert!(fg.may_interrupt(shell | (3 << 32)));
    assert!(!fg.may_interrupt(program));
    assert!(!fg.may_interrupt(program | (7 << 32)));
    let mut e = Editor::new();
    typed(&mut e, b"\x03after\n");
    // To the program the interrupt is invisible, and so is what is behind
    // it: it is left for the shell.
    assert!(!e.ready_for(fg.may_interrupt(program)));
    assert_eq!(e.take_for(100, fg.may_interrupt(program)), None);
    assert!(e.ready_for(fg.may_interrupt(shell)));
    assert_eq!(
        e.take_for(100, fg.may_interrupt(shell)),
        Some(Cooked::Interrupt)
    );
    // Once taken, the line typed after it is anyone's.
    assert!(e.ready_for(false));
    assert_eq!(e.take_for(100, false), Some(Cooked::Line(b"after\n")));
}

#[test]
fn only_the_controller_names_the_foreground_reader() {
    let mut fg = Foreground::new();
    assert_eq!(fg.name(9, CONTROL, 9), Err(NotNamed::Denied));
    assert_eq!(
        fg.name(9 | (5 << 32), CONTROL, FOREGROUND_SELF),
        Err(NotNamed::Denied)
    );
    assert_eq!(fg, Foreground::new());
    assert_eq!(
        fg.name(7 | CONTROL, CONTROL, 1 << 32),
        Err(NotNamed::Invalid)
    );
    // The controller may name another process, and then anyone again.
    assert_eq!(fg.name(7 | CONTROL, CONTROL, 9), Ok(()));
    assert!(fg.may_interrupt(9) && !fg.may_interrupt(7));
    assert_eq!(fg.name(7 | CONTROL, CONTROL, 0), Ok(()));
    assert!(fg.may_interrupt(9) && fg.may_interrupt(7));
}
