//! Phase 1: many threads, pinned round-robin over every CPU, each making its
//! share of the random syscalls (directly, or batched into child scripts),
//! timing every call; the main thread watches their progress.
//!
//! A call that took more than [`SLOW_MS`] is repeated twice (directly, or
//! by re-running the same child image); only a call slow all three times is
//! a finding, so a host that stalls a vCPU now and then is not one.

use crate::child::{self, Call, Outcome, Script};
use crate::gen::{self, Target};
use crate::util::{self, bump, syscall6, Rng, COUNT, SLOW_MS};
use crate::finding;
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
static PER_WORKER: AtomicU64 = AtomicU64::new(0);
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

/// Runs one call in this thread, timed; repeats a slow one to confirm it.
fn direct(w: usize, i: u64, c: &Call) {
    note_call(w, c, false);
    let mut slow = 0;
    let mut worst = 0;
    for _ in 0..3 {
        let t0 = rdtsc();
        // SAFETY: `gen::place` let this call run here only if it writes,
        // unmaps or protects nothing but this worker's arena, starts no
        // thread and ends nobody.
        let ret = unsafe { syscall6(c.nr, &c.args) };
        let dt = rdtsc() - t0;
        worst = worst.max(dt);
        if c.nr == Sysnum::ProcessSpawn as u64 {
            if let Ok(pid) = decode_result(ret) {
                // A random image that happened to be valid: reap it (another
                // worker's random process_wait may have reaped it first).
                if let Ok(st) = sys::process_wait(pid) {
                    count_status(st);
                }
            }
        }
        if c.flags & child::TIMED == 0 || dt <= slow_ticks() {
            break;
        }
        slow += 1;
    }
    match slow {
        0 => {}
        3 => finding!(
            "slow syscall: worker {w} call {i}: nr={} args={:#x?} took {} ms in the kernel (3 of 3 tries)",
            c.nr,
            c.args,
            worst / util::tsc_per_ms()
        ),
        _ => bump(&COUNT.noise),
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

/// Runs a script in a throwaway child; a slow call is confirmed by running
/// the same image twice more.
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
    let mut slow = 0;
    let mut worst = (0, 0);
    for _ in 0..3 {
        match run_image(&image[..len]) {
            Ok(Outcome::Slow(i, ms)) => {
                slow += 1;
                if ms >= worst.1 {
                    worst = (i, ms);
                }
            }
            Ok(Outcome::Faulted(_)) => {
                bump(&COUNT.faults);
                break;
            }
            // NoMemory and friends: another worker holds the memory.
            _ => break,
        }
    }
    match slow {
        0 => {}
        3 => {
            let c = &s.calls[worst.0.min(s.len - 1)];
            finding!(
                "slow syscall in a child: worker {w} call {}: nr={} args={:#x?} took {} ms in the kernel (3 of 3 runs)",
                first + worst.0 as u64,
                c.nr,
                c.args,
                worst.1
            )
        }
        _ => bump(&COUNT.noise),
    }
}

extern "C" fn worker(w: u64) -> ! {
    let w = w as usize;
    let cfg = cfg();
    let _ = sys::set_affinity(w as u64 % NCPUS.load(Ordering::Relaxed));
    let mut r = Rng::new(cfg.seed as u64, w as u64 + 1);
    let n = PER_WORKER.load(Ordering::Relaxed);
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
    PER_WORKER.store(cfg.iters.div_ceil(workers as u64), Ordering::Relaxed);
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
    loop {
        let all_done = (0..workers).all(|w| SLOTS[w].done.load(Ordering::Acquire));
        if all_done {
            break;
        }
        let total: u64 = (0..workers)
            .map(|w| SLOTS[w].progress.load(Ordering::Relaxed))
            .sum();
        let now = sys::clock_ns();
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
                    if s.in_child.load(Ordering::Relaxed) { "in a child script starting " } else { "" },
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
    true
}
