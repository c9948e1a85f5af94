//! break23b (session 23): the IPC entry's refusals, every combination.
//!
//! `syscall/ipc.rs` `ep()` now tests a good lookup as one condition and
//! tells refusals apart out of line (`ep_refusal`, under the same table
//! lock); `decode` builds the `RecvSpec` once; the refusals are made where
//! they are returned (`refused`). The order must stay the old one: an
//! oversized receive capacity (`InvalidArgument`), then a receive buffer
//! that is not a user range (`BadAddress`: kernel, non-canonical, wrapping,
//! one byte past the user half), then the handle: `BadHandle` (upper bits
//! set, a slot past the table, a stale generation), `WrongType`,
//! `PermissionDenied`. Each combination is made through the fast decode
//! (a label-only RSI) and the generic one (the timeout bit), for `call`,
//! `reply_recv` and `recv`.

use crate::note;
use crate::util::{ok, TestResult};
use abi::layout::USER_END;
use abi::{decode_result, rights, Error, Sysnum};
use libipc::ipc::{self, IpcRegs};

/// A user page the buffer cases may name (nothing is ever written: every
/// combination is refused before a receive).
#[repr(C, align(4096))]
struct Page([u8; 4096]);
static mut PAGE: Page = Page([0; 4096]);

fn page() -> u64 {
    core::ptr::addr_of_mut!(PAGE) as u64
}

/// The refusal a combination must get, in the old order.
fn want(cap: u64, buf_ok: bool, handle: Error) -> Error {
    if cap > 65536 {
        Error::InvalidArgument
    } else if cap > 0 && !buf_ok {
        Error::BadAddress
    } else {
        handle
    }
}

/// Case: see the module docs.
pub fn ipc_entry_refusals_keep_their_order() -> TestResult {
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let n = ok(ipc::notification_create(), "notification_create")?;
    let send_only = ok(ipc::handle_dup(ep.0, rights::SEND, 0), "dup SEND")?;
    let recv_only = ok(ipc::handle_dup(ep.0, rights::RECV, 0), "dup RECV")?;
    // A stale number: closed, and its slot reused by a later handle.
    let stale = ok(ipc::handle_dup(ep.0, rights::SEND, 0), "dup")?;
    ok(ipc::handle_close(stale), "close")?;
    let reuse = ok(ipc::handle_dup(ep.0, rights::SEND, 0), "dup (reuse)")?;
    let handles = |op: Sysnum| {
        // The handle with the right type but not the op's right.
        let wrong_rights = if op == Sysnum::IpcCall {
            recv_only
        } else {
            send_only
        };
        [
            (ep.0 as u64 | 1 << 32, Error::BadHandle),
            (u64::MAX, Error::BadHandle),
            (0x3ff, Error::BadHandle),
            (0, Error::BadHandle),
            (stale as u64, Error::BadHandle),
            (n.0 as u64, Error::WrongType),
            (wrong_rights as u64, Error::PermissionDenied),
        ]
    };
    let bufs: [(u64, u64, bool); 9] = [
        // (buffer, capacity, a user range)
        (0, 0, true),
        (0xffff_8000_0000_0000, 0, true),
        (page(), 4096, true),
        (0xffff_8000_0000_0000, 4096, false),
        (0x8000_0000_0000, 16, false),
        (0xffff_ffff_ffff_f000, 0x2000, false),
        (USER_END - 8, 16, false),
        (page(), 65537, true),
        (0xffff_8000_0000_0000, 0xffff_ffff, false),
    ];
    let mut failed = 0;
    for op in [Sysnum::IpcCall, Sysnum::IpcReplyRecv, Sysnum::IpcRecv] {
        let label = if op == Sysnum::IpcRecv { 0 } else { 3 };
        for timeout in [false, true] {
            for (h, herr) in handles(op) {
                for (buf, cap, buf_ok) in bufs {
                    let mut r = IpcRegs {
                        rdi: h,
                        rsi: ipc::info(label, 0, 0, 0, timeout),
                        r14: buf,
                        r15: cap | if timeout { 1_000 << 32 } else { 0 },
                        ..IpcRegs::default()
                    };
                    // SAFETY: every combination is refused before the
                    // kernel writes the buffer (and the page is ours).
                    let got = decode_result(unsafe { ipc::ipc_syscall(op, &mut r) });
                    let w = want(cap, buf_ok, herr);
                    if got != Err(w) {
                        failed += 1;
                        note!("{op:?} timeout {timeout} h {h:#x} buf {buf:#x} cap {cap:#x}: {got:?}, expected {w:?}");
                    }
                }
            }
        }
    }
    for h in [ep.0, n.0, send_only, recv_only, reuse] {
        let _ = ipc::handle_close(h);
    }
    if failed > 0 {
        return Err("an IPC refusal changed its code or its order");
    }
    Ok(())
}
