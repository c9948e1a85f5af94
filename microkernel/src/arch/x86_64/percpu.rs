//! The per-CPU table: one [`PerCpu`] record per CPU, in one static array
//! ([`CPUS`]) indexed by [`CpuId`], reached through GS.
//!
//! In ring 0, `GS_BASE` holds this CPU's [`PerCpu`]; in ring 3 `GS_BASE` is the
//! thread's own value and `KERNEL_GS_BASE` holds the `PerCpu` until the next
//! `swapgs`. Fields that assembly touches are reached only through the `OFF_*`
//! constants below, computed with `offset_of!` and checked at compile time.
//!
//! Every per-CPU datum of the layers up to the memory manager lives here (the
//! APIC, its timer deadlines, the loaded root, the shootdown flag, bring-up
//! figures); the scheduler's per-CPU part, whose type belongs to a higher
//! layer, hangs off [`PerCpu::sched`]. There are no `[_; MAX_CPUS]` side
//! arrays.
//!
//! # Sharing rule
//! The table is shared by every CPU from the start (any CPU may look at any
//! record: shootdown targeting, run-queue balancing, kicks), so no field is
//! ever written through a plain `&mut`. A field written after boot is either
//! an atomic, or sits in an [`UnsafeCell`] that **only the owning CPU**
//! touches, with interrupts off (the TSS, the GDT, the local-APIC handle).

use super::gdt::{Gdt, IST_COUNT};
use super::{apic, cpu, cpu::msr};
use core::cell::UnsafeCell;
use core::mem::{offset_of, MaybeUninit};
use core::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};
use x2apic::lapic::LocalApic;
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

/// The most CPUs the kernel runs on (more in the MADT are ignored).
pub const MAX_CPUS: usize = 64;

/// A dense CPU number: 0 is the boot CPU, `0..smp::online()` are online.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CpuId(u32);

impl CpuId {
    /// The boot CPU.
    pub const BOOT: CpuId = CpuId(0);

    /// `raw` if it names a slot of the table.
    pub const fn new(raw: u32) -> Option<CpuId> {
        if (raw as usize) < MAX_CPUS {
            Some(CpuId(raw))
        } else {
            None
        }
    }

    /// The CPU at table index `i` (`i < MAX_CPUS`, the caller's duty;
    /// checked in debug builds, and every table access is bounds-checked).
    #[inline(always)]
    pub const fn from_index(i: usize) -> CpuId {
        debug_assert!(i < MAX_CPUS);
        CpuId(i as u32)
    }

    /// The raw number.
    #[inline(always)]
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The table index.
    #[inline(always)]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl core::fmt::Display for CpuId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.fmt(f)
    }
}

/// Bits of a thread's work word: deferred work the thread must do before it
/// runs user code again (Linux's TIF work mask). The return-to-user paths
/// test the whole word once (`syscall.rs`, `isr_return` in `idt.rs`) at
/// [`OFF_THREAD_WORK`] from the current-thread pointer.
pub mod work {
    /// Its process is ending: the thread dies instead of returning to ring 3.
    pub const KILL: u32 = 1 << 0;
    /// `thread_suspend` (hw, issue 11): the thread parks before it runs user
    /// code again, until `thread_resume` clears the bit.
    pub const SUSPEND: u32 = 1 << 1;
    /// Every bit the return paths look at.
    pub const MASK: u32 = KILL | SUSPEND;
}

/// Where the work word (an `AtomicU32`) sits in the record
/// [`PerCpu::current_thread`] points at. The thread type asserts it.
pub const OFF_THREAD_WORK: usize = 0;

/// One CPU's record. Lives in [`CPUS`] for the machine's lifetime.
#[repr(C, align(64))]
pub struct PerCpu {
    /// Points at this struct, so `gs:[0]` yields a normal pointer; 0 until
    /// [`init_cpu`] (release-stored last: non-zero means "initialised").
    self_ptr: AtomicU64,
    /// Scratch slot: the user RSP parked by the syscall entry stub.
    user_rsp: AtomicU64,
    /// Dense CPU number (the index in [`CPUS`]).
    cpu_id: AtomicU32,
    /// Local APIC id plus one (0: none yet, or the AP was abandoned; so
    /// that an all-zero record means "not up", break26s: [`CPUS`] in `.bss`).
    apic_id: AtomicU32,
    /// The running thread (a `*const Thread`, 0 before the scheduler starts).
    current_thread: AtomicU64,
    /// Syscalls entered on this CPU.
    pub syscalls: AtomicU64,
    /// Interrupts taken on this CPU.
    pub interrupts: AtomicU64,
    /// `call`s this CPU completed on the IPC fast path (`ipc::fastpath`;
    /// ring-3 tests read it through `cpu_syscalls`' counter selector).
    pub fast_calls: AtomicU64,
    /// `reply_recv`s this CPU completed on the IPC fast path.
    pub fast_replies: AtomicU64,
    /// `call`s this CPU completed on the cross-core path (`ipc::xcall`).
    pub xcalls: AtomicU64,
    /// Timer ticks that found this CPU idle with a thread queued: a wake
    /// that neither its IPI nor the idle poll delivered (`sched::tick`;
    /// the ring-3 `xcore` cases expect none).
    pub late_wakes: AtomicU64,
    /// Polls of a blocking thread (`sched::block`) that reached their
    /// bound with nothing queued: spins that bought nothing (breakk2: the
    /// ring-3 case expects none on a CPU with no other CPU to wake it).
    pub poll_misses: AtomicU64,
    /// Syscalls this CPU refused to return from: a non-canonical return
    /// RIP (CVE-2012-0217; `syscall::non_canonical_return`). The ring-3
    /// cases that provoke one count it: TCG's SYSRET faults AMD-style, in
    /// ring 3, so a thread dies of #GP even with the check gone.
    pub rip_refusals: AtomicU64,
    /// The root this CPU's CR3 holds ([`super::mmu`]).
    pub(super) loaded_root: AtomicU64,
    /// The key of the I/O bitmap live in this CPU's TSS, 0 for none
    /// ([`super::iopb`]'s `switch_to` compares it in one `gs:` load; owning
    /// CPU only, interrupts off).
    io_live_key: AtomicU64,
    /// A TLB shootdown request waits for this CPU ([`super::tlb`]).
    pub(super) shootdown_pending: AtomicBool,
    /// When this CPU's next scheduler tick is due (TSC; [`super::apic`]).
    pub(super) next_tick_tsc: AtomicU64,
    /// When this CPU's timer is armed to fire next (TSC; [`super::apic`]).
    pub(super) armed_tsc: AtomicU64,
    /// Result of the CPU-state read-back ([`super::cpustate`]): 0 = not
    /// initialised, 1 = matched, 2 + i = field i did not.
    pub(super) state_check: AtomicU8,
    /// Result of [`selfcheck`]: 0 = not checked, 1 = the `gs:` view agrees
    /// with this record and the APIC, 2 = it does not.
    selfcheck: AtomicU8,
    /// Cycles from INIT to arrival (0 for the boot CPU; `smp`).
    pub bringup_cycles: AtomicU64,
    /// The scheduler's per-CPU part (its type is the scheduler's, a higher
    /// layer): null until this CPU joins the scheduler, then set once
    /// (release) by this CPU and never changed.
    pub sched: AtomicPtr<()>,
    /// This CPU's trace ring (`crate::trace`, a higher layer's type): null
    /// while tracing is off, else set once (release) at this CPU's init.
    pub trace: AtomicPtr<()>,
    /// This CPU's local APIC (owning CPU only, interrupts off).
    pub(super) apic: UnsafeCell<MaybeUninit<LocalApic>>,
    /// Whether [`PerCpu::apic`] holds this CPU's local APIC (set once by the
    /// owning CPU after writing it; not an `Option`, whose `None` is not all
    /// zero bytes: break26s, [`CPUS`] in `.bss`).
    pub(super) apic_up: AtomicBool,
    /// This CPU's descriptor table (filled once by the owning CPU).
    gdt: UnsafeCell<Gdt>,
    /// This CPU's TSS and I/O bitmap ([`super::iopb`]; owning CPU only,
    /// interrupts off). Here, at a fixed `gs:` offset, so its RSP0 is also
    /// the top of the running thread's kernel stack the syscall stub
    /// switches to ([`OFF_KERNEL_RSP`]): a switch stores it once (cut26s:
    /// it stored `kernel_rsp` and RSP0 through a pointer, three
    /// instructions).
    io: UnsafeCell<super::iopb::TssIo>,
}

/// `gs:` offset of [`PerCpu::self_ptr`].
pub const OFF_SELF: usize = offset_of!(PerCpu, self_ptr);
/// `gs:` offset of [`PerCpu::user_rsp`].
pub const OFF_USER_RSP: usize = offset_of!(PerCpu, user_rsp);
/// `gs:` offset of the top of the running thread's kernel stack: this
/// CPU's TSS.RSP0 (in [`PerCpu::io`]), which the CPU switches to on an
/// interrupt from ring 3 and the syscall stub on a `syscall`.
pub const OFF_KERNEL_RSP: usize = offset_of!(PerCpu, io)
    + offset_of!(super::iopb::TssIo, tss)
    + offset_of!(TaskStateSegment, privilege_stack_table);
/// `gs:` offset of [`PerCpu::cpu_id`].
pub const OFF_CPU_ID: usize = offset_of!(PerCpu, cpu_id);
/// `gs:` offset of [`PerCpu::apic_id`].
pub const OFF_APIC_ID: usize = offset_of!(PerCpu, apic_id);
/// `gs:` offset of [`PerCpu::current_thread`].
pub const OFF_CURRENT: usize = offset_of!(PerCpu, current_thread);
/// `gs:` offset of [`PerCpu::syscalls`].
pub const OFF_SYSCALLS: usize = offset_of!(PerCpu, syscalls);
/// `gs:` offset of [`PerCpu::sched`].
pub const OFF_SCHED: usize = offset_of!(PerCpu, sched);
/// `gs:` offset of [`PerCpu::fast_calls`].
pub const OFF_FAST_CALLS: usize = offset_of!(PerCpu, fast_calls);
/// `gs:` offset of [`PerCpu::fast_replies`].
pub const OFF_FAST_REPLIES: usize = offset_of!(PerCpu, fast_replies);
/// `gs:` offset of [`PerCpu::loaded_root`].
const OFF_LOADED_ROOT: usize = offset_of!(PerCpu, loaded_root);
/// `gs:` offset of [`PerCpu::io_live_key`].
const OFF_IO_LIVE_KEY: usize = offset_of!(PerCpu, io_live_key);

const _: () = assert!(OFF_SELF == 0);
const _: () = assert!(OFF_USER_RSP == 8);
const _: () = assert!(OFF_CPU_ID == 16);
const _: () = assert!(OFF_APIC_ID == 20);
const _: () = assert!(OFF_CURRENT == 24);
// RSP0 is the TSS's second field (after a reserved u32), 8 bytes at a 4-aligned
// offset: the stub's and the switch's plain 64-bit `mov`s reach it.
const _: () = assert!(OFF_KERNEL_RSP == offset_of!(PerCpu, io) + 4);
const _: () = assert!(OFF_KERNEL_RSP.is_multiple_of(4));
// Everything but the TSS and its 8 KiB bitmap in one page, as before.
const _: () = assert!(offset_of!(PerCpu, io) <= 4096);
// The asm reads and writes these as plain 64/32-bit words.
const _: () = assert!(core::mem::size_of::<AtomicU64>() == 8);
const _: () = assert!(core::mem::size_of::<AtomicU32>() == 4);

// SAFETY: every field is atomic except the four UnsafeCells, which only the
// owning CPU touches (module sharing rule); `LocalApic` holds an MMIO
// pointer that is never used from another CPU.
unsafe impl Sync for PerCpu {}

impl PerCpu {
    /// A blank record, all zero bytes (the CPU's `init_cpu` fills it).
    const fn new() -> PerCpu {
        PerCpu {
            self_ptr: AtomicU64::new(0),
            user_rsp: AtomicU64::new(0),
            cpu_id: AtomicU32::new(0),
            apic_id: AtomicU32::new(0),
            current_thread: AtomicU64::new(0),
            syscalls: AtomicU64::new(0),
            interrupts: AtomicU64::new(0),
            fast_calls: AtomicU64::new(0),
            fast_replies: AtomicU64::new(0),
            xcalls: AtomicU64::new(0),
            late_wakes: AtomicU64::new(0),
            poll_misses: AtomicU64::new(0),
            rip_refusals: AtomicU64::new(0),
            loaded_root: AtomicU64::new(0),
            io_live_key: AtomicU64::new(0),
            shootdown_pending: AtomicBool::new(false),
            next_tick_tsc: AtomicU64::new(0),
            armed_tsc: AtomicU64::new(0),
            state_check: AtomicU8::new(0),
            selfcheck: AtomicU8::new(0),
            bringup_cycles: AtomicU64::new(0),
            sched: AtomicPtr::new(core::ptr::null_mut()),
            trace: AtomicPtr::new(core::ptr::null_mut()),
            apic: UnsafeCell::new(MaybeUninit::uninit()),
            apic_up: AtomicBool::new(false),
            gdt: UnsafeCell::new(Gdt::empty()),
            io: UnsafeCell::new(super::iopb::TssIo::ZERO),
        }
    }

    /// Its CPU.
    pub fn id(&self) -> CpuId {
        CpuId(self.cpu_id.load(Ordering::Relaxed))
    }

    /// Its local APIC id, if known (`None` before bring-up or once abandoned).
    pub fn apic_id(&self) -> Option<u32> {
        self.apic_id.load(Ordering::Relaxed).checked_sub(1)
    }

    /// Records the APIC id of the CPU this slot is for (`None`: forget it).
    /// Written by the boot CPU while starting that CPU, and by the CPU itself.
    pub fn set_apic_id(&self, id: Option<u32>) {
        // `Some(u32::MAX)` is no id (x2APIC broadcast): 0, none, as before.
        self.apic_id
            .store(id.map_or(0, |i| i.wrapping_add(1)), Ordering::SeqCst);
    }

    /// Top of the running thread's kernel stack (TSS.RSP0).
    pub fn kernel_rsp(&self) -> u64 {
        // SAFETY: a read of a field only the owning CPU writes (interrupts
        // off); callers read their own record, so no write is concurrent.
        unsafe { (*self.io.get()).tss.privilege_stack_table[0].as_u64() }
    }

    /// The TSS's I/O-bitmap offset.
    pub fn iomap_base(&self) -> u16 {
        // SAFETY: a read of a field the owning CPU wrote at bring-up; callers
        // read their own record (interrupts off), so no write is concurrent.
        unsafe { (*self.io.get()).tss.iomap_base }
    }

    /// This CPU's TSS and I/O bitmap ([`super::iopb::tss`]).
    pub(super) fn tss_io(&self) -> *mut super::iopb::TssIo {
        self.io.get()
    }
}

/// The per-CPU table.
///
/// All zero at link time, so in `.bss` (break26s: with each CPU's TSS and
/// 8 KiB I/O bitmap in its record, a table with nonzero fields put 580 KiB
/// into the kernel ELF's `.data`): [`init_cpu`] stores the CPU id, and "no
/// APIC id" and "no local APIC" are zero ([`PerCpu::apic_id`],
/// [`PerCpu::apic_up`]).
static CPUS: [PerCpu; MAX_CPUS] = [const { PerCpu::new() }; MAX_CPUS];

/// The record of CPU `cpu` (whether or not it is up).
pub fn slot(cpu: CpuId) -> &'static PerCpu {
    &CPUS[cpu.index()]
}

/// The record of CPU number `cpu`, if it is up (a number from user space).
pub fn of(cpu: u64) -> Option<&'static PerCpu> {
    let pc = CPUS.get(usize::try_from(cpu).ok()?)?;
    // Acquire: pairs with init_cpu's release of `self_ptr`.
    (pc.self_ptr.load(Ordering::Acquire) != 0).then_some(pc)
}

/// CPUs online: the boot CPU, then each AP as the boot CPU counts it in
/// ([`mark_online`]). CPU ids are dense: `0..online()` are online.
static ONLINE: AtomicUsize = AtomicUsize::new(1);

/// CPUs online.
pub fn online() -> usize {
    ONLINE.load(Ordering::SeqCst)
}

/// Counts one more CPU online (the boot CPU, once that AP is up).
pub fn mark_online() {
    ONLINE.fetch_add(1, Ordering::SeqCst);
}

/// The records of the online CPUs, in CPU order.
pub fn online_cpus() -> impl Iterator<Item = &'static PerCpu> {
    CPUS[..online()].iter()
}

/// Set once the boot CPU's GS base is valid; before that `cpu_id()` is 0.
static GS_READY: AtomicBool = AtomicBool::new(false);

/// Makes slot `cpu` this CPU's record: fills the TSS (IST stack tops) and the
/// GDT, loads both, and points `GS_BASE` at it (`KERNEL_GS_BASE` = 0, the
/// initial user GS base). `apic_id`: `None` when not known yet (the boot
/// CPU, before its APIC is up).
///
/// # Safety
/// Call once per CPU, on that CPU, with interrupts off; no other CPU may run
/// on slot `cpu` (a CPU id is used only by the CPU that won its bring-up).
pub unsafe fn init_cpu(cpu: CpuId, apic_id: Option<u32>, ist_tops: [u64; IST_COUNT]) {
    let pc = slot(cpu);
    // Before `self_ptr`'s Release below (the table is all zero until now).
    pc.cpu_id.store(cpu.get(), Ordering::Relaxed);
    pc.set_apic_id(apic_id);
    let tss = super::iopb::tss(cpu);
    let gdt = pc.gdt.get();
    // After `load` the GDT is only read by the CPU, and the TSS written only
    // by this CPU; both live in a static, as long as the CPU.
    // SAFETY: this CPU owns the slot (caller's duty) and nothing has loaded
    // its TSS or GDT yet, so these writes alias nothing in use.
    unsafe {
        for (i, top) in ist_tops.iter().enumerate() {
            (*tss).tss.interrupt_stack_table[i] = VirtAddr::new(*top);
        }
        super::iopb::init_cpu(cpu);
        (*gdt).fill(tss as u64, super::iopb::TSS_LIMIT);
        (*gdt).load();
        cpu::wrmsr(msr::GS_BASE, pc as *const PerCpu as u64);
        cpu::wrmsr(msr::KERNEL_GS_BASE, 0);
    }
    // Release: the record's fields above are visible to whoever sees it up.
    pc.self_ptr
        .store(pc as *const PerCpu as u64, Ordering::Release);
    if cpu == CpuId::BOOT {
        GS_READY.store(true, Ordering::SeqCst);
    }
}

/// This CPU's record.
pub fn this() -> &'static PerCpu {
    let p: u64;
    // SAFETY: in ring 0 after init_cpu, gs:[0] is the PerCpu's self pointer,
    // an element of the static table.
    unsafe {
        core::arch::asm!("mov {}, gs:[{off}]", out(reg) p, off = const OFF_SELF, options(nostack, readonly, preserves_flags));
        &*(p as *const PerCpu)
    }
}

/// This CPU's record, or `None` before the boot CPU's [`init_cpu`] (the
/// panic path may run that early).
pub fn this_if_up() -> Option<&'static PerCpu> {
    GS_READY.load(Ordering::Relaxed).then(this)
}

/// The id of the CPU this runs on (the boot CPU before per-CPU data is set up).
#[inline]
pub fn cpu_id() -> CpuId {
    if !GS_READY.load(Ordering::Relaxed) {
        return CpuId::BOOT;
    }
    let id: u32;
    // SAFETY: once GS_READY is set every CPU that runs kernel code has its GS
    // base pointing at its PerCpu (APs set it before running Rust code that logs).
    unsafe {
        core::arch::asm!("mov {:e}, gs:[{off}]", out(reg) id, off = const OFF_CPU_ID, options(nostack, readonly, preserves_flags));
    }
    CpuId(id)
}

/// This CPU's table index in one `gs:` load, for code that only runs after
/// this CPU's [`init_cpu`] (the scheduler, syscall and interrupt handlers);
/// early boot code uses [`cpu_id`].
#[inline(always)]
pub fn cpu_index() -> usize {
    let id: u32;
    // SAFETY: callers run after init_cpu on this CPU, so gs: is its PerCpu.
    unsafe {
        core::arch::asm!("mov {:e}, gs:[{off}]", out(reg) id, off = const OFF_CPU_ID, options(nostack, readonly, preserves_flags));
    }
    id as usize
}

/// Adds one to this CPU's event counter at `gs:` offset `OFF` (one of
/// [`OFF_FAST_CALLS`], [`OFF_FAST_REPLIES`]) in one unlocked `inc`, as the
/// syscall stub counts [`PerCpu::syscalls`]: only this CPU writes its
/// counters, an interrupt cannot split the instruction, and the aligned
/// 8-byte store is single-copy atomic for other CPUs' Relaxed loads (the
/// IPC fast path's counters: a `gs:` load and a locked add before).
#[inline(always)]
pub fn count<const OFF: usize>() {
    const {
        assert!(OFF == OFF_FAST_CALLS || OFF == OFF_FAST_REPLIES);
    }
    // SAFETY: callers run after init_cpu on this CPU, so gs: is its PerCpu,
    // and `OFF` is the offset of one of its AtomicU64 counters (asserted
    // above), which only this CPU writes (see above).
    unsafe {
        core::arch::asm!("inc qword ptr gs:[{off}]", off = const OFF, options(nostack));
    }
}

/// The scheduler's part of this CPU's record ([`PerCpu::sched`]), in one
/// `gs:` load (null before this CPU joined the scheduler).
#[inline(always)]
pub fn sched_part() -> *mut () {
    let p: u64;
    // SAFETY: callers run after init_cpu on this CPU, so gs: is its PerCpu.
    unsafe {
        core::arch::asm!("mov {}, gs:[{off}]", out(reg) p, off = const OFF_SCHED, options(nostack, readonly, preserves_flags));
    }
    p as *mut ()
}

/// Sets the stack the CPU switches to on an interrupt from ring 3 (TSS.RSP0) and
/// the one the syscall stub switches to, both to `top`.
///
/// Always inlined, as are [`set_current`] and `mmu::load_root`: each switch
/// calls them, and out of line (the kernel's codegen units split them from
/// `sched::switch_to` after the loader merge) they cost 36 instructions per
/// IPC round trip (docs/ipc.md section 5, sixth round).
#[inline(always)]
pub fn set_kernel_stack(top: u64) {
    // One store (cut26s; three with a `kernel_rsp` of its own and RSP0
    // through a pointer; 12 through `this()`, `id()`, the TSS table's bounds
    // check and `VirtAddr::new`'s canonical test): `top` is a thread's
    // kernel stack top, a kernel address, so the check could not fail.
    debug_assert!(top >= 0xffff_8000_0000_0000);
    // Registers: `top` the new stack top, stored into this CPU's TSS.RSP0
    // (8 bytes, 4-aligned in the packed TSS: a plain `mov` stores it),
    // which the syscall stub reads too. Only this CPU writes its own TSS,
    // with interrupts off (the scheduler calls this inside its critical
    // section); the CPU reads RSP0 only on a ring change, which cannot
    // happen during this store.
    // SAFETY: in ring 0 after `init_cpu`, `gs:` is this CPU's PerCpu, whose
    // TSS sits at a fixed offset ([`OFF_KERNEL_RSP`]).
    unsafe {
        core::arch::asm!(
            "mov gs:[{krsp}], {top}",
            top = in(reg) top,
            krsp = const OFF_KERNEL_RSP,
            options(nostack, preserves_flags),
        );
    }
}

/// The key of this CPU's live I/O bitmap ([`PerCpu::io_live_key`]), in one
/// `gs:` load (after this CPU's [`init_cpu`]).
#[inline(always)]
pub fn io_live_key() -> u64 {
    let k: u64;
    // SAFETY: callers run after init_cpu on this CPU, so gs: is its PerCpu.
    unsafe {
        core::arch::asm!("mov {}, gs:[{off}]", out(reg) k, off = const OFF_IO_LIVE_KEY, options(nostack, readonly, preserves_flags));
    }
    k
}

/// Loads `root` into CR3 unless this CPU's record ([`PerCpu::loaded_root`])
/// names it already, recording it first (`mmu::load_root`, whose
/// ordering this is): one compare with the record, then, when it differs,
/// a plain store and the CR3 write (sched3: the `xchg` that recorded it
/// and returned the old value, its copy of the register and the compare of
/// the result took one instruction more a switch). The CR3 write is
/// serialising (Intel SDM vol. 3 9.3: every buffered write is drained to
/// memory before the next instruction runs), so the store is visible
/// before any page walk under the new root, as the locked `xchg` made it;
/// when the record names the root already, this CPU's walks run under the
/// root it names and nothing is stored. The asm block is a compiler
/// barrier too (no `nomem`).
///
/// # Safety
/// As `mmu::load_root`'s.
#[inline(always)]
pub unsafe fn load_root_recorded(root: u64) {
    // The field is an AtomicU64 (8 bytes, aligned), written only by this
    // CPU and read by others with SeqCst loads.
    // SAFETY: callers run after init_cpu on this CPU, so gs: is its
    // PerCpu (the field as said above); the CR3 write is their contract.
    unsafe {
        core::arch::asm!(
            "cmp gs:[{off}], {r}",
            "je 2f",
            "mov gs:[{off}], {r}",
            "mov cr3, {r}",
            "2:",
            r = in(reg) root,
            off = const OFF_LOADED_ROOT,
            options(nostack),
        );
    }
}

/// Records the key of this CPU's live I/O bitmap (owning CPU, interrupts
/// off: [`super::iopb`]).
pub fn set_io_live_key(key: u64) {
    this().io_live_key.store(key, Ordering::Relaxed);
}

/// Sets this CPU's TSS I/O-bitmap offset (bring-up, interrupts off).
pub fn set_iomap_base(offset: u16) {
    // SAFETY: only this CPU writes its own TSS, with interrupts off.
    unsafe { (*super::iopb::tss(this().id())).tss.iomap_base = offset };
}

/// Records the running thread (uncounted: its life reference, see `sched`).
/// Always inlined (each switch calls it: see [`set_kernel_stack`]).
#[inline(always)]
pub fn set_current(thread: u64) {
    // SAFETY: in ring 0 after `init_cpu`, `gs:` is this CPU's PerCpu; only
    // this CPU writes its `current_thread` (interrupts off), and one `gs:`
    // store is what `this().current_thread.store(.., Relaxed)` did in two.
    unsafe {
        core::arch::asm!(
            "mov gs:[{off}], {t}",
            t = in(reg) thread,
            off = const OFF_CURRENT,
            options(nostack, preserves_flags),
        );
    }
}

/// Records this CPU's APIC id (the boot CPU learns it after its APIC is up).
pub fn set_apic_id(id: u32) {
    this().set_apic_id(Some(id));
}

/// (self pointer, CPU id, APIC id) as this CPU reads them through `gs:`
/// (the APIC id `u32::MAX` when none is recorded).
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
    (p, id, apic.wrapping_sub(1))
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

/// Makes CPU `cpu` look at its run queue soon (it may be halted): a
/// reschedule IPI, unless it is this CPU or not up.
pub fn kick(cpu: CpuId) {
    if let Some(id) = slot(cpu).apic_id() {
        if cpu != cpu_id() {
            apic::send_ipi(apic::RESCHED_VECTOR, id);
        }
    }
}

/// Records whether this CPU's `gs:` view (self pointer, CPU id, APIC id)
/// agrees with its record and with the APIC. Every CPU runs it at the end of
/// its per-CPU init; `ktest` reads the verdicts ([`selfcheck_ok`]).
pub fn selfcheck() {
    let (p, id, apic) = read_via_gs();
    let pc = this();
    let ok = p == pc as *const PerCpu as u64
        && id == pc.id().get()
        && Some(apic) == pc.apic_id()
        && apic == apic::local_id();
    pc.selfcheck.store(if ok { 1 } else { 2 }, Ordering::SeqCst);
}

/// Whether CPU `cpu`'s [`selfcheck`] passed.
pub fn selfcheck_ok(cpu: CpuId) -> bool {
    slot(cpu).selfcheck.load(Ordering::SeqCst) == 1
}
