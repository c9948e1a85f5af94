//! The CPU state the kernel relies on, set explicitly on every CPU.
//!
//! Nothing the firmware, the boot loader, the AP trampoline or a reset leaves
//! behind is trusted: [`init_this_cpu`] writes every control register, MSR and
//! descriptor-table register the kernel depends on to the exact value it
//! intends (never a read-modify-write of bits it does not know), and records a
//! read-back check per CPU that `ktest cpu_state_is_explicit_on_every_cpu`
//! inspects. The list is repeated in `docs/decisions.md`.
//!
//! The defect that motivated it: LDTR was never loaded, so it kept its reset
//! value (base 0, limit 0xffff) and a process that mapped 0xf000 could write a
//! DPL-3 call gate there and `lcall` into its own code at CPL 0.

use super::cpu::{self, msr, Features};
use super::gdt::TSS_SEL;
use super::{fpu, percpu, syscall, uaccess};
use core::arch::asm;
use core::sync::atomic::Ordering;

/// CR0: PE, MP, ET, NE, WP, PG. Cleared on purpose: EM and TS (the FPU is
/// switched eagerly, see `fpu`; TS is set later only while a thread that
/// never used the FPU runs, its first-use trap), CD and NW (caches on), AM (no alignment checks
/// in ring 3 even with RFLAGS.AC set: AC is a flag user code may hold).
pub const CR0: u64 = (1 << 0) | (1 << 1) | (1 << 4) | (1 << 5) | (1 << 16) | (1 << 31);

const CR4_DE: u64 = 1 << 3;
const CR4_PAE: u64 = 1 << 5;
const CR4_MCE: u64 = 1 << 6;
const CR4_PGE: u64 = 1 << 7;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_UMIP: u64 = 1 << 11;
const CR4_OSXSAVE: u64 = 1 << 18;
const CR4_SMEP: u64 = 1 << 20;
const CR4_SMAP: u64 = 1 << 21;

/// The exact CR4 for a CPU with features `f`: PAE (long mode), DE, MCE, PGE,
/// OSFXSR, OSXMMEXCPT and OSXSAVE when present, and the protections SMEP,
/// SMAP, UMIP when present. Everything else is off: TSD (ring 3 may read the
/// TSC), PCE, VME/PVI, PSE (ignored in long mode), FSGSBASE (ring 3 must never
/// hold a kernel GS base: the paranoid entry depends on it; and the switch
/// skips the bases of a thread that never set one through the kernel:
/// `fpu::FpuState::extra`), PCIDE (no PCID), LA57, PKE, CET.
pub fn cr4_for(f: &Features) -> u64 {
    let mut v = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    for (present, bit) in [
        (f.de, CR4_DE),
        (f.mce, CR4_MCE),
        (f.pge, CR4_PGE),
        (f.xsave, CR4_OSXSAVE),
        (f.smep, CR4_SMEP),
        (f.smap, CR4_SMAP),
        (f.umip, CR4_UMIP),
    ] {
        if present {
            v |= bit;
        }
    }
    v
}

const EFER_SCE: u64 = 1 << 0;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

/// The exact EFER: SCE (syscall), LME and LMA (long mode, already on), NXE
/// when the CPU has NX. Nothing else (no SVME, LMSLE, FFXSR, TCE).
pub fn efer_for(f: &Features) -> u64 {
    EFER_SCE | EFER_LME | EFER_LMA | if f.nx { EFER_NXE } else { 0 }
}

/// IA32_PAT: the power-on value, written so the page tables' PWT/PCD bits mean
/// what the kernel assumes (entries 0-3 and 4-7: WB, WT, UC-, UC; the kernel
/// sets neither bit, so everything it maps is PAT entry 0, write-back, and
/// MMIO is uncached by the MTRRs).
pub const PAT: u64 = 0x0007_0406_0007_0406;
/// DR7: every breakpoint disabled (bit 10 reads as 1).
pub const DR7: u64 = 0x400;
/// DR6 with no event recorded (its reserved bits read as 1).
pub const DR6_CLEAR: u64 = 0xffff_0ff0;
/// RFLAGS at the end of bring-up: only the reserved bit 1. IF off (the caller
/// enables interrupts when it is ready), IOPL 0 (no port access from ring 3
/// even if a future path copied kernel flags to user), AC, DF, NT, TF clear.
pub const RFLAGS: u64 = 0x2;

/// What [`verdict`] reports for each field [`read_back`] compares, in order.
const FIELDS: [&str; 24] = [
    "CR0 differs",
    "CR4 differs",
    "EFER differs",
    "PAT differs",
    "DR7 differs",
    "DR6 differs",
    "DR0 differs",
    "DR1 differs",
    "DR2 differs",
    "DR3 differs",
    "TSC_AUX differs",
    "LDTR differs",
    "TR differs",
    "TSS I/O-bitmap offset differs",
    "RFLAGS differs",
    "STAR differs",
    "LSTAR differs",
    "SFMASK differs",
    "XCR0 differs",
    "CR8 differs",
    "CSTAR differs",
    "SYSENTER_CS differs",
    "DEBUGCTL differs",
    "MTRRs differ from the boot CPU's",
];

/// Sets every piece of CPU state the kernel relies on, on the CPU this runs
/// on. Both the boot CPU (`main.rs`) and every AP (`smp.rs`) call it right
/// after [`percpu::init_cpu`] and [`super::idt::load`], before anything else
/// runs on that CPU. It sets, in this order:
///
/// - **RFLAGS** := [`RFLAGS`] (IOPL 0, AC/DF/NT/TF clear, IF off);
/// - **CR0** := [`CR0`] (PE MP ET NE WP PG; CD NW AM EM TS clear);
/// - **CR4** := [`cr4_for`] (exact value; FSGSBASE, PCIDE, TSD off);
/// - **XCR0** (x87, SSE, AVX when present) through [`fpu::init_cpu`];
/// - **EFER** := [`efer_for`] (SCE LME LMA, NXE when present);
/// - **PAT** := [`PAT`] (when the CPU has one);
/// - **DR0-DR3** := 0, **DR6** := [`DR6_CLEAR`], **DR7** := [`DR7`];
/// - **TSC_AUX** := the CPU id, so RDTSCP and RDPID report it (when present);
/// - **DEBUGCTL** := 0 (no LBR, no branch single-step);
/// - **MTRRs** (APs): the boot CPU's, copied if the firmware left them
///   different;
/// - **LDTR** := 0, a null LDT: any selector with TI=1 raises #GP;
/// - **TR**: loaded by [`percpu::init_cpu`] (it must be live before the IDT,
///   for the IST stacks) and checked here to be [`TSS_SEL`]; the TSS's
///   **I/O-bitmap offset** is set past the TSS limit, so no I/O bitmap exists
///   and ring 3 has no port access at IOPL 0;
/// - **STAR, LSTAR, SFMASK, CSTAR, SYSENTER_CS/ESP/EIP** through
///   [`syscall::init_msrs`];
/// - **CR8** (task priority) := 0.
///
/// GS_BASE and KERNEL_GS_BASE are set by [`percpu::init_cpu`], the local APIC
/// by `apic::init_cpu`.
///
/// # Safety
/// Call once per CPU, on that CPU, with interrupts off, after
/// [`percpu::init_cpu`] and before any user code or interrupt handler runs on
/// it. The kernel page tables (or the boot tables) must stay valid under the
/// new CR0/CR4 (they are: WP and NX only restrict).
pub unsafe fn init_this_cpu(f: &Features, cpu_id: u32, boot_cpu: bool) {
    let cr4 = cr4_for(f);
    // Sound because each write sets the documented value; none of them changes the
    // translation of a kernel address (PAE/LME stay on, PG stays on, PGE only
    // keeps kernel entries across CR3 loads, PAT entry 0 stays WB). Interrupts
    // are off, so nothing observes the intermediate states.
    // SAFETY: as explained just above.
    unsafe {
        asm!("push {f}", "popfq", f = in(reg) RFLAGS); // RFLAGS := exact value
        asm!("mov cr0, {}", in(reg) CR0, options(nostack, preserves_flags));
        asm!("mov cr4, {}", in(reg) cr4, options(nostack, preserves_flags));
        fpu::init_cpu(f, boot_cpu); // XCR0 (needs CR4.OSXSAVE, set above)
        cpu::wrmsr(msr::EFER, efer_for(f));
        if f.pat {
            cpu::wrmsr(msr::PAT, PAT);
        }
        asm!(
            "mov dr7, {dr7}",                // breakpoints off first
            "mov dr0, {z}",
            "mov dr1, {z}",
            "mov dr2, {z}",
            "mov dr3, {z}",
            "mov dr6, {dr6}",
            dr7 = in(reg) DR7,
            dr6 = in(reg) DR6_CLEAR,
            z = in(reg) 0u64,
            options(nostack, preserves_flags, nomem)
        );
        if f.rdtscp || f.rdpid {
            cpu::wrmsr(msr::TSC_AUX, cpu_id as u64);
        }
        // DEBUGCTL exists on every x86_64 CPU (Intel since P6, AMD's
        // DebugCtl); 0: no branch recording, and a user's TF single-steps
        // instructions, not branches (BTF), whatever the firmware left.
        cpu::wrmsr(msr::DEBUGCTL, 0);
        asm!("lldt {0:x}", in(reg) 0u16, options(nostack, preserves_flags, nomem));
        asm!("mov cr8, {}", in(reg) 0u64, options(nostack, preserves_flags, nomem));
    }
    // Only this CPU writes its own TSS, with interrupts off; the CPU reads
    // the I/O-bitmap offset only on a port access from ring 3.
    percpu::set_iomap_base(IOMAP_NONE);
    syscall::init_msrs();
    if boot_cpu {
        uaccess::set_smap(f.smap);
        BOOT_MTRRS.call_once(read_mtrrs);
    } else {
        // SAFETY: an AP in bring-up, interrupts off, CR0/CR4 final (above).
        if unsafe { sync_mtrrs() } {
            // QEMU's INIT clears an AP's MTRRs (all memory uncached): this
            // fires on every AP there; real firmware leaves them alike.
            log::info!("CPU {cpu_id}: MTRRs differed from the boot CPU's; copied them");
        }
    }
    record_check(f, cpu_id);
}

/// The boot CPU's features, which every AP must match ([`check_ap_features`]).
static BOOT_FEATURES: spin::Once<Features> = spin::Once::new();

/// Records the boot CPU's features (once, before any AP starts).
pub fn set_boot_features(f: &Features) {
    BOOT_FEATURES.call_once(|| *f);
}

/// What an AP with features `ap` lacks or has beyond the boot CPU's `boot`
/// that the kernel decided once for every CPU, or `None`.
pub fn ap_mismatch(boot: &Features, ap: &Features) -> Option<&'static str> {
    // Decided once, on the boot CPU, for all: the page-table format (the NX
    // bit is reserved without EFER.NXE, the direct map uses 1 GiB pages), the
    // FPU save instruction, XCR0 and save-area size (an AP with AVX but an
    // area sized without it would XSAVE past the end of every thread's area;
    // one without XSAVE would #UD on XRSTOR), the local APIC mode and timer
    // mode (`apic::TSC_DEADLINE` is one flag), and the entry stubs' `clac`
    // byte. SMEP and UMIP are per-CPU bits, but a CPU
    // quietly running without a protection the others have is refused too.
    let pairs = [
        (boot.nx, ap.nx, "NX (the page tables use the NX bit)"),
        (
            boot.page_1g,
            ap.page_1g,
            "1 GiB pages (the direct map uses them)",
        ),
        (
            boot.xsave,
            ap.xsave,
            "XSAVE (the FPU save format is global)",
        ),
        (
            boot.xsaveopt,
            ap.xsaveopt,
            "XSAVEOPT (the FPU save instruction is global)",
        ),
        (
            boot.avx,
            ap.avx,
            "AVX (XCR0 and the FPU area size are global)",
        ),
        (boot.x2apic, ap.x2apic, "x2APIC (the APIC mode is global)"),
        (
            boot.tsc_deadline,
            ap.tsc_deadline,
            "TSC-deadline timer (the timer mode is global: an AP with it would make a boot CPU without it write a missing MSR on every tick)",
        ),
        (boot.smep, ap.smep, "SMEP"),
        (
            boot.smap,
            ap.smap,
            "SMAP (the entry stubs' clac byte is global)",
        ),
        (boot.umip, ap.umip, "UMIP"),
    ];
    pairs
        .iter()
        .find(|(b, a, _)| b != a)
        .map(|&(_, _, what)| what)
}

/// Stops the machine if this AP (features `f`) differs from the boot CPU in
/// anything the kernel decided once for all CPUs. Called by every AP before
/// [`init_this_cpu`] (which would otherwise write state this CPU cannot
/// hold, or quietly run it with weaker protections).
pub fn check_ap_features(f: &Features, cpu_id: u32) {
    let boot = BOOT_FEATURES
        .get()
        .expect("boot CPU features recorded before APs start");
    if let Some(what) = ap_mismatch(boot, f) {
        panic!("CPU {cpu_id}: {what} differs from the boot CPU's; mixed CPUs are not supported");
    }
}

/// IA32_MTRRCAP: VCNT (bits 0-7), FIX (bit 8).
const MTRR_CAP: u32 = 0xfe;
/// IA32_MTRR_DEF_TYPE: default type (bits 0-7), FE (bit 10), E (bit 11).
const MTRR_DEF_TYPE: u32 = 0x2ff;
/// MTRR_DEF_TYPE.E: MTRRs enabled.
const MTRR_ENABLE: u64 = 1 << 11;
/// The eleven fixed-range MTRRs.
const MTRR_FIXED: [u32; 11] = [
    0x250, 0x258, 0x259, 0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f,
];
/// IA32_MTRR_PHYSBASE0 (PHYSMASKn = PHYSBASEn + 1, pairs follow).
const MTRR_PHYS_BASE0: u32 = 0x200;
/// Variable ranges compared and copied (VCNT is 8 to 10 on real CPUs).
const MTRR_MAX_VAR: usize = 32;

/// One CPU's memory-type ranges (the MTRRs), as far as this CPU has them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Mtrrs {
    def_type: u64,
    fixed: [u64; 11],
    var: [(u64, u64); MTRR_MAX_VAR],
}

/// This CPU's MTRRs, or `None` if CPUID reports none.
fn read_mtrrs() -> Option<Mtrrs> {
    if cpu::cpuid(1, 0).edx & (1 << 12) == 0 {
        return None;
    }
    // SAFETY: CPUID reports MTRRs, so MTRRCAP, DEF_TYPE, the fixed ranges
    // (when MTRRCAP.FIX) and VCNT variable pairs exist; reads have no effect.
    unsafe {
        let cap = cpu::rdmsr(MTRR_CAP);
        let mut m = Mtrrs {
            def_type: cpu::rdmsr(MTRR_DEF_TYPE),
            fixed: [0; 11],
            var: [(0, 0); MTRR_MAX_VAR],
        };
        if cap & (1 << 8) != 0 {
            for (v, &msr) in m.fixed.iter_mut().zip(MTRR_FIXED.iter()) {
                *v = cpu::rdmsr(msr);
            }
        }
        let vcnt = ((cap & 0xff) as usize).min(MTRR_MAX_VAR);
        for (i, pair) in m.var.iter_mut().enumerate().take(vcnt) {
            let base = MTRR_PHYS_BASE0 + 2 * i as u32;
            *pair = (cpu::rdmsr(base), cpu::rdmsr(base + 1));
        }
        Some(m)
    }
}

/// The boot CPU's MTRRs, which every AP is made to match.
static BOOT_MTRRS: spin::Once<Option<Mtrrs>> = spin::Once::new();

/// Makes this AP's MTRRs the boot CPU's, if the firmware left them different
/// (the memory type of a page must be the same on every CPU; firmware is
/// meant to program all CPUs alike, and Linux copies the boot CPU's MTRRs to
/// every AP in case it did not). Under QEMU every AP arrives with its MTRRs
/// cleared by the INIT IPI (disabled: all memory uncached) while the boot
/// CPU has SeaBIOS's or OVMF's (write-back, the PCI hole uncached). Follows the SDM's update procedure (vol. 3,
/// 11.11.8): caches off (CD) and flushed, MTRRs disabled, written, enabled,
/// caches flushed again and on. Returns whether anything was rewritten.
///
/// # Safety
/// On an AP, with interrupts off, during bring-up (nothing else runs on it),
/// after `CR0`/`CR4` hold their final values (they are restored as read).
unsafe fn sync_mtrrs() -> bool {
    let Some(Some(boot)) = BOOT_MTRRS.get() else {
        return false;
    };
    let Some(mine) = read_mtrrs() else {
        return false;
    };
    if mine == *boot {
        return false;
    }
    // Sound by the caller's contract. Only MSRs this CPU's MTRRCAP reports
    // are written (fixed ranges if FIX, VCNT variable pairs), with values
    // the boot CPU holds in the same registers. CD/NW, WBINVD and the
    // CR4.PGE toggle are the SDM's sequence and change no translation.
    // SAFETY: as explained just above.
    unsafe {
        let cr0: u64;
        let cr4: u64;
        asm!("mov {}, cr0", out(reg) cr0, options(nostack, nomem, preserves_flags));
        asm!("mov {}, cr4", out(reg) cr4, options(nostack, nomem, preserves_flags));
        let cd = (cr0 | (1 << 30)) & !(1 << 29); // CD on, NW off
        asm!("mov cr0, {}", "wbinvd", in(reg) cd, options(nostack, preserves_flags));
        // A CR4.PGE toggle flushes the TLB, global entries included.
        asm!("mov cr4, {}", in(reg) cr4 & !CR4_PGE, options(nostack, preserves_flags));
        cpu::wrmsr(MTRR_DEF_TYPE, mine.def_type & !MTRR_ENABLE);
        let cap = cpu::rdmsr(MTRR_CAP);
        if cap & (1 << 8) != 0 {
            for (&v, &msr) in boot.fixed.iter().zip(MTRR_FIXED.iter()) {
                cpu::wrmsr(msr, v);
            }
        }
        let vcnt = ((cap & 0xff) as usize).min(MTRR_MAX_VAR);
        for (i, &(b, m)) in boot.var.iter().enumerate().take(vcnt) {
            let base = MTRR_PHYS_BASE0 + 2 * i as u32;
            cpu::wrmsr(base, b);
            cpu::wrmsr(base + 1, m);
        }
        cpu::wrmsr(MTRR_DEF_TYPE, boot.def_type);
        asm!("wbinvd", options(nostack, preserves_flags));
        asm!("mov cr4, {}", in(reg) cr4, options(nostack, preserves_flags));
        asm!("mov cr0, {}", in(reg) cr0, options(nostack, preserves_flags));
    }
    true
}

/// The TSS I/O-bitmap offset meaning "no bitmap": one past the TSS limit
/// (`iopb`: a process that enabled ports switches its bitmap in).
pub const IOMAP_NONE: u16 = super::iopb::IOMAP_NONE;

/// Reads back the state [`init_this_cpu`] set, in [`FIELDS`] order, with the
/// value intended for each.
fn read_back(f: &Features, cpu_id: u32) -> [(u64, u64); 24] {
    let (cr0, cr4, dr0, dr1, dr2, dr3, dr6, dr7, rflags): (
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
    );
    let (ldtr, tr): (u16, u16);
    let cr8: u64;
    // SAFETY: reads of control, debug and descriptor-table registers in ring 0
    // have no side effects.
    unsafe {
        asm!("mov {}, cr0", out(reg) cr0, options(nostack, nomem, preserves_flags));
        asm!("mov {}, cr4", out(reg) cr4, options(nostack, nomem, preserves_flags));
        asm!("mov {}, dr0", out(reg) dr0, options(nostack, nomem, preserves_flags));
        asm!("mov {}, dr1", out(reg) dr1, options(nostack, nomem, preserves_flags));
        asm!("mov {}, dr2", out(reg) dr2, options(nostack, nomem, preserves_flags));
        asm!("mov {}, dr3", out(reg) dr3, options(nostack, nomem, preserves_flags));
        asm!("mov {}, dr6", out(reg) dr6, options(nostack, nomem, preserves_flags));
        asm!("mov {}, dr7", out(reg) dr7, options(nostack, nomem, preserves_flags));
        asm!("pushfq", "pop {}", out(reg) rflags, options(nomem, preserves_flags));
        asm!("sldt {0:x}", out(reg) ldtr, options(nostack, nomem, preserves_flags));
        asm!("str {0:x}", out(reg) tr, options(nostack, nomem, preserves_flags));
        asm!("mov {}, cr8", out(reg) cr8, options(nostack, nomem, preserves_flags));
    }
    let (xcr0, want_xcr0) = if f.xsave {
        let (lo, hi): (u32, u32);
        // SAFETY: CR4.OSXSAVE is set when the CPU has XSAVE (cr4_for), so
        // XGETBV with ECX = 0 reads XCR0 and has no other effect.
        unsafe {
            asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nostack, nomem, preserves_flags))
        };
        ((u64::from(hi) << 32) | u64::from(lo), fpu::xcr0_for(f))
    } else {
        (0, 0)
    };
    // SAFETY: EFER and the syscall MSRs exist on every x86_64 CPU; PAT and
    // TSC_AUX are read only when CPUID reports them.
    let (efer, pat, aux, star, lstar, sfmask, cstar, sysenter_cs, debugctl) = unsafe {
        (
            cpu::rdmsr(msr::EFER),
            if f.pat { cpu::rdmsr(msr::PAT) } else { PAT },
            if f.rdtscp || f.rdpid {
                cpu::rdmsr(msr::TSC_AUX)
            } else {
                cpu_id as u64
            },
            cpu::rdmsr(msr::STAR),
            cpu::rdmsr(msr::LSTAR),
            cpu::rdmsr(msr::SFMASK),
            cpu::rdmsr(msr::CSTAR),
            cpu::rdmsr(msr::SYSENTER_CS),
            cpu::rdmsr(msr::DEBUGCTL),
        )
    };
    let iomap = percpu::this().iomap_base() as u64;
    let (want_star, want_lstar, want_sfmask) = syscall::intended_msrs();
    [
        // CR0.TS is per-thread state (the FPU first-use trap, fpu.rs):
        // set while a thread that never used the FPU runs, so not compared.
        (cr0 & !fpu::CR0_TS, CR0),
        (cr4, cr4_for(f)),
        (efer, efer_for(f)),
        (pat, PAT),
        (dr7, DR7),
        (dr6, DR6_CLEAR),
        (dr0, 0),
        (dr1, 0),
        (dr2, 0),
        (dr3, 0),
        (aux, cpu_id as u64),
        (ldtr as u64, 0),
        (tr as u64, TSS_SEL as u64),
        (iomap, IOMAP_NONE as u64),
        // The system flags only: IF may be on when the ktest re-checks, and
        // the status flags (CF PF AF ZF SF OF) are whatever the last
        // instruction left.
        (rflags & !(1 << 9 | 0x8d5), RFLAGS),
        (star, want_star),
        (lstar, want_lstar),
        (sfmask, want_sfmask),
        (xcr0, want_xcr0),
        (cr8, 0),
        (cstar, 0),
        (sysenter_cs, 0),
        (debugctl, 0),
        (
            u64::from(BOOT_MTRRS.get().is_some_and(|b| *b != read_mtrrs())),
            0,
        ),
    ]
}

/// Compares this CPU's state with what [`init_this_cpu`] intends and records
/// the verdict for CPU `cpu_id`.
pub fn record_check(f: &Features, cpu_id: u32) {
    let verdict = match read_back(f, cpu_id)
        .iter()
        .position(|(got, want)| got != want)
    {
        None => 1,
        Some(i) => 2 + i as u8,
    };
    // Per CPU (its record's `state_check`): 0 = not initialised, 1 = the
    // read-back matched, 2 + i = field i of [`FIELDS`] did not.
    if let Some(c) = percpu::CpuId::new(cpu_id) {
        percpu::slot(c).state_check.store(verdict, Ordering::SeqCst);
    }
}

/// The recorded verdict for CPU `cpu`: `Ok` if its state read back as
/// intended, else what was wrong.
pub fn verdict(cpu: usize) -> Result<(), &'static str> {
    let slot = percpu::CpuId::new(cpu as u32).map(percpu::slot);
    match slot.map(|pc| pc.state_check.load(Ordering::SeqCst)) {
        Some(1) => Ok(()),
        Some(0) | None => Err("init_this_cpu never ran"),
        Some(v) => Err(FIELDS.get(v as usize - 2).copied().unwrap_or("?")),
    }
}
