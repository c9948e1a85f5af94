//! Phase "servers" (breakit, issue 11): random requests to the ring-3
//! servers through the name service init gives this program (slot 0):
//! the loader (`Load`/`LoadImage` with random module names, arguments,
//! lengths and memory objects, one of them scribbled on by a thread of
//! ours while the loader copies it), the console (writes of random lengths
//! and bytes, reads, sessions; `console.in` gets writes only, a read there
//! would wait for typed input), procmgr through the endpoint init's
//! adoption gave this program (list, lookup, adopt — refused: the named
//! endpoint that may adopt is init's alone, which the phase checks too —
//! spawn, fork, wait, kill with bogus and real arguments; a child a spawn
//! made is killed and reaped at once), and raw frames with random labels,
//! words, buffers and handles to each. Every call carries a timeout: one
//! that expires is a finding (a server stuck on input). Afterwards each
//! server must still be the same instance (none died and was restarted)
//! and answer a well-formed request; the run's final leak check covers
//! what the phase made (loaded processes are killed and closed, received
//! handles closed).
//!
//! It runs before phase 4, which closes every handle this process holds
//! (the name service's too).

use crate::finding;
use crate::util::{self, Rng};
use abi::rights;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use libipc::ipc::{self, Endpoint};
use libipc::server::Caller;
use libipc::sys::{self, ProcessHandle};
use libipc::vm::{MemoryHandle, Space};
use libipc::wire::{CallError, CopiedHandle, Frame, Transport};
use libipc::{console, loader, names, procmgr};

/// Requests made.
pub static OPS_DONE: AtomicU64 = AtomicU64::new(0);
/// Requests per server.
const OPS: u64 = 200;
/// How long one request may take (µs): a loaded TCG host is slow, a
/// stuck server is stuck for ever.
const TIMEOUT_US: u32 = 5_000_000;
/// Where this phase maps the memory objects it offers `LoadImage`.
const IMAGE_AT: u64 = 0x5800_0000_0000;
/// Most pages of such an object.
const IMAGE_PAGES: u64 = 16;

static SCRIBBLE: AtomicBool = AtomicBool::new(false);
static SCRIBBLE_STOP: AtomicBool = AtomicBool::new(false);

/// The byte alphabet of console writes: letters that spell no word a
/// judge looks for, and the characters the console must sanitize or
/// interpret (tab, newline, CR, ESC, DEL, backspace, C1, invalid UTF-8).
const ALPHABET: &[u8] = b"abcdefgh    \t\n\r\x1b\x7f\x08\xc2\x85\xff\xc3";

/// Names to ask for (module names for the loader, server names for
/// procmgr's lookup).
const NAMES: &[&str] = &[
    "hello",
    "tests",
    "init",
    "loader",
    "console",
    "console.in",
    "procmgr",
    "kv",
    "",
    "nosuch",
    "hello\0",
    "../hello",
    "HELLO",
    "hello ",
    "é",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
];

fn name(r: &mut Rng) -> &'static str {
    r.pick(NAMES)
}

/// Random argv/envp-like bytes into `out`: well formed, missing the last
/// NUL, many empty strings, or over the loader's limit.
fn args<'a>(r: &mut Rng, out: &'a mut [u8; 3600]) -> &'a [u8] {
    let len = match r.below(6) {
        0 => 0,
        1 => r.below(64) as usize,
        2 => 300, // 300 empty strings: over the string count
        3 => loader::MAX_ARGS_BYTES / 2 + 1,
        4 => out.len(),
        _ => r.below(out.len() as u64) as usize,
    };
    for (i, b) in out.iter_mut().enumerate().take(len) {
        *b = match r.below(4) {
            0 if i + 1 < len => 0,
            _ => b'a' + r.below(26) as u8,
        };
    }
    if len == 300 {
        out[..len].fill(0);
    } else if len > 0 && r.below(3) != 0 {
        out[len - 1] = 0;
    }
    &out[..len]
}

/// Closes every handle a reply carried (a loaded process is killed first:
/// not started, it would otherwise live on in our table).
fn drop_handles(handles: &[u32]) {
    for &h in handles {
        let _ = ProcessHandle::from_raw(h).kill();
        let _ = ipc::handle_close(h);
    }
}

/// A call whose transport failed: a timeout is a stuck server.
fn transport(what: &str, e: &CallError<abi::Error>) {
    if let CallError::Transport(abi::Error::TimedOut) = e {
        finding!("servers: {what}: no answer within {TIMEOUT_US} us");
    }
}

fn caller(ep: Endpoint) -> Caller {
    Caller::new(ep, Some(TIMEOUT_US))
}

/// A raw frame: random label (the protocol's or any), words, buffer bytes,
/// and a handle copied or moved; whatever comes back is closed.
fn raw(r: &mut Rng, ep: Endpoint, what: &str, labels: &[u32], scratch: u32) {
    let mut label = r.pick(labels);
    if r.one_in(4) {
        label = r.next() as u32;
        if !labels.contains(&2) && label == 2 {
            label = 3;
        }
    }
    let mut f = Frame {
        label,
        ..Frame::default()
    };
    for w in f.words.iter_mut() {
        *w = match r.below(4) {
            0 => 0,
            1 => r.below(64),
            2 => u64::MAX - r.below(4),
            _ => r.next(),
        };
    }
    let mut buf = [0u8; 4200];
    f.len = match r.below(4) {
        0 => 0,
        1 => r.below(64) as usize,
        _ => r.below(buf.len() as u64) as usize,
    };
    for b in buf[..f.len].iter_mut() {
        *b = r.next() as u8;
    }
    if r.one_in(3) {
        // A copy of our scratch notification, or a fresh one moved.
        f.nhandles = 1;
        if r.one_in(2) {
            f.handles[0] = scratch;
            f.copy_mask = 1;
        } else if let Ok(n) = ipc::notification_create() {
            f.handles[0] = n.0;
        } else {
            f.nhandles = 0;
        }
    }
    match caller(ep).call(&f, &mut buf) {
        Ok(m) => drop_handles(&m.handles[..m.nhandles.min(m.handles.len())]),
        Err(e) => {
            if f.nhandles == 1 && f.copy_mask == 0 {
                // A moved handle is consumed by a send that got past our
                // checks; one refused before that is still ours.
                let _ = ipc::handle_close(f.handles[0]);
            }
            transport(what, &CallError::Transport(e));
        }
    }
    OPS_DONE.fetch_add(1, Ordering::Relaxed);
}

extern "C" fn scribbler(seed: u64) -> ! {
    let mut r = Rng::new(seed, 0x5c1b);
    let words = (IMAGE_PAGES * 4096 / 8) as usize;
    while !SCRIBBLE_STOP.load(Ordering::Relaxed) {
        if SCRIBBLE.load(Ordering::Relaxed) {
            let i = r.below(words as u64) as usize;
            // SAFETY: while SCRIBBLE is set the object is mapped writable
            // at IMAGE_AT for IMAGE_PAGES pages (the phase clears it and
            // waits for this thread to stop before unmapping); the bytes
            // are only ever read by the loader's copy.
            unsafe { (IMAGE_AT as *mut u64).add(i).write_volatile(r.next()) };
        } else {
            sys::yield_now();
        }
    }
    sys::thread_exit(0)
}

/// One `LoadImage` with a random object, length and handle.
fn load_image(r: &mut Rng, ep: Endpoint, scratch: u32) {
    let pages = 1 + r.below(IMAGE_PAGES);
    let Ok(mem) = MemoryHandle::create(pages * 4096) else {
        return;
    };
    let mapped = mem
        .map(Space::Own, IMAGE_AT, 0, pages * 4096, abi::prot::WRITE)
        .is_ok();
    if mapped {
        // SAFETY: just mapped writable, ours, `pages` pages.
        let bytes = unsafe { core::slice::from_raw_parts_mut(IMAGE_AT as *mut u8, 64) };
        // An ELF64 header's start, then noise.
        bytes[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
        for b in bytes[8..].iter_mut() {
            *b = r.below(4) as u8;
        }
        SCRIBBLE.store(r.one_in(2), Ordering::Relaxed);
    }
    let handle = match r.below(6) {
        0 => scratch, // not a memory object
        1 => ipc::handle_dup(mem.raw(), rights::DUPLICATE, 0).unwrap_or(0), // no MAP
        2 => r.next() as u32,
        _ => mem.raw(),
    };
    let len = match r.below(6) {
        0 => 0,
        1 => pages * 4096 + 1,
        2 => u64::MAX - r.below(4096),
        3 => abi::vm::MAX_MEMORY_BYTES + 1,
        _ => 1 + r.below(pages * 4096),
    };
    let mut a = [0u8; 3600];
    let argv = args(r, &mut a);
    let mut buf = [0u8; loader::BUFFER];
    let mut c = loader::Client::new(caller(ep), &mut buf);
    match c.load_image(CopiedHandle(handle), len, argv, b"") {
        Ok(loader::Reply::Loaded { process, .. }) => drop_handles(&[process.0]),
        Ok(_) => {}
        Err(e) => transport("loader LoadImage", &e),
    }
    SCRIBBLE.store(false, Ordering::Relaxed);
    // Let a scribble under way finish before the unmap.
    sys::yield_now();
    if handle != mem.raw() && handle != scratch {
        let _ = ipc::handle_close(handle);
    }
    if mapped {
        // SAFETY: our mapping; the scribbler writes only while SCRIBBLE is
        // set, and a store it began before the clear is at most one word
        // late -- see `run`, which stops it for good before the last unmap.
        let _ = unsafe { Space::Own.unmap(IMAGE_AT, pages * 4096) };
    }
    let _ = mem.close();
    OPS_DONE.fetch_add(1, Ordering::Relaxed);
}

fn load(r: &mut Rng, ep: Endpoint) {
    let (mut a, mut e) = ([0u8; 3600], [0u8; 3600]);
    let argv = args(r, &mut a);
    let envp = if r.one_in(2) {
        &[][..]
    } else {
        args(r, &mut e)
    };
    let mut buf = [0u8; loader::BUFFER];
    let mut c = loader::Client::new(caller(ep), &mut buf);
    match c.load(name(r), argv, envp) {
        Ok(loader::Reply::Loaded { process, .. }) => drop_handles(&[process.0]),
        Ok(_) => {}
        Err(e) => transport("loader Load", &e),
    }
    OPS_DONE.fetch_add(1, Ordering::Relaxed);
}

fn console_op(r: &mut Rng, ep: Endpoint, input: bool) {
    let mut buf = [0u8; console::BUFFER];
    let mut bytes = [0u8; console::MAX_WRITE + 8];
    let len = match r.below(8) {
        0 => 0,
        1 => console::MAX_LINE + r.below(4) as usize,
        2 => console::MAX_WRITE + r.below(8) as usize,
        _ => r.below(80) as usize,
    };
    for b in bytes[..len].iter_mut() {
        *b = r.pick(ALPHABET);
    }
    let mut c = console::Client::new(caller(ep), &mut buf);
    let what = if input { "console.in" } else { "console" };
    let r2 = match r.below(if input { 2 } else { 5 }) {
        0 | 1 => c.write(&bytes[..len]).map(|_| ()),
        2 | 3 => c.read(r.pick(&[0, 1, 7, 1024, 1025, u64::MAX])).map(|_| ()),
        _ => match c.open() {
            Ok(console::Reply::Opened { ep: h }) => {
                if r.one_in(2) {
                    let mut b2 = [0u8; 64];
                    let mut s = console::Client::new(caller(Endpoint(h.0)), &mut b2);
                    let _ = s.write(b"abc");
                }
                let _ = ipc::handle_close(h.0);
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        },
    };
    if let Err(e) = r2 {
        transport(what, &e);
    }
    OPS_DONE.fetch_add(1, Ordering::Relaxed);
}

/// A sleeping child of ours to adopt (killed and reaped afterwards).
fn child() -> Option<ProcessHandle> {
    let mut img = [0u8; 512];
    let len = crate::hw::spin_image(&mut img);
    if len == 0 {
        return None;
    }
    sys::process_spawn(&img[..len], 0).ok()
}

fn procmgr_op(r: &mut Rng, ep: Endpoint, scratch: u32) {
    let mut buf = [0u8; procmgr::BUFFER];
    let mut c = procmgr::Client::new(caller(ep), &mut buf);
    let bogus = |r: &mut Rng| match r.below(3) {
        0 => scratch,
        1 => r.next() as u32,
        _ => 0,
    };
    let got = match r.below(11) {
        0 => {
            let any = r.next();
            c.list(r.pick(&[0, 1, 127, 128, u64::MAX, any]))
        }
        1 => c.lookup(name(r)),
        2 => {
            // A real child, adopted, then killed: procmgr must let it go.
            let Some(p) = child() else { return };
            let faults = r.one_in(2);
            let got = c.adopt(CopiedHandle(p.raw()), name(r), faults);
            let _ = p.kill();
            let _ = p.wait();
            got
        }
        3 => c.adopt(CopiedHandle(bogus(r)), name(r), r.one_in(2)),
        4 => {
            let got = c.spawn(name(r), b"", b"");
            if let Ok(procmgr::Reply::Pid { pid }) = got {
                reap(ep, pid);
            }
            got
        }
        5 => c.fork(CopiedHandle(bogus(r))),
        6 => {
            let any = r.next();
            let cookie = r.pick(&[0, u64::from(scratch), u64::MAX, any]);
            c.wait_on(r.next() & 0xffff, CopiedHandle(bogus(r)), cookie)
        }
        7 => c.kill(r.pick(&[0, 1, 2, 3, 1 << 15, u64::MAX])),
        8 => c.try_wait(r.below(8)),
        // forku: taking back waiters we may or may not have recorded.
        9 => {
            let any = r.next();
            c.cancel_wait(r.pick(&[0, u64::from(scratch), u64::MAX, any]))
        }
        _ => c.getpid(),
    };
    match got {
        Ok(procmgr::Reply::Found { ep: h }) => {
            let _ = ipc::handle_close(h.0);
        }
        Ok(_) => {}
        Err(e) => transport("procmgr", &e),
    }
    OPS_DONE.fetch_add(1, Ordering::Relaxed);
}

/// This program's PID, from procmgr.
fn procmgr_pid() -> Result<u64, ()> {
    let mut buf = [0u8; procmgr::BUFFER];
    match procmgr::Client::new(caller(PROCMGR), &mut buf).getpid() {
        Ok(procmgr::Reply::Pid { pid }) => Ok(pid),
        _ => Err(()),
    }
}

/// Kills and reaps the child `pid` a spawn made (it may be a real
/// program: the leak check must not find it running).
fn reap(ep: Endpoint, pid: u64) {
    let mut buf = [0u8; procmgr::BUFFER];
    let mut c = procmgr::Client::new(caller(ep), &mut buf);
    let _ = c.kill(pid);
    for _ in 0..1000 {
        match c.try_wait(pid) {
            Ok(procmgr::Reply::Running {}) => sys::sleep_ns(1_000_000),
            _ => return,
        }
    }
    finding!("servers: procmgr never reaped killed child {pid}");
}

/// Before the run's baseline: one of each request that makes a server
/// build state it keeps (the loader's page tables for its scratch, image
/// and copy windows, for every module size), so the leak check sees only
/// what this phase fails to give back.
pub fn warm_up() {
    let names_ep = Endpoint(abi::bootinfo::names::HANDLE);
    let Ok((ep, _)) = names::lookup(names_ep, loader::NAME) else {
        return;
    };
    let mut buf = [0u8; loader::BUFFER];
    for n in NAMES {
        let mut c = loader::Client::new(caller(ep), &mut buf);
        if let Ok(loader::Reply::Loaded { process, .. }) = c.load(n, b"", b"") {
            drop_handles(&[process.0]);
        }
    }
    if let Ok(mem) = MemoryHandle::create(IMAGE_PAGES * 4096) {
        if mem
            .map(Space::Own, IMAGE_AT, 0, 4096, abi::prot::WRITE)
            .is_ok()
        {
            // SAFETY: our mapping, nothing else uses it.
            let _ = unsafe { Space::Own.unmap(IMAGE_AT, 4096) };
        }
        let mut c = loader::Client::new(caller(ep), &mut buf);
        let _ = c.load_image(CopiedHandle(mem.raw()), IMAGE_PAGES * 4096, b"", b"");
        let _ = mem.close();
    }
    let _ = ipc::handle_close(ep.0);
}

/// The servers this phase finds by name (procmgr is the fourth target,
/// through the endpoint init's adoption gave).
const SERVERS: [&str; 3] = [loader::NAME, console::NAME, console::INPUT_NAME];

/// This program's procmgr endpoint (init adopts it).
const PROCMGR: Endpoint = Endpoint(abi::boot_handles::fuzz::PROCMGR);

/// The phase; false only when it could not stop its scribbler.
pub fn run(seed: u64) -> bool {
    let names_ep = Endpoint(abi::bootinfo::names::HANDLE);
    let mut eps = [(Endpoint(0), 0u64); 4];
    for (i, n) in SERVERS.iter().enumerate() {
        match names::lookup(names_ep, n) {
            Ok(x) => eps[i] = x,
            Err(e) => {
                finding!("servers: cannot look up {n}: {e:?}");
                return true;
            }
        }
    }
    // procmgr's named endpoint (adopt, list of all) is init's alone.
    if let Ok((ep, _)) = names::lookup(names_ep, procmgr::NAME) {
        finding!("servers: the name service gave this program procmgr's named endpoint");
        let _ = ipc::handle_close(ep.0);
    }
    let Ok(pid) = procmgr_pid() else {
        finding!("servers: procmgr does not answer this program (adopted by init?)");
        return true;
    };
    eps[3] = (PROCMGR, pid);
    let Ok(scratch) = ipc::notification_create() else {
        return true;
    };
    let scribbler = util::spawn(scribbler, seed).ok();
    let started = scribbler.is_some();
    let mut r = Rng::new(seed, 0x5e7e);
    for i in 0..OPS * 4 {
        let (ep, _) = eps[(i % 4) as usize];
        match (i % 4, r.below(4)) {
            (_, 0) => {
                let labels: &[u32] = match i % 4 {
                    0 => &[0, 1, 2, 3],
                    1 => &[0, 1, 2, 3, 4],
                    // console.in: never `Read` (2), which waits for input.
                    2 => &[0, 1, 3, 4],
                    _ => &[0, 1, 2, 3, 6, 7, 11, 12, 13, 0xfa17],
                };
                let what = SERVERS
                    .get((i % 4) as usize)
                    .copied()
                    .unwrap_or(procmgr::NAME);
                raw(&mut r, ep, what, labels, scratch.0);
            }
            (0, 1) if started => load_image(&mut r, ep, scratch.0),
            (0, _) => load(&mut r, ep),
            (1, _) => console_op(&mut r, ep, false),
            (2, _) => console_op(&mut r, ep, true),
            _ => procmgr_op(&mut r, ep, scratch.0),
        }
    }
    // Stop the scribbler for good before anything else is mapped there.
    let mut stopped = true;
    if let Some(t) = scribbler {
        SCRIBBLE.store(false, Ordering::Relaxed);
        SCRIBBLE_STOP.store(true, Ordering::Relaxed);
        stopped = t.join().is_ok();
        SCRIBBLE_STOP.store(false, Ordering::Relaxed);
    }
    // Every server is the instance it was (none died) and still answers:
    // procmgr still knows this program by the same PID.
    if procmgr_pid() != Ok(eps[3].1) {
        finding!("servers: procmgr lost this program (it died, or its table did)");
    }
    for (i, n) in SERVERS.iter().enumerate() {
        match names::lookup(names_ep, n) {
            Ok((ep, inst)) => {
                if inst != eps[i].1 {
                    finding!("servers: {n} was restarted during the phase (it died)");
                }
                let _ = ipc::handle_close(ep.0);
            }
            Err(e) => finding!("servers: {n} is gone after the phase: {e:?}"),
        }
    }
    let mut buf = [0u8; loader::BUFFER];
    match loader::Client::new(caller(eps[0].0), &mut buf).load("hello", b"hello\0", b"") {
        Ok(loader::Reply::Loaded { process, .. }) => drop_handles(&[process.0]),
        other => finding!("servers: the loader no longer loads hello: {other:?}"),
    }
    let mut buf = [0u8; procmgr::BUFFER];
    match procmgr::Client::new(caller(eps[3].0), &mut buf).list(0) {
        Ok(procmgr::Reply::Entry { .. }) => {}
        other => finding!("servers: procmgr no longer lists: {other:?}"),
    }
    for (ep, _) in &eps[..3] {
        let _ = ipc::handle_close(ep.0);
    }
    let _ = ipc::handle_close(scratch.0);
    stopped
}
