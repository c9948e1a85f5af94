//! The real-mode trampoline that application processors start in, and the
//! per-AP slots through which each AP claims its bring-up.
//!
//! STARTUP IPIs start an AP in 16-bit real mode at `CS:IP = page:0` of a page
//! below 1 MiB. The bytes between `tramp_start` and `tramp_end` — code, GDT,
//! a three-entry real-mode IVT and a table of [`ApSlot`]s — are copied to
//! such a page (a writable frame, so the slots the code updates are in
//! writable memory) and the absolute-address fields are patched. The code:
//! 1. real mode: SS:SP := a scratch stack in the page, IDTR := the page's IVT
//!    (an NMI parks the CPU; see below); reads its APIC id with CPUID; finds
//!    the slot the boot CPU published for that id; SP := the slot's own park
//!    stack; then moves the slot's state WAITING -> ARRIVED with `lock
//!    cmpxchg`. Losing that race (the boot CPU already moved it to ABANDONED)
//!    or finding no slot parks the CPU: ABANDONED -> HALTED is recorded for
//!    the boot CPU's report and the CPU stays in `cli; hlt` forever;
//! 2. (winners only) ESI := the page's physical base; load the trampoline
//!    GDT; CR0.PE; far-jump to 32-bit code; PAE, CR3 := the bring-up page
//!    tables, EFER.LME (+NXE), CR0.PG|WP; far-jump to 64-bit code;
//! 3. long mode: RSP := the slot's stack, RDI := the slot's boot block, jump
//!    to the kernel's `ap_main` (main.rs) in the higher half.
//!
//! # Invariants (the late-AP handshake)
//! - Before its compare-and-swap an AP touches only the trampoline page: it
//!   reads code, the IVT and the slot table, and it may take one NMI on the
//!   scratch stack. No stack, boot block or page table of its own — so an AP
//!   that arrives after the boot CPU gave up on it can do no harm.
//! - A slot is published once (fields first, then `state := WAITING` with
//!   release ordering, before the INIT IPI) and never rewritten or reused;
//!   each bring-up attempt takes the next slot. A late AP therefore always
//!   finds its own slot, never another AP's stack or block.
//! - Exactly one of the AP's WAITING -> ARRIVED and the boot CPU's WAITING ->
//!   ABANDONED succeeds. The winner of ARRIVED owns the slot's stack and boot
//!   block; ABANDONED means the AP never will.
//! - The page is never freed or rewritten (`mem::trampoline_page` keeps it
//!   reserved), so a parked loser keeps executing valid code forever, NMIs
//!   included.
//!
//! # NMIs on a parked AP
//! A panic stops the other CPUs with an NMI to "all excluding self", which
//! also reaches parked APs. In real mode an NMI pushes FLAGS, CS and IP on
//! SS:SP and jumps through IVT entry 2. After INIT, SS:SP is 0:0 and the IVT
//! is whatever lies at physical 0, so the trampoline points both at its own
//! page first: IVT entry 2 is the park loop itself, which never `iret`s, so
//! NMIs stay blocked after the first and at most one 6-byte frame is ever
//! pushed — on the scratch stack (before the slot is known; shared by APs
//! that all push the same values there and read by nobody) or on the slot's
//! private park stack.

use super::percpu::MAX_CPUS;
use core::arch::global_asm;
use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Where a slot's bring-up stands: the word the AP and the boot CPU race on.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Never published (the AP's search skips it).
    Free = 0,
    /// Published; the AP may claim it.
    Waiting = 1,
    /// The AP claimed it (WAITING -> ARRIVED) and owns its stack and block.
    Arrived = 2,
    /// The boot CPU gave up first (WAITING -> ABANDONED); the AP, if it ever
    /// arrives, parks.
    Abandoned = 3,
    /// An AP arrived after it was abandoned and parked (ABANDONED -> HALTED).
    Halted = 4,
}

impl Arrival {
    fn from_u32(v: u32) -> Arrival {
        match v {
            1 => Arrival::Waiting,
            2 => Arrival::Arrived,
            3 => Arrival::Abandoned,
            4 => Arrival::Halted,
            _ => Arrival::Free,
        }
    }
}

/// One AP's bring-up parameters and arrival word, inside the trampoline page.
/// Written by the boot CPU before the AP's INIT and never again, except for
/// `state` (see [`Arrival`]) and the AP's park stack.
#[repr(C)]
pub struct ApSlot {
    /// The APIC id this slot is for (the AP compares its CPUID APIC id).
    apic_id: AtomicU32,
    /// An [`Arrival`] value; the AP updates it with `lock cmpxchg`.
    state: AtomicU32,
    /// The AP's kernel stack top (read by a winner in 64-bit mode).
    stack_top: AtomicU64,
    /// The address of its `smp::ApBoot` (RDI for `ap_main`).
    boot_block: AtomicU64,
    /// Test hook (`smp.late`): non-zero makes the AP wait in real mode until
    /// the boot CPU has decided (state != WAITING) before it tries to claim
    /// the slot, i.e. arrive after the timeout.
    late: AtomicU32,
    _reserved: AtomicU32,
    /// The parked AP's real-mode stack: room for the one NMI frame (6 bytes).
    /// Only the AP writes it; nobody reads it.
    park_stack: [AtomicU64; 2],
}

const SLOT_BYTES: usize = size_of::<ApSlot>();
/// One slot per AP the MADT can list (every CPU but the boot CPU); each
/// bring-up attempt uses its own, so there are never too few.
pub const SLOTS: usize = MAX_CPUS - 1;
const _: () = assert!(SLOT_BYTES == 48 && SLOT_BYTES.is_multiple_of(16));
// The code is about 400 bytes; the table must leave room for it in the page
// (`install` checks the total).
const _: () = assert!(SLOTS * SLOT_BYTES <= 3584);

// Register roles: real mode: DS = SS = the page's segment, EBP = this CPU's
// APIC id, DI = the offset of its slot in the page, EAX/EDX = CAS operands;
// ESI = the page's physical base and EDI = the slot's offset through 32-bit
// mode into 64-bit mode (where both are zero-extended first).
global_asm!(
    r#"
    .section .rodata.trampoline, "a"
    .global tramp_start
    .global tramp_end
    .global tramp_gdtr_base
    .global tramp_idtr_base
    .global tramp_ivt
    .global tramp_far32
    .global tramp_far64
    .global tramp_cr3
    .global tramp_efer
    .global tramp_entry
    .global tramp_slots
    .global tramp_gdt
    .global tramp_32
    .global tramp_64
    .code16
tramp_start:
    cli                                     # IF stays clear until ap_main is done
    movw %cs, %ax
    movw %ax, %ss                           # ss: the trampoline page (mov ss holds off an NMI
    movw $(tramp_scratch_top - tramp_start), %sp # for one instruction: ss:sp is set atomically)
    movw %ax, %ds                           # ds: the trampoline page
    cld
    lidtl (tramp_idtr - tramp_start)        # IVT: vectors 0-2 -> park (an NMI parks)

    # The APIC id: CPUID leaf 0xB EDX (x2APIC id) if the CPU has that leaf,
    # else leaf 1 EBX[31:24] (initial xAPIC id) -- what the MADT lists.
    xorl %eax, %eax
    cpuid                                   # eax: highest basic leaf
    cmpl $0xb, %eax
    jb 1f
    movl $0xb, %eax
    xorl %ecx, %ecx
    cpuid                                   # ebx: 0 if leaf 0xB is not implemented
    testl %ebx, %ebx
    jz 1f
    movl %edx, %ebp                         # ebp: x2APIC id
    jmp 2f
1:
    movl $1, %eax
    cpuid
    shrl $24, %ebx
    movl %ebx, %ebp                         # ebp: initial APIC id
2:
    # Find the published slot for this APIC id.
    movw $(tramp_slots - tramp_start), %di  # di: slot 0
    movw ${slots}, %cx                      # cx: slots left to look at
3:
    cmpl %ebp, {s_apic}(%di)
    jne 4f
    cmpl ${free}, {s_state}(%di)
    jne 5f                                  # published for us
4:
    addw ${slot_bytes}, %di
    loop 3b
    jmp tramp_park                          # no slot: nobody is starting us

5:
    leaw {s_park_top}(%di), %sp             # sp: this slot's private park stack
    cmpl $0, {s_late}(%di)
    je 7f
6:                                          # smp.late test hook: arrive only
    pause                                   # after the boot CPU has decided
    cmpl ${waiting}, {s_state}(%di)
    je 6b
7:
    movl ${waiting}, %eax                   # eax: expected state
    movl ${arrived}, %edx                   # edx: new state
    lock cmpxchgl %edx, {s_state}(%di)      # claim the slot (full barrier)
    jne tramp_lost                          # the boot CPU abandoned it first

    # Won: from here on this AP owns the slot's stack and boot block.
    movzwl %di, %edi                        # edi: slot offset, kept into 64-bit mode
    xorl %esi, %esi
    movw %cs, %si
    shll $4, %esi                           # esi: physical base of the page
    lgdtl (tramp_gdtr - tramp_start)        # ds-relative: the trampoline GDT
    movl %cr0, %eax
    orl $1, %eax                            # CR0.PE
    movl %eax, %cr0
    ljmpl *(tramp_far32 - tramp_start)      # to tramp_32 with CS = 0x08

tramp_lost:
    movl ${halted}, %edx                    # eax: the state found (ABANDONED)
    lock cmpxchgl %edx, {s_state}(%di)      # ABANDONED -> HALTED, for the report
tramp_park:                                 # also the NMI handler: never irets,
    cli                                     # so NMIs stay blocked after one
    hlt
    jmp tramp_park

    .code32
tramp_32:
    movw $0x10, %ax                         # flat data selector
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl %cr4, %eax
    orl $0x20, %eax                         # CR4.PAE
    movl %eax, %cr4
    movl (tramp_cr3 - tramp_start)(%esi), %eax
    movl %eax, %cr3                         # bring-up page tables (< 4 GiB)
    movl $0xc0000080, %ecx                  # IA32_EFER
    rdmsr
    orl (tramp_efer - tramp_start)(%esi), %eax # LME, and NXE when the CPU has NX
    wrmsr
    movl %cr0, %eax
    orl $0x80010000, %eax                   # CR0.PG | CR0.WP
    movl %eax, %cr0
    ljmpl *(tramp_far64 - tramp_start)(%esi) # to tramp_64 with CS = 0x18

    .code64
tramp_64:
    movl %esi, %esi                         # rsi: page base (upper half cleared)
    movl %edi, %edi                         # rdi: slot offset (upper half cleared)
    addq %rsi, %rdi                         # rdi: this AP's slot (identity-mapped)
    movq {s_stack}(%rdi), %rsp              # rsp: the AP's kernel stack
    movq (tramp_entry - tramp_start)(%rsi), %rax # rax: ap_main (higher half)
    movq {s_block}(%rdi), %rdi              # rdi: its boot block (1st argument)
    xorl %ebp, %ebp                         # rbp: end of the frame chain
    jmpq *%rax

    .balign 8
tramp_gdt:
    .quad 0                                 # null
    .quad 0x00cf9a000000ffff                # 0x08: 32-bit code
    .quad 0x00cf92000000ffff                # 0x10: data
    .quad 0x00af9a000000ffff                # 0x18: 64-bit code
tramp_gdtr:
    .word 31                                # limit
tramp_gdtr_base:
    .long 0                                 # patched: physical address of tramp_gdt
    .balign 8
tramp_idtr:
    .word 11                                # limit: vectors 0-2 (4 bytes each)
tramp_idtr_base:
    .long 0                                 # patched: physical address of tramp_ivt
    .balign 4
tramp_ivt:                                  # offset, segment (patched) per vector
    .word tramp_park - tramp_start, 0       # 0 #DE
    .word tramp_park - tramp_start, 0       # 1 #DB
    .word tramp_park - tramp_start, 0       # 2 NMI
    .balign 8
tramp_far32:
    .long 0                                 # patched: physical address of tramp_32
    .word 0x08
    .balign 8
tramp_far64:
    .long 0                                 # patched: physical address of tramp_64
    .word 0x18
    .balign 8
tramp_cr3:   .long 0, 0                     # patched: bring-up PML4
tramp_efer:  .long 0, 0                     # patched: EFER bits to set
tramp_entry: .quad 0                        # patched: ap_main
    .balign 16
tramp_scratch:
    .skip 16                                # NMI frame before the slot is known
tramp_scratch_top:
    .balign 16
tramp_slots:
    .skip {slots_bytes}                     # the ApSlot table, filled per AP
tramp_end:
    .text
    "#,
    slots = const SLOTS,
    slot_bytes = const SLOT_BYTES,
    slots_bytes = const SLOTS * SLOT_BYTES,
    s_apic = const offset_of!(ApSlot, apic_id),
    s_state = const offset_of!(ApSlot, state),
    s_stack = const offset_of!(ApSlot, stack_top),
    s_block = const offset_of!(ApSlot, boot_block),
    s_late = const offset_of!(ApSlot, late),
    s_park_top = const offset_of!(ApSlot, park_stack) + size_of::<[AtomicU64; 2]>(),
    free = const Arrival::Free as u32,
    waiting = const Arrival::Waiting as u32,
    arrived = const Arrival::Arrived as u32,
    halted = const Arrival::Halted as u32,
    options(att_syntax)
);

extern "C" {
    static tramp_start: u8;
    static tramp_end: u8;
    static tramp_gdtr_base: u8;
    static tramp_idtr_base: u8;
    static tramp_ivt: u8;
    static tramp_far32: u8;
    static tramp_far64: u8;
    static tramp_cr3: u8;
    static tramp_efer: u8;
    static tramp_entry: u8;
    static tramp_slots: u8;
    static tramp_gdt: u8;
    static tramp_32: u8;
    static tramp_64: u8;
}

fn offset(sym: *const u8) -> usize {
    sym as usize - core::ptr::addr_of!(tramp_start) as usize
}

impl ApSlot {
    /// Where the slot's bring-up stands.
    pub fn state(&self) -> Arrival {
        // Acquire: pairs with the AP's `lock cmpxchg` (ARRIVED / HALTED).
        Arrival::from_u32(self.state.load(Ordering::Acquire))
    }

    /// The APIC id the slot was published for.
    pub fn apic_id(&self) -> u32 {
        self.apic_id.load(Ordering::Relaxed)
    }

    /// Gives up on the AP: WAITING -> ABANDONED. `Err` carries the state
    /// found instead (ARRIVED: the AP won and owns the slot).
    pub fn abandon(&self) -> Result<(), Arrival> {
        // AcqRel: a lost race must see everything the winner wrote before
        // its own (fully fenced) cmpxchg.
        self.state
            .compare_exchange(
                Arrival::Waiting as u32,
                Arrival::Abandoned as u32,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .map(|_| ())
            .map_err(Arrival::from_u32)
    }
}

/// A copy of the trampoline in a low page, reached through the direct map.
pub struct Trampoline {
    phys: u64,
    virt: *mut u8,
    /// Slots published so far (a slot is never reused).
    published: usize,
}

impl Trampoline {
    /// Copies and patches the trampoline into the page at `phys` (below 1 MiB,
    /// page-aligned) for the bring-up tables at `cr3` (below 4 GiB); an AP
    /// that wins its slot jumps to `entry` (an `extern "C" fn(&ApBoot) -> !`,
    /// `main.rs`'s `ap_main`, passed down by `smp`).
    ///
    /// # Safety
    /// The page must be owned by the caller for the rest of the kernel's life
    /// (never freed, never rewritten by anyone else: a parked AP executes it
    /// forever) and mapped at `virt` permanently; `entry` must be such a
    /// function.
    pub unsafe fn install(phys: u64, virt: *mut u8, cr3: u64, nx: bool, entry: u64) -> Trampoline {
        let start = core::ptr::addr_of!(tramp_start);
        let len = core::ptr::addr_of!(tramp_end) as usize - start as usize;
        assert!(len <= 4096 && phys < 0x10_0000 && phys.is_multiple_of(4096) && cr3 < 1 << 32);
        let t = Trampoline {
            phys,
            virt,
            published: 0,
        };
        // SAFETY: the page is the caller's and `len` fits in it; the copy
        // includes the slot table, all zero (every slot FREE).
        unsafe { core::ptr::copy_nonoverlapping(start, virt, len) };
        let at = |sym: *const u8| (phys + offset(sym) as u64) as u32;
        t.put32(
            offset(core::ptr::addr_of!(tramp_gdtr_base)),
            at(core::ptr::addr_of!(tramp_gdt)),
        );
        t.put32(
            offset(core::ptr::addr_of!(tramp_idtr_base)),
            at(core::ptr::addr_of!(tramp_ivt)),
        );
        // Each IVT entry's segment (the offsets are assembled in place).
        for v in 0..3 {
            t.put16(
                offset(core::ptr::addr_of!(tramp_ivt)) + 4 * v + 2,
                (phys >> 4) as u16,
            );
        }
        t.put32(
            offset(core::ptr::addr_of!(tramp_far32)),
            at(core::ptr::addr_of!(tramp_32)),
        );
        t.put32(
            offset(core::ptr::addr_of!(tramp_far64)),
            at(core::ptr::addr_of!(tramp_64)),
        );
        t.put32(offset(core::ptr::addr_of!(tramp_cr3)), cr3 as u32);
        let efer = (1u32 << 8) | if nx { 1 << 11 } else { 0 };
        t.put32(offset(core::ptr::addr_of!(tramp_efer)), efer);
        t.put64(offset(core::ptr::addr_of!(tramp_entry)), entry);
        t
    }

    /// Publishes a fresh slot for the AP with `apic_id` (which starts on
    /// `stack_top` with `boot_block` in RDI); `late` is the `smp.late` test
    /// hook. `None` once every slot has been used.
    ///
    /// The caller must make the slot visible before the IPIs that start the
    /// AP (a full fence; x2APIC ICR writes are not serialising).
    pub fn publish(
        &mut self,
        apic_id: u32,
        stack_top: u64,
        boot_block: u64,
        late: bool,
    ) -> Option<&'static ApSlot> {
        if self.published == SLOTS {
            return None;
        }
        let off = offset(core::ptr::addr_of!(tramp_slots)) + self.published * SLOT_BYTES;
        self.published += 1;
        // Sound because the slot lies inside the installed copy (the table is part
        // of it), 16-byte aligned in a page-aligned mapping; the page is
        // mapped and never freed (install's contract), and ApSlot is all
        // atomics, so shared references to it are sound for 'static.
        // SAFETY: as explained just above.
        let slot = unsafe { &*(self.virt.add(off) as *const ApSlot) };
        slot.apic_id.store(apic_id, Ordering::Relaxed);
        slot.stack_top.store(stack_top, Ordering::Relaxed);
        slot.boot_block.store(boot_block, Ordering::Relaxed);
        slot.late.store(u32::from(late), Ordering::Relaxed);
        // Release: an AP that sees WAITING sees the fields above.
        slot.state.store(Arrival::Waiting as u32, Ordering::Release);
        Some(slot)
    }

    /// The page number for the STARTUP IPI.
    pub fn page(&self) -> u8 {
        (self.phys >> 12) as u8
    }

    // The 16- and 32-bit fields are immediates inside the copied code, at
    // any alignment: written as byte arrays (alignment 1), so the volatile
    // write is never an unaligned access of a wider type (undefined
    // behaviour, and a panic of the standard library's check in a build
    // with debug assertions, which then could not start an AP: switchcut,
    // session 22).

    fn put16(&self, off: usize, v: u16) {
        // SAFETY: `off` is a field inside the installed copy (within the
        // page); `[u8; 2]` has alignment 1.
        unsafe { core::ptr::write_volatile(self.virt.add(off) as *mut [u8; 2], v.to_le_bytes()) };
    }

    fn put32(&self, off: usize, v: u32) {
        // SAFETY: as above; `[u8; 4]` has alignment 1.
        unsafe { core::ptr::write_volatile(self.virt.add(off) as *mut [u8; 4], v.to_le_bytes()) };
    }

    fn put64(&self, off: usize, v: u64) {
        // SAFETY: as above; 64-bit fields are 8-byte aligned in the copy.
        unsafe { core::ptr::write_volatile(self.virt.add(off) as *mut u64, v) };
    }
}
