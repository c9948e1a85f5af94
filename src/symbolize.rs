//! Symbolizes the guest's serial stream as it passes: every return address of a
//! kernel panic's backtrace, and the RIP of every user fault, gets a line
//! `at function (file:line)` after the raw line (which is passed on untouched,
//! byte for byte, for tools that parse it). Inlined frames get a line each,
//! innermost first, marked `[inlined]`.
//!
//! What is recognized (kernel lines only: user output always starts with the
//! kernel's `[pid N] ` prefix, so ring 3 cannot make the runner annotate):
//! - `KERNEL PANIC on CPU N: ... RIP=0x...` (microkernel/src/panic.rs and
//!   arch/x86_64/trap.rs) opens a report; its RIP, when it has one, is the
//!   faulting instruction and the backtrace's first entry;
//! - `  backtrace:` starts the frames, each `    0x<16 hex digits>`; any other
//!   line ends them. Entries other than the faulting RIP are return addresses:
//!   they are looked up one byte back, inside the call instruction, so the
//!   line is the call's, not the next statement's.
//! - `[LEVEL cpuN] user fault: pid P (PROGRAM) tid T ...: ... RIP=0x...`
//!   (microkernel/src/sched.rs): RIP is looked up in PROGRAM's ELF.
//!
//! Anything else — garbage, an address outside the ELF's executable
//! segments, a program with no known ELF, an ELF without debug info — leaves
//! the stream as it was: no annotation, never a panic.
//!
//! Program ELFs: today the kernel names a process after the boot module it
//! was spawned from ([`Programs`] maps that name to the ELF build.rs
//! flattened it from, or to a `--module FILE:NAME`). When the loader server
//! loads ELF programs, it names them the same way (the kernel's
//! `Process::program` hook), and [`Programs::add`] is where the runner learns
//! their files.

use object::{Object, ObjectSegment, ObjectSymbol};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

type Reader = gimli::EndianArcSlice<gimli::RunTimeEndian>;

/// One frame of a symbolized address (innermost first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The demangled function name (without the legacy hash), `??` if unknown.
    pub function: String,
    /// The source file (shortened, see [`short_path`]) and line.
    pub location: Option<(String, u32)>,
    /// Whether this frame was inlined into the next one.
    pub inlined: bool,
}

impl Frame {
    /// `function (file:line)`, and ` [inlined]` for an inlined frame.
    pub fn render(&self) -> String {
        let mut s = self.function.clone();
        if let Some((file, line)) = &self.location {
            s.push_str(&format!(" ({file}:{line})"));
        }
        if self.inlined {
            s.push_str(" [inlined]");
        }
        s
    }
}

/// A function symbol of the ELF's symbol table.
struct Symbol {
    start: u64,
    /// 0: unknown (hand-written asm labels often have none).
    size: u64,
    name: String,
}

/// The debug information and symbols of one ELF file.
pub struct Symbolizer {
    ctx: addr2line::Context<Reader>,
    /// Virtual address ranges of the executable segments.
    text: Vec<Range<u64>>,
    /// Function symbols, sorted by start address.
    symbols: Vec<Symbol>,
    /// A directory prefix dropped from file names (the workspace root).
    root: Option<String>,
}

impl Symbolizer {
    /// Reads and parses the ELF file at `path`.
    pub fn load(path: &Path, root: Option<&str>) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&bytes, root).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses an ELF image held in memory.
    pub fn parse(bytes: &[u8], root: Option<&str>) -> Result<Self, String> {
        let obj = object::File::parse(bytes).map_err(|e| format!("not an ELF file: {e}"))?;
        if !matches!(obj, object::File::Elf64(_)) {
            return Err("not a 64-bit ELF file".to_string());
        }
        let endian = if obj.is_little_endian() {
            gimli::RunTimeEndian::Little
        } else {
            gimli::RunTimeEndian::Big
        };
        let load = |id: gimli::SectionId| -> Result<Reader, String> {
            let data: Arc<[u8]> = match obj.section_by_name(id.name()) {
                Some(s) => {
                    use object::ObjectSection;
                    let d = s
                        .uncompressed_data()
                        .map_err(|e| format!("section {}: {e}", id.name()))?;
                    Arc::from(&*d)
                }
                None => Arc::from(&[][..]),
            };
            Ok(gimli::EndianArcSlice::new(data, endian))
        };
        let dwarf = gimli::Dwarf::load(load)?;
        let ctx = addr2line::Context::from_dwarf(dwarf)
            .map_err(|e| format!("unreadable debug info: {e}"))?;
        let text = obj
            .segments()
            .filter(|s| match s.flags() {
                object::SegmentFlags::Elf { p_flags } => p_flags & object::elf::PF_X != 0,
                _ => false,
            })
            .map(|s| s.address()..s.address().saturating_add(s.size()))
            .filter(|r| !r.is_empty())
            .collect();
        let mut symbols: Vec<Symbol> = obj
            .symbols()
            // Functions, and the untyped labels of hand-written asm
            // (`syscall_entry`, `isr_common`), not compiler-local ones.
            .filter(|s| match s.kind() {
                object::SymbolKind::Text => true,
                object::SymbolKind::Unknown => {
                    s.section_index().is_some() && s.name().is_ok_and(|n| !n.starts_with(".L"))
                }
                _ => false,
            })
            .filter(|s| s.address() != 0)
            .filter_map(|s| {
                Some(Symbol {
                    start: s.address(),
                    size: s.size(),
                    name: s.name().ok()?.to_string(),
                })
            })
            .collect();
        symbols.sort_by_key(|s| s.start);
        Ok(Symbolizer {
            ctx,
            text,
            symbols,
            root: root.map(|r| r.trim_end_matches('/').to_string()),
        })
    }

    /// Whether `addr` lies in an executable segment of this ELF.
    pub fn contains(&self, addr: u64) -> bool {
        self.text.iter().any(|r| r.contains(&addr))
    }

    /// The frames at code address `pc`, innermost (most inlined) first;
    /// empty when `pc` is not in this ELF's code or nothing is known of it.
    pub fn frames(&self, pc: u64) -> Vec<Frame> {
        if !self.contains(pc) {
            return Vec::new();
        }
        let mut frames = Vec::new();
        if let Ok(mut iter) = self.ctx.find_frames(pc).skip_all_loads() {
            while let Ok(Some(f)) = iter.next() {
                let function = f
                    .function
                    .as_ref()
                    .and_then(|n| n.raw_name().ok())
                    .map(|n| demangle(n.as_ref()));
                let location = f.location.as_ref().and_then(|l| {
                    let (file, line) = (l.file?, l.line?);
                    // Line 0 means "no line" (compiler-made code, asm).
                    (line != 0).then(|| (short_path(file, self.root.as_deref()), line))
                });
                frames.push(Frame {
                    function: function.unwrap_or_default(),
                    location,
                    inlined: true,
                });
            }
        }
        // The outermost frame is the function that holds `pc`: not inlined,
        // and named from the symbol table when the debug info has no name
        // (hand-written asm, or an ELF without debug info).
        if frames.is_empty() {
            frames.push(Frame {
                function: String::new(),
                location: None,
                inlined: true,
            });
        }
        let last = frames.len() - 1;
        frames[last].inlined = false;
        if frames[last].function.is_empty() {
            if let Some((name, offset)) = self.symbol(pc) {
                frames[last].function = if offset == 0 || frames[last].location.is_some() {
                    demangle(name)
                } else {
                    // Without a line, the offset says where in it.
                    format!("{}+{offset:#x}", demangle(name))
                };
            }
        }
        if frames
            .iter()
            .all(|f| f.function.is_empty() && f.location.is_none())
        {
            return Vec::new();
        }
        for f in &mut frames {
            if f.function.is_empty() {
                f.function = "??".to_string();
            }
        }
        frames
    }

    /// The symbol-table function containing `pc` (size 0: the nearest label
    /// before it).
    fn symbol(&self, pc: u64) -> Option<(&str, u64)> {
        let i = self.symbols.partition_point(|s| s.start <= pc);
        let s = self.symbols.get(i.checked_sub(1)?)?;
        let offset = pc - s.start;
        (s.size == 0 || offset < s.size).then_some((s.name.as_str(), offset))
    }
}

/// A Rust symbol demangled, without the legacy `::h<hash>` suffix; any other
/// name as it is.
pub fn demangle(name: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(name))
}

/// Shortens a source path for display: the workspace root is dropped
/// (`microkernel/src/ktest.rs`), the standard library's `/rustc/<commit>/`
/// prefix too (`library/core/src/ptr/mod.rs`), and a registry crate keeps
/// its `name-version/` directory (`spin-0.9.8/src/mutex.rs`).
pub fn short_path(path: &str, root: Option<&str>) -> String {
    if let Some(root) = root.filter(|r| !r.is_empty()) {
        if let Some(rest) = path.strip_prefix(root).and_then(|p| p.strip_prefix('/')) {
            return rest.to_string();
        }
    }
    if let Some(rest) = path.strip_prefix("/rustc/") {
        if let Some((commit, tail)) = rest.split_once('/') {
            if commit.len() >= 7 && commit.bytes().all(|b| b.is_ascii_hexdigit()) {
                return tail.to_string();
            }
        }
    }
    if let Some(i) = path.find("/registry/src/") {
        // .../registry/src/<index-dir>/<crate-version>/...
        let rest = &path[i + "/registry/src/".len()..];
        if let Some((_index, tail)) = rest.split_once('/') {
            return tail.to_string();
        }
    }
    path.to_string()
}

/// One line of the serial stream, as far as symbolization cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// `KERNEL PANIC on CPU N: ...`, with the faulting RIP if it names one.
    Panic { rip: Option<u64> },
    /// `  backtrace:`
    Backtrace,
    /// `    0x<hex>`: one backtrace entry (meaningful only after `Backtrace`).
    Address(u64),
    /// A kernel `user fault:` line: the program's name and the faulting RIP.
    UserFault { program: String, rip: u64 },
    /// Anything else.
    Other,
}

/// The value of the first `KEY0x<hex>` in `line` (`KEY` is e.g. ` RIP=`).
fn hex_after(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits = rest.strip_prefix("0x")?;
    let end = digits
        .find(|c: char| !c.is_ascii_hexdigit())
        .unwrap_or(digits.len());
    if end == 0 || end > 16 {
        return None;
    }
    u64::from_str_radix(&digits[..end], 16).ok()
}

/// Classifies one line (without its line ending; a trailing `\r` is ignored).
pub fn parse_line(line: &str) -> Line {
    let line = line.strip_suffix('\r').unwrap_or(line);
    // Ring 3's output: never annotated, whatever it says.
    if line.starts_with("[pid ") {
        return Line::Other;
    }
    if line.starts_with("KERNEL PANIC on CPU ") {
        return Line::Panic {
            rip: hex_after(line, " RIP="),
        };
    }
    if line == "  backtrace:" {
        return Line::Backtrace;
    }
    if let Some(hex) = line.strip_prefix("    0x") {
        if (1..=16).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            if let Ok(a) = u64::from_str_radix(hex, 16) {
                return Line::Address(a);
            }
        }
        return Line::Other;
    }
    // `[ WARN cpu0] user fault: pid 7 (tests) tid 9 #UD ...: ... RIP=0x...`
    if line.starts_with('[') {
        if let Some(i) = line.find("] user fault: pid ") {
            let rest = &line[i + "] user fault: pid ".len()..];
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let program = rest[digits..]
                .strip_prefix(" (")
                .and_then(|r| r.split_once(") tid "))
                .map(|(name, _)| name);
            if let (true, Some(program), Some(rip)) =
                (digits > 0, program, hex_after(rest, " RIP="))
            {
                return Line::UserFault {
                    program: program.to_string(),
                    rip,
                };
            }
        }
    }
    Line::Other
}

/// Where the runner finds a program's ELF, by the name the kernel gives it.
pub struct Programs {
    /// Directories holding `NAME` ELF files (build.rs's user-program output).
    dirs: Vec<PathBuf>,
    /// Files named explicitly (`--module FILE:NAME`, later the loader's).
    files: HashMap<String, PathBuf>,
    /// Loaded (or failed: `None`) symbolizers by name.
    cache: HashMap<String, Option<Symbolizer>>,
}

impl Programs {
    /// Looks programs up in `dirs`, first match wins.
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        Programs {
            dirs,
            files: HashMap::new(),
            cache: HashMap::new(),
        }
    }

    /// Names `file` as the ELF of program `name` (before any directory).
    pub fn add(&mut self, name: &str, file: PathBuf) {
        self.files.insert(name.to_string(), file);
    }

    /// The symbolizer of program `name`, loaded on first use; `None` if the
    /// name is not a plain file name or no readable ELF has it (said once
    /// on stderr, as the raw line then stands alone).
    fn get(&mut self, name: &str, root: Option<&str>) -> Option<&Symbolizer> {
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !plain {
            return None;
        }
        if !self.cache.contains_key(name) {
            let path = self
                .files
                .get(name)
                .cloned()
                .or_else(|| self.dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()));
            let sym = match path {
                Some(p) => Symbolizer::load(&p, root)
                    .map_err(|e| eprintln!("mica: cannot symbolize program {name}: {e}"))
                    .ok(),
                None => {
                    eprintln!("mica: no ELF known for program {name}; its faults stay raw");
                    None
                }
            };
            self.cache.insert(name.to_string(), sym);
        }
        self.cache.get(name)?.as_ref()
    }
}

/// Follows the stream line by line and says what to print after each line.
pub struct Annotator {
    /// The kernel ELF's path, loaded on first use (most runs never panic).
    kernel_path: Option<PathBuf>,
    kernel: Option<Option<Symbolizer>>,
    programs: Programs,
    root: Option<String>,
    /// The RIP of the panic being reported, if it named one.
    panic_rip: Option<u64>,
    /// Inside a backtrace: `Some(is the next entry the first)`.
    backtrace: Option<bool>,
}

/// The indentation of an annotation under a backtrace entry.
const FRAME_INDENT: &str = "      at ";
/// The indentation of an annotation under a user fault line.
const FAULT_INDENT: &str = "    at ";

impl Annotator {
    /// `kernel`: the kernel ELF; `root`: the prefix dropped from file names.
    pub fn new(kernel: Option<PathBuf>, programs: Programs, root: Option<String>) -> Self {
        Annotator {
            kernel_path: kernel,
            kernel: None,
            programs,
            root,
            panic_rip: None,
            backtrace: None,
        }
    }

    /// An annotator over an already-parsed kernel ELF (for tests).
    #[cfg(test)]
    fn with_kernel(kernel: Symbolizer, programs: Programs) -> Self {
        Annotator {
            kernel_path: None,
            kernel: Some(Some(kernel)),
            programs,
            root: None,
            panic_rip: None,
            backtrace: None,
        }
    }

    fn kernel(&mut self) -> Option<&Symbolizer> {
        if self.kernel.is_none() {
            let root = self.root.as_deref();
            self.kernel = Some(match self.kernel_path.as_deref() {
                Some(p) => Symbolizer::load(p, root)
                    .map_err(|e| eprintln!("mica: cannot symbolize the kernel: {e}"))
                    .ok(),
                None => None,
            });
        }
        self.kernel.as_ref()?.as_ref()
    }

    /// Takes one line of the stream (without its line ending) and returns the
    /// annotation lines to print after it (none for most lines).
    pub fn line(&mut self, line: &str) -> Vec<String> {
        let parsed = parse_line(line);
        let first = match (&parsed, self.backtrace) {
            (Line::Address(_), Some(first)) => first,
            _ => {
                self.backtrace = None;
                false
            }
        };
        match parsed {
            Line::Panic { rip } => {
                self.panic_rip = rip;
                Vec::new()
            }
            Line::Backtrace => {
                self.backtrace = Some(true);
                Vec::new()
            }
            Line::Address(addr) if self.backtrace.is_some() => {
                self.backtrace = Some(false);
                // A return address points after its call: look up the call.
                let pc = if first && Some(addr) == self.panic_rip {
                    addr
                } else {
                    addr.wrapping_sub(1)
                };
                match self.kernel() {
                    Some(k) if k.contains(addr) => render(k.frames(pc), FRAME_INDENT),
                    _ => Vec::new(),
                }
            }
            Line::UserFault { program, rip } => {
                let root = self.root.clone();
                match self.programs.get(&program, root.as_deref()) {
                    Some(p) => render(p.frames(rip), FAULT_INDENT),
                    None => Vec::new(),
                }
            }
            _ => Vec::new(),
        }
    }
}

fn render(frames: Vec<Frame>, indent: &str) -> Vec<String> {
    frames
        .iter()
        .map(|f| format!("{indent}{}", f.render()))
        .collect()
}

/// Copies `input` (QEMU's output) to `output` as it arrives, unchanged, and
/// after each complete line writes the annotations `annotator` has for it,
/// with the same line ending the line had. Returns at end of input.
pub fn pump(mut input: impl Read, mut output: impl Write, annotator: &mut Annotator) {
    let mut buf = [0u8; 4096];
    let mut line: Vec<u8> = Vec::new();
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut start = 0;
        for i in 0..n {
            if buf[i] != b'\n' {
                continue;
            }
            line.extend_from_slice(&buf[start..=i]);
            let _ = output.write_all(&buf[start..=i]);
            start = i + 1;
            let text = String::from_utf8_lossy(&line);
            let body = text.trim_end_matches('\n');
            let eol = if body.ends_with('\r') { "\r\n" } else { "\n" };
            for extra in annotator.line(body) {
                let _ = output.write_all(extra.as_bytes());
                let _ = output.write_all(eol.as_bytes());
            }
            line.clear();
        }
        let _ = output.write_all(&buf[start..n]);
        line.extend_from_slice(&buf[start..n]);
        // A runaway line without newlines is kept bounded: only its start
        // could ever match.
        if line.len() > 4096 {
            line.truncate(4096);
        }
        let _ = output.flush();
    }
    let _ = output.flush();
}

#[cfg(test)]
mod tests;
