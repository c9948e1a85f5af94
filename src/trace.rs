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

mod filter;
mod validate;
pub use filter::{FrameFilter, Sink};
pub use validate::validate;
#[cfg(test)]
use validate::{parse_json, Json};

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
    /// The first of them (cut to [`BAD_LINE_SHOWN`] bytes), for the
    /// transcript: what a bad line holds tells its cause (another writer's
    /// bytes inside it, or bytes lost on the way).
    pub first_bad: Option<String>,
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

/// How much of the first bad frame line the transcript shows.
pub const BAD_LINE_SHOWN: usize = 160;

impl Frames {
    /// Counts `line` as bad (and keeps it if it is the first).
    fn bad(&mut self, line: &str) {
        self.bad_lines += 1;
        if self.first_bad.is_none() {
            let mut end = line.len().min(BAD_LINE_SHOWN);
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            self.first_bad = Some(line[..end].to_string());
        }
    }

    /// Decodes frame lines (in any order; bad ones are counted and
    /// dropped). `Err` only when no header came at all.
    pub fn parse<S: AsRef<str>>(lines: &[S]) -> Result<Frames, String> {
        let mut f = Frames::default();
        let mut header = false;
        for line in lines {
            let Some(body) = checked(line.as_ref()) else {
                f.bad(line.as_ref());
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
                f.bad(line.as_ref());
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
        // Still inside a syscall or an IRQ when the ring was dumped (a panic
        // in an interrupt handler, say): shown as instants, not dropped.
        if let Some((n, tid, at)) = syscall {
            evs.push(instant(
                cpu,
                at,
                &syscall_name(n),
                "syscall",
                format!("\"tid\":{tid},\"open\":true"),
            ));
        }
        if let Some((v, at)) = irq {
            evs.push(instant(
                cpu,
                at,
                &format!("irq {v}"),
                "irq",
                format!("\"vector\":{v},\"open\":true"),
            ));
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
    // The first bad line on a line of its own (the summary's shape stays
    // what scripts/smoke.sh matches).
    let first_bad = frames.first_bad.as_ref().map_or(String::new(), |l| {
        format!("\nmica: trace: first bad frame line: {l:?}")
    });
    Ok(format!(
        "mica: trace: wrote {} ({} events, {} flows; CPUs with events {}/{}; {} frame lines, {} bad, {} torn records{}); validated{first_bad}",
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
