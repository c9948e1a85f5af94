//! The console server (issue 11 item 4), from a client's side.
//!
//! - `consrv_sessions_print_whole_lines`: four sessions (each its own
//!   unfinished line) write long distinct lines in small pieces at once; the
//!   smoke case `console-pid-prefix` checks every one of those lines is whole
//!   in the transcript (ring 3 cannot read it).
//! - `consrv_hostile_requests_get_typed_errors`: kernel, non-canonical and
//!   unmapped buffers, an over-long write, zero lengths, reads with max 0 and
//!   huge, an unknown label: each answered with a typed error, and the
//!   console keeps serving.
//! - `consrv_restart_while_clients_print`: the console is killed through the
//!   name service's test control while two threads print: it comes back,
//!   their next writes succeed.

use crate::util::{self, check, ok, TestResult};
use abi::{Error, Sysnum};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use libipc::console::{self, Client, Reply, MAX_WRITE};
use libipc::ipc::{self, Endpoint, IpcRegs};
use libipc::names;
use libipc::server::Caller;
use libipc::wire::CallError;
use libipc::{println, sys};

/// Writers and the lines each prints.
pub const WRITERS: u64 = 4;
/// Lines per writer.
pub const LINES: u64 = 8;
/// The payload letters' count per line (the smoke case matches it).
const PAYLOAD: usize = 300;
/// Bytes per write: lines go out in small pieces, so pieces of different
/// sessions interleave at the server.
const PIECE: usize = 37;

fn names_ep() -> Result<Endpoint, &'static str> {
    names::endpoint(1_000_000_000).ok_or("init gave no name-service handle")
}

fn console_ep() -> Result<Endpoint, &'static str> {
    names::lookup(names_ep()?, console::NAME)
        .map(|(ep, _)| ep)
        .map_err(|_| "no console registered")
}

/// One writer: `arg` = writer number | session handle << 32.
extern "C" fn writer(arg: u64) -> ! {
    let k = arg & 0xffff_ffff;
    let ep = Endpoint((arg >> 32) as u32);
    let letter = b'a' + k as u8;
    let mut line = [0u8; 64 + PAYLOAD];
    let mut buf = [0u8; 128];
    for j in 0..LINES {
        let mut n = 0;
        let mut w = |b: &[u8]| {
            line[n..n + b.len()].copy_from_slice(b);
            n += b.len();
        };
        w(b"consrv-w");
        w(&[b'0' + k as u8, b'-', b'0' + j as u8, b':', b' ']);
        for _ in 0..PAYLOAD {
            w(&[letter]);
        }
        w(b" end\n");
        for piece in line[..n].chunks(PIECE) {
            let mut c = Client::new(libipc::server::Caller::new(ep, None), &mut buf);
            if !matches!(c.write(piece), Ok(Reply::Written { .. })) {
                sys::thread_exit(1);
            }
            sys::yield_now();
        }
    }
    sys::thread_exit(0)
}

/// Case: sessions writing long lines in pieces at once (the transcript's
/// judge is the smoke case).
pub fn sessions_print_whole_lines() -> TestResult {
    let ep = console_ep()?;
    let mut buf = [0u8; 64];
    let mut sessions = [0u32; WRITERS as usize];
    for s in sessions.iter_mut() {
        let mut c = Client::new(Caller::new(ep, None), &mut buf);
        match c.open() {
            Ok(Reply::Opened { ep }) => *s = ep.0,
            _ => return Err("open did not give a session"),
        }
    }
    let mut threads = heapless::Vec::<util::Thread, { WRITERS as usize }>::new();
    for (k, &s) in sessions.iter().enumerate() {
        let t = util::spawn(writer, k as u64 | (u64::from(s) << 32))?;
        let _ = threads.push(t);
    }
    let mut all_ok = true;
    for t in threads {
        all_ok &= matches!(t.join(), Ok(abi::status::Status::Exited(0)));
    }
    for s in sessions {
        let _ = ipc::handle_close(s);
    }
    let _ = ipc::handle_close(ep.0);
    check(all_ok, "a writer's write was not answered Written")
}

/// A raw call of label `label` with buffer `addr`/`len` and capacity `cap`.
fn raw_call(ep: Endpoint, label: u32, addr: u64, len: u64, cap: u32) -> Result<u64, Error> {
    let mut r = IpcRegs {
        rdi: u64::from(ep.0),
        rsi: ipc::info(label, 0, 0, len, false),
        r14: addr,
        r15: ipc::spec(cap, 0),
        ..IpcRegs::default()
    };
    // SAFETY: every buffer named here is either not ours to write (the
    // kernel must refuse it before writing) or `cap` is 0.
    abi::decode_result(unsafe { ipc::ipc_syscall(Sysnum::IpcCall, &mut r) }).map(|_| r.rsi)
}

/// The console still answers a plain write.
fn still_serving(ep: Endpoint, what: &'static str) -> TestResult {
    let mut buf = [0u8; 128];
    let mut c = Client::new(Caller::new(ep, None), &mut buf);
    match c.write(b"consrv: still serving\n") {
        Ok(Reply::Written { len: 22 }) => Ok(()),
        _ => Err(what),
    }
}

/// Case: hostile requests get typed errors and the console keeps serving.
pub fn hostile_requests_get_typed_errors() -> TestResult {
    let ep = console_ep()?;
    let write = 1; // Console's `Write` label.
    for (addr, what) in [
        (0xffff_8000_0000_0000u64, "a kernel buffer was not refused"),
        (
            0x0000_8000_0000_0000,
            "a non-canonical buffer was not refused",
        ),
        (0x0000_4d00_0000_0000, "an unmapped buffer was not refused"),
    ] {
        let r = raw_call(ep, write, addr, 64, 0);
        check(
            matches!(r, Err(Error::BadAddress | Error::InvalidArgument)),
            what,
        )?;
        still_serving(ep, "the console stopped after a bad buffer")?;
    }
    // A length beyond the kernel's largest buffer.
    let mut big = [0u8; 16];
    let r = raw_call(ep, write, big.as_mut_ptr() as u64, (1 << 17) - 1, 0);
    check(
        matches!(r, Err(Error::InvalidArgument | Error::BadAddress)),
        "a huge length was not refused",
    )?;
    // An over-long write: refused by the kernel (the server's buffer is
    // smaller) or answered Invalid by the server.
    static HUGE: [u8; 3 * MAX_WRITE] = [b'z'; 3 * MAX_WRITE];
    let mut buf = [0u8; 3 * MAX_WRITE + 64];
    {
        let mut c = Client::new(Caller::new(ep, None), &mut buf);
        let r = c.write(&HUGE);
        check(
            matches!(
                r,
                Ok(Reply::Invalid { .. })
                    | Err(CallError::Transport(
                        Error::InvalidArgument | Error::NoMemory
                    ))
            ),
            "an over-long write was not refused",
        )?;
    }
    still_serving(ep, "the console stopped after an over-long write")?;
    // An unknown label and a malformed (empty) write: protocol errors.
    let r = raw_call(ep, 0x7777, 0, 0, 0);
    check(r.is_ok(), "an unknown label got no (error) reply")?;
    let r = raw_call(ep, write, 0, 0, 0);
    check(r.is_ok(), "an empty write message got no (error) reply")?;
    let mut c = Client::new(Caller::new(ep, None), &mut buf);
    check(
        matches!(c.write(b""), Ok(Reply::Written { len: 0 })),
        "a zero-length write was not Written 0",
    )?;
    check(
        matches!(c.read(0), Ok(Reply::Invalid { .. })),
        "read with max 0 was not Invalid",
    )?;
    check(
        matches!(
            c.read(u64::MAX),
            Ok(Reply::Empty {} | Reply::Line { .. } | Reply::Interrupt {} | Reply::EndOfInput {})
        ),
        "read with a huge max was not answered",
    )?;
    still_serving(ep, "the console stopped after the reads")?;
    let _ = ipc::handle_close(ep.0);
    Ok(())
}

/// Set to stop the printing threads.
static STOP: AtomicBool = AtomicBool::new(false);
/// Lines the printing threads printed.
static PRINTED: AtomicU64 = AtomicU64::new(0);

extern "C" fn printer(k: u64) -> ! {
    let mut j = 0u64;
    // Relaxed: a flag polled in a loop; the join orders the end.
    while !STOP.load(Ordering::Relaxed) {
        println!("consrv-r{k}-{j}");
        j += 1;
        PRINTED.fetch_add(1, Ordering::Relaxed);
        sys::sleep_ns(1_000_000);
    }
    sys::thread_exit(0)
}

/// Kills of the console in the restart case.
const KILLS: u64 = 3;

/// The console's restart count from the name service.
fn restarts(names_ep: Endpoint) -> Option<u64> {
    let mut buf = [0u8; names::BUFFER];
    for i in 0.. {
        let mut c = names::Client::new(Caller::new(names_ep, None), &mut buf);
        match c.server(i) {
            Ok(names::Reply::Server { name, restarts, .. }) if name == console::NAME => {
                return Some(restarts)
            }
            Ok(names::Reply::Server { .. }) => {}
            _ => return None,
        }
    }
    None
}

/// Case: the console killed while clients print comes back and their next
/// writes succeed.
pub fn restart_while_clients_print() -> TestResult {
    let names_ep = names_ep()?;
    let before = restarts(names_ep).ok_or("no console in init's server table")?;
    STOP.store(false, Ordering::Relaxed);
    let a = util::spawn(printer, 0)?;
    let b = util::spawn(printer, 1)?;
    let start = sys::clock_ns();
    for _ in 0..KILLS {
        sys::sleep_ns(20_000_000);
        let mut buf = [0u8; names::BUFFER];
        let mut c = names::Client::new(Caller::new(names_ep, None), &mut buf);
        check(
            matches!(c.restart(console::NAME), Ok(names::Reply::Restarting {})),
            "the Restart control was refused",
        )?;
        // Back: a lookup names a live instance that answers.
        let ep = names::lookup_newer(names_ep, console::NAME, 0, names::RECOVERY_NS)
            .map(|(ep, _)| ep)
            .map_err(|_| "the console did not come back")?;
        let written = {
            let mut buf = [0u8; 128];
            let mut c = Client::new(Caller::new(ep, None), &mut buf);
            matches!(c.write(b"consrv: back\n"), Ok(Reply::Written { .. }))
        };
        let _ = ipc::handle_close(ep.0);
        // The lookup may still have named the dying instance: one retry.
        if !written {
            let ep = names::lookup_newer(names_ep, console::NAME, 0, names::RECOVERY_NS)
                .map(|(ep, _)| ep)
                .map_err(|_| "the console did not come back")?;
            let mut buf = [0u8; 128];
            let mut c = Client::new(Caller::new(ep, None), &mut buf);
            let r = c.write(b"consrv: back\n");
            let _ = ipc::handle_close(ep.0);
            check(
                matches!(r, Ok(Reply::Written { .. })),
                "a write after the restart failed",
            )?;
        }
    }
    let recovered_ns = sys::clock_ns() - start;
    STOP.store(true, Ordering::Relaxed);
    let sa = a.join();
    let sb = b.join();
    check(
        matches!(sa, Ok(abi::status::Status::Exited(0)))
            && matches!(sb, Ok(abi::status::Status::Exited(0))),
        "a printing thread did not end cleanly",
    )?;
    let after = restarts(names_ep).ok_or("no console in init's server table")?;
    ok(
        if after >= before + KILLS {
            Ok(())
        } else {
            Err(Error::NotFound)
        },
        "init did not count the restarts",
    )?;
    // The print path found the successor: this line goes through it.
    check(
        libipc::console::write_bytes(b"consrv-restart-done\n"),
        "print! lost the console after the restarts",
    )?;
    println!(
        "  note: {KILLS} console restarts while printing, {} lines printed, {} ms in all",
        PRINTED.load(Ordering::Relaxed),
        recovered_ns / 1_000_000
    );
    Ok(())
}
