//! Notifications: bits that accumulate, wake a waiter and die with the
//! last handle; a notification bound to a thread ends its endpoint
//! receive.

use super::{GUARD_US, RESULT};
use crate::note;
use crate::util::{self, check, ok, want, TestResult};
use abi::{Error, Sysnum};
use core::sync::atomic::Ordering;
use libipc::ipc::{
    self, bind, call, endpoint_create, handle_close, handle_dup, notification_create, recv, reply,
    rights, signal, wait, Endpoint, IpcRegs, Message, Notification, Received,
};
use libipc::sys;

/// Waits on a notification once (no timeout), stores the bits (or error
/// code | 1 << 63).
extern "C" fn wait_once(n: u64) -> ! {
    let r = wait(Notification(n as u32), GUARD_US);
    RESULT.store(
        match r {
            Ok(bits) => bits,
            Err(e) => 1 << 63 | e as u64,
        },
        Ordering::SeqCst,
    );
    sys::thread_exit(0)
}

/// Notifications: bits signalled before a wait accumulate and are cleared
/// by it; a signal wakes a waiting thread; a wait times out; the last
/// handle closed wakes a waiter with PeerDied.
pub fn notifications_accumulate_wake_and_die() -> TestResult {
    let n = ok(notification_create(), "notification_create")?;
    want(
        wait(n, Some(0)),
        Error::WouldBlock,
        "wait with nothing pending",
    )?;
    ok(signal(n, 0b001), "signal")?;
    ok(signal(n, 0b100), "signal")?;
    ok(signal(n, 0), "signal of no bits")?;
    let bits = ok(wait(n, GUARD_US), "wait")?;
    check(bits == 0b101, "signalled bits did not accumulate")?;
    want(
        wait(n, Some(0)),
        Error::WouldBlock,
        "the wait did not clear the bits",
    )?;
    want(
        wait(n, Some(10_000)),
        Error::TimedOut,
        "wait with a timeout",
    )?;

    RESULT.store(0, Ordering::SeqCst);
    let t = util::spawn(wait_once, n.0 as u64)?;
    sys::sleep_ns(20_000_000);
    ok(signal(n, 0x80), "signal a waiter")?;
    util::expect_ok(t.join()?)?;
    check(
        RESULT.load(Ordering::SeqCst) == 0x80,
        "a waiting thread did not get the bits",
    )?;

    let t = util::spawn(wait_once, n.0 as u64)?;
    sys::sleep_ns(20_000_000);
    ok(handle_close(n.0), "close the last handle")?;
    util::expect_ok(t.join()?)?;
    check(
        RESULT.load(Ordering::SeqCst) == 1 << 63 | Error::PeerDied as u64,
        "a waiter was not woken with PeerDied when its notification died",
    )?;
    Ok(())
}

/// A server bound to a notification: its receive ends on a signal (bits
/// flagged as a notification) or on a call; bits pending before the
/// receive come at once. Reports what it saw in `RESULT` (bit per step).
extern "C" fn bound_server(arg: u64) -> ! {
    let (ep, n) = (Endpoint(arg as u32), Notification((arg >> 32) as u32));
    if bind(Some(n)).is_err() {
        sys::thread_exit(1);
    }
    // 1: a signal while waiting.
    if recv(ep, GUARD_US) != Ok(Received::Notified(0x10)) {
        sys::thread_exit(2);
    }
    RESULT.fetch_or(1, Ordering::SeqCst);
    // 2: a call while waiting.
    match recv(ep, GUARD_US) {
        Ok(Received::Msg { msg, .. }) if msg.label == 5 => {}
        _ => sys::thread_exit(3),
    }
    RESULT.fetch_or(2, Ordering::SeqCst);
    if reply(&Message::default()).is_err() {
        sys::thread_exit(6);
    }
    // Wait for the main thread to signal before our receive.
    while RESULT.load(Ordering::SeqCst) & 4 == 0 {
        sys::yield_now();
    }
    // 3: bits pending before the receive come at once.
    match recv(ep, Some(0)) {
        Ok(Received::Notified(0x20)) => {}
        _ => sys::thread_exit(4),
    }
    if bind(None).is_err() {
        sys::thread_exit(5);
    }
    sys::thread_exit(0)
}

/// Endpoint + notification wait: a server bound to a notification.
pub fn bound_notification_ends_an_endpoint_receive() -> TestResult {
    RESULT.store(0, Ordering::SeqCst);
    let ep = ok(endpoint_create(), "endpoint_create")?;
    let n = ok(notification_create(), "notification_create")?;
    let s = util::spawn(bound_server, ep.0 as u64 | (n.0 as u64) << 32)?;
    sys::sleep_ns(20_000_000);
    ok(signal(n, 0x10), "signal")?;
    let t0 = sys::clock_ns();
    while RESULT.load(Ordering::SeqCst) & 1 == 0 {
        if sys::clock_ns() - t0 > 4_000_000_000 {
            let _ = s.join();
            return Err("the bound server's receive did not end on a signal");
        }
        sys::yield_now();
    }
    // The server may not be back in its receive yet: the call waits for it.
    ok(
        call(
            ep,
            &Message {
                label: 5,
                words: [0; 6],
            },
            GUARD_US,
        )
        .map(|_| ()),
        "call",
    )
    .inspect_err(|_| {
        note!("bound server result {:#x}", RESULT.load(Ordering::SeqCst));
    })?;
    // The call above returned: make the bits pending before the server's
    // next receive (it waits for bit 4; that receive does not block).
    ok(signal(n, 0x20), "signal before the receive")?;
    RESULT.fetch_or(4, Ordering::SeqCst);
    let st = s.join()?;
    if let abi::status::Status::Exited(c) = st {
        if c != 0 {
            note!("bound server stopped at step {c}");
        }
    }
    util::expect_ok(st)?;
    ok(handle_close(ep.0), "close")?;
    ok(handle_close(n.0), "close")?;
    Ok(())
}

/// A notification handle's refusals, in their order (`BadHandle`,
/// `WrongType`, `PermissionDenied`, as an endpoint's; the lookup is the
/// endpoint's since cut28l): a missing right on signal, wait and bind;
/// junk in the register's upper half; a closed number; a stale number
/// whose slot now holds an endpoint (stale before the kind); an endpoint
/// (the kind before its missing right). The good handles still work.
pub fn notification_handles_are_refused_in_order() -> TestResult {
    let n = ok(notification_create(), "notification_create")?;
    let wait_only = ok(handle_dup(n.0, rights::WAIT, 0), "dup WAIT")?;
    let sig_only = ok(handle_dup(n.0, rights::SIGNAL, 0), "dup SIGNAL")?;
    let p = Error::PermissionDenied;
    want(
        signal(Notification(wait_only), 1),
        p,
        "signal via WAIT only",
    )?;
    want(
        wait(Notification(sig_only), Some(0)),
        p,
        "wait via SIGNAL only",
    )?;
    want(
        bind(Some(Notification(sig_only))),
        p,
        "bind via SIGNAL only",
    )?;
    for (n, h) in [(Sysnum::NtfSignal, sig_only), (Sysnum::NtfWait, wait_only)] {
        let mut r = IpcRegs {
            rdi: 1 << 32 | h as u64,
            rsi: 1,
            ..IpcRegs::default()
        };
        // SAFETY: no buffer is named.
        let got = abi::decode_result(unsafe { ipc::ipc_syscall(n, &mut r) });
        want(got, Error::BadHandle, "a register with upper bits set")?;
    }
    ok(signal(Notification(sig_only), 1), "signal via SIGNAL")?;
    check(
        wait(Notification(wait_only), Some(0)) == Ok(1),
        "wait via WAIT did not take the bit",
    )?;
    ok(handle_close(sig_only), "close")?;
    want(
        signal(Notification(sig_only), 1),
        Error::BadHandle,
        "closed",
    )?;
    // The endpoint takes the freed slot (the free list's head).
    let ep = ok(endpoint_create(), "endpoint_create")?;
    check(
        ep.0 & 0x3ff == sig_only & 0x3ff,
        "the freed slot was not reused (test premise)",
    )?;
    want(signal(Notification(sig_only), 1), Error::BadHandle, "stale")?;
    // An endpoint's handle has neither SIGNAL nor WAIT: the kind first.
    want(signal(Notification(ep.0), 1), Error::WrongType, "endpoint")?;
    want(
        wait(Notification(ep.0), Some(0)),
        Error::WrongType,
        "endpoint",
    )?;
    for h in [ep.0, wait_only, n.0] {
        ok(handle_close(h), "close at the end")?;
    }
    Ok(())
}
