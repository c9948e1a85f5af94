//! FPU/SSE/AVX state: enabled per CPU, saved eagerly on every context switch
//! with XSAVEOPT/XRSTOR (FXSAVE/FXRSTOR when the CPU has no XSAVE). Never the
//! lazy CR0.TS *restore* (CVE-2018-3665: registers left holding another
//! thread's values behind TS leak through speculation).
//!
//! # First use (issue 10 item 4)
//! A thread that never executed an FPU/SIMD instruction (`FpuState::used`
//! false) has nothing to save: its state is the init image its area was
//! created with. Such a thread runs with CR0.TS set and the registers
//! *holding the init image* (loaded by [`switch_in`] whenever they held
//! anything else), so no other thread's values are ever in the registers
//! while it runs — unlike the lazy-restore scheme, TS here guards nothing
//! secret. Its first FPU instruction raises #NM; [`first_use`] marks the
//! thread used and clears TS (the registers already hold its state), and
//! from then on it is switched eagerly like every other. The invariant, per
//! CPU: **CR0.TS set implies the registers hold the init image**; and a
//! used thread runs only with TS clear (XSAVE would raise #NM otherwise).
//! Switching between threads that never touched the FPU then costs no
//! XSAVE and no XRSTOR, and no CR0 read either: the switch tests their
//! summary bytes ([`FpuState::extra`], switch2).
//!
//! The kernel itself is built soft-float and never touches these registers, so
//! user FPU state stays live in the registers across syscalls and interrupts and
//! only a switch to another thread needs to save it.

use super::cpu::{self, Features};
use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use core::arch::asm;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

static USE_XSAVE: AtomicBool = AtomicBool::new(false);
static USE_XSAVEOPT: AtomicBool = AtomicBool::new(false);
static AREA_BYTES: AtomicUsize = AtomicUsize::new(512);

/// XCR0 components the kernel enables: x87, SSE, and AVX when present.
pub fn xcr0_for(f: &Features) -> u64 {
    if f.avx {
        0b111
    } else {
        0b11
    }
}

/// Programs XCR0 (x87, SSE, and AVX when present) on this CPU; the boot CPU
/// (`boot_cpu`) also decides the save format for everyone. CR0 (MP/NE set,
/// EM/TS clear) and CR4 (OSFXSR, OSXMMEXCPT, OSXSAVE) are part of the exact
/// values [`super::cpustate::init_this_cpu`] writes before calling this.
pub fn init_cpu(f: &Features, boot_cpu: bool) {
    if f.xsave {
        let xcr0 = xcr0_for(f);
        // SAFETY: CR4.OSXSAVE is set (cpustate) and XCR0 enables only
        // components CPUID reports; the kernel itself never uses them.
        unsafe {
            asm!("xsetbv", in("ecx") 0, in("eax") xcr0 as u32, in("edx") (xcr0 >> 32) as u32, options(nostack));
        }
    }
    if boot_cpu {
        USE_XSAVE.store(f.xsave, Ordering::SeqCst);
        USE_XSAVEOPT.store(f.xsaveopt, Ordering::SeqCst);
        let bytes = if f.xsave {
            // EBX: bytes needed for the components enabled in XCR0.
            cpu::cpuid(0xd, 0).ebx as usize
        } else {
            512
        };
        AREA_BYTES.store(bytes.max(576), Ordering::SeqCst);
    }
}

/// CR0.TS: FPU/SIMD instructions raise #NM (the first-use trap).
pub const CR0_TS: u64 = 1 << 3;

/// Whether CR0.TS is set on this CPU.
#[inline(always)]
fn ts_set() -> bool {
    let cr0: u64;
    // SAFETY: reading CR0 in ring 0 has no side effects.
    unsafe { asm!("mov {}, cr0", out(reg) cr0, options(nostack, nomem, preserves_flags)) };
    cr0 & CR0_TS != 0
}

/// Sets CR0.TS (arms the first-use trap). Only with the init image in the
/// registers (the module's invariant).
#[inline(always)]
fn set_ts() {
    // SAFETY: CR0 is read and written back with only TS changed, with
    // interrupts off (switch path), so nothing else writes CR0 in between.
    unsafe {
        asm!(
            "mov {t}, cr0",
            "or {t}, {ts}",
            "mov cr0, {t}",
            t = out(reg) _,
            ts = const CR0_TS,
            options(nostack, nomem, preserves_flags),
        )
    };
}

/// Clears CR0.TS.
#[inline(always)]
fn clts() {
    // SAFETY: CLTS only clears CR0.TS.
    unsafe { asm!("clts", options(nostack, nomem, preserves_flags)) };
}

/// Loads `next`'s FPU state for a switch to a user thread (interrupts off):
/// a used thread gets its registers (TS cleared first if set); a thread
/// that never used the FPU gets the init image (its own area, never saved
/// into) and TS set, unless TS is set already — then the registers hold
/// the init image (invariant) and nothing is done. `next_extra` is
/// `next.extra()` as the caller read it (once: switch2).
#[inline(always)]
pub fn switch_in(next: &FpuState, next_extra: u8) {
    switch_in_ts(ts_set(), next, next_extra & USED != 0);
}

/// [`switch_in`] with CR0.TS known to the caller (switchcut: no CR0 read):
/// `ts` must be its value on this CPU. A switch away from a user thread
/// knows it: while a user thread runs, TS is set exactly when it never
/// used the FPU (its switch-in set TS iff it was unused, and only
/// [`first_use`] changes either, both at once), so `ts` is `!prev.used()`.
/// `next_used` is `next.used()`.
#[inline(always)]
fn switch_in_ts(ts: bool, next: &FpuState, next_used: bool) {
    debug_assert_eq!(ts, ts_set());
    debug_assert_eq!(next_used, next.used());
    if next_used {
        if ts {
            clts();
        }
        next.restore();
    } else if !ts {
        next.restore();
        set_ts();
    }
}

/// The user-to-user switch's FPU work (switchcut): `prev`'s registers
/// saved if it used the FPU (`prev_extra`, which also gives CR0.TS:
/// [`switch_in_ts`]), `next`'s loaded; the extras are each thread's
/// [`FpuState::extra`] as the caller read them (once: switch2). When
/// both used it and the CPU has XSAVEOPT (the usual case once a pair of threads exchange messages with
/// SIMD code), one test of the save format covers both instructions:
/// XSAVEOPT into prev's area, XRSTOR from next's (XSAVEOPT implies XSAVE:
/// `cpu::Features`), TS clear before and after (both used).
#[inline(always)]
pub fn switch_user(prev: &FpuState, prev_extra: u8, next: &FpuState, next_extra: u8) {
    debug_assert_eq!((prev_extra, next_extra), (prev.extra(), next.extra()));
    let prev_used = prev_extra & USED != 0;
    let next_used = next_extra & USED != 0;
    if prev_used && next_used && USE_XSAVEOPT.load(Ordering::Relaxed) {
        debug_assert!(!ts_set() && USE_XSAVE.load(Ordering::Relaxed));
        // Registers: `p` prev's area, `n` next's, EDX:EAX the all-ones
        // mask (limited by XCR0) of both instructions. Prev's registers are
        // still live (nothing since its last ring-3 instruction touched
        // them); next's area holds a state written by `new` or `save`.
        // SAFETY: as in `save` and `restore`: both areas are 64-byte
        // aligned and sized for XCR0's components (see above).
        unsafe {
            asm!(
                "xsaveopt64 [{p}]",
                "xrstor64 [{n}]",
                p = in(reg) prev.area.as_ptr(),
                n = in(reg) next.area.as_ptr(),
                in("eax") u32::MAX,
                in("edx") u32::MAX,
                options(nostack),
            );
        }
        return;
    }
    if prev_used {
        prev.save();
    }
    switch_in_ts(!prev_used, next, next_used);
}

/// The #NM handler's test (interrupts off, from ring 3): `cur` (the current
/// thread's state) never used the FPU and TS is set, so this is its first
/// FPU instruction: it becomes used and TS is cleared; the registers
/// already hold its init image, and the instruction runs again. `false`
/// for any other #NM (the caller reports it as a fault: none is expected,
/// as EM is clear and a used thread never runs with TS set).
pub fn first_use(cur: &FpuState) -> bool {
    if cur.used() || !ts_set() {
        return false;
    }
    cur.mark(USED);
    clts();
    true
}

/// [`FpuState::extra`]'s bit: the thread executed an FPU/SIMD instruction
/// (the first-use trap fired): its registers are saved and restored on
/// every switch.
pub const USED: u8 = 1;
/// [`FpuState::extra`]'s bit: the thread set its FS or GS base
/// ([`FpuState::note_bases`]); without it both are 0.
pub const BASES: u8 = 2;
/// [`FpuState::extra`]'s bit: the thread may run with an I/O bitmap live
/// in its CPU's TSS ([`FpuState::note_io`]); without it the bitmap is off
/// while it runs.
pub const IO: u8 = 4;

/// One thread's saved FPU/SIMD registers (64-byte aligned, as XSAVE needs),
/// and the summary of the user state a switch must handle beyond the
/// general registers ([`FpuState::extra`]).
pub struct FpuState {
    area: NonNull<u8>,
    /// [`USED`], [`BASES`] and [`IO`]: each set once, never cleared, only by the
    /// CPU running the thread or switching it in (interrupts off: the #NM
    /// handler, a syscall, a fault, the switch); read by that CPU, or by one switching the thread in after the
    /// `on_cpu` handshake (whose Release/Acquire pair orders the write
    /// before it): Relaxed, and set with a load and a store.
    extra: AtomicU8,
}

// SAFETY: the area is owned by one thread and only touched by the CPU that is
// switching that thread in or out.
unsafe impl Send for FpuState {}
// SAFETY: as above; no shared access happens concurrently.
unsafe impl Sync for FpuState {}

fn layout() -> Layout {
    Layout::from_size_align(AREA_BYTES.load(Ordering::Relaxed), 64).expect("valid FPU layout")
}

impl FpuState {
    /// The offset of [`Self::extra`]'s byte (`sched::ustate`'s one-`or`
    /// test of two threads' bytes).
    pub const EXTRA_OFFSET: usize = core::mem::offset_of!(FpuState, extra);

    /// The initial state: x87 and SSE/AVX in their reset configuration
    /// (FCW 0x37f, MXCSR 0x1f80: all exceptions masked).
    pub fn new() -> Option<FpuState> {
        // SAFETY: the layout has non-zero size.
        let p = NonNull::new(unsafe { alloc_zeroed(layout()) })?;
        // SAFETY: the area is at least 576 bytes: FCW at 0, MXCSR at 24.
        unsafe {
            *(p.as_ptr() as *mut u16) = 0x037f;
            *(p.as_ptr().add(24) as *mut u32) = 0x1f80;
        }
        Some(FpuState {
            area: p,
            extra: AtomicU8::new(0),
        })
    }

    /// Whether the thread used the FPU ([`first_use`] fired).
    #[inline(always)]
    pub fn used(&self) -> bool {
        self.extra() & USED != 0
    }

    /// The user state beyond the general registers that a switch from or
    /// to this thread must handle: 0 when there is none, that is, the
    /// thread never used the FPU (it runs with CR0.TS set and the init
    /// image in the registers) and never set its FS or GS base (both are
    /// 0: ring 3 cannot change them by itself, CR4.FSGSBASE being off
    /// (`cpustate::cr4_for`), and a selector it loads into FS or GS gives
    /// base 0: every GDT descriptor ring 3 may load is based at 0 (`gdt`)
    /// and there is no LDT), and never ran with an I/O bitmap live (so the
    /// CPU's bitmap is off while it runs). Two such threads switch with no
    /// FPU, base or I/O-bitmap work at all (`sched::ustate`).
    #[inline(always)]
    pub fn extra(&self) -> u8 {
        self.extra.load(Ordering::Relaxed)
    }

    /// Records that the thread (the current one, in a syscall) sets its
    /// FS or GS base: from now on every switch saves and compares its
    /// bases ([`Self::extra`]).
    #[inline(always)]
    pub fn note_bases(&self) {
        self.mark(BASES);
    }

    /// Records that the thread (the current one, or the one being switched
    /// in) runs with an I/O bitmap live: from now on every switch from or
    /// to it makes the CPU's bitmap that of the next thread's process
    /// (`iopb::switch_to`). Set before the thread can run with the bitmap
    /// (interrupts off until it does).
    #[inline(always)]
    pub fn note_io(&self) {
        self.mark(IO);
    }

    /// Sets `bit` of [`Self::extra`] (see the field for why a load and a
    /// store suffice).
    #[inline(always)]
    fn mark(&self, bit: u8) {
        self.extra.store(self.extra() | bit, Ordering::Relaxed);
    }

    /// Saves this CPU's FPU registers into the area. (Inlined: it is on
    /// every switch, where the call would cost more than the body.)
    #[inline(always)]
    pub fn save(&self) {
        let p = self.area.as_ptr();
        // SAFETY: the area is 64-byte aligned and as large as CPUID says the
        // enabled components need; the mask (all ones) is limited by XCR0.
        unsafe {
            if USE_XSAVEOPT.load(Ordering::Relaxed) {
                asm!("xsaveopt64 [{}]", in(reg) p, in("eax") u32::MAX, in("edx") u32::MAX, options(nostack));
            } else if USE_XSAVE.load(Ordering::Relaxed) {
                asm!("xsave64 [{}]", in(reg) p, in("eax") u32::MAX, in("edx") u32::MAX, options(nostack));
            } else {
                asm!("fxsave64 [{}]", in(reg) p, options(nostack));
            }
        }
    }

    /// Loads the area into this CPU's FPU registers. (Inlined: see `save`.)
    #[inline(always)]
    pub fn restore(&self) {
        let p = self.area.as_ptr();
        // SAFETY: the area holds a state written by `new` or `save` (reserved
        // header bytes zero, MXCSR valid), so XRSTOR/FXRSTOR cannot fault.
        unsafe {
            if USE_XSAVE.load(Ordering::Relaxed) {
                asm!("xrstor64 [{}]", in(reg) p, in("eax") u32::MAX, in("edx") u32::MAX, options(nostack));
            } else {
                asm!("fxrstor64 [{}]", in(reg) p, options(nostack));
            }
        }
    }
}

impl Drop for FpuState {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with the same layout (AREA_BYTES never
        // changes after the boot CPU set it).
        unsafe { dealloc(self.area.as_ptr(), layout()) }
    }
}
