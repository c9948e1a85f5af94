//! CPU feature detection and the small privileged instructions the rest of the
//! kernel needs, behind safe functions where the operation cannot break memory
//! safety.

use core::arch::x86_64::{__cpuid_count, CpuidResult};

/// What CPUID reported, read once per CPU at bring-up.
#[derive(Clone, Copy, Debug, Default)]
pub struct Features {
    /// No-execute page bit (EFER.NXE).
    pub nx: bool,
    /// 1 GiB pages.
    pub page_1g: bool,
    /// Global pages (CR4.PGE).
    pub pge: bool,
    /// Supervisor-mode execution prevention.
    pub smep: bool,
    /// Supervisor-mode access prevention (stac/clac).
    pub smap: bool,
    /// User-mode instruction prevention.
    pub umip: bool,
    /// XSAVE and OS-visible XCR0.
    pub xsave: bool,
    /// XSAVEOPT.
    pub xsaveopt: bool,
    /// AVX (YMM state).
    pub avx: bool,
    /// x2APIC mode of the local APIC.
    pub x2apic: bool,
    /// TSC-deadline timer mode.
    pub tsc_deadline: bool,
    /// Process-context identifiers.
    pub pcid: bool,
    /// Machine-check exception (CR4.MCE).
    pub mce: bool,
    /// Debugging extensions (CR4.DE).
    pub de: bool,
    /// Page attribute table (IA32_PAT).
    pub pat: bool,
    /// RDTSCP (reads IA32_TSC_AUX).
    pub rdtscp: bool,
    /// RDPID (reads IA32_TSC_AUX).
    pub rdpid: bool,
}

/// Executes CPUID.
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    // SAFETY: CPUID exists on every x86_64 CPU and only reads identification data.
    #[allow(unused_unsafe)]
    unsafe {
        __cpuid_count(leaf, subleaf)
    }
}

impl Features {
    /// Reads the features of the CPU this runs on.
    pub fn detect() -> Features {
        let max_leaf = cpuid(0, 0).eax;
        let max_ext = cpuid(0x8000_0000, 0).eax;
        let l1 = cpuid(1, 0);
        let l7 = if max_leaf >= 7 {
            cpuid(7, 0)
        } else {
            CpuidResult {
                eax: 0,
                ebx: 0,
                ecx: 0,
                edx: 0,
            }
        };
        let ext1 = if max_ext >= 0x8000_0001 {
            cpuid(0x8000_0001, 0).edx
        } else {
            0
        };
        let xsave = l1.ecx & (1 << 26) != 0;
        let xsaveopt = xsave && max_leaf >= 0xd && cpuid(0xd, 1).eax & 1 != 0;
        Features {
            nx: ext1 & (1 << 20) != 0,
            page_1g: ext1 & (1 << 26) != 0,
            pge: l1.edx & (1 << 13) != 0,
            pcid: l1.ecx & (1 << 17) != 0,
            mce: l1.edx & (1 << 7) != 0,
            de: l1.edx & (1 << 2) != 0,
            pat: l1.edx & (1 << 16) != 0,
            rdtscp: ext1 & (1 << 27) != 0,
            rdpid: l7.ecx & (1 << 22) != 0,
            x2apic: l1.ecx & (1 << 21) != 0,
            tsc_deadline: l1.ecx & (1 << 24) != 0,
            xsave,
            xsaveopt,
            avx: l1.ecx & (1 << 28) != 0,
            smep: l7.ebx & (1 << 7) != 0,
            smap: l7.ebx & (1 << 20) != 0,
            umip: l7.ecx & (1 << 2) != 0,
        }
    }
}

/// Whether maskable interrupts are enabled on this CPU.
pub fn interrupts_enabled() -> bool {
    x86_64::instructions::interrupts::are_enabled()
}

/// Disables maskable interrupts on this CPU.
pub fn disable_interrupts() {
    x86_64::instructions::interrupts::disable();
}

/// Enables maskable interrupts on this CPU.
pub fn enable_interrupts() {
    x86_64::instructions::interrupts::enable();
}

/// Stops this CPU for good (interrupts off, `hlt` in a loop; an NMI just resumes
/// the loop).
pub fn halt_forever() -> ! {
    disable_interrupts();
    loop {
        x86_64::instructions::hlt();
    }
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the counter; CR4.TSD is clear, so it never faults.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Reads a model-specific register.
///
/// # Safety
/// `msr` must exist on this CPU (reading an absent MSR raises #GP).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    // SAFETY: the caller guarantees the MSR exists; reading has no side effects
    // on memory.
    unsafe { x86_64::registers::model_specific::Msr::new(msr).read() }
}

/// Writes a model-specific register.
///
/// # Safety
/// `msr` must exist and `value` must be valid for it, and the write must not
/// break an invariant the kernel relies on (GS base, EFER, syscall entry...).
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: delegated to the caller.
    unsafe { x86_64::registers::model_specific::Msr::new(msr).write(value) }
}

/// The faulting address of the last page fault.
pub fn cr2() -> u64 {
    x86_64::registers::control::Cr2::read_raw()
}

/// MSR numbers the kernel uses.
pub mod msr {
    /// Extended feature enables (SCE, LME, NXE).
    pub const EFER: u32 = 0xc000_0080;
    /// Segment selectors for syscall/sysret.
    pub const STAR: u32 = 0xc000_0081;
    /// 64-bit syscall entry point.
    pub const LSTAR: u32 = 0xc000_0082;
    /// RFLAGS bits cleared on syscall.
    pub const SFMASK: u32 = 0xc000_0084;
    /// FS base.
    pub const FS_BASE: u32 = 0xc000_0100;
    /// GS base (the active one).
    pub const GS_BASE: u32 = 0xc000_0101;
    /// GS base swapped in by `swapgs`.
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
    /// Compatibility-mode syscall entry point.
    pub const CSTAR: u32 = 0xc000_0083;
    /// What RDTSCP and RDPID report (the CPU id).
    pub const TSC_AUX: u32 = 0xc000_0103;
    /// Page attribute table.
    pub const PAT: u32 = 0x277;
    /// SYSENTER code selector (0: SYSENTER raises #GP).
    pub const SYSENTER_CS: u32 = 0x174;
    /// SYSENTER stack pointer.
    pub const SYSENTER_ESP: u32 = 0x175;
    /// SYSENTER entry point.
    pub const SYSENTER_EIP: u32 = 0x176;
    /// Machine-check global status (RIPV, EIPV, MCIP).
    pub const MCG_STATUS: u32 = 0x17a;
    /// Debug control: LBR, BTF (single-step on branches), freeze bits.
    pub const DEBUGCTL: u32 = 0x1d9;
}

/// Turns on global pages (CR4.PGE) when present; the boot CPU does this while
/// switching to the kernel page tables, each AP at arrival.
pub fn init_paging_features(f: &Features) {
    if f.pge {
        // SAFETY: global pages only keep kernel TLB entries across CR3 loads;
        // kernel mappings are the same in every address space.
        unsafe {
            x86_64::registers::control::Cr4::update(|c| {
                c.insert(x86_64::registers::control::Cr4Flags::PAGE_GLOBAL)
            });
        }
    }
}

/// A preemption point for long kernel work. Syscalls run with interrupts
/// off; work that grows with an argument calls this between bounded chunks,
/// with **no lock held** (an interrupt handler may switch threads here, and
/// the thread may resume on this CPU much later). It opens the interrupt
/// window for one instruction: every interrupt already pending (the timer, a
/// reschedule or shootdown IPI) is taken at the `nop`, and the timer's
/// `sched::tick` may switch to a better thread — a switch from kernel mode, exactly
/// as the idle loop is switched away from, resumed here by the next switch
/// back. Nothing pending costs three instructions.
/// (Called with interrupts on — boot-time callers — it does nothing: they
/// are taken anyway.)
#[inline]
pub fn preemption_point() {
    if interrupts_enabled() {
        return;
    }
    // Sound because no lock is held (caller's duty), so a handler that runs here and
    // schedules cannot deadlock or observe a half-edited structure. `sti`
    // takes effect after the next instruction (the STI shadow), so pending
    // interrupts are delivered at the `nop`; `cli` closes the window. Not
    // `nomem`: the handlers (and other threads) change memory meanwhile.
    // SAFETY: as explained just above.
    unsafe { core::arch::asm!("sti", "nop", "cli", options(nostack)) };
}
