//! The multiboot2 header and the 32-bit entry stub.
//!
//! GRUB enters `_start` in 32-bit protected mode, paging off, with
//! `eax` = multiboot2 magic and `ebx` = physical address of the boot information.
//! The stub:
//! 1. checks the magic (a wrong one prints a message on COM1, reports failure
//!    through `isa-debug-exit` and halts: a non-multiboot2 loader gets a clear
//!    message instead of a hang);
//! 2. checks that the CPU has long mode (same failure path otherwise);
//! 3. builds early page tables mapping physical 0..1 GiB twice with 2 MiB pages —
//!    identity (the stub itself runs there) and at `KERNEL_VMA` (the higher half);
//! 4. enables PAE, long mode (EFER.LME) and NX (EFER.NXE, when present), then paging;
//! 5. far-jumps into 64-bit code, switches to the boot stack in the higher half and
//!    calls [`crate::kernel_entry`] with (magic, boot-info physical address).
//!
//! Rust then builds the real page tables and drops this identity map.

use core::arch::global_asm;

/// Bytes of the boot CPU's first kernel stack (in .bss; replaced by a stack with a
/// guard page once memory management is up).
pub const BOOT_STACK_BYTES: usize = 64 * 1024;

/// A stack's bytes, aligned so its top is a valid 16-byte-aligned RSP (a bare
/// `[u8; N]` may be linked at any address).
#[repr(C, align(16))]
pub struct Stack<const N: usize>(pub [u8; N]);

/// The boot CPU's first stack. Only the entry stub touches it, via its symbol.
#[no_mangle]
#[used]
static mut BOOT_STACK: Stack<BOOT_STACK_BYTES> = Stack([0; BOOT_STACK_BYTES]);

global_asm!(
    r#"
    .section .multiboot_header, "a"
    .balign 8
mb2_header_start:
    .long 0xe85250d6                                  // multiboot2 magic
    .long 0                                           // architecture: i386 protected mode
    .long mb2_header_end - mb2_header_start           // header length
    .long -(0xe85250d6 + (mb2_header_end - mb2_header_start)) // checksum
    .short 0                                          // end tag: type
    .short 0                                          //          flags
    .long 8                                           //          size
mb2_header_end:

    .section .boot.rodata, "a"
boot_msg_magic:
    .asciz "mica: not started by a multiboot2 loader (bad magic in eax); halting\r\n"
boot_msg_nolm:
    .asciz "mica: this CPU has no long mode (x86_64); halting\r\n"

    .section .boot.data, "aw"
    .balign 8
boot_gdt:
    .quad 0                                           // null descriptor
    .quad 0x00af9a000000ffff                          // 0x08: 64-bit code, DPL 0
    .quad 0x00cf92000000ffff                          // 0x10: data, DPL 0
boot_gdt_end:
boot_gdt_ptr:
    .short boot_gdt_end - boot_gdt - 1                // limit
    .long boot_gdt                                    // base (physical)

    .section .boot.bss, "aw", @nobits
    .balign 4096
boot_pml4:    .skip 4096
boot_pdpt_lo: .skip 4096                              // PML4[0]: identity
boot_pdpt_hi: .skip 4096                              // PML4[511]: KERNEL_VMA
boot_pd:      .skip 4096                              // 512 x 2 MiB = 0..1 GiB
boot_stack32: .skip 256                               // tiny stack for the serial fail path
boot_stack32_top:

    .section .boot.text, "ax"
    .code32
    .global _start
_start:
    cli
    mov esp, offset boot_stack32_top                  // esp: a stack for `call`
    mov edi, eax                                      // edi: multiboot2 magic (kept to Rust)
    mov esi, ebx                                      // esi: boot-info physical address
    cmp edi, 0x36d76289                               // the magic a multiboot2 loader leaves
    jne 90f

    // Long mode available? CPUID 0x80000001 EDX bit 29.
    mov eax, 0x80000000
    cpuid
    cmp eax, 0x80000001
    jb 91f
    mov eax, 0x80000001
    cpuid                                             // edx: extended feature bits
    test edx, (1 << 29)
    jz 91f
    mov ebp, edx                                      // ebp: keep bit 20 (NX) for EFER

    // Page tables. PD: 512 entries, entry i maps i * 2 MiB (P|W|PS).
    mov ecx, 0                                        // ecx: entry index
1:  mov eax, ecx
    shl eax, 21                                       // eax: physical address i * 2 MiB
    or eax, 0x83                                      // present | writable | 2 MiB page
    mov [boot_pd + ecx * 8], eax
    mov dword ptr [boot_pd + ecx * 8 + 4], 0
    inc ecx
    cmp ecx, 512
    jne 1b
    mov eax, offset boot_pd
    or eax, 0x3                                       // present | writable
    mov [boot_pdpt_lo], eax                           // 0..1 GiB identity
    mov [boot_pdpt_hi + 510 * 8], eax                 // 0xffffffff80000000 -> 0
    mov eax, offset boot_pdpt_lo
    or eax, 0x3
    mov [boot_pml4], eax                              // PML4[0]
    mov eax, offset boot_pdpt_hi
    or eax, 0x3
    mov [boot_pml4 + 511 * 8], eax                    // PML4[511]

    mov eax, offset boot_pml4
    mov cr3, eax                                      // cr3: early PML4
    mov eax, cr4
    or eax, (1 << 5)                                  // CR4.PAE
    mov cr4, eax
    mov ecx, 0xc0000080                               // ecx: IA32_EFER
    rdmsr
    or eax, (1 << 8)                                  // EFER.LME
    test ebp, (1 << 20)
    jz 2f
    or eax, (1 << 11)                                 // EFER.NXE when the CPU has NX
2:  wrmsr
    mov eax, cr0
    or eax, (1 << 31) | (1 << 16) | 1                 // CR0.PG | CR0.WP | CR0.PE
    mov cr0, eax
    lgdt [boot_gdt_ptr]
    ljmp 0x08, offset boot_long_mode

    // Failure paths: ebx = message, print it on COM1, report failure, halt.
90: mov ebx, offset boot_msg_magic
    jmp 92f
91: mov ebx, offset boot_msg_nolm
92: mov dx, 0x3fd                                     // dx: COM1 line status register
93: in al, dx
    test al, 0x20                                     // transmitter holding register empty?
    jz 93b
    mov al, [ebx]                                     // al: next message byte
    test al, al
    jz 94f
    mov dx, 0x3f8                                     // COM1 data register
    out dx, al
    inc ebx
    mov dx, 0x3fd
    jmp 93b
94: mov dx, 0xf4                                      // isa-debug-exit (test runner)
    mov eax, 0x11                                     // failure code
    out dx, eax
95: hlt
    jmp 95b

    .code64
boot_long_mode:
    mov ax, 0x10                                      // kernel data selector
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    movabs rsp, offset BOOT_STACK + {stack_bytes}     // rsp: boot stack (higher half)
    xor ebp, ebp                                      // rbp: end of the frame-pointer chain
    movabs rax, offset {entry}                        // rax: Rust entry (higher half)
    call rax                                          // rdi = magic, rsi = boot info
96: hlt
    jmp 96b
    "#,
    stack_bytes = const BOOT_STACK_BYTES,
    entry = sym crate::kernel_entry,
);
