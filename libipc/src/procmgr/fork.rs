//! `fork`: a copy-on-write clone of this process, registered with procmgr,
//! whose one thread resumes where the forking thread called [`fork`].
//!
//! 1. [`fork_save`] (asm) stores the forking thread's callee-saved
//!    registers, stack pointer and FPU control words in a [`ForkFrame`] on
//!    its own stack, then tail-calls [`fork_parent`].
//! 2. [`fork_parent`] clones this process's space (`space_clone`: the
//!    frame and the whole stack are now in the child too, copy-on-write),
//!    registers the clone with procmgr (a copy of its handle travels in the
//!    request; procmgr makes itself the child's fault handler and gives it
//!    its procmgr endpoint), starts a thread in the child at
//!    [`fork_child_entry`] with the frame's address, closes its own handle
//!    to the child and returns the child's PID (or an error) as
//!    `fork_save`'s result.
//! 3. In the child, [`fork_child_entry`] (asm) restores the registers and
//!    the stack pointer from its copy of the frame and returns 0 from
//!    `fork_save`, into [`fork`], which points libipc at the child's own
//!    procmgr endpoint.
//!
//! What the child inherits: the whole address space (copy-on-write), only
//! the forking thread, its callee-saved registers and FPU control words
//! (MXCSR, x87 control word; the data registers start clean, which the
//! SysV ABI allows across a call), and no handle but what procmgr gives
//! (its procmgr endpoint at [`super::CHILD_HANDLE`]). Not inherited: FS/GS
//! bases, priority and affinity (a fresh thread's).

use super::Reply;
use crate::vm::{space_clone, Space};
use abi::Error;
use core::arch::naked_asm;
use core::mem::offset_of;
use wire::CopiedHandle;

/// What `fork` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fork {
    /// In the parent: the child's PID.
    Parent(u32),
    /// In the child.
    Child,
}

/// The forking thread's state the child resumes with (read by asm).
#[repr(C)]
#[derive(Default)]
struct ForkFrame {
    rbx: u64,
    rbp: u64,
    r12: u64,
    r13: u64,
    r14: u64,
    r15: u64,
    /// RSP inside `fork_save`: the address of its return address.
    rsp: u64,
    mxcsr: u32,
    fcw: u16,
    _pad: u16,
}

const _: () = {
    assert!(offset_of!(ForkFrame, rbx) == 0);
    assert!(offset_of!(ForkFrame, rbp) == 8);
    assert!(offset_of!(ForkFrame, r12) == 16);
    assert!(offset_of!(ForkFrame, r13) == 24);
    assert!(offset_of!(ForkFrame, r14) == 32);
    assert!(offset_of!(ForkFrame, r15) == 40);
    assert!(offset_of!(ForkFrame, rsp) == 48);
    assert!(offset_of!(ForkFrame, mxcsr) == 56);
    assert!(offset_of!(ForkFrame, fcw) == 60);
};

/// Result of `fork_save` in the child.
const CHILD: u64 = 0;

/// Saves the state into `frame` and tail-calls `parent(frame)`, whose
/// result it returns; in the child it returns [`CHILD`].
///
/// Contract on entry (SysV): RDI = `frame`, RSI = `parent`, RSP = the
/// address of the return address. On exit in the parent: whatever
/// `parent` returned in RAX, callee-saved registers as `parent` (a
/// SysV function) preserved them.
///
/// # Safety
/// `frame` must be valid for writes; `parent` must be a SysV function.
#[unsafe(naked)]
unsafe extern "C" fn fork_save(
    _frame: *mut ForkFrame,
    _parent: extern "C" fn(*mut ForkFrame) -> u64,
) -> u64 {
    naked_asm!(
        "mov [rdi + {rbx}], rbx",   // callee-saved RBX
        "mov [rdi + {rbp}], rbp",   // callee-saved RBP (frame pointer)
        "mov [rdi + {r12}], r12",   // callee-saved R12..R15
        "mov [rdi + {r13}], r13",
        "mov [rdi + {r14}], r14",
        "mov [rdi + {r15}], r15",
        "mov [rdi + {rsp}], rsp",   // RSP: points at our return address
        "stmxcsr [rdi + {mxcsr}]",  // MXCSR's control bits are callee-saved
        "fnstcw [rdi + {fcw}]",     // so is the x87 control word
        "jmp rsi",                  // parent(frame): RDI is still the frame;
                                    // its RET returns to our caller
        rbx = const offset_of!(ForkFrame, rbx),
        rbp = const offset_of!(ForkFrame, rbp),
        r12 = const offset_of!(ForkFrame, r12),
        r13 = const offset_of!(ForkFrame, r13),
        r14 = const offset_of!(ForkFrame, r14),
        r15 = const offset_of!(ForkFrame, r15),
        rsp = const offset_of!(ForkFrame, rsp),
        mxcsr = const offset_of!(ForkFrame, mxcsr),
        fcw = const offset_of!(ForkFrame, fcw),
    )
}

/// The child's first instruction: RDI = the frame (its copy-on-write copy
/// at the parent's address). Restores the saved state and returns
/// [`CHILD`] from `fork_save`. The stack the thread was started on is never
/// used.
#[unsafe(naked)]
extern "C" fn fork_child_entry(_frame: u64) -> ! {
    naked_asm!(
        "mov rbx, [rdi + {rbx}]",   // callee-saved RBX
        "mov rbp, [rdi + {rbp}]",   // callee-saved RBP
        "mov r12, [rdi + {r12}]",   // callee-saved R12..R15
        "mov r13, [rdi + {r13}]",
        "mov r14, [rdi + {r14}]",
        "mov r15, [rdi + {r15}]",
        "ldmxcsr [rdi + {mxcsr}]",  // the forking thread's MXCSR
        "fldcw [rdi + {fcw}]",      // and x87 control word
        "mov rsp, [rdi + {rsp}]",   // the stack copy, at fork_save's return address
        "xor eax, eax",             // RAX = CHILD (0): fork_save's result
        "ret",                      // back into `fork`
        rbx = const offset_of!(ForkFrame, rbx),
        rbp = const offset_of!(ForkFrame, rbp),
        r12 = const offset_of!(ForkFrame, r12),
        r13 = const offset_of!(ForkFrame, r13),
        r14 = const offset_of!(ForkFrame, r14),
        r15 = const offset_of!(ForkFrame, r15),
        rsp = const offset_of!(ForkFrame, rsp),
        mxcsr = const offset_of!(ForkFrame, mxcsr),
        fcw = const offset_of!(ForkFrame, fcw),
    )
}

/// Forks this process (see the module docs): `Parent(pid)` here,
/// `Child` in the new process.
pub fn fork() -> Result<Fork, Error> {
    if super::endpoint().is_none() {
        return Err(Error::BadHandle);
    }
    let mut frame = ForkFrame::default();
    // SAFETY: `frame` lives on this stack until fork_save returns (in both
    // processes: the child's copy of this stack holds it); fork_parent is
    // a SysV function.
    let r = unsafe { fork_save(&mut frame, fork_parent) };
    if r == CHILD {
        // Our first handle is the procmgr endpoint procmgr gave us, and
        // the only one: the parent's kept wait notification is not ours.
        super::set_endpoint(crate::ipc::Endpoint(super::CHILD_HANDLE));
        super::forget_wait_ntf();
        // Nor does it hold the parent's name service.
        super::rejoin::forget();
        // procmgr registered us as a child it reaps (`Fork` answered
        // before this thread started): exit needs no notice.
        super::reaped_by_procmgr();
        return Ok(Fork::Child);
    }
    abi::decode_result(r).map(|pid| Fork::Parent(pid as u32))
}

/// Bytes below the saved stack pointer the child's (unused) start stack
/// sits at.
const START_STACK_GAP: u64 = 256;

/// The parent's half (called by `fork_save` with the frame filled): the
/// child's PID, or an error as `abi::encode_result` puts it (a PID is never
/// 0 = [`CHILD`], nor in the error range).
extern "C" fn fork_parent(frame: *mut ForkFrame) -> u64 {
    abi::encode_result(parent(frame).map(u64::from))
}

fn parent(frame: *mut ForkFrame) -> Result<u32, Error> {
    let mut buf = [0u8; 128];
    // Through the rejoining client, as every other call (breaku2): after a
    // procmgr restart a `Fork` never taken goes to the successor (the
    // child's handle is a copy, so the resend has it too).
    let mut c = super::client(&mut buf)?;
    let child = space_clone(Space::Own)?;
    let pid = match c.fork(CopiedHandle(child.raw())) {
        Ok(Reply::Pid { pid }) => pid as u32,
        other => {
            let _ = child.kill();
            let _ = child.close();
            return Err(match other {
                Ok(Reply::Failed { error }) => super::failed(error),
                Err(e) => super::err(e),
                Ok(_) => Error::InvalidArgument,
            });
        }
    };
    // SAFETY: reading our own frame, which fork_save just filled.
    let rsp = unsafe { (*frame).rsp };
    let stack = (rsp - START_STACK_GAP) & !15;
    // SAFETY: the thread runs in the child, not in this process: from
    // fork_child_entry on the child's copy of the frame and stack.
    let started = unsafe {
        child
            .space()
            .start_thread(fork_child_entry as *const () as u64, stack, frame as u64)
    };
    let r = match started {
        Ok(t) => {
            let _ = t.close();
            Ok(pid)
        }
        Err(e) => {
            // procmgr sees it end (killed) and makes it our zombie: reap it.
            let _ = child.kill();
            let _ = super::wait(Some(pid), Some(1_000_000));
            Err(e)
        }
    };
    // procmgr keeps its own handle (and is the only one to wait).
    let _ = child.close();
    r
}
