//! The real-mode trampoline that application processors start in.
//!
//! STARTUP IPIs start an AP in 16-bit real mode at `CS:IP = page:0` of a page
//! below 1 MiB. The bytes between `tramp_start` and `tramp_end` are copied to
//! such a page (a writable frame, so the GDT and the parameter block the code
//! reads are in writable memory) and the absolute-address fields are patched.
//! The code moves 16 -> 32 -> 64-bit:
//! 1. real mode: ESI := the page's physical base (CS << 4); load the
//!    trampoline GDT; set CR0.PE; far-jump to 32-bit code;
//! 2. protected mode: PAE, CR3 := the bring-up page tables (kernel half plus an
//!    identity map of this page), EFER.LME (+NXE), CR0.PG|WP; far-jump to 64-bit;
//! 3. long mode: RSP := the AP's stack, RDI := its boot block, jump to the
//!    kernel's `ap_entry` in the higher half.

use core::arch::global_asm;

global_asm!(
    r#"
    .section .rodata.trampoline, "a"
    .global tramp_start
    .global tramp_end
    .global tramp_gdtr_base
    .global tramp_far32
    .global tramp_far64
    .global tramp_cr3
    .global tramp_efer
    .global tramp_stack
    .global tramp_entry
    .global tramp_arg
    .global tramp_gdt
    .global tramp_32
    .global tramp_64
    .code16
tramp_start:
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds                           # ds: the trampoline page
    xorl %esi, %esi
    movw %ax, %si
    shll $4, %esi                           # esi: physical base of the page
    lgdtl (tramp_gdtr - tramp_start)        # ds-relative: the trampoline GDT
    movl %cr0, %eax
    orl $1, %eax                            # CR0.PE
    movl %eax, %cr0
    ljmpl *(tramp_far32 - tramp_start)      # to tramp_32 with CS = 0x08

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
    movq (tramp_stack - tramp_start)(%rsi), %rsp # rsp: the AP's kernel stack
    movq (tramp_arg - tramp_start)(%rsi), %rdi   # rdi: its boot block
    movq (tramp_entry - tramp_start)(%rsi), %rax # rax: ap_entry (higher half)
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
tramp_stack: .quad 0                        # patched per AP
tramp_entry: .quad 0                        # patched: ap_entry
tramp_arg:   .quad 0                        # patched per AP
tramp_end:
    .text
    "#,
    options(att_syntax)
);

extern "C" {
    static tramp_start: u8;
    static tramp_end: u8;
    static tramp_gdtr_base: u8;
    static tramp_far32: u8;
    static tramp_far64: u8;
    static tramp_cr3: u8;
    static tramp_efer: u8;
    static tramp_stack: u8;
    static tramp_entry: u8;
    static tramp_arg: u8;
    static tramp_gdt: u8;
    static tramp_32: u8;
    static tramp_64: u8;
}

fn offset(sym: *const u8) -> usize {
    sym as usize - core::ptr::addr_of!(tramp_start) as usize
}

/// A copy of the trampoline in a low page, reached through the direct map.
pub struct Trampoline {
    phys: u64,
    virt: *mut u8,
}

impl Trampoline {
    /// Copies and patches the trampoline into the page at `phys` (below 1 MiB,
    /// page-aligned) for the bring-up tables at `cr3` (below 4 GiB).
    ///
    /// # Safety
    /// The page must be owned by the caller and mapped at `virt`.
    pub unsafe fn install(phys: u64, virt: *mut u8, cr3: u64, nx: bool) -> Trampoline {
        let start = core::ptr::addr_of!(tramp_start);
        let len = core::ptr::addr_of!(tramp_end) as usize - start as usize;
        assert!(len <= 4096 && phys < 0x10_0000 && phys.is_multiple_of(4096) && cr3 < 1 << 32);
        let t = Trampoline { phys, virt };
        // SAFETY: the page is the caller's and `len` fits in it.
        unsafe { core::ptr::copy_nonoverlapping(start, virt, len) };
        let at = |sym: *const u8| (phys + offset(sym) as u64) as u32;
        t.put32(
            offset(core::ptr::addr_of!(tramp_gdtr_base)),
            at(core::ptr::addr_of!(tramp_gdt)),
        );
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
        t.put64(
            offset(core::ptr::addr_of!(tramp_entry)),
            crate::smp::ap_entry as *const () as u64,
        );
        t
    }

    /// Sets the stack and boot-block argument for the next AP.
    pub fn set_ap(&self, stack_top: u64, arg: u64) {
        self.put64(offset(core::ptr::addr_of!(tramp_stack)), stack_top);
        self.put64(offset(core::ptr::addr_of!(tramp_arg)), arg);
    }

    /// The page number for the STARTUP IPI.
    pub fn page(&self) -> u8 {
        (self.phys >> 12) as u8
    }

    fn put32(&self, off: usize, v: u32) {
        // SAFETY: `off` is a field inside the installed copy (within the page).
        unsafe { core::ptr::write_volatile(self.virt.add(off) as *mut u32, v) };
    }

    fn put64(&self, off: usize, v: u64) {
        // SAFETY: as above; 64-bit fields are 8-byte aligned in the copy.
        unsafe { core::ptr::write_volatile(self.virt.add(off) as *mut u64, v) };
    }
}
