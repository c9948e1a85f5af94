//! The shell (issue 11 item 5, first part): reads lines from the console
//! server's `console.in` and runs built-in commands. init starts it for
//! `init=shell` with the name service as its first handle.
//!
//! Commands: `help`, `echo`, `cpus`, `mem`, `servers` (init's supervised
//! servers: name, pid, restarts), `exit` (powers off). Ctrl-C drops the
//! line being typed; Ctrl-D (end of input) exits like `exit`. `ps`, `run`
//! and `kill` need procmgr and come with it.
#![no_std]
#![no_main]
#![forbid(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

use libipc::console::{self, Input};
use libipc::ipc::Endpoint;
use libipc::names::{self, Reply};
use libipc::server::Caller;
use libipc::{println, sys};

/// How long to wait for init's name-service handle.
const NAMES_TIMEOUT_NS: u64 = 5_000_000_000;

const HELP: &str = "commands: help, echo [words], cpus, mem, servers, exit";

#[no_mangle]
fn main(_arg: u64) -> i32 {
    let Some(names_ep) = names::endpoint(NAMES_TIMEOUT_NS) else {
        println!("shell: init gave no name service");
        return 1;
    };
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
            Some("servers") => servers(names_ep),
            Some("exit") => return exit(),
            Some(other) => println!("{other}: unknown command ({HELP})"),
        }
    }
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

fn exit() -> i32 {
    println!("shell: bye");
    console::detach();
    let _ = sys::shutdown(true);
    0
}
