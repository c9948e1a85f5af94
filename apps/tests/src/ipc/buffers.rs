//! IPC with buffers and handles: 64 KiB buffers each way, handles moved
//! and copied, and bad buffers failing only the side that passed them.

use super::RESULT;
use crate::note;
use crate::util::{self, check, ok, want, TestResult};
use abi::{Error, Sysnum};
use core::sync::atomic::Ordering;
use libipc::ipc::{
    self, endpoint_create, handle_close, handle_dup, notification_create, recv, rights, signal,
    wait, Endpoint, IpcRegs, Notification,
};
use libipc::sys;

/// A 64 KiB buffer per side (the test program has no heap), page aligned.
#[repr(C, align(4096))]
struct Page64([u8; 65536]);
static mut SRV_BUF: Page64 = Page64([0; 65536]);
static mut CLI_BUF: Page64 = Page64([0; 65536]);

fn srv_buf() -> &'static mut [u8; 65536] {
    // SAFETY: only the buffer-echo server thread uses SRV_BUF, one at a time
    // (the case joins it before the next starts).
    unsafe { &mut (*core::ptr::addr_of_mut!(SRV_BUF)).0 }
}

pub(super) fn cli_buf() -> &'static mut [u8; 65536] {
    // SAFETY: only the case's own thread uses CLI_BUF.
    unsafe { &mut (*core::ptr::addr_of_mut!(CLI_BUF)).0 }
}

/// Raw IPC with every register (buffers and handles).
pub(super) fn raw(n: Sysnum, r: &mut IpcRegs) -> Result<u64, Error> {
    // SAFETY: the buffers the tests name are the static pages above (or
    // deliberately bad addresses the kernel must refuse).
    abi::decode_result(unsafe { ipc::ipc_syscall(n, r) })
}

/// The buffer server: receives into its 64 KiB buffer, answers with the
/// bytes reversed (label = bytes received, w0 = handles received, w1..w4 =
/// their numbers), closing nothing; label 0xdead stops it. A receive error
/// is answered by exiting with 10 + the error code.
extern "C" fn buffer_server(ep: u64) -> ! {
    let buf = srv_buf();
    let mut r = IpcRegs {
        rdi: ep,
        r14: buf.as_mut_ptr() as u64,
        r15: ipc::spec(65536, 0),
        ..IpcRegs::default()
    };
    let mut n = Sysnum::IpcRecv;
    loop {
        r.rsi = if n == Sysnum::IpcRecv { 0 } else { r.rsi };
        r.rdi = ep;
        r.r14 = buf.as_mut_ptr() as u64;
        r.r15 = ipc::spec(65536, 0);
        if let Err(e) = raw(n, &mut r) {
            sys::thread_exit(10 + e as i32);
        }
        let label = r.rsi as u32;
        let len = ipc::info_len(r.rsi);
        let got = ipc::unpack(r.handles);
        let count = ipc::info_handles(r.rsi) as u64;
        buf[..len].reverse();
        r.w = [
            count,
            got[0] as u64,
            got[1] as u64,
            got[2] as u64,
            got[3] as u64,
            len as u64,
        ];
        r.handles = [0, 0];
        r.rsi = ipc::info(len as u32, 0, 0, len as u64, false);
        if label == 0xdead {
            let _ = raw(Sysnum::IpcReply, &mut r);
            sys::thread_exit(0);
        }
        n = Sysnum::IpcReplyRecv;
    }
}

/// A call with a buffer of `len` bytes (pattern `seed`) and `handles`;
/// returns the reply's registers.
fn buffer_call(
    ep: Endpoint,
    len: usize,
    seed: u8,
    handles: &[u32],
    copy: u64,
) -> Result<IpcRegs, Error> {
    let buf = cli_buf();
    for (i, b) in buf[..len].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(seed);
    }
    let mut r = IpcRegs {
        rdi: ep.0 as u64,
        rsi: ipc::info(0x77, handles.len() as u64, copy, len as u64, true),
        r14: buf.as_mut_ptr() as u64,
        r15: ipc::spec(65536, 3_000_000),
        handles: ipc::pack(handles),
        ..IpcRegs::default()
    };
    raw(Sysnum::IpcCall, &mut r)?;
    Ok(r)
}

/// Buffers of 1 byte to 64 KiB go there and back intact; handles travel
/// moved (the sender's number goes stale, the receiver's works) and copied
/// (both work); transfers without the rights are refused.
pub fn buffers_and_handles_travel() -> TestResult {
    let ep = ok(endpoint_create(), "endpoint_create")?;
    let server = util::spawn(buffer_server, ep.0 as u64)?;
    let mut fail = None;
    for (len, seed) in [(1usize, 3u8), (4096, 5), (4097, 7), (65536, 11)] {
        let r = match buffer_call(ep, len, seed, &[], 0) {
            Ok(r) => r,
            Err(e) => {
                note!("{len}-byte call: {e}");
                fail = Some("a buffer call failed");
                break;
            }
        };
        let buf = cli_buf();
        let good = r.rsi as u32 == len as u32
            && ipc::info_len(r.rsi) == len
            && (0..len).all(|i| buf[len - 1 - i] == (i as u8).wrapping_mul(31).wrapping_add(seed));
        if !good {
            note!(
                "{len} bytes: reply label {} len {}",
                r.rsi as u32,
                ipc::info_len(r.rsi)
            );
            fail = Some("a buffer did not arrive intact (or the reply's did not)");
            break;
        }
    }
    // Handles: a notification moved, another copied.
    let moved = ok(notification_create(), "notification_create")?;
    let copied = ok(notification_create(), "notification_create")?;
    if fail.is_none() {
        match buffer_call(ep, 8, 1, &[moved.0, copied.0], 0b10) {
            Ok(r) => {
                let (count, h0, h1) = (r.w[0], r.w[1] as u32, r.w[2] as u32);
                let stale = signal(moved, 1) == Err(Error::BadHandle);
                let kept = signal(copied, 2).is_ok();
                let new0 = signal(Notification(h0), 4).is_ok();
                let new1 = signal(Notification(h1), 8).is_ok();
                let bits = (wait(Notification(h0), Some(0)), wait(copied, Some(0)));
                if count != 2 || !stale || !kept || !new0 || !new1 || bits != (Ok(4), Ok(10)) {
                    note!(
                        "count {count} stale {stale} kept {kept} new {new0} {new1} bits {bits:?}"
                    );
                    fail = Some("handles did not travel as moved/copied");
                }
                for h in [h0, h1] {
                    let _ = handle_close(h);
                }
            }
            Err(e) => {
                note!("call with handles: {e}");
                fail = Some("a call with handles failed");
            }
        }
    }
    // Without TRANSFER (or DUPLICATE for a copy): refused, nothing sent.
    if fail.is_none() {
        let plain = ok(
            handle_dup(copied.0, rights::SIGNAL | rights::DUPLICATE, 0),
            "dup",
        )?;
        let r1 = buffer_call(ep, 0, 0, &[plain], 0).map(|_| ());
        let plain2 = ok(
            handle_dup(copied.0, rights::SIGNAL | rights::TRANSFER, 0),
            "dup",
        )?;
        let r2 = buffer_call(ep, 0, 0, &[plain2], 1).map(|_| ());
        let still =
            signal(Notification(plain), 1).is_ok() && signal(Notification(plain2), 1).is_ok();
        if r1 != Err(Error::PermissionDenied) || r2 != Err(Error::PermissionDenied) || !still {
            note!("without TRANSFER: {r1:?}; copy without DUPLICATE: {r2:?}; kept {still}");
            fail = Some("a transfer without the rights was not refused");
        }
        let _ = handle_close(plain);
        let _ = handle_close(plain2);
    }
    let _ = buffer_call(ep, 0, 0, &[], 0).and_then(|_| {
        let mut r = IpcRegs {
            rdi: ep.0 as u64,
            rsi: ipc::info(0xdead, 0, 0, 0, true),
            r15: ipc::spec(0, 3_000_000),
            ..IpcRegs::default()
        };
        raw(Sysnum::IpcCall, &mut r)
    });
    let st = server.join()?;
    let _ = handle_close(copied.0);
    let _ = handle_close(ep.0);
    if let Some(f) = fail {
        return Err(f);
    }
    util::expect_ok(st)
}

/// Bad buffers are the error of the side that passed them: a sender's bad
/// buffer (kernel address, unmapped, wrapping, over 64 KiB) fails its call
/// and delivers nothing; a receiver's unmapped buffer fails its receive and
/// the caller's message goes to the next receive intact.
pub fn bad_buffers_fail_their_own_side() -> TestResult {
    let ep = ok(endpoint_create(), "endpoint_create")?;
    let bad: [(u64, u64, Error); 4] = [
        (0xffff_8000_0000_0000, 16, Error::BadAddress),
        (0x3000_0000_0000, 4096, Error::BadAddress),
        (0x7fff_ffff_fff0, 0x20, Error::BadAddress),
        (cli_buf().as_ptr() as u64, 65537, Error::InvalidArgument),
    ];
    for (addr, len, e) in bad {
        let mut r = IpcRegs {
            rdi: ep.0 as u64,
            rsi: ipc::info(1, 0, 0, len, true),
            r14: addr,
            r15: ipc::spec(0, 0),
            ..IpcRegs::default()
        };
        let got = raw(Sysnum::IpcCall, &mut r);
        if got != Err(e) {
            note!("call with buffer {addr:#x}+{len}: {got:?}, expected {e:?}");
            return Err("a bad sender buffer was not refused");
        }
    }
    // Nothing was delivered: a poll receive finds nothing.
    want(
        recv(ep, Some(0)),
        Error::WouldBlock,
        "a message arrived from a bad buffer",
    )?;

    // A receiver with an unmapped buffer: its receive fails, the call goes
    // on to the next receive.
    RESULT.store(0, Ordering::SeqCst);
    let t = util::spawn(bad_receiver, ep.0 as u64)?;
    sys::sleep_ns(20_000_000);
    let r = buffer_call(ep, 100, 9, &[], 0);
    let st = t.join()?;
    match (&r, st) {
        (Ok(r), abi::status::Status::Exited(0)) if ipc::info_len(r.rsi) == 100 => Ok(()),
        _ => {
            note!(
                "call {:?}, receiver {st:?}, first receive code {}",
                r.map(|r| r.rsi),
                RESULT.load(Ordering::SeqCst)
            );
            Err("a receiver's bad buffer was not its own error")
        }
    }?;
    check(
        RESULT.load(Ordering::SeqCst) == Error::BadAddress as u64,
        "the receiver's first receive did not fail with BadAddress",
    )?;
    ok(handle_close(ep.0), "close")?;
    Ok(())
}

/// Receives into an unmapped buffer (must fail with BadAddress, stored in
/// RESULT), then into a good one and echoes the length back.
extern "C" fn bad_receiver(ep: u64) -> ! {
    let mut r = IpcRegs {
        rdi: ep,
        r14: 0x3000_0000_0000,
        r15: ipc::spec(4096, 3_000_000),
        rsi: ipc::info(0, 0, 0, 0, true),
        ..IpcRegs::default()
    };
    let first = raw(Sysnum::IpcRecv, &mut r);
    RESULT.store(first.err().map_or(1000, |e| e as u64), Ordering::SeqCst);
    let buf = srv_buf();
    let mut r = IpcRegs {
        rdi: ep,
        r14: buf.as_mut_ptr() as u64,
        r15: ipc::spec(65536, 3_000_000),
        rsi: ipc::info(0, 0, 0, 0, true),
        ..IpcRegs::default()
    };
    if raw(Sysnum::IpcRecv, &mut r).is_err() {
        sys::thread_exit(1);
    }
    let len = ipc::info_len(r.rsi);
    r.rsi = ipc::info(0, 0, 0, len as u64, false);
    r.handles = [0, 0];
    if raw(Sysnum::IpcReply, &mut r).is_err() {
        sys::thread_exit(2);
    }
    sys::thread_exit(0)
}
