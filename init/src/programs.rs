//! init's program runner (shell3): the shell's `tests` and `bench` run the
//! test suite and the benchmark program with the handles init gives them
//! under `init=tests` / `init=bench` (the name service, the hardware
//! roots, procmgr's adoption), and `trace` dumps the kernel's trace rings
//! (`trace_dump`, a syscall only init may make).
//!
//! The authority stays init's: the shell gets a SEND handle to this
//! endpoint and nothing else from here, so all it can do is ask for one of
//! these fixed actions (protocol: `libipc::programs`). A thread of init
//! serves it, one request at a time: the program runs in the foreground of
//! whoever asked, who waits for it in steps of at most
//! `programs::MAX_WAIT_US` (`WAIT`) and may `KILL` it between them (the
//! shell's Ctrl-C). One program at a time: a start before the last one was
//! waited for is `BUSY`.

use crate::{give_bench, give_tests, spawn_args, spawn_stack, wait};
use abi::bootinfo::{cmdline_arg, modules, BootInfo};
use abi::status;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use libipc::bench::{ICOUNT_ARG, ICOUNT_CMDLINE_FLAG};
use libipc::hw;
use libipc::ipc::{self, Endpoint, Message, Notification, Received};
use libipc::programs::{self as p, MAX_PREFIX};
use libipc::{println, sys};

/// The runner's endpoint (init's handle, every right).
static ENDPOINT: AtomicU32 = AtomicU32::new(0);
/// The boot-information page's address.
static INFO: AtomicU64 = AtomicU64::new(0);

/// Creates the endpoint and starts the thread that serves it; `None` (said
/// so) if either fails.
pub fn start(info: &'static BootInfo) -> Option<Endpoint> {
    let ep = match ipc::endpoint_create() {
        Ok(ep) => ep,
        Err(e) => {
            println!("init: program runner: no endpoint: {e}");
            return None;
        }
    };
    // Relaxed: the thread_spawn below is a syscall that publishes these to
    // the new thread (it starts after the kernel saw them stored).
    ENDPOINT.store(ep.0, Ordering::Relaxed);
    INFO.store(info as *const BootInfo as u64, Ordering::Relaxed);
    if let Err(e) = spawn_stack(serve, 0) {
        println!("init: program runner: no thread: {e}");
        let _ = ipc::handle_close(ep.0);
        return None;
    }
    Some(ep)
}

extern "C" fn serve(_: u64) -> ! {
    let ep = Endpoint(ENDPOINT.load(Ordering::Relaxed));
    // SAFETY: `start` stored the address of the boot-information page,
    // which the kernel maps read-only for init's whole life.
    let info: &BootInfo = unsafe { &*(INFO.load(Ordering::Relaxed) as *const BootInfo) };
    let mut current: Option<Current> = None;
    let mut next = ipc::recv(ep, None);
    loop {
        let answer = match next {
            Ok(Received::Msg { msg, .. }) => handle(info, &msg, &mut current),
            // Nothing is bound: a notification cannot come; an error of the
            // endpoint itself (it cannot die: init holds it) ends nothing,
            // the next receive is tried.
            Ok(Received::Notified(_)) | Err(_) => {
                next = ipc::recv(ep, None);
                continue;
            }
        };
        // A caller that went away meanwhile is skipped by reply_recv.
        next = ipc::reply_recv(ep, &answer, None);
    }
}

fn reply(label: u32, w0: u64) -> Message {
    Message {
        label,
        words: [w0, 0, 0, 0, 0, 0],
    }
}

/// The program started last and not yet waited for.
struct Current {
    name: &'static str,
    process: sys::ProcessHandle,
    /// Signalled (bit [`ENDED`]) when the process ends.
    ended: Notification,
    /// Whether `KILL` ended it (its status is then `killed()`).
    killed: bool,
}

/// The bit `Current::ended` is signalled with.
const ENDED: u64 = 1;

impl Current {
    /// Closes what it holds.
    fn close(self) {
        crate::rejoin::forget(self.process);
        let _ = self.process.close();
        let _ = ipc::handle_close(self.ended.0);
    }
}

/// Answers one request (see `libipc::programs`).
fn handle(info: &BootInfo, msg: &Message, current: &mut Option<Current>) -> Message {
    match msg.label {
        p::WAIT => return wait_step(msg.words[0], current),
        p::KILL => {
            return match current {
                Some(c) => {
                    // An error means it has ended already: the wait sees it
                    // and gives its own status.
                    if c.process.kill().is_ok() {
                        c.killed = true;
                    }
                    reply(p::KILLED, 0)
                }
                None => reply(p::IDLE, 0),
            };
        }
        _ => {}
    }
    let mut bytes = [0u8; MAX_PREFIX];
    let prefix = p::decode(&msg.words, &mut bytes)
        .and_then(|n| core::str::from_utf8(&bytes[..n]).ok())
        .filter(|s| !s.contains('\0'));
    let Some(prefix) = prefix else {
        return reply(p::BAD_REQUEST, 0);
    };
    if msg.label == p::TRACE {
        if !prefix.is_empty() {
            return reply(p::BAD_REQUEST, 0);
        }
        return reply(p::RAN, abi::encode_result(sys::trace_dump()));
    }
    if current.is_some() {
        return reply(p::BUSY, 0);
    }
    let args: &[&str] = if prefix.is_empty() { &[] } else { &[prefix] };
    let started = match msg.label {
        p::TESTS => spawn_args(modules::TESTS, args, 0, give_tests),
        p::BENCH => {
            // rdtsc counts instructions under `--icount` (as for init=bench).
            let icount = cmdline_arg(info.cmdline(), ICOUNT_CMDLINE_FLAG).is_some();
            let mode = if icount { ICOUNT_ARG } else { 0 };
            spawn_args(modules::BENCH, args, mode, give_bench)
        }
        _ => return reply(p::BAD_REQUEST, 0),
    };
    let name = if msg.label == p::TESTS {
        modules::TESTS
    } else {
        modules::BENCH
    };
    let Some(process) = started else {
        return reply(p::NOT_STARTED, 0);
    };
    // The end is signalled on a notification of its own, so `WAIT` can
    // time out (`process_wait` cannot); registered after the start, the
    // kernel signals at once if the process has ended already.
    let ended = ipc::notification_create().and_then(|n| {
        hw::process_notify(process, n, ENDED).inspect_err(|_| {
            let _ = ipc::handle_close(n.0);
        })?;
        Ok(n)
    });
    match ended {
        Ok(ended) => {
            *current = Some(Current {
                name,
                process,
                ended,
                killed: false,
            });
            reply(p::STARTED, 0)
        }
        Err(e) => {
            println!("init: program runner: cannot watch {name}: {e}");
            let _ = process.kill();
            let _ = wait(name, process);
            crate::rejoin::forget(process);
            let _ = process.close();
            reply(p::NOT_STARTED, 0)
        }
    }
}

/// `WAIT`: at most `timeout_us` (clamped) for the current program.
fn wait_step(timeout_us: u64, current: &mut Option<Current>) -> Message {
    let Some(c) = current.as_ref() else {
        return reply(p::IDLE, 0);
    };
    let us = timeout_us.clamp(1, p::MAX_WAIT_US) as u32;
    match ipc::wait(c.ended, Some(us)) {
        Ok(_) => {}
        Err(libipc::Error::TimedOut) => return reply(p::RUNNING, 0),
        // Its own notification cannot fail; if it does, the blocking wait
        // below still ends with the process.
        Err(e) => println!("init: program runner: waiting on {}: {e}", c.name),
    }
    let c = current.take().expect("checked above");
    let word = match wait(c.name, c.process) {
        _ if c.killed => status::killed(),
        Some(status::Status::Exited(code)) => status::exited(code),
        Some(status::Status::Faulted(v)) => status::faulted(v),
        None => status::exited(-1),
    };
    c.close();
    reply(p::RAN, word)
}
