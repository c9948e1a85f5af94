//! Register-state cases: what `syscall` and preemption must hand back, and
//! RFLAGS bits (DF, AC, NT, TF) that must not leak into the kernel or into
//! another thread.

use crate::fpu::{self, SimdState};
use crate::gpr::{self, GprFrame, DF, R11, RCX, RDX, USER_FLAGS};
use crate::note;
use crate::util::{self, arg_of, deadline_ms, from_arg, TestResult};
use abi::status::Status;
use abi::Sysnum;
use core::arch::asm;
use libipc::sys;

/// RFLAGS patterns (CF PF ZF SF OF / AF DF / all clear).
const PATTERNS: [u64; 3] = [0x8c5, 0x410, 0x000];

/// Case 1: every GPR but RAX/RCX/R11, RSP, and the user RFLAGS bits survive
/// a `syscall`, for three RFLAGS patterns and four syscalls (Null, ClockNs,
/// Yield, and SleepNs, which blocks and comes back through the scheduler);
/// RCX and R11 hold no kernel address afterwards.
pub fn syscall_preserves_registers() -> TestResult {
    // (number, RDI argument or None to keep the pattern value)
    let calls = [
        (Sysnum::Null, None),
        (Sysnum::ClockNs, None),
        (Sysnum::Yield, None),
        (Sysnum::SleepNs, Some(1_000_000)),
    ];
    for (c, &(nr, rdi)) in calls.iter().enumerate() {
        for (i, &flags) in PATTERNS.iter().enumerate() {
            let seed = 0x1357_9bdf_0000_0000 + ((i as u64) << 40) + ((c as u64) << 36);
            let mut f = GprFrame::new(seed, flags);
            f.nr = nr as u64;
            if let Some(v) = rdi {
                f.vals[5] = v;
            }
            gpr::syscall_regs(&mut f);
            let r = abi::decode_result(f.rax_out);
            if r.is_err() || (nr == Sysnum::Null && f.rax_out != 0) {
                note!("{nr:?} returned {r:?}");
                return Err("the syscall did not succeed");
            }
            f.check_regs(&[RCX, R11])
                .inspect_err(|_| note!("syscall {nr:?}"))?;
            if (f.flags_seen ^ flags) & USER_FLAGS != 0 {
                note!(
                    "{nr:?}: rflags {:#x} after, {flags:#x} before",
                    f.flags_seen
                );
                return Err("user RFLAGS bits changed across syscall");
            }
            for (name, v) in [("rcx", f.out[RCX]), ("r11", f.out[R11])] {
                if v >= abi::layout::USER_END {
                    note!("{nr:?}: {name} = {v:#x} after the syscall");
                    return Err("a kernel value leaked into RCX/R11");
                }
            }
        }
    }
    Ok(())
}

/// One thread of [`registers_survive_preemption`] / [`df_does_not_leak`].
struct HoldJob {
    frame: GprFrame,
    simd_want: SimdState,
    simd_got: SimdState,
    /// Also hold SIMD state around the GPR spin.
    simd: bool,
    avx: bool,
    spin_ms: u64,
    /// Pin to CPU 0 (else run wherever the scheduler likes).
    pin: bool,
    pinned: bool,
    /// TSC when the spin began and when it ended, and the CPU before and
    /// after (what [`registers_survive_migration`] uses to prove a thread was
    /// descheduled mid-spin).
    spun: (u64, u64),
    cpus: (u64, u64),
}

impl HoldJob {
    fn new(seed: u64, flags: u64, simd: bool, spin_ms: u64) -> Self {
        HoldJob {
            frame: GprFrame::new(seed, flags),
            simd_want: SimdState::pattern(seed >> 16),
            simd_got: SimdState::zeroed(),
            simd,
            avx: util::has_avx(),
            spin_ms,
            pin: true,
            pinned: false,
            spun: (0, 0),
            cpus: (0, 0),
        }
    }

    /// Checks what the thread recorded.
    fn check(&self) -> TestResult {
        if !self.pinned {
            return Err("set_affinity(0) failed");
        }
        self.frame.check_regs(&[RDX])?;
        if self.frame.flags_seen != 0 {
            note!(
                "rflags bits {:#x} changed (pattern {:#x})",
                self.frame.flags_seen,
                self.frame.flags
            );
            return Err("RFLAGS changed while the thread spun");
        }
        if self.simd {
            self.simd_got.check(&self.simd_want, self.avx)?;
        }
        Ok(())
    }
}

extern "C" fn hold_thread(arg: u64) -> ! {
    // SAFETY: the spawner passes a `HoldJob` with `arg_of` and joins before
    // touching or dropping it.
    let job: &mut HoldJob = unsafe { from_arg(arg) };
    job.pinned = !job.pin || util::pin0();
    if job.simd {
        fpu::load(&job.simd_want, job.avx);
    }
    job.cpus.0 = sys::cpu_id();
    job.spun.0 = libipc::bench::rdtsc();
    job.frame.deadline = deadline_ms(job.spin_ms);
    gpr::hold(&mut job.frame);
    job.spun.1 = libipc::bench::rdtsc();
    job.cpus.1 = sys::cpu_id();
    if job.simd {
        fpu::store(&mut job.simd_got, job.avx);
    }
    sys::thread_exit(0)
}

/// Case 2: two threads on CPU 0 each hold distinct values in every GPR (but
/// RAX/RDX), RFLAGS, XMM/YMM, MXCSR and FCW across ~100 ms of spinning; the
/// timer must preempt them and each must get its own values back.
pub fn registers_survive_preemption() -> TestResult {
    let mut a = HoldJob::new(0x0a0a_0000_1111_0000, 0x8c5, true, 100);
    let mut b = HoldJob::new(0xb0b0_0000_2222_0000, 0x410, true, 100);
    let ta = util::spawn(hold_thread, arg_of(&mut a))?;
    let tb = util::spawn(hold_thread, arg_of(&mut b));
    util::expect_ok(ta.join()?)?;
    util::expect_ok(tb?.join()?)?;
    a.check()?;
    b.check()?;
    let gap = a.frame.max_gap.max(b.frame.max_gap);
    if gap < util::preempt_gap() {
        note!("longest TSC gap {gap} ticks");
        return Err("neither thread was ever preempted");
    }
    Ok(())
}

/// Threads in [`registers_survive_migration`] at most (twice the largest CPU
/// count the boot tests use: with two threads per CPU, a preemption shows
/// even when a loaded host runs the vCPUs one after another).
const MIGRATE_THREADS: usize = 16;

/// Case 2b: more unpinned threads than CPUs hold GPR, RFLAGS and SIMD
/// values while the scheduler moves them between CPUs (where it balances).
/// A run in which no thread was descheduled mid-spin proves nothing, so it
/// fails: at some moment more threads must be between their spin's start
/// and end than there are CPUs (only preemption allows that; a TSC gap
/// alone could be the host descheduling QEMU).
pub fn registers_survive_migration() -> TestResult {
    // Under a loaded host the TSC (host time) can pass a thread's deadline
    // before the guest got round to preempting it, so a round without a
    // mid-spin preemption is retried with a longer spin. Without guest
    // preemption no round can ever show one.
    let mut spin_ms = 60;
    for _ in 0..MIGRATE_ATTEMPTS {
        if migration_round(spin_ms)? {
            return Ok(());
        }
        spin_ms *= 2;
    }
    Err("no thread was preempted mid-spin (nothing was tested)")
}

/// Spin rounds [`registers_survive_migration`] tries before it gives up.
const MIGRATE_ATTEMPTS: usize = 4;

/// One round of [`registers_survive_migration`]: checks every thread's
/// registers and returns whether some thread was descheduled mid-spin.
fn migration_round(spin_ms: u64) -> Result<bool, &'static str> {
    let n = (2 * sys::cpu_count() as usize).clamp(2, MIGRATE_THREADS);
    let mut jobs: [HoldJob; MIGRATE_THREADS] = core::array::from_fn(|i| {
        let seed = 0x3c3c_0000_0000_0000 + ((i as u64) << 48) + ((i as u64) << 16) + 0x4400;
        let mut job = HoldJob::new(seed, PATTERNS[i % PATTERNS.len()], true, spin_ms);
        job.pin = false;
        job
    });
    let mut threads: [Option<util::Thread>; MIGRATE_THREADS] = Default::default();
    let mut first_err = None;
    for (job, slot) in jobs.iter_mut().zip(threads.iter_mut()).take(n) {
        match util::spawn(hold_thread, arg_of(job)) {
            Ok(t) => *slot = Some(t),
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    for t in threads.iter_mut().filter_map(Option::take) {
        if let Err(e) = t.join().and_then(util::expect_ok) {
            first_err = first_err.or(Some(e));
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    let jobs = &jobs[..n];
    jobs.iter().try_for_each(HoldJob::check)?;
    // The most threads mid-spin at one moment (at some thread's start). A
    // thread holds its CPU from its spin's start to its end unless it is
    // preempted, so more than `cpus` at once proves a preemption.
    let overlap = jobs
        .iter()
        .map(|a| {
            jobs.iter()
                .filter(|b| b.spun.0 <= a.spun.0 && a.spun.0 < b.spun.1)
                .count()
        })
        .max()
        .unwrap_or(0);
    let cpus = sys::cpu_count() as usize;
    let moved = jobs.iter().filter(|j| j.cpus.0 != j.cpus.1).count();
    note!(
        "{n} threads on {cpus} CPUs, {spin_ms} ms spins: at most {overlap} mid-spin at once, \
         {moved} changed CPU"
    );
    Ok(overlap > cpus)
}

/// [`df_does_not_leak`]'s watcher: what it saw.
struct DfWatch {
    spin_ms: u64,
    pinned: bool,
    df_seen: u64,
    rounds: u64,
    max_gap: u64,
}

/// RFLAGS of the caller.
fn rflags() -> u64 {
    let f: u64;
    // SAFETY: pushes and pops one word on our own stack; reads RFLAGS only.
    unsafe {
        asm!(
            "pushfq",     // [rsp] := RFLAGS
            "pop {f}",    // f := RFLAGS
            f = out(reg) f,
            options(nomem, preserves_flags),
        );
    }
    f
}

extern "C" fn df_watch_thread(arg: u64) -> ! {
    // SAFETY: `df_does_not_leak` passes a `DfWatch` with `arg_of` and joins
    // before touching or dropping it.
    let w: &mut DfWatch = unsafe { from_arg(arg) };
    w.pinned = util::pin0();
    let end = deadline_ms(w.spin_ms);
    let mut prev = libipc::bench::rdtsc();
    while prev < end {
        if rflags() & DF != 0 {
            w.df_seen += 1;
        }
        // A kernel entry while the other thread holds DF=1.
        let _ = sys::clock_ns();
        w.rounds += 1;
        let now = libipc::bench::rdtsc();
        w.max_gap = w.max_gap.max(now - prev);
        prev = now;
    }
    sys::thread_exit(0)
}

/// A syscall issued with DF set: Null, then `debug_write` (a kernel copy
/// from user memory) of a known line. Exits 0 if both returned what they
/// should and DF came back set.
extern "C" fn df_syscall_thread(_arg: u64) -> ! {
    let (null_ret, null_flags): (u64, u64);
    // SAFETY: Null touches no memory; DF is cleared again before the block ends.
    unsafe {
        asm!(
            "std",              // DF := 1 going into the kernel
            "syscall",          // rax: Null -> result
            "pushfq",
            "pop {f}",          // f := RFLAGS after the syscall
            "cld",              // the Rust ABI wants DF clear
            f = out(reg) null_flags,
            inlateout("rax") Sysnum::Null as u64 => null_ret,
            lateout("rcx") _, lateout("r11") _,
        );
    }
    let line = b"df-ok\n";
    let (write_ret, write_flags): (u64, u64);
    // SAFETY: debug_write only reads `line`; DF is cleared before the end.
    unsafe {
        asm!(
            "std",              // DF := 1 going into the kernel
            "syscall",          // rax: DebugWrite -> bytes written
            "pushfq",
            "pop {f}",          // f := RFLAGS after the syscall
            "cld",              // the Rust ABI wants DF clear
            f = out(reg) write_flags,
            inlateout("rax") Sysnum::DebugWrite as u64 => write_ret,
            in("rdi") line.as_ptr(),   // rdi: the bytes
            in("rsi") line.len(),      // rsi: their length
            lateout("rcx") _, lateout("r11") _,
        );
    }
    let code = if null_ret != 0 {
        1
    } else if null_flags & DF == 0 {
        2
    } else if write_ret != line.len() as u64 {
        3
    } else if write_flags & DF == 0 {
        4
    } else {
        0
    };
    sys::thread_exit(code)
}

/// Case 3: a thread spinning with DF set never makes DF appear in another
/// thread on the same CPU (which enters the kernel all the while), and a
/// syscall issued with DF set works and hands DF back.
pub fn df_does_not_leak() -> TestResult {
    let mut holder = HoldJob::new(0xdfdf_0000_3333_0000, DF | 1, false, 60);
    let mut watch = DfWatch {
        spin_ms: 60,
        pinned: false,
        df_seen: 0,
        rounds: 0,
        max_gap: 0,
    };
    let th = util::spawn(hold_thread, arg_of(&mut holder))?;
    let tw = util::spawn(df_watch_thread, arg_of(&mut watch));
    util::expect_ok(th.join()?)?;
    util::expect_ok(tw?.join()?)?;
    holder.check()?;
    if !watch.pinned {
        return Err("set_affinity(0) failed");
    }
    if watch.df_seen != 0 {
        note!("DF set in {} of {} rounds", watch.df_seen, watch.rounds);
        return Err("DF leaked into another thread");
    }
    if watch.max_gap.max(holder.frame.max_gap) < util::preempt_gap() {
        return Err("the threads were never preempted");
    }
    match util::run(df_syscall_thread, 0)? {
        Status::Exited(0) => Ok(()),
        Status::Exited(1) => Err("Null with DF set did not return 0"),
        Status::Exited(2) => Err("DF was lost across a syscall"),
        Status::Exited(3) => Err("debug_write with DF set returned the wrong count"),
        Status::Exited(4) => Err("DF was lost across debug_write"),
        other => util::expect_ok(other),
    }
}

/// AC (bit 18) and NT (bit 14) set around a Null syscall: exits 0 if it
/// returned 0, 1 if not.
extern "C" fn ac_nt_thread(_arg: u64) -> ! {
    let (ret, after): (u64, u64);
    // SAFETY: only our own stack is touched (aligned pushes, so AC cannot
    // raise #AC); the original RFLAGS are restored before the block ends.
    unsafe {
        asm!(
            "pushfq",                      // [rsp] := original RFLAGS
            "mov {t}, [rsp]",
            "or {t}, {acnt}",              // t := original | AC | NT
            "push {t}",
            "popfq",                       // RFLAGS := with AC and NT
            "syscall",                     // rax: Null -> result
            "pushfq",
            "pop {t}",                     // t := RFLAGS after the syscall
            "popfq",                       // RFLAGS := original
            t = out(reg) after,
            acnt = const (1u64 << 18) | (1 << 14),
            inlateout("rax") Sysnum::Null as u64 => ret,
            lateout("rcx") _, lateout("r11") _,
        );
    }
    // AC must come back; NT may be cleared (a kernel may drop it on entry).
    if after & (1 << 18) == 0 {
        libipc::println!("  note: AC not handed back (rflags {after:#x})");
    }
    sys::thread_exit(i32::from(ret != 0))
}

/// TF (bit 8) set right before a Null syscall: the CPU single-steps, so the
/// thread may end with #DB (vector 1) or run to its exit.
extern "C" fn tf_thread(_arg: u64) -> ! {
    // SAFETY: only our own stack is touched; TF is cleared again before the
    // block ends (if the thread gets that far).
    unsafe {
        asm!(
            "pushfq",                      // [rsp] := original RFLAGS
            "or qword ptr [rsp], 0x100",   // with TF
            "popfq",                       // RFLAGS.TF := 1 (traps after the next instruction)
            "syscall",                     // rax: Null; entered with TF set
            "pushfq",
            "and qword ptr [rsp], -0x101", // TF := 0 in the saved copy
            "popfq",
            inlateout("rax") Sysnum::Null as u64 => _,
            lateout("rcx") _, lateout("r11") _,
        );
    }
    sys::thread_exit(0)
}

/// Case 5: syscalls with AC/NT set return normally; one with TF set ends at
/// worst its own thread with #DB; the kernel survives both.
pub fn syscall_with_tf_ac_nt_is_harmless() -> TestResult {
    match util::run(ac_nt_thread, 0)? {
        Status::Exited(0) => {}
        Status::Exited(_) => return Err("Null with AC/NT set did not return 0"),
        other => {
            note!("AC/NT thread ended with {other:?}");
            return Err("a syscall with AC/NT set killed the thread");
        }
    }
    match util::run(tf_thread, 0)? {
        Status::Exited(0) | Status::Faulted(1) => {}
        other => {
            note!("TF thread ended with {other:?}");
            return Err("a syscall with TF set ended the thread unexpectedly");
        }
    }
    if sys::null() != 0 {
        return Err("Null failed after the TF thread");
    }
    Ok(())
}
