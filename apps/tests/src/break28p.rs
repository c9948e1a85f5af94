//! break28p (session 28): attacks on cut28p (the partner's wait record
//! read in place, `ipc/fastpath.rs`) and cut28l (the lookup's folded
//! live and kind test, `buffer_ok`, `ntf` on the endpoint lookup).
//!
//! - [`bound_receiver_fast_call_frees_the_endpoint`]: a fast call into a
//!   receiver bound to a notification (`give_call`'s uncommon branch,
//!   `EndpointBound`, taken after the reply word's `accept`): the record's
//!   endpoint reference is released, so closing the endpoint's one handle
//!   frees it while the server is still alive. Seen failing with that
//!   branch's `drop_cold(old)` made a `forget` (the record's references
//!   leaked: the endpoint stays allocated in all 4 rounds).
//! - [`receive_buffers_on_every_decode`]: the receive buffer's edges
//!   (cut28l's `buffer_ok`) on all six decodes (`call`, `recv`,
//!   `reply_recv`, each fast and full), with capacities 0, 1, 65536 and
//!   65537, `USER_END` exactly, wrap-around, the kernel half and a
//!   non-canonical address. Seen failing with `fast_regs` letting a
//!   capacity of `MAX_BUFFER + 1` through (65537 then accepted, and
//!   `buffer_ok`'s bound exceeded, on the fast decodes only).
//! - [`stale_notification_numbers_racing_reuse`]: a notification number
//!   signalled and waited on (polling) while another thread closes it
//!   and fills its slot again, with a notification and with an endpoint:
//!   only `Ok`, `WouldBlock` or `BadHandle`, never `WrongType` (the
//!   endpoint that now holds the slot). Seen failing with `find_reg_if`
//!   comparing only the slot bits of the number.
//! - [`fast_call_into_a_bound_receiver_leaves_no_registration`]: after a
//!   fast call into its bound receive, the server waits on another
//!   notification; a signal of its bound one must stay pending for its
//!   next bound receive, not end that unrelated wait. Seen failing with
//!   `give_call`'s `unregister_bound` skipped (the N2 wait ended with the
//!   bound notification's bits, the bits lost), which
//!   `break27p_fast_calls_into_a_bound_receiver_carry_the_badge` passes.

use crate::attack2::fast_calls_cpu0;
use crate::note;
use crate::util::{self, check, ok, TestResult};
use abi::layout::{USER_END, USER_MIN};
use abi::{decode_result, Error, Sysnum};
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::ipc::{self, Endpoint, Message, Notification, Received};
use libipc::sys;

static EP: AtomicU64 = AtomicU64::new(0);
static NTF: AtomicU64 = AtomicU64::new(0);
static STEP: AtomicU64 = AtomicU64::new(0);
static RELEASE: AtomicU64 = AtomicU64::new(0);

/// On CPU 0: binds the notification [`NTF`] names, parks until told an
/// endpoint (step 2), receives one call on it (a bound receive), answers
/// with a plain `reply`, unbinds (step 3), then parks until released.
extern "C" fn bound_server(_: u64) -> ! {
    let _ = sys::set_affinity(0);
    let n = Notification(NTF.load(Ordering::SeqCst) as u32);
    let bound = ipc::bind(Some(n)).is_ok();
    STEP.store(if bound { 1 } else { 9 }, Ordering::SeqCst);
    while STEP.load(Ordering::SeqCst) == 1 {
        sys::sleep_ns(200_000);
    }
    let ep = Endpoint(EP.load(Ordering::SeqCst) as u32);
    if let Ok(Received::Msg { msg, .. }) = ipc::recv(ep, None) {
        let _ = ipc::reply(&Message {
            label: 0,
            words: [msg.words[0] + 1, 0, 0, 0, 0, 0],
        });
    }
    let _ = ipc::bind(None);
    STEP.store(3, Ordering::SeqCst);
    while RELEASE.load(Ordering::SeqCst) == 0 {
        sys::sleep_ns(200_000);
    }
    sys::thread_exit(0)
}

/// One round: a fresh bound server and endpoint, one call, the endpoint's
/// handle closed. `Ok(None)`: the heap came back to its base.
fn bound_round(
    servers: &mut heapless::Vec<util::Thread, 4>,
) -> Result<Option<(u64, u64, bool)>, &'static str> {
    STEP.store(0, Ordering::SeqCst);
    let w = util::spawn(bound_server, 0)?;
    let _ = servers.push(w);
    while STEP.load(Ordering::SeqCst) == 0 {
        sys::sleep_ns(200_000);
    }
    check(STEP.load(Ordering::SeqCst) == 1, "bind failed")?;
    // The server reaches its (bound) receive, gets the call, unbinds.
    let (heap, base, held, fast) = crate::attack2::call_once_then_close(&STEP, &EP)?;
    Ok(if held && fast {
        None
    } else {
        Some((heap, base, fast))
    })
}

/// An endpoint whose last message went through the fast path into a
/// *bound* receiver (`give_call`'s uncommon record, `EndpointBound`) is
/// freed once its handle is closed, its receiver alive and parked. Up to
/// 4 rounds (the heap figure is the whole kernel's: see attack2's case);
/// a round counts only if its call was fast.
pub fn bound_receiver_fast_call_frees_the_endpoint() -> TestResult {
    check(util::pin0(), "set_affinity(0)")?;
    RELEASE.store(0, Ordering::SeqCst);
    let n = ok(ipc::notification_create(), "notification_create")?;
    NTF.store(n.0 as u64, Ordering::SeqCst);
    let mut servers = heapless::Vec::<util::Thread, 4>::new();
    let mut r = Err("an endpoint stays allocated after a fast call into a bound receiver");
    for round in 0..4 {
        match bound_round(&mut servers) {
            Ok(None) => {
                r = Ok(());
                break;
            }
            Ok(Some((heap, base, fast))) => {
                note!("round {round}: heap {heap} bytes, base {base} (fast call: {fast})");
            }
            Err(e) => {
                r = Err(e);
                break;
            }
        }
    }
    RELEASE.store(1, Ordering::SeqCst);
    for w in servers {
        util::expect_ok(w.join()?)?;
    }
    let _ = ipc::handle_close(n.0);
    let _ = sys::set_affinity(u64::MAX);
    r
}

/// The six decodes of a receive buffer: (syscall, with a timeout bit).
const DECODES: [(Sysnum, bool); 6] = [
    (Sysnum::IpcCall, false),
    (Sysnum::IpcCall, true),
    (Sysnum::IpcRecv, false),
    (Sysnum::IpcRecv, true),
    (Sysnum::IpcReplyRecv, false),
    (Sysnum::IpcReplyRecv, true),
];

/// What a receive buffer must give, on handle 0 (an accepted buffer is
/// then the lookup's `BadHandle`).
fn buffer_cases() -> [(u64, u32, Result<u64, Error>); 16] {
    let good = Err(Error::BadHandle);
    let bad = Err(Error::BadAddress);
    let big = Err(Error::InvalidArgument);
    [
        (USER_END - 65536, 65536, good),
        (USER_END - 1, 1, good),
        (USER_MIN, 65536, good),
        (USER_END, 0, good),
        (0x1234_0000_0000_0000, 0, good),
        (0xffff_ffff_ffff_ffff, 0, good),
        (USER_END - 65535, 65536, bad),
        (USER_END, 1, bad),
        (USER_MIN - 1, 1, bad),
        (0x1234_0000_0000_0000, 1, bad),
        (0xffff_8000_0000_0000, 65536, bad),
        (u64::MAX - 65534, 65536, bad),
        (u64::MAX, 1, bad),
        (USER_MIN, 65537, big),
        (USER_END - 65537, 65537, big),
        (USER_MIN, u32::MAX, big),
    ]
}

/// Receive buffers at the edges on every decode: fast (no timeout bit)
/// and full (a timeout bit) for `ipc_call`, `ipc_recv` and
/// `ipc_reply_recv`.
pub fn receive_buffers_on_every_decode() -> TestResult {
    let mut bad = 0;
    for (addr, cap, want) in buffer_cases() {
        for (n, timed) in DECODES {
            let mut r = libipc::ipc::IpcRegs {
                rdi: 0,
                rsi: libipc::ipc::info(1, 0, 0, 0, timed),
                r14: addr,
                // Upper half garbage without a timeout bit (ignored), 1 µs
                // with one (never reached: the lookup refuses handle 0).
                r15: libipc::ipc::spec(cap, if timed { 1 } else { 0xdead_beef }),
                ..Default::default()
            };
            // SAFETY: handle 0 names nothing: nothing is received, so the
            // kernel writes no buffer.
            let got = decode_result(unsafe { libipc::ipc::ipc_syscall(n, &mut r) });
            if got != want {
                note!("{n:?} timed {timed}: buffer {addr:#x}+{cap}: {got:?}, want {want:?}");
                bad += 1;
            }
        }
    }
    check(
        bad == 0,
        "a receive buffer at the edges was decided wrongly",
    )
}

static RACE_NUM: AtomicU64 = AtomicU64::new(0);
static RACE_STOP: AtomicU64 = AtomicU64::new(0);

/// Fills one slot again and again: a notification (its number
/// published), closed, an endpoint in the same slot, closed.
extern "C" fn recycler(_: u64) -> ! {
    let _ = sys::set_affinity(1);
    let mut rounds = 0u64;
    while RACE_STOP.load(Ordering::SeqCst) == 0 {
        let Ok(n) = ipc::notification_create() else {
            sys::thread_exit(1)
        };
        RACE_NUM.store(n.0 as u64, Ordering::SeqCst);
        sys::yield_now();
        let _ = ipc::handle_close(n.0);
        let Ok(e) = ipc::endpoint_create() else {
            sys::thread_exit(2)
        };
        sys::yield_now();
        let _ = ipc::handle_close(e.0);
        rounds += 1;
    }
    sys::thread_exit(if rounds > 0 { 0 } else { 3 })
}

/// A notification's number used (signal; wait polling) while another
/// thread (on CPU 1 when there is one) closes it and fills its slot with
/// an endpoint: every answer is `Ok`, `WouldBlock` or `BadHandle`.
pub fn stale_notification_numbers_racing_reuse() -> TestResult {
    RACE_NUM.store(0, Ordering::SeqCst);
    RACE_STOP.store(0, Ordering::SeqCst);
    let t = util::spawn(recycler, 0)?;
    while RACE_NUM.load(Ordering::SeqCst) == 0 {
        crate::util::relax();
    }
    let end = sys::clock_ns() + 200_000_000;
    let mut wrong = None;
    let mut i = 0u64;
    while sys::clock_ns() < end && wrong.is_none() {
        let h = RACE_NUM.load(Ordering::SeqCst) as u32;
        let r = if i.is_multiple_of(2) {
            ipc::signal(Notification(h), 1).map(|_| 0)
        } else {
            ipc::wait(Notification(h), Some(0))
        };
        match r {
            Ok(_) | Err(Error::WouldBlock) | Err(Error::BadHandle) => {}
            Err(e) => wrong = Some((h, e)),
        }
        i += 1;
        if i.is_multiple_of(64) {
            sys::yield_now();
        }
    }
    RACE_STOP.store(1, Ordering::SeqCst);
    let st = t.join()?;
    util::expect_ok(st)?;
    if let Some((h, e)) = wrong {
        note!("notification number {h:#x}: {e:?} after {i} uses");
        return Err("a stale notification number was not BadHandle");
    }
    Ok(())
}

static NTF2: AtomicU64 = AtomicU64::new(0);
/// The server's N2 wait's result, then its polling bound receive's
/// (`1 << 32 | bits` for `Notified`, `2 << 32` for a message, `3 << 32 |
/// code` for an error).
static GOT: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

fn encode(r: Result<Received, Error>) -> u64 {
    match r {
        Ok(Received::Notified(b)) => 1 << 32 | b,
        Ok(Received::Msg { .. }) => 2 << 32,
        Err(e) => 3 << 32 | e as u64,
    }
}

/// On CPU 0, bound to [`NTF`]: one call received (a fast call into its
/// bound receive) and answered, then a plain wait on [`NTF2`] (not its
/// bound notification), then a polling bound receive.
extern "C" fn registration_server(_: u64) -> ! {
    let _ = sys::set_affinity(0);
    let n = Notification(NTF.load(Ordering::SeqCst) as u32);
    let n2 = Notification(NTF2.load(Ordering::SeqCst) as u32);
    let ep = Endpoint(EP.load(Ordering::SeqCst) as u32);
    if ipc::bind(Some(n)).is_err() {
        STEP.store(9, Ordering::SeqCst);
        sys::thread_exit(1)
    }
    STEP.store(1, Ordering::SeqCst);
    if let Ok(Received::Msg { msg, .. }) = ipc::recv(ep, None) {
        let _ = ipc::reply(&Message {
            label: 0,
            words: [msg.words[0] + 1, 0, 0, 0, 0, 0],
        });
    }
    STEP.store(3, Ordering::SeqCst);
    let w = match ipc::wait(n2, Some(500_000)) {
        Ok(b) => b,
        Err(e) => 3 << 32 | e as u64,
    };
    GOT[0].store(w, Ordering::SeqCst);
    GOT[1].store(encode(ipc::recv(ep, Some(0))), Ordering::SeqCst);
    let _ = ipc::bind(None);
    sys::thread_exit(0)
}

/// A fast call into a bound receiver ends its registration with its
/// notification (`unregister_bound`): a later signal of that
/// notification, while the server waits on another one, stays pending
/// for its next bound receive rather than ending the unrelated wait.
pub fn fast_call_into_a_bound_receiver_leaves_no_registration() -> TestResult {
    check(util::pin0(), "set_affinity(0)")?;
    STEP.store(0, Ordering::SeqCst);
    for g in &GOT {
        g.store(0, Ordering::SeqCst);
    }
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let n = ok(ipc::notification_create(), "notification_create")?;
    let n2 = ok(ipc::notification_create(), "notification_create")?;
    EP.store(ep.0 as u64, Ordering::SeqCst);
    NTF.store(n.0 as u64, Ordering::SeqCst);
    NTF2.store(n2.0 as u64, Ordering::SeqCst);
    let t = util::spawn(registration_server, 0)?;
    while STEP.load(Ordering::SeqCst) == 0 {
        sys::sleep_ns(200_000);
    }
    let mut r = check(STEP.load(Ordering::SeqCst) == 1, "bind failed");
    if r.is_ok() {
        // The server reaches its bound receive first.
        sys::sleep_ns(5_000_000);
        let before = fast_calls_cpu0();
        let m = Message {
            label: 1,
            words: [41, 0, 0, 0, 0, 0],
        };
        r = ok(ipc::call(ep, &m, None), "call")
            .and_then(|got| check(got.words[0] == 42, "wrong answer"));
        let fast = fast_calls_cpu0() > before;
        while STEP.load(Ordering::SeqCst) != 3 {
            sys::sleep_ns(200_000);
        }
        // The server is in its wait on N2.
        sys::sleep_ns(5_000_000);
        let _ = ipc::signal(n, 1);
        sys::sleep_ns(5_000_000);
        let _ = ipc::signal(n2, 2);
        let st = t.join()?;
        let (w, b) = (GOT[0].load(Ordering::SeqCst), GOT[1].load(Ordering::SeqCst));
        if r.is_ok() && (w != 2 || b != (1 << 32 | 1) || !fast) {
            note!(
                "N2 wait {w:#x}, bound receive {b:#x} (want 0x2, 0x100000001), fast {fast}, {st:?}"
            );
            r = Err("a signal ended a wait its notification was not bound to");
        }
        if r.is_ok() {
            r = util::expect_ok(st);
        }
    } else {
        let _ = t.join();
    }
    for h in [ep.0, n.0, n2.0] {
        let _ = ipc::handle_close(h);
    }
    let _ = sys::set_affinity(u64::MAX);
    r
}
