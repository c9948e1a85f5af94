//! Phase 4: IPC. Random operations on a small pool of real handles (and on
//! junk numbers): create, dup with random rights and badges, close, call,
//! send, recv, reply, reply_recv, signal, wait, bind, with random labels,
//! reserved bits, handle transfers (moved and copied, valid or not),
//! buffers (good, kernel, unmapped, wrapping, oversized) and capacities.
//! Peer threads serve and sometimes exit holding a call (peer death). Every
//! blocking operation carries a timeout of at most 2 ms, so a lost wake-up
//! shows as a hang of this phase (the caller's watchdog), and the run's
//! final leak check covers what the phase created.
//!
//! Then the fast path's conditions ([`fast_pair`]): calls without a timeout
//! need a partner that surely answers, so an echo thread of our own serves
//! a fresh endpoint while this thread mixes fast-path-eligible calls with
//! every near miss (a timeout, a buffer, a moved handle, a stale, a
//! receive-only or a wrong-type handle) and the echo mixes fast replies
//! with timed ones, buffer replies and moves to another CPU; every answer
//! is checked. A second caller on CPU 1 (break22) makes register-only
//! calls meanwhile, so cross-core calls meet the echo's fast and slow
//! receives, and its fast `reply_recv` finds callers queued.

use crate::finding;
use crate::util::{self, Rng};
use abi::{Error, Sysnum};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use libipc::ipc::{self, IpcRegs};
use libipc::sys;

/// Pool slots (handle numbers; 0 = empty).
const POOL: usize = 12;
static HANDLES: [AtomicU32; POOL] = [const { AtomicU32::new(0) }; POOL];
static STOP: AtomicBool = AtomicBool::new(false);
/// IPC operations made (all threads).
pub static OPS_DONE: AtomicU64 = AtomicU64::new(0);
/// Operations per thread.
const OPS: usize = 3000;
/// Peer threads at once.
const PEERS: usize = 3;

/// A buffer the kernel may read and write (never read by Rust code).
#[repr(C, align(4096))]
struct Buf([u8; 65536]);
static mut BUF: Buf = Buf([0; 65536]);

fn buf_addr() -> u64 {
    core::ptr::addr_of_mut!(BUF) as u64
}

fn pick_handle(r: &mut Rng) -> u32 {
    match r.below(8) {
        0 => r.pick(&[0, 1, u32::MAX, 1 << 10, 0x3ff, 2 << 10 | 1]),
        1 => r.next() as u32,
        _ => HANDLES[r.below(POOL as u64) as usize].load(Ordering::Relaxed),
    }
}

/// Per table slot, the newest handle number seen in it (the generation is
/// the number's high bits, so the largest is the newest). A slot's live
/// handle, if any, is its newest: the end of the phase closes these too,
/// which the fixed generation scan misses for slots reused more often
/// (spawn and wait churn slots thousands of times).
static NEWEST: [AtomicU32; 256] = [const { AtomicU32::new(0) }; 256];

fn put_handle(r: &mut Rng, h: u32) {
    if let Some(n) = NEWEST.get((h & 0x3ff) as usize) {
        n.fetch_max(h, Ordering::Relaxed);
    }
    let slot = &HANDLES[r.below(POOL as u64) as usize];
    let old = slot.swap(h, Ordering::Relaxed);
    // The displaced one is closed half the time, leaked into the table the
    // other half (closed at the end by number scan).
    if old != 0 && r.one_in(2) {
        let _ = ipc::handle_close(old);
    }
}

fn random_buffer(r: &mut Rng) -> (u64, u64) {
    match r.below(10) {
        0 => (0xffff_8000_0000_0000, 64),
        1 => (0x3000_0000_0000, 4096),
        2 => (0x7fff_ffff_f000, 0x2000),
        3 => (buf_addr(), 65537),
        4 => (buf_addr() + r.below(4096), r.below(65536 - 4096)),
        _ => (0, 0),
    }
}

/// A message-info word: usually sane, sometimes with junk.
fn random_info(r: &mut Rng, len: u64, timeout: bool) -> u64 {
    let handles = if r.one_in(4) { r.below(6) } else { 0 };
    let copy = r.below(16);
    let mut info = ipc::info(
        r.next() as u32,
        handles.min(7),
        copy,
        len.min(0x1_ffff),
        timeout,
    );
    if r.one_in(16) {
        info |= 1 << (58 + r.below(6)); // reserved or output-only bits
    }
    info
}

fn random_regs(r: &mut Rng) -> IpcRegs {
    let (addr, len) = random_buffer(r);
    let timeout_us = r.pick(&[0u32, 1, 100, 2000]);
    let h: [u32; 4] = core::array::from_fn(|_| pick_handle(r));
    IpcRegs {
        rdi: pick_handle(r) as u64,
        rsi: random_info(r, len, true),
        w: core::array::from_fn(|_| r.next()),
        r14: addr,
        r15: ipc::spec(r.pick(&[0u32, 16, 4096, 65536, 70000]), timeout_us),
        handles: ipc::pack(&h),
    }
}

/// One random operation.
fn op(r: &mut Rng, server: bool) {
    if !server && r.one_in(8) {
        // Threads and processes (main thread only: see `tasks`).
        let target = pick_handle(r);
        OPS_DONE.fetch_add(1, Ordering::Relaxed);
        if let Some(h) = crate::tasks::op(r, target) {
            put_handle(r, h);
        }
        return;
    }
    let mut regs = random_regs(r);
    let n = match r.below(if server { 14 } else { 12 }) {
        0 => Sysnum::EndpointCreate,
        1 => Sysnum::NotificationCreate,
        2 => {
            regs.rsi = r.next() & 0x7f | if r.one_in(8) { 1 << 40 } else { 0 };
            regs.w[0] = if r.one_in(2) { 0 } else { r.next() };
            Sysnum::HandleDup
        }
        3 => Sysnum::HandleClose,
        4 | 5 => Sysnum::IpcCall,
        6 => Sysnum::IpcSend,
        7 => {
            regs.rsi = r.next() & 0xff;
            Sysnum::NtfSignal
        }
        8 => Sysnum::NtfWait,
        9 => Sysnum::NtfBind,
        10 => Sysnum::IpcReply,
        11 => {
            if r.one_in(4) {
                regs.rdi = 0;
            }
            Sysnum::NtfBind
        }
        12 => Sysnum::IpcRecv,
        _ => Sysnum::IpcReplyRecv,
    };
    // Waits always carry the timeout bit (at most 2 ms).
    if matches!(
        n,
        Sysnum::IpcCall | Sysnum::IpcRecv | Sysnum::IpcReplyRecv | Sysnum::NtfWait
    ) {
        regs.rsi |= 1 << 39;
    }
    if n == Sysnum::NtfWait || n == Sysnum::IpcRecv {
        regs.rsi &= 1 << 39;
    }
    // Bits 58.. could clear the timeout's meaning only by making the call
    // invalid, which returns at once.
    let refused = fast_case_refused(r, n, &mut regs);
    // Counted apart: the summary's syscall count is the phase-1 budget.
    OPS_DONE.fetch_add(1, Ordering::Relaxed);
    // SAFETY: every buffer named is BUF (never read by Rust code) or an
    // address the kernel must refuse.
    let rax = unsafe { ipc::ipc_syscall(n, &mut regs) };
    let res = abi::decode_result(rax);
    if matches!(
        n,
        Sysnum::EndpointCreate | Sysnum::NotificationCreate | Sysnum::HandleDup
    ) {
        if let Ok(h) = res {
            put_handle(r, h as u32);
        }
    }
    if res.is_ok() {
        // Handles received: keep them in the pool.
        let got = ipc::unpack(regs.handles);
        if matches!(n, Sysnum::IpcCall | Sysnum::IpcRecv | Sysnum::IpcReplyRecv) {
            for h in got.into_iter().filter(|h| *h != 0) {
                put_handle(r, h);
            }
        }
    }
    if let Err(Error::BadSyscall) = res {
        finding!("ipc: {n:?} refused as a bad syscall number");
    }
    if let Some(want) = refused {
        if res != Err(want) {
            finding!(
                "ipc: {n:?} with rsi {:#x} r14 {:#x} r15 {:#x}: {res:?}, expected {want:?}",
                regs.rsi,
                regs.r14,
                regs.r15
            );
        }
    }
}

/// Now and then a `call` or `reply_recv` in the fast paths' register case
/// (nothing above the label in RSI: no timeout bit; break25l, after
/// lookup3 decoded that case apart) made to be refused before it could
/// block: a receive capacity past `MAX_BUFFER` (R15's low half, whatever
/// its upper half), or a receive buffer outside the user half (kernel,
/// non-canonical, wrapping, straddling the user end). The code the
/// documented decode gives (before the handle lookup).
fn fast_case_refused(r: &mut Rng, n: Sysnum, regs: &mut IpcRegs) -> Option<Error> {
    if !matches!(n, Sysnum::IpcCall | Sysnum::IpcReplyRecv) || !r.one_in(8) {
        return None;
    }
    regs.rsi &= 0xffff_ffff;
    let hi = r.next() << 32;
    let (r14, r15, want) = match r.below(6) {
        0 => (regs.r14, hi | 65537, Error::InvalidArgument),
        1 => (
            regs.r14,
            hi | (65537 + r.below(0xfffe_ffff)),
            Error::InvalidArgument,
        ),
        2 => (
            0xffff_8000_0000_0000 + r.below(1 << 20),
            1 + r.below(65536),
            Error::BadAddress,
        ),
        3 => (
            0x8000_0000_0000 - r.below(8),
            hi | (9 + r.below(64)),
            Error::BadAddress,
        ),
        4 => (u64::MAX - r.below(4096), hi | 65536, Error::BadAddress),
        _ => (r.below(0x1_0000), hi | (1 + r.below(16)), Error::BadAddress),
    };
    regs.r14 = r14;
    regs.r15 = r15;
    Some(want)
}

extern "C" fn peer(seed: u64) -> ! {
    let mut r = Rng::new(seed, 0x1bc);
    for i in 0..OPS {
        if STOP.load(Ordering::Relaxed) {
            break;
        }
        op(&mut r, true);
        // Sometimes die mid-protocol (possibly holding a call).
        if i > 10 && r.one_in(500) {
            sys::thread_exit(1);
        }
    }
    sys::thread_exit(0)
}

/// Runs the phase; false if a peer could not be joined.
pub fn run(seed: u64) -> bool {
    let mut r = Rng::new(seed, 0x1bd);
    for slot in HANDLES.iter() {
        slot.store(0, Ordering::Relaxed);
    }
    STOP.store(false, Ordering::Relaxed);
    // A sane start: two endpoints and a notification in the pool.
    for (i, slot) in HANDLES.iter().take(3).enumerate() {
        let h = if i < 2 {
            ipc::endpoint_create().map(|e| e.0)
        } else {
            ipc::notification_create().map(|n| n.0)
        };
        if let Ok(h) = h {
            slot.store(h, Ordering::Relaxed);
        }
    }
    let mut peers: [Option<util::Thread>; PEERS] = [const { None }; PEERS];
    for round in 0..4u64 {
        for (i, p) in peers.iter_mut().enumerate() {
            if p.is_none() {
                *p = util::spawn(peer, seed ^ (round << 8 | i as u64)).ok();
            }
        }
        for _ in 0..OPS / 4 {
            op(&mut r, false);
        }
        // Peers that ended (died mid-call, or finished) are replaced.
        for p in peers.iter_mut() {
            if round == 3 {
                STOP.store(true, Ordering::Relaxed);
            }
            if round == 3 {
                if let Some(t) = p.take() {
                    match t.join() {
                        // A random join or close through its number got
                        // there first (phase `tasks`): the final leak check
                        // still counts a peer that never ended.
                        Ok(_) | Err(Error::BadHandle | Error::NotFound) => {}
                        Err(_) => return false,
                    }
                }
            }
        }
    }
    // Close everything this process holds: every slot number of the table
    // (handles lost from the pool included), any generation.
    let _ = ipc::bind(None);
    for slot in HANDLES.iter() {
        let h = slot.swap(0, Ordering::Relaxed);
        if h != 0 {
            let _ = ipc::handle_close(h);
        }
    }
    close_all_handles();
    // With the table empty again (the random phase may have filled it).
    fast_pair(&mut r);
    // A number closed and refilled under its calls (`reuse`).
    crate::reuse::run(&mut r);
    true
}

/// Closes whatever is left in this process's table (numbers are slot plus
/// generation: try the generations each slot can have reached).
fn close_all_handles() {
    for slot in 0..256u32 {
        for gen in 1..64u32 {
            let _ = ipc::handle_close(gen << 10 | slot);
        }
    }
    for n in NEWEST.iter() {
        let h = n.swap(0, Ordering::Relaxed);
        if h != 0 {
            let _ = ipc::handle_close(h);
        }
    }
}

/// The label that makes the fast-pair echo reply and exit.
const ECHO_STOP: u32 = 0xdead;
/// Set by the echo when a receive failed (it then exits).
static ECHO_FAILED: AtomicU64 = AtomicU64::new(0);
/// A 4 KiB receive buffer for the echo (never read by Rust code).
#[repr(C, align(4096))]
struct Page([u8; 4096]);
static mut ECHO_BUF: Page = Page([0; 4096]);

/// The fast pair's echo: `arg` = endpoint | seed << 32. Receives into its
/// page (4 KiB) and answers each message with its label and words: mostly
/// a register-only `reply_recv` without timeout (the fast path), sometimes
/// with the timeout bit or a buffer (the slow path), and now and then it
/// moves to another CPU (the caller's fast call then finds no receiver on
/// its CPU). Received handles are closed.
extern "C" fn fast_echo(arg: u64) -> ! {
    let ep = arg as u32 as u64;
    let mut r = Rng::new(arg >> 32, 0xfa57);
    let cpus = sys::cpu_count();
    let _ = sys::set_affinity(0);
    let page = core::ptr::addr_of_mut!(ECHO_BUF) as u64;
    let mut regs = IpcRegs {
        rdi: ep,
        r14: page,
        r15: ipc::spec(4096, 0),
        ..IpcRegs::default()
    };
    let mut n = Sysnum::IpcRecv;
    loop {
        // SAFETY: the buffer named is the echo's own page.
        let res = abi::decode_result(unsafe { ipc::ipc_syscall(n, &mut regs) });
        if res.is_err() {
            ECHO_FAILED.store(1, Ordering::SeqCst);
            sys::thread_exit(1);
        }
        for h in ipc::unpack(regs.handles) {
            if h != 0 {
                let _ = ipc::handle_close(h);
            }
        }
        let label = regs.rsi as u32;
        if label == ECHO_STOP {
            let _ = ipc::reply(&ipc::Message::default());
            sys::thread_exit(0);
        }
        if cpus > 1 && r.one_in(64) {
            let _ = sys::set_affinity(r.below(cpus));
        }
        let timed = r.one_in(8);
        let len = if r.one_in(16) { r.below(64) } else { 0 };
        regs = IpcRegs {
            rdi: ep,
            rsi: ipc::info(label, 0, 0, len, timed),
            w: regs.w,
            r14: page,
            r15: ipc::spec(4096, if timed { 2_000_000 } else { 0 }),
            ..IpcRegs::default()
        };
        n = Sysnum::IpcReplyRecv;
    }
}

/// The fast pair's second caller (break22), stopped by [`SIDE_STOP`];
/// [`SIDE_BAD`] is 1 after a wrong answer, 2 after a failed call.
static SIDE_STOP: AtomicBool = AtomicBool::new(false);
static SIDE_BAD: AtomicU64 = AtomicU64::new(0);
static SIDE_CALLS: AtomicU64 = AtomicU64::new(0);
static mut SIDE_BUF: Page = Page([0; 4096]);

/// The fast pair's second caller (break22): register-only calls without a
/// timeout from CPU 1 while the pair runs, each answer checked. Its calls
/// cross cores (the cross-core call hands its message straight into the
/// echo's frame when the echo's wait asked for it: never a slow one's),
/// queue behind the first caller's (the echo's fast `reply_recv` then
/// finds a caller queued: its exit to the slow receive) or, after the echo
/// moved to CPU 1, take the same-core fast path. `arg`: endpoint | seed
/// << 32.
extern "C" fn side_caller(arg: u64) -> ! {
    let ep = arg as u32 as u64;
    let mut r = Rng::new(arg >> 32, 0x51de);
    let _ = sys::set_affinity(1);
    let page = core::ptr::addr_of_mut!(SIDE_BUF) as u64;
    while !SIDE_STOP.load(Ordering::SeqCst) {
        let label = (r.next() as u32) & 0x7fff_ffff;
        if label == ECHO_STOP {
            continue;
        }
        let w: [u64; 6] = core::array::from_fn(|_| r.next());
        // A reply buffer: the echo sometimes answers with one.
        let mut regs = IpcRegs {
            rdi: ep,
            rsi: ipc::info(label, 0, 0, 0, false),
            w,
            r14: page,
            r15: ipc::spec(4096, 0),
            ..IpcRegs::default()
        };
        // SAFETY: the only buffer named is SIDE_BUF (never read by Rust
        // code).
        let res = abi::decode_result(unsafe { ipc::ipc_syscall(Sysnum::IpcCall, &mut regs) });
        let bad = match res {
            Ok(_) if regs.rsi as u32 == label && regs.w == w => 0,
            Ok(_) => 1,
            Err(_) => 2,
        };
        if bad != 0 {
            SIDE_BAD.store(bad, Ordering::SeqCst);
            sys::thread_exit(1);
        }
        SIDE_CALLS.fetch_add(1, Ordering::Relaxed);
        if r.one_in(4) {
            for _ in 0..r.below(4000) {
                core::hint::spin_loop();
            }
        }
    }
    sys::thread_exit(0)
}

/// The fast path's conditions, against an echo that surely answers (see
/// the module docs). Findings: a wrong answer, an error where none is due,
/// or the echo failing.
fn fast_pair(r: &mut Rng) {
    let _ = sys::set_affinity(0);
    ECHO_FAILED.store(0, Ordering::SeqCst);
    let Ok(ep) = ipc::endpoint_create() else {
        finding!("ipc fast pair: endpoint_create failed with an empty table");
        return;
    };
    let Ok(echo) = util::spawn(fast_echo, ep.0 as u64 | (r.next() & 0xffff_ffff) << 32) else {
        libipc::println!("fuzz: ipc fast pair: no thread for the echo; skipped");
        let _ = ipc::handle_close(ep.0);
        return;
    };
    SIDE_STOP.store(false, Ordering::SeqCst);
    SIDE_BAD.store(0, Ordering::SeqCst);
    SIDE_CALLS.store(0, Ordering::SeqCst);
    let side = if sys::cpu_count() > 1 {
        util::spawn(side_caller, ep.0 as u64 | (r.next() & 0xffff_ffff) << 32).ok()
    } else {
        None
    };
    let ntf = ipc::notification_create().map(|n| n.0).unwrap_or(0);
    let fast0 = fast_counts();
    let mut calls = 0;
    for i in 0..2000u64 {
        if ECHO_FAILED.load(Ordering::SeqCst) != 0 {
            finding!("ipc fast pair: the echo's receive failed");
            break;
        }
        let label = (r.next() as u32) & 0x7fff_ffff;
        let w: [u64; 6] = core::array::from_fn(|_| r.next());
        // Every call can take a reply buffer (the echo sometimes sends one;
        // a reply longer than the caller's capacity would stay held).
        let mut regs = IpcRegs {
            rdi: ep.0 as u64,
            rsi: ipc::info(label, 0, 0, 0, false),
            w,
            r14: buf_addr(),
            r15: ipc::spec(4096, 0),
            ..IpcRegs::default()
        };
        // What this call should end with: `None` = the echo.
        let mut want_err = None;
        let mut cleanup = 0;
        match r.below(10) {
            // 0-4: fast-path eligible (register-only, no timeout).
            0..=4 => {}
            5 => regs.rsi |= 1 << 39, // a timeout (slow path)
            6 => {
                // A buffer (slow path), within the echo's 4 KiB.
                regs.rsi = ipc::info(label, 0, 0, 1 + r.below(64), true);
            }
            7 => {
                // A moved handle (slow path).
                match ipc::handle_dup(ep.0, ipc::rights::SEND | ipc::rights::TRANSFER, 0) {
                    Ok(h) => {
                        regs.rsi = ipc::info(label, 1, 0, 0, true);
                        regs.handles = ipc::pack(&[h]);
                    }
                    Err(_) => continue,
                }
            }
            8 => {
                // A stale number (a closed duplicate), no timeout.
                match ipc::handle_dup(ep.0, ipc::rights::SEND, 0) {
                    Ok(h) => {
                        let _ = ipc::handle_close(h);
                        regs.rdi = h as u64;
                        want_err = Some(Error::BadHandle);
                    }
                    Err(_) => continue,
                }
            }
            _ => {
                // A receive-only duplicate, or a notification: refused.
                if r.one_in(2) || ntf == 0 {
                    match ipc::handle_dup(ep.0, ipc::rights::RECV, 0) {
                        Ok(h) => {
                            regs.rdi = h as u64;
                            cleanup = h;
                            want_err = Some(Error::PermissionDenied);
                        }
                        Err(_) => continue,
                    }
                } else {
                    regs.rdi = ntf as u64;
                    want_err = Some(Error::WrongType);
                }
            }
        }
        if regs.rsi & (1 << 39) != 0 {
            regs.r15 = ipc::spec(4096, 2_000_000);
        }
        // SAFETY: the only buffer named is BUF (never read by Rust code).
        let res = abi::decode_result(unsafe { ipc::ipc_syscall(Sysnum::IpcCall, &mut regs) });
        if cleanup != 0 {
            let _ = ipc::handle_close(cleanup);
        }
        calls += 1;
        match (want_err, res) {
            (None, Ok(_)) if regs.rsi as u32 == label && regs.w == w => {}
            (Some(e), Err(got)) if e == got => {}
            (want, got) => {
                finding!(
                    "ipc fast pair: call {i} wanted {want:?} (none: the echo), got {got:?} label {:#x}/{label:#x}",
                    regs.rsi as u32
                );
                break;
            }
        }
    }
    let fast1 = fast_counts();
    SIDE_STOP.store(true, Ordering::SeqCst);
    if ECHO_FAILED.load(Ordering::SeqCst) != 0 {
        // A call of the side caller's may be queued for good: the close
        // of the only receive handle ends it (`NotDelivered`).
        let _ = ipc::handle_close(ep.0);
    }
    if let Some(t) = side {
        if t.join() != Ok(0) && ECHO_FAILED.load(Ordering::SeqCst) == 0 {
            finding!(
                "ipc fast pair: the side caller's call {} failed ({}: 1 a wrong answer, 2 an error)",
                SIDE_CALLS.load(Ordering::SeqCst),
                SIDE_BAD.load(Ordering::SeqCst)
            );
        }
    }
    libipc::println!(
        "fuzz: ipc fast pair: {calls} calls (and {} from CPU 1), {} fast calls, {} fast reply_recvs",
        SIDE_CALLS.load(Ordering::SeqCst),
        fast1.0 - fast0.0,
        fast1.1 - fast0.1
    );
    let stop = ipc::Message {
        label: ECHO_STOP,
        words: [0; 6],
    };
    if ipc::call(ep, &stop, Some(1_000_000)).is_err() || echo.join() != Ok(0) {
        finding!("ipc fast pair: the echo did not stop cleanly");
    }
    let _ = ipc::handle_close(ep.0);
    if ntf != 0 {
        let _ = ipc::handle_close(ntf);
    }
}

/// The kernel's fast-path counters summed over the CPUs: (calls,
/// reply_recvs) (`cpu_syscalls`' RSI selectors 1 and 2).
fn fast_counts() -> (u64, u64) {
    (util::cpu_counter(1), util::cpu_counter(2))
}
