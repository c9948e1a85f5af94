//! Phase 5 (breakhw, issue 11): the hw syscalls under SMP races.
//!
//! - Suspend/resume storm: spinner threads of this process count in user
//!   mode and sometimes block in a notification wait; this thread and a
//!   helper on another CPU suspend and resume them at random (seeded). At
//!   each checkpoint every spinner is suspended — its count must then stay
//!   still (a suspended thread ran user code: finding) — and resumed — its
//!   count must move again within 2 s (a lost resume: finding). At the end
//!   a spinner suspended and then killed must end (a parked thread the kill
//!   cannot reach: finding).
//! - Exit notification: a child is registered with several notifications
//!   (through its handle and a duplicate, re-registrations mixed in) and
//!   killed: every notification must be signalled with its latest bits.
//!
//! The run's final leak check covers what the phase created.

use crate::finding;
use crate::util::{self, Rng};
use abi::bootimg::encode_code;
use abi::rights;
use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use libipc::hw;
use libipc::ipc::{self, Notification};
use libipc::sys::{self, ThreadHandle};

/// Spinner threads.
const SPINNERS: usize = 3;
/// Random operations of this thread (the helper makes as many).
const OPS: u64 = 1200;
/// Counts of the spinners (user-mode progress).
static COUNTS: [AtomicU64; SPINNERS] = [const { AtomicU64::new(0) }; SPINNERS];
/// The spinners' thread handles, for the helper (0: none).
static HANDLES: [AtomicU64; SPINNERS] = [const { AtomicU64::new(0) }; SPINNERS];
static STOP: AtomicBool = AtomicBool::new(false);
/// The helper runs while this is set.
static HELPING: AtomicBool = AtomicBool::new(false);
/// Ends the helper thread.
static STOP_HELPER: AtomicBool = AtomicBool::new(false);
/// Set by the helper around each operation, so a checkpoint can wait out
/// one already under way (a resume landing after the checkpoint's suspends
/// would look like a suspended thread running).
static BUSY: AtomicBool = AtomicBool::new(false);
/// A notification the spinners sometimes wait on (1 ms at most).
static NTF: AtomicU64 = AtomicU64::new(0);

/// Operations made (both threads).
pub static OPS_DONE: AtomicU64 = AtomicU64::new(0);

extern "C" fn spinner(i: u64) -> ! {
    let mut r = Rng::new(i, 0x5b1);
    while !STOP.load(Ordering::Relaxed) {
        COUNTS[i as usize].fetch_add(1, Ordering::Relaxed);
        match r.below(64) {
            0 => sys::yield_now(),
            1 => {
                let _ = ipc::wait(Notification(NTF.load(Ordering::Relaxed) as u32), Some(1000));
            }
            _ => core::hint::spin_loop(),
        }
    }
    sys::thread_exit(0)
}

fn handle(i: usize) -> ThreadHandle {
    ThreadHandle::from_raw(HANDLES[i].load(Ordering::Relaxed) as u32)
}

/// One random operation on the spinners.
fn op(r: &mut Rng) {
    let i = r.below(SPINNERS as u64) as usize;
    let _ = match r.below(8) {
        0..=2 => hw::thread_suspend(handle(i)),
        3..=5 => hw::thread_resume(handle(i)),
        6 => ipc::signal(Notification(NTF.load(Ordering::Relaxed) as u32), 1),
        _ => {
            sys::yield_now();
            Ok(())
        }
    };
    OPS_DONE.fetch_add(1, Ordering::Relaxed);
}

extern "C" fn helper(seed: u64) -> ! {
    let mut r = Rng::new(seed, 0x5b2);
    // SeqCst on both flags (Dekker with `pause_helper`): once the main
    // thread has cleared HELPING and then seen BUSY clear, every later
    // iteration here sees HELPING clear before it operates.
    loop {
        BUSY.store(true, Ordering::SeqCst);
        if !HELPING.load(Ordering::SeqCst) {
            BUSY.store(false, Ordering::SeqCst);
            if STOP_HELPER.load(Ordering::SeqCst) {
                break;
            }
            sys::yield_now();
            continue;
        }
        op(&mut r);
        BUSY.store(false, Ordering::SeqCst);
    }
    sys::thread_exit(0)
}

/// Stops the helper's operations and waits for one under way to end.
fn pause_helper() {
    HELPING.store(false, Ordering::SeqCst);
    while BUSY.load(Ordering::SeqCst) {
        sys::yield_now();
    }
}

fn counts() -> [u64; SPINNERS] {
    core::array::from_fn(|i| COUNTS[i].load(Ordering::Relaxed))
}

/// Every spinner suspended must stand still; resumed, must move again.
fn checkpoint(round: u64) {
    for i in 0..SPINNERS {
        let _ = hw::thread_suspend(handle(i));
    }
    // Long enough for every kick and every 1 ms wait to end.
    sys::sleep_ns(20_000_000);
    let before = counts();
    sys::sleep_ns(20_000_000);
    let after = counts();
    if before != after {
        finding!("hw: round {round}: suspended threads ran: {before:?} -> {after:?}");
    }
    for i in 0..SPINNERS {
        let _ = hw::thread_resume(handle(i));
    }
    let t0 = sys::clock_ns();
    loop {
        let now = counts();
        if (0..SPINNERS).all(|i| now[i] != after[i]) {
            return;
        }
        if sys::clock_ns() - t0 > 2_000_000_000 {
            finding!("hw: round {round}: resumed threads stayed stopped: {after:?} -> {now:?}");
            return;
        }
        sys::sleep_ns(1_000_000);
    }
}

/// The suspend/resume storm; false when a thread could not be ended.
fn storm(seed: u64) -> bool {
    let Ok(n) = ipc::notification_create() else {
        return true;
    };
    NTF.store(u64::from(n.0), Ordering::Relaxed);
    STOP.store(false, Ordering::Relaxed);
    let mut spinners: [Option<util::Thread>; SPINNERS] = [const { None }; SPINNERS];
    for (i, s) in spinners.iter_mut().enumerate() {
        COUNTS[i].store(0, Ordering::Relaxed);
        *s = util::spawn(spinner, i as u64).ok();
        let h = s.as_ref().map_or(0, |t| u64::from(t.handle.raw()));
        HANDLES[i].store(h, Ordering::Relaxed);
    }
    let all = spinners.iter().all(Option::is_some);
    let mut r = Rng::new(seed, 0x5b0);
    if all {
        STOP_HELPER.store(false, Ordering::SeqCst);
        HELPING.store(true, Ordering::SeqCst);
        let helper_t = util::spawn(helper, seed);
        for round in 0..4 {
            for _ in 0..OPS / 4 {
                op(&mut r);
            }
            pause_helper();
            checkpoint(round);
            HELPING.store(true, Ordering::SeqCst);
        }
        pause_helper();
        STOP_HELPER.store(true, Ordering::SeqCst);
        if let Ok(t) = helper_t {
            let _ = t.join();
        }
    }
    // The last spinner is suspended, then killed: a parked thread dies.
    let mut ok = true;
    if let Some(t) = spinners[SPINNERS - 1].take() {
        let _ = hw::thread_suspend(t.handle);
        sys::sleep_ns(5_000_000);
        let _ = sys::thread_kill(t.handle);
        if t.join().is_err() {
            finding!("hw: a suspended thread could not be joined after its kill");
            ok = false;
        }
    }
    STOP.store(true, Ordering::Relaxed);
    for (i, s) in spinners.iter_mut().enumerate() {
        if let Some(t) = s.take() {
            let _ = hw::thread_resume(t.handle);
            if t.join().is_err() {
                finding!("hw: spinner {i} could not be joined");
                ok = false;
            }
        }
        HANDLES[i].store(0, Ordering::Relaxed);
    }
    let _ = ipc::handle_close(n.0);
    ok
}

/// Several holders' exit notifications on one child: all are signalled.
fn exit_notify(seed: u64, image: &[u8]) {
    let mut r = Rng::new(seed, 0x5b3);
    let Ok(pid) = sys::process_spawn(image, 0) else {
        return;
    };
    let Ok(dup) = ipc::handle_dup(pid.raw(), rights::WAIT, 0) else {
        let _ = sys::process_kill(pid);
        let _ = sys::process_wait(pid);
        return;
    };
    let dup = sys::ProcessHandle::from_raw(dup);
    let mut ntfs: [Option<(Notification, u64)>; 4] = [None; 4];
    for _ in 0..16 {
        let k = r.below(4) as usize;
        if ntfs[k].is_none() {
            ntfs[k] = ipc::notification_create().ok().map(|n| (n, 0));
        }
        if let Some((n, bits)) = ntfs[k].as_mut() {
            let b = 1 << r.below(64);
            let via = if r.one_in(2) { pid } else { dup };
            if hw::process_notify(via, *n, b).is_ok() {
                *bits = b;
            }
        }
    }
    let _ = sys::process_kill(pid);
    let _ = sys::process_wait(pid);
    for (n, bits) in ntfs.iter().flatten() {
        let got = ipc::wait(*n, Some(0));
        if *bits != 0 && got != Ok(*bits) {
            finding!("hw: exit notification: got {got:?}, registered bits {bits:#x}");
        }
        let _ = ipc::handle_close(n.0);
    }
    let _ = ipc::handle_close(dup.raw());
}

// The exit-notification child: spins until killed (position-independent).
global_asm!(
    ".pushsection .rodata.mica_fuzz_hw_children, \"a\"",
    "mica_fuzz_hw_spin:",
    "pause",
    "jmp mica_fuzz_hw_spin",
    "mica_fuzz_hw_spin_end:",
    ".popsection",
);

extern "C" {
    static mica_fuzz_hw_spin: u8;
    static mica_fuzz_hw_spin_end: u8;
}

/// The spinning child's image in `out`; its length (0: it did not fit).
pub(crate) fn spin_image(out: &mut [u8]) -> usize {
    use core::ptr::addr_of;
    let (s, e) = (addr_of!(mica_fuzz_hw_spin), addr_of!(mica_fuzz_hw_spin_end));
    // SAFETY: both labels are in the same read-only section, `e` after `s`.
    let code = unsafe { core::slice::from_raw_parts(s, e.offset_from(s) as usize) };
    encode_code(crate::child::CHILD_TEXT, code, out).unwrap_or(0)
}

/// Phase 5; false when it could not end its threads.
pub fn run(seed: u64) -> bool {
    let ok = storm(seed);
    let mut buf = [0u8; 512];
    let len = spin_image(&mut buf);
    if len != 0 {
        for round in 0..8 {
            exit_notify(seed ^ round, &buf[..len]);
        }
    }
    ok
}
