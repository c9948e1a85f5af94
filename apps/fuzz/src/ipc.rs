//! Phase 4: IPC. Random operations on a small pool of real handles (and on
//! junk numbers): create, dup with random rights and badges, close, call,
//! send, recv, reply, reply_recv, signal, wait, bind, with random labels,
//! reserved bits, handle transfers (moved and copied, valid or not),
//! buffers (good, kernel, unmapped, wrapping, oversized) and capacities.
//! Peer threads serve and sometimes exit holding a call (peer death). Every
//! blocking operation carries a timeout of at most 2 ms, so a lost wake-up
//! shows as a hang of this phase (the caller's watchdog), and the run's
//! final leak check covers what the phase created.

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
