//! shell3: what only init may do stays init's. `trace_dump` (the kernel
//! trace rings show every process's timing) is refused to any other
//! caller, whatever it passes; procmgr's `adopt` (which makes procmgr a
//! process's parent and fault handler) is refused to every program but
//! init, through its own procmgr endpoint and through the name service.

use crate::util::{expect_err, raw_syscall, TestResult};
use abi::{decode_result, Error, Sysnum};
use libipc::ipc::{self, Endpoint};
use libipc::{names, procmgr as pm, sys, vm};

/// `trace_dump` from the tests program: `PermissionDenied` before anything
/// is read, with any register contents (tracing on or off: the
/// `trace-tests-smp4` case boots this suite with tracing on and still
/// needs the rings for its shutdown dump).
pub fn trace_dump_is_init_only() -> TestResult {
    expect_err(
        sys::trace_dump(),
        &[Error::PermissionDenied],
        "trace_dump from a program other than init",
    )?;
    for args in [[u64::MAX; 3], [0xffff_8000_0000_0000, 1 << 40, 7]] {
        // SAFETY: trace_dump takes no argument and writes no user memory.
        let r = unsafe { raw_syscall(Sysnum::TraceDump as u64, args[0], args[1], args[2]) };
        expect_err(
            decode_result(r),
            &[Error::PermissionDenied],
            "trace_dump with garbage registers",
        )?;
    }
    Ok(())
}

/// Asks procmgr at `ep` to adopt a fresh, empty process of ours; `Ok` if
/// it refused.
fn adopt_refused(ep: Endpoint, what: &'static str) -> TestResult {
    let victim = vm::process_create().map_err(|_| "process_create failed")?;
    let r = pm::adopt(ep, victim, "evil", true);
    let _ = victim.kill();
    let _ = victim.close();
    match r {
        Err(_) => Ok(()),
        Ok((pid, _)) => {
            crate::note!("{what}: procmgr adopted it as pid {pid}");
            Err(what)
        }
    }
}

/// procmgr's `adopt` is init's alone: this program's own procmgr endpoint
/// (badged with its procmgr PID) is refused, and the name service does not
/// hand it procmgr's named endpoint (the one init adopts through), or if
/// it did, that endpoint refuses too.
pub fn procmgr_adopt_is_init_only() -> TestResult {
    let Some(own) = pm::endpoint() else {
        return Err("init did not adopt this program into procmgr");
    };
    adopt_refused(own, "adopt through the program's own procmgr endpoint")?;
    let names_ep = Endpoint(abi::bootinfo::names::HANDLE);
    match names::lookup(names_ep, pm::NAME) {
        Err(names::LookupError::NotFound) => Ok(()),
        Err(e) => {
            crate::note!("lookup of procmgr: {e:?}");
            Err("the name service failed instead of refusing")
        }
        Ok((ep, _)) => {
            let r = adopt_refused(ep, "adopt through procmgr's named endpoint");
            let _ = ipc::handle_close(ep.0);
            r
        }
    }
}
