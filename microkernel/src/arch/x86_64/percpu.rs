//! Per-CPU state, reached through GS.
//!
//! In ring 0, `GS_BASE` holds this CPU's [`PerCpu`]; in ring 3 `GS_BASE` is the
//! thread's own value and `KERNEL_GS_BASE` holds the `PerCpu` until the next
//! `swapgs`. Fields that assembly touches are reached only through the `OFF_*`
//! constants below, computed with `offset_of!` and checked at compile time.

use super::gdt::{Gdt, IST_COUNT};
use super::{cpu, cpu::msr};
use core::mem::offset_of;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

/// One CPU's private data. Lives at a fixed address for the CPU's lifetime.
#[repr(C, align(64))]
pub struct PerCpu {
    /// Points at this struct, so `gs:[0]` yields a normal pointer.
    pub self_ptr: *const PerCpu,
    /// Scratch slot: the user RSP parked by the syscall entry stub.
    pub user_rsp: u64,
    /// Top of the running thread's kernel stack (the syscall stub switches to it).
    pub kernel_rsp: u64,
    /// Dense CPU number (0 = boot CPU).
    pub cpu_id: u32,
    /// Local APIC id.
    pub apic_id: u32,
    /// The running thread (a `*const Thread`, null before the scheduler starts).
    pub current_thread: u64,
    /// Syscalls entered on this CPU.
    pub syscalls: AtomicU64,
    /// Interrupts taken on this CPU.
    pub interrupts: AtomicU64,
    /// This CPU's task state segment (RSP0 and the IST stacks).
    pub tss: TaskStateSegment,
    /// This CPU's descriptor table.
    pub gdt: Gdt,
}

/// `gs:` offset of [`PerCpu::self_ptr`].
pub const OFF_SELF: usize = offset_of!(PerCpu, self_ptr);
/// `gs:` offset of [`PerCpu::user_rsp`].
pub const OFF_USER_RSP: usize = offset_of!(PerCpu, user_rsp);
/// `gs:` offset of [`PerCpu::kernel_rsp`].
pub const OFF_KERNEL_RSP: usize = offset_of!(PerCpu, kernel_rsp);
/// `gs:` offset of [`PerCpu::cpu_id`].
pub const OFF_CPU_ID: usize = offset_of!(PerCpu, cpu_id);
/// `gs:` offset of [`PerCpu::apic_id`].
pub const OFF_APIC_ID: usize = offset_of!(PerCpu, apic_id);
/// `gs:` offset of [`PerCpu::current_thread`].
pub const OFF_CURRENT: usize = offset_of!(PerCpu, current_thread);
/// `gs:` offset of [`PerCpu::syscalls`].
pub const OFF_SYSCALLS: usize = offset_of!(PerCpu, syscalls);

const _: () = assert!(OFF_SELF == 0);
const _: () = assert!(OFF_USER_RSP == 8);
const _: () = assert!(OFF_KERNEL_RSP == 16);
const _: () = assert!(OFF_CPU_ID == 24);
const _: () = assert!(OFF_APIC_ID == 28);
const _: () = assert!(OFF_CURRENT == 32);
const _: () = assert!(core::mem::size_of::<PerCpu>() <= 4096);

/// Every CPU's record, by CPU id (null until that CPU is initialised).
static ALL: [core::sync::atomic::AtomicPtr<PerCpu>; super::apic::MAX_CPUS] =
    [const { core::sync::atomic::AtomicPtr::new(core::ptr::null_mut()) }; super::apic::MAX_CPUS];

/// The record of CPU `cpu`, if it is up.
pub fn of(cpu: u64) -> Option<&'static PerCpu> {
    let p = ALL.get(cpu as usize)?.load(Ordering::Acquire);
    // SAFETY: non-null entries point at 'static PerCpu records that live as
    // long as their CPU (forever); shared reads of their atomics are fine.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// Set once the boot CPU's GS base is valid; before that `cpu_id()` is 0.
static GS_READY: AtomicBool = AtomicBool::new(false);

impl PerCpu {
    /// A blank record (filled by [`init_cpu`]).
    pub const fn new() -> PerCpu {
        PerCpu {
            self_ptr: core::ptr::null(),
            user_rsp: 0,
            kernel_rsp: 0,
            cpu_id: 0,
            apic_id: 0,
            current_thread: 0,
            syscalls: AtomicU64::new(0),
            interrupts: AtomicU64::new(0),
            tss: TaskStateSegment::new(),
            gdt: Gdt::empty(),
        }
    }
}

impl Default for PerCpu {
    fn default() -> Self {
        Self::new()
    }
}

/// Makes `pc` this CPU's per-CPU record: fills the TSS (IST stack tops) and the
/// GDT, loads both, and points `GS_BASE` at `pc` (`KERNEL_GS_BASE` = 0, the
/// initial user GS base).
///
/// # Safety
/// Call once per CPU, on that CPU, with interrupts off; `pc` must not be used as
/// another CPU's record.
pub unsafe fn init_cpu(
    pc: &'static mut PerCpu,
    cpu_id: u32,
    apic_id: u32,
    ist_tops: [u64; IST_COUNT],
) {
    pc.self_ptr = pc as *const PerCpu;
    pc.cpu_id = cpu_id;
    pc.apic_id = apic_id;
    for (i, top) in ist_tops.iter().enumerate() {
        pc.tss.interrupt_stack_table[i] = VirtAddr::new(*top);
    }
    let pc: &'static PerCpu = pc;
    // The GDT's TSS descriptor points into `pc`; both live as long as the CPU.
    let gdt = &pc.gdt as *const Gdt as *mut Gdt;
    // SAFETY: `pc` is this CPU's record, not yet loaded anywhere, so writing its
    // GDT through a raw pointer aliases nothing in use; after `load` the GDT is
    // only read by the CPU.
    unsafe {
        (*gdt).fill(&pc.tss);
        (*gdt).load();
        cpu::wrmsr(msr::GS_BASE, pc as *const PerCpu as u64);
        cpu::wrmsr(msr::KERNEL_GS_BASE, 0);
    }
    if let Some(slot) = ALL.get(cpu_id as usize) {
        slot.store(pc as *const PerCpu as *mut PerCpu, Ordering::Release);
    }
    if cpu_id == 0 {
        GS_READY.store(true, Ordering::SeqCst);
    }
}

/// This CPU's record.
pub fn this() -> &'static PerCpu {
    let p: u64;
    // SAFETY: in ring 0 after init_cpu, gs:[0] is the PerCpu's self pointer.
    unsafe {
        core::arch::asm!("mov {}, gs:[{off}]", out(reg) p, off = const OFF_SELF, options(nostack, readonly, preserves_flags));
        &*(p as *const PerCpu)
    }
}

/// The id of the CPU this runs on (0 before per-CPU data is set up).
pub fn cpu_id() -> u32 {
    if !GS_READY.load(Ordering::Relaxed) {
        return 0;
    }
    let id: u32;
    // SAFETY: once GS_READY is set every CPU that runs kernel code has its GS
    // base pointing at its PerCpu (APs set it before running Rust code that logs).
    unsafe {
        core::arch::asm!("mov {:e}, gs:[{off}]", out(reg) id, off = const OFF_CPU_ID, options(nostack, readonly, preserves_flags));
    }
    id
}

/// This CPU's id in one `gs:` load, for code that only runs after this CPU's
/// [`init_cpu`] (the scheduler, syscall and interrupt handlers); early boot
/// code uses [`cpu_id`].
#[inline(always)]
pub fn cpu_index() -> usize {
    let id: u32;
    // SAFETY: callers run after init_cpu on this CPU, so gs: is its PerCpu.
    unsafe {
        core::arch::asm!("mov {:e}, gs:[{off}]", out(reg) id, off = const OFF_CPU_ID, options(nostack, readonly, preserves_flags));
    }
    id as usize
}

/// Sets the stack the CPU switches to on an interrupt from ring 3 (TSS.RSP0) and
/// the one the syscall stub switches to, both to `top`.
pub fn set_kernel_stack(top: u64) {
    let pc = this() as *const PerCpu as *mut PerCpu;
    // SAFETY: only this CPU writes its own PerCpu's kernel_rsp and TSS.RSP0, with
    // interrupts off (the scheduler calls this inside its critical section).
    unsafe {
        (*pc).kernel_rsp = top;
        (*pc).tss.privilege_stack_table[0] = VirtAddr::new(top);
    }
}

/// Records the running thread (a raw strong reference, see `sched`).
pub fn set_current(thread: u64) {
    let pc = this() as *const PerCpu as *mut PerCpu;
    // SAFETY: only this CPU writes its own current_thread, with interrupts off.
    unsafe { (*pc).current_thread = thread };
}

/// Records this CPU's APIC id (the boot CPU learns it after its APIC is up).
pub fn set_apic_id(id: u32) {
    let pc = this() as *const PerCpu as *mut PerCpu;
    // SAFETY: only this CPU writes its own PerCpu, with interrupts off.
    unsafe { (*pc).apic_id = id };
}

/// (self pointer, CPU id, APIC id) as this CPU reads them through `gs:`.
pub fn read_via_gs() -> (u64, u32, u32) {
    let (p, id, apic): (u64, u32, u32);
    // SAFETY: reads of this CPU's PerCpu fields through GS in ring 0.
    unsafe {
        core::arch::asm!(
            "mov {p}, gs:[{o_self}]",
            "mov {id:e}, gs:[{o_id}]",
            "mov {apic:e}, gs:[{o_apic}]",
            p = out(reg) p,
            id = out(reg) id,
            apic = out(reg) apic,
            o_self = const OFF_SELF,
            o_id = const OFF_CPU_ID,
            o_apic = const OFF_APIC_ID,
            options(nostack, readonly, preserves_flags)
        );
    }
    (p, id, apic)
}

/// The running thread pointer (`PerCpu::current_thread`), in one `gs:` load.
#[inline(always)]
pub fn current_thread() -> u64 {
    let p: u64;
    // SAFETY: in ring 0 after init_cpu, gs: is this CPU's PerCpu.
    unsafe {
        core::arch::asm!("mov {}, gs:[{off}]", out(reg) p, off = const OFF_CURRENT, options(nostack, readonly, preserves_flags));
    }
    p
}
