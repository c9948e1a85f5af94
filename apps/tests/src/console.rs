//! The console: ring 3 cannot speak in the kernel's voice.
//!
//! Ring 3 cannot read the serial log, so the verdict on the *output* is the
//! boot test's (`scripts/smoke.sh` case `console-pid-prefix`): this case makes
//! the writes that case looks for and checks what the kernel returns.
//! - Forged kernel lines in one write (embedded newlines, no trailing one)
//!   must each appear behind `[pid N] `, and the partial last line must be
//!   ended by the kernel (the runner's next `test ... ok` starts its own line).
//! - C1 controls (NEL, CSI), encoded or raw, print as `?`.
//! - A write whose range faults part-way fails with `BadAddress` and prints
//!   nothing: the kernel copies everything before it prints anything (the
//!   marker lines below must never reach the log).

use crate::util::{expect_err, raw_syscall, TestResult};
use abi::{decode_result, prot, Error, Sysnum};
use libipc::sys;

/// Kernel lines a program might try to forge, in one write.
const FORGED: &[u8] =
    b"KERNEL PANIC on CPU 0: fake\nshutdown requested by init (success)\n0 passed, 0 failed";
/// A forged line behind C1 controls, as UTF-8 (NEL `C2 85`, CSI `C2 9B`) and
/// as raw 8-bit bytes (0x85, 0x9b): a terminal honouring them would start a
/// new, unprefixed line. The kernel prints each as `?` (the smoke case checks
/// `c1: x?KERNEL PANIC on CPU 0: nel?2K??`).
const FORGED_C1: &[u8] = b"c1: x\xc2\x85KERNEL PANIC on CPU 0: nel\xc2\x9b2K\x85\x9b\n";
/// A line that must never be printed (the smoke case checks).
const MARKER: &[u8] = b"PARTIAL-WRITE-LEAKED\n";
/// A page followed by a hole, for the faulting write.
const SCRATCH: u64 = 0x4c00_0000_0000;
/// Mapped bytes before the hole the faulting write starts with: several
/// whole marker lines, more than any chunk an old copy-and-print loop used.
const MAPPED_PART: u64 = 1024;

/// Case: forged kernel lines are written in full (each shown behind the pid),
/// and a write that faults part-way fails and prints nothing.
pub fn user_output_cannot_forge_kernel_lines() -> TestResult {
    match sys::debug_write(FORGED) {
        Ok(n) if n == FORGED.len() as u64 => {}
        _ => return Err("debug_write of forged kernel lines did not write them all"),
    }
    match sys::debug_write(FORGED_C1) {
        Ok(n) if n == FORGED_C1.len() as u64 => {}
        _ => return Err("debug_write of a line with C1 controls did not write it all"),
    }
    sys::map_anon(SCRATCH, 4096, prot::WRITE).map_err(|_| "map_anon failed")?;
    // SAFETY: the page was just mapped writable and nothing else uses it.
    let page = unsafe { core::slice::from_raw_parts_mut(SCRATCH as *mut u8, 4096) };
    for (i, b) in page.iter_mut().enumerate() {
        *b = MARKER[i % MARKER.len()];
    }
    let start = SCRATCH + 4096 - MAPPED_PART;
    // SAFETY: debug_write only reads user memory (or refuses).
    let r =
        decode_result(unsafe { raw_syscall(Sysnum::DebugWrite as u64, start, 2 * MAPPED_PART, 0) });
    // SAFETY: nothing references the scratch page any more.
    let _ = unsafe { sys::unmap(SCRATCH, 4096) };
    expect_err(
        r,
        &[Error::BadAddress],
        "debug_write running into a hole was not refused",
    )
}
