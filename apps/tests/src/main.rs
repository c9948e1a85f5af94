//! User-space kernel tests (run by init under `init=tests`, and for the
//! shell's `tests [prefix]`: argv[1], if given, runs only the cases whose
//! names start with it).
//!
//! Prints `tests: <N> cases` first, then `test <name> ... ok` or
//! `test <name> ... FAILED: <why>` per case (detail lines, indented `note:`,
//! come just before the verdict), then `<N> passed, <M> failed`; exits 0 iff
//! nothing failed. The boot tests (scripts/smoke.sh `TESTS_CASES`) check
//! both counts against a committed number, so an empty or shrunken run fails.
//!
//! Every case runs in a thread of its own: if the case's code faults (a
//! kernel bug that corrupts user registers, say), the harness names the case
//! (`case <name> crashed: <fault>`) and goes on with the next.
//!
//! Cases live in one module per concern: [`regs`] (what syscalls and
//! preemption hand back), [`fpu`], [`faults`] (what ring 3 may not do),
//! [`args`] (syscall argument checks), [`entry`] (thread entry state, bad
//! stack pointers), [`info`] (`sysinfo`, the copy-to-user path), [`sched`], [`tls`], [`mem`], [`process`] (child
//! processes built on the fly), [`leaks`] and [`smp`] (many CPUs at once:
//! migration stress, per-CPU accounting, TLB shootdown, FS/GS bases).
//! Anything that can fault or that holds registers in states the Rust ABI
//! forbids runs in a spawned thread ([`util`]), so a kernel bug shows as a
//! failed case rather than a dead test program.
#![no_std]
#![no_main]
#![forbid(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

mod args;
mod attack2;
mod attack_servers;
mod attack_session18;
mod attackfp;
mod attackhw;
mod attackvm;
mod break21;
mod break22;
mod break22b;
mod break22s;
mod break23;
mod break23b;
mod break23p;
mod break24e;
mod break24p;
mod break24s;
mod break24t;
mod break25l;
mod break25p;
mod break25s;
mod break26l;
mod break26s;
mod break27p;
mod break27r;
mod break28p;
mod breakk2;
mod breaku;
mod cases;
mod console;
mod consrv;
mod cpu_state;
mod cut26e;
mod cut27p;
mod cut27r;
mod edit_wait;
mod entry;
mod fastpath;
mod fastpath3;
mod faults;
mod forkperf;
mod forku;
mod fpu;
mod gaps;
mod gaps2;
mod gpr;
mod handles;
mod hw;
mod info;
mod ipc;
mod ipc_attack;
mod ipc_order;
mod ipcfast;
mod ipcfr;
mod ipcl;
mod kv;
mod lazyswitch;
mod leaks;
mod lifecycle;
mod loader;
mod mem;
mod names;
mod notdeliv;
mod pmrejoin;
mod pmrestart;
mod process;
mod procmgr;
mod proto3;
mod pscpu;
mod regs;
mod rev_layers;
mod rev_life;
mod rev_syscall;
mod sched;
mod sched3;
mod shell3;
mod smp;
mod spawnrace;
mod supervise;
mod tls;
mod trace;
mod util;
mod vm;
mod vm_build;
mod vm_review;
mod waitrecheck;
mod xcore;

use abi::report::Verdict;
use abi::status::Status;
use libipc::{println, sys};
use util::{arg_of, from_arg, TestResult};

#[no_mangle]
fn main(arg: u64) -> i32 {
    // A demand-zero stack takes all its frames now (see the function).
    libipc::rt::pretouch_stack();
    supervise::configure(arg);
    // Before anything makes a handle: init's hardware roots land first.
    hw::wait_for_roots();
    procmgr::attach();
    // From here on, print through the console server (issue 11 item 4).
    if !libipc::console::attach(libipc::ipc::Endpoint(abi::bootinfo::names::HANDLE)) {
        println!("tests: no console server; printing through the kernel");
    }
    util::calibrate();
    // argv[1], if given (the shell's `tests <prefix>` through init): only
    // the cases whose names start with it run.
    let filter = libipc::rt::arg(1).unwrap_or(b"");
    let chosen = || cases::all().filter(move |(name, _)| name.as_bytes().starts_with(filter));
    match core::str::from_utf8(filter) {
        Ok("") => println!("tests: {} cases", cases::all().count()),
        Ok(f) => println!("tests: {} cases matching \"{f}\"", chosen().count()),
        Err(_) => println!(
            "tests: {} cases matching a non-UTF-8 prefix",
            chosen().count()
        ),
    }
    let mut verdict = Verdict::default();
    for &(name, case) in chosen() {
        let r = run_case(name, case);
        verdict.record(r.is_ok());
        match r {
            Ok(()) => println!("test {name} ... ok"),
            Err(why) => println!("test {name} ... FAILED: {why}"),
        }
        // A case that pinned this thread must not leave it pinned.
        let _ = sys::set_affinity(u64::MAX);
    }
    println!("{verdict}");
    i32::from(!verdict.success())
}

/// What the harness hands a case thread, and what it hands back.
struct CaseRun {
    case: fn() -> TestResult,
    result: Option<TestResult>,
}

extern "C" fn case_thread(arg: u64) -> ! {
    // SAFETY: `run_case` passes its `CaseRun` with `arg_of` and joins before
    // reading or dropping it.
    let run: &mut CaseRun = unsafe { from_arg(arg) };
    run.result = Some((run.case)());
    sys::thread_exit(0)
}

/// Runs one case in a thread of its own, so a fault in the case's code is
/// reported against that case instead of killing the whole program.
fn run_case(name: &str, case: fn() -> TestResult) -> TestResult {
    let mut run = CaseRun { case, result: None };
    let st = util::run(case_thread, arg_of(&mut run))?;
    match (st, run.result) {
        (Status::Exited(0), Some(r)) => r,
        (Status::Faulted(v), _) => {
            println!("case {name} crashed: {} (vector {v})", util::fault_name(v));
            Err("the case crashed")
        }
        (other, _) => {
            println!("case {name} crashed: its thread ended with {other:?}");
            Err("the case crashed")
        }
    }
}
