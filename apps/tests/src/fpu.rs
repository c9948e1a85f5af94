//! SIMD/FPU state: loading and storing XMM0-15 (YMM0-15 when AVX is on),
//! MXCSR and the x87 control word, and the `fpu_isolation` case.
//!
//! The target is soft-float: compiler-generated code never touches XMM, YMM,
//! MXCSR or the x87 unit, so a value loaded by [`load`] stays put through
//! ordinary Rust code (and syscalls, and preemptions, if the kernel is right)
//! until [`store`] reads it back.

use crate::util::{self, arg_of, deadline_ms, from_arg, TestResult};
use core::arch::asm;
use core::mem::offset_of;
use libipc::sys;

/// The SIMD/FPU registers one thread owns.
#[repr(C, align(32))]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SimdState {
    /// YMM0-15 (the low 16 bytes of each are XMM0-15).
    pub regs: [[u64; 4]; 16],
    /// MXCSR (rounding control and flush-to-zero are varied).
    pub mxcsr: u32,
    /// The x87 control word (rounding and precision control are varied).
    pub fcw: u16,
    _pad: u16,
}

impl SimdState {
    /// All zero (what [`store`] overwrites).
    pub const fn zeroed() -> Self {
        SimdState {
            regs: [[0; 4]; 16],
            mxcsr: 0,
            fcw: 0,
            _pad: 0,
        }
    }

    /// Distinct values derived from `seed`; `seed & 3` picks the rounding
    /// modes so two seeds differing there also differ in MXCSR and FCW.
    pub const fn pattern(seed: u64) -> Self {
        let mut s = Self::zeroed();
        let mut i = 0;
        while i < 16 {
            let mut j = 0;
            while j < 4 {
                s.regs[i][j] = seed ^ (((i * 4 + j) as u64 + 1) * 0x0102_0304_0506_0709);
                j += 1;
            }
            i += 1;
        }
        let rc = (seed & 3) as u32;
        // All exceptions masked (bits 7-12), rounding control bits 13-14,
        // flush-to-zero (bit 15) on odd seeds.
        s.mxcsr = 0x1f80 | (rc << 13) | ((rc & 1) << 15);
        // All exceptions masked (bits 0-5), precision control bits 8-9,
        // rounding control bits 10-11.
        s.fcw = 0x003f | (((rc ^ 3) as u16) << 8) | ((rc as u16) << 10);
        s
    }

    /// Compares with `expected`: XMM always, YMM upper halves with `avx`.
    /// Prints the first mismatch.
    pub fn check(&self, expected: &SimdState, avx: bool) -> TestResult {
        let lanes = if avx { 4 } else { 2 };
        for i in 0..16 {
            for j in 0..lanes {
                if self.regs[i][j] != expected.regs[i][j] {
                    let kind = if j < 2 { "xmm" } else { "ymm" };
                    crate::note!(
                        "{kind}{i} qword {j} = {:#x}, expected {:#x}",
                        self.regs[i][j],
                        expected.regs[i][j]
                    );
                    return Err("a SIMD register changed");
                }
            }
        }
        if self.mxcsr & !0x3f != expected.mxcsr & !0x3f {
            crate::note!("mxcsr = {:#x}, expected {:#x}", self.mxcsr, expected.mxcsr);
            return Err("MXCSR changed");
        }
        if self.fcw & 0x0f3f != expected.fcw & 0x0f3f {
            crate::note!("fcw = {:#x}, expected {:#x}", self.fcw, expected.fcw);
            return Err("the x87 control word changed");
        }
        Ok(())
    }
}

/// Loads `s` into the SIMD/FPU registers (YMM with `avx`, else XMM).
pub fn load(s: &SimdState, avx: bool) {
    let p = s as *const SimdState;
    if avx {
        // SAFETY: reads `*s` only. The soft-float target never allocates
        // YMM/MXCSR/x87 registers, so overwriting them breaks no compiler
        // assumption; AVX use was checked by the caller (`avx`).
        unsafe {
            asm!(
                "vmovdqu ymm0, ymmword ptr [{p} + 0]",     // ymm0: row 0
                "vmovdqu ymm1, ymmword ptr [{p} + 32]",    // ymm1: row 1
                "vmovdqu ymm2, ymmword ptr [{p} + 64]",
                "vmovdqu ymm3, ymmword ptr [{p} + 96]",
                "vmovdqu ymm4, ymmword ptr [{p} + 128]",
                "vmovdqu ymm5, ymmword ptr [{p} + 160]",
                "vmovdqu ymm6, ymmword ptr [{p} + 192]",
                "vmovdqu ymm7, ymmword ptr [{p} + 224]",
                "vmovdqu ymm8, ymmword ptr [{p} + 256]",
                "vmovdqu ymm9, ymmword ptr [{p} + 288]",
                "vmovdqu ymm10, ymmword ptr [{p} + 320]",
                "vmovdqu ymm11, ymmword ptr [{p} + 352]",
                "vmovdqu ymm12, ymmword ptr [{p} + 384]",
                "vmovdqu ymm13, ymmword ptr [{p} + 416]",
                "vmovdqu ymm14, ymmword ptr [{p} + 448]",
                "vmovdqu ymm15, ymmword ptr [{p} + 480]",  // ymm15: row 15
                "ldmxcsr dword ptr [{p} + {mx}]",          // MXCSR
                "fldcw word ptr [{p} + {cw}]",             // x87 control word
                p = in(reg) p,                              // p: the state to load
                mx = const offset_of!(SimdState, mxcsr),
                cw = const offset_of!(SimdState, fcw),
                options(readonly, nostack, preserves_flags),
            );
        }
    } else {
        // SAFETY: as above, with the legacy SSE forms (SSE is always on).
        unsafe {
            asm!(
                "movdqu xmm0, xmmword ptr [{p} + 0]",      // xmm0: low half of row 0
                "movdqu xmm1, xmmword ptr [{p} + 32]",     // xmm1: low half of row 1
                "movdqu xmm2, xmmword ptr [{p} + 64]",
                "movdqu xmm3, xmmword ptr [{p} + 96]",
                "movdqu xmm4, xmmword ptr [{p} + 128]",
                "movdqu xmm5, xmmword ptr [{p} + 160]",
                "movdqu xmm6, xmmword ptr [{p} + 192]",
                "movdqu xmm7, xmmword ptr [{p} + 224]",
                "movdqu xmm8, xmmword ptr [{p} + 256]",
                "movdqu xmm9, xmmword ptr [{p} + 288]",
                "movdqu xmm10, xmmword ptr [{p} + 320]",
                "movdqu xmm11, xmmword ptr [{p} + 352]",
                "movdqu xmm12, xmmword ptr [{p} + 384]",
                "movdqu xmm13, xmmword ptr [{p} + 416]",
                "movdqu xmm14, xmmword ptr [{p} + 448]",
                "movdqu xmm15, xmmword ptr [{p} + 480]",   // xmm15: low half of row 15
                "ldmxcsr dword ptr [{p} + {mx}]",          // MXCSR
                "fldcw word ptr [{p} + {cw}]",             // x87 control word
                p = in(reg) p,                              // p: the state to load
                mx = const offset_of!(SimdState, mxcsr),
                cw = const offset_of!(SimdState, fcw),
                options(readonly, nostack, preserves_flags),
            );
        }
    }
}

/// Stores the SIMD/FPU registers into `s` (YMM with `avx`, else XMM).
pub fn store(s: &mut SimdState, avx: bool) {
    let p = s as *mut SimdState;
    if avx {
        // SAFETY: writes `*s` only (512 + 8 bytes, inside the struct); the
        // registers are only read.
        unsafe {
            asm!(
                "vmovdqu ymmword ptr [{p} + 0], ymm0",     // row 0 := ymm0
                "vmovdqu ymmword ptr [{p} + 32], ymm1",    // row 1 := ymm1
                "vmovdqu ymmword ptr [{p} + 64], ymm2",
                "vmovdqu ymmword ptr [{p} + 96], ymm3",
                "vmovdqu ymmword ptr [{p} + 128], ymm4",
                "vmovdqu ymmword ptr [{p} + 160], ymm5",
                "vmovdqu ymmword ptr [{p} + 192], ymm6",
                "vmovdqu ymmword ptr [{p} + 224], ymm7",
                "vmovdqu ymmword ptr [{p} + 256], ymm8",
                "vmovdqu ymmword ptr [{p} + 288], ymm9",
                "vmovdqu ymmword ptr [{p} + 320], ymm10",
                "vmovdqu ymmword ptr [{p} + 352], ymm11",
                "vmovdqu ymmword ptr [{p} + 384], ymm12",
                "vmovdqu ymmword ptr [{p} + 416], ymm13",
                "vmovdqu ymmword ptr [{p} + 448], ymm14",
                "vmovdqu ymmword ptr [{p} + 480], ymm15",  // row 15 := ymm15
                "stmxcsr dword ptr [{p} + {mx}]",          // MXCSR
                "fnstcw word ptr [{p} + {cw}]",            // x87 control word
                p = in(reg) p,                              // p: where to store
                mx = const offset_of!(SimdState, mxcsr),
                cw = const offset_of!(SimdState, fcw),
                options(nostack, preserves_flags),
            );
        }
    } else {
        // SAFETY: writes `*s` only (the low 16 bytes of each row, MXCSR, FCW).
        unsafe {
            asm!(
                "movdqu xmmword ptr [{p} + 0], xmm0",      // row 0 low := xmm0
                "movdqu xmmword ptr [{p} + 32], xmm1",     // row 1 low := xmm1
                "movdqu xmmword ptr [{p} + 64], xmm2",
                "movdqu xmmword ptr [{p} + 96], xmm3",
                "movdqu xmmword ptr [{p} + 128], xmm4",
                "movdqu xmmword ptr [{p} + 160], xmm5",
                "movdqu xmmword ptr [{p} + 192], xmm6",
                "movdqu xmmword ptr [{p} + 224], xmm7",
                "movdqu xmmword ptr [{p} + 256], xmm8",
                "movdqu xmmword ptr [{p} + 288], xmm9",
                "movdqu xmmword ptr [{p} + 320], xmm10",
                "movdqu xmmword ptr [{p} + 352], xmm11",
                "movdqu xmmword ptr [{p} + 384], xmm12",
                "movdqu xmmword ptr [{p} + 416], xmm13",
                "movdqu xmmword ptr [{p} + 448], xmm14",
                "movdqu xmmword ptr [{p} + 480], xmm15",   // row 15 low := xmm15
                "stmxcsr dword ptr [{p} + {mx}]",          // MXCSR
                "fnstcw word ptr [{p} + {cw}]",            // x87 control word
                p = in(reg) p,                              // p: where to store
                mx = const offset_of!(SimdState, mxcsr),
                cw = const offset_of!(SimdState, fcw),
                options(nostack, preserves_flags),
            );
        }
    }
}

/// One `fpu_isolation` thread: its pattern, what it read back, and how.
struct FpuJob {
    want: SimdState,
    got: SimdState,
    avx: bool,
    /// Also yield every ~2 ms and sleep once mid-way (blocking paths).
    blocking: bool,
    spin_ms: u64,
    max_gap: u64,
    pinned: bool,
}

extern "C" fn fpu_thread(arg: u64) -> ! {
    // SAFETY: `fpu_isolation` passes an `FpuJob` with `arg_of` and joins
    // before touching or dropping it.
    let job: &mut FpuJob = unsafe { from_arg(arg) };
    job.pinned = util::pin0();
    load(&job.want, job.avx);
    let end = deadline_ms(job.spin_ms);
    if job.blocking {
        let mut slept = false;
        while libipc::bench::rdtsc() < end {
            job.max_gap = job.max_gap.max(util::spin_until(deadline_ms(2).min(end)));
            sys::yield_now();
            if !slept {
                sys::sleep_ns(3_000_000);
                slept = true;
            }
        }
    } else {
        job.max_gap = util::spin_until(end);
    }
    store(&mut job.got, job.avx);
    sys::thread_exit(0)
}

/// Two threads on CPU 0 each hold their own XMM/YMM/MXCSR/FCW values across
/// several preemptions (one also yields and sleeps) and check them.
pub fn fpu_isolation() -> TestResult {
    let avx = util::has_avx();
    if !avx {
        crate::note!("no AVX: checking XMM0-15, MXCSR and FCW only");
    }
    let mut jobs = [0x5a5a_0000_0000_0001u64, 0xa5a5_0000_0000_0002].map(|seed| FpuJob {
        want: SimdState::pattern(seed),
        got: SimdState::zeroed(),
        avx,
        blocking: seed & 2 != 0,
        spin_ms: 40,
        max_gap: 0,
        pinned: false,
    });
    let [a, b] = &mut jobs;
    let ta = util::spawn(fpu_thread, arg_of(a))?;
    let tb = util::spawn(fpu_thread, arg_of(b));
    let sa = ta.join()?;
    let sb = tb?.join()?;
    util::expect_ok(sa)?;
    util::expect_ok(sb)?;
    for job in &jobs {
        if !job.pinned {
            return Err("set_affinity(0) failed");
        }
        job.got.check(&job.want, avx)?;
    }
    if jobs[0].max_gap < util::preempt_gap() {
        crate::note!("longest TSC gap {} ticks", jobs[0].max_gap);
        return Err("the spinning thread was never preempted");
    }
    Ok(())
}
