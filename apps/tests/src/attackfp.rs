//! breakfp (issue 10): attacks on fastpath3's FPU first-use trap (CR0.TS
//! per thread, `fpu.rs`) and its kill-inside-spawn undo.
//!
//! - [`x87_regs_init_at_first_use`]: the x87/MMX data registers, status
//!   and tag words a thread sees at its first FPU instruction, right after
//!   a peer on the same CPU left secrets in ST0-7 (MM0-7): all must be
//!   the init state (zero, empty), never the peer's. (`fpu_isolation` and
//!   fastpath3's case check XMM/YMM, MXCSR and FCW only.)
//! - [`first_fpu_insn_faults_with_its_own_vector`]: a thread whose very
//!   first FPU instruction also faults for another reason (#PF, #GP) must
//!   end with that fault, after the #NM of its first use was taken and
//!   retried; one whose first is `fwait` runs on.
//! - [`first_use_state_follows_migration`] (2+ CPUs): a never-used thread
//!   that moved to a CPU whose last thread had live values sees the init
//!   state at its first use there; its own values then follow it back and
//!   forth between CPUs while peers on both hold theirs.

use crate::fpu::{self, SimdState};
use crate::note;
use crate::util::{self, arg_of, from_arg, TestResult};
use abi::bootimg::{encode, SegmentSpec, SEG_R, SEG_X};
use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::sys;

/// What FXSAVE stores (512 bytes, 16-aligned).
#[repr(C, align(64))]
struct FxArea([u8; 512]);

/// FXSAVE into `a`.
fn fxsave(a: &mut FxArea) {
    let p = a.0.as_mut_ptr();
    // SAFETY: writes the 512 bytes of `*a` (16-byte aligned) only.
    unsafe { asm!("fxsave64 [{}]", in(reg) p, options(nostack, preserves_flags)) };
}

/// The value [`load_mmx`] puts in MM`i` for `seed`.
fn mmx_value(seed: u64, i: usize) -> u64 {
    seed ^ ((i as u64 + 1) * 0x1111_1111_1111_1111)
}

/// Loads MM0-7 with `mmx_value(seed, i)` (the x87 data registers' mantissas; the
/// tags become valid). The target is soft-float: nothing else uses them.
fn load_mmx(seed: u64) {
    let v: [u64; 8] = core::array::from_fn(|i| mmx_value(seed, i));
    let p = v.as_ptr();
    // SAFETY: reads `v` only; MMX registers belong to no compiled code.
    unsafe {
        asm!(
            "movq mm0, [{p}]",       // mm0: v[0]
            "movq mm1, [{p} + 8]",
            "movq mm2, [{p} + 16]",
            "movq mm3, [{p} + 24]",
            "movq mm4, [{p} + 32]",
            "movq mm5, [{p} + 40]",
            "movq mm6, [{p} + 48]",
            "movq mm7, [{p} + 56]",  // mm7: v[7]
            p = in(reg) p,           // p: the eight values
            options(readonly, nostack, preserves_flags),
        )
    };
}

/// MM0-7 as stored by MMX moves.
fn store_mmx() -> [u64; 8] {
    let mut v = [0u64; 8];
    let p = v.as_mut_ptr();
    // SAFETY: writes `v` only.
    unsafe {
        asm!(
            "movq [{p}], mm0",       // v[0] := mm0
            "movq [{p} + 8], mm1",
            "movq [{p} + 16], mm2",
            "movq [{p} + 24], mm3",
            "movq [{p} + 32], mm4",
            "movq [{p} + 40], mm5",
            "movq [{p} + 48], mm6",
            "movq [{p} + 56], mm7",  // v[7] := mm7
            p = in(reg) p,           // p: where to store
            options(nostack, preserves_flags),
        )
    };
    v
}

const PEER_SEED: u64 = 0x5ec2_e7f0_0d00_0001;
/// 1 once the peer loaded its values; 2 asks it to check and end.
static PEER: AtomicU64 = AtomicU64::new(0);

/// Pinned to CPU 0: loads MM0-7 and XMM/YMM with secrets, sleeps until
/// told to stop, then checks they are still its own (exit 0, else 2).
extern "C" fn x87_peer(_: u64) -> ! {
    if !util::pin0() {
        sys::thread_exit(1);
    }
    let avx = util::has_avx();
    let want = SimdState::pattern(PEER_SEED);
    fpu::load(&want, avx);
    load_mmx(PEER_SEED);
    PEER.store(1, Ordering::SeqCst);
    while PEER.load(Ordering::SeqCst) != 2 {
        sys::sleep_ns(200_000);
    }
    let mut got = SimdState::zeroed();
    fpu::store(&mut got, avx);
    let mm = store_mmx();
    let mine: [u64; 8] = core::array::from_fn(|i| mmx_value(PEER_SEED, i));
    sys::thread_exit(if mm == mine && got.check(&want, avx).is_ok() {
        0
    } else {
        2
    })
}

/// Case: see the module docs. The case's thread is fresh (never used the
/// FPU); it and the peer share CPU 0.
pub fn x87_regs_init_at_first_use() -> TestResult {
    util::check(util::pin0(), "set_affinity(0)")?;
    PEER.store(0, Ordering::SeqCst);
    let t = util::spawn(x87_peer, 0)?;
    while PEER.load(Ordering::SeqCst) == 0 {
        sys::sleep_ns(100_000);
    }
    for _ in 0..10 {
        sys::yield_now();
        sys::sleep_ns(100_000);
    }
    // The first FPU instruction of this thread.
    let mut a = FxArea([0xa5; 512]);
    fxsave(&mut a);
    let fcw = u16::from_le_bytes([a.0[0], a.0[1]]);
    let fsw = u16::from_le_bytes([a.0[2], a.0[3]]);
    let ftw = a.0[4];
    let mxcsr = u32::from_le_bytes([a.0[24], a.0[25], a.0[26], a.0[27]]);
    let r = (|| {
        for i in 0..8 {
            let st = &a.0[32 + 16 * i..32 + 16 * i + 10];
            if st.iter().any(|&b| b != 0) {
                let m = u64::from_le_bytes(st[..8].try_into().unwrap_or([0; 8]));
                note!(
                    "st{i} mantissa {m:#x} at first use (peer's mm{i} was {:#x})",
                    mmx_value(PEER_SEED, i)
                );
                return Err("an x87/MMX register held another thread's value");
            }
        }
        if (fcw, fsw, ftw, mxcsr & !0x3f) != (0x037f, 0, 0, 0x1f80) {
            note!("fcw {fcw:#x} fsw {fsw:#x} ftw {ftw:#x} mxcsr {mxcsr:#x} at first use");
            return Err("the x87 control/status/tag words were not the init state");
        }
        let mm = store_mmx();
        if mm != [0; 8] {
            note!("mm0 {:#x} at first use", mm[0]);
            return Err("an MMX register held another thread's value");
        }
        Ok(())
    })();
    PEER.store(2, Ordering::SeqCst);
    let st = t.join()?;
    r?;
    util::expect_ok(st).map_err(|_| "the peer's x87/MMX/SIMD values changed")
}

/// First FPU instruction: FXSAVE to the unmapped page 0 (#NM, then #PF).
extern "C" fn first_fxsave_unmapped(_: u64) -> ! {
    // SAFETY: faults (page 0 is never mapped); nothing after it runs.
    unsafe { asm!("xor eax, eax", "fxsave64 [rax]", out("rax") _, options(nostack)) };
    sys::thread_exit(1)
}

/// First FPU instruction: FXRSTOR from a misaligned address (#NM, then
/// #GP: the area must be 16-byte aligned).
extern "C" fn first_fxrstor_misaligned(_: u64) -> ! {
    let a = FxArea([0; 512]);
    let p = a.0.as_ptr().wrapping_add(8);
    // SAFETY: faults (#GP: misaligned FXRSTOR); would only read `a`.
    unsafe { asm!("fxrstor64 [{}]", in(reg) p, options(nostack, readonly)) };
    sys::thread_exit(1)
}

/// First FPU instruction: MOVDQA from a misaligned address (#NM, then #GP).
extern "C" fn first_movdqa_misaligned(_: u64) -> ! {
    let buf = [0u8; 48];
    let p = buf
        .as_ptr()
        .wrapping_add(1 + (16 - buf.as_ptr() as usize % 16) % 16);
    // SAFETY: faults (#GP: misaligned MOVDQA); would only read `buf`.
    unsafe { asm!("movdqa xmm0, [{}]", in(reg) p, options(nostack, readonly)) };
    sys::thread_exit(1)
}

/// First FPU instruction: FWAIT (#NM with CR0.MP and TS); then exits 0 if
/// FCW reads as the init value.
extern "C" fn first_fwait(_: u64) -> ! {
    let mut cw: u16 = 0;
    // SAFETY: FWAIT has no operands; FNSTCW writes `cw` only.
    unsafe { asm!("fwait", "fnstcw [{}]", in(reg) &mut cw, options(nostack)) };
    sys::thread_exit(if cw == 0x037f { 0 } else { 2 })
}

/// Case: see the module docs.
pub fn first_fpu_insn_faults_with_its_own_vector() -> TestResult {
    util::run_expect_fault(first_fxsave_unmapped, &[14])?;
    util::run_expect_fault(first_fxrstor_misaligned, &[13])?;
    util::run_expect_fault(first_movdqa_misaligned, &[13])?;
    util::expect_ok(util::run(first_fwait, 0)?)
}

/// `got` holds `want` (XMM, YMM upper halves with `avx`, MXCSR and FCW
/// without status bits), quietly (`SimdState::check` prints).
fn same(got: &SimdState, want: &SimdState, avx: bool) -> bool {
    let lanes = if avx { 4 } else { 2 };
    got.regs
        .iter()
        .zip(want.regs.iter())
        .all(|(g, w)| g[..lanes] == w[..lanes])
        && got.mxcsr & !0x3f == want.mxcsr & !0x3f
        && got.fcw & 0x0f3f == want.fcw & 0x0f3f
}

/// Ends the migration case's peers.
static MIG_STOP: AtomicU64 = AtomicU64::new(0);

/// A peer pinned to CPU `arg & 0xff` holding pattern `arg >> 8` (and MMX
/// values) live until told to stop, yielding often; exit 0 if it kept them.
extern "C" fn mig_peer(arg: u64) -> ! {
    if sys::set_affinity(arg & 0xff).is_err() {
        sys::thread_exit(1);
    }
    let avx = util::has_avx();
    let seed = arg >> 8;
    let want = SimdState::pattern(seed);
    fpu::load(&want, avx);
    load_mmx(seed);
    while MIG_STOP.load(Ordering::SeqCst) == 0 {
        util::spin_until(util::deadline_ms(1));
        sys::yield_now();
    }
    let mut got = SimdState::zeroed();
    fpu::store(&mut got, avx);
    let mine: [u64; 8] = core::array::from_fn(|i| mmx_value(seed, i));
    sys::thread_exit(if same(&got, &want, avx) && store_mmx() == mine {
        0
    } else {
        2
    })
}

/// The migrating thread's report.
struct Mover {
    init_ok: bool,
    bad_after: u64,
    rounds: u64,
}

/// Never used the FPU: starts on CPU 0, moves to CPU 1, uses the FPU
/// there for the first time (must see init), then carries its own values
/// back and forth between the two CPUs.
extern "C" fn mover(arg: u64) -> ! {
    // SAFETY: the case passes a `Mover` with `arg_of` and joins first.
    let m: &mut Mover = unsafe { from_arg(arg) };
    let avx = util::has_avx();
    if sys::set_affinity(0).is_err() {
        sys::thread_exit(1);
    }
    sys::yield_now();
    if sys::set_affinity(1).is_err() {
        sys::thread_exit(1);
    }
    sys::yield_now();
    let mut got = SimdState::zeroed();
    fpu::store(&mut got, avx);
    let mut init = SimdState::zeroed();
    init.mxcsr = 0x1f80;
    init.fcw = 0x037f;
    m.init_ok = got.check(&init, avx).is_ok() && store_mmx() == [0; 8];
    let want = SimdState::pattern(0x0a0b_0c0d_0000_0002);
    fpu::load(&want, avx);
    for i in 0..40u64 {
        let _ = sys::set_affinity(i & 1);
        util::spin_until(util::deadline_ms(1));
        sys::yield_now();
        fpu::store(&mut got, avx);
        if !same(&got, &want, avx) {
            m.bad_after += 1;
        }
        m.rounds += 1;
    }
    sys::thread_exit(0)
}

/// Case: see the module docs. Skipped (passes) on one CPU.
pub fn first_use_state_follows_migration() -> TestResult {
    if sys::cpu_count() < 2 {
        note!("one CPU: nothing to migrate to");
        return Ok(());
    }
    MIG_STOP.store(0, Ordering::SeqCst);
    let p0 = util::spawn(mig_peer, 0x00fe_ed00_0001 << 8)?;
    let p1 = util::spawn(mig_peer, 1 | (0x00fe_ed00_0003 << 8))?;
    sys::sleep_ns(5_000_000);
    let mut m = Mover {
        init_ok: false,
        bad_after: 0,
        rounds: 0,
    };
    let st = util::run(mover, arg_of(&mut m));
    MIG_STOP.store(1, Ordering::SeqCst);
    let s0 = p0.join()?;
    let s1 = p1.join()?;
    util::expect_ok(st?)?;
    if !m.init_ok {
        return Err("first use after a migration did not see the init state");
    }
    if m.bad_after != 0 {
        note!(
            "own values wrong after {} of {} moves",
            m.bad_after,
            m.rounds
        );
        return Err("a migrating thread lost its FPU values");
    }
    util::expect_ok(s0).map_err(|_| "CPU 0's peer lost its values")?;
    util::expect_ok(s1).map_err(|_| "CPU 1's peer lost its values")
}

/// The last user page, where [`spawn_in_last_user_page_leaves_no_thread`]
/// puts its `thread_spawn` (faults.rs uses it too, in another case).
const LAST_PAGE: u64 = 0x0000_7fff_ffff_f000;
/// The orphan thread's stack.
const ORPHAN_STACK: u64 = 0x5f30_0000_0000;
const ORPHAN_STACK_LEN: u64 = 64 << 10;
/// Counts up while a thread spawned by the last-page spawner runs.
static ORPHAN_BEAT: AtomicU64 = AtomicU64::new(0);

/// The thread the last-page spawner creates: beats every 100 us forever
/// (only a kill ends it; nobody holds its handle).
extern "C" fn orphan(_: u64) -> ! {
    loop {
        ORPHAN_BEAT.fetch_add(1, Ordering::SeqCst);
        sys::sleep_ns(100_000);
    }
}

/// Case: a `thread_spawn` whose `syscall` ends the user half succeeds,
/// then its return RIP (0x8000_0000_0000, non-canonical) makes the
/// spawner fault with #GP: the handle never reaches user space, like a
/// kill inside the spawn (fastpath3's undo), so the new thread must be
/// undone too. Before the fix it ran on, unnamed, until the process ended
/// (seen: its heartbeat kept rising after the spawner's #GP).
pub fn spawn_in_last_user_page_leaves_no_thread() -> TestResult {
    let base = crate::lifecycle::info()?.threads;
    sys::map_anon(ORPHAN_STACK, ORPHAN_STACK_LEN, abi::prot::WRITE)
        .map_err(|_| "map_anon(stack) failed")?;
    // mov rdi, entry ; mov rsi, stack top ; xor edx, edx ;
    // mov eax, ThreadSpawn ; syscall -- ending exactly at USER_END.
    let code = last_page_code(
        orphan as *const () as u64,
        ORPHAN_STACK + ORPHAN_STACK_LEN,
        abi::Sysnum::ThreadSpawn,
    );
    let r = run_in_last_page(&code);
    if r.is_err() {
        // SAFETY: an orphan started on it, if any, only faults there.
        let _ = unsafe { sys::unmap(ORPHAN_STACK, ORPHAN_STACK_LEN) };
        return r;
    }
    let r = r.and_then(|()| {
        let (s, ok) = crate::lifecycle::settle(500, |s| s.threads <= base)?;
        let b0 = ORPHAN_BEAT.load(Ordering::SeqCst);
        sys::sleep_ns(10_000_000);
        let b1 = ORPHAN_BEAT.load(Ordering::SeqCst);
        if !ok || b1 != b0 {
            note!(
                "threads {} ({base} before); the orphan beat {b0} -> {b1} over 10 ms",
                s.threads
            );
            return Err("a spawn whose return faulted left its thread running");
        }
        Ok(())
    });
    if r.is_ok() {
        // SAFETY: no thread runs on it any more (checked above).
        let _ = unsafe { sys::unmap(ORPHAN_STACK, ORPHAN_STACK_LEN) };
    }
    r
}

/// `mov rdi, a0 ; mov rsi, a1 ; xor edx, edx ; mov eax, nr ; syscall`.
fn last_page_code(a0: u64, a1: u64, nr: abi::Sysnum) -> [u8; 29] {
    let mut code = [0u8; 29];
    code[..2].copy_from_slice(&[0x48, 0xbf]);
    code[2..10].copy_from_slice(&a0.to_le_bytes());
    code[10..12].copy_from_slice(&[0x48, 0xbe]);
    code[12..20].copy_from_slice(&a1.to_le_bytes());
    code[20..22].copy_from_slice(&[0x31, 0xd2]);
    code[22] = 0xb8;
    code[23..27].copy_from_slice(&(nr as u32).to_le_bytes());
    code[27..29].copy_from_slice(&[0x0f, 0x05]);
    code
}

/// Runs `code` in a thread, placed so that its end is the end of the user
/// half (the `syscall` returns to 0x8000_0000_0000); the kernel must
/// refuse that return (#GP, counted: [`util::expect_rip_refused`]).
fn run_in_last_page(code: &[u8]) -> TestResult {
    if sys::map_anon(LAST_PAGE, 4096, abi::prot::WRITE).is_err() {
        return Err("map_anon of the last user page failed");
    }
    let start = LAST_PAGE + 4096 - code.len() as u64;
    // SAFETY: the page was just mapped writable and nothing else uses it.
    unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), start as *mut u8, code.len()) };
    let refused = util::rip_refusals();
    // SAFETY: nothing holds a reference into the page.
    let r = match unsafe { sys::protect(LAST_PAGE, 4096, abi::prot::EXEC) } {
        Err(_) => Err("protect(last page, EXEC) failed"),
        // SAFETY: the thread runs `code` and then faults.
        Ok(_) => match unsafe { util::spawn_at(start, 0) } {
            Ok(t) => t
                .join()
                .and_then(|st| util::expect_rip_refused(st, refused)),
            Err(_) => Err("thread_spawn at the last page failed"),
        },
    };
    // SAFETY: the thread that ran there ended.
    let _ = unsafe { sys::unmap(LAST_PAGE, 4096) };
    r
}

global_asm!(
    ".pushsection .rodata.mica_afp_children, \"a\"",
    // sleeper: sleeps 1 ms at a time, forever (only a kill ends it).
    "mica_afp_sleeper:",
    "1:",
    "mov edi, 1000000",
    "mov eax, {sleep}",
    "syscall",
    "jmp 1b",
    "mica_afp_sleeper_end:",
    ".popsection",
    sleep = const abi::Sysnum::SleepNs as u64,
);

extern "C" {
    static mica_afp_sleeper: u8;
    static mica_afp_sleeper_end: u8;
}

/// Case: as [`spawn_in_last_user_page_leaves_no_thread`], with
/// `process_spawn` of a child that sleeps forever: the process count must
/// settle back (before the fix the child ran on, counted and unnamed).
pub fn process_spawn_in_last_user_page_leaves_no_child() -> TestResult {
    let text = crate::lifecycle::code(
        core::ptr::addr_of!(mica_afp_sleeper),
        core::ptr::addr_of!(mica_afp_sleeper_end),
    );
    let spec = SegmentSpec {
        vaddr: 0x40_0000,
        bytes: text,
        mem_size: 4096,
        flags: SEG_R | SEG_X,
    };
    let mut img = [0u8; 2048];
    let len = encode(0x40_0000, &[spec], &mut img).map_err(|_| "cannot encode the image")?;
    let base = crate::lifecycle::info()?.processes;
    // The spawner reads `img` while this thread waits in its join.
    let code = last_page_code(img.as_ptr() as u64, len as u64, abi::Sysnum::ProcessSpawn);
    run_in_last_page(&code)?;
    let (s, ok) = crate::lifecycle::settle(2000, |s| s.processes == base)?;
    if !ok {
        note!(
            "processes {} after the spawner's #GP, {base} before",
            s.processes
        );
        return Err("a process_spawn whose return faulted left its child running");
    }
    Ok(())
}
