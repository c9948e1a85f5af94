//! Phase 1: many threads, pinned round-robin over every CPU, each making its
//! share of the random syscalls (directly, or batched into child scripts),
//! timing every call; the main thread watches their progress.
//!
//! A call that took more than [`SLOW_MS`] becomes a suspect; once every
//! worker is done, each suspect is replayed alone in a fresh child three
//! times and only a call slow all three times is a finding, so a host that
//! stalls a vCPU (and with it every TLB shootdown) now and then is not one.
//!
//! # Orderings
//! The run's parameters are stored before the workers are spawned (the
//! spawn syscall orders them). Progress and the call in flight are Relaxed:
//! the watchdog only compares and prints them. `done` is Release/Acquire so
//! the watchdog sees a finished worker's last progress. The suspect list is
//! read only after every worker has been joined.

use crate::child::{self, Call, Outcome, Script};
use crate::finding;
use crate::gen::{self, Target};
use crate::util::{self, bump, syscall6, Rng, COUNT, SLOW_MS};
use abi::{decode_result, status, Error, Sysnum};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use fuzz::Config;
use libipc::{bench::rdtsc, println, sys};

/// The most workers.
pub const MAX_WORKERS: usize = 16;

/// What the watchdog can see of one worker.
struct Slot {
    /// Calls done so far.
    progress: AtomicU64,
    /// Finished its share.
    done: AtomicBool,
    /// The call in flight: number, first three arguments, and 1 if it is a
    /// child script (then `nr` is the script's first call).
    nr: AtomicU64,
    a: [AtomicU64; 3],
    in_child: AtomicBool,
}

static SLOTS: [Slot; MAX_WORKERS] = [const {
    Slot {
        progress: AtomicU64::new(0),
        done: AtomicBool::new(false),
        nr: AtomicU64::new(0),
        a: [const { AtomicU64::new(0) }; 3],
        in_child: AtomicBool::new(false),
    }
}; MAX_WORKERS];

/// The run's parameters, for the workers.
static CFG_WORD: AtomicU64 = AtomicU64::new(0);
static ITERS: AtomicU64 = AtomicU64::new(0);
static WORKERS: AtomicU64 = AtomicU64::new(1);
static NCPUS: AtomicU64 = AtomicU64::new(1);

fn cfg() -> Config {
    Config::decode(CFG_WORD.load(Ordering::Relaxed))
}

fn note_call(w: usize, c: &Call, in_child: bool) {
    let s = &SLOTS[w];
    s.nr.store(c.nr, Ordering::Relaxed);
    for i in 0..3 {
        s.a[i].store(c.args[i], Ordering::Relaxed);
    }
    s.in_child.store(in_child, Ordering::Relaxed);
}

fn slow_ticks() -> u64 {
    SLOW_MS * util::tsc_per_ms()
}

/// Runs one call in this thread, timed; a slow one becomes a suspect.
fn direct(w: usize, i: u64, c: &Call) {
    note_call(w, c, false);
    let t0 = rdtsc();
    // SAFETY: `gen::place` let this call run here only if it writes, unmaps
    // or protects nothing but this worker's arena, starts no thread and ends
    // nobody.
    let ret = unsafe { syscall6(c.nr, &c.args) };
    let dt = rdtsc() - t0;
    if c.nr == Sysnum::ProcessSpawn as u64 {
        if let Ok(pid) = decode_result(ret) {
            // A random image that happened to be valid: reap it (another
            // worker's random process_wait may have reaped it first).
            if let Ok(st) = sys::process_wait(sys::ProcessHandle::from_raw(pid as u32)) {
                count_status(st);
            }
        }
    }
    if c.nr == Sysnum::SetPriority as u64 {
        // Back to the default: a worker left at a low priority would starve
        // behind any busy thread for the rest of the run (strict priorities).
        let _ = sys::set_priority(DEFAULT_PRIORITY);
    }
    if c.flags & child::TIMED != 0 && dt > slow_ticks() {
        suspect(w, i, c);
    }
}

/// The priority threads start with.
const DEFAULT_PRIORITY: u64 = 4;

/// A call that was slow once, to be replayed when the machine is quiet.
#[derive(Clone, Copy)]
struct Suspect {
    worker: usize,
    index: u64,
    call: Call,
}

/// The most suspects replayed.
const MAX_SUSPECTS: usize = 32;

struct Suspects {
    list: once::Cell<[Option<Suspect>; MAX_SUSPECTS]>,
    next: AtomicU64,
}

/// A write-once-per-slot array: each slot index is handed out once by
/// `next`, and read only after every worker has been joined.
mod once {
    pub struct Cell<T>(pub core::cell::UnsafeCell<T>);
    // SAFETY: see `Suspects`: every slot has one writer, and readers come
    // after the writers' threads were joined (join orders the accesses).
    unsafe impl<T> Sync for Cell<T> {}
}

static SUSPECTS: Suspects = Suspects {
    list: once::Cell(core::cell::UnsafeCell::new([None; MAX_SUSPECTS])),
    next: AtomicU64::new(0),
};

fn suspect(w: usize, i: u64, c: &Call) {
    let k = SUSPECTS.next.fetch_add(1, Ordering::Relaxed) as usize;
    if k < MAX_SUSPECTS {
        // SAFETY: slot `k` was handed to this thread alone (above); nobody
        // reads the list until every worker has been joined.
        unsafe {
            (*SUSPECTS.list.0.get())[k] = Some(Suspect {
                worker: w,
                index: i,
                call: *c,
            })
        };
    }
}

/// Replays every suspect alone in a fresh child, three times, now that the
/// other threads are done: only a call slow all three times is a finding
/// (a loaded host can stall a vCPU, and with it a TLB shootdown, for long).
fn replay_suspects() {
    let n = (SUSPECTS.next.load(Ordering::Relaxed) as usize).min(MAX_SUSPECTS);
    // SAFETY: every worker has been joined; nobody writes the list any more.
    let list = unsafe { &*SUSPECTS.list.0.get() };
    let mut image = [0u8; child::IMAGE_BYTES];
    for s in list[..n].iter().flatten() {
        let mut c = s.call;
        c.flags = child::TIMED;
        let mut alone = Script::new();
        alone.push(c);
        let len = child::build_image(&alone, slow_ticks(), &mut image);
        let mut slow = 0;
        let mut worst = 0;
        for _ in 0..3 {
            match run_image(&image[..len]) {
                Ok(Outcome::Slow(_, ms)) => {
                    slow += 1;
                    worst = worst.max(ms);
                }
                Ok(Outcome::Faulted(_)) => bump(&COUNT.faults),
                _ => {}
            }
        }
        if slow == 3 {
            finding!(
                "slow syscall: worker {} call {}: nr={} args={:#x?} took {worst} ms in the kernel (3 of 3 runs alone)",
                s.worker,
                s.index,
                c.nr,
                c.args
            );
        } else {
            bump(&COUNT.noise);
        }
    }
}

fn count_status(word: u64) {
    if let status::Status::Faulted(_) = status::decode(word) {
        bump(&COUNT.faults);
    }
}

/// Spawns the child for `image` and waits; its outcome, or the spawn error.
fn run_image(image: &[u8]) -> Result<Outcome, Error> {
    let pid = sys::process_spawn(image, 0)?;
    bump(&COUNT.children);
    match sys::process_wait(pid) {
        Ok(word) => Ok(child::outcome(word)),
        // Another worker's random process_wait reaped it.
        Err(_) => Ok(child::Outcome::Other(-1)),
    }
}

/// Runs a script in a throwaway child; a slow call becomes a suspect.
fn script(w: usize, first: u64, s: &Script) {
    if s.len == 0 {
        return;
    }
    note_call(w, &s.calls[0], true);
    let mut image = [0u8; child::IMAGE_BYTES];
    let len = child::build_image(s, slow_ticks(), &mut image);
    if len == 0 {
        println!("fuzz: cannot encode a child image");
        return;
    }
    match run_image(&image[..len]) {
        Ok(Outcome::Slow(i, _)) => {
            let i = i.min(s.len - 1);
            suspect(w, first + i as u64, &s.calls[i]);
        }
        Ok(Outcome::Faulted(_)) => bump(&COUNT.faults),
        // NoMemory and friends: another worker holds the memory.
        _ => {}
    }
}

extern "C" fn worker(w: u64) -> ! {
    let w = w as usize;
    let cfg = cfg();
    let _ = sys::set_affinity(w as u64 % NCPUS.load(Ordering::Relaxed));
    let mut r = Rng::new(cfg.seed as u64, w as u64 + 1);
    // This worker's share: the remainder goes to the first workers.
    let (total, nw) = (
        ITERS.load(Ordering::Relaxed),
        WORKERS.load(Ordering::Relaxed),
    );
    let n = total / nw + u64::from((w as u64) < total % nw);
    let mut pending = Script::new();
    let mut first = 0;
    for i in 0..n {
        let mut c = gen::random_call(&mut r, gen::arena(w));
        match gen::place(&mut c, w, &cfg, &mut r) {
            Target::Direct => direct(w, i, &c),
            Target::Child => {
                if pending.len == 0 {
                    first = i;
                }
                gen::for_child(&mut c, pending.len, &cfg, &mut r);
                pending.push(c);
                if pending.full() {
                    script(w, first, &pending);
                    pending.len = 0;
                }
            }
        }
        bump(&COUNT.syscalls);
        SLOTS[w].progress.store(i + 1, Ordering::Relaxed);
    }
    script(w, first, &pending);
    // SAFETY: the arena holds nothing but what this worker's random calls mapped.
    let _ = unsafe { sys::unmap(gen::arena(w), gen::ARENA_BYTES) };
    SLOTS[w].done.store(true, Ordering::Release);
    sys::thread_exit(0)
}

/// How long no worker may make progress before the run is called hung.
const HANG_NS: u64 = 20_000_000_000;

/// Runs phase 1 with `workers` threads; false if it hung (reported).
pub fn run(cfg: &Config, workers: usize, ncpus: u64) -> bool {
    CFG_WORD.store(cfg.encode(), Ordering::Relaxed);
    NCPUS.store(ncpus.max(1), Ordering::Relaxed);
    ITERS.store(cfg.iters, Ordering::Relaxed);
    WORKERS.store(workers as u64, Ordering::Relaxed);
    let mut threads: [Option<util::Thread>; MAX_WORKERS] = [const { None }; MAX_WORKERS];
    for (w, t) in threads.iter_mut().enumerate().take(workers) {
        match util::spawn(worker, w as u64) {
            Ok(th) => *t = Some(th),
            Err(e) => {
                println!("fuzz: cannot start worker {w}: {e}");
                SLOTS[w].done.store(true, Ordering::Release);
            }
        }
    }
    // The watchdog: some worker must make progress every HANG_NS.
    let mut last = u64::MAX;
    let mut since = sys::clock_ns();
    let tenth = (cfg.iters / 10).max(1);
    let mut shown = 0;
    loop {
        let all_done = (0..workers).all(|w| SLOTS[w].done.load(Ordering::Acquire));
        if all_done {
            break;
        }
        let total: u64 = (0..workers)
            .map(|w| SLOTS[w].progress.load(Ordering::Relaxed))
            .sum();
        let now = sys::clock_ns();
        if total / tenth > shown && cfg.iters >= 100_000 {
            shown = total / tenth;
            println!("fuzz: progress {total}/{}", cfg.iters);
        }
        if total != last {
            last = total;
            since = now;
        } else if now - since > HANG_NS {
            for w in (0..workers).filter(|&w| !SLOTS[w].done.load(Ordering::Acquire)) {
                let s = &SLOTS[w];
                finding!(
                    "hang: worker {w} stuck for {} s at call {} ({}nr={} args={:#x} {:#x} {:#x})",
                    HANG_NS / 1_000_000_000,
                    s.progress.load(Ordering::Relaxed),
                    if s.in_child.load(Ordering::Relaxed) {
                        "in a child script starting "
                    } else {
                        ""
                    },
                    s.nr.load(Ordering::Relaxed),
                    s.a[0].load(Ordering::Relaxed),
                    s.a[1].load(Ordering::Relaxed),
                    s.a[2].load(Ordering::Relaxed),
                );
            }
            return false;
        }
        sys::sleep_ns(50_000_000);
    }
    for t in threads.into_iter().flatten() {
        let _ = t.join();
    }
    replay_suspects();
    true
}
