//! `sysinfo`: the one syscall that writes a struct into user memory, so it is
//! where `copy_to_user`'s checks are tested: the figures must be sane, and every
//! bad destination (kernel address, unmapped, read-only, wrapping, straddling
//! into an unmapped page, too short) must be refused without writing.

use crate::util::{expect_err, raw_syscall, TestResult};
use abi::{decode_result, prot, Error, SysInfo, Sysnum};
use core::mem::size_of;
use libipc::sys;

/// A scratch area for the bad-destination cases.
const AREA: u64 = 0x4800_0000_0000;

fn sysinfo_raw(buf: u64, len: u64) -> Result<u64, Error> {
    // SAFETY: the kernel writes at most `len` bytes at `buf`, which the cases
    // below point at memory nothing else uses (or at memory it must refuse).
    decode_result(unsafe { raw_syscall(Sysnum::SysInfo as u64, buf, len, 0) })
}

/// Case: the figures agree with other syscalls and with each other.
pub fn sysinfo_reports_sane_figures() -> TestResult {
    let a = sys::sysinfo().map_err(|_| "sysinfo failed")?;
    let b = sys::sysinfo().map_err(|_| "sysinfo failed")?;
    let ok = a.cpus_online == sys::cpu_count()
        && a.cpus_found >= a.cpus_online
        && a.free_bytes > 0
        && a.free_bytes <= a.total_bytes
        && a.free_bytes % 4096 == 0
        && a.threads >= 1
        && a.processes >= 2
        && b.uptime_ns >= a.uptime_ns
        && a.uptime_ns > 0;
    if !ok {
        libipc::println!("  note: {a:?}");
        return Err("sysinfo figures are inconsistent");
    }
    Ok(())
}

/// Case: bad destinations are refused and nothing is written.
pub fn sysinfo_refuses_bad_buffers() -> TestResult {
    let size = size_of::<SysInfo>() as u64;
    let bad = [Error::BadAddress];
    expect_err(
        sysinfo_raw(0xffff_ffff_8010_0000, size),
        &bad,
        "kernel destination accepted",
    )?;
    expect_err(
        sysinfo_raw(AREA, size),
        &bad,
        "unmapped destination accepted",
    )?;
    expect_err(
        sysinfo_raw(u64::MAX - 8, size),
        &bad,
        "wrapping destination accepted",
    )?;
    expect_err(sysinfo_raw(0, size), &bad, "null destination accepted")?;
    let mut info = SysInfo::default();
    expect_err(
        sysinfo_raw(&mut info as *mut SysInfo as u64, size - 1),
        &[Error::InvalidArgument],
        "a too-short buffer was accepted",
    )?;
    // A read-only page, and a buffer that runs from a writable page into an
    // unmapped one.
    sys::map_anon(AREA, 4096, 0).map_err(|_| "map_anon (read-only) failed")?;
    sys::map_anon(AREA + 0x10_000, 4096, prot::WRITE).map_err(|_| "map_anon failed")?;
    let r = (|| {
        expect_err(
            sysinfo_raw(AREA, size),
            &bad,
            "read-only destination accepted",
        )?;
        // SAFETY: the page is mapped (read-only): reading it is fine.
        let first = unsafe { (AREA as *const u64).read_volatile() };
        if first != 0 {
            return Err("the kernel wrote into a read-only page");
        }
        let straddle = AREA + 0x10_000 + 4096 - 16;
        expect_err(
            sysinfo_raw(straddle, size),
            &bad,
            "straddling destination accepted",
        )?;
        Ok(())
    })();
    // SAFETY: nothing references the scratch pages.
    unsafe {
        let _ = sys::unmap(AREA, 4096);
        let _ = sys::unmap(AREA + 0x10_000, 4096);
    }
    r
}
