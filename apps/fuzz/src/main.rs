//! The in-tree syscall fuzzer (`init=fuzz fuzz.seed=N fuzz.iters=N
//! fuzz.skip=a,b`; init passes the parameters in one word, see the `fuzz`
//! library).
//!
//! Phases:
//! 1. [`worker`]: many threads spread over every CPU make `iters` random
//!    syscalls ([`gen`]); the ones that could end or maim the fuzzer run in
//!    throwaway child processes ([`child`]); every call is timed and one
//!    that stays in the kernel over 10 ms (three times out of three) is a
//!    finding; a run where no thread progresses for 20 s is a hang.
//! 2. [`hazards`]: register and instruction hazards in throwaway threads.
//! 3. [`storms`]: the priority probe, resource storms, bit-flipped images.
//! 4. [`ipc`]: random IPC on a pool of real handles.
//! 5. [`hw`]: suspend/resume storms across CPUs, exit notifications.
//!
//! Then free memory and the thread and process counts must settle back to
//! the baseline taken before phase 1. The last line is
//! `fuzz: seed=S syscalls=N faults=F ok` (exit 0) or
//! `fuzz: seed=S syscalls=N faults=F FAILED: ...` (exit 1); every finding
//! is a line `fuzz: FINDING seed=S: ...` before it.
//!
//! The same seed makes the same calls in every thread (the interleaving
//! across CPUs is the machine's).
#![no_std]
#![no_main]
#![forbid(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

mod child;
mod gen;
mod hazards;
mod hw;
mod ipc;
mod reuse;
mod servers;
mod storms;
mod tasks;
mod util;
mod worker;

use abi::report::FuzzSummary;
use core::sync::atomic::Ordering;
use fuzz::{Category, Config};
use libipc::{print, println, sys};
use util::COUNT;

/// Settled figures: free memory, threads, processes.
fn figures() -> Option<(u64, u64, u64)> {
    sys::sysinfo()
        .ok()
        .map(|i| (i.free_bytes, i.threads, i.processes))
}

/// Pinned to CPU `cpu`, then exits.
extern "C" fn visit(cpu: u64) -> ! {
    let _ = sys::set_affinity(cpu);
    sys::sleep_ns(1_000_000);
    sys::thread_exit(0)
}

/// Runs a short thread on every CPU, twice: the kernel frees a dead
/// thread's stack when its CPU next switches, so afterwards every CPU holds
/// the same (one) stack in limbo, before the run and after it.
fn visit_every_cpu(ncpus: u64) {
    for _ in 0..2 {
        for cpu in 0..ncpus {
            if let Ok(t) = util::spawn(visit, cpu) {
                let _ = t.join();
            }
        }
    }
}

/// Polls `sysinfo` until it equals `want` (up to `ms` milliseconds); the
/// last figures seen.
fn settle(want: Option<(u64, u64, u64)>, ms: u64) -> Option<(u64, u64, u64)> {
    let mut last = figures();
    for _ in 0..ms / 10 {
        sys::sleep_ns(10_000_000);
        let now = figures();
        match want {
            Some(w) if now == Some(w) => return now,
            None if now == last => return now,
            _ => last = now,
        }
    }
    last
}

#[no_mangle]
fn main(arg: u64) -> i32 {
    // A demand-zero stack takes all its frames now (see the function).
    libipc::rt::pretouch_stack();
    let cfg = Config::decode(arg);
    util::SEED.store(cfg.seed as u64, Ordering::Relaxed);
    let ncpus = sys::cpu_count().max(1);
    let workers = (2 * ncpus as usize).clamp(2, worker::MAX_WORKERS);
    print!(
        "fuzz: seed={} iters={} cpus={ncpus} workers={workers} skip=",
        cfg.seed, cfg.iters
    );
    for c in Category::ALL.iter().filter(|c| cfg.skips(**c)) {
        print!("{},", c.name());
    }
    println!();
    util::calibrate();

    let mut windows = [0u64; worker::MAX_WORKERS + 3];
    for (w, slot) in windows.iter_mut().enumerate().take(workers) {
        *slot = gen::arena(w);
    }
    windows[workers] = gen::LAST_PAGE;
    windows[workers + 1] = hazards::HAZARD_WINDOW;
    windows[workers + 2] = storms::STORM_WINDOW;
    if let Err(e) = util::pretouch(&windows[..workers + 3]) {
        println!(
            "{}",
            FuzzSummary::failed(cfg.seed.into(), 0, 0, format_args!("cannot map ({e})"))
        );
        return 1;
    }
    // The baseline: let the figures stop moving first.
    storms::warm_up(&cfg);
    servers::warm_up();
    visit_every_cpu(ncpus);
    let Some(base) = settle(None, 2000) else {
        println!("{}", FuzzSummary::failed(cfg.seed.into(), 0, 0, "sysinfo"));
        return 1;
    };
    let t0 = sys::clock_ns();

    let mut finished = worker::run(&cfg, workers, ncpus);
    let t1 = sys::clock_ns();
    println!(
        "fuzz: phase 1: {} syscalls in {} ms, {} child scripts",
        COUNT.syscalls.load(Ordering::Relaxed),
        (t1 - t0) / 1_000_000,
        COUNT.children.load(Ordering::Relaxed)
    );
    if finished {
        if !cfg.skips(Category::Hazards) {
            hazards::run(&cfg);
        }
        let t2 = sys::clock_ns();
        println!("fuzz: phase 2 (hazards): {} ms", (t2 - t1) / 1_000_000);
        finished = storms::run(&cfg);
        let t3 = sys::clock_ns();
        println!("fuzz: phase 3 (storms): {} ms", (t3 - t2) / 1_000_000);
        // --- breakit (issue 11): before phase 4, which closes every
        // handle (the name service's too) ---
        let ts = sys::clock_ns();
        finished = finished && servers::run(cfg.seed as u64);
        println!(
            "fuzz: phase servers: {} requests in {} ms",
            servers::OPS_DONE.load(Ordering::Relaxed),
            (sys::clock_ns() - ts) / 1_000_000
        );
        finished = finished && ipc::run(cfg.seed as u64);
        println!(
            "fuzz: phase 4 (ipc): {} operations in {} ms",
            ipc::OPS_DONE.load(Ordering::Relaxed),
            (sys::clock_ns() - t3) / 1_000_000
        );
        // --- breakhw (issue 11) ---
        let t4 = sys::clock_ns();
        finished = finished && hw::run(cfg.seed as u64);
        println!(
            "fuzz: phase 5 (hw): {} operations in {} ms",
            hw::OPS_DONE.load(Ordering::Relaxed),
            (sys::clock_ns() - t4) / 1_000_000
        );
    }

    let (syscalls, faults) = (
        COUNT.syscalls.load(Ordering::Relaxed),
        COUNT.faults.load(Ordering::Relaxed),
    );
    let seed = u64::from(cfg.seed);
    if !finished {
        println!("{}", FuzzSummary::failed(seed, syscalls, faults, "hang"));
        return 1;
    }
    // Everything the run made must be gone again. An unmap frees the page
    // tables whose whole span it names, so the run's wide unmaps may have
    // freed the windows' tables the baseline counted: build them again first.
    let _ = util::pretouch(&windows[..workers + 3]);
    visit_every_cpu(ncpus);
    let after = settle(Some(base), 3000);
    let noise = COUNT.noise.load(Ordering::Relaxed);
    if noise != 0 {
        println!("fuzz: {noise} slow calls did not repeat (host noise)");
    }
    if after != Some(base) {
        finding!(
            "leak: (free bytes, threads, processes) = {after:?} after the run, {base:?} before"
        );
    }
    let findings = COUNT.findings.load(Ordering::Relaxed);
    if findings != 0 {
        println!(
            "{}",
            FuzzSummary::failed(seed, syscalls, faults, format_args!("{findings} findings"))
        );
        return 1;
    }
    println!("{}", FuzzSummary::ok(seed, syscalls, faults));
    0
}
