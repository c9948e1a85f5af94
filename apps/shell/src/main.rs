//! The shell (issue 11 item 5, first part): reads lines from the console
//! server's `console.in` and runs built-in commands. init starts it for
//! `init=shell` with the name service as its first handle.
//!
//! Commands: `help`, `echo`, `cpus`, `mem`, `servers` (init's supervised
//! servers: name, pid, restarts), `ps` (procmgr's table: pid, ppid, state,
//! CPU — the one it runs on or last ran on, `-` when unknown — and
//! program), `run <program> [args]` (procmgr spawns boot module `program`
//! through the loader with argv `program args...` and no environment; the
//! shell waits in the foreground and prints how it ended: exit code,
//! procmgr kill or fault vector), `kill <pid>` (procmgr's rule: the
//! shell's own descendants only), `tests [prefix]` and `bench [prefix]`
//! (init runs the test suite or the benchmark program, only the cases or
//! figures whose names start with `prefix`, in the foreground: their lines
//! come through the console, then the shell prints how it ended), `trace`
//! (init dumps the kernel's trace rings over serial), `exit` (powers off).
//! `;` separates
//! commands on one line. Ctrl-C drops the line being typed and every line
//! typed ahead (the console discards them when it receives the Ctrl-C),
//! and during a foreground `run`, `tests` or `bench` ends the program (the
//! shell polls `console`'s non-blocking `interrupted` every 20 ms while it
//! waits; lines typed meanwhile stay in the console's queue and run after
//! it); Ctrl-D (end of input) exits like `exit`. The shell names itself the
//! console's foreground reader at start (init made it the console's
//! controller), so no program it runs can take a Ctrl-C meant for it.
//!
//! init adopts the shell into procmgr before it starts: its procmgr
//! endpoint is its second handle ([`PROCMGR`]), after the name service;
//! the third is init's program runner ([`PROGRAMS`], `libipc::programs`),
//! the shell's only way to `tests`, `bench` and `trace`: the authority
//! those need (hardware roots, the trace dump) stays init's.
#![no_std]
#![no_main]
#![forbid(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

use libipc::console::{self, Input};
use libipc::ipc::Endpoint;
use libipc::names::{self, Reply};
use libipc::procmgr::{self as pm, Ended};
use libipc::server::Caller;
use libipc::{println, programs, sys};

/// The shell's procmgr endpoint: init's adoption gives it right after the
/// name service (slot 1, as `abi::boot_handles::bench::PROCMGR`).
const PROCMGR: u32 = abi::boot_handles::shell::PROCMGR;
/// init's program runner (slot 2).
const PROGRAMS: u32 = abi::boot_handles::shell::PROGRAMS;
/// How long to wait for it.
const PROCMGR_TIMEOUT_NS: u64 = 2_000_000_000;
/// How often a foreground `run`, `tests` or `bench` polls for Ctrl-C
/// (microseconds).
const POLL_US: u32 = 20_000;
/// Bytes of argv `run` builds (the loader's request buffer bounds it too).
const ARGV_BYTES: usize = 512;

/// How long to wait for init's name-service handle.
const NAMES_TIMEOUT_NS: u64 = 5_000_000_000;

const HELP: &str = "commands: help, echo [words], cpus, mem, servers, ps, run <program> [args], kill <pid>, tests [prefix], bench [prefix], trace, exit";

#[no_mangle]
fn main(_arg: u64) -> i32 {
    let Some(names_ep) = names::endpoint(NAMES_TIMEOUT_NS) else {
        println!("shell: init gave no name service");
        return 1;
    };
    // Before this program makes a handle of its own (slot 1 is procmgr's).
    let procmgr = libipc::server::endpoint_at(PROCMGR, PROCMGR_TIMEOUT_NS);
    if let Some(ep) = procmgr {
        pm::set_endpoint(ep);
        // After a procmgr restart init adopts the shell again (`ps`, `run`
        // and `kill` work again; its earlier children are gone).
        pm::rejoin_through(names_ep);
    }
    // init gives it right after the adoption.
    let programs = procmgr.and_then(|_| libipc::server::endpoint_at(PROGRAMS, PROCMGR_TIMEOUT_NS));
    if !console::attach(names_ep) {
        println!("shell: no console server");
        return 1;
    }
    let input = match names::lookup_newer(names_ep, console::INPUT_NAME, 0, names::RECOVERY_NS) {
        Ok((ep, _)) => ep,
        Err(e) => {
            println!("shell: cannot find {}: {e:?}", console::INPUT_NAME);
            return 1;
        }
    };
    // `console` (not `console.in`): its `read` never waits, so a
    // foreground `run` can poll it for Ctrl-C.
    let ctl = names::lookup_newer(names_ep, console::NAME, 0, names::RECOVERY_NS)
        .ok()
        .map(|(ep, _)| ep);
    // The shell takes every Ctrl-C (gaps2): it kills its foreground program
    // on one, and a program it runs must not take one meant for it. Its
    // `console` handle is the controller's (init badged it so).
    match ctl.map(|ep| console::set_foreground(ep, console::FOREGROUND_SELF)) {
        Some(Ok(true)) => {}
        Some(Ok(false)) => println!("shell: the console refused it the foreground"),
        Some(Err(e)) => println!("shell: naming the console's foreground failed: {e:?}"),
        None => println!("shell: no console control (Ctrl-C will not stop programs)"),
    }
    let mut shell = Shell {
        names_ep,
        programs,
        ctl,
    };
    if procmgr.is_none() {
        println!("shell: no procmgr endpoint (ps, run and kill will fail)");
    }
    println!("mica shell: type `help`");
    let mut line = [0u8; console::MAX_READ];
    loop {
        println!("mica>");
        let n = match console::read(input, &mut line) {
            Ok(Input::Line(n)) => n,
            Ok(Input::Interrupt) => continue,
            Ok(Input::End) => return exit(),
            Err(e) => {
                println!("shell: reading failed: {e:?}");
                return 1;
            }
        };
        let text = core::str::from_utf8(&line[..n]).unwrap_or("");
        // `;` separates commands on one line.
        for text in text.split(';') {
            if shell.command(text) {
                return exit();
            }
        }
    }
}

/// The shell's state between commands.
struct Shell {
    /// init's name service.
    names_ep: Endpoint,
    /// init's program runner, if init gave it.
    programs: Option<Endpoint>,
    /// The console's `console` endpoint (the non-blocking Ctrl-C poll), if
    /// found.
    ctl: Option<Endpoint>,
}

impl Shell {
    /// Runs one command; `true` for `exit`.
    fn command(&mut self, text: &str) -> bool {
        let mut words = text.split_ascii_whitespace();
        match words.next() {
            None => {}
            Some("help") => println!("{HELP}"),
            Some("echo") => {
                let rest = text.trim_start().strip_prefix("echo").unwrap_or("");
                println!("{}", rest.trim());
            }
            Some("cpus") => println!("cpus: {} online", sys::cpu_count()),
            Some("mem") => match sys::sysinfo() {
                Ok(i) => println!(
                    "mem: {} KiB free of {} KiB; {} processes, {} threads",
                    i.free_bytes / 1024,
                    i.total_bytes / 1024,
                    i.processes,
                    i.threads
                ),
                Err(e) => println!("mem: {e}"),
            },
            Some("servers") => servers(self.names_ep),
            Some("ps") => ps(),
            Some("run") => match words.next() {
                Some(program) => self.run(program, words),
                None => println!("run: usage: run <program> [args]"),
            },
            Some("kill") => match words.next().map(str::parse::<u32>) {
                Some(Ok(pid)) => match pm::kill(pid) {
                    Ok(()) => println!("kill: pid {pid} killed"),
                    Err(e) => println!("kill: pid {pid}: {e}"),
                },
                _ => println!("kill: usage: kill <pid>"),
            },
            Some(cmd @ ("tests" | "bench")) => {
                let prefix = words.next().unwrap_or("");
                if words.next().is_some() {
                    println!("{cmd}: usage: {cmd} [prefix]");
                } else {
                    self.program(cmd, prefix);
                }
            }
            Some("trace") => match self.programs.map(programs::trace) {
                Some(Ok(lines)) => println!("trace: {lines} record lines dumped"),
                Some(Err(programs::RunError::Kernel(abi::Error::NotFound))) => {
                    println!("trace: tracing is off (boot with trace=on)")
                }
                Some(Err(programs::RunError::Kernel(abi::Error::AlreadyExists))) => {
                    println!("trace: the rings were dumped already (once per boot)")
                }
                Some(Err(e)) => println!("trace: {e}"),
                None => println!("trace: init gave no program runner"),
            },
            Some("exit") => return true,
            Some(other) => println!("{other}: unknown command ({HELP})"),
        }
        false
    }
    /// Asks init to run `tests` or `bench` with `prefix` and waits.
    fn program(&self, cmd: &str, prefix: &str) {
        let Some(ep) = self.programs else {
            println!("{cmd}: init gave no program runner");
            return;
        };
        let label = if cmd == "tests" {
            programs::TESTS
        } else {
            programs::BENCH
        };
        // Ctrl-C (polled as in `run`) makes init kill it.
        let ctl = self.ctl;
        let tick = || {
            let hit = interrupted(ctl);
            if hit {
                println!("{cmd}: ^C: stopping it");
            }
            hit
        };
        match programs::run(ep, label, prefix.as_bytes(), POLL_US, tick) {
            Ok(Ended::Exited(0)) => println!("{cmd}: passed (exited with 0)"),
            Ok(Ended::Exited(c)) => println!("{cmd}: FAILED (exited with {c})"),
            Ok(Ended::Faulted(v)) => println!("{cmd}: FAILED (killed by fault vector {v})"),
            Ok(Ended::Killed) => println!("{cmd}: interrupted (killed)"),
            Err(e) => println!("{cmd}: {e}"),
        }
    }
    /// Spawns boot module `program` with argv `program args...` through
    /// procmgr and waits for it in the foreground.
    fn run<'a>(&mut self, program: &'a str, args: impl Iterator<Item = &'a str>) {
        let mut argv = [0u8; ARGV_BYTES];
        let mut len = 0;
        for word in core::iter::once(program).chain(args) {
            let end = len + word.len() + 1;
            if end > argv.len() {
                println!("run: arguments longer than {ARGV_BYTES} bytes");
                return;
            }
            argv[len..end - 1].copy_from_slice(word.as_bytes());
            argv[end - 1] = 0;
            len = end;
        }
        let pid = match pm::spawn(program, &argv[..len], b"") {
            Ok(pid) => pid,
            Err(e) => {
                println!("run: {program}: {e}");
                return;
            }
        };
        // Ctrl-C (polled on `console`: it never waits and takes no line)
        // kills it; lines typed meanwhile stay queued for after it.
        let ctl = self.ctl;
        let tick = || {
            if interrupted(ctl) {
                match pm::kill(pid) {
                    Ok(()) => println!("run: ^C: pid {pid} killed"),
                    Err(e) => println!("run: ^C: kill pid {pid}: {e}"),
                }
            }
        };
        match pm::wait_ticking(pid, POLL_US, tick) {
            Ok((_, e)) => println!("run: {program} (pid {pid}) {}", How(e)),
            Err(e) => println!("run: waiting for {program} (pid {pid}): {e}"),
        }
    }
}

/// Whether a Ctrl-C was typed (taken from the console; `false` without
/// one, or when the console cannot be asked).
fn interrupted(ctl: Option<Endpoint>) -> bool {
    ctl.is_some_and(|ctl| console::interrupted(ctl) == Ok(true))
}

/// Prints init's supervised servers.
fn servers(names_ep: Endpoint) {
    let mut buf = [0u8; names::BUFFER];
    println!("servers: name pid restarts");
    for index in 0.. {
        let mut c = names::Client::new(Caller::new(names_ep, None), &mut buf);
        match c.server(index) {
            Ok(Reply::Server {
                name,
                pid,
                restarts,
                registered,
            }) => println!(
                "servers: {name} {pid} {restarts}{}",
                if registered { "" } else { " (restarting)" }
            ),
            Ok(_) => break,
            Err(e) => {
                println!("servers: {e:?}");
                break;
            }
        }
    }
}

/// A `ps` CPU column: the number, or `-` when not known (init, zombies).
struct Cpu(Option<u32>);

impl core::fmt::Display for Cpu {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(c) => write!(f, "{c}"),
            None => f.write_str("-"),
        }
    }
}

/// Prints procmgr's table: pid, parent, state, CPU, program.
fn ps() {
    println!("ps: pid ppid state cpu program");
    let mut index = 0;
    loop {
        match pm::list(index) {
            Ok(Some(p)) => {
                let program = core::str::from_utf8(&p.program[..p.program_len]).unwrap_or("?");
                let cpu = Cpu(p.cpu);
                match p.zombie {
                    None => println!("ps: {} {} running {cpu} {program}", p.pid, p.ppid),
                    Some(e) => {
                        println!(
                            "ps: {} {} zombie({}) {cpu} {program}",
                            p.pid,
                            p.ppid,
                            How(e)
                        )
                    }
                }
                index = p.index + 1;
            }
            Ok(None) => break,
            Err(e) => {
                println!("ps: {e}");
                break;
            }
        }
    }
}

/// How a process ended ([`Ended`]), in words.
struct How(Ended);

impl core::fmt::Display for How {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Ended::Exited(c) => write!(f, "exited with {c}"),
            Ended::Killed => write!(f, "killed"),
            Ended::Faulted(v) => write!(f, "killed by fault vector {v}"),
        }
    }
}

fn exit() -> i32 {
    println!("shell: bye");
    console::detach();
    let _ = sys::shutdown(true);
    0
}
