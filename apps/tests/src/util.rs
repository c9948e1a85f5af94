//! What every test module shares: threads with their own stacks, raw
//! syscalls (for numbers and arguments the safe wrappers cannot express), the
//! TSC calibration used to spin "long enough to be preempted", CPU feature
//! bits, and small helpers for checking join statuses.
//!
//! # Design choices
//! - Every case that may fault, or that holds registers in states the Rust
//!   ABI forbids, runs in a spawned thread: a ring-3 fault stops only that
//!   thread, so the runner always survives to report.
//! - Thread stacks come from `map_anon` at fixed, never-reused slots (one per
//!   spawn) and are unmapped after the join, so a wild thread cannot scribble
//!   over a later test's stack.

use abi::status::{self, Status};
use abi::{prot, Error};
use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::{bench::rdtsc, ipc, println, procmgr, sys};

/// Prints an indented detail line (before the case's verdict line).
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => { libipc::println!("  note: {}", format_args!($($arg)*)) };
}

/// The outcome of one case.
pub type TestResult = Result<(), &'static str>;

/// A thread's entry point: gets its argument in RDI and never returns.
pub type Entry = extern "C" fn(u64) -> !;

/// Where spawned threads' stacks live (far from the program, init's modules
/// at `0x1000_0000_0000` and the main stack near the top).
const STACK_REGION: u64 = 0x5000_0000_0000;
/// Distance between two stack slots (the unmapped gap is a guard).
const STACK_STRIDE: u64 = 0x10_0000;
/// Bytes of each thread stack.
const STACK_BYTES: u64 = 64 * 1024;
/// The next unused stack slot.
static NEXT_STACK: AtomicU64 = AtomicU64::new(0);

/// A spawned thread that has not been joined yet.
pub struct Thread {
    handle: sys::ThreadHandle,
    stack: u64,
}

/// Spawns `entry(arg)` on a fresh stack.
pub fn spawn(entry: Entry, arg: u64) -> Result<Thread, &'static str> {
    // SAFETY: `entry` is a Rust function with the entry signature the kernel
    // calls; whatever it does to shared state is its caller's contract.
    unsafe { spawn_at(entry as usize as u64, arg) }.map_err(|e| {
        println!("  note: thread_spawn failed: {e}");
        "thread_spawn failed"
    })
}

/// Spawns a thread that starts at the raw address `entry` (which need not be a
/// Rust function, or even valid) on a fresh stack.
///
/// # Safety
/// Whatever code runs at `entry` shares this address space: it must not
/// corrupt memory the program relies on.
pub unsafe fn spawn_at(entry: u64, arg: u64) -> Result<Thread, Error> {
    let stack = STACK_REGION + NEXT_STACK.fetch_add(1, Ordering::Relaxed) * STACK_STRIDE;
    sys::map_anon(stack, STACK_BYTES, prot::WRITE)?;
    // The top is 16-byte aligned (the kernel enters "as if called").
    let top = stack + STACK_BYTES;
    // SAFETY: the new thread's effects are the caller's contract.
    let r = unsafe { sys::thread_spawn_at(entry, top, arg) };
    match r {
        Ok(handle) => Ok(Thread { handle, stack }),
        Err(e) => {
            // SAFETY: no thread was started on the stack just mapped.
            let _ = unsafe { sys::unmap(stack, STACK_BYTES) };
            Err(e)
        }
    }
}

impl Thread {
    /// The handle `thread_spawn` gave.
    pub fn handle(&self) -> sys::ThreadHandle {
        self.handle
    }

    /// Waits for the thread to end and frees its stack.
    pub fn join(self) -> Result<Status, &'static str> {
        match sys::thread_join(self.handle) {
            Ok(word) => {
                // SAFETY: the thread has ended; nothing else uses its stack.
                let _ = unsafe { sys::unmap(self.stack, STACK_BYTES) };
                Ok(status::decode(word))
            }
            Err(e) => {
                // The stack is leaked on purpose: the thread may still run.
                println!("  note: thread_join({}) failed: {e}", self.handle);
                Err("thread_join failed")
            }
        }
    }
}

impl Thread {
    /// [`join`](Self::join) for a thread another thread may have joined
    /// first (its status is then gone: `None`); the stack is freed either
    /// way, the thread having ended (break27r).
    pub fn join_or_joined(self) -> Result<Option<Status>, &'static str> {
        match sys::thread_join(self.handle) {
            Err(Error::NotFound) => {
                // SAFETY: joined by another thread: it has ended.
                let _ = unsafe { sys::unmap(self.stack, STACK_BYTES) };
                Ok(None)
            }
            Ok(word) => {
                // SAFETY: the thread has ended; nothing else uses its stack.
                let _ = unsafe { sys::unmap(self.stack, STACK_BYTES) };
                Ok(Some(status::decode(word)))
            }
            Err(e) => {
                println!("  note: thread_join({}) failed: {e}", self.handle);
                Err("thread_join failed")
            }
        }
    }
}

/// Spawns `entry(arg)` and waits for it.
pub fn run(entry: Entry, arg: u64) -> Result<Status, &'static str> {
    spawn(entry, arg)?.join()
}

/// Checks that a thread ended with `exit(0)`.
pub fn expect_ok(st: Status) -> TestResult {
    match st {
        Status::Exited(0) => Ok(()),
        other => {
            println!("  note: thread ended with {other:?}, expected Exited(0)");
            Err("a thread did not exit with 0")
        }
    }
}

/// Checks that a thread was stopped by one of `vectors`.
pub fn expect_fault(st: Status, vectors: &[u8]) -> TestResult {
    match st {
        Status::Faulted(v) if vectors.contains(&v) => Ok(()),
        Status::Faulted(v) => {
            println!("  note: thread faulted with vector {v}, expected one of {vectors:?}");
            Err("the thread faulted with the wrong vector")
        }
        Status::Exited(c) => {
            println!("  note: thread exited with {c}, expected a fault {vectors:?}");
            Err("the thread was not stopped by a fault")
        }
    }
}

/// Syscalls the kernel refused to return from (a non-canonical return
/// RIP: `cpu_syscalls` counter 6), summed over every CPU; a failed read
/// counts 0 (so a case that expects one more fails).
pub fn rip_refusals() -> u64 {
    let read = |cpu: u64| {
        // SAFETY: cpu_syscalls writes no memory.
        abi::decode_result(unsafe { sys::syscall6(abi::Sysnum::CpuSyscalls, cpu, 6, 0, 0, 0, 0) })
            .unwrap_or(0)
    };
    (0..sys::cpu_count()).map(read).sum()
}

/// Checks that a thread whose syscall returned to a non-canonical RIP was
/// stopped by the kernel's refusal: #GP, and exactly one refusal since
/// `before` ([`rip_refusals`], read before the thread's syscall). The
/// vector alone proves nothing: TCG's SYSRET to that RIP raises #GP in
/// ring 3 (AMD-style), so the thread died the same way with the check gone
/// (on Intel that is a ring-0 #GP on the user stack, CVE-2012-0217).
pub fn expect_rip_refused(st: Status, before: u64) -> TestResult {
    let n = rip_refusals().wrapping_sub(before);
    if n != 1 {
        println!("  note: {n} non-canonical return refusals, expected 1 (thread {st:?})");
        return Err("the kernel did not refuse the non-canonical return exactly once");
    }
    expect_fault(st, &[13])
}

/// The mnemonic of exception `vector` (`#GP`).
pub fn fault_name(vector: u8) -> &'static str {
    match vector {
        0 => "#DE",
        1 => "#DB",
        3 => "#BP",
        4 => "#OF",
        5 => "#BR",
        6 => "#UD",
        7 => "#NM",
        10 => "#TS",
        11 => "#NP",
        12 => "#SS",
        13 => "#GP",
        14 => "#PF",
        16 => "#MF",
        17 => "#AC",
        19 => "#XM",
        _ => "an exception",
    }
}

/// Runs `entry(0)` in a thread and checks it was stopped by one of `vectors`.
pub fn run_expect_fault(entry: Entry, vectors: &[u8]) -> TestResult {
    expect_fault(run(entry, 0)?, vectors)
}

/// Where [`spawn_code`] links a child's position-dependent text.
pub const CHILD_TEXT: u64 = 0x40_0000;

/// Starts a child process whose one segment is `code` (read and execute, at
/// [`CHILD_TEXT`]), its first thread at the start with `arg` in RDI.
pub fn spawn_code(code: &[u8], arg: u64) -> Result<sys::ProcessHandle, &'static str> {
    let mut buf = [0u8; 2048];
    let len = abi::bootimg::encode_code(CHILD_TEXT, code, &mut buf)
        .map_err(|_| "cannot encode a child image")?;
    ok(sys::process_spawn(&buf[..len], arg), "process_spawn")
}

/// Starts a server child: [`spawn_code`] with `arg`, then gives it a copy
/// of `ep` with `rights`, which must land as its first handle
/// ([`ipc::FIRST_HANDLE`], the number its code waits on). The setup the
/// `ipc`, `fastpath` and `notdeliv` cases share.
pub fn spawn_server(
    code: &[u8],
    arg: u64,
    ep: ipc::Endpoint,
    rights: u32,
) -> Result<sys::ProcessHandle, &'static str> {
    let pid = spawn_code(code, arg)?;
    let h = ok(ipc::handle_give(pid, ep.0, rights), "handle_give")?;
    check(
        h == ipc::FIRST_HANDLE,
        "the child's first handle has another number",
    )?;
    Ok(pid)
}

/// Forks (through procmgr) a child that exits with `f()`: its PID. The
/// fork helper of the `breaku`, `forku` and `forkperf` cases.
pub fn fork_with(f: impl FnOnce() -> i32) -> Result<u32, &'static str> {
    match procmgr::fork() {
        Ok(procmgr::Fork::Parent(pid)) => Ok(pid),
        Ok(procmgr::Fork::Child) => procmgr::exit(f()),
        Err(_) => Err("fork failed"),
    }
}

/// Waits for the child `pid` names and decodes its status.
pub fn wait_status(pid: sys::ProcessHandle) -> Result<Status, &'static str> {
    ok(sys::process_wait(pid), "process_wait").map(status::decode)
}

/// `Err(what)` unless `ok`.
pub fn check(ok: bool, what: &'static str) -> TestResult {
    if ok {
        Ok(())
    } else {
        Err(what)
    }
}

/// The value, or `what` (the error noted).
pub fn ok<T>(r: Result<T, Error>, what: &'static str) -> Result<T, &'static str> {
    r.map_err(|e| {
        crate::note!("{what}: {e}");
        what
    })
}

/// Ok if `got == want`; else `what` (both values noted).
pub fn expect<T: PartialEq + core::fmt::Debug>(got: T, want: T, what: &'static str) -> TestResult {
    if got == want {
        Ok(())
    } else {
        crate::note!("{what}: got {got:?}, expected {want:?}");
        Err(what)
    }
}

/// Ok if `r` failed with exactly `want`; else `what` (what came noted).
pub fn want<T: core::fmt::Debug>(
    r: Result<T, Error>,
    want: Error,
    what: &'static str,
) -> TestResult {
    match r {
        Err(e) if e == want => Ok(()),
        other => {
            crate::note!("{what}: got {other:?}, expected Err({want:?})");
            Err(what)
        }
    }
}

/// Checks a syscall result is one of the `allowed` errors.
pub fn expect_err(r: Result<u64, Error>, allowed: &[Error], what: &'static str) -> TestResult {
    match r {
        Err(e) if allowed.contains(&e) => Ok(()),
        other => {
            println!("  note: {what}: got {other:?}, expected one of {allowed:?}");
            Err(what)
        }
    }
}

/// Passes a reference to a spawned thread as its argument.
pub fn arg_of<T>(r: &mut T) -> u64 {
    r as *mut T as u64
}

/// Recovers what [`arg_of`] passed.
///
/// # Safety
/// `arg` must come from [`arg_of`] on a `T` that outlives the thread (the
/// spawner joins before dropping it) and that nobody else touches meanwhile.
pub unsafe fn from_arg<'a, T>(arg: u64) -> &'a mut T {
    // SAFETY: the caller's contract above.
    unsafe { &mut *(arg as *mut T) }
}

/// Waits (polling every 100 us, up to 2 s) until another thread set
/// `flag` non-zero, then `settle_ns` more: for a thread that says it is
/// about to block (a server before its receive), the settle covers the
/// few instructions left. A fixed sleep alone assumed the thread had run
/// at all, which a host-starved vCPU once did not (break23, break26s).
pub fn await_flag(flag: &AtomicU64, settle_ns: u64) {
    let t0 = sys::clock_ns();
    while flag.load(Ordering::SeqCst) == 0 && sys::clock_ns() - t0 < 2_000_000_000 {
        sys::sleep_ns(100_000);
    }
    sys::sleep_ns(settle_ns);
}

/// The busy-wait hint of this program's spin loops: a compiler fence, no
/// `PAUSE`. QEMU's TCG leaves its translated code for its main loop at
/// every `PAUSE`; under record/replay (one CPU, where a spin lasts until
/// the next time slice) that made single cases take minutes to replay
/// (docs/decisions.md, `## lead, session 27`). An emulated CPU gains
/// nothing from the hint.
#[inline(always)]
pub fn relax() {
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
}

/// Pins the caller to CPU 0 (where every "same CPU" test runs its threads).
pub fn pin0() -> bool {
    sys::set_affinity(0).is_ok()
}

/// Issues syscall number `n` (any value, valid or not) with three arguments.
///
/// # Safety
/// The syscall must not write memory the program relies on, and a spawned
/// thread's code is the caller's contract.
pub unsafe fn raw_syscall(n: u64, a0: u64, a1: u64, a2: u64) -> u64 {
    let ret: u64;
    // SAFETY: `syscall` clobbers only RAX (result), RCX (return RIP) and R11
    // (RFLAGS); memory effects are the caller's contract.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") n => ret, // rax: number in, result out
            in("rdi") a0,              // argument 0
            in("rsi") a1,              // argument 1
            in("rdx") a2,              // argument 2
            lateout("rcx") _,          // return RIP
            lateout("r11") _,          // saved RFLAGS
            options(nostack),
        );
    }
    ret
}

/// Measures the TSC's rate ([`testkit::calibrate_tsc`]); a failure is
/// noted and the 1 GHz guess stays.
pub fn calibrate() {
    if let Err((ns, ticks)) = testkit::calibrate_tsc() {
        println!("  note: TSC calibration failed (ns={ns}, ticks={ticks}); assuming 1 GHz");
    }
}

pub use testkit::tsc_per_ms;

/// The TSC value `ms` milliseconds from now.
pub fn deadline_ms(ms: u64) -> u64 {
    rdtsc() + ms * tsc_per_ms()
}

/// A gap between two TSC reads this long means the thread was descheduled:
/// half a millisecond is far longer than any loop body here.
pub fn preempt_gap() -> u64 {
    tsc_per_ms() / 2
}

/// Spins until the TSC passes `deadline`; returns the longest gap seen
/// between two reads (a gap of [`preempt_gap`] or more is a preemption).
pub fn spin_until(deadline: u64) -> u64 {
    let mut prev = rdtsc();
    let mut max_gap = 0;
    while prev < deadline {
        let now = rdtsc();
        max_gap = max_gap.max(now.saturating_sub(prev));
        prev = now;
    }
    max_gap
}

/// CPUID leaf `leaf`, subleaf `sub`: (EAX, EBX, ECX, EDX).
fn cpuid(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// Whether YMM registers can be used: the CPU has AVX and the kernel enabled
/// it (CR4.OSXSAVE and XCR0 bits 1-2).
pub fn has_avx() -> bool {
    let (_, _, ecx, _) = cpuid(1, 0);
    let avx = ecx & (1 << 28) != 0;
    let osxsave = ecx & (1 << 27) != 0;
    if !(avx && osxsave) {
        return false;
    }
    let (lo, _hi): (u32, u32);
    // SAFETY: XGETBV with ECX=0 is allowed in ring 3 once CR4.OSXSAVE is set
    // (checked above); it only reads XCR0.
    unsafe {
        asm!(
            "xgetbv",
            in("ecx") 0u32, // ecx: which XCR (0)
            out("eax") lo,  // eax: XCR0 low half
            out("edx") _hi, // edx: XCR0 high half
            options(nomem, nostack, preserves_flags),
        );
    }
    lo & 0b110 == 0b110
}

/// Whether the CPU has UMIP (CPUID.7.0:ECX bit 2); the kernel enables it
/// when present, so `sgdt` and friends must fault in ring 3.
pub fn has_umip() -> bool {
    let (max, _, _, _) = cpuid(0, 0);
    max >= 7 && cpuid(7, 0).2 & (1 << 2) != 0
}

/// `fs:[0]` and `gs:[0]` (the caller pointed both bases at u64 statics).
pub fn read_fs_gs() -> (u64, u64) {
    let (fs, gs): (u64, u64);
    // SAFETY: the caller set both bases to statics holding a u64; the loads
    // read those.
    unsafe {
        asm!(
            "mov {f}, qword ptr fs:[0]",   // f := *FS base
            "mov {g}, qword ptr gs:[0]",   // g := *GS base
            f = out(reg) fs,
            g = out(reg) gs,
            options(nostack, readonly, preserves_flags),
        );
    }
    (fs, gs)
}

/// The kernel's free-memory figure (`sysinfo`), in bytes.
pub fn free_bytes() -> Result<u64, &'static str> {
    sys::sysinfo()
        .map(|i| i.free_bytes)
        .map_err(|_| "sysinfo failed")
}

/// Waits (up to 2 s) for the free figure to come back to `before`: a
/// process's last frames go when its last thread's CPU switches away, which
/// may lag its wait. A leak never comes back, so it still fails.
pub fn free_back_to(before: u64, what: &'static str) -> TestResult {
    let mut now = free_bytes()?;
    for _ in 0..1000 {
        if now >= before {
            return Ok(());
        }
        sys::sleep_ns(2_000_000);
        now = free_bytes()?;
    }
    note!(
        "{what}: {} pages missing from the free figure",
        (before - now) / 4096
    );
    Err("frames were not returned")
}
