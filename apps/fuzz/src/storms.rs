//! Phase 3: the priority probe, resource storms (threads, processes and
//! memory until `NoMemory`, thread churn) and bit-flipped spawn images.

use crate::child;
use crate::finding;
use crate::util::{self, bump, Rng, COUNT, SLOW_MS};
use abi::bootimg::encode_code;
use abi::status::{self, Status};
use abi::{prot, Error, Sysnum};
use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use fuzz::{Category, Config};
use libipc::{bench::rdtsc, println, sys};

/// The window of the storm threads' shared stack page (pre-touched).
pub const STORM_WINDOW: u64 = 0x5900_0000_0000;
/// Set to release the parked storm threads.
static STOP: AtomicU8 = AtomicU8::new(0);

// Threads that run in the fuzz process without a stack of their own (they
// only make syscalls, which take their arguments in registers).
global_asm!(
    ".pushsection .text.mica_fuzz_storm, \"ax\"",
    // parked: sleeps 1 ms at a time until STOP is set, then exits.
    ".global mica_fuzz_parked",
    "mica_fuzz_parked:",
    "2:",
    "mov edi, 1000000",              // rdi: 1 ms
    "mov eax, {sleep}",
    "syscall",
    "cmp byte ptr [rip + {stop}], 0", // released?
    "je 2b",
    "xor edi, edi",                  // rdi: exit code 0
    "mov eax, {texit}",
    "syscall",
    "ud2",
    // quick: exits at once.
    ".global mica_fuzz_quick",
    "mica_fuzz_quick:",
    "xor edi, edi",
    "mov eax, {texit}",
    "syscall",
    "ud2",
    ".popsection",
    sleep = const Sysnum::SleepNs as u64,
    texit = const Sysnum::ThreadExit as u64,
    stop = sym STOP,
);

// Child programs (position-independent, copied into images).
global_asm!(
    ".pushsection .rodata.mica_fuzz_storm_children, \"a\"",
    // hog: maps 1 MiB at a time until an error; exits with the error code.
    "mica_fuzz_hog:",
    "mov rbx, {hog_base}",           // rbx: next address
    "2:",
    "mov rdi, rbx",                  // rdi: address
    "mov esi, 0x100000",             // rsi: 1 MiB
    "mov edx, {write}",              // rdx: writable
    "mov eax, {map}",
    "syscall",
    "test rax, rax",                 // an error is negative
    "js 3f",
    "add rbx, 0x100000",
    "jmp 2b",
    "3:",
    "neg rax",
    "mov rdi, rax",                  // rdi: the error code
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "mica_fuzz_hog_end:",
    // sleeper: sleeps 20 ms, exits 0.
    "mica_fuzz_sleeper:",
    "mov edi, 20000000",
    "mov eax, {sleep}",
    "syscall",
    "xor edi, edi",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "mica_fuzz_sleeper_end:",
    // spinner: priority 0, CPU 0, spins until the TSC passes RDI.
    "mica_fuzz_spinner:",
    "mov rbx, rdi",                  // rbx: deadline (TSC)
    "xor edi, edi",                  // rdi: priority 0
    "mov eax, {prio}",
    "syscall",
    "xor edi, edi",                  // rdi: CPU 0
    "mov eax, {affinity}",
    "syscall",
    "2:",
    "rdtsc",
    "shl rdx, 32",
    "or rax, rdx",
    "cmp rax, rbx",
    "jb 2b",
    "xor edi, edi",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "mica_fuzz_spinner_end:",
    // breeders: two threads that spawn threads that spawn threads (none
    // uses its stack), then process_exit(5) 2 ms later.
    "mica_fuzz_breeders:",
    "call 4f",                       // twice: start a breeder
    "call 4f",
    "mov edi, 2000000",              // rdi: 2 ms
    "mov eax, {sleep}",
    "syscall",
    "mov edi, 5",                    // rdi: exit code 5
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "4:",
    "lea rdi, [rip + 5f]",           // rdi: entry = a breeder
    "mov rsi, {stack_top}",          // rsi: a stack top (never used)
    "xor edx, edx",
    "mov eax, {tspawn}",
    "syscall",
    "ret",
    "5:",
    "lea rdi, [rip + 5b]",           // a breeder: start another breeder...
    "mov rsi, {stack_top}",
    "xor edx, edx",
    "mov eax, {tspawn}",
    "syscall",
    "mov eax, {yield_}",             // ...let it run...
    "syscall",
    "jmp 5b",                        // ...forever
    "mica_fuzz_breeders_end:",
    ".popsection",
    hog_base = const 0x1000_0000_0000u64,
    write = const prot::WRITE,
    map = const Sysnum::MapAnon as u64,
    pexit = const Sysnum::ProcessExit as u64,
    sleep = const Sysnum::SleepNs as u64,
    prio = const Sysnum::SetPriority as u64,
    affinity = const Sysnum::SetAffinity as u64,
    tspawn = const Sysnum::ThreadSpawn as u64,
    yield_ = const Sysnum::Yield as u64,
    stack_top = const abi::layout::INIT_STACK_TOP - 0x100,
);

extern "C" {
    static mica_fuzz_parked: u8;
    static mica_fuzz_quick: u8;
    static mica_fuzz_hog: u8;
    static mica_fuzz_hog_end: u8;
    static mica_fuzz_sleeper: u8;
    static mica_fuzz_sleeper_end: u8;
    static mica_fuzz_spinner: u8;
    static mica_fuzz_spinner_end: u8;
    static mica_fuzz_breeders: u8;
    static mica_fuzz_breeders_end: u8;
}

#[derive(Clone, Copy)]
enum Prog {
    Hog,
    Sleeper,
    Spinner,
    Breeders,
}

/// The sleeper's boot image (20 ms, then exit 0) in `out`; its length.
pub(crate) fn sleeper_image(out: &mut [u8]) -> usize {
    image(Prog::Sleeper, out)
}

/// A child program's boot image in `out`; its length.
fn image(p: Prog, out: &mut [u8]) -> usize {
    use core::ptr::addr_of;
    let (s, e) = match p {
        Prog::Hog => (addr_of!(mica_fuzz_hog), addr_of!(mica_fuzz_hog_end)),
        Prog::Sleeper => (addr_of!(mica_fuzz_sleeper), addr_of!(mica_fuzz_sleeper_end)),
        Prog::Spinner => (addr_of!(mica_fuzz_spinner), addr_of!(mica_fuzz_spinner_end)),
        Prog::Breeders => (
            addr_of!(mica_fuzz_breeders),
            addr_of!(mica_fuzz_breeders_end),
        ),
    };
    // SAFETY: both labels are in the same read-only section, `e` after `s`.
    let code = unsafe { core::slice::from_raw_parts(s, e.offset_from(s) as usize) };
    encode_code(child::CHILD_TEXT, code, out).unwrap_or(0)
}

fn wait(pid: sys::ProcessHandle) -> Option<Status> {
    let st = sys::process_wait(pid).ok().map(status::decode);
    if let Some(Status::Faulted(_)) = st {
        bump(&COUNT.faults);
    }
    st
}

/// Issue 7 item 6: a child raises itself to priority 0 and spins on CPU 0
/// for 300 ms; its parent, at the default priority on the same CPU, must
/// still get its 2 ms sleeps back within 100 ms.
fn priority_probe() {
    // Starved, the parent completes no sleep at all while the spinner runs;
    // shared fairly, it completes one per slice or so (about 25 in the
    // spinner's 300 ms). Counting completions, not the worst sleep, keeps a
    // single host stall of the vCPU from looking like starvation; and only
    // three starved runs out of three are a finding.
    let mut best = u64::MAX;
    for _ in 0..3 {
        match priority_probe_once() {
            Some(done) if done < 3 => best = best.min(done),
            _ => return,
        }
    }
    finding!(
        "priority: a child at priority 0 starved its parent on CPU 0: {best} of its 2 ms sleeps completed in the child's 300 ms (3 of 3 tries)"
    );
}

/// One run of [`priority_probe`]: how many 2 ms sleeps the parent completed
/// while the spinner ran (None if it could not be started).
fn priority_probe_once() -> Option<u64> {
    let mut buf = [0u8; 256];
    let len = image(Prog::Spinner, &mut buf);
    if sys::set_affinity(0).is_err() {
        return None;
    }
    let deadline = rdtsc() + 300 * util::tsc_per_ms();
    let Ok(pid) = sys::process_spawn(&buf[..len], deadline) else {
        let _ = sys::set_affinity(u64::MAX);
        return None;
    };
    let mut done = 0;
    while rdtsc() < deadline + 50 * util::tsc_per_ms() {
        sys::sleep_ns(2_000_000);
        if rdtsc() < deadline {
            done += 1;
        }
    }
    let _ = wait(pid);
    let _ = sys::set_affinity(u64::MAX);
    Some(done)
}

/// The breeders' status word once their wait returned (0: not yet).
static BRED: AtomicU64 = AtomicU64::new(0);
/// The breeders' process handle once spawned (0: not yet; u64::MAX: spawn
/// failed).
static BRED_PID: AtomicU64 = AtomicU64::new(0);

/// Started before the breeders (which may fill the thread table): waits
/// for their pid, then for them.
extern "C" fn wait_breeders(_: u64) -> ! {
    let pid = loop {
        match BRED_PID.load(Ordering::Acquire) {
            0 => sys::sleep_ns(1_000_000),
            pid => break pid,
        }
    };
    let w = sys::process_wait(sys::ProcessHandle::from_raw(pid as u32)).unwrap_or(u64::MAX);
    BRED.store(w | 1 << 63, Ordering::Release);
    sys::thread_exit(0)
}

/// Issue 7 item 2: a child whose threads keep creating threads calls
/// `process_exit(5)`; its wait must return within 5 s. False if it did not
/// (the child runs on: the fuzzer cannot recover without a kill).
fn exit_race_probe() -> bool {
    let mut buf = [0u8; 256];
    let len = image(Prog::Breeders, &mut buf);
    BRED.store(0, Ordering::Relaxed);
    BRED_PID.store(0, Ordering::Relaxed);
    let Ok(waiter) = util::spawn(wait_breeders, 0) else {
        return true;
    };
    match sys::process_spawn(&buf[..len], 0) {
        Ok(pid) => BRED_PID.store(pid.raw() as u64, Ordering::Release),
        Err(_) => {
            BRED_PID.store(u64::MAX, Ordering::Release);
            let _ = waiter.join();
            return true;
        }
    }
    let t0 = sys::clock_ns();
    while BRED.load(Ordering::Acquire) == 0 {
        if sys::clock_ns() - t0 > 5_000_000_000 {
            finding!(
                "exit race: a child whose threads keep spawning threads called process_exit(5); 5 s later it had not ended"
            );
            // Which half failed: threads still alive (a kill that did not
            // land) or all gone while the wait sleeps on (a lost wake-up).
            if let Ok(i) = sys::sysinfo() {
                libipc::println!(
                    "fuzz: exit race detail: now {} threads and {} processes alive in the system",
                    i.threads,
                    i.processes
                );
            }
            return false;
        }
        sys::sleep_ns(10_000_000);
    }
    let _ = waiter.join();
    let word = BRED.load(Ordering::Relaxed) & !(1 << 63);
    if word != status::exited(5) {
        finding!(
            "exit race: the breeding child ended with {:?}, not Exited(5)",
            status::decode(word)
        );
    }
    true
}

const MAX_STORM: usize = 4096;
static TIDS: [AtomicU64; MAX_STORM] = [const { AtomicU64::new(0) }; MAX_STORM];

/// Raises the kernel's high-water marks before the baseline is taken: the
/// kernel-stack region keeps the page tables of the most stacks ever alive
/// (32 pages for about 1000 stacks), which is growth, not a leak.
pub fn warm_up(cfg: &Config) {
    if !cfg.skips(Category::Storms) {
        thread_storm(false);
    }
}

/// Threads until the kernel refuses, then all released and joined.
fn thread_storm(report: bool) {
    let stack_top = STORM_WINDOW + 4096;
    if sys::map_anon(STORM_WINDOW, 4096, prot::WRITE).is_err() {
        return;
    }
    STOP.store(0, Ordering::Release);
    let entry = core::ptr::addr_of!(mica_fuzz_parked) as u64;
    let mut n = 0;
    let mut why = None;
    while n < MAX_STORM {
        // SAFETY: the parked code uses no stack and only sleeps.
        match unsafe { util::syscall3(Sysnum::ThreadSpawn, entry, stack_top, 0) } {
            Ok(tid) => {
                TIDS[n].store(tid, Ordering::Relaxed);
                n += 1;
            }
            Err(e) => {
                why = Some(e);
                break;
            }
        }
    }
    STOP.store(1, Ordering::Release);
    let mut bad = 0;
    for t in &TIDS[..n] {
        let h = sys::ThreadHandle::from_raw(t.load(Ordering::Relaxed) as u32);
        if sys::thread_join(h) != Ok(status::exited(0)) {
            bad += 1;
        }
    }
    // SAFETY: every storm thread has ended.
    let _ = unsafe { sys::unmap(STORM_WINDOW, 4096) };
    if !report {
        return;
    }
    println!("fuzz: thread storm: {n} threads before {why:?}");
    if bad != 0 {
        finding!("thread storm: {bad} of {n} parked threads did not end with exit(0)");
    }
    if why.is_some_and(|e| e != Error::NoMemory) {
        finding!("thread storm: thread_spawn failed with {why:?}, not NoMemory");
    }
}

/// Spawn and join one short thread after another.
fn thread_churn(rounds: u64) {
    if sys::map_anon(STORM_WINDOW, 4096, prot::WRITE).is_err() {
        return;
    }
    let entry = core::ptr::addr_of!(mica_fuzz_quick) as u64;
    for i in 0..rounds {
        // SAFETY: the quick code uses no stack and only exits.
        let r = unsafe { util::syscall3(Sysnum::ThreadSpawn, entry, STORM_WINDOW + 4096, 0) };
        match r.map(|h| sys::thread_join(sys::ThreadHandle::from_raw(h as u32))) {
            Ok(Ok(w)) if w == status::exited(0) => {}
            other => {
                finding!("thread churn: round {i}: {other:?}");
                break;
            }
        }
    }
    // SAFETY: every churn thread has ended.
    let _ = unsafe { sys::unmap(STORM_WINDOW, 4096) };
}

static PIDS: [AtomicU64; MAX_STORM] = [const { AtomicU64::new(0) }; MAX_STORM];

/// Children until the kernel refuses, then all reaped.
fn process_storm() {
    let mut buf = [0u8; 256];
    let len = image(Prog::Sleeper, &mut buf);
    let mut n = 0;
    let mut why = None;
    while n < MAX_STORM {
        match sys::process_spawn(&buf[..len], 0) {
            Ok(pid) => {
                PIDS[n].store(pid.raw() as u64, Ordering::Relaxed);
                n += 1;
            }
            Err(e) => {
                why = Some(e);
                break;
            }
        }
    }
    let mut bad = 0;
    for p in &PIDS[..n] {
        let h = sys::ProcessHandle::from_raw(p.load(Ordering::Relaxed) as u32);
        if wait(h) != Some(Status::Exited(0)) {
            bad += 1;
        }
    }
    println!("fuzz: process storm: {n} children before {why:?}");
    if bad != 0 {
        finding!("process storm: {bad} of {n} children did not end with exit(0)");
    }
}

/// A child maps 1 MiB at a time until the kernel refuses; it must be told
/// NoMemory (and the machine must live on).
fn memory_storm() {
    let mut buf = [0u8; 256];
    let len = image(Prog::Hog, &mut buf);
    let Ok(pid) = sys::process_spawn(&buf[..len], 0) else {
        return;
    };
    match wait(pid) {
        Some(Status::Exited(c)) if c as u64 == Error::NoMemory as u64 => {}
        other => finding!("memory storm: the hog ended with {other:?}, not NoMemory"),
    }
}

/// Spawns `count` copies of a valid image with 1-3 random bits flipped;
/// each must be refused or run to an end, and no spawn may be slow.
fn flips(cfg: &Config, count: u64) {
    let seed = cfg.seed;
    let mut valid = [0u8; 256];
    let len = child::exit_arg_image(&mut valid);
    let mut r = Rng::new(seed as u64, 0xf11b);
    let (mut refused, mut ran) = (0, 0);
    for i in 0..count {
        let mut img = valid;
        for _ in 0..=r.below(3) {
            let bit = r.below(len as u64 * 8);
            img[(bit / 8) as usize] ^= 1 << (bit % 8);
        }
        // The first record's mem_size: a huge one makes the kernel fill all
        // memory with interrupts off (`fuzz.skip=huge`).
        let mem_size = u64::from_le_bytes(img[48..56].try_into().unwrap_or([0; 8]));
        if cfg.skips(Category::Huge) && mem_size > crate::gen::HUGE_BYTES {
            continue;
        }
        let mut worst = 0;
        let mut slow = 0;
        for _ in 0..3 {
            let t0 = rdtsc();
            let res = sys::process_spawn(&img[..len], 0);
            let dt = rdtsc() - t0;
            worst = worst.max(dt);
            match res {
                Ok(pid) => {
                    ran += 1;
                    let _ = wait(pid);
                }
                Err(_) => refused += 1,
            }
            if dt <= SLOW_MS * util::tsc_per_ms() {
                break;
            }
            slow += 1;
        }
        if slow == 3 {
            finding!(
                "slow process_spawn of bit-flipped image {i}: {} ms (3 of 3 tries)",
                worst / util::tsc_per_ms()
            );
        } else if slow > 0 {
            bump(&COUNT.noise);
        }
    }
    println!("fuzz: bit flips: {count} images, {refused} refused, {ran} ran");
}

/// Runs phase 3; false if the machine is left in a state the run cannot
/// recover from (reported).
pub fn run(cfg: &Config) -> bool {
    if !cfg.skips(Category::ExitRace) && !exit_race_probe() {
        return false;
    }
    if !cfg.skips(Category::Prio) {
        priority_probe();
    }
    if !cfg.skips(Category::Storms) {
        thread_storm(true);
        // Scaled with the run: at a million syscalls, 125,000 rounds, which
        // with `--mem 64` is where a kernel that never forgets joined
        // threads ran out of heap (issue 7 item 1).
        thread_churn((cfg.iters / 8).max(2000));
        process_storm();
        memory_storm();
    }
    if !cfg.skips(Category::Flip) {
        flips(cfg, 300);
    }
    true
}
