//! SMP cases: many threads hopping between CPUs while making syscalls
//! (counters, XMM state and `cpu_id` must stay consistent), per-CPU syscall
//! accounting, TLB shootdown on `unmap` seen from another CPU, and the FS/GS
//! bases following a thread from CPU to CPU.
//!
//! Each case also runs at `--smp 1`: the cross-CPU part is then skipped (with
//! a note) or collapses onto CPU 0, and the single-CPU logic still runs.

use crate::note;
use crate::util::{self, arg_of, deadline_ms, from_arg, TestResult};
use abi::prot;
use abi::status::Status;
use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use libipc::{bench::rdtsc, sys};

/// Threads in [`smp_stress_counters_add_up`] at most.
const STRESS_MAX: usize = 16;
/// How long each stress thread runs, in `clock_ns` time.
const STRESS_NS: u64 = 1_500_000_000;
/// A TSC backstop for the stress loop, in case the clock stops.
const STRESS_BACKSTOP_MS: u64 = 3_000;

/// The iterations counted by all stress threads together.
static STRESS_TOTAL: AtomicU64 = AtomicU64::new(0);

/// One stress thread: its inputs and what it saw.
struct StressJob {
    /// CPUs online.
    cpus: u64,
    /// The xorshift seed (non-zero) and the XMM6-7 pattern's seed.
    seed: u64,
    /// The XMM6-7 value this thread keeps loaded.
    xmm_want: [u64; 4],
    /// What XMM6-7 held at the first mismatch.
    xmm_got: [u64; 4],
    /// Iteration of the first XMM mismatch (0 = none).
    xmm_bad_at: u64,
    /// Iterations done.
    count: u64,
    /// Syscalls made (each counted exactly once).
    syscalls: u64,
    /// Bit k set: `cpu_id()` returned k at some point.
    cpus_seen: u64,
    /// First out-of-range `cpu_id()` + 1 (0 = none).
    bad_cpu: u64,
    /// First (pinned CPU + 1, CPU seen) where a pinned thread ran elsewhere.
    wrong_cpu: (u64, u64),
    /// `set_affinity` calls that failed.
    affinity_errs: u64,
    /// `null()` calls that did not return 0.
    null_errs: u64,
}

impl StressJob {
    fn new(i: usize, cpus: u64) -> Self {
        let seed = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1) | 1;
        let xmm_want = core::array::from_fn(|j| {
            (0x5a00_0000_0000_0000 | ((i as u64) << 48) | ((j as u64) << 40)) ^ seed
        });
        StressJob {
            cpus,
            seed,
            xmm_want,
            xmm_got: [0; 4],
            xmm_bad_at: 0,
            count: 0,
            syscalls: 0,
            cpus_seen: 0,
            bad_cpu: 0,
            wrong_cpu: (0, 0),
            affinity_errs: 0,
            null_errs: 0,
        }
    }

    /// Checks what the thread recorded (after it was joined).
    fn check(&self, i: usize) -> TestResult {
        if self.xmm_bad_at != 0 {
            note!(
                "thread {i}, iteration {}: xmm6:xmm7 = {:x?}, expected {:x?}",
                self.xmm_bad_at,
                self.xmm_got,
                self.xmm_want
            );
            return Err("a thread's XMM6/XMM7 changed under it");
        }
        if self.bad_cpu != 0 {
            note!(
                "thread {i}: cpu_id() = {} with {} CPUs",
                self.bad_cpu - 1,
                self.cpus
            );
            return Err("cpu_id() returned a CPU that is not online");
        }
        if self.wrong_cpu.0 != 0 {
            note!(
                "thread {i}: pinned to CPU {} but cpu_id() = {}",
                self.wrong_cpu.0 - 1,
                self.wrong_cpu.1
            );
            return Err("a pinned thread ran on another CPU");
        }
        if self.affinity_errs != 0 {
            note!(
                "thread {i}: {} set_affinity calls failed",
                self.affinity_errs
            );
            return Err("set_affinity to an online CPU failed");
        }
        if self.null_errs != 0 {
            note!("thread {i}: {} null() calls failed", self.null_errs);
            return Err("null() did not return 0");
        }
        if self.count == 0 {
            note!("thread {i} made no progress");
            return Err("a stress thread never ran its loop");
        }
        Ok(())
    }
}

/// Loads `v` into XMM6 (words 0-1) and XMM7 (words 2-3).
fn xmm67_load(v: &[u64; 4]) {
    // SAFETY: reads `*v` only. The soft-float target never allocates XMM
    // registers, so overwriting XMM6/XMM7 breaks no compiler assumption.
    unsafe {
        asm!(
            "movdqu xmm6, xmmword ptr [{p}]",      // xmm6 := words 0-1
            "movdqu xmm7, xmmword ptr [{p} + 16]", // xmm7 := words 2-3
            p = in(reg) v.as_ptr(),                 // p: the pattern
            options(readonly, nostack, preserves_flags),
        );
    }
}

/// Stores XMM6 (words 0-1) and XMM7 (words 2-3) into `v`.
fn xmm67_store(v: &mut [u64; 4]) {
    // SAFETY: writes the 32 bytes of `*v` only; the registers are only read.
    unsafe {
        asm!(
            "movdqu xmmword ptr [{p}], xmm6",      // words 0-1 := xmm6
            "movdqu xmmword ptr [{p} + 16], xmm7", // words 2-3 := xmm7
            p = in(reg) v.as_mut_ptr(),             // p: where to store
            options(nostack, preserves_flags),
        );
    }
}

/// The next value of a xorshift64 generator.
fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

extern "C" fn stress_thread(arg: u64) -> ! {
    // SAFETY: `smp_stress_counters_add_up` passes a `StressJob` with `arg_of`
    // and joins before touching or dropping it.
    let job: &mut StressJob = unsafe { from_arg(arg) };
    let mut rng = job.seed;
    let mut pinned: Option<u64> = None;
    let mut got = [0u64; 4];
    let (mut count, mut made) = (0u64, 0u64);
    xmm67_load(&job.xmm_want);
    let end = sys::clock_ns() + STRESS_NS;
    made += 1;
    let backstop = deadline_ms(STRESS_BACKSTOP_MS);
    loop {
        let now = sys::clock_ns();
        made += 1;
        if now >= end || rdtsc() >= backstop {
            break;
        }
        if sys::null() != 0 {
            job.null_errs += 1;
        }
        let cpu = sys::cpu_id();
        made += 2;
        if cpu >= job.cpus || cpu >= 64 {
            if job.bad_cpu == 0 {
                job.bad_cpu = cpu + 1;
            }
        } else {
            job.cpus_seen |= 1 << cpu;
        }
        if let Some(p) = pinned {
            if cpu != p && job.wrong_cpu.0 == 0 {
                job.wrong_cpu = (p + 1, cpu);
            }
        }
        count += 1;
        STRESS_TOTAL.fetch_add(1, Ordering::Relaxed);
        if count.is_multiple_of(4) {
            sys::yield_now();
            made += 1;
        }
        if count.is_multiple_of(64) {
            sys::sleep_ns(100_000);
            made += 1;
        }
        if count.is_multiple_of(32) {
            // CPU `cpus` stands for "unpinned".
            let target = xorshift(&mut rng) % (job.cpus + 1);
            if target == job.cpus {
                if sys::set_affinity(u64::MAX).is_err() {
                    job.affinity_errs += 1;
                }
                pinned = None;
            } else if sys::set_affinity(target).is_ok() {
                pinned = Some(target);
            } else {
                job.affinity_errs += 1;
                pinned = None;
            }
            made += 1;
        }
        xmm67_store(&mut got);
        if got != job.xmm_want && job.xmm_bad_at == 0 {
            job.xmm_bad_at = count;
            job.xmm_got = got;
        }
    }
    job.count = count;
    job.syscalls = made;
    sys::thread_exit(0)
}

/// Sums `cpu_syscalls` over CPUs `0..cpus` (None if one read fails).
fn syscalls_on_all(cpus: u64) -> Option<u64> {
    (0..cpus).try_fold(0u64, |sum, k| sys::cpu_syscalls(k).ok().map(|c| sum + c))
}

/// Case: 2 x CPUs threads (at most 16) each loop for 1.5 s over `null`,
/// `yield` (every 4th), `sleep` (every 64th) and a random `set_affinity` or
/// unpin (every 32nd), keeping a private XMM6/XMM7 pattern loaded. Nothing
/// may fault; per-thread counts add up to the shared atomic total; every
/// thread progresses; XMM6/XMM7 never change; `cpu_id()` is always online
/// and, while pinned, the pinned CPU; the per-CPU syscall counters grew by at
/// least the syscalls made (and not absurdly more); with 2+ CPUs at least one
/// thread ran on two CPUs.
pub fn smp_stress_counters_add_up() -> TestResult {
    let cpus = sys::cpu_count();
    let n = (2 * cpus as usize).clamp(2, STRESS_MAX);
    STRESS_TOTAL.store(0, Ordering::Relaxed);
    let mut jobs: [StressJob; STRESS_MAX] = core::array::from_fn(|i| StressJob::new(i, cpus));
    let mut threads: [Option<util::Thread>; STRESS_MAX] = Default::default();
    let before = syscalls_on_all(cpus).ok_or("cpu_syscalls of an online CPU failed")?;
    let mut first_err = None;
    for (job, slot) in jobs.iter_mut().zip(threads.iter_mut()).take(n) {
        match util::spawn(stress_thread, arg_of(job)) {
            Ok(t) => *slot = Some(t),
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    for (i, t) in threads.iter_mut().enumerate() {
        if let Some(t) = t.take() {
            if let Err(e) = t.join().and_then(util::expect_ok) {
                note!("stress thread {i}");
                first_err = first_err.or(Some(e));
            }
        }
    }
    let after = syscalls_on_all(cpus).ok_or("cpu_syscalls of an online CPU failed")?;
    if let Some(e) = first_err {
        return Err(e);
    }
    let jobs = &jobs[..n];
    for (i, job) in jobs.iter().enumerate() {
        job.check(i)?;
    }
    let sum: u64 = jobs.iter().map(|j| j.count).sum();
    let total = STRESS_TOTAL.load(Ordering::Relaxed);
    if sum != total {
        note!("per-thread counts sum to {sum}, shared total is {total}");
        return Err("per-thread counts do not add up to the shared total");
    }
    let made: u64 = jobs.iter().map(|j| j.syscalls).sum();
    let counted = after.wrapping_sub(before);
    // Beyond the threads' own: spawns, joins, unmaps and exits (a few per
    // thread), the counter reads, and whatever other processes do meanwhile.
    let slack = 16 * n as u64 + 4 * cpus + 2_000;
    if counted < made || counted > made + slack {
        note!("threads made {made} syscalls; the per-CPU counters grew by {counted}");
        return Err("the per-CPU syscall counters do not add up");
    }
    let movers = jobs.iter().filter(|j| j.cpus_seen.count_ones() > 1).count();
    note!(
        "{n} threads, {sum} iterations, {made} syscalls ({} more counted), {movers} ran on 2+ CPUs",
        counted - made
    );
    if cpus < 2 {
        note!("1 CPU: migration not checked");
    } else if movers == 0 {
        return Err("no thread ever ran on a second CPU");
    }
    Ok(())
}

/// Null syscalls per CPU in [`syscalls_are_counted_on_the_cpu_that_made_them`].
const COUNTED_CALLS: u64 = 1_000;
/// Syscalls beyond those tolerated on the measured CPU (the second counter
/// read, plus whatever else briefly runs there).
const COUNTED_SLACK: u64 = 50;

/// Case: pinned to each CPU k in turn, 1000 `null()` calls raise CPU k's
/// syscall counter by just over 1000, and another CPU's by less than 1000.
pub fn syscalls_are_counted_on_the_cpu_that_made_them() -> TestResult {
    let r = count_on_each_cpu();
    let _ = sys::set_affinity(u64::MAX);
    r
}

fn count_on_each_cpu() -> TestResult {
    let cpus = sys::cpu_count();
    if cpus < 2 {
        note!("1 CPU: no other CPU's counter to compare");
    }
    let read = |k: u64| {
        sys::cpu_syscalls(k).map_err(|e| {
            note!("cpu_syscalls({k}): {e}");
            "cpu_syscalls of an online CPU failed"
        })
    };
    for k in 0..cpus {
        sys::set_affinity(k).map_err(|e| {
            note!("set_affinity({k}): {e}");
            "set_affinity to an online CPU failed"
        })?;
        let on = sys::cpu_id();
        if on != k {
            note!("pinned to CPU {k}, running on {on}");
            return Err("set_affinity did not move the caller");
        }
        let other = (cpus > 1).then(|| (k + 1) % cpus);
        let j0 = other.map(read).transpose()?;
        let c0 = read(k)?;
        for _ in 0..COUNTED_CALLS {
            if sys::null() != 0 {
                return Err("null() did not return 0");
            }
        }
        let c1 = read(k)?;
        let j1 = other.map(read).transpose()?;
        let grew = c1.wrapping_sub(c0);
        if grew <= COUNTED_CALLS || grew > COUNTED_CALLS + COUNTED_SLACK {
            note!("CPU {k}: {COUNTED_CALLS} null() calls there raised its counter by {grew}");
            return Err("syscalls were not counted on the CPU that made them");
        }
        if let (Some(j), Some(j0), Some(j1)) = (other, j0, j1) {
            let grew_j = j1.wrapping_sub(j0);
            if grew_j >= COUNTED_CALLS {
                note!(
                    "{COUNTED_CALLS} null() calls on CPU {k} raised CPU {j}'s counter by {grew_j}"
                );
                return Err("syscalls were counted on a CPU that did not make them");
            }
        }
    }
    Ok(())
}

/// Where [`unmapped_page_is_never_read_stale`] maps its pages (one per round).
const STALE_AREA: u64 = 0x4700_0000_0000;
/// Rounds of [`unmapped_page_is_never_read_stale`].
const STALE_ROUNDS: u64 = 20;
/// Reads the reader makes before the page is unmapped.
const STALE_READS: u64 = 10_000;
/// What every word of the page holds.
const STALE_MAGIC: u64 = 0x57a1_e0ff_dead_beef;

/// One reader thread of [`unmapped_page_is_never_read_stale`].
struct Reader {
    page: u64,
    cpu: u64,
    /// Set (Release) by the main thread once `unmap` has returned.
    unmapped: AtomicBool,
    /// Reads done so far.
    count: AtomicU64,
    /// The pinning worked and `cpu_id()` agreed.
    pinned: AtomicBool,
    /// A read that succeeded after `unmapped` was seen set.
    stale: AtomicU64,
    /// A read that returned something other than [`STALE_MAGIC`] (+ 1).
    wrong: AtomicU64,
}

/// Exit codes of [`reader_thread`] (it should end with #PF instead).
const READER_PIN_FAILED: i32 = 1;
const READER_STALE: i32 = 2;
const READER_WRONG: i32 = 3;
const READER_TIMED_OUT: i32 = 4;

extern "C" fn reader_thread(arg: u64) -> ! {
    // SAFETY: `stale_round` passes a `Reader` with `arg_of` and joins before
    // touching or dropping it.
    let r: &Reader = unsafe { from_arg(arg) };
    if sys::set_affinity(r.cpu).is_err() || sys::cpu_id() != r.cpu {
        sys::thread_exit(READER_PIN_FAILED);
    }
    r.pinned.store(true, Ordering::Relaxed);
    let p = r.page as *const u64;
    let end = deadline_ms(2_000);
    let mut i = 0u64;
    loop {
        // The flag first: if it is set, `unmap` has returned, so the read
        // below must fault; a value coming back is a stale TLB entry.
        let seen = r.unmapped.load(Ordering::Acquire);
        // SAFETY: the page is mapped until the main thread unmaps it; from
        // then on this read faults and ends the thread.
        let v = unsafe { p.read_volatile() };
        if seen {
            r.stale.store(v | 1, Ordering::Relaxed);
            sys::thread_exit(READER_STALE);
        }
        if v != STALE_MAGIC {
            r.wrong.store(v.wrapping_add(1), Ordering::Relaxed);
            sys::thread_exit(READER_WRONG);
        }
        i += 1;
        r.count.store(i, Ordering::Relaxed);
        if i.is_multiple_of(1024) && rdtsc() >= end {
            sys::thread_exit(READER_TIMED_OUT);
        }
    }
}

/// Case: a thread on CPU 1 keeps reading a page; CPU 0 unmaps it and then
/// raises a flag. The reader checks the flag before each read, so once it
/// sees the flag its next read must fault: a successful read is a stale TLB
/// entry that `unmap` failed to shoot down. 20 rounds, fresh page and
/// reader each time. (At 1 CPU the reader shares CPU 0: still valid.)
pub fn unmapped_page_is_never_read_stale() -> TestResult {
    if !util::pin0() {
        return Err("set_affinity(0) failed");
    }
    let cpu = if sys::cpu_count() >= 2 {
        1
    } else {
        note!("1 CPU: the reader runs on CPU 0 (no cross-CPU shootdown)");
        0
    };
    for round in 0..STALE_ROUNDS {
        stale_round(STALE_AREA + round * 4096, cpu).inspect_err(|_| note!("round {round}"))?;
    }
    Ok(())
}

fn stale_round(page: u64, cpu: u64) -> TestResult {
    sys::map_anon(page, 4096, prot::WRITE).map_err(|e| {
        note!("map_anon({page:#x}): {e}");
        "map_anon failed"
    })?;
    for i in 0..512 {
        // SAFETY: the page was just mapped writable; `i` stays inside it and
        // no other thread uses it yet.
        unsafe { (page as *mut u64).add(i).write_volatile(STALE_MAGIC) };
    }
    let mut r = Reader {
        page,
        cpu,
        unmapped: AtomicBool::new(false),
        count: AtomicU64::new(0),
        pinned: AtomicBool::new(false),
        stale: AtomicU64::new(0),
        wrong: AtomicU64::new(0),
    };
    let th = match util::spawn(reader_thread, arg_of(&mut r)) {
        Ok(t) => t,
        Err(e) => {
            // SAFETY: no thread uses the page.
            let _ = unsafe { sys::unmap(page, 4096) };
            return Err(e);
        }
    };
    let give_up = deadline_ms(1_000);
    while r.count.load(Ordering::Relaxed) < STALE_READS && rdtsc() < give_up {
        sys::yield_now();
    }
    // SAFETY: only the reader uses the page, and it is meant to fault.
    let unmapped = unsafe { sys::unmap(page, 4096) };
    r.unmapped.store(true, Ordering::Release);
    let st = th.join()?;
    let reads = r.count.load(Ordering::Relaxed);
    if let Err(e) = unmapped {
        note!("unmap: {e}");
        return Err("unmap of a mapped page failed");
    }
    match st {
        Status::Faulted(14) => {}
        Status::Exited(READER_PIN_FAILED) => return Err("the reader could not pin itself"),
        Status::Exited(READER_STALE) => {
            note!(
                "after {reads} reads the reader saw the flag and then read {:#x}",
                r.stale.load(Ordering::Relaxed)
            );
            return Err("a page was read after unmap returned (stale TLB entry)");
        }
        Status::Exited(READER_WRONG) => {
            note!(
                "the page read {:#x}, expected {STALE_MAGIC:#x}",
                r.wrong.load(Ordering::Relaxed).wrapping_sub(1)
            );
            return Err("a mapped page read back the wrong value");
        }
        Status::Exited(READER_TIMED_OUT) => {
            return Err("the reader never faulted after unmap (timed out)")
        }
        other => {
            note!("reader ended with {other:?}");
            return Err("the reader was not stopped by a page fault");
        }
    }
    if !r.pinned.load(Ordering::Relaxed) {
        return Err("the reader could not pin itself");
    }
    if reads < STALE_READS {
        note!("the reader made only {reads} reads in 1 s");
        return Err("the reader barely ran before the unmap");
    }
    Ok(())
}

/// What [`hop_thread`] finds at `fs:[0]` and `gs:[0]`.
static HOP_FS: AtomicU64 = AtomicU64::new(0xf5f5_0000_1234_5678);
static HOP_GS: AtomicU64 = AtomicU64::new(0x6565_0000_8765_4321);

/// What [`hop_thread`] saw at its first failure.
struct Hop {
    cpus: u64,
    /// 0 = fine; else which check failed first.
    fail: u64,
    /// The CPU it was asked to hop to.
    to: u64,
    /// `cpu_id()` there.
    on: u64,
    /// `fs:[0]`, `gs:[0]` there.
    seen: (u64, u64),
}

/// [`Hop::fail`] values.
const HOP_SET_BASE: u64 = 1;
const HOP_AFFINITY: u64 = 2;
const HOP_WRONG_CPU: u64 = 3;
const HOP_BASES: u64 = 4;

extern "C" fn hop_thread(arg: u64) -> ! {
    // SAFETY: `migration_keeps_fs_base` passes a `Hop` with `arg_of` and
    // joins before touching or dropping it.
    let h: &mut Hop = unsafe { from_arg(arg) };
    if sys::set_fs_base(HOP_FS.as_ptr() as u64).is_err()
        || sys::set_gs_base(HOP_GS.as_ptr() as u64).is_err()
    {
        h.fail = HOP_SET_BASE;
        sys::thread_exit(0);
    }
    let want = (
        HOP_FS.load(Ordering::Relaxed),
        HOP_GS.load(Ordering::Relaxed),
    );
    for round in 0..2 {
        for k in 0..h.cpus {
            h.to = k;
            if sys::set_affinity(k).is_err() {
                h.fail = HOP_AFFINITY;
                break;
            }
            if round == 1 {
                // Also leave the CPU through the blocking path.
                sys::sleep_ns(200_000);
            }
            h.seen = util::read_fs_gs();
            h.on = sys::cpu_id();
            if h.on != k {
                h.fail = HOP_WRONG_CPU;
                break;
            }
            if h.seen != want {
                h.fail = HOP_BASES;
                break;
            }
        }
        if h.fail != 0 {
            break;
        }
    }
    sys::thread_exit(0)
}

/// Case: a thread sets its FS and GS bases, then hops over every CPU twice
/// (`set_affinity`, the second time also sleeping on each); after each hop
/// `cpu_id()` must be the target and `fs:[0]`/`gs:[0]` its own values.
pub fn migration_keeps_fs_base() -> TestResult {
    let cpus = sys::cpu_count();
    if cpus < 2 {
        note!("1 CPU: no migration, checking across pin and sleep only");
    }
    let mut h = Hop {
        cpus,
        fail: 0,
        to: 0,
        on: 0,
        seen: (0, 0),
    };
    util::expect_ok(util::run(hop_thread, arg_of(&mut h))?)?;
    match h.fail {
        0 => Ok(()),
        HOP_SET_BASE => Err("set_fs_base/set_gs_base of a user address failed"),
        HOP_AFFINITY => {
            note!("set_affinity({})", h.to);
            Err("set_affinity to an online CPU failed")
        }
        HOP_WRONG_CPU => {
            note!("pinned to CPU {}, running on {}", h.to, h.on);
            Err("set_affinity did not move the thread")
        }
        _ => {
            note!(
                "on CPU {}: fs:[0], gs:[0] = {:#x}, {:#x}; expected {:#x}, {:#x}",
                h.on,
                h.seen.0,
                h.seen.1,
                HOP_FS.load(Ordering::Relaxed),
                HOP_GS.load(Ordering::Relaxed)
            );
            Err("the FS/GS base did not follow the thread to another CPU")
        }
    }
}
