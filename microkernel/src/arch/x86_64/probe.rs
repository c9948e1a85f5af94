//! Memory probes that survive faults: each faulting instruction is listed in the
//! exception table, so a fault resumes at a fixup that reports failure instead of
//! stopping the kernel. The panic backtrace and the in-kernel W^X tests use them.

use core::arch::global_asm;
use core::sync::atomic::Ordering;

extern "C" {
    fn probe_read_u64_asm(addr: u64, out: *mut u64) -> u64;
    fn probe_write_u8_asm(addr: u64, value: u8) -> u64;
    fn probe_exec_asm(addr: u64) -> u64;
}

global_asm!(
    r#"
    .section .text.probe, "ax"
    // probe_read_u64_asm(rdi = addr, rsi = out) -> rax = 0 ok / 1 fault
    .global probe_read_u64_asm
probe_read_u64_asm:
10: mov rax, [rdi]                          // may fault: listed in .extable
    mov [rsi], rax                          // *out = value
    xor eax, eax                            // rax: 0 = success
    ret
11: mov eax, 1                              // fixup: rax = 1 = faulted
    ret

    // probe_write_u8_asm(rdi = addr, sil = value) -> rax = 0 ok / 1 fault
    .global probe_write_u8_asm
probe_write_u8_asm:
20: mov [rdi], sil                          // may fault: listed in .extable
    xor eax, eax
    ret
21: mov eax, 1
    ret

    // probe_exec_asm(rdi = addr) -> rax = 0 if the code at addr ran and returned,
    // 1 if fetching it faulted (the #PF handler returns here with rax = 1).
    .global probe_exec_asm
probe_exec_asm:
    xor eax, eax                            // rax: 0 unless the fault path sets 1
    call rdi                                // the target page holds a `ret`
    ret

    .pushsection .extable, "a"
    .balign 8
    .quad 10b, 11b
    .quad 20b, 21b
    .popsection
    "#
);

/// Reads a u64 at a kernel address, or `None` if that faults.
pub fn read_u64(addr: u64) -> Option<u64> {
    let mut v = 0u64;
    // SAFETY: a fault in the probe resumes at its fixup; a successful read only
    // copies 8 bytes into `v`.
    (unsafe { probe_read_u64_asm(addr, &mut v) } == 0).then_some(v)
}

/// Writes a byte at a kernel address; false if that faults.
///
/// # Safety
/// If the write succeeds it changes memory: `addr` must be a byte the caller may
/// overwrite (tests point it at read-only memory and expect a fault).
pub unsafe fn write_u8(addr: u64, value: u8) -> bool {
    // SAFETY: faults resume at the fixup; the caller vouches for the write.
    unsafe { probe_write_u8_asm(addr, value) == 0 }
}

/// Calls the code at `addr`; false if fetching it faulted.
///
/// # Safety
/// If `addr` is executable, the code there runs: it must be a bare `ret`.
pub unsafe fn exec(addr: u64) -> bool {
    super::trap::EXEC_PROBE_TARGET.store(addr, Ordering::SeqCst);
    // SAFETY: the caller guarantees the target is a `ret` or not executable; the
    // #PF handler recognises a fetch fault at EXEC_PROBE_TARGET and returns here.
    let r = unsafe { probe_exec_asm(addr) };
    super::trap::EXEC_PROBE_TARGET.store(0, Ordering::SeqCst);
    r == 0
}
