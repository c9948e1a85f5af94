//! Copies between kernel and user memory.
//!
//! User pointers are allegations: every copy first checks that the range lies in
//! the user half without wrapping, then copies with `rep movsq` and `rep movsb`
//! (the tail) under `stac`
//! (SMAP would otherwise fault the access); a fault during the copy resumes at a
//! fixup through the exception table, so a bad pointer becomes
//! [`Error::BadAddress`], never a kernel panic.

use abi::layout::{USER_END, USER_MIN};
use abi::Error;
use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, Ordering};

/// Whether CR4.SMAP is on (on every CPU alike). The entry stubs read it as a
/// byte to decide `clac` (which raises #UD on a CPU without SMAP).
#[no_mangle]
pub static SMAP_ON: AtomicBool = AtomicBool::new(false);

/// Records whether SMAP is on (the boot CPU decides for all, before any other
/// CPU starts and before any interrupt is enabled).
pub fn set_smap(on: bool) {
    SMAP_ON.store(on, Ordering::SeqCst);
}

/// Whether SMAP is on.
pub fn smap_on() -> bool {
    SMAP_ON.load(Ordering::Relaxed)
}

extern "C" {
    fn uaccess_copy_asm(dst: u64, src: u64, len: u64) -> u64;
}

global_asm!(
    r#"
    .section .text.uaccess, "ax"
    // uaccess_copy_asm(rdi = dst, rsi = src, rdx = len) -> rax = 0 ok / 1 fault
    // Whole quadwords first, then the tail bytes: a `rep` iteration per 8
    // bytes, not per byte (under icount each iteration is an instruction:
    // ipc_buffer_4k_same_core ~25,100 -> ~11,700; real CPUs without fast
    // short `rep movsb` gain too). Either `rep` may fault on the user
    // side; both resume at the one fixup.
    .global uaccess_copy_asm
uaccess_copy_asm:
    mov rcx, rdx                            // rcx: byte count
    shr rcx, 3                              // rcx: whole quadwords
30: rep movsq                               // rdi/rsi advance 8 a step; may fault: .extable
    mov rcx, rdx                            // rcx: byte count again
    and rcx, 7                              // rcx: the tail bytes (0..=7)
32: rep movsb                               // the tail; may fault: .extable
    xor eax, eax                            // rax: 0 = copied
    ret
31: mov eax, 1                              // fixup: rax = 1 = faulted
    ret
    .pushsection .extable, "a"
    .balign 8
    .quad 30b, 31b
    .quad 32b, 31b
    .popsection
    "#
);

/// Whether `[addr, addr + len)` is an acceptable user range (not necessarily
/// mapped): inside `USER_MIN..USER_END`, no wrap. An empty range is fine anywhere
/// in the user half.
pub fn user_range_ok(addr: u64, len: u64) -> bool {
    match addr.checked_add(len) {
        Some(end) => len == 0 && addr < USER_END || addr >= USER_MIN && end <= USER_END,
        None => false,
    }
}

fn copy(dst: u64, src: u64, len: u64) -> Result<(), Error> {
    if len == 0 {
        return Ok(());
    }
    let smap = smap_on();
    // stac/clac only toggle RFLAGS.AC, and the asm blocks are compiler
    // barriers, so no user access escapes the bracket.
    // SAFETY: the caller checked the user side lies in the user half and the
    // kernel side is a valid buffer of `len` bytes; user-side faults are caught
    // by the exception table.
    let faulted = unsafe {
        if smap {
            asm!("stac", options(nostack));
        }
        let r = uaccess_copy_asm(dst, src, len);
        if smap {
            asm!("clac", options(nostack));
        }
        r
    };
    if faulted == 0 {
        Ok(())
    } else {
        Err(Error::BadAddress)
    }
}

/// Copies `dst.len()` bytes from user address `src`.
pub fn copy_from_user(dst: &mut [u8], src: u64) -> Result<(), Error> {
    if !user_range_ok(src, dst.len() as u64) {
        return Err(Error::BadAddress);
    }
    copy(dst.as_mut_ptr() as u64, src, dst.len() as u64)
}

/// Copies `src` to user address `dst`.
pub fn copy_to_user(dst: u64, src: &[u8]) -> Result<(), Error> {
    if !user_range_ok(dst, src.len() as u64) {
        return Err(Error::BadAddress);
    }
    copy(dst, src.as_ptr() as u64, src.len() as u64)
}
