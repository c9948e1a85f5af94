//! The example kv server (`servers/kv`, issue 10 item 7) as its clients
//! see it: spawned from its boot image (this program embeds the same flat
//! image the boot module is), given its endpoint with `handle_give`, then
//! called through the typed client libipc's `protocol!` generated, and
//! attacked with raw messages straight through the syscall. Every case
//! ends by asking the server to shut down through its owner's handle and
//! checking it exited with 0: its serve loop never crashed.

use crate::note;
use crate::util::{check, expect, ok, TestResult};
use abi::status::{self, Status};
use abi::{Error, Sysnum};
use kv::{Client, Reply, CHANGED, MAX_ENTRIES, MAX_KEY, MAX_VALUE};
use libipc::ipc::{
    self, endpoint_create, handle_close, handle_dup, notification_create, rights, wait, Endpoint,
    IpcRegs,
};
use libipc::server::Caller;
use libipc::sys;
use libipc::task::ProcessHandle;
use libipc::wire::{CallError, CopiedHandle, WireError, ERROR_LABEL};

/// The kv server's flat boot image (apps/tests/build.rs; empty if this
/// program was built outside the workspace build).
static KV_IMAGE: &[u8] = include_bytes!(env!("MICA_KV_IMAGE_PATH"));

/// Long enough never to expire in a passing run: a failure shows as
/// `TimedOut`, not as a hang.
const GUARD_US: Option<u32> = Some(3_000_000);

/// The badge the test's client handle carries (the owner's is unbadged).
const CLIENT_BADGE: u64 = 7;

/// A running kv server: its pid and the owner's (unbadged, every right)
/// endpoint handle.
struct Server {
    pid: ProcessHandle,
    ep: Endpoint,
}

/// Spawns the server and gives it the receive side of a new endpoint.
fn start() -> Result<Server, &'static str> {
    check(
        !KV_IMAGE.is_empty(),
        "the kv image is not embedded (build through the workspace build.rs)",
    )?;
    let ep = ok(endpoint_create(), "endpoint_create")?;
    let pid = match sys::process_spawn(KV_IMAGE, 0) {
        Ok(pid) => pid,
        Err(e) => {
            let _ = handle_close(ep.0);
            note!("process_spawn(kv): {e}");
            return Err("cannot spawn the kv server");
        }
    };
    if let Err(e) = ipc::handle_give(pid, ep.0, rights::RECV) {
        // The server gives up waiting for it and exits.
        note!("handle_give: {e}");
        let _ = wait_process(pid);
        let _ = handle_close(ep.0);
        return Err("cannot give the kv server its endpoint");
    }
    Ok(Server { pid, ep })
}

/// Waits for child `pid` (the one place this file does: `process_wait`'s
/// argument is about to become a handle).
fn wait_process(pid: ProcessHandle) -> Result<Status, &'static str> {
    ok(pid.wait(), "process_wait").map(status::decode)
}

impl Server {
    /// A SEND-only handle with `badge`.
    fn client_handle(&self, badge: u64) -> Result<Endpoint, &'static str> {
        ok(handle_dup(self.ep.0, rights::SEND, badge), "handle_dup").map(Endpoint)
    }

    /// Asks the server to end through the owner's handle; it must exit 0.
    /// If it does not answer, it is left running (waiting would hang).
    fn stop(self) -> TestResult {
        let mut buf = [0u8; 64];
        let mut owner = Client::new(Caller::new(self.ep, GUARD_US), &mut buf);
        let r = owner.shutdown();
        if r != Ok(Reply::Bye {}) {
            note!("shutdown: {r:?}");
            return Err("the kv server did not shut down");
        }
        let st = wait_process(self.pid)?;
        let _ = handle_close(self.ep.0);
        expect(st, Status::Exited(0), "the kv server's exit status")
    }
}

/// Runs `body` against a fresh server, then stops it (the body's failure
/// wins over the stop's).
fn with_server(body: impl FnOnce(&Server) -> TestResult) -> TestResult {
    let srv = start()?;
    let r = body(&srv);
    let stopped = srv.stop();
    r.and(stopped)
}

/// Every request through the typed client: put (new, replace), get,
/// delete, count, full and too long (clear errors that change nothing),
/// watch (a notification copied in the message, signalled on changes),
/// shutdown refused through a badged handle, and a reply larger than the
/// client's buffer (an error reply, and the server goes on).
pub fn kv_server_answers_every_request() -> TestResult {
    with_server(|srv| {
        let h = srv.client_handle(CLIENT_BADGE)?;
        let mut buf = [0u8; 1024];
        let mut c = Client::new(Caller::new(h, GUARD_US), &mut buf);
        let count = |n: usize| Reply::Count {
            entries: n as u64,
            capacity: MAX_ENTRIES as u64,
        };
        expect(c.count(), Ok(count(0)), "count of an empty store")?;
        expect(
            c.put(b"a", b"1"),
            Ok(Reply::Stored { replaced: false }),
            "put",
        )?;
        expect(
            c.put(b"a", b"22"),
            Ok(Reply::Stored { replaced: true }),
            "put replacing",
        )?;
        expect(c.get(b"a"), Ok(Reply::Value { value: b"22" }), "get")?;
        expect(c.get(b"b"), Ok(Reply::NotFound {}), "get of a missing key")?;
        expect(c.delete(b"a"), Ok(Reply::Deleted {}), "delete")?;
        expect(c.delete(b"a"), Ok(Reply::NotFound {}), "delete again")?;
        // Watch: the server gets a copy of our notification (we keep
        // ours: the wait below would fail with BadHandle had it moved)
        // and signals it on change.
        let ntf = ok(notification_create(), "notification_create")?;
        expect(
            c.watch(CopiedHandle(ntf.0)),
            Ok(Reply::Watching { replaced: false }),
            "watch",
        )?;
        expect(
            c.put(b"w", b"x"),
            Ok(Reply::Stored { replaced: false }),
            "put while watched",
        )?;
        let bits = wait(ntf, GUARD_US);
        let _ = handle_close(ntf.0);
        expect(bits, Ok(CHANGED), "the watcher's notification")?;
        // Full: every slot taken (one is "w"), then one more.
        let big = [0x5a; MAX_VALUE];
        for i in 1..MAX_ENTRIES as u8 {
            expect(
                c.put(&[i], &big),
                Ok(Reply::Stored { replaced: false }),
                "filling the store",
            )?;
        }
        expect(
            c.put(b"one more", b""),
            Ok(Reply::Full {
                capacity: MAX_ENTRIES as u64,
            }),
            "put into a full store",
        )?;
        let too_long = Ok(Reply::TooLong {
            max_key: MAX_KEY as u64,
            max_value: MAX_VALUE as u64,
        });
        expect(c.put(&[1; MAX_KEY + 1], b""), too_long, "a too-long key")?;
        expect(
            c.put(b"k", &[1; MAX_VALUE + 1]),
            too_long,
            "a too-long value",
        )?;
        expect(c.count(), Ok(count(MAX_ENTRIES)), "count of a full store")?;
        expect(
            c.get(&[3]),
            Ok(Reply::Value { value: &big }),
            "a 512-byte value",
        )?;
        expect(
            c.shutdown(),
            Ok(Reply::Denied {}),
            "shutdown through a badged handle",
        )?;
        // A reply larger than the caller's receive buffer: an error reply.
        let mut small = [0u8; 64];
        let mut tiny = Client::new(Caller::new(h, GUARD_US), &mut small);
        expect(
            tiny.get(&[3]),
            Err(CallError::Refused(WireError::BufferFull)),
            "a reply larger than the caller's buffer",
        )?;
        expect(tiny.count(), Ok(count(MAX_ENTRIES)), "count after that")?;
        let _ = handle_close(h.0);
        Ok(())
    })
}

/// One raw call: `label`, `words`, `buf[..len]` and `handles` (moved)
/// straight through the syscall; the reply's label and words.
fn raw_call(
    h: Endpoint,
    label: u32,
    words: [u64; 6],
    buf: &mut [u8],
    len: usize,
    handles: &[u32],
) -> Result<(u32, [u64; 6]), Error> {
    let mut r = IpcRegs {
        rdi: h.0 as u64,
        rsi: ipc::info(label, handles.len() as u64, 0, len as u64, true),
        w: words,
        r14: buf.as_mut_ptr() as u64,
        r15: ipc::spec(buf.len() as u32, GUARD_US.unwrap_or(0)),
        handles: ipc::pack(handles),
    };
    // SAFETY: R14/R15 name `buf` (capacity = its length): the kernel writes
    // only there. A `len` past `buf` makes it read our other memory (or
    // refuse), never write it.
    abi::decode_result(unsafe { ipc::ipc_syscall(Sysnum::IpcCall, &mut r) })?;
    Ok((r.rsi as u32, r.w))
}

/// Expects an error reply with `e`.
fn refused(r: Result<(u32, [u64; 6]), Error>, e: WireError, what: &'static str) -> TestResult {
    match r {
        Ok((ERROR_LABEL, w)) if w[0] == e.code() => Ok(()),
        other => {
            note!("{what}: got {other:?}, expected an error reply {e:?}");
            Err(what)
        }
    }
}

/// The kv protocol's labels (`kv::Request`), for raw messages.
const PUT: u32 = 1;
const COUNT: u32 = 4;
const WATCH: u32 = 6;

/// Hostile messages sent raw: an unknown label, a truncated buffer, length
/// words near `u64::MAX`, a watch without its handle, extra handles (400
/// of them: more than the server's table holds), a non-zero unused word, a buffer above the server's capacity and above
/// 64 KiB, then 300 random messages. Each gets an error reply (or the
/// kernel refuses it on our side); the server answers correctly after each
/// and exits 0 at the end.
pub fn kv_server_survives_hostile_messages() -> TestResult {
    with_server(|srv| {
        let h = srv.client_handle(CLIENT_BADGE)?;
        let mut cbuf = [0u8; 1024];
        let alive = |cbuf: &mut [u8], n: u64| -> TestResult {
            let mut c = Client::new(Caller::new(h, GUARD_US), cbuf);
            let r = c.count();
            expect(
                r,
                Ok(Reply::Count {
                    entries: n,
                    capacity: MAX_ENTRIES as u64,
                }),
                "the server's answer after a hostile message",
            )
        };
        let mut buf = [0u8; 2048];
        buf[..6].copy_from_slice(b"keyval");
        let z = [0u64; 6];
        refused(
            raw_call(h, 99, z, &mut buf, 0, &[]),
            WireError::UnknownOp,
            "unknown label",
        )?;
        refused(
            raw_call(h, ERROR_LABEL, z, &mut buf, 0, &[]),
            WireError::UnknownOp,
            "the error label as a request",
        )?;
        alive(&mut cbuf, 0)?;
        refused(
            raw_call(h, PUT, [3, 10, 0, 0, 0, 0], &mut buf, 6, &[]),
            WireError::BadLength,
            "a value longer than the bytes sent",
        )?;
        refused(
            raw_call(h, PUT, [u64::MAX, 1, 0, 0, 0, 0], &mut buf, 6, &[]),
            WireError::BadLength,
            "a key length of u64::MAX",
        )?;
        refused(
            raw_call(h, PUT, [1, u64::MAX, 0, 0, 0, 0], &mut buf, 6, &[]),
            WireError::BadLength,
            "lengths that wrap",
        )?;
        refused(
            raw_call(h, PUT, [3, 2, 0, 0, 0, 0], &mut buf, 6, &[]),
            WireError::Trailing,
            "bytes beyond the fields",
        )?;
        alive(&mut cbuf, 0)?;
        refused(
            raw_call(h, WATCH, z, &mut buf, 0, &[]),
            WireError::MissingHandle,
            "a watch without its handle",
        )?;
        let ntf = ok(notification_create(), "notification_create")?;
        let extra = ok(
            handle_dup(ntf.0, rights::SIGNAL | rights::TRANSFER, 0),
            "dup",
        )?;
        refused(
            raw_call(h, COUNT, z, &mut buf, 0, &[extra]),
            WireError::Trailing,
            "a handle nobody asked for",
        )?;
        // Nor can unasked handles fill the server's table (256 entries):
        // every refused message's handles are closed.
        for _ in 0..100 {
            let mut four = [0u32; 4];
            for x in four.iter_mut() {
                *x = ok(
                    handle_dup(ntf.0, rights::SIGNAL | rights::TRANSFER, 0),
                    "dup",
                )?;
            }
            refused(
                raw_call(h, COUNT, z, &mut buf, 0, &four),
                WireError::Trailing,
                "four handles nobody asked for",
            )?;
        }
        let mut c = Client::new(Caller::new(h, GUARD_US), &mut cbuf);
        expect(
            c.watch(CopiedHandle(ntf.0)),
            Ok(Reply::Watching { replaced: false }),
            "a watch after 400 unasked handles",
        )?;
        let _ = handle_close(ntf.0);
        refused(
            raw_call(h, COUNT, [0, 0, 0, 0, 0, 9], &mut buf, 0, &[]),
            WireError::Trailing,
            "a non-zero unused word",
        )?;
        alive(&mut cbuf, 0)?;
        // Above the server's 1 KiB receive buffer: the kernel refuses it
        // (our error), the server does not see it.
        let r = raw_call(h, PUT, [1, 1500, 0, 0, 0, 0], &mut buf, 1501, &[]);
        if r.is_ok() {
            note!("2 KiB to a 1 KiB receiver: {r:?}");
            return Err("a message larger than the server's buffer was delivered");
        }
        // Above 64 KiB: refused before anything is read.
        let r = raw_call(h, PUT, z, &mut buf, 70_000, &[]);
        if r != Err(Error::InvalidArgument) {
            note!("70000 bytes: {r:?}");
            return Err("a buffer above 64 KiB was not refused");
        }
        alive(&mut cbuf, 0)?;
        // Random labels (the kv ops and beyond), words and bytes.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut stored = 0;
        for _ in 0..300 {
            let label = (next() % 9) as u32;
            let mut words = [0u64; 6];
            for w in words.iter_mut() {
                *w = match next() % 4 {
                    0 => 0,
                    1 => next() % 8,
                    2 => next() % 1100,
                    _ => next(),
                };
            }
            let len = (next() % 1024) as usize;
            for b in buf[..len].iter_mut() {
                *b = next() as u8;
            }
            match raw_call(h, label, words, &mut buf, len, &[]) {
                // A random put that happened to decode and stored a pair
                // (or a delete that removed one).
                Ok((1, [0, ..])) => stored += 1,
                Ok((3, _)) => stored -= 1,
                Ok(_) => {}
                Err(e) => {
                    note!("random message {label:#x} {words:x?} ({len} bytes): {e}");
                    return Err("a random message failed the call itself");
                }
            }
        }
        alive(&mut cbuf, stored)?;
        let _ = handle_close(h.0);
        Ok(())
    })
}
