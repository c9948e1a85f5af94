//! The kernel trace seen from ring 3 (issue 12 part 4): `trace_mark`
//! validates its name whether tracing is on or off, and a bad one is an
//! error, never a crash or a record.

use crate::util::{expect_err, raw_syscall, TestResult};
use abi::layout::USER_END;
use abi::trace::MAX_MARK_NAME;
use abi::{decode_result, Error, Sysnum};
use libipc::sys;

/// `trace_mark` with raw arguments (pointers the kernel must refuse).
fn mark_raw(ptr: u64, len: u64, value: u64) -> Result<u64, Error> {
    // SAFETY: trace_mark only reads `len` bytes at `ptr`, and only after
    // checking the range; it writes no user memory.
    decode_result(unsafe { raw_syscall(Sysnum::TraceMark as u64, ptr, len, value) })
}

/// Bad names are refused with the right error; a good one is taken
/// (recorded or not, as the command line chose).
pub fn trace_mark_validates_its_name() -> TestResult {
    let good = b"tests:mark";
    match sys::trace_mark(good, 7) {
        Ok(0 | 1) => {}
        other => {
            crate::note!("a good mark: {other:?}");
            return Err("a good mark was not taken");
        }
    }
    let longest = [b'x'; MAX_MARK_NAME];
    if !matches!(sys::trace_mark(&longest, 0), Ok(0 | 1)) {
        return Err("a name of exactly MAX_MARK_NAME bytes was refused");
    }
    let long = [b'x'; MAX_MARK_NAME + 1];
    expect_err(
        sys::trace_mark(&long, 0),
        &[Error::InvalidArgument],
        "a name one byte too long",
    )?;
    expect_err(
        sys::trace_mark(b"", 0),
        &[Error::InvalidArgument],
        "an empty name",
    )?;
    expect_err(
        sys::trace_mark(b"new\nline", 0),
        &[Error::InvalidArgument],
        "a control byte",
    )?;
    expect_err(
        sys::trace_mark(b"caf\xc3\xa9", 0),
        &[Error::InvalidArgument],
        "a byte outside ASCII",
    )?;
    // The length is judged before the range: a huge one is never a copy.
    expect_err(
        mark_raw(good.as_ptr() as u64, u64::MAX, 0),
        &[Error::InvalidArgument],
        "a huge length",
    )?;
    expect_err(
        mark_raw(0xffff_8000_0000_0000, 8, 0),
        &[Error::BadAddress],
        "a kernel address",
    )?;
    expect_err(
        mark_raw(USER_END - 4, 8, 0),
        &[Error::BadAddress],
        "a range past the user half",
    )?;
    expect_err(
        mark_raw(0x10, 8, 0),
        &[Error::BadAddress],
        "an unmapped page",
    )?;
    Ok(())
}
