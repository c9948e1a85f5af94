//! Reading a trace file back: a strict JSON parser and the check against
//! the trace-event format that the runner applies to every file it writes
//! and the host tests apply to the recorded fixture ([`validate`]).

use std::collections::{BTreeMap, HashMap};

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
