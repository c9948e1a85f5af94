//! FPU/SSE/AVX state: enabled per CPU, saved eagerly on every context switch
//! with XSAVEOPT/XRSTOR (FXSAVE/FXRSTOR when the CPU has no XSAVE). Never the
//! lazy CR0.TS scheme (CVE-2018-3665: lazy restore leaks another thread's
//! registers through speculation).
//!
//! The kernel itself is built soft-float and never touches these registers, so
//! user FPU state stays live in the registers across syscalls and interrupts and
//! only a switch to another thread needs to save it.

use super::cpu::{self, Features};
use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use core::arch::asm;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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

/// One thread's saved FPU/SIMD registers (64-byte aligned, as XSAVE needs).
pub struct FpuState {
    area: NonNull<u8>,
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
        Some(FpuState { area: p })
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
