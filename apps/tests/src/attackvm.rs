//! Attacks on the vm calls (issue 11, breakvm): copy-on-write pages meet
//! the kernel's copies into another process's memory.
//!
//! IPC delivery writes the receiver's buffer with the receiver's address
//! space loaded on the deliverer's CPU (`ipc::transfer::copy_into`). A
//! copy-on-write page there must be resolved in *that* space, not in the
//! delivering thread's own.

use crate::note;
use crate::util::{check, ok, TestResult};
use abi::{decode_result, prot, Sysnum};
use libipc::ipc::{self, IpcRegs};
use libipc::sys;
use libipc::vm::{space_clone, Space};

const PAGE: u64 = 4096;
/// This file's own region of the tests program's space.
const BASE: u64 = 0x5c00_0000_0000;
/// Bytes the reply carries.
const REPLY_LEN: u64 = 64;

/// The word pattern of the reply's `i`-th word.
fn pattern(i: u64) -> u64 {
    0x5ca1_ab1e_0000_0000 | i
}

/// The clone's thread: calls the endpoint (handle number `arg & 0xffff_ffff`)
/// with its reply buffer at `arg >> 32` pages into [`BASE`], a page it has
/// not touched since the clone (so still copy-on-write in the clone), then
/// checks the reply's bytes landed there. Exit codes: 0 fine, 20 the call
/// failed, 21 wrong length, 22 wrong bytes.
extern "C" fn cow_caller(arg: u64) -> ! {
    let buf = BASE + (arg >> 32) * PAGE;
    let mut r = IpcRegs {
        rdi: arg & 0xffff_ffff,
        rsi: ipc::info(1, 0, 0, 0, false),
        r14: buf,
        r15: ipc::spec(PAGE as u32, 0),
        ..IpcRegs::default()
    };
    // SAFETY: the kernel writes at most a page at `buf`, mapped (copy-on-
    // write) in this clone.
    let rc = unsafe { ipc::ipc_syscall(Sysnum::IpcCall, &mut r) };
    if decode_result(rc).is_err() {
        sys::process_exit(20)
    }
    if ipc::info_len(r.rsi) as u64 != REPLY_LEN {
        sys::process_exit(21)
    }
    for i in 0..REPLY_LEN / 8 {
        // SAFETY: as above.
        if unsafe { core::ptr::read_volatile((buf + i * 8) as *const u64) } != pattern(i) {
            sys::process_exit(22)
        }
    }
    sys::process_exit(0)
}

/// One round: the clone calls with its reply buffer at page `buf_page`, the
/// parent replies with [`REPLY_LEN`] bytes from page 0. `parent_unmaps`:
/// the parent has nothing at that address any more (else it keeps a
/// private, writable page there).
fn reply_into_clone(buf_page: u64, parent_unmaps: bool) -> TestResult {
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let buf = BASE + buf_page * PAGE;
    // Page 0: the parent's reply bytes; `buf_page`: the clone's buffer;
    // pages 8..12: the clone's thread's stack.
    ok(
        Space::Own.map(BASE, 12 * PAGE, prot::WRITE),
        "map the region",
    )?;
    for i in 0..REPLY_LEN / 8 {
        // SAFETY: mapped just above.
        unsafe { core::ptr::write_volatile((BASE + i * 8) as *mut u64, pattern(i)) };
    }
    // SAFETY: mapped just above: the buffer page is private and written.
    unsafe { core::ptr::write_volatile(buf as *mut u64, 1) };
    let child = ok(space_clone(Space::Own), "space_clone")?;
    if parent_unmaps {
        // SAFETY: this file's own page, unused by the parent from now on.
        ok(unsafe { Space::Own.unmap(buf, PAGE) }, "unmap the buffer")?;
    } else {
        // The parent's page becomes its own (copied) again.
        // SAFETY: mapped above.
        unsafe { core::ptr::write_volatile(buf as *mut u64, 2) };
    }
    let n = ok(
        ipc::handle_give(child, ep.0, ipc::rights::SEND),
        "give the endpoint",
    )?;
    // SAFETY: `cow_caller` runs in the clone, on the clone's copy of the
    // stack pages.
    let t = ok(
        unsafe {
            child.space().start_thread(
                cow_caller as *const () as usize as u64,
                BASE + 12 * PAGE,
                n as u64 | buf_page << 32,
            )
        },
        "thread_start in the clone",
    )?;
    let got = ok(ipc::recv(ep, Some(5_000_000)), "receive the clone's call")?;
    check(
        matches!(got, ipc::Received::Msg { msg, .. } if msg.label == 1),
        "not the clone's call",
    )?;
    // The reply is delivered by this thread into the clone's buffer, with
    // the clone's space loaded: the copy faults on its copy-on-write page.
    let mut r = IpcRegs {
        rsi: ipc::info(2, 0, 0, REPLY_LEN, false),
        r14: BASE,
        ..IpcRegs::default()
    };
    // SAFETY: a reply writes no memory of ours.
    let rc = unsafe { ipc::ipc_syscall(Sysnum::IpcReply, &mut r) };
    let st = ok(child.wait(), "wait for the clone")?;
    let _ = t.close();
    let _ = child.close();
    let _ = ipc::handle_close(ep.0);
    // SAFETY: this file's own region.
    let _ = unsafe { Space::Own.unmap(BASE, 12 * PAGE) };
    if let Err(e) = decode_result(rc) {
        note!("reply: {e:?}");
    }
    match abi::status::decode(st) {
        abi::status::Status::Exited(0) => Ok(()),
        other => {
            note!("clone ended {other:?} (20: call failed, 21/22: wrong reply)");
            Err("a reply into a copy-on-write page of a clone was lost")
        }
    }
}

/// A reply into a clone's copy-on-write buffer is delivered (the fault is
/// resolved in the clone's space), whatever the replier has at that
/// address: nothing (it used to be `BadAddress`, resolved in the replier's
/// space) or a private writable page (it used to hang the replier's CPU
/// for good: "already writable", retry, fault, ... with interrupts off).
pub fn reply_into_a_clones_cow_buffer() -> TestResult {
    reply_into_clone(2, false)?;
    reply_into_clone(1, true)
}
