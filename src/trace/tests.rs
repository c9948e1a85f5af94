use super::*;
use std::io::Read;

/// A real boot's frames: `init=tests` at `--smp 4` with `trace=on
/// trace.events=512`, cut from the raw serial transcript (how to remake it:
/// docs/decisions.md, "trace").
const FIXTURE: &str = include_str!("fixture-tests-smp4.txt");

fn fixture_lines() -> Vec<String> {
    FIXTURE.lines().map(str::to_string).collect()
}

/// A frame line with its checksum.
fn framed(body: &str) -> String {
    format!("{body}*{:08x}", abi::trace::fnv1a32(body.as_bytes()))
}

fn rec(kind: Kind, aux: u16, a: u32, tsc: u64, b: u64, c: u64, d: u64) -> String {
    let w = [tsc, wire::head_word(kind, aux, a), b, c, d];
    w.iter().map(|x| format!("{x:016x}")).collect()
}

#[test]
fn a_recorded_boot_decodes_into_a_valid_timeline_with_every_cpu() {
    let mut f = Frames::parse(&fixture_lines()).unwrap();
    assert_eq!(f.cpus, 4);
    assert_eq!(f.bad_lines, 0);
    assert!(f.complete);
    assert_eq!(f.names.get(&1).map(String::as_str), Some("init"));
    let (json, summary) = to_json(&mut f);
    let c = validate(&json).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary.cpus_with_events, 4);
    assert_eq!(c.per_cpu.len(), 4, "{:?}", c.per_cpu);
    assert!(c.per_cpu.values().all(|&n| n > 0));
    assert!(c.flows > 0, "no call -> reply flow in a tests run");
    assert_eq!(c.events, summary.events);
    // The slices are named by process.
    assert!(
        json.contains("\"name\":\"tests[2] t"),
        "no slice named after the tests program"
    );
    assert!(json.contains("\"ph\":\"X\""));
    assert!(json.contains("\"cat\":\"irq\""));
}

#[test]
fn a_frame_with_a_wrong_checksum_is_dropped_and_counted() {
    let mut lines = fixture_lines();
    let d: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("TRACE D "))
        .collect();
    // Another writer's bytes inside one line.
    lines[d[0]].insert_str(20, "[pid 3] hi");
    // One hex digit of a record changed (still well-formed: only the
    // checksum can tell).
    let l = &mut lines[d[1]];
    let at = l.rfind('*').unwrap() - 1;
    let flipped = if &l[at..=at] == "0" { "1" } else { "0" };
    l.replace_range(at..=at, flipped);
    let f = Frames::parse(&lines).unwrap();
    assert_eq!(f.bad_lines, 2);
    // The first is kept for the transcript, cut short.
    let first = f.first_bad.unwrap();
    assert!(first.contains("[pid 3] hi"), "{first}");
    assert!(first.len() <= super::BAD_LINE_SHOWN);
}

#[test]
fn no_header_is_an_error_that_says_what_to_do() {
    let e = Frames::parse(&[framed("TRACE Z 0")]).unwrap_err();
    assert!(e.contains("trace=on"), "{e}");
}

#[test]
fn records_overwritten_while_printed_are_dropped() {
    // Ring of 4, 6 written when the dump began (indices 2..6 printed); 7
    // written by the end: index 2 and 3 may have been overwritten.
    let mut lines = vec![framed("TRACE H 1 1 1000 127"), framed("TRACE C 0 6 2 4")];
    for i in 2..6 {
        lines.push(framed(&format!(
            "TRACE D 0 {i} {}",
            rec(Kind::IrqEnter, 32, 0, 100 + i, 0, 0, 0)
        )));
    }
    lines.push(framed("TRACE V 0 7"));
    lines.push(framed("TRACE Z 4"));
    let mut f = Frames::parse(&lines).unwrap();
    let r = f.records();
    assert_eq!(r.iter().map(|r| r.tsc).collect::<Vec<_>>(), [104, 105]);
    assert_eq!(f.torn, 2);
}

#[test]
fn a_call_and_its_reply_on_two_cpus_make_one_flow_and_nested_slices() {
    let mut lines = vec![
        framed("TRACE H 1 2 1000 127"),
        framed("TRACE N 5 6b760000000000000000000000000000"),
    ];
    let cpu0 = [
        rec(Kind::Switch, wire::reason::PREEMPT, 0, 1000, 7, 0, 4),
        rec(
            Kind::SyscallEnter,
            abi::Sysnum::IpcCall as u16,
            7,
            2000,
            0,
            0,
            0,
        ),
        rec(Kind::IpcCall, 0, 7, 2100, 0xffff_8000_1234_0000, 42, 0),
        rec(Kind::Switch, wire::reason::BLOCK, 7, 2200, 0, 4, 0),
        rec(Kind::Switch, wire::reason::PREEMPT, 0, 9000, 7, 0, 4),
        rec(
            Kind::SyscallExit,
            abi::Sysnum::IpcCall as u16,
            7,
            9100,
            0,
            0,
            0,
        ),
    ];
    let cpu1 = [
        rec(Kind::Switch, wire::reason::PREEMPT, 0, 1500, 9, 0, 5),
        rec(Kind::IpcRecv, 0, 9, 3000, 0xffff_8000_1234_0000, 42, 0),
        rec(Kind::IrqEnter, 32, 0, 4000, 0, 0, 0),
        rec(Kind::IrqExit, 32, 0, 4500, 0, 0, 0),
        rec(Kind::IpcReply, 0, 9, 5000, 0xffff_8000_1234_0000, 7, 0),
        rec(
            Kind::Mark,
            0,
            9,
            5100,
            u64::from_le_bytes(*b"restart\0"),
            0,
            3,
        ),
    ];
    lines.push(framed("TRACE C 0 6 0 8"));
    lines.push(framed(&format!(
        "TRACE D 0 0 {}{}{}",
        cpu0[0], cpu0[1], cpu0[2]
    )));
    lines.push(framed(&format!(
        "TRACE D 0 3 {}{}{}",
        cpu0[3], cpu0[4], cpu0[5]
    )));
    lines.push(framed("TRACE V 0 6"));
    lines.push(framed("TRACE C 1 6 0 8"));
    lines.push(framed(&format!(
        "TRACE D 1 0 {}{}{}",
        cpu1[0], cpu1[1], cpu1[2]
    )));
    lines.push(framed(&format!(
        "TRACE D 1 3 {}{}{}",
        cpu1[3], cpu1[4], cpu1[5]
    )));
    lines.push(framed("TRACE V 1 6"));
    lines.push(framed("TRACE Z 4"));
    let mut f = Frames::parse(&lines).unwrap();
    assert_eq!(f.bad_lines, 0);
    let (json, s) = to_json(&mut f);
    let c = validate(&json).unwrap_or_else(|e| panic!("{e}\n{json}"));
    assert_eq!((s.flows, c.flows), (1, 1));
    assert_eq!(c.per_cpu.len(), 2);
    // The server's slice is named by its program; the endpoint is "ep1".
    assert!(json.contains("\"name\":\"kv[5] t9\""), "{json}");
    assert!(json.contains("\"name\":\"call ep1\""), "{json}");
    assert!(json.contains("\"name\":\"mark restart\""), "{json}");
    // The call blocked: an instant, not a slice; the irq nested: a slice.
    assert!(json.contains("\"blocked\":true"), "{json}");
    assert!(
        json.contains("\"name\":\"irq 32\",\"cat\":\"irq\",\"ph\":\"X\""),
        "{json}"
    );
}

#[test]
fn the_validator_refuses_what_perfetto_would_not_read() {
    let ok = r#"{"traceEvents":[{"name":"a","ph":"X","ts":1,"dur":2,"pid":0,"tid":0}]}"#;
    assert!(validate(ok).is_ok());
    for (bad, why) in [
        (
            r#"{"traceEvents":[{"name":"a","ph":"X","ts":1,"dur":2,"pid":0,"tid":0},]}"#,
            "offset",
        ),
        (
            r#"{"traceEvents":[{"name":"a","ph":"X","ts":1,"pid":0,"tid":0}]}"#,
            "dur",
        ),
        (
            r#"{"traceEvents":[{"ph":"i","ts":1,"pid":0,"tid":0}]}"#,
            "no name",
        ),
        (
            r#"{"traceEvents":[{"name":"a","ph":"i","pid":0,"tid":0}]}"#,
            "ts",
        ),
        (
            r#"{"traceEvents":[{"name":"a","ph":"i","ts":5,"pid":0,"tid":0},{"name":"b","ph":"i","ts":4,"pid":0,"tid":0}]}"#,
            "goes back",
        ),
        (
            r#"{"traceEvents":[{"name":"a","ph":"s","id":1,"ts":5,"pid":0,"tid":0}]}"#,
            "lacks",
        ),
        (r#"{"events":[]}"#, "traceEvents"),
        (
            r#"{"traceEvents":[{"name":"a","ph":"Q","ts":1,"pid":0,"tid":0}]}"#,
            "unknown ph",
        ),
        (
            r#"{"traceEvents":[{"name":"a","ph":"X","ts":1,"dur":5,"pid":0,"tid":0},{"name":"b","ph":"X","ts":2,"dur":5,"pid":0,"tid":0}]}"#,
            "overlaps",
        ),
    ] {
        let e = validate(bad).unwrap_err();
        assert!(e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn the_filter_folds_frames_out_and_passes_everything_else() {
    let sink: Sink = Default::default();
    let input =
        b"hello\r\nTRACE H 1*00\r\nTRAC not a frame\nT\nTRACE D 0 0 ab*11\n[pid 1] TRACE x\nend";
    // Read in small pieces, as a pipe would deliver them.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(3).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let mut out = String::new();
    FrameFilter::new(Trickle(input), sink.clone())
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, "hello\r\nTRAC not a frame\nT\n[pid 1] TRACE x\nend");
    assert_eq!(*sink.lock().unwrap(), ["TRACE H 1*00", "TRACE D 0 0 ab*11"]);
}

#[test]
fn json_strings_are_escaped_and_parse_back() {
    let s = "a\"b\\c\u{1}d";
    assert_eq!(parse_json(&jstr(s)).unwrap(), Json::Str(s.to_string()));
}

#[test]
fn a_ring_ending_inside_an_irq_keeps_it_as_an_open_instant() {
    // A panic in an interrupt handler dumps the ring before the IRQ's exit
    // record: the entry must still show (it was dropped before).
    let recs = [
        rec(Kind::Switch, wire::reason::PREEMPT, 0, 1000, 7, 0, 4),
        rec(Kind::IrqEnter, 48, 0, 2000, 0, 0, 0),
    ];
    let lines = vec![
        framed("TRACE H 1 1 1000 127"),
        framed("TRACE C 0 2 0 8"),
        framed(&format!("TRACE D 0 0 {}{}", recs[0], recs[1])),
        framed("TRACE V 0 2"),
        framed("TRACE Z 2"),
    ];
    let mut f = Frames::parse(&lines).unwrap();
    assert_eq!(f.bad_lines, 0);
    let (json, _) = to_json(&mut f);
    validate(&json).unwrap_or_else(|e| panic!("{e}\n{json}"));
    assert!(json.contains("\"name\":\"irq 48\""), "{json}");
    assert!(json.contains("\"open\":true"), "{json}");
}
