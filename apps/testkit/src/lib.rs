//! Pieces the ring-3 test programs share (`tests` and `fuzz`): servers a
//! case or a fuzzer step starts in a thread of its own. No server or
//! other program depends on this crate.
#![no_std]
#![forbid(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

use abi::{Error, Sysnum};
use libipc::ipc::{self, IpcRegs, Message};

/// Serves `ep` as a *tag echo*: answers every call with label `tag` and
/// the caller's six words, register-only (no buffer, no handles, no
/// timeout: the IPC fast path when the caller waits on the same CPU),
/// until a call labelled `stop`, which gets an empty reply. Returns after
/// that reply, or with the first receive's error.
///
/// The `ipcl` ring-3 case and the fuzzer's ipc reuse race call through a
/// number that another thread keeps closing and refilling; a reply's label
/// says which echo (which endpoint) a call reached.
pub fn tag_echo(ep: u32, tag: u32, stop: u32) -> Result<(), Error> {
    let mut r = IpcRegs {
        rdi: ep as u64,
        ..IpcRegs::default()
    };
    let mut n = Sysnum::IpcRecv;
    loop {
        // SAFETY: no buffer is named (capacity 0).
        abi::decode_result(unsafe { ipc::ipc_syscall(n, &mut r) })?;
        if r.rsi as u32 == stop {
            let _ = ipc::reply(&Message::default());
            return Ok(());
        }
        r = IpcRegs {
            rdi: ep as u64,
            rsi: ipc::info(tag, 0, 0, 0, false),
            w: r.w,
            ..IpcRegs::default()
        };
        n = Sysnum::IpcReplyRecv;
    }
}
