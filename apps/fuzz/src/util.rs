//! What every part of the fuzzer shares: the seeded PRNG, raw syscalls with
//! any number and arguments, threads on stacks from a fixed window, TSC
//! calibration, and the run's counters and findings.
//!
//! # Memory windows
//! Every page the fuzz process itself maps lies in a few 2 MiB windows whose
//! page tables are created once, before the baseline `sysinfo` is taken
//! ([`pretouch`]): the kernel keeps empty page tables until the process ends
//! (unless an unmap names a table's whole span: then the final check
//! pretouches again first), so mapping anywhere else would look like a leak
//! at the final check.

use abi::{decode_result, prot, Error, Sysnum};
use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use libipc::sys;

/// A small, fast, seedable PRNG (xorshift64*; seeded through SplitMix64 so
/// nearby seeds give unrelated streams).
pub struct Rng(abi::rng::XorShift64Star);

impl Rng {
    /// A generator for `seed` and `stream` (one stream per worker).
    pub fn new(seed: u64, stream: u64) -> Rng {
        let mut z = seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Rng(abi::rng::XorShift64Star(z | 1))
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// A random element of `items`.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Issues syscall `n` (any value) with six arguments; returns RAX.
///
/// # Safety
/// The call must not change memory or mappings the program relies on
/// (callers vet the arguments: see `gen::direct_ok`).
#[inline(always)]
pub unsafe fn syscall6(n: u64, a: &[u64; 6]) -> u64 {
    let ret: u64;
    // SAFETY: `syscall` clobbers only RAX (result), RCX (return RIP) and R11
    // (RFLAGS); memory effects are the caller's contract.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") n => ret, // rax: number in, result out
            in("rdi") a[0],            // argument 0
            in("rsi") a[1],            // argument 1
            in("rdx") a[2],            // argument 2
            in("r10") a[3],            // argument 3 (not rcx: syscall overwrites it)
            in("r8") a[4],             // argument 4
            in("r9") a[5],             // argument 5
            lateout("rcx") _,          // return RIP
            lateout("r11") _,          // saved RFLAGS
            options(nostack),
        );
    }
    ret
}

/// Issues a syscall with three arguments and decodes the result.
///
/// # Safety
/// As for [`syscall6`].
pub unsafe fn syscall3(n: Sysnum, a0: u64, a1: u64, a2: u64) -> Result<u64, Error> {
    // SAFETY: the caller's contract.
    decode_result(unsafe { syscall6(n as u64, &[a0, a1, a2, 0, 0, 0]) })
}

/// Measures the TSC's rate ([`testkit::calibrate_tsc`]); a failed
/// measurement keeps the 1 GHz guess.
pub fn calibrate() {
    let _ = testkit::calibrate_tsc();
}

pub use testkit::tsc_per_ms;

/// A call slower than this is a finding (issue 7: "over 10 ms").
pub const SLOW_MS: u64 = 10;

/// The run's counters (every thread adds to them).
pub struct Counters {
    /// Random syscalls issued (directly or handed to a child script).
    pub syscalls: AtomicU64,
    /// Threads and children stopped by a CPU exception.
    pub faults: AtomicU64,
    /// Child processes run.
    pub children: AtomicU64,
    /// Findings reported.
    pub findings: AtomicU64,
    /// Slow calls that did not repeat (host noise on a loaded machine).
    pub noise: AtomicU64,
}

/// The counters.
pub static COUNT: Counters = Counters {
    syscalls: AtomicU64::new(0),
    faults: AtomicU64::new(0),
    children: AtomicU64::new(0),
    findings: AtomicU64::new(0),
    noise: AtomicU64::new(0),
};

/// Adds one to a counter.
pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The kernel's per-CPU counter `sel` (`cpu_syscalls`' RSI selector: 1 fast
/// calls, 2 fast reply_recvs, 6 non-canonical return refusals) summed over
/// the CPUs.
pub fn cpu_counter(sel: u64) -> u64 {
    let read = |k: u64| {
        // SAFETY: cpu_syscalls writes no memory.
        decode_result(unsafe { sys::syscall6(Sysnum::CpuSyscalls, k, sel, 0, 0, 0, 0) })
            .unwrap_or(0)
    };
    (0..sys::cpu_count()).map(read).sum()
}

/// Set once the run's seed is known, for the finding lines.
pub static SEED: AtomicU64 = AtomicU64::new(0);

/// Reports a finding: one line starting `fuzz: FINDING` with the seed.
#[macro_export]
macro_rules! finding {
    ($($arg:tt)*) => {{
        $crate::util::bump(&$crate::util::COUNT.findings);
        libipc::println!(
            "fuzz: FINDING seed={}: {}",
            $crate::util::SEED.load(core::sync::atomic::Ordering::Relaxed),
            format_args!($($arg)*)
        );
    }};
}

/// A thread's entry point: gets its argument in RDI and never returns.
pub type Entry = extern "C" fn(u64) -> !;

/// The window of thread stacks: [`STACK_SLOTS`] slots of 64 KiB with a
/// 64 KiB unmapped guard between neighbours.
pub const STACK_WINDOW: u64 = 0x5000_0000_0000;
const STACK_STRIDE: u64 = 0x2_0000;
/// Bytes of each thread stack.
pub const STACK_BYTES: u64 = 0x1_0000;
/// How many stacks can exist at once (one 2 MiB window per 16).
pub const STACK_SLOTS: usize = 64;
/// Windows the stack slots span (pre-touched).
const STACK_WINDOWS: u64 = (STACK_SLOTS as u64).div_ceil(16);
/// One bit per stack slot in use.
static STACK_USED: [AtomicBool; STACK_SLOTS] = [const { AtomicBool::new(false) }; STACK_SLOTS];

/// A spawned thread not joined yet.
pub struct Thread {
    /// Its handle.
    pub handle: sys::ThreadHandle,
    slot: usize,
}

fn take_slot() -> Option<usize> {
    (0..STACK_SLOTS).find(|&i| {
        STACK_USED[i]
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    })
}

fn slot_base(slot: usize) -> u64 {
    STACK_WINDOW + slot as u64 * STACK_STRIDE
}

fn free_slot(slot: usize) {
    // SAFETY: the slot's thread has ended (or never started); nothing else
    // uses its stack.
    let _ = unsafe { sys::unmap(slot_base(slot), STACK_BYTES) };
    STACK_USED[slot].store(false, Ordering::Release);
}

/// Spawns a thread at the raw address `entry` (which need not be valid) with
/// `arg`, on a fresh stack.
///
/// # Safety
/// Whatever runs at `entry` shares this address space: it must not corrupt
/// memory the program relies on.
pub unsafe fn spawn_at(entry: u64, arg: u64) -> Result<Thread, Error> {
    let slot = take_slot().ok_or(Error::NoMemory)?;
    let base = slot_base(slot);
    if let Err(e) = sys::map_anon(base, STACK_BYTES, prot::WRITE) {
        STACK_USED[slot].store(false, Ordering::Release);
        return Err(e);
    }
    // SAFETY: thread_spawn writes no memory of ours; the thread's effects are
    // the caller's contract.
    match unsafe { syscall3(Sysnum::ThreadSpawn, entry, base + STACK_BYTES, arg) } {
        Ok(h) => Ok(Thread {
            handle: sys::ThreadHandle::from_raw(h as u32),
            slot,
        }),
        Err(e) => {
            free_slot(slot);
            Err(e)
        }
    }
}

/// Spawns `entry(arg)` on a fresh stack.
pub fn spawn(entry: Entry, arg: u64) -> Result<Thread, Error> {
    // SAFETY: `entry` is a Rust function with the entry signature; what it
    // shares is its own contract.
    unsafe { spawn_at(entry as usize as u64, arg) }
}

impl Thread {
    /// Waits for the thread and frees its stack; the status word, or the
    /// join's error (the stack then stays: the thread may still run).
    pub fn join(self) -> Result<u64, Error> {
        let r = sys::thread_join(self.handle);
        if r.is_ok() {
            free_slot(self.slot);
        }
        r
    }
}

/// Maps and unmaps one page in each 2 MiB window the fuzz process will use,
/// so their page tables exist before the baseline (see the module docs).
pub fn pretouch(windows: &[u64]) -> Result<(), Error> {
    for &w in windows {
        sys::map_anon(w, 4096, prot::WRITE)?;
        // SAFETY: the page was mapped just above and nothing uses it.
        unsafe { sys::unmap(w, 4096)? };
    }
    for i in 0..STACK_WINDOWS {
        let w = STACK_WINDOW + i * 0x20_0000;
        sys::map_anon(w, 4096, prot::WRITE)?;
        // SAFETY: as above (no stack slot is in use yet).
        unsafe { sys::unmap(w, 4096)? };
    }
    Ok(())
}
