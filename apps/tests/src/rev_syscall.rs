//! Syscall-layer review cases (issue 9 items 5-6): the decode step seen from
//! ring 3. Numbers whose low bits name a real syscall or a valid value but
//! whose high bits do not (a cast anywhere on the way would accept them),
//! user ranges that end exactly at `USER_END` or one byte past it, and a
//! `process_spawn` whose source is unmapped by another thread mid-copy.

use crate::note;
use crate::util::{expect_err, raw_syscall, spawn, TestResult};
use abi::layout::{USER_END, USER_MIN};
use abi::status::Status;
use abi::{decode_result, prot, Error, Sysnum, SYSNUM_END};
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::sys;

/// The last user page (no other case of this program uses it at the same
/// time: cases run one after another).
const LAST_PAGE: u64 = USER_END - 4096;
/// Where the spawn race maps its image source.
const RACE_SRC: u64 = 0x6400_0000_0000;
/// Bytes of that source: the largest image `process_spawn` accepts, so the
/// copy takes 256 chunks with a preemption point between each two.
const RACE_BYTES: u64 = 16 << 20;

/// High bits that a truncating cast to u8, u16 or u32 would drop, or a
/// signed view would read as negative.
const HIGH: [u64; 6] = [
    1 << 8,
    1 << 16,
    1 << 32,
    1 << 63,
    0xffff_ffff_0000_0000,
    0xffff_ffff_ffff_ff00,
];

/// Syscalls that take no argument and change nothing.
const HARMLESS: [Sysnum; 5] = [
    Sysnum::Null,
    Sysnum::ThreadId,
    Sysnum::CpuCount,
    Sysnum::ClockNs,
    Sysnum::CpuId,
];

fn raw(n: u64, a0: u64, a1: u64, a2: u64) -> Result<u64, Error> {
    // SAFETY: every call made through this names memory this case owns (or
    // none, or memory the kernel must refuse to touch).
    decode_result(unsafe { raw_syscall(n, a0, a1, a2) })
}

/// Every number that is not exactly a declared code is `BadSyscall`: END,
/// END + 1, all ones, "negative" values, and declared codes with high bits
/// set (a dispatcher that truncated the number to u8/u32 before its table
/// would run the harmless syscall instead).
pub fn syscall_numbers_with_high_bits_are_refused() -> TestResult {
    let mut numbers = [0u64; 6 + HARMLESS.len() * HIGH.len()];
    numbers[..6].copy_from_slice(&[
        SYSNUM_END,
        SYSNUM_END + 1,
        u64::MAX,
        (Sysnum::Null as u64).wrapping_neg(),
        1u64.wrapping_neg(),
        i64::MIN as u64,
    ]);
    let mut i = 6;
    for s in HARMLESS {
        for h in HIGH {
            numbers[i] = h | s as u64;
            i += 1;
        }
    }
    for n in numbers {
        if raw(n, 0, 0, 0) != Err(Error::BadSyscall) {
            note!("syscall number {n:#x} was not refused");
            return Err("a number that is not a declared code was accepted");
        }
    }
    // And every declared code below END is one.
    for n in 0..SYSNUM_END {
        if Sysnum::from_code(n).is_none() {
            return Err("a code below END is not declared");
        }
    }
    Ok(())
}

/// Arguments whose low bits are valid but whose high bits are not: a
/// priority, an MCP, a CPU number, a thread handle.
pub fn argument_numbers_with_high_bits_are_refused() -> TestResult {
    for h in HIGH {
        // Low bits 7: the lowest priority, which any thread may take.
        expect_err(
            sys::set_priority(h | 7),
            &[Error::InvalidArgument],
            "set_priority accepted a truncating value",
        )?;
        expect_err(
            sys::set_child_max_priority(h | 7),
            &[Error::InvalidArgument],
            "set_child_max_priority accepted a truncating value",
        )?;
        if h != 0xffff_ffff_ffff_ff00 {
            // (u64::MAX unpins; every other value must name an online CPU.)
            expect_err(
                sys::set_affinity(h),
                &[Error::NotFound],
                "set_affinity accepted CPU 0 with high bits",
            )?;
        }
        expect_err(
            sys::cpu_syscalls(h),
            &[Error::NotFound],
            "cpu_syscalls accepted CPU 0 with high bits",
        )?;
    }
    expect_err(
        sys::set_affinity(u64::MAX - 1),
        &[Error::NotFound],
        "set_affinity(u64::MAX - 1) accepted",
    )?;
    let _ = sys::set_affinity(u64::MAX);
    // A finished thread's handle with high bits names no thread (joining
    // through the real handle afterwards still works, so nothing was
    // consumed).
    let t = spawn(report_tid, 0)?;
    while TID.load(Ordering::SeqCst) == 0 {
        sys::yield_now();
    }
    TID.store(0, Ordering::SeqCst);
    let handle = t.handle().raw() as u64;
    for h in [1u64 << 32, 1 << 63] {
        expect_err(
            raw(Sysnum::ThreadJoin as u64, h | handle, 0, 0),
            &[Error::BadHandle],
            "thread_join accepted a handle with high bits",
        )?;
    }
    match t.join()? {
        Status::Exited(0) => Ok(()),
        other => {
            note!("the thread ended with {other:?}");
            Err("the joined thread did not exit with 0")
        }
    }
}

/// Exit codes are the low 32 bits: high bits in `thread_exit`'s argument
/// never turn a normal exit into a status that reads as a fault.
pub fn exit_code_high_bits_do_not_forge_a_fault() -> TestResult {
    for (arg, want) in [
        ((1u64 << 32) | 13, 13),
        ((1u64 << 32) | 14, 14),
        (0xffff_ffff_0000_0006, 6),
        (u64::MAX, -1),
    ] {
        let st = spawn(exit_with_arg, arg)?.join()?;
        if st != Status::Exited(want) {
            note!("thread_exit({arg:#x}) joined as {st:?}");
            return Err("an exit code's high bits changed the status");
        }
    }
    Ok(())
}

/// The id [`report_tid`] reported.
static TID: AtomicU64 = AtomicU64::new(0);

extern "C" fn report_tid(_: u64) -> ! {
    TID.store(sys::thread_id(), Ordering::SeqCst);
    sys::thread_exit(0)
}

extern "C" fn exit_with_arg(code: u64) -> ! {
    // SAFETY: thread_exit touches no memory and does not return.
    unsafe { raw_syscall(Sysnum::ThreadExit as u64, code, 0, 0) };
    unreachable!("thread_exit returned")
}

/// User ranges at the edges of the user half: one ending exactly at
/// `USER_END` is accepted, one byte further is refused, as are ranges below
/// `USER_MIN`, in the kernel half, wrapping, and empty ranges outside the
/// user half; a range that runs into an unmapped page fails as a whole.
pub fn user_ranges_at_the_edges() -> TestResult {
    sys::map_anon(LAST_PAGE, 4096, prot::WRITE).map_err(|_| "map_anon(last page) failed")?;
    let r = edges();
    // SAFETY: only this case uses the last user page.
    let _ = unsafe { sys::unmap(LAST_PAGE, 4096) };
    r?;
    sys::map_anon(EDGE_PAGE, 4096, prot::WRITE).map_err(|_| "map_anon(edge page) failed")?;
    let r = copy_faults();
    // SAFETY: only this case uses the edge page.
    let _ = unsafe { sys::unmap(EDGE_PAGE, 4096) };
    r
}

/// A mapped page with an unmapped one after it (the user copy's faults).
const EDGE_PAGE: u64 = 0x4e00_0000_0000;

/// A copy that faults part-way, in its whole quadwords or in its tail
/// bytes (the user copy moves 8 bytes a step, then the rest one by one:
/// session 22), is `BadAddress` for the whole range; one wholly inside
/// the page, ending at its end, copies.
fn copy_faults() -> TestResult {
    let dw = Sysnum::DebugWrite as u64;
    let end = EDGE_PAGE + 4096;
    // (start, length, what): each ends past the mapped page.
    for (addr, len, what) in [
        (end - 8, 11, "in its tail bytes"),
        (end - 1, 2, "at its second byte"),
        (end - 16, 24, "at its third quadword"),
        (end - 4088, 4096, "at its last quadword, after 511"),
    ] {
        if raw(dw, addr, len, 0) != Err(Error::BadAddress) {
            note!("debug_write({addr:#x}, {len}) past the mapped page: faults {what}");
            return Err("a copy that faulted part-way was not BadAddress");
        }
    }
    // Wholly inside: quadwords and a tail, ending at the page's end.
    let text = b"rev_syscall: a user copy that ends at a page end\n";
    let at = end - text.len() as u64;
    // SAFETY: the edge page is mapped writable and used by nobody else.
    unsafe { core::ptr::copy_nonoverlapping(text.as_ptr(), at as *mut u8, text.len()) };
    if raw(dw, at, text.len() as u64, 0) != Ok(text.len() as u64) {
        return Err("a copy ending at a mapped page's end failed");
    }
    Ok(())
}

fn edges() -> TestResult {
    let text = b"rev_syscall: ends at USER_END\n";
    let at = USER_END - text.len() as u64;
    // SAFETY: the last page is mapped writable and used by nobody else.
    unsafe { core::ptr::copy_nonoverlapping(text.as_ptr(), at as *mut u8, text.len()) };
    let dw = Sysnum::DebugWrite as u64;
    let n = text.len() as u64;
    if raw(dw, at, n, 0) != Ok(n) {
        return Err("debug_write of a range ending at USER_END failed");
    }
    let bad = [Error::BadAddress];
    // Empty ranges: anywhere in the user half, its end included (the empty
    // range [USER_END, USER_END) lies in it; nothing is copied), but not
    // past it.
    for (addr, want) in [
        (0, Ok(0)),
        (USER_END, Ok(0)),
        (USER_END + 1, Err(Error::BadAddress)),
    ] {
        if raw(dw, addr, 0, 0) != want {
            note!("debug_write({addr:#x}, 0) gave {:?}", raw(dw, addr, 0, 0));
            return Err("an empty debug_write was decided wrongly");
        }
    }
    let cases: [(u64, u64, &str); 8] = [
        (at + 1, n, "ending one byte past USER_END"),
        (0xffff_8000_0000_0000, 0, "empty in the kernel half"),
        (0xffff_ffff_8000_0000, 16, "in the kernel half"),
        (USER_MIN - 1, 1, "just below USER_MIN"),
        (u64::MAX, 2, "wrapping"),
        (LAST_PAGE, u64::MAX, "a length of u64::MAX"),
        (LAST_PAGE - 8, 16, "starting in an unmapped page"),
        (0x0000_8000_0000_1000, 8, "non-canonical"),
    ];
    for (addr, len, what) in cases {
        if raw(dw, addr, len, 0) != Err(Error::BadAddress) {
            note!("debug_write({addr:#x}, {len:#x}): {what}");
            return Err("debug_write accepted a bad range");
        }
    }
    // sysinfo: the 64 bytes it writes may end exactly at USER_END.
    let si = Sysnum::SysInfo as u64;
    let size = core::mem::size_of::<abi::SysInfo>() as u64;
    if raw(si, USER_END - size, size, 0) != Ok(size) {
        return Err("sysinfo into the last 64 user bytes failed");
    }
    if raw(si, USER_END - size, u64::MAX, 0) != Ok(size) {
        return Err("sysinfo with a long len at the end of the user half failed");
    }
    expect_err(
        raw(si, USER_END - size + 1, size, 0),
        &bad,
        "sysinfo ending one byte past USER_END accepted",
    )?;
    // process_spawn: the same range rules, and the size limit first.
    let ps = Sysnum::ProcessSpawn as u64;
    expect_err(
        raw(ps, LAST_PAGE, 4097, 0),
        &bad,
        "process_spawn ending past USER_END accepted",
    )?;
    expect_err(
        raw(ps, 0xffff_ffff_8000_0000, 4096, 0),
        &bad,
        "process_spawn from the kernel half accepted",
    )?;
    expect_err(
        raw(ps, LAST_PAGE, (16 << 20) + 1, 0),
        &[Error::InvalidArgument],
        "process_spawn over the size limit accepted",
    )?;
    expect_err(
        raw(ps, LAST_PAGE - 4096, 8192, 0),
        &bad,
        "process_spawn from a half-mapped range accepted",
    )?;
    // FS/GS bases: the last user address is fine, USER_END is not (run in a
    // thread of its own, whose bases nobody else reads).
    match spawn(bases, 0)?.join()? {
        Status::Exited(0) => Ok(()),
        Status::Exited(c) => {
            note!("base check {c} failed");
            Err("set_fs_base/set_gs_base took a bad value or refused a good one")
        }
        other => {
            note!("the base thread ended with {other:?}");
            Err("the base thread faulted")
        }
    }
}

extern "C" fn bases(_: u64) -> ! {
    let mut code = 0;
    for (i, (v, ok)) in [
        (USER_END - 1, true),
        (0, true),
        (USER_END, false),
        (1 << 63, false),
        (u64::MAX, false),
        (0xffff_8000_0000_0000, false),
    ]
    .into_iter()
    .enumerate()
    {
        let fs = sys::set_fs_base(v);
        let gs = sys::set_gs_base(v);
        let want = if ok { Ok(0) } else { Err(Error::BadAddress) };
        if fs != want || gs != want {
            code = i as i32 + 1;
            break;
        }
    }
    let _ = sys::set_fs_base(0);
    let _ = sys::set_gs_base(0);
    sys::thread_exit(code)
}

/// `process_spawn` copies its 16 MiB source in chunks with preemption
/// points; another thread unmaps the source meanwhile. Every outcome must be
/// an error code (BadAddress if the unmap won, the image parser's refusal of
/// zero bytes otherwise): never a kernel fault, never a child.
pub fn process_spawn_source_unmapped_mid_copy() -> TestResult {
    let mut bad_address = 0;
    for round in 0..4u64 {
        sys::map_anon(RACE_SRC, RACE_BYTES, prot::WRITE).map_err(|_| "map_anon(source) failed")?;
        // The unmapper waits `round` ms, so some rounds catch the copy early
        // and some late.
        let t = spawn(unmapper, round)?;
        let r = raw(Sysnum::ProcessSpawn as u64, RACE_SRC, RACE_BYTES, 0);
        let st = t.join()?;
        if st != Status::Exited(0) {
            note!("unmapper ended with {st:?}");
            return Err("the unmapper did not exit with 0");
        }
        match r {
            Err(Error::BadAddress) => bad_address += 1,
            Err(_) => {}
            Ok(pid) => {
                note!("round {round}: a zero image started pid {pid}");
                return Err("process_spawn started a child from a zero image");
            }
        }
        // Nothing stays mapped (the unmapper removed it all).
        if sys::map_anon(RACE_SRC, 4096, 0).is_err() {
            return Err("the source was still mapped after the unmap");
        }
        // SAFETY: this case's own page.
        let _ = unsafe { sys::unmap(RACE_SRC, 4096) };
    }
    note!("{bad_address} of 4 rounds saw the unmap mid-copy");
    Ok(())
}

extern "C" fn unmapper(ms: u64) -> ! {
    let end = sys::clock_ns() + ms * 1_000_000;
    while sys::clock_ns() < end {
        sys::yield_now();
    }
    // SAFETY: the race source is this case's; the spawner only reads it
    // through the kernel, which handles it going away.
    let r = unsafe { sys::unmap(RACE_SRC, RACE_BYTES) };
    sys::thread_exit(if r.is_ok() { 0 } else { 1 })
}

/// Receive buffers (R14, capacity R15) at the edges of the user half, as
/// the fast decode sees them (a register-only `ipc_call` with no timeout,
/// on handle 0: an accepted buffer is then `BadHandle`) and as the full
/// one does (`ipc_recv` polling an empty endpoint: accepted is
/// `WouldBlock`). The kernel tests these ranges with one compare of its
/// own (cut28l), not `user_range_ok`: ending exactly at `USER_END` and
/// starting at `USER_MIN` are accepted; one byte further either way,
/// wrapping, and the kernel half are `BadAddress`; capacity 0 names no
/// buffer, wherever R14 points.
pub fn receive_buffers_at_the_edges() -> TestResult {
    let ep = libipc::ipc::endpoint_create().map_err(|_| "endpoint_create failed")?;
    let cases: [(u64, u32, bool); 12] = [
        (USER_END - 4096, 4096, true),
        (USER_END - 65536, 65536, true),
        (USER_MIN, 65536, true),
        (USER_MIN, 1, true),
        (0xffff_ffff_ffff_f000, 0, true),
        (USER_END - 4095, 4096, false),
        (USER_END, 1, false),
        (USER_MIN - 1, 1, false),
        (0, 65536, false),
        (u64::MAX, 2, false),
        (u64::MAX - 0xfff, 65536, false),
        (0xffff_8000_0000_0000, 16, false),
    ];
    for (addr, cap, good) in cases {
        let mut call = libipc::ipc::IpcRegs {
            rdi: 0,
            rsi: libipc::ipc::info(1, 0, 0, 0, false),
            r14: addr,
            r15: libipc::ipc::spec(cap, 0),
            ..Default::default()
        };
        let mut poll = libipc::ipc::IpcRegs {
            rdi: ep.0 as u64,
            rsi: libipc::ipc::info(0, 0, 0, 0, true),
            r14: addr,
            r15: libipc::ipc::spec(cap, 0),
            ..Default::default()
        };
        // SAFETY: no call here is answered, so the kernel writes no buffer.
        let (c, p) = unsafe {
            (
                decode_result(libipc::ipc::ipc_syscall(Sysnum::IpcCall, &mut call)),
                decode_result(libipc::ipc::ipc_syscall(Sysnum::IpcRecv, &mut poll)),
            )
        };
        let want = if good {
            (Err(Error::BadHandle), Err(Error::WouldBlock))
        } else {
            (Err(Error::BadAddress), Err(Error::BadAddress))
        };
        if (c, p) != want {
            note!("receive buffer {addr:#x}+{cap}: call {c:?}, recv {p:?}, want {want:?}");
            let _ = libipc::ipc::handle_close(ep.0);
            return Err("a receive buffer at the edges was decided wrongly");
        }
    }
    libipc::ipc::handle_close(ep.0).map_err(|_| "close failed")?;
    Ok(())
}
