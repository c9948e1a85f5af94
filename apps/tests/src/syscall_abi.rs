//! The syscall layer's decode step (`microkernel/src/syscall/`): what each
//! request type checks before anything is done, and what it deliberately
//! leaves alone. Each case pins a choice a plausible rewrite of the decode
//! step would get wrong.

use crate::note;
use crate::util::{expect_err, raw_syscall, TestResult};
use abi::layout::USER_END;
use abi::{decode_result, prot, Error, SysInfo, Sysnum};
use core::mem::size_of;
use libipc::sys;

/// A scratch area for these cases (no other case uses it).
const AREA: u64 = 0x4900_0000_0000;

fn raw(n: Sysnum, a0: u64, a1: u64, a2: u64) -> Result<u64, Error> {
    // SAFETY: every call below either names memory this file mapped for it
    // (or the caller's own `SysInfo`), or must be refused.
    decode_result(unsafe { raw_syscall(n as u64, a0, a1, a2) })
}

/// Case: `sysinfo` checks only the bytes it writes: a `len` longer than a
/// `SysInfo`, even one reaching past the user half, is fine (the decode step
/// must not turn the whole `(buf, len)` into the checked range).
pub fn sysinfo_checks_only_the_bytes_it_writes() -> TestResult {
    let mut info = SysInfo::default();
    let size = size_of::<SysInfo>() as u64;
    let r = raw(
        Sysnum::SysInfo,
        &mut info as *mut SysInfo as u64,
        u64::MAX,
        0,
    );
    if r != Ok(size) {
        note!("sysinfo(&info, u64::MAX) = {r:?}, expected Ok({size})");
        return Err("sysinfo with a long len did not write exactly one SysInfo");
    }
    if info.cpus_online == 0 || info.total_bytes == 0 {
        return Err("sysinfo with a long len wrote nothing");
    }
    Ok(())
}

/// Case: `debug_write` checks the whole range it was given, then cuts it to
/// 4 KiB: a text whose first pages are mapped but whose range runs past the
/// user half (or wraps) is refused, not printed in part.
pub fn debug_write_checks_the_whole_range_before_the_cut() -> TestResult {
    sys::map_anon(AREA, 2 * 4096, prot::WRITE).map_err(|_| "map_anon failed")?;
    // SAFETY: the two pages were just mapped writable and only this case uses them.
    unsafe { core::ptr::write_bytes(AREA as *mut u8, b'.', 2 * 4096) };
    let r = (|| {
        expect_err(
            raw(Sysnum::DebugWrite, AREA, USER_END - AREA + 1, 0),
            &[Error::BadAddress],
            "a text running past the user half was printed in part",
        )?;
        expect_err(
            raw(Sysnum::DebugWrite, AREA, u64::MAX - AREA + 1, 0),
            &[Error::BadAddress],
            "a wrapping text was printed in part",
        )?;
        // The same pages with a length that fits: 4 KiB of it is written.
        match raw(Sysnum::DebugWrite, AREA, 2 * 4096, 0) {
            Ok(4096) => Ok(()),
            other => {
                note!("debug_write(8 KiB) = {other:?}");
                Err("an 8 KiB debug_write did not write its first 4 KiB")
            }
        }
    })();
    // SAFETY: nothing references the scratch pages.
    let _ = unsafe { sys::unmap(AREA, 2 * 4096) };
    r
}

extern "C" fn never_started(_: u64) -> ! {
    sys::thread_exit(0)
}

/// Case: `thread_spawn` refuses an entry outside the user half, a stack top
/// outside it (or wrapping) and a misaligned stack top with
/// `InvalidArgument`, before a thread exists.
pub fn thread_spawn_refuses_bad_entries_and_stacks() -> TestResult {
    const STACK: u64 = AREA + 0x10_0000;
    sys::map_anon(STACK, 4 * 4096, prot::WRITE).map_err(|_| "map_anon(stack) failed")?;
    let top = STACK + 4 * 4096;
    let entry: extern "C" fn(u64) -> ! = never_started;
    let entry = entry as usize as u64;
    let bad = [
        (0xffff_ffff_8000_0000, top, "a kernel entry"),
        (USER_END, top, "an entry at the end of the user half"),
        (entry, USER_END + 16, "a stack above the user half"),
        (entry, 0, "a stack top of 0 (its last 16 bytes wrap)"),
        (entry, top - 8, "a misaligned stack top"),
    ];
    let mut r = Ok(());
    for (e, stack, what) in bad {
        match raw(Sysnum::ThreadSpawn, e, stack, 0) {
            Err(Error::InvalidArgument) => {}
            Ok(tid) => {
                note!("{what}: thread {tid} started");
                let _ = sys::thread_join(tid);
                r = Err("thread_spawn accepted a bad entry or stack");
            }
            Err(other) => {
                note!("{what}: {other}");
                r = Err("thread_spawn refused a bad entry or stack with the wrong error");
            }
        }
    }
    // SAFETY: no thread was started on the stack (or it was joined).
    let _ = unsafe { sys::unmap(STACK, 4 * 4096) };
    r
}
