//! break25l (session 25): attacks on lookup3's fast IPC decode and lookup
//! (`syscall/ipc.rs`): the register-only case decoded apart from the rest
//! (`fast_regs`: RSI with nothing above its label, R15's capacity at most
//! `MAX_BUFFER`), and the fast call's claim made under the handle-table lock
//! from the table's own endpoint entry (no endpoint reference taken).
//!
//! [`decode_refusals_match_the_abi`]: a table of RSI/R14/R15 edge values
//! (capacity `MAX_BUFFER` and one more, the wrap of R15's low half into
//! its upper one, the timeout bit, every reserved bit, the notified bit,
//! counts and copy masks, the receive buffer's range: null, kernel,
//! non-canonical, wrapping, straddling the user end, capacity 0 with any
//! address) on `ipc_call`, `ipc_reply_recv` and `ipc_recv`, each through
//! three handles that refuse at the lookup (a stale number, a
//! notification, an endpoint without the right): every refusal's code is
//! the one `kcore::ipc::msg`'s documented decode gives, in its order
//! (message, receive spec, buffer range, handle), and no case blocks.
//!
//! [`handle_churn_races_fast_calls`]: fast calls on CPU 0 through a send
//! handle that another CPU keeps replacing (dup, then close of the old
//! number), moving (a handle transfer through a second endpoint, which
//! takes the entry out of the table and installs it under a new number)
//! and whose caller it kills now and then, while copies of the receive
//! handle are given to a spinning child process (`handle_give`) that is
//! killed every 100 rounds (its table's teardown closes them): the fast
//! call's borrowed entry
//! must never be used after its close (each call ends `Ok` with the echo,
//! or `BadHandle` for a number already gone), no lock order deadlocks
//! (table -> endpoint on the fast call; the transfer's table locks), and
//! threads and heap settle. `Ok` with a note on one CPU.

use crate::attack2::echo_server;
use crate::break22::counted;
use crate::break23p::settled_since;
use crate::lifecycle::info;
use crate::note;
use crate::util::{self, check, ok, TestResult};
use abi::status::Status;
use abi::{decode_result, Error, Sysnum};
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::ipc::{self, Endpoint, IpcRegs, Message};
use libipc::sys;

/// `MAX_BUFFER` (kcore::ipc::msg).
const MAX: u64 = 64 * 1024;
/// MsgInfo fields (kcore::ipc::msg's layout).
const COUNT: u64 = 1 << 32;
const COPY: u64 = 1 << 35;
const TIMEOUT: u64 = 1 << 39;
const LEN: u64 = 1 << 40;
const NOTIFIED: u64 = 1 << 57;
const RESERVED0: u64 = 1 << 58;
/// A user address with room for `MAX` bytes (never written: every case is
/// refused before any copy).
const USER_OK: u64 = 0x4000_0000;
const USER_END: u64 = abi::layout::USER_END;

/// What the decode must say before the handle is looked at.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Want {
    /// Refused with this code whatever the handle.
    Err(Error),
    /// Decoded: the handle's own refusal follows.
    Lookup,
}

/// One row: RSI, R14, R15, and the verdict of the documented decode.
struct Row {
    rsi: u64,
    r14: u64,
    r15: u64,
    want: Want,
}

const fn row(rsi: u64, r14: u64, r15: u64, want: Want) -> Row {
    Row {
        rsi,
        r14,
        r15,
        want,
    }
}

const INVAL: Want = Want::Err(Error::InvalidArgument);
const BADADDR: Want = Want::Err(Error::BadAddress);
const LOOKUP: Want = Want::Lookup;

/// The table (see the module docs).
const ROWS: &[Row] = &[
    // The fast case: any label, capacity 0..=MAX, R15's upper half ignored
    // without the timeout bit.
    row(0, 0, 0, LOOKUP),
    row(0xffff_ffff, 0, 0, LOOKUP),
    row(7, USER_OK, MAX, LOOKUP),
    row(7, USER_OK, MAX + 1, INVAL),
    row(7, USER_OK, 0xffff_ffff, INVAL),
    row(7, USER_OK, 1 << 32, LOOKUP),
    row(7, USER_OK, (1 << 32) | MAX, LOOKUP),
    row(7, USER_OK, (1 << 32) | (MAX + 1), INVAL),
    row(7, USER_OK, u64::MAX, INVAL),
    row(7, USER_OK, 0xffff_ffff_0000_0000, LOOKUP),
    // The timeout bit: R15's upper half is the timeout, the capacity the same.
    row(TIMEOUT, USER_OK, u64::MAX << 32, LOOKUP),
    row(TIMEOUT | 3, USER_OK, (5 << 32) | MAX, LOOKUP),
    row(TIMEOUT | 3, USER_OK, (5 << 32) | (MAX + 1), INVAL),
    // Reserved and output-only bits, whatever R15 and R14 say.
    row(RESERVED0, 0, 0, INVAL),
    row(1 << 63, 0, 0, INVAL),
    row(NOTIFIED, 0, 0, INVAL),
    row(RESERVED0, 1, MAX + 1, INVAL),
    row(NOTIFIED | 9, 0xffff_8000_0000_0000, 8, INVAL),
    // Counts and copy masks.
    row((4 * COUNT) | (0xf * COPY), 0, 0, LOOKUP),
    row(5 * COUNT, 0, 0, INVAL),
    row(7 * COUNT, 0, 0, INVAL),
    row(COPY, 0, 0, INVAL),
    row((2 * COUNT) | (4 * COPY), 0, 0, INVAL),
    // Buffer lengths: MAX sent is fine (its range is checked at the copy,
    // after the lookup); one more is not, before the receive spec.
    row(MAX * LEN, 0, 0, LOOKUP),
    row((MAX + 1) * LEN, 0, 0, INVAL),
    row(0x1_ffff * LEN, USER_OK, MAX + 1, INVAL),
    // The receive buffer's range (capacity > 0 only), after the decode.
    row(1, 0, 8, BADADDR),
    row(1, 0xfff0, 0x20, BADADDR),
    row(1, 0xffff_8000_0000_0000, 8, BADADDR),
    row(1, 0xffff_ffff_8000_0000, 1, BADADDR),
    row(1, USER_END, 1, BADADDR),
    row(1, 0x0000_8000_0000_1000, 8, BADADDR),
    row(1, USER_END - 8, 16, BADADDR),
    row(1, USER_END - MAX, MAX, LOOKUP),
    row(1, u64::MAX - 8, 64, BADADDR),
    row(1, u64::MAX, MAX, BADADDR),
    row(TIMEOUT | 1, u64::MAX, (1 << 32) | 8, BADADDR),
    row(LEN, 0xffff_8000_0000_0000, 8, BADADDR),
    // Capacity 0: R14 is not looked at.
    row(1, 0, 0, LOOKUP),
    row(1, 0xffff_8000_0000_0000, 0, LOOKUP),
    row(1, u64::MAX, 0xffff_ffff_0000_0000, LOOKUP),
    row(1, 0x0000_8000_0000_0000, 1 << 32, LOOKUP),
];

/// One raw IPC syscall `n` with RDI = `h` and the row's registers.
fn raw(n: Sysnum, h: u64, r: &Row) -> Result<u64, Error> {
    let mut regs = IpcRegs {
        rdi: h,
        rsi: r.rsi,
        w: [0x25; 6],
        r14: r.r14,
        r15: r.r15,
        // Handle numbers that name nothing: only the decode reads the count.
        handles: [0xffff_fff0_ffff_fff1, 0xffff_fff2_ffff_fff3],
    };
    // SAFETY: every row is refused before anything is copied (each handle
    // refuses at the lookup, which comes before any copy); no user memory
    // is written.
    decode_result(unsafe { ipc::ipc_syscall(n, &mut regs) })
}

/// Case: see the module docs.
pub fn decode_refusals_match_the_abi() -> TestResult {
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let ntf = ok(ipc::notification_create(), "notification_create")?;
    let send_only = ok(ipc::handle_dup(ep.0, abi::rights::SEND, 0), "dup send")?;
    let recv_only = ok(ipc::handle_dup(ep.0, abi::rights::RECV, 0), "dup recv")?;
    let stale = ok(ipc::handle_dup(ep.0, abi::rights::SEND, 0), "dup")?;
    ok(ipc::handle_close(stale), "close")?;
    let r = run_rows(ntf.0, send_only, recv_only, stale);
    for h in [ntf.0, send_only, recv_only, ep.0] {
        let _ = ipc::handle_close(h);
    }
    r
}

fn run_rows(ntf: u32, send_only: u32, recv_only: u32, stale: u32) -> TestResult {
    let ops = [
        (Sysnum::IpcCall, "call", recv_only),
        (Sysnum::IpcReplyRecv, "reply_recv", send_only),
        (Sysnum::IpcRecv, "recv", send_only),
    ];
    // A stale number, the same number with upper bits set, a wrong kind.
    let handles = |wrong_right: u32| {
        [
            (stale as u64, Error::BadHandle),
            ((1 << 32) | wrong_right as u64, Error::BadHandle),
            (ntf as u64, Error::WrongType),
            (wrong_right as u64, Error::PermissionDenied),
        ]
    };
    let mut bad = 0;
    for (n, name, wrong_right) in ops {
        for (i, r) in ROWS.iter().enumerate() {
            for (h, lookup_err) in handles(wrong_right) {
                let want = match r.want {
                    Want::Err(e) => e,
                    Want::Lookup => lookup_err,
                };
                let got = raw(n, h, r);
                if got != Err(want) {
                    bad += 1;
                    if bad <= 8 {
                        note!(
                            "{name} row {i} (rsi {:#x} r14 {:#x} r15 {:#x}) handle {h:#x}: {got:?}, expected {want:?}",
                            r.rsi,
                            r.r14,
                            r.r15
                        );
                    }
                }
            }
        }
    }
    // `recv` sends nothing: a label, a handle count or a buffer length is
    // refused after the lookup (through a handle that may receive), in
    // either decode; it never blocks.
    for (i, r) in ROWS.iter().enumerate() {
        let sends = r.rsi as u32 != 0 || (r.rsi >> 32) & 7 != 0 || (r.rsi >> 40) & 0x1_ffff != 0;
        if r.want != Want::Lookup || !sends {
            continue;
        }
        let got = raw(Sysnum::IpcRecv, recv_only as u64, r);
        if got != Err(Error::InvalidArgument) {
            bad += 1;
            note!(
                "recv row {i} (rsi {:#x}): {got:?}, expected InvalidArgument",
                r.rsi
            );
        }
    }
    check(
        bad == 0,
        "an IPC refusal differs from the documented decode",
    )
}

/// The send handle number the churn keeps replacing ([`churn_client`]).
static CUR: AtomicU64 = AtomicU64::new(0);
/// Set when the clients must stop.
static STOP: AtomicU64 = AtomicU64::new(0);
/// Echoed calls, and `BadHandle`s, over all clients.
static ECHOED: AtomicU64 = AtomicU64::new(0);
static STALE: AtomicU64 = AtomicU64::new(0);
/// The first other result a client saw (code | 1 << 8; 0: none).
static WRONG: AtomicU64 = AtomicU64::new(0);

/// A client on CPU 0: fast calls through [`CUR`] until [`STOP`] or its kill.
extern "C" fn churn_client(_: u64) -> ! {
    let _ = sys::set_affinity(0);
    let mut n = 0u64;
    while STOP.load(Ordering::SeqCst) == 0 {
        let ep = Endpoint(CUR.load(Ordering::SeqCst) as u32);
        let m = Message {
            label: 1,
            words: [n, 0, 0, 0, 0, 0],
        };
        match ipc::call(ep, &m, None) {
            Ok(r) if r.words[0] == n + 1 => {
                ECHOED.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {
                let _ = WRONG.compare_exchange(0, 0x1ff, Ordering::SeqCst, Ordering::SeqCst);
            }
            Err(Error::BadHandle) => {
                STALE.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let _ = WRONG.compare_exchange(
                    0,
                    1 << 8 | e as u64,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
            }
        }
        n += 1;
    }
    sys::thread_exit(0)
}

/// Receives a moved handle on `arg` (its number in this table, new) and
/// publishes it as [`CUR`]; answers each move with an empty reply.
extern "C" fn mover(arg: u64) -> ! {
    loop {
        let mut r = IpcRegs {
            rdi: arg,
            ..IpcRegs::default()
        };
        // SAFETY: no buffer (capacity 0).
        if decode_result(unsafe { ipc::ipc_syscall(Sysnum::IpcRecv, &mut r) }).is_err() {
            break;
        }
        let got = r.handles[0] as u32;
        if (r.rsi >> 32) & 7 == 1 {
            CUR.store(got as u64, Ordering::SeqCst);
        }
        let mut a = IpcRegs::default();
        // SAFETY: as above.
        let _ = unsafe { ipc::ipc_syscall(Sysnum::IpcReply, &mut a) };
        if r.rsi as u32 == 0xdead {
            break;
        }
    }
    sys::thread_exit(0)
}

/// Moves handle `h` through `via` to [`mover`] (which publishes its new
/// number).
fn move_handle(via: Endpoint, h: u32) -> Result<u64, Error> {
    let mut r = IpcRegs {
        rdi: via.0 as u64,
        rsi: 1 | COUNT,
        handles: [h as u64, 0],
        ..IpcRegs::default()
    };
    // SAFETY: no buffer.
    decode_result(unsafe { ipc::ipc_syscall(Sysnum::IpcCall, &mut r) })
}

/// The churned handle's rights: it is moved too.
const SEND_MOVE: u32 = abi::rights::SEND | abi::rights::TRANSFER;

/// A child's whole text: `jmp $` (it only holds handles given to it).
const SPIN: &[u8] = &[0xeb, 0xfe];

/// Churn rounds.
const ROUNDS: u64 = 300;

/// Case: see the module docs.
pub fn handle_churn_races_fast_calls() -> TestResult {
    let cpus = sys::cpu_count();
    if cpus < 2 {
        note!("one CPU: no other CPU to close or move a handle from mid-call");
        return Ok(());
    }
    let s0 = info()?;
    let fast0 = counted(1);
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let via = ok(ipc::endpoint_create(), "endpoint_create (mover)")?;
    let first = ok(ipc::handle_dup(ep.0, SEND_MOVE, 0), "dup send")?;
    CUR.store(first as u64, Ordering::SeqCst);
    STOP.store(0, Ordering::SeqCst);
    ECHOED.store(0, Ordering::SeqCst);
    STALE.store(0, Ordering::SeqCst);
    WRONG.store(0, Ordering::SeqCst);
    let server = util::spawn(echo_server, ep.0 as u64)?;
    let mv = util::spawn(mover, via.0 as u64)?;
    let _ = sys::set_affinity(cpus - 1);
    let mut client = Some(util::spawn(churn_client, 0)?);
    let mut child = Some(util::spawn_code(SPIN, 0)?);
    let mut failed = None;
    for round in 0..ROUNDS {
        if let Some(pid) = child {
            // A copy of the receive handle into the child (counted under
            // our table lock: table -> endpoint, as the fast call).
            match ipc::handle_give(pid, ep.0, abi::rights::SEND | abi::rights::RECV) {
                Ok(_) | Err(Error::NoMemory) => {}
                Err(e) => {
                    note!("round {round}: handle_give: {e:?}");
                    failed = Some("a handle_give to the spinning child failed");
                    break;
                }
            }
        }
        if round % 100 == 99 {
            // Its teardown closes every copy (under its table lock, each
            // taking the endpoint's) while the fast calls go on.
            if let Some(pid) = child.take() {
                ok(pid.kill(), "process_kill the child")?;
                let _ = util::wait_status(pid)?;
            }
            if round + 1 < ROUNDS {
                child = Some(util::spawn_code(SPIN, 0)?);
            }
        }
        match round % 3 {
            // A new number, the old one closed.
            0 | 1 => {
                let new = ok(ipc::handle_dup(ep.0, SEND_MOVE, 0), "dup send")?;
                let old = CUR.swap(new as u64, Ordering::SeqCst) as u32;
                let _ = ipc::handle_close(old);
            }
            // Moved: out of the table, back under another number.
            _ => {
                let h = CUR.load(Ordering::SeqCst) as u32;
                if let Err(e) = move_handle(via, h) {
                    note!("round {round}: move: {e:?}");
                    failed = Some("a handle move failed");
                    break;
                }
            }
        }
        if round % 37 == 36 {
            // The caller killed mid-call, and another started.
            if let Some(c) = client.take() {
                ok(c.handle().kill(), "thread_kill the client")?;
                let st = c.join()?;
                if st != Status::Exited(-1) {
                    note!("round {round}: killed client {st:?}");
                    failed = Some("a killed fast client ended wrongly");
                    break;
                }
            }
            client = Some(util::spawn(churn_client, 0)?);
        }
        sys::sleep_ns(20_000 + (round * 7919) % 13 * 10_000);
    }
    STOP.store(1, Ordering::SeqCst);
    if let Some(pid) = child {
        ok(pid.kill(), "process_kill the child")?;
        let _ = util::wait_status(pid)?;
    }
    if let Some(c) = client {
        util::expect_ok(c.join()?)?;
    }
    // The server still answers through a fresh handle.
    let h = ok(ipc::handle_dup(ep.0, abi::rights::SEND, 0), "dup send")?;
    let m = Message {
        label: 1,
        words: [41, 0, 0, 0, 0, 0],
    };
    let answered = ipc::call(Endpoint(h), &m, Some(2_000_000));
    let _ = ipc::handle_close(h);
    let _ = ipc::handle_close(CUR.load(Ordering::SeqCst) as u32);
    // The mover's last message ends it.
    let mut stop = IpcRegs {
        rdi: via.0 as u64,
        rsi: 0xdead,
        ..IpcRegs::default()
    };
    // SAFETY: no buffer.
    let _ = unsafe { ipc::ipc_syscall(Sysnum::IpcCall, &mut stop) };
    util::expect_ok(mv.join()?)?;
    ok(ipc::handle_close(ep.0), "close the receive handle")?;
    let _ = server.join()?;
    let _ = ipc::handle_close(via.0);
    let _ = sys::set_affinity(u64::MAX);
    if let Some(f) = failed {
        return Err(f);
    }
    let wrong = WRONG.load(Ordering::SeqCst);
    if wrong != 0 {
        note!(
            "client result {:#x} ({} echoed, {} stale)",
            wrong,
            ECHOED.load(Ordering::SeqCst),
            STALE.load(Ordering::SeqCst)
        );
        return Err("a fast call through a churned handle ended other than Ok or BadHandle");
    }
    match answered {
        Ok(r) if r.words[0] == 42 => {}
        other => {
            note!("the last call: {other:?}");
            return Err("the server stopped answering after the churn");
        }
    }
    check(
        ECHOED.load(Ordering::SeqCst) > 0 && counted(1) > fast0,
        "no fast call was echoed (the race was not run)",
    )?;
    settled_since(&s0, 1024, "threads or endpoints left after the churn")
}
