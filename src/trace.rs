//! The kernel trace on the host (issue 12 part 4): takes the framed `TRACE`
//! lines out of the serial stream ([`FrameFilter`]), decodes them
//! ([`Frames::parse`], the format is `abi::trace`'s) and writes Chrome
//! trace-event JSON ([`to_json`]) that ui.perfetto.dev and chrome://tracing
//! open; [`validate`] reads such a file back and checks it against the
//! format.
//!
//! # The timeline
//! - JSON pid 0 ("Mica kernel") has one track per CPU: tid = CPU number,
//!   named `CPU n`, sorted by number. (Mica's own pids and tids are never
//!   JSON pids or tids; they are in the slice names and `args`.)
//! - On a CPU's track, one complete (`X`) slice per stretch a thread ran,
//!   from the switch to it to the switch away, named `program[pid] tN`
//!   (`kernel tN` for kernel and idle threads, pid 0), its `args` saying
//!   why it was switched in and out.
//! - Syscalls and interrupts are `X` slices nested in the thread's slice
//!   when both ends are seen with no switch in between; otherwise (a call
//!   that blocked, a timer tick that switched) an instant (`i`) at the
//!   end that is seen.
//! - Instants for IPC sends, receives, calls and replies (`ep N` = the
//!   Nth endpoint seen, its badge), user faults, process start and exit,
//!   and `trace_mark` marks.
//! - A flow (`s` then `f`, same id) from each IPC call to the reply that
//!   answered it, drawn as an arrow between the two CPUs' slices.
//!
//! Timestamps are microseconds from the earliest record (TSC / tsc_per_ms,
//! both from the kernel; under `--icount` the TSC counts instructions, so
//! a "microsecond" is then `tsc_per_ms / 1000` instructions).

use abi::trace::{self as wire, Kind};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::{Arc, Mutex};

/// Frame lines the filter took out of the stream (shared with the thread
/// that pumps QEMU's output).
pub type Sink = Arc<Mutex<Vec<String>>>;

/// Longest frame line kept (a real one is under 300 bytes).
const MAX_LINE: usize = 1024;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum At {
    /// At the start of a line, holding what could still become `TRACE `.
    LineStart,
    /// Inside an ordinary line: bytes pass.
    Passing,
    /// Inside a frame line: bytes go to the sink at its end.
    Frame,
}

/// A reader over the serial stream that passes everything but frame lines
/// (`TRACE ` at the start of a line), which it hands to its [`Sink`]. Only
/// the few bytes at the start of a line that could still begin `TRACE `
/// are held back, so prompts and partial lines flow as before.
pub struct FrameFilter<R> {
    inner: R,
    sink: Sink,
    at: At,
    held: Vec<u8>,
    out: Vec<u8>,
    eof: bool,
}

impl<R: Read> FrameFilter<R> {
    pub fn new(inner: R, sink: Sink) -> Self {
        FrameFilter {
            inner,
            sink,
            at: At::LineStart,
            held: Vec::new(),
            out: Vec::new(),
            eof: false,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        let prefix = wire::PREFIX.as_bytes();
        for &b in bytes {
            match self.at {
                At::Passing => {
                    self.out.push(b);
                    if b == b'\n' {
                        self.at = At::LineStart;
                    }
                }
                At::LineStart => {
                    self.held.push(b);
                    if self.held == prefix {
                        self.at = At::Frame;
                    } else if !prefix.starts_with(&self.held) {
                        self.out.append(&mut self.held);
                        self.at = if b == b'\n' {
                            At::LineStart
                        } else {
                            At::Passing
                        };
                    }
                }
                At::Frame => {
                    if b == b'\n' {
                        let line = String::from_utf8_lossy(&self.held);
                        let line = line.trim_end_matches('\r').to_string();
                        if let Ok(mut s) = self.sink.lock() {
                            s.push(line);
                        }
                        self.held.clear();
                        self.at = At::LineStart;
                    } else if self.held.len() < MAX_LINE {
                        self.held.push(b);
                    }
                }
            }
        }
    }
}

impl<R: Read> Read for FrameFilter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut tmp = [0u8; 4096];
        while self.out.is_empty() && !self.eof {
            let n = self.inner.read(&mut tmp)?;
            if n == 0 {
                self.eof = true;
                // A held line start that never became a frame is output;
                // a frame cut off by the end is dropped (no checksum).
                if self.at == At::LineStart {
                    self.out.append(&mut self.held);
                }
            } else {
                self.feed(&tmp[..n]);
            }
        }
        let n = buf.len().min(self.out.len());
        buf[..n].copy_from_slice(&self.out[..n]);
        self.out.drain(..n);
        Ok(n)
    }
}

/// One decoded record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub cpu: u32,
    pub tsc: u64,
    pub kind: Kind,
    pub aux: u16,
    pub a: u32,
    pub b: u64,
    pub c: u64,
    pub d: u64,
}

/// One CPU's ring as dumped.
#[derive(Debug, Default)]
struct Ring {
    /// `C`: records ever written, oldest index kept, ring length.
    header: Option<(u64, u64, u64)>,
    /// Raw records by index.
    records: BTreeMap<u64, [u64; wire::WORDS]>,
    /// `V`: the count read after the dump.
    verified: Option<u64>,
}

/// What the frame lines of one run say.
#[derive(Debug, Default)]
pub struct Frames {
    pub tsc_per_ms: u64,
    pub cpus: u32,
    pub mask: u32,
    /// Program names by pid.
    pub names: BTreeMap<u64, String>,
    rings: BTreeMap<u32, Ring>,
    /// Lines whose checksum or shape was wrong (dropped).
    pub bad_lines: usize,
    /// Records of unknown kind (dropped).
    pub unknown: usize,
    /// Records the `V` line says may have been overwritten while printed.
    pub torn: usize,
    /// Whether the `Z` line came (the dump was not cut short).
    pub complete: bool,
}

/// The body of a frame line whose checksum is right (`TRACE X ...` without
/// `*sum`).
fn checked(line: &str) -> Option<&str> {
    let (body, sum) = line.rsplit_once('*')?;
    let sum = u32::from_str_radix(sum.trim(), 16).ok()?;
    (body.starts_with(wire::PREFIX) && wire::fnv1a32(body.as_bytes()) == sum).then_some(body)
}

fn hex_words(hex: &str) -> Option<Vec<u64>> {
    if !hex.len().is_multiple_of(16) || !hex.is_ascii() {
        return None;
    }
    (0..hex.len() / 16)
        .map(|i| u64::from_str_radix(&hex[i * 16..i * 16 + 16], 16).ok())
        .collect()
}

fn name_from_hex(hex: &str) -> Option<String> {
    if hex.len() != 32 || !hex.is_ascii() {
        return None;
    }
    let bytes: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).ok())
        .collect::<Option<_>>()?;
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(16);
    Some(printable(&bytes[..end]))
}

/// Bytes as text, anything but printable ASCII as `?`.
fn printable(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

impl Frames {
    /// Decodes frame lines (in any order; bad ones are counted and
    /// dropped). `Err` only when no header came at all.
    pub fn parse<S: AsRef<str>>(lines: &[S]) -> Result<Frames, String> {
        let mut f = Frames::default();
        let mut header = false;
        for line in lines {
            let Some(body) = checked(line.as_ref()) else {
                f.bad_lines += 1;
                continue;
            };
            let fields: Vec<&str> = body[wire::PREFIX.len()..].split(' ').collect();
            let num = |i: usize| fields.get(i).and_then(|s| s.parse::<u64>().ok());
            let ok = match fields[0] {
                "H" => match (num(1), num(2), num(3), num(4)) {
                    (Some(v), Some(cpus), Some(t), Some(mask)) if v == u64::from(wire::VERSION) => {
                        header = true;
                        f.cpus = cpus as u32;
                        f.tsc_per_ms = t;
                        f.mask = mask as u32;
                        true
                    }
                    _ => false,
                },
                "N" => match (num(1), fields.get(2).and_then(|h| name_from_hex(h))) {
                    (Some(pid), Some(name)) => {
                        f.names.insert(pid, name);
                        true
                    }
                    _ => false,
                },
                "C" => match (num(1), num(2), num(3), num(4)) {
                    (Some(cpu), Some(rec), Some(first), Some(len)) => {
                        f.rings.entry(cpu as u32).or_default().header = Some((rec, first, len));
                        true
                    }
                    _ => false,
                },
                "D" => match (num(1), num(2), fields.get(3).and_then(|h| hex_words(h))) {
                    (Some(cpu), Some(index), Some(words)) if words.len() % wire::WORDS == 0 => {
                        let ring = f.rings.entry(cpu as u32).or_default();
                        for (k, rec) in words.chunks(wire::WORDS).enumerate() {
                            let mut r = [0; wire::WORDS];
                            r.copy_from_slice(rec);
                            ring.records.insert(index + k as u64, r);
                        }
                        true
                    }
                    _ => false,
                },
                "V" => match (num(1), num(2)) {
                    (Some(cpu), Some(rec)) => {
                        f.rings.entry(cpu as u32).or_default().verified = Some(rec);
                        true
                    }
                    _ => false,
                },
                "Z" => {
                    f.complete = true;
                    true
                }
                _ => false,
            };
            if !ok {
                f.bad_lines += 1;
            }
        }
        if !header {
            return Err(format!(
                "no valid TRACE header among {} frame lines (was the kernel booted with trace=on, \
                 and did it reach shutdown?)",
                lines.len()
            ));
        }
        Ok(f)
    }

    /// Every intact record, per CPU in the order it was written.
    pub fn records(&mut self) -> Vec<Record> {
        let mut out = Vec::new();
        let (mut unknown, mut torn) = (0, 0);
        for (&cpu, ring) in &self.rings {
            let len = ring.header.map_or(u64::MAX, |h| h.2);
            for (&index, w) in &ring.records {
                if ring
                    .verified
                    .is_some_and(|v| index.saturating_add(len) <= v)
                {
                    torn += 1;
                    continue;
                }
                let (code, aux, a) = wire::split_head(w[1]);
                let Ok(kind) = Kind::try_from(code) else {
                    unknown += 1;
                    continue;
                };
                out.push(Record {
                    cpu,
                    tsc: w[0],
                    kind,
                    aux,
                    a,
                    b: w[2],
                    c: w[3],
                    d: w[4],
                });
            }
        }
        self.unknown = unknown;
        self.torn = torn;
        out
    }
}

/// What [`to_json`] made.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub events: usize,
    pub cpus_with_events: usize,
    pub flows: usize,
}

/// A JSON string literal.
fn jstr(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// One trace event being built: its track (CPU) and time for sorting, and
/// its JSON text.
struct Ev {
    cpu: u32,
    /// Nanoseconds from the earliest record.
    ts: u64,
    /// A slice's length (0 for the rest): an enclosing slice that starts
    /// with the slices it holds must come first in the file.
    dur: u64,
    json: String,
}

/// Nanoseconds as the format's microseconds, exactly (3 decimals).
fn micros(ns: u64) -> String {
    format!("{}.{:03}", ns / 1000, ns % 1000)
}

/// Turns the records into Chrome trace-event JSON (module doc).
pub fn to_json(frames: &mut Frames) -> (String, Summary) {
    let mut recs = frames.records();
    let t0 = recs.iter().map(|r| r.tsc).min().unwrap_or(0);
    let per_ms = u128::from(frames.tsc_per_ms.max(1));
    // Integer nanoseconds, so a nested slice's printed end never passes
    // its parent's through rounding.
    let us = |tsc: u64| (u128::from(tsc.saturating_sub(t0)) * 1_000_000 / per_ms) as u64;
    let names = &frames.names;
    let thread = |pid: u64, tid: u64| -> String {
        match (pid, names.get(&pid)) {
            (0, _) => format!("kernel t{tid}"),
            (p, Some(n)) if !n.is_empty() => format!("{n}[{p}] t{tid}"),
            (p, _) => format!("pid {p} t{tid}"),
        }
    };
    let mut evs: Vec<Ev> = Vec::new();
    let mut endpoints: HashMap<u64, usize> = HashMap::new();
    let mut ep = |id: u64| -> String {
        if id == 0 {
            return "-".to_string();
        }
        let n = endpoints.len() + 1;
        format!("ep{}", *endpoints.entry(id).or_insert(n))
    };
    let instant = |cpu: u32, ts: u64, name: &str, cat: &str, args: String| {
        Ev {
        cpu,
        ts,
        dur: 0,
        json: format!(
            "{{\"name\":{},\"cat\":\"{cat}\",\"ph\":\"i\",\"s\":\"t\",\"ts\":{},\"pid\":0,\"tid\":{cpu},\"args\":{{{args}}}}}",
            jstr(name),
            micros(ts)
        ),
    }
    };
    let slice = |cpu: u32, ts: u64, end: u64, name: &str, cat: &str, args: String| {
        Ev {
        cpu,
        ts,
        dur: end.saturating_sub(ts),
        json: format!(
            "{{\"name\":{},\"cat\":\"{cat}\",\"ph\":\"X\",\"ts\":{},\"dur\":{},\"pid\":0,\"tid\":{cpu},\"args\":{{{args}}}}}",
            jstr(name),
            micros(ts),
            micros(end.saturating_sub(ts))
        ),
    }
    };

    // Per CPU, in the order written: running slices, nested syscall and
    // interrupt slices, instants.
    let mut by_cpu: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
    for r in &recs {
        by_cpu.entry(r.cpu).or_default().push(*r);
    }
    for (&cpu, rs) in &by_cpu {
        // The running thread: (pid, tid, since, why it came in).
        let mut running: Option<(u64, u64, u64, &str)> = None;
        let mut syscall: Option<(u16, u32, u64)> = None;
        let mut irq: Option<(u16, u64)> = None;
        let first = rs.first().map_or(0, |r| us(r.tsc));
        let last = rs.last().map_or(0, |r| us(r.tsc));
        for r in rs {
            let ts = us(r.tsc);
            match r.kind {
                Kind::Switch => {
                    let (pt, nt, pp, np) = (u64::from(r.a), r.b, r.c, r.d);
                    let why = wire::reason::name(r.aux);
                    let (since, came) = match running {
                        Some((_, _, s, c)) => (s, c),
                        None => (first, "before the ring"),
                    };
                    evs.push(slice(
                        cpu,
                        since,
                        ts,
                        &thread(pp, pt),
                        "sched",
                        format!(
                            "\"pid\":{pp},\"tid\":{pt},\"in\":{},\"out\":{}",
                            jstr(came),
                            jstr(why)
                        ),
                    ));
                    running = Some((np, nt, ts, why));
                    // What a switch interrupts shows as an instant.
                    if let Some((n, tid, at)) = syscall.take() {
                        evs.push(instant(cpu, at, &syscall_name(n), "syscall", format!("\"tid\":{tid},\"blocked\":true")));
                    }
                    if let Some((v, at)) = irq.take() {
                        evs.push(instant(cpu, at, &format!("irq {v}"), "irq", format!("\"vector\":{v},\"switched\":true")));
                    }
                }
                Kind::SyscallEnter => syscall = Some((r.aux, r.a, ts)),
                Kind::SyscallExit => match syscall.take() {
                    Some((n, tid, at)) if n == r.aux && tid == r.a => evs.push(slice(
                        cpu,
                        at,
                        ts,
                        &syscall_name(n),
                        "syscall",
                        format!("\"tid\":{tid},\"result\":{}", r.b as i64),
                    )),
                    _ => evs.push(instant(
                        cpu,
                        ts,
                        &format!("{} returns", syscall_name(r.aux)),
                        "syscall",
                        format!("\"tid\":{},\"result\":{}", r.a, r.b as i64),
                    )),
                },
                Kind::IrqEnter => irq = Some((r.aux, ts)),
                Kind::IrqExit => match irq.take() {
                    Some((v, at)) if v == r.aux => evs.push(slice(cpu, at, ts, &format!("irq {v}"), "irq", format!("\"vector\":{v}"))),
                    _ => evs.push(instant(cpu, ts, &format!("irq {} return", r.aux), "irq", format!("\"vector\":{}", r.aux))),
                },
                Kind::IpcCall | Kind::IpcSend | Kind::IpcRecv => {
                    let what = match r.kind {
                        Kind::IpcCall => "call",
                        Kind::IpcSend => "send",
                        _ => "recv",
                    };
                    let e = ep(r.b);
                    evs.push(instant(
                        cpu,
                        ts,
                        &format!("{what} {e}"),
                        "ipc",
                        format!("\"tid\":{},\"endpoint\":{},\"badge\":{}", r.a, jstr(&e), r.c),
                    ));
                }
                Kind::IpcReply => {
                    let e = ep(r.b);
                    evs.push(instant(
                        cpu,
                        ts,
                        &format!("reply to t{}", r.c),
                        "ipc",
                        format!("\"tid\":{},\"endpoint\":{},\"caller\":{}", r.a, jstr(&e), r.c),
                    ));
                }
                Kind::Fault => evs.push(instant(
                    cpu,
                    ts,
                    &format!("user fault #{}", r.aux),
                    "fault",
                    format!(
                        "\"tid\":{},\"vector\":{},\"rip\":\"0x{:x}\",\"cr2\":\"0x{:x}\",\"error\":{}",
                        r.a, r.aux, r.b, r.c, r.d
                    ),
                )),
                Kind::ProcStart => {
                    let name = name_words(r.b, r.c);
                    evs.push(instant(
                        cpu,
                        ts,
                        &format!("start {name}[{}]", r.a),
                        "proc",
                        format!("\"pid\":{},\"program\":{}", r.a, jstr(&name)),
                    ));
                }
                Kind::ProcExit => evs.push(instant(
                    cpu,
                    ts,
                    &format!("exit pid {}", r.a),
                    "proc",
                    format!("\"pid\":{},\"status\":\"0x{:x}\"", r.a, r.b),
                )),
                Kind::Mark => {
                    let name = name_words(r.b, r.c);
                    evs.push(instant(
                        cpu,
                        ts,
                        &format!("mark {name}"),
                        "mark",
                        format!("\"tid\":{},\"value\":{}", r.a, r.d),
                    ));
                }
            }
        }
        if let Some((pid, tid, since, came)) = running {
            evs.push(slice(
                cpu,
                since,
                last,
                &thread(pid, tid),
                "sched",
                format!(
                    "\"pid\":{pid},\"tid\":{tid},\"in\":{},\"out\":\"end of the ring\"",
                    jstr(came)
                ),
            ));
        }
    }

    // Flows: each call to the reply that answered it, in global time order
    // (the TSCs are in step across CPUs).
    recs.sort_by_key(|r| (r.tsc, r.cpu));
    let mut calls: HashMap<u32, (u32, u64)> = HashMap::new();
    let mut flows = 0;
    for r in &recs {
        match r.kind {
            Kind::IpcCall => {
                calls.insert(r.a, (r.cpu, us(r.tsc)));
            }
            Kind::IpcReply if r.c != 0 => {
                if let Some((cpu, at)) = calls.remove(&(r.c as u32)) {
                    flows += 1;
                    let ts = us(r.tsc);
                    evs.push(Ev {
                        cpu,
                        ts: at,
                        dur: 0,
                        json: format!("{{\"name\":\"ipc call\",\"cat\":\"ipc\",\"ph\":\"s\",\"id\":{flows},\"ts\":{},\"pid\":0,\"tid\":{cpu}}}", micros(at)),
                    });
                    evs.push(Ev {
                        cpu: r.cpu,
                        ts,
                        dur: 0,
                        json: format!("{{\"name\":\"ipc call\",\"cat\":\"ipc\",\"ph\":\"f\",\"bp\":\"e\",\"id\":{flows},\"ts\":{},\"pid\":0,\"tid\":{}}}", micros(ts), r.cpu),
                    });
                }
            }
            _ => {}
        }
    }

    // Stable sort by time: every track's events in time order, each slice
    // before the slices and instants it contains that start with it.
    evs.sort_by_key(|e| (e.ts, std::cmp::Reverse(e.dur), e.cpu));
    let mut out = String::from("{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n");
    out.push_str("{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":0,\"tid\":0,\"args\":{\"name\":\"Mica kernel\"}}");
    let cpus = frames
        .cpus
        .max(by_cpu.keys().map(|c| c + 1).max().unwrap_or(0));
    for cpu in 0..cpus {
        out.push_str(&format!(
            ",\n{{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":0,\"tid\":{cpu},\"args\":{{\"name\":\"CPU {cpu}\"}}}},\n{{\"name\":\"thread_sort_index\",\"ph\":\"M\",\"pid\":0,\"tid\":{cpu},\"args\":{{\"sort_index\":{cpu}}}}}"
        ));
    }
    for e in &evs {
        out.push_str(",\n");
        out.push_str(&e.json);
    }
    out.push_str(&format!(
        "\n],\"otherData\":{{\"source\":\"mica kernel trace\",\"tsc_per_ms\":{},\"categories\":{},\"bad_lines\":{},\"torn_records\":{},\"complete\":{}}}}}\n",
        frames.tsc_per_ms, frames.mask, frames.bad_lines, frames.torn, frames.complete
    ));
    let summary = Summary {
        events: evs.len(),
        cpus_with_events: by_cpu.len(),
        flows,
    };
    (out, summary)
}

fn syscall_name(n: u16) -> String {
    match abi::Sysnum::from_code(u64::from(n)) {
        Some(s) => s.as_str().to_string(),
        None => format!("syscall {n}"),
    }
}

fn name_words(lo: u64, hi: u64) -> String {
    let mut b = lo.to_le_bytes().to_vec();
    b.extend_from_slice(&hi.to_le_bytes());
    let end = b.iter().position(|&x| x == 0).unwrap_or(16);
    printable(&b[..end])
}

/// A parsed JSON value (just enough to check a trace file).
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(kv) => kv.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    fn num(&self, key: &str) -> Option<f64> {
        match self.get(key) {
            Some(Json::Num(n)) => Some(*n),
            _ => None,
        }
    }
    fn str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Json::Str(s)) => Some(s),
            _ => None,
        }
    }
}

/// A strict JSON parser (RFC 8259: no trailing commas, no comments).
pub fn parse_json(text: &str) -> Result<Json, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let v = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("trailing bytes at offset {}", p.i));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\n' | b'\r' | b'\t') {
            self.i += 1;
        }
    }
    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at offset {}", self.i))
    }
    fn eat(&mut self, b: u8) -> Result<(), String> {
        self.ws();
        if self.s.get(self.i) == Some(&b) {
            self.i += 1;
            Ok(())
        } else {
            self.err(&format!("expected '{}'", b as char))
        }
    }
    fn value(&mut self, depth: usize) -> Result<Json, String> {
        if depth > 64 {
            return self.err("nested too deep");
        }
        self.ws();
        match self.s.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                let mut kv = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(kv));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.eat(b':')?;
                    kv.push((k, self.value(depth + 1)?));
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(kv));
                        }
                        _ => return self.err("expected ',' or '}'"),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut v = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Arr(v));
                }
                loop {
                    v.push(self.value(depth + 1)?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(v));
                        }
                        _ => return self.err("expected ',' or ']'"),
                    }
                }
            }
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b't') => self.word("true", Json::Bool(true)),
            Some(b'f') => self.word("false", Json::Bool(false)),
            Some(b'n') => self.word("null", Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => self.err("expected a value"),
        }
    }
    fn word(&mut self, w: &str, v: Json) -> Result<Json, String> {
        if self.s[self.i..].starts_with(w.as_bytes()) {
            self.i += w.len();
            Ok(v)
        } else {
            self.err("bad literal")
        }
    }
    fn number(&mut self) -> Result<Json, String> {
        let start = self.i;
        if self.s[self.i] == b'-' {
            self.i += 1;
        }
        let digits = |p: &mut Self| {
            let s = p.i;
            while p.i < p.s.len() && p.s[p.i].is_ascii_digit() {
                p.i += 1;
            }
            p.i - s
        };
        let int_start = self.i;
        if digits(self) == 0 || (self.s[int_start] == b'0' && self.i - int_start > 1) {
            return self.err("bad number");
        }
        if self.s.get(self.i) == Some(&b'.') {
            self.i += 1;
            if digits(self) == 0 {
                return self.err("bad fraction");
            }
        }
        if matches!(self.s.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.s.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if digits(self) == 0 {
                return self.err("bad exponent");
            }
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?;
        text.parse()
            .map(Json::Num)
            .map_err(|e| format!("{e} at offset {start}"))
    }
    fn string(&mut self) -> Result<String, String> {
        if self.s.get(self.i) != Some(&b'"') {
            return self.err("expected a string");
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let Some(&b) = self.s.get(self.i) else {
                return self.err("unterminated string");
            };
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let Some(&e) = self.s.get(self.i) else {
                        return self.err("unterminated escape");
                    };
                    self.i += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'u' => {
                            let hex = self.s.get(self.i..self.i + 4).ok_or("short \\u escape")?;
                            let code = u32::from_str_radix(
                                std::str::from_utf8(hex).map_err(|e| e.to_string())?,
                                16,
                            )
                            .map_err(|e| e.to_string())?;
                            self.i += 4;
                            let c = char::from_u32(code).unwrap_or('\u{fffd}');
                            out.extend_from_slice(c.to_string().as_bytes());
                        }
                        _ => return self.err("bad escape"),
                    }
                }
                b if b < 0x20 => return self.err("control byte in a string"),
                b => out.push(b),
            }
        }
        String::from_utf8(out).map_err(|e| e.to_string())
    }
}

/// What [`validate`] found in a valid file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Checked {
    pub events: usize,
    /// Events (not metadata) per JSON tid of pid 0, i.e. per CPU.
    pub per_cpu: BTreeMap<u64, usize>,
    pub flows: usize,
}

/// Checks a trace file against the trace-event format as Perfetto and
/// chrome://tracing read it: valid JSON; a `traceEvents` array of objects;
/// every event with a known `ph`, a `pid` and a `tid`; every non-metadata
/// event with a `name` and a numeric `ts`; `X` slices with `dur >= 0`;
/// `ts` never going back on a track (in file order); `X` slices on a track
/// nested, never overlapping part-way (Perfetto cuts or drops those); every
/// flow id with exactly one start (`s`) and one end (`f`), the end not
/// before the start.
pub fn validate(text: &str) -> Result<Checked, String> {
    let root = parse_json(text)?;
    let Some(Json::Arr(events)) = root.get("traceEvents") else {
        return Err("no traceEvents array".to_string());
    };
    let mut c = Checked::default();
    let mut last: HashMap<(u64, u64), f64> = HashMap::new();
    // Per track, the ends of the open X slices, innermost last.
    let mut open: HashMap<(u64, u64), Vec<f64>> = HashMap::new();
    let mut flows: HashMap<u64, (Option<f64>, Option<f64>)> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        let ph = e.str("ph").ok_or_else(|| format!("event {i}: no ph"))?;
        let (Some(pid), Some(tid)) = (e.num("pid"), e.num("tid")) else {
            return Err(format!("event {i}: no numeric pid and tid"));
        };
        let track = (pid as u64, tid as u64);
        if ph == "M" {
            if e.str("name").is_none() || e.get("args").is_none() {
                return Err(format!("event {i}: metadata without name or args"));
            }
            continue;
        }
        if !matches!(ph, "X" | "i" | "s" | "f" | "B" | "E") {
            return Err(format!("event {i}: unknown ph {ph:?}"));
        }
        if e.str("name").is_none_or(str::is_empty) {
            return Err(format!("event {i}: no name"));
        }
        let ts = e
            .num("ts")
            .ok_or_else(|| format!("event {i}: no numeric ts"))?;
        if !ts.is_finite() || ts < 0.0 {
            return Err(format!("event {i}: bad ts {ts}"));
        }
        if ph == "X" {
            let dur = e
                .num("dur")
                .filter(|d| *d >= 0.0)
                .ok_or_else(|| format!("event {i}: X slice without dur >= 0"))?;
            let stack = open.entry(track).or_default();
            // (Within half a nanosecond: the times are printed to 3
            // decimals and read back as binary floats.)
            while stack.last().is_some_and(|&end| end <= ts + 0.0005) {
                stack.pop();
            }
            if let Some(&end) = stack.last() {
                if ts + dur > end + 0.0005 {
                    return Err(format!(
                        "event {i}: slice [{ts}, {}] overlaps its enclosing slice ending at {end} on track pid {} tid {}",
                        ts + dur,
                        track.0,
                        track.1
                    ));
                }
            }
            stack.push(ts + dur);
        }
        if let Some(&prev) = last.get(&track) {
            if ts < prev {
                return Err(format!(
                    "event {i}: ts {ts} goes back on track pid {} tid {} (after {prev})",
                    track.0, track.1
                ));
            }
        }
        last.insert(track, ts);
        if ph == "s" || ph == "f" {
            let id = e
                .num("id")
                .ok_or_else(|| format!("event {i}: flow without id"))? as u64;
            let f = flows.entry(id).or_default();
            let end = if ph == "s" { &mut f.0 } else { &mut f.1 };
            if end.replace(ts).is_some() {
                return Err(format!("event {i}: flow {id} has two {ph} ends"));
            }
        }
        c.events += 1;
        if track.0 == 0 {
            *c.per_cpu.entry(track.1).or_default() += 1;
        }
    }
    for (id, ends) in &flows {
        match ends {
            (Some(s), Some(f)) if f >= s => {}
            (Some(_), Some(_)) => return Err(format!("flow {id} ends before it starts")),
            _ => return Err(format!("flow {id} lacks its start or its end")),
        }
    }
    c.flows = flows.len();
    Ok(c)
}

/// After a run: decodes what the filter collected into `path`, checks the
/// file it wrote, and says what it holds (or why there is none) in one
/// line for the transcript. `Err` is that line too, for a failure.
pub fn write(lines: &[String], path: &std::path::Path) -> Result<String, String> {
    let mut frames = Frames::parse(lines).map_err(|e| format!("mica: trace: FAILED: {e}"))?;
    let (json, summary) = to_json(&mut frames);
    std::fs::write(path, &json)
        .map_err(|e| format!("mica: trace: FAILED: cannot write {}: {e}", path.display()))?;
    let checked = validate(&json).map_err(|e| {
        format!(
            "mica: trace: FAILED: {} does not validate: {e}",
            path.display()
        )
    })?;
    Ok(format!(
        "mica: trace: wrote {} ({} events, {} flows; CPUs with events {}/{}; {} frame lines, {} bad, {} torn records{}); validated",
        path.display(),
        checked.events,
        checked.flows,
        summary.cpus_with_events,
        frames.cpus,
        lines.len(),
        frames.bad_lines,
        frames.torn,
        if frames.complete { "" } else { "; the dump was cut short" }
    ))
}

#[cfg(test)]
mod tests;
