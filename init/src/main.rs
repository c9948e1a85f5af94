//! init: the first user process.
//!
//! The kernel maps init from its boot image, maps the other boot modules
//! read-only into init's address space, and passes the address of an
//! [`abi::bootinfo::BootInfo`] page in RDI. Every other program is an ELF
//! module: init loads the loader server itself and every other program
//! through it (`load.rs`), hands the new process its handles, then starts
//! it. init greets, then runs what the command line's `init=` names:
//! - `init=tests`: runs the `tests` module and powers off with its verdict;
//! - `init=bench`: runs the `bench` module, then measures `yield_switch` against
//!   a second copy of `bench` started as a yield peer, then prints `BENCH-DONE`;
//! - `init=fuzz`: runs the `fuzz` module (the syscall fuzzer) with the
//!   command line's `fuzz.*` parameters and powers off with its verdict;
//! - `init=shell`, and no `init=` at all: the shell (`apps/shell`), which
//!   a person at the serial console uses; init powers off when it ends;
//! - `init=none`: exits after the greeting (a boot that checks only that
//!   init runs).
//!
//! Before any of them it starts its name service and the servers it
//! supervises (`names.rs`) and prints `init: all servers up` once each
//! has registered its name; `init=tests` gets a handle to the service.
#![no_std]
#![no_main]
#![forbid(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

use abi::bootinfo::{cmdline_arg, modules, BootInfo, ModuleDesc, MAGIC};
use abi::limits::{INIT_CHILD_MCP, INIT_PRIORITY};
use abi::status::{self, Status};
use libipc::bench::{Unit, ICOUNT_ARG, ICOUNT_CMDLINE_FLAG};
use libipc::{println, sys};

mod console;
mod load;
mod mark;
mod names;
mod programs;
mod rejoin;
mod say;

/// `init=none`: init greets, starts its servers and exits.
const NONE: &str = "none";

/// The command-line key naming the prefix of the cases `init=tests` runs.
const TESTS_PREFIX_KEY: &str = "tests";

/// How long init waits for every server to register before it goes on
/// without them (a loaded TCG host is slow; a passing boot takes ms).
const SERVERS_UP_TIMEOUT_US: u32 = 20_000_000;

#[no_mangle]
fn main(arg: u64) -> i32 {
    println!("Hello from userland!");
    if arg == 0 || !arg.is_multiple_of(8) {
        println!("init: no boot information page");
        return 1;
    }
    // SAFETY: the kernel maps the boot-information page read-only at `arg`
    // for init's whole life and never changes it.
    let info: &'static BootInfo = unsafe { &*(arg as *const BootInfo) };
    if info.magic != MAGIC {
        println!("init: boot information page has a bad magic");
        return 1;
    }
    // Nothing init starts may outrank it: init keeps the top priority and
    // hands its children a lower maximum (MCP), so no program -- tests and
    // benchmarks included -- can starve init, or the shutdown it performs.
    if sys::set_priority(INIT_PRIORITY).is_err()
        || sys::set_child_max_priority(INIT_CHILD_MCP).is_err()
    {
        println!("init: cannot set its priority or its children's maximum");
        return 1;
    }
    let program = cmdline_arg(info.cmdline(), modules::INIT_KEY);
    load::copy_modules(info);
    start_servers(info, program == Some(modules::TESTS));
    match program {
        Some(NONE) => 0,
        Some(modules::TESTS) => verdict(run_tests(info)),
        Some(modules::BENCH) => bench(info),
        Some(modules::FUZZ) => fuzz(info),
        // The shell is the default: what `scripts/run.sh` shows a person.
        None | Some("") | Some(modules::SHELL) => verdict(run_shell(info)),
        Some(other) => {
            println!("init: unknown init={other} (shell, tests, bench, fuzz, none)");
            let _ = sys::shutdown(false);
            1
        }
    }
}

/// Starts the name service and the supervised servers and waits until
/// each registered; goes on (saying so) if that fails or takes too long.
fn start_servers(info: &'static BootInfo, test_controls: bool) {
    let up = match names::start(info, test_controls) {
        Ok(up) => up,
        Err(why) => {
            println!("init: no name service: {why}");
            return;
        }
    };
    match libipc::ipc::wait(up, Some(SERVERS_UP_TIMEOUT_US)) {
        Ok(_) => {
            // Relaxed: read by this thread only (bench).
            SERVERS_UP_TSC.store(
                libipc::bench::rdtsc(),
                core::sync::atomic::Ordering::Relaxed,
            );
            println!("init: all servers up");
        }
        Err(e) => println!("init: the servers did not all register: {e}"),
    }
}

/// The TSC when every server had registered (0: never).
static SERVERS_UP_TSC: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Where init's own threads' stacks go (far from the image, the modules at
/// `0x1000_0000_0000` and the main stack near the top).
const STACK_REGION: u64 = 0x5000_0000_0000;
/// Distance between two stacks (the unmapped rest is a guard).
const STACK_STRIDE: u64 = 0x10_0000;
/// Bytes of each stack.
const STACK_BYTES: u64 = 64 * 1024;
/// The next stack slot (init's threads never end, so slots are not reused).
static NEXT_STACK: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Starts `entry(arg)` in a new thread of init on a fresh stack.
fn spawn_stack(entry: extern "C" fn(u64) -> !, arg: u64) -> Result<(), libipc::Error> {
    // Relaxed: only distinct slots matter.
    let n = NEXT_STACK.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    let stack = STACK_REGION + n * STACK_STRIDE;
    sys::map_anon(stack, STACK_BYTES, abi::prot::WRITE)?;
    // The top is 16-byte aligned (the kernel enters "as if called").
    let t = sys::thread_spawn(entry, stack + STACK_BYTES, arg)?;
    // Nobody joins init's threads: they end with init.
    let _ = t.close();
    Ok(())
}

pub(crate) fn module_bytes(m: &ModuleDesc) -> &'static [u8] {
    // SAFETY: the kernel maps every module read-only at `addr` for `len`
    // bytes for init's whole life.
    unsafe { core::slice::from_raw_parts(m.addr as *const u8, m.len as usize) }
}

fn wait(name: &str, pid: sys::ProcessHandle) -> Option<Status> {
    match sys::process_wait(pid) {
        Ok(word) => Some(status::decode(word)),
        Err(e) => {
            println!("init: waiting for {name} failed: {e}");
            None
        }
    }
}

/// Starts boot module `name` with `arg` in RDI (and argv `name`).
fn spawn(name: &str, arg: u64) -> Option<sys::ProcessHandle> {
    spawn_with(name, arg, |_| {})
}

/// Loads boot module `name` through the loader, lets `give` hand the new
/// process its handles (before it runs, so they land at the slots
/// `abi::boot_handles` names), then starts it with `arg` in RDI.
fn spawn_with(
    name: &str,
    arg: u64,
    give: impl FnOnce(sys::ProcessHandle),
) -> Option<sys::ProcessHandle> {
    spawn_args(name, &[], arg, give)
}

/// [`spawn_with`] with argv `name` then `args`.
fn spawn_args(
    name: &str,
    args: &[&str],
    arg: u64,
    give: impl FnOnce(sys::ProcessHandle),
) -> Option<sys::ProcessHandle> {
    let Some(loader) = names::loader() else {
        println!("init: cannot start {name}: no loader");
        return None;
    };
    let r = load::load_args(loader, name, args);
    let _ = libipc::ipc::handle_close(loader.0);
    let l = match r {
        Ok(l) => l,
        Err(e) => {
            println!("init: cannot load {name}: {e}");
            return None;
        }
    };
    give(l.process);
    match load::start(l.process, l.entry, l.rsp, arg) {
        Ok(()) => Some(l.process),
        Err(e) => {
            println!("init: cannot start {name}: {e}");
            let _ = l.process.kill();
            // `give` may have recorded an adoption: the process is gone.
            rejoin::forget(l.process);
            let _ = l.process.close();
            None
        }
    }
}

/// Runs the tests program with a handle to the name service and init's
/// hardware roots (hw, issue 11). They are given before it starts, in this
/// order, so they are the first handles of its fresh table and land at the
/// numbers `abi::boot_handles::tests` names.
/// `tests=PREFIX` on the command line runs only the cases whose names
/// start with PREFIX, as the shell's `tests PREFIX` does: a recording
/// (runner `--record`, which feeds no input) can hold one case.
fn run_tests(info: &BootInfo) -> Option<Status> {
    let prefix = cmdline_arg(info.cmdline(), TESTS_PREFIX_KEY).filter(|p| !p.is_empty());
    let args = prefix.as_slice();
    let pid = spawn_args(modules::TESTS, args, tests_arg(info), give_tests)?;
    wait(modules::TESTS, pid)
}

/// What the tests program gets before it starts (`run_tests`; the shell's
/// `tests` through `programs.rs` too).
fn give_tests(pid: sys::ProcessHandle) {
    if let Err(e) = names::give(pid) {
        println!("init: cannot give tests the name service: {e}");
    }
    for root in [abi::boot_handles::IOPORTS, abi::boot_handles::IRQS] {
        if let Err(e) = libipc::ipc::handle_give(pid, root, abi::rights_sets::HW) {
            println!("init: cannot give the tests its hardware roots: {e}");
        }
    }
    adopt(pid, modules::TESTS);
}

/// What the benchmark program gets before it starts: the name service
/// (slot 0: `spawn_exit_wait` finds the loader, `console_write_line` the
/// console), then its procmgr endpoint from the adoption
/// (`abi::boot_handles::bench`), so the fork figures can fork and wait.
fn give_bench(pid: sys::ProcessHandle) {
    if let Err(e) = names::give(pid) {
        println!("init: cannot give bench the name service: {e}");
    }
    adopt(pid, modules::BENCH);
}

/// The tests program's argument: its supervision case's kills of each
/// server (`supervise.kills=`, bits 0..16) and seed (`supervise.seed=`,
/// above); 0 for either keeps its default (apps/tests/src/supervise.rs).
fn tests_arg(info: &BootInfo) -> u64 {
    let num = |key| {
        cmdline_arg(info.cmdline(), key)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (num("supervise.kills") & 0xffff) | (num("supervise.seed") << 16)
}

/// Makes the running program `pid` a procmgr child of init, so it has a
/// PID and can fork and wait: procmgr becomes its fault handler and gives
/// it its procmgr endpoint as its next handle
/// (`abi::boot_handles::tests::PROCMGR` for the tests program). init still
/// waits for it itself (procmgr never reaps an adopted process).
fn adopt(pid: sys::ProcessHandle, program: &'static str) {
    let Some(names) = names::own_endpoint() else {
        return;
    };
    let r = libipc::names::lookup(names, libipc::procmgr::NAME)
        .map_err(|_| libipc::Error::NotFound)
        .and_then(|(ep, instance)| {
            // Not its fault handler: the tests' faulting threads must end
            // alone, as the kernel's default does.
            let r = libipc::procmgr::adopt(ep, pid, program, false);
            let _ = libipc::ipc::handle_close(ep.0);
            r.map(|(_, handle)| (handle, instance))
        });
    match r {
        // Adopted again into a restarted procmgr (rejoin.rs).
        Ok((handle, instance)) => rejoin::record(pid, program, handle, instance),
        Err(e) => println!("init: procmgr cannot adopt {program}: {e}"),
    }
}

/// Runs the shell with a handle to the name service (it finds the console
/// through it), adopted into procmgr, with a SEND handle to init's program
/// runner (`programs.rs`: `tests`, `bench`, `trace`), and waits for it
/// (init then powers off).
fn run_shell(info: &'static BootInfo) -> Option<Status> {
    let runner = programs::start(info);
    let pid = spawn_with(modules::SHELL, 0, |p| {
        match names::give(p) {
            // The shell controls the console: it names who takes a Ctrl-C.
            Ok(badge) => console::set_controller(badge),
            Err(e) => println!("init: cannot give the shell the name service: {e}"),
        }
        // Its procmgr endpoint lands next (slot 1): `ps`, `run`, `kill`.
        adopt(p, modules::SHELL);
        // Then the runner (slot 2: abi::boot_handles::shell::PROGRAMS).
        match runner {
            Some(ep) => {
                if let Err(e) = libipc::ipc::handle_give(p, ep.0, abi::rights::SEND) {
                    println!("init: cannot give the shell its program runner: {e}");
                }
            }
            None => println!("init: no program runner for the shell (tests, bench, trace fail)"),
        }
    })?;
    wait(modules::SHELL, pid)
}

/// Powers off with success iff the program exited with 0.
fn verdict(st: Option<Status>) -> i32 {
    let ok = st == Some(Status::Exited(0));
    if !ok {
        println!("init: test program ended with {st:?}");
    }
    let _ = sys::shutdown(ok);
    i32::from(!ok)
}

/// Runs the syscall fuzzer with `fuzz.seed`, `fuzz.iters` and `fuzz.skip`
/// from the command line, and powers off with its verdict.
fn fuzz(info: &BootInfo) -> i32 {
    match fuzz::Config::from_cmdline(|key| cmdline_arg(info.cmdline(), key)) {
        // The name service (slot 0) and, adopted, its procmgr endpoint
        // (slot 1: abi::boot_handles::fuzz): the fuzzer's servers phase
        // (breakit) sends the servers random requests.
        Ok(cfg) => verdict(
            spawn_with(modules::FUZZ, cfg.encode(), |p| {
                if let Err(e) = names::give(p) {
                    println!("init: cannot give fuzz the name service: {e}");
                }
                adopt(p, modules::FUZZ);
            })
            .and_then(|p| wait(modules::FUZZ, p)),
        ),
        Err(e) => {
            println!("init: {e}");
            verdict(None)
        }
    }
}

/// Iterations of the yield benchmark (the peer yields this many times too).
const YIELD_ITERS: u64 = 2000;
const YIELD_WARMUP: u64 = 100;
/// The most warm-up yields before the timed loop starts anyway (the figure
/// then reports its failures).
const YIELD_WARMUP_MAX: u64 = 100_000;
/// The yield peer's argument: yield until killed (the bench program's
/// `yield_peer`).
const YIELD_PEER_FOREVER: u64 = u64::MAX >> 1;
/// The priority a new thread starts at (the kernel's default).
const PEER_PRIORITY: u8 = 4;

fn bench(info: &BootInfo) -> i32 {
    // rdtsc counts instructions under `--icount` (the runner says so on the
    // command line); the benchmark program learns it from its argument.
    let icount = cmdline_arg(info.cmdline(), ICOUNT_CMDLINE_FLAG).is_some();
    let mode = if icount { ICOUNT_ARG } else { 0 };
    // boot_to_servers_up: the TSC from the kernel's entry to `init: all
    // servers up` (one sample; failed if the servers never came up).
    let up = SERVERS_UP_TSC.load(core::sync::atomic::Ordering::Relaxed);
    let mut boot = [up.wrapping_sub(info.entry_tsc)];
    let ok = up != 0 && info.entry_tsc != 0 && up > info.entry_tsc;
    libipc::bench::report(
        "boot_to_servers_up",
        Unit::rdtsc(icount),
        if ok { &mut boot[..] } else { &mut [] },
        usize::from(!ok),
    );
    let st = spawn_with(modules::BENCH, mode, give_bench).and_then(|p| wait(modules::BENCH, p));
    if st != Some(Status::Exited(0)) {
        println!("init: bench ended with {st:?}");
        let _ = sys::shutdown(false);
        return 1;
    }
    // yield_switch: this thread and a peer process, both pinned to CPU 0,
    // alternate; one `yield` = one switch to the other process.
    let _ = sys::set_affinity(0);
    // `yield` alternates only between equals: the peer's default priority.
    let _ = sys::set_priority(u64::from(PEER_PRIORITY));
    // The peer yields until it is killed below: however late it comes to
    // CPU 0 (its spawn goes through the loader, and it may start on
    // another CPU before it pins itself), it is there for every timed
    // yield. With a fixed count, a peer that came late ran out before the
    // timed loop did, and the yields after it did not switch (one check
    // run failed with 1,304 of 2,000; break21, session 21).
    let Some(peer) = spawn(modules::BENCH, YIELD_PEER_FOREVER) else {
        let _ = sys::shutdown(false);
        return 1;
    };
    // Warm-up: until YIELD_WARMUP yields in a row switched to the peer (it
    // is pinned to CPU 0 and alternating), at most YIELD_WARMUP_MAX yields.
    let mut in_a_row = 0;
    for _ in 0..YIELD_WARMUP_MAX {
        let before = sys::cpu_syscalls(0).unwrap_or(0);
        sys::yield_now();
        let after = sys::cpu_syscalls(0).unwrap_or(0);
        in_a_row = if after.wrapping_sub(before) >= 3 {
            in_a_row + 1
        } else {
            0
        };
        if in_a_row == YIELD_WARMUP {
            break;
        }
    }
    let mut samples = [0u64; YIELD_ITERS as usize];
    let (mut taken, mut no_switch) = (0, 0);
    for _ in 0..YIELD_ITERS {
        // CPU 0's syscall counter, read around the timed yield, proves the
        // peer ran in between: from this read to the next it rises by 2 (the
        // yield and the next read), by 3 only if the peer's yield ran too.
        let before = sys::cpu_syscalls(0).unwrap_or(0);
        let t0 = libipc::bench::rdtsc();
        sys::yield_now();
        let t1 = libipc::bench::rdtsc();
        let after = sys::cpu_syscalls(0).unwrap_or(0);
        if after.wrapping_sub(before) >= 3 {
            // A round trip is two switches (to the peer and back).
            samples[taken] = (t1 - t0) / 2;
            taken += 1;
        } else {
            no_switch += 1;
        }
    }
    if no_switch > 0 {
        println!("init: yield_switch: {no_switch} yields came back without a switch (not counted)");
    }
    // Fewer than half the yields switching means the figure measures
    // something else: report it as failed.
    let failed = if taken < YIELD_ITERS as usize / 2 {
        no_switch
    } else {
        0
    };
    libipc::bench::report(
        "yield_switch",
        Unit::rdtsc(icount),
        &mut samples[..taken],
        failed,
    );
    let _ = sys::process_kill(peer);
    let _ = sys::process_wait(peer);
    let _ = sys::set_priority(INIT_PRIORITY);
    println!("{}", abi::report::BENCH_DONE);
    let _ = sys::shutdown(true);
    0
}
