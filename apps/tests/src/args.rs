//! Syscall argument validation: bad pointers, bad numbers, bad thread ids.
//! Every refusal must come back as an error code, never a kernel crash.

use crate::faults::KERNEL_ADDR;
use crate::note;
use crate::util::{self, expect_err, raw_syscall, TestResult};
use abi::status::Status;
use abi::{decode_result, prot, Error, Sysnum};
use libipc::sys;

/// `debug_write(ptr, len)` with raw values.
fn debug_write_raw(ptr: u64, len: u64) -> Result<u64, Error> {
    // SAFETY: debug_write only reads user memory (or refuses).
    decode_result(unsafe { raw_syscall(Sysnum::DebugWrite as u64, ptr, len, 0) })
}

/// A scratch page for the partly-mapped range check.
const SCRATCH_PAGE: u64 = 0x4100_0000_0000;

/// Case 9: `debug_write` refuses kernel, unmapped, wrapping, non-canonical,
/// partly-mapped and absurdly long ranges.
pub fn kernel_pointer_in_syscall_is_refused() -> TestResult {
    use Error::{BadAddress, InvalidArgument};
    expect_err(
        debug_write_raw(KERNEL_ADDR, 16),
        &[BadAddress],
        "debug_write of a kernel pointer was not refused",
    )?;
    expect_err(
        debug_write_raw(0x1000_0000, 16),
        &[BadAddress],
        "debug_write of unmapped memory was not refused",
    )?;
    expect_err(
        debug_write_raw(u64::MAX - 4, 16),
        &[BadAddress],
        "debug_write of a wrapping range was not refused",
    )?;
    expect_err(
        debug_write_raw(0x7fff_ffff_fff8, 16),
        &[BadAddress],
        "debug_write of a range crossing USER_END was not refused",
    )?;
    expect_err(
        debug_write_raw(0x1000_0000, 1 << 40),
        &[BadAddress, InvalidArgument],
        "debug_write of 1 TiB of unmapped memory was not refused",
    )?;
    // The first 8 bytes are mapped, the rest is not. (A huge length from
    // mapped memory may legitimately be a partial write -- the ABI returns
    // the count written -- so that variant starts next to a hole, where any
    // write longer than 8 bytes must be refused.)
    sys::map_anon(SCRATCH_PAGE, 4096, prot::WRITE).map_err(|_| "map_anon failed")?;
    let partial = debug_write_raw(SCRATCH_PAGE + 4096 - 8, 16);
    let huge = debug_write_raw(SCRATCH_PAGE + 4096 - 8, 1 << 40);
    // SAFETY: nothing references the scratch page.
    let _ = unsafe { sys::unmap(SCRATCH_PAGE, 4096) };
    expect_err(
        partial,
        &[BadAddress],
        "debug_write of a partly mapped range was not refused",
    )?;
    expect_err(
        huge,
        &[BadAddress, InvalidArgument],
        "debug_write of 1 TiB starting 8 bytes before a hole was not refused",
    )?;
    // A syscall pointer argument must also be refused for the other kernel
    // half end (just above the non-canonical hole).
    expect_err(
        debug_write_raw(0xffff_8000_0000_0000, 16),
        &[BadAddress],
        "debug_write of the lowest kernel address was not refused",
    )
}

/// Case 10: unknown syscall numbers fail with BadSyscall, including a valid
/// number with high bits set (the kernel must not truncate RAX).
pub fn bad_syscall_number_is_refused() -> TestResult {
    // SYSNUM_END: the first number the ABI does not assign.
    for n in [
        9999,
        abi::SYSNUM_END,
        u64::MAX,
        (1 << 32) | Sysnum::Null as u64,
    ] {
        // SAFETY: no syscall runs for an unknown number (and if one did with
        // zero arguments, it would write no memory).
        let r = decode_result(unsafe { raw_syscall(n, 0, 0, 0) });
        if r != Err(Error::BadSyscall) {
            note!("syscall {n:#x} returned {r:?}");
            return Err("an unknown syscall number was not refused with BadSyscall");
        }
    }
    Ok(())
}

extern "C" fn exit_42(_arg: u64) -> ! {
    sys::thread_exit(42)
}

extern "C" fn exit_minus_1(_arg: u64) -> ! {
    sys::thread_exit(-1)
}

/// Case 18: `thread_join` hands back the exit code; a number that is no
/// handle is BadHandle.
pub fn thread_join_reports_exit_code() -> TestResult {
    if util::run(exit_42, 0)? != Status::Exited(42) {
        return Err("join did not report Exited(42)");
    }
    if util::run(exit_minus_1, 0)? != Status::Exited(-1) {
        return Err("join did not report Exited(-1)");
    }
    expect_err(
        sys::thread_join(sys::ThreadHandle::from_raw(0xdead_beef)),
        &[Error::BadHandle],
        "joining through a number that is no handle was not BadHandle",
    )
}

/// Case 19: `thread_spawn` with a kernel entry point or stack either refuses
/// or starts a thread that faults at once; never a kernel crash.
pub fn thread_spawn_rejects_kernel_addresses() -> TestResult {
    // SAFETY: the thread (if any) starts at a kernel address and faults.
    match unsafe { util::spawn_at(KERNEL_ADDR, 0) } {
        Err(Error::BadAddress | Error::InvalidArgument) => {}
        Err(e) => {
            note!("thread_spawn(kernel entry): {e}");
            return Err("thread_spawn with a kernel entry failed oddly");
        }
        Ok(t) => util::expect_fault(t.join()?, &[14])?,
    }
    // A kernel stack: the thread would fault on its first push.
    // SAFETY: thread_spawn writes no memory of ours; the thread (if any)
    // runs `exit_42`, which touches its stack only.
    let r = decode_result(unsafe {
        raw_syscall(
            Sysnum::ThreadSpawn as u64,
            exit_42 as util::Entry as usize as u64,
            KERNEL_ADDR,
            0,
        )
    });
    match r {
        Err(Error::BadAddress | Error::InvalidArgument) => Ok(()),
        Err(e) => {
            note!("thread_spawn(kernel stack): {e}");
            Err("thread_spawn with a kernel stack failed oddly")
        }
        Ok(h) => {
            match sys::thread_join(sys::ThreadHandle::from_raw(h as u32)).map(abi::status::decode) {
                Ok(Status::Faulted(14)) => Ok(()),
                other => {
                    note!("thread on a kernel stack ended with {other:?}");
                    Err("a thread on a kernel stack did not fault")
                }
            }
        }
    }
}

/// Case 20: `process_spawn` refuses a kernel pointer and a garbage image;
/// `process_wait` through a number that is no handle is BadHandle.
pub fn process_spawn_rejects_bad_images() -> TestResult {
    // SAFETY: process_spawn only reads the image (or refuses).
    let r =
        decode_result(unsafe { raw_syscall(Sysnum::ProcessSpawn as u64, KERNEL_ADDR, 4096, 0) });
    expect_err(
        r,
        &[Error::BadAddress, Error::PermissionDenied],
        "process_spawn of a kernel pointer was not refused",
    )?;
    let garbage = [0x5au8; 256];
    if let Ok(pid) = sys::process_spawn(&garbage, 0) {
        note!("process_spawn(garbage) started pid {pid}");
        return Err("process_spawn accepted a garbage image");
    }
    expect_err(
        sys::process_wait(sys::ProcessHandle::from_raw(0xdead_beef)),
        &[Error::BadHandle],
        "waiting through a number that is no handle was not BadHandle",
    )
}
