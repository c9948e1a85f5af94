//! Benchmarks (run by init under `init=bench`).
//!
//! With `arg` 0 or [`ICOUNT_ARG`] this pins itself to CPU 0, runs every
//! entry of [`BENCHES`] and prints one `BENCH name=.. unit=.. min=..
//! median=.. iters=.. failed=..` line each ([`libipc::bench::report`]; the
//! unit is `instructions` when init passed [`ICOUNT_ARG`], else `cycles`);
//! init then measures `yield_switch` and prints `BENCH-DONE`. argv[1], if
//! given (the shell's `bench <prefix>`), keeps only the figures whose names
//! start with it. With other
//! bits in `arg` it is init's yield peer: pinned to CPU 0, it yields that
//! many times (init passes the largest count, and kills it when its
//! measurement is done) and exits.
//!
//! Each sample is the TSC delta around one operation. Under `--icount` the
//! TSC counts guest instructions, so the figures are exact path lengths.
//! Samples live in one static buffer (the 64 KiB stack cannot hold 10,000
//! of them, and there is no heap).
#![no_std]
#![no_main]
#![forbid(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

use abi::bootimg::encode_code;
use abi::{prot, Sysnum};
use core::arch::global_asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};
use libipc::bench::{rdtsc, report, Unit, ICOUNT_ARG};
use libipc::{println, sys};

/// Samples per figure.
const ITERS: usize = 10_000;
/// Untimed iterations before each figure (caches, TLB, branch predictors).
const WARMUP: usize = 100;

/// One benchmark: fills `samples` (at most [`ITERS`]) and returns how many it
/// filled, or why it could not run.
type BenchFn = fn(samples: &mut [u64]) -> Result<usize, &'static str>;

/// Every figure, in output order. Later figures (`ipc_call_same_core`,
/// `ipc_call_cross_core`, `ipc_buffer_4k_same_core`, `spawn_exit_wait`,
/// `page_map_unmap`, ...) slot in here as the kernel grows the syscalls.
const BENCHES: &[(&str, BenchFn)] = &[
    ("null_syscall", null_syscall),
    ("syscall_trivial", syscall_trivial),
    ("syscall_handler_trivial", syscall_handler_trivial),
    ("page_map_unmap", page_map_unmap),
    ("spawn_loader_exit_wait", spawn::spawn_exit_wait),
    ("spawn_flat_exit_wait", spawn_flat_exit_wait),
    ("ipc_call_same_core", ipc::ipc_call_same_core),
    ("ipc_call_same_core_fpu", ipc::ipc_call_same_core_fpu),
    ("ipc_call_cross_core", ipc::ipc_call_cross_core),
    ("ipc_buffer_4k_same_core", ipc::ipc_buffer_4k_same_core),
    ("notify_signal_wait", ipc::notify_signal_wait),
    // --- vm (issue 11) ---
    ("cow_fault", vm::cow_fault),
    // --- procmgr (issue 11 item 3) ---
    ("fork_exit_wait", fork::fork_exit_wait),
    ("fork_chain_10", fork::fork_chain_10),
    // --- console (issue 11 item 4) ---
    ("console_write_line", console::console_write_line),
    // --- shell2 (issue 11: spawn/exec through procmgr) ---
    ("spawn_exit_wait", fork::spawn_exit_wait),
    ("fork_exec_wait", fork::fork_exec_wait),
];

mod console;
mod fork;
mod ipc;
mod latency;
mod spawn;
mod vm;

/// `null()`: the bare syscall entry and exit path.
fn null_syscall(samples: &mut [u64]) -> Result<usize, &'static str> {
    for _ in 0..WARMUP {
        sys::null();
    }
    for s in samples.iter_mut() {
        let t0 = rdtsc();
        let r = sys::null();
        *s = rdtsc() - t0;
        if r != 0 {
            return Err("null() did not return 0");
        }
    }
    Ok(samples.len())
}

/// `thread_id()`: a real one-line syscall through the normal dispatch, so
/// the figure is what every syscall pays for entry, dispatch and exit.
fn syscall_trivial(samples: &mut [u64]) -> Result<usize, &'static str> {
    let me = sys::thread_id();
    // The raw call, exactly as `sys::null` makes it, so the two figures
    // differ only in what the kernel does.
    // SAFETY: thread_id writes no user memory.
    let thread_id = || unsafe { sys::syscall6(Sysnum::ThreadId, 0, 0, 0, 0, 0, 0) };
    for _ in 0..WARMUP {
        thread_id();
    }
    for s in samples.iter_mut() {
        let t0 = rdtsc();
        let r = thread_id();
        *s = rdtsc() - t0;
        if r != me {
            return Err("thread_id() changed");
        }
    }
    Ok(samples.len())
}

/// `cpu_id()`: a one-line syscall that the dispatcher runs through a
/// handler call (as it does every syscall that is more than a load), so the
/// figure shows what that call adds to [`syscall_trivial`].
fn syscall_handler_trivial(samples: &mut [u64]) -> Result<usize, &'static str> {
    // SAFETY: cpu_id writes no user memory.
    let cpu_id = || unsafe { sys::syscall6(Sysnum::CpuId, 0, 0, 0, 0, 0, 0) };
    for _ in 0..WARMUP {
        cpu_id();
    }
    for s in samples.iter_mut() {
        let t0 = rdtsc();
        let r = cpu_id();
        *s = rdtsc() - t0;
        // Pinned to CPU 0 by `main`.
        if r != 0 {
            return Err("cpu_id() is not 0 while pinned to CPU 0");
        }
    }
    Ok(samples.len())
}

/// Where [`page_map_unmap`] maps its page.
const MAP_PAGE: u64 = 0x4000_0000_0000;
/// Samples of [`page_map_unmap`].
const MAP_ITERS: usize = 2000;

/// `map_anon` of one writable page, one write to it (so the mapping is
/// really used), `unmap`.
fn page_map_unmap(samples: &mut [u64]) -> Result<usize, &'static str> {
    let once = || -> Result<(), &'static str> {
        sys::map_anon(MAP_PAGE, 4096, prot::WRITE).map_err(|_| "map_anon failed")?;
        // SAFETY: the page was just mapped writable; nothing else uses it.
        unsafe { (MAP_PAGE as *mut u64).write_volatile(1) };
        // SAFETY: nothing references the page any more.
        unsafe { sys::unmap(MAP_PAGE, 4096) }.map_err(|_| "unmap failed")?;
        Ok(())
    };
    for _ in 0..WARMUP {
        once()?;
    }
    let samples = &mut samples[..MAP_ITERS];
    for s in samples.iter_mut() {
        let t0 = rdtsc();
        once()?;
        *s = rdtsc() - t0;
    }
    Ok(samples.len())
}

// The smallest child process: `process_exit(arg)` (RDI already holds the
// spawn argument). Position-independent; copied into a boot image.
global_asm!(
    ".pushsection .rodata.mica_bench_child, \"a\"",
    "mica_bench_child:",
    "mov eax, {pexit}",   // rax: ProcessExit; rdi: the exit code (spawn arg)
    "syscall",
    "ud2",
    "mica_bench_child_end:",
    ".popsection",
    pexit = const Sysnum::ProcessExit as u64,
);

extern "C" {
    static mica_bench_child: u8;
    static mica_bench_child_end: u8;
}

/// Samples of [`spawn_flat_exit_wait`].
const SPAWN_ITERS: usize = 300;
/// Where the child's code goes.
const CHILD_TEXT: u64 = 0x40_0000;

/// `process_spawn` of a one-page flat child that exits at once, then
/// `process_wait` for it: a whole process lifetime through the kernel's
/// raw spawn (how every program started before the loader;
/// `spawn_exit_wait` is now the ELF path through the loader).
fn spawn_flat_exit_wait(samples: &mut [u64]) -> Result<usize, &'static str> {
    let (start, end) = (
        core::ptr::addr_of!(mica_bench_child),
        core::ptr::addr_of!(mica_bench_child_end),
    );
    // SAFETY: both labels are in one read-only section, `end` after `start`,
    // and the bytes between them never change.
    let text = unsafe { core::slice::from_raw_parts(start, end.offset_from(start) as usize) };
    let mut buf = [0u8; 256];
    let len = encode_code(CHILD_TEXT, text, &mut buf).map_err(|_| "cannot encode the child")?;
    let image = &buf[..len];
    let once = |i: u64| -> Result<(), &'static str> {
        let pid = sys::process_spawn(image, i).map_err(|_| "process_spawn failed")?;
        match sys::process_wait(pid).map(abi::status::decode) {
            Ok(abi::status::Status::Exited(c)) if c as u64 == i => Ok(()),
            _ => Err("the child did not exit with its argument"),
        }
    };
    for i in 0..WARMUP as u64 / 10 {
        once(i)?;
    }
    let samples = &mut samples[..SPAWN_ITERS];
    for (i, s) in samples.iter_mut().enumerate() {
        let t0 = rdtsc();
        once(i as u64)?;
        *s = rdtsc() - t0;
    }
    Ok(samples.len())
}

/// The sample buffer, handed out once by [`take_samples`].
struct Samples(UnsafeCell<[u64; ITERS]>);
// SAFETY: the only access is the `&mut` that `take_samples` hands out at
// most once (guarded by `TAKEN`).
unsafe impl Sync for Samples {}
static SAMPLES: Samples = Samples(UnsafeCell::new([0; ITERS]));
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The sample buffer; `None` after the first call.
fn take_samples() -> Option<&'static mut [u64; ITERS]> {
    if TAKEN.swap(true, Ordering::AcqRel) {
        return None;
    }
    // SAFETY: `TAKEN` guarantees this is the only reference ever made.
    Some(unsafe { &mut *SAMPLES.0.get() })
}

/// init's yield peer: alternates with init on CPU 0, `n` yields.
fn yield_peer(n: u64) -> i32 {
    if sys::set_affinity(0).is_err() {
        println!("bench: set_affinity(0) failed");
        return 1;
    }
    for _ in 0..n {
        sys::yield_now();
    }
    0
}

#[no_mangle]
fn main(arg: u64) -> i32 {
    let unit = Unit::rdtsc(arg & ICOUNT_ARG != 0);
    let peer_yields = arg & !ICOUNT_ARG;
    if peer_yields != 0 {
        return yield_peer(peer_yields);
    }
    // Before anything makes a handle: init gives the name service, then procmgr adopts it.
    fork::attach();
    if let Err(e) = sys::set_affinity(0) {
        println!("bench: set_affinity(0) failed: {e}");
        return 1;
    }
    let Some(buf) = take_samples() else {
        return 1;
    };
    // argv[1], if given (the shell's `bench <prefix>` through init): only
    // the figures whose names start with it.
    let filter = libipc::rt::arg(1).unwrap_or(b"");
    let chosen = |name: &str| name.as_bytes().starts_with(filter);
    let mut failed = false;
    if chosen("irq_latency_worst") {
        if let Err(why) = latency::irq_latency_worst() {
            println!("bench: irq_latency_worst failed: {why}");
            failed = true;
        }
    }
    for &(name, bench) in BENCHES.iter().filter(|(name, _)| chosen(name)) {
        buf.fill(0);
        match bench(buf) {
            Ok(n) => report(name, unit, &mut buf[..n.min(ITERS)], 0),
            Err(ipc::SKIP) => {}
            Err(why) => {
                println!("bench: {name} failed: {why}");
                // The figure's line still appears, marked failed.
                report(name, unit, &mut [], 1);
                failed = true;
            }
        }
    }
    i32::from(failed)
}
