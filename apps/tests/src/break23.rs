//! break23 (session 23): ring-3 cases for the shortened frameless resume.
//!
//! The frameless resumes (`syscall::frameless_resume`,
//! `frameless_handoff_resume`) end a fast IPC wait and leave through the
//! syscall stub's exit on their own, so the dispatcher's return-RIP check
//! (CVE-2012-0217: `sysret` to a non-canonical RIP faults in ring 0 on
//! Intel) must run on each of their paths too: the common one (the
//! partner wrote the message into the frame, `framed_end`), and the cold
//! ones. These cases make the fast `call` and the fast `reply_recv` from a
//! `syscall` that is the last instruction of the user half (its return
//! RIP, 0x8000_0000_0000, is non-canonical), block frameless, and are
//! resumed by a hand-off (the partner's fast `reply_recv` or fast `call`)
//! or by the scheduler (the partner's plain `reply`): each thread must end
//! with the kernel's #GP, never return, and the kernel must live on. The
//! #GP alone proves nothing under QEMU (TCG's SYSRET to a non-canonical RIP
//! faults in ring 3, AMD-style, so the thread died the same way with the
//! check gone): each case also counts its victim's refusal
//! ([`util::expect_rip_refused`], ripcheck, session 24).
//!
//! [`refused_fast_ipc_from_the_last_user_byte_faults`] (ripcheck) covers
//! the IPC entry's own end (`syscall::ipc_entry`: a fast `call` or
//! `reply_recv` answered without a wait, here refused at once for a handle
//! that names nothing), which no other case reached: removing its check
//! failed nothing.

use crate::break22::counted;
use crate::note;
use crate::util::{self, check, ok, TestResult};
use abi::status::Status;
use abi::{prot, Sysnum};
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::ipc::{self, Endpoint, Message, Received};
use libipc::sys;

/// The last user page; its last two bytes hold a `syscall`.
const LAST_PAGE: u64 = 0x0000_7fff_ffff_f000;
/// The `syscall` ending exactly at the end of the user half.
const LAST_SYSCALL: u64 = LAST_PAGE + 4096 - 2;

/// Maps the last user page with a `syscall` as its last two bytes.
fn map_last_syscall() -> TestResult {
    // SAFETY: nothing of this program lives in the last page.
    let _ = unsafe { sys::unmap(LAST_PAGE, 4096) };
    ok(
        sys::map_anon(LAST_PAGE, 4096, prot::WRITE),
        "map_anon(last page)",
    )?;
    // SAFETY: the page was just mapped writable; nothing else uses it.
    unsafe { core::ptr::copy_nonoverlapping([0x0f, 0x05].as_ptr(), LAST_SYSCALL as *mut u8, 2) };
    // SAFETY: nothing references the page as data.
    let r = unsafe { sys::protect(LAST_PAGE, 4096, prot::EXEC) };
    ok(r, "protect(EXEC)")?;
    Ok(())
}

fn unmap_last() {
    // SAFETY: the threads that ran there have ended.
    let _ = unsafe { sys::unmap(LAST_PAGE, 4096) };
}

/// Makes IPC syscall `n` on endpoint `ep` with label `label` (register
/// only: no buffer, no handles, no timeout) from [`LAST_SYSCALL`].
fn ipc_from_last_byte(n: Sysnum, ep: u64, label: u64) -> ! {
    // SAFETY: the code at LAST_SYSCALL is one `syscall`, whose return RIP
    // is non-canonical: the thread never comes back here (it faults).
    unsafe {
        core::arch::asm!(
            "jmp {t}",
            t = in(reg) LAST_SYSCALL,
            in("rax") n as u64,
            in("rdi") ep,
            in("rsi") label,
            in("r14") 0u64,
            in("r15") 0u64,
            options(noreturn),
        )
    }
}

/// The endpoint, and how the server answers (0: fast `reply_recv`, 1:
/// plain `reply` then `recv`).
static EP: AtomicU64 = AtomicU64::new(0);
static HOW: AtomicU64 = AtomicU64::new(0);
/// What the server saw: the label of the first call, and 1 + its reply's
/// result code (0: not yet).
static SEEN: AtomicU64 = AtomicU64::new(0);
static REPLIED: AtomicU64 = AtomicU64::new(0);

/// Set by [`server`] right before its first receive.
static SERVER_UP: AtomicU64 = AtomicU64::new(0);

/// On CPU 0: receives one call, answers it as `HOW` says, and (for the
/// fast `reply_recv`) receives again until the test stops it.
extern "C" fn server(_: u64) -> ! {
    SERVER_UP.store(1, Ordering::SeqCst);
    if !util::pin0() {
        sys::thread_exit(1);
    }
    let ep = Endpoint(EP.load(Ordering::SeqCst) as u32);
    let m = match ipc::recv(ep, None) {
        Ok(Received::Msg { msg, .. }) => msg,
        _ => sys::thread_exit(2),
    };
    SEEN.store(m.label as u64, Ordering::SeqCst);
    let echo = Message {
        label: m.label + 1,
        words: m.words,
    };
    if HOW.load(Ordering::SeqCst) == 1 {
        let r = ipc::reply(&echo);
        REPLIED.store(1 + r.is_ok() as u64, Ordering::SeqCst);
        sys::thread_exit(0)
    }
    let r = ipc::reply_recv(ep, &echo, None);
    REPLIED.store(2, Ordering::SeqCst);
    // The stop message (or an error): the test is over.
    sys::thread_exit(if r.is_ok() { 0 } else { 3 })
}

/// On CPU 0: a fast call from the last byte of the user half.
extern "C" fn last_byte_caller(_: u64) -> ! {
    if !util::pin0() {
        sys::thread_exit(1);
    }
    ipc_from_last_byte(Sysnum::IpcCall, EP.load(Ordering::SeqCst), 0x51)
}

/// Case: a fast `call` from the last byte of the user half, answered by a
/// fast `reply_recv` (the hand-off resume) and by a plain `reply` (the
/// scheduler's resume): the kernel refuses the caller's return (#GP) both
/// times.
pub fn fast_call_from_the_last_user_byte_faults() -> TestResult {
    check(util::pin0(), "set_affinity(0)")?;
    map_last_syscall()?;
    let r = (|| {
        for how in [0u64, 1] {
            let e = ok(ipc::endpoint_create(), "endpoint_create")?;
            EP.store(e.0 as u64, Ordering::SeqCst);
            HOW.store(how, Ordering::SeqCst);
            SEEN.store(0, Ordering::SeqCst);
            REPLIED.store(0, Ordering::SeqCst);
            SERVER_UP.store(0, Ordering::SeqCst);
            let fast_before = counted(1);
            let s = util::spawn(server, 0)?;
            // The server reaches its receive on this CPU first (a fixed
            // 2 ms alone once was not enough at -smp 8 on 2 host cores).
            util::await_flag(&SERVER_UP, 2_000_000);
            let refused = util::rip_refusals();
            let c = util::spawn(last_byte_caller, 0)?;
            let cst = c.join()?;
            let fast = counted(1) - fast_before;
            if how == 0 {
                // The server waits in its second receive: stop it.
                sys::sleep_ns(2_000_000);
                let stop = Message {
                    label: 0xdead,
                    words: [0; 6],
                };
                let _ = ipc::send(e, &stop);
            }
            let sst = s.join()?;
            let _ = ipc::handle_close(e.0);
            note!(
                "answer {how}: caller {cst:?}, server {sst:?}, seen {:#x}, replied {}, fast calls {fast}",
                SEEN.load(Ordering::SeqCst),
                REPLIED.load(Ordering::SeqCst)
            );
            check(
                SEEN.load(Ordering::SeqCst) == 0x51,
                "the server got no call",
            )?;
            check(fast > 0, "the call did not take the fast path")?;
            util::expect_rip_refused(cst, refused)?;
            check(sst == Status::Exited(0), "the server failed")?;
        }
        Ok(())
    })();
    unmap_last();
    r?;
    check(sys::null() == 0, "the main thread is not well afterwards")
}

/// On CPU 0: receives one call normally, then answers it with a fast
/// `reply_recv` from the last byte of the user half, whose receive blocks
/// frameless until the test's second call hands off to it.
extern "C" fn last_byte_server(_: u64) -> ! {
    if !util::pin0() {
        sys::thread_exit(1);
    }
    let ep = EP.load(Ordering::SeqCst);
    let m = match ipc::recv(Endpoint(ep as u32), None) {
        Ok(Received::Msg { msg, .. }) => msg,
        _ => sys::thread_exit(2),
    };
    SEEN.store(m.label as u64, Ordering::SeqCst);
    ipc_from_last_byte(Sysnum::IpcReplyRecv, ep, m.label as u64 + 1)
}

/// Case: a fast `reply_recv` from the last byte of the user half: its
/// reply reaches the caller; its receive, resumed by the next fast call's
/// hand-off, ends with the kernel's #GP (the second call fails, its
/// server dead).
pub fn fast_reply_recv_from_the_last_user_byte_faults() -> TestResult {
    check(util::pin0(), "set_affinity(0)")?;
    map_last_syscall()?;
    let r = (|| {
        let e = ok(ipc::endpoint_create(), "endpoint_create")?;
        EP.store(e.0 as u64, Ordering::SeqCst);
        SEEN.store(0, Ordering::SeqCst);
        let replies_before = counted(2);
        let calls_before = counted(1);
        let refused = util::rip_refusals();
        let s = util::spawn(last_byte_server, 0)?;
        sys::sleep_ns(2_000_000);
        let m = Message {
            label: 0x60,
            words: [1, 2, 3, 4, 5, 6],
        };
        let first = ipc::call(e, &m, None);
        // The server blocked in its receive on this CPU: a fast call
        // hands off to it, and it resumes frameless.
        sys::sleep_ns(2_000_000);
        let second = ipc::call(e, &m, None);
        let sst = s.join()?;
        let _ = ipc::handle_close(e.0);
        let (replies, calls) = (counted(2) - replies_before, counted(1) - calls_before);
        note!("first {first:?}, second {second:?}, server {sst:?}, fast replies {replies}, fast calls {calls}");
        check(
            first.map(|r| r.label) == Ok(0x61),
            "the first call got no reply",
        )?;
        check(second.is_err(), "the second call got a reply")?;
        check(replies > 0, "the reply_recv did not take the fast path")?;
        util::expect_rip_refused(sst, refused)
    })();
    unmap_last();
    r?;
    check(sys::null() == 0, "the main thread is not well afterwards")
}

/// On CPU 0: IPC syscall `op` (0: `call`, 1: `reply_recv`) from the last
/// byte of the user half on handle 0, which names nothing.
extern "C" fn last_byte_refused(op: u64) -> ! {
    if !util::pin0() {
        sys::thread_exit(1);
    }
    let n = if op == 0 {
        Sysnum::IpcCall
    } else {
        Sysnum::IpcReplyRecv
    };
    ipc_from_last_byte(n, 0, 0x52)
}

/// Case: a fast `call` and a fast `reply_recv` from the last byte of the
/// user half that the IPC entry refuses at once (`BadHandle`): they never
/// wait, so they end in the entry's own end, not a frameless resume; the
/// kernel refuses each return (#GP) all the same.
pub fn refused_fast_ipc_from_the_last_user_byte_faults() -> TestResult {
    map_last_syscall()?;
    let r = (|| {
        for op in [0u64, 1] {
            let refused = util::rip_refusals();
            let st = util::spawn(last_byte_refused, op)?.join()?;
            note!("op {op}: {st:?}");
            util::expect_rip_refused(st, refused)?;
        }
        Ok(())
    })();
    unmap_last();
    r?;
    check(sys::null() == 0, "the main thread is not well afterwards")
}
