//! The user state a switch moves beyond the general registers: FPU/SIMD
//! registers and the FS/GS bases (and whether the I/O bitmap is live,
//! which `switch_prepare` switches), each thread's summarised in one byte
//! (`fpu::FpuState::extra`), so that a switch between two threads with
//! none of it (the usual IPC pair) costs one test (switch2). Split from
//! `sched/mod.rs` (its size).

use crate::arch::cpu::{self, msr};
use crate::arch::fpu;
use crate::object::thread::{Thread, ThreadCtx};

/// Both threads' [`fpu::FpuState::extra`], each read once: the tests here,
/// the save's, and (a user-to-user switch) CR0.TS.
#[derive(Clone, Copy)]
pub(super) struct Extra {
    prev: u8,
    next: u8,
    /// `prev | next`.
    both: u8,
}

impl Extra {
    #[inline(always)]
    pub(super) fn of(prev: &Thread, next: &Thread) -> Extra {
        let (p, n) = (prev.fpu.extra(), next.fpu.extra());
        Extra {
            prev: p,
            next: n,
            both: p | n,
        }
    }

    /// [`Extra::of`] with `both` as [`any_extra`] read it (a user-to-user
    /// switch's work: the `or` is not made again).
    #[inline(always)]
    pub(super) fn of_any(prev: &Thread, next: &Thread, both: u8) -> Extra {
        Extra {
            prev: prev.fpu.extra(),
            next: next.fpu.extra(),
            both,
        }
    }

    /// Whether either thread used the FPU, set a base or ran with an I/O
    /// bitmap. Neither (and a user prev): CR0.TS is set and the registers
    /// hold the init image (prev never used the FPU), which is what next
    /// runs with; the MSRs hold prev's bases, 0 as its context says
    /// already, and next's are 0 too; the CPU's I/O bitmap is off. Nothing
    /// to save, load or compare.
    #[inline(always)]
    pub(super) fn any(self) -> bool {
        self.both != 0
    }
}

/// [`Extra::any`]'s `or` for a user-to-user switch (`switch_prepare`'s
/// common test: non-zero when there is work to do): the two bytes in one
/// load and one `or` with memory (sched3: LLVM loaded each atomic byte
/// into a register of its own and kept both for the work; -2 a round
/// trip, +2 for `ipc_call_same_core_fpu`, whose work reads them again:
/// [`Extra::of_any`]). Plain byte loads, atomic on x86, as the Relaxed
/// loads of [`fpu::FpuState::extra`] are (the `on_cpu` handshake orders
/// next's writes before them). (A jump to the work from the asm block,
/// `label`, measured +15 a round trip.)
#[inline(always)]
pub(super) fn any_extra(prev: &Thread, next: &Thread) -> u8 {
    const OFF: usize = core::mem::offset_of!(Thread, fpu) + fpu::FpuState::EXTRA_OFFSET;
    let r: u8;
    // SAFETY: both addresses are the threads' `extra` bytes (live
    // references); the block reads them into a scratch register only.
    unsafe {
        core::arch::asm!(
            "mov {r}, byte ptr [{p} + {off}]",
            "or {r}, byte ptr [{n} + {off}]",
            r = out(reg_byte) r,
            p = in(reg) prev as *const Thread,
            n = in(reg) next as *const Thread,
            off = const OFF,
            options(nostack, readonly),
        );
    }
    r
}

/// The switch's FPU and FS/GS-base work, from `prev` (context `pctx`) to
/// `next` (`nctx`): prev's saved, next's loaded (when `next_user`; a
/// kernel thread runs on whatever is loaded). With a user prev, each part
/// is done only when one of the two threads has it (`extra`); from an idle
/// prev (`prev_idle`), always. `USER_TO_USER`: as `switch_prepare`'s.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn switch<const USER_TO_USER: bool>(
    prev: &Thread,
    pctx: &mut ThreadCtx,
    next: &Thread,
    nctx: &ThreadCtx,
    prev_idle: bool,
    next_user: bool,
    extra: Extra,
) {
    let both = extra.both;
    if prev_idle || both & fpu::BASES != 0 {
        // prev's bases as read (None: an idle prev, which ran on the last
        // user thread's: that switch saved them).
        let (fs, gs) = if prev_idle {
            (None, None)
        } else {
            // SAFETY: reading this CPU's FS base and the parked user GS base.
            let (fs, gs) = unsafe { (cpu::rdmsr(msr::FS_BASE), cpu::rdmsr(msr::KERNEL_GS_BASE)) };
            pctx.fs_base = fs;
            pctx.gs_base = gs;
            (Some(fs), Some(gs))
        };
        // The MSRs hold prev's bases: written only when next's differ
        // (threads of one process, and most threads, share them), as a
        // WRMSR is far dearer than the compare.
        // SAFETY: the bases were validated as user addresses when set (or
        // read back from the MSRs); the kernel's own GS base is untouched.
        unsafe {
            if next_user && fs != Some(nctx.fs_base) {
                cpu::wrmsr(msr::FS_BASE, nctx.fs_base);
            }
            if next_user && gs != Some(nctx.gs_base) {
                cpu::wrmsr(msr::KERNEL_GS_BASE, nctx.gs_base);
            }
        }
    }
    let prev_used = extra.prev & fpu::USED != 0;
    if USER_TO_USER {
        // prev is a user thread, running until now: CR0.TS is set exactly
        // when it never used the FPU (`fpu::switch_in_ts`); its registers
        // are still its own (the kernel never touches them), so its save
        // may come this late, in one step with next's load.
        if both & fpu::USED != 0 {
            fpu::switch_user(&prev.fpu, extra.prev, &next.fpu, extra.next);
        }
        return;
    }
    // A thread that never used the FPU has nothing to save (and runs with
    // CR0.TS set, under which XSAVE would raise #NM): fpu.rs.
    if !prev_idle && prev_used {
        prev.fpu.save();
    }
    if next_user && (prev_idle || both & fpu::USED != 0) {
        fpu::switch_in(&next.fpu, extra.next);
    }
}
