//! The syscall layer: decode, then invoke.
//!
//! The entry stub calls the number's entry in [`SYSCALL_TABLE`] with the
//! caller's saved registers. One `match` on the number ([`abi`] register
//! convention, folded per entry) picks the family function; it *decodes* the argument registers into a typed
//! request — user memory becomes a [`UserSlice`](crate::mem::user::UserSlice)
//! or [`UserSliceMut`](crate::mem::user::UserSliceMut) with its range
//! checked, numbers are range-checked, authority (the caller's process, its
//! priority ceiling) is looked up — and then *invokes* the kernel method
//! that does the work. Every argument is untrusted; every refusal is an
//! [`Error`] in RAX, never a kernel panic.
//!
//! Two kinds of failure:
//! - [`Error`]: the request cannot be done (bad argument, no memory, no such
//!   thread); the caller gets the code back and carries on.
//! - [`Fault`]: the caller broke the protocol so that it cannot be answered
//!   at all; the thread is stopped with a logged reason ([`Fault::stop`]).
//!
//! One file per family: [`thread`], [`process`], [`memory`], [`system`].
//!
//! Adding a syscall: one arm in [`choose`],
//! `Ok(Sysnum::Foo) => |f| family::foo(family::Foo::decode(f)?),` with the
//! request type and the function in the family's file, and its number in
//! [`SYSCALL_TABLE`]'s list. Only a syscall that
//! is a single load may be answered in its arm (`scripts/bench.sh --check`
//! watches what that path costs).

mod hw;
mod ipc;
mod loader;
mod memory;
mod process;
mod shell3;
mod system;
mod thread;
mod trace;
mod vm;

use crate::arch::syscall::{check_return, ReturnCheck};
use crate::arch::trap::TrapFrame;
use crate::lifecycle::end_faulted;
use crate::object::kobject::Object;
use crate::sched::current;
use crate::smp::online;
use abi::{encode_result, Error, Sysnum};
use core::cell::UnsafeCell;
use kcore::handles::{Handle, Rights};

pub use process::ProcessRef;
pub use system::print_user;

const WAIT: Rights = Rights::WAIT;
const KILL: Rights = Rights::KILL;

/// The entry stub's table: it calls entry `n` for syscall `n <
/// Sysnum::END` with the caller's saved registers (RDI: the frame), and
/// its last entry, [`syscall_unknown`], for any other number (the stub
/// clamps the index with a `cmova`, not a branch, so no mispredicted bounds
/// check can make the CPU speculatively call through a word past the table:
/// Spectre v1, Linux's `array_index_nospec`); the entry leaves the result
/// in the frame's RAX. The stub sanitises RFLAGS and picks `sysretq` or
/// `iretq` itself.
///
/// Entry `n` is [`route_const`] for the constant `n` in a function of its
/// own ([`numbered`]), so [`choose`]'s `match` folds to the one arm, or for
/// `ipc_call` and `ipc_reply_recv` the IPC entry itself ([`ipc_entry`]).
/// Every syscall goes through this table; none is answered before it. The
/// stub's bounds check and indirect call replace what a dispatcher
/// function did with one `match` (entry2: its call, the load of the
/// number, the bounds check, the jump table, and for IPC the tail jump
/// into its entry; for a handler's syscall, the tail jump into a shared
/// `run_handler` as well): `null_syscall` 76 -> 73, `ipc_call_same_core`
/// 745 -> 739, `syscall_handler_trivial` 104 -> 94.
///
/// A thread whose process is being killed is not checked here: the killer
/// kicks the CPUs running its threads, and the interrupt return path ends them.
///
/// The table lies in the image's read-only data (its own section, inside
/// `.rodata`, which the kernel maps without write access whatever the ELF
/// segment's flags: `mem::kernel_sections`). It is written once, at boot,
/// through the direct map, before any other CPU or any syscall runs
/// ([`trace_entries`]: the traced IPC entries when tracing asks for it),
/// and never again.
#[link_section = ".rodata.syscall_table"]
pub static SYSCALL_TABLE: Table = Table(UnsafeCell::new(entries!(
    0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29
    30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59
)));

/// [`SYSCALL_TABLE`]'s type: its entries, written only by [`trace_entries`].
#[repr(transparent)]
pub struct Table(UnsafeCell<[Entry; Sysnum::END as usize + 1]>);

// SAFETY: written only by `trace_entries`, on the boot CPU before any other
// CPU and any syscall runs; only read (by the stub) after that.
unsafe impl Sync for Table {}

/// Puts the traced IPC entries ([`ipc_entry_traced`]) into
/// [`SYSCALL_TABLE`] for `ipc_call` and `ipc_reply_recv` if tracing asks
/// for a category with a point on their fast path (the syscall, the IPC
/// event, the hand-off's switch): their handlers record them, and the
/// frameless fast path ([`ipc_entry`]) then has no trace test at all
/// (lookup3: its mask test was 3 instructions a syscall; the round trip
/// measured 643 -> 641). The mask is only ever a part of what was asked
/// for (`trace::init_cpu` sets it, the dump clears it), so a syscall on
/// the untraced entries has no point to record; one on the traced entries
/// after the dump records nothing, as any handler then.
///
/// # Safety
/// Once, on the boot CPU, after `trace::configure`, before any other CPU
/// starts and any syscall (break25l: a safe `pub fn` could race the stub).
pub unsafe fn trace_entries() {
    if !crate::trace::wanted(
        abi::trace::cat::SYSCALL | abi::trace::cat::IPC | abi::trace::cat::SCHED,
    ) {
        return;
    }
    let table = SYSCALL_TABLE.0.get();
    // The image is linked at `KERNEL_VMA + phys` (linker.ld's `AT`); the
    // direct map is writable, the image's read-only data is not.
    let phys = table as u64 - crate::mem::layout::KERNEL_VMA;
    let image = crate::mem::kernel_phys_range();
    assert!(image.start <= phys && phys + core::mem::size_of::<Table>() as u64 <= image.end);
    let table = crate::mem::phys_to_virt(phys) as *mut [Entry; Sysnum::END as usize + 1];
    // SAFETY: the table's own memory (the image's frames, in the direct
    // map), written on the boot CPU before anything reads it (the
    // caller's contract: no other CPU runs yet and no syscall was made).
    unsafe {
        (*table)[Sysnum::IpcCall as usize] = ipc_entry_traced::<true>;
        (*table)[Sysnum::IpcReplyRecv as usize] = ipc_entry_traced::<false>;
    }
}

/// One [`SYSCALL_TABLE`] entry.
///
/// # Safety
/// Called by the stub only: the argument is the current thread's syscall
/// frame at the top of its kernel stack, whose number is the entry's, and
/// nothing above this call owns anything (the IPC entry may leave this
/// stack behind: [`ipc_entry`]).
type Entry = unsafe extern "C" fn(*mut TrapFrame);

/// [`SYSCALL_TABLE`]'s entries, one [`entry`] per number listed, then
/// [`syscall_unknown`] (index `Sysnum::END`); a number missing from the
/// list is a build error (the array's length is `Sysnum::END + 1`, and the
/// codes are dense).
macro_rules! entries {
    ($($n:literal)+) => {
        [$(const { entry::<$n>() }),+, syscall_unknown]
    };
}
use entries;

/// [`SYSCALL_TABLE`]'s entry for number `N`.
const fn entry<const N: u64>() -> Entry {
    if N == Sysnum::IpcCall as u64 {
        ipc_entry::<true>
    } else if N == Sysnum::IpcReplyRecv as u64 {
        ipc_entry::<false>
    } else {
        numbered::<N>
    }
}

/// Syscall `N` ([`SYSCALL_TABLE`]).
///
/// # Safety
/// As [`Entry`]'s.
unsafe extern "C" fn numbered<const N: u64>(frame: *mut TrapFrame) {
    // SAFETY: the caller's contract.
    unsafe { route_const::<N, _>(frame, non_canonical_return) };
}

/// [`SYSCALL_TABLE`]'s last entry, which the stub calls for every number
/// `>= Sysnum::END`: the
/// frame's RAX := `BadSyscall` (as `choose` answers for any unknown
/// number, here `Sysnum::END`).
///
/// # Safety
/// As [`Entry`]'s, for a number `>= Sysnum::END`.
pub unsafe extern "C" fn syscall_unknown(frame: *mut TrapFrame) {
    // SAFETY: the caller's contract.
    unsafe { route_const::<{ Sysnum::END }, _>(frame, non_canonical_return) };
}

/// [`numbered`]'s and [`syscall_unknown`]'s body, with what a
/// non-canonical return does as `fault` (`non_canonical_return` there, a
/// zero-sized function item: the same code as a direct call), so that
/// `ktest sysret_refuses_non_canonical_rip` runs the entries' own paths
/// (the table-answered ones and the handlers') with a `fault` that only
/// records (breakk, session 19: the ktest ran a copy of the match
/// without `end`, so dropping a path's check went unseen; TCG's SYSRET
/// faults AMD-style, so no ring-3 case sees it either).
///
/// A one-line syscall is answered in its arm (no call, no stack frame:
/// the compiler "shrink-wraps" the prologue into the fault's block);
/// every other arm's handler is called here directly (a constant: the
/// call is direct, and a small handler is inlined into its entry).
///
/// # Safety
/// `frame` is the current thread's syscall frame (or, for the ktest, a
/// frame of its own), `N` is its number (or any unknown number for an
/// unknown one) and not a fast IPC one, no other reference to it is live,
/// and the caller's frames own nothing.
#[inline(always)]
pub unsafe fn route_const<const N: u64, F: FnOnce(&mut TrapFrame)>(
    frame: *mut TrapFrame,
    fault: F,
) {
    // SAFETY: the caller's contract.
    let f = unsafe { &mut *frame };
    match choose(N, f) {
        Chosen::Answered(check) => end(f, check, fault),
        Chosen::Handler(handler) => {
            let check = invoke(f, handler);
            end(f, check, fault);
        }
        // (Not reached: the table's entries for these are the IPC entry,
        // and the ktest's numbers are none of them.)
        // SAFETY: the caller's contract.
        Chosen::Ipc(ipc::FastOp::Call) => unsafe { ipc_entry::<true>(frame) },
        // SAFETY: the caller's contract.
        Chosen::Ipc(ipc::FastOp::ReplyRecv) => unsafe { ipc_entry::<false>(frame) },
    }
}

/// Runs `ipc_call` (`CALL`) or `ipc_reply_recv` ([`SYSCALL_TABLE`]'s
/// entries for them) from the raw frame pointer (`ipc::fast_entry`: their
/// fast path may leave this stack behind, and then the syscall ends in
/// [`frameless_resume`]). One copy per syscall (entrycut: the operation as
/// an argument cost the dispatcher's arm two instructions and this entry a
/// test and a branch, 8 a round trip). When tracing asks for a point on
/// the fast path, the table has [`ipc_entry_traced`] instead
/// ([`trace_entries`]), so this entry tests no trace mask.
///
/// # Safety
/// As [`Entry`]'s.
#[inline(never)]
unsafe extern "C" fn ipc_entry<const CALL: bool>(frame: *mut TrapFrame) {
    let op = if CALL {
        ipc::FastOp::Call
    } else {
        ipc::FastOp::ReplyRecv
    };
    // SAFETY: the caller's contract.
    let r = unsafe { ipc::fast_entry(op, frame) };
    // SAFETY: the caller's contract; the syscall's work is over.
    let frame = unsafe { &mut *frame };
    let check = finish(frame, r);
    end(frame, check, non_canonical_return);
}

/// [`ipc_entry`] when tracing is on ([`trace_entries`]): the syscall runs
/// through its handler, whose fast path (not frameless) records the
/// syscall, the IPC event and the hand-off's switch; the frameless fast
/// path tests no trace point of its own (ipccut).
///
/// # Safety
/// As [`Entry`]'s.
unsafe extern "C" fn ipc_entry_traced<const CALL: bool>(frame: *mut TrapFrame) {
    let handler: Handler = if CALL {
        |f| ipc::invoke(Sysnum::IpcCall, f)
    } else {
        |f| ipc::invoke(Sysnum::IpcReplyRecv, f)
    };
    // SAFETY: the caller's contract.
    run_handler(unsafe { &mut *frame }, handler, non_canonical_return);
}

/// Where a syscall whose IPC wait blocked frameless ends (`arch::frameless`'s
/// resume entry calls it on the thread's own stack, right after the switch
/// to it; it leaves through the stub's exit itself): the wait's outcome into the frame
/// (`ipc::fastpath::framed_end`, or `wait_end` for any other end), then
/// the dispatcher's own end of a syscall: RAX and the return-RIP check.
///
/// # Safety
/// The current thread blocked frameless in [`ipc_entry`], and RSP is below
/// its syscall frame (the entry put it there).
#[no_mangle]
pub unsafe extern "C" fn frameless_resume() -> ! {
    // The switch's last step, inlined here (a call of its own from the
    // resume entry cost ~9 instructions a switch): RSP left the previous
    // thread's stack before this runs (the entry's contract).
    crate::sched::finish_switch();
    // SAFETY: the caller's contract.
    unsafe { resume_end() }
}

/// The cold end of the frameless hand-off between two frameless threads
/// (`arch::frameless::handoff_to_frameless`, which did the switch's last
/// step and, in its common case, the whole resume itself, cut28s): called
/// from the frame when its return-RIP test failed, having changed nothing
/// (the claim word as the partner left it); [`resume_end`] ends the wait
/// (`framed_end`, true here) and makes the RIP test again, whose cold path
/// raises the #GP.
///
/// # Safety
/// As [`frameless_resume`], the previous thread released.
#[no_mangle]
pub unsafe extern "C" fn frameless_handoff_cold() -> ! {
    // SAFETY: the caller's contract.
    unsafe { resume_end() }
}

/// The frameless resume after the switch's last step: the wait's outcome
/// into the frame, RAX, the return-RIP check, and the stub's exit. The
/// common case (the partner wrote the message into the frame:
/// `ipc::fastpath::framed_end`) is a straight line that calls nothing;
/// everything else leaves through a cold function of its own that ends in
/// the same exit. Not a `ret` into the entry and its `jmp` to the same
/// exit: no epilogue (switchcut).
///
/// # Safety
/// As [`frameless_resume`].
#[inline(always)]
unsafe fn resume_end() -> ! {
    let cur = current();
    // The frame the entry put RSP at (the syscall stub's, at the top of
    // this thread's kernel stack, which the switch made the CPU's
    // `kernel_rsp`), found from the thread only now: nothing is kept
    // across the switch's last step, whose rare calls (the last
    // reference's drop, a migration's enqueue) then need no callee-saved
    // register, so the resume's prologue is the frame pointer's and the
    // drop's slot alone. The top is kept for the exit (the frame's writes
    // below would make the compiler load it again: +2 a round trip).
    let top = cur.kstack_top();
    debug_assert_eq!(top, crate::arch::percpu::this().kernel_rsp());
    let frame = cur.syscall_frame();
    if !crate::ipc::fastpath::framed_end(cur) {
        // SAFETY: the caller's contract.
        unsafe { resume_slow() }
    }
    // SAFETY: the caller's contract (the current thread's syscall frame);
    // the wait is over.
    let f = unsafe { &mut *frame };
    // The message is in the frame already: the result is `Ok(0)`, which
    // the exit takes in a register (cut26s: no store into the frame and
    // load back); a fault's path reads it from the frame.
    let ok = encode_result(Ok(0));
    if check_return(f) == ReturnCheck::Fault {
        f.rax = ok;
        // SAFETY: the caller's contract.
        unsafe { resume_fault() }
    }
    // SAFETY: the current thread's stack; nothing here is owned (the
    // previous thread's reference was dropped); the result is `ok`.
    unsafe { crate::arch::frameless::exit_to_user_result(cur as *const _ as u64, top, ok) }
}

/// [`resume_end`] for any other end of the wait (the message in the
/// result slot, an error, a wake-up without a result: a kill): the general
/// [`ipc::fastpath::wait_end`](crate::ipc::fastpath::wait_end), RAX, the
/// return-RIP check, the exit.
///
/// # Safety
/// As [`frameless_resume`].
#[cold]
#[inline(never)]
unsafe fn resume_slow() -> ! {
    let cur = current();
    let frame = cur.syscall_frame();
    let r = crate::ipc::fastpath::wait_end(cur.ipc.claim.latest(), frame).map(|_| 0);
    // SAFETY: the caller's contract; the wait is over.
    let f = unsafe { &mut *frame };
    let check = finish(f, r);
    end(f, check, non_canonical_return);
    // SAFETY: as in `resume_end` (`wait_end` dropped its values).
    unsafe { leave(cur) }
}

/// [`resume_end`] for a return RIP that is not a user address
/// (`check_return` marked the frame): the thread is stopped
/// ([`non_canonical_return`]); the exit's work test ends it.
///
/// # Safety
/// As [`frameless_resume`]; the result is in the frame.
#[cold]
#[inline(never)]
unsafe fn resume_fault() -> ! {
    let cur = current();
    // SAFETY: the caller's contract.
    let f = unsafe { &mut *cur.syscall_frame() };
    end(f, ReturnCheck::Fault, non_canonical_return);
    // SAFETY: as in `resume_end`.
    unsafe { leave(cur) }
}

/// Leaves a frameless resume's cold path for ring 3 through the stub's
/// exit, with RSP at `cur`'s syscall frame.
///
/// # Safety
/// `cur` is the current thread, its syscall frame holds the result, and
/// nothing on the current stack is owned (`exit_to_user`'s contract).
#[inline(always)]
unsafe fn leave(cur: &crate::object::thread::Thread) -> ! {
    // SAFETY: the caller's contract.
    unsafe { crate::arch::frameless::exit_to_user(cur as *const _ as u64, cur.kstack_top()) }
}

/// Runs a syscall's `handler` for [`ipc_entry_traced`] (a traced IPC syscall)
/// and ends the syscall.
#[inline(never)]
fn run_handler<F: FnOnce(&mut TrapFrame)>(frame: &mut TrapFrame, handler: Handler, fault: F) {
    let check = invoke(frame, handler);
    end(frame, check, fault);
}

/// A non-canonical return RIP is the thread's fault, never SYSRET's
/// (CVE-2012-0217): see `check_return`.
#[inline(always)]
fn end<F: FnOnce(&mut TrapFrame)>(frame: &mut TrapFrame, check: ReturnCheck, fault: F) {
    if check == ReturnCheck::Fault {
        fault(frame);
    }
}

/// A syscall whose return RIP is not a user address: the handler ran, but
/// its result never reaches ring 3, so a spawn's new thread or child would
/// run on with a handle nobody was given; it is undone as for a kill inside
/// the spawn ([`syscall_return_work`]; `check_return` left the syscall
/// number in `error_code`), then the thread is stopped with #GP. Never
/// inlined and not `#[cold]`, like [`Fault::stop`], or every syscall pays
/// for its table entry's stack frame (found when the entry was one
/// dispatcher, `syscall_dispatch`).
/// Counted (`cpu_syscalls` counter 6): each ring-3 case that provokes one
/// proves its own refusal ran, which its #GP alone cannot under TCG.
#[inline(never)]
fn non_canonical_return(frame: &mut TrapFrame) {
    let refusals = &crate::arch::percpu::this().rip_refusals;
    refusals.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    undo_spawn(frame.error_code, frame.rax);
    Fault::NonCanonicalReturn.stop(frame);
}

/// What [`choose`] found for a syscall.
enum Chosen {
    /// Answered in the table: the result is in the frame.
    Answered(ReturnCheck),
    /// Run by this handler.
    Handler(Handler),
    /// `ipc_call` or `ipc_reply_recv`: the IPC entry ([`ipc_entry`]).
    Ipc(ipc::FastOp),
}

/// Answers the syscalls the table answers (an unknown number, `null`,
/// `thread_id`, `cpu_count`), or picks the handler.
#[inline(always)]
fn choose(nr: u64, frame: &mut TrapFrame) -> Chosen {
    let handler: Handler = match Sysnum::try_from(nr) {
        Err(e) => return Chosen::Answered(finish(frame, Err(e))),
        // Answered in the table.
        Ok(Sysnum::Null) => return Chosen::Answered(finish(frame, Ok(0))),
        Ok(Sysnum::ThreadId) => return Chosen::Answered(finish(frame, Ok(current().tid.get()))),
        Ok(Sysnum::CpuCount) => return Chosen::Answered(finish(frame, Ok(online() as u64))),
        // Through a handler: decode the registers, invoke.
        Ok(Sysnum::ThreadExit) => |f| thread::exit(thread::Exit::decode(f)),
        Ok(Sysnum::Yield) => |_| thread::yield_now(),
        Ok(Sysnum::SleepNs) => |f| thread::sleep_ns(f.rdi),
        Ok(Sysnum::ThreadSpawn) => |f| thread::spawn(thread::Spawn::decode(f)?, f),
        Ok(Sysnum::SetAffinity) => |f| thread::set_affinity(f.rdi),
        Ok(Sysnum::SetPriority) => |f| thread::set_priority(thread::Priority::decode(f)?),
        Ok(Sysnum::ThreadJoin) => |f| thread::join(thread::ThreadRef::decode(f.rdi, WAIT)?),
        Ok(Sysnum::ThreadKill) => |f| thread::kill(thread::ThreadRef::decode(f.rdi, KILL)?),
        Ok(Sysnum::SetFsBase) => |f| thread::set_fs_base(thread::Base::decode(f)?),
        Ok(Sysnum::SetGsBase) => |f| thread::set_gs_base(thread::Base::decode(f)?),
        Ok(Sysnum::ProcessExit) => |f| process::exit(thread::Exit::decode(f)),
        Ok(Sysnum::ProcessSpawn) => |f| process::spawn(process::Spawn::decode(f)?, f),
        Ok(Sysnum::ProcessWait) => |f| process::wait(process::ProcessRef::decode(f.rdi, WAIT)?),
        Ok(Sysnum::ProcessKill) => |f| process::kill(process::ProcessRef::decode(f.rdi, KILL)?),
        Ok(Sysnum::SetChildMaxPriority) => {
            |f| process::set_child_max_priority(process::ChildMcp::decode(f)?)
        }
        Ok(Sysnum::MapAnon) => |f| memory::map_anon(memory::Range::decode(f)?),
        Ok(Sysnum::Unmap) => |f| memory::unmap(memory::Range::decode(f)?),
        Ok(Sysnum::Protect) => |f| memory::protect(memory::Range::decode(f)?),
        Ok(Sysnum::DebugWrite) => |f| system::debug_write(system::DebugWrite::decode(f)?),
        Ok(Sysnum::ClockNs) => |_| system::clock_ns(),
        Ok(Sysnum::CpuId) => |_| system::cpu_id(),
        Ok(Sysnum::CpuSyscalls) => |f| system::cpu_syscalls(f.rdi, f.rsi),
        Ok(Sysnum::SysInfo) => |f| system::sysinfo(system::SysInfoBuf::decode(f)?),
        Ok(Sysnum::Shutdown) => |f| system::shutdown(system::Shutdown::decode(f)?),
        // The IPC family (it writes output registers into the frame).
        Ok(Sysnum::HandleDup) => |f| ipc::invoke(Sysnum::HandleDup, f),
        Ok(Sysnum::HandleClose) => |f| ipc::invoke(Sysnum::HandleClose, f),
        Ok(Sysnum::EndpointCreate) => |f| ipc::invoke(Sysnum::EndpointCreate, f),
        Ok(Sysnum::NotificationCreate) => |f| ipc::invoke(Sysnum::NotificationCreate, f),
        Ok(Sysnum::IpcCall) => return Chosen::Ipc(ipc::FastOp::Call),
        Ok(Sysnum::IpcSend) => |f| ipc::invoke(Sysnum::IpcSend, f),
        Ok(Sysnum::IpcRecv) => |f| ipc::invoke(Sysnum::IpcRecv, f),
        Ok(Sysnum::IpcReply) => |f| ipc::invoke(Sysnum::IpcReply, f),
        Ok(Sysnum::IpcReplyRecv) => return Chosen::Ipc(ipc::FastOp::ReplyRecv),
        Ok(Sysnum::NtfSignal) => |f| ipc::invoke(Sysnum::NtfSignal, f),
        Ok(Sysnum::NtfWait) => |f| ipc::invoke(Sysnum::NtfWait, f),
        Ok(Sysnum::NtfBind) => |f| ipc::invoke(Sysnum::NtfBind, f),
        Ok(Sysnum::HandleGive) => |f| ipc::invoke(Sysnum::HandleGive, f),
        // --- vm (issue 11) ---
        Ok(Sysnum::ProcessCreate) => vm::process_create,
        Ok(Sysnum::SpaceMap) => vm::space_map,
        Ok(Sysnum::SpaceUnmap) => vm::space_unmap,
        Ok(Sysnum::SpaceProtect) => vm::space_protect,
        Ok(Sysnum::MemCreate) => vm::mem_create,
        Ok(Sysnum::MemMap) => vm::mem_map,
        Ok(Sysnum::ThreadStart) => vm::thread_start,
        Ok(Sysnum::SpaceClone) => vm::space_clone,
        // --- hw (issue 11) ---
        Ok(Sysnum::ProcessNotify) => |f| hw::process_notify(f),
        Ok(Sysnum::IoportGrant) => |f| hw::ioport_grant(f),
        Ok(Sysnum::IoportEnable) => |f| hw::ioport_enable(f),
        Ok(Sysnum::IrqBind) => |f| hw::irq_bind(f),
        Ok(Sysnum::IrqAck) => |f| hw::irq_ack(f),
        Ok(Sysnum::ThreadSuspend) => |f| thread::suspend(thread::ThreadRef::decode(f.rdi, KILL)?),
        Ok(Sysnum::ProcessSetFaultEp) => |f| hw::process_set_fault_ep(f),
        Ok(Sysnum::ThreadResume) => |f| thread::resume(thread::ThreadRef::decode(f.rdi, KILL)?),
        // --- trace (issue 12) ---
        Ok(Sysnum::TraceMark) => |f| trace::mark(trace::Mark::decode(f)?),
        // --- loader (issue 11) ---
        Ok(Sysnum::ProcessId) => loader::process_id,
        Ok(Sysnum::ProcessAllowPrograms) => loader::process_allow_programs,
        // --- shell3 (issue 12 part 4) ---
        Ok(Sysnum::TraceDump) => |_| shell3::trace_dump(),
    };
    Chosen::Handler(handler)
}

/// Runs `handler` (traced when syscall tracing is on), puts its result in
/// the frame and checks the return.
#[inline(always)]
fn invoke(frame: &mut TrapFrame, handler: Handler) -> ReturnCheck {
    let r = if crate::trace::on(abi::trace::cat::SYSCALL) {
        trace::traced(handler, frame)
    } else {
        handler(frame)
    };
    finish(frame, r)
}

/// A syscall's handler: decodes its arguments from the frame, invokes, and
/// returns the result. (A closure in [`choose`]'s table; called
/// indirectly, so never inlined into the dispatcher.)
pub(super) type Handler = fn(&mut TrapFrame) -> Result<u64, Error>;

/// Puts the result in RAX and checks the return RIP.
#[inline(always)]
fn finish(frame: &mut TrapFrame, r: Result<u64, Error>) -> ReturnCheck {
    frame.rax = encode_result(r);
    check_return(frame)
}

/// The object handle number `reg` names in the caller's table, if it is of
/// the kind `is_kind` accepts and has `rights`. Errors in this order:
/// `BadHandle` (not a number of this table: never was, closed, stale, or
/// upper bits set), `WrongType`, `PermissionDenied`.
fn handle_object(
    reg: u64,
    rights: Rights,
    is_kind: impl Fn(&Object) -> bool,
) -> Result<(Handle, Object), Error> {
    let h = Handle::from_reg(reg)?;
    let p = current().process.as_ref().ok_or(Error::PermissionDenied)?;
    let t = p.ipc.handles.lock();
    let e = t.get(h, Rights::empty())?;
    if !is_kind(&e.object) {
        return Err(Error::WrongType);
    }
    if !e.rights.contains(rights) {
        return Err(Error::PermissionDenied);
    }
    Ok((h, e.object.clone()))
}

/// The syscall exit's slow path (the entry stub calls it with the frame
/// when the work word is set; interrupts are off): before a killed thread
/// dies in [`crate::lifecycle::return_to_user_work`], a `thread_spawn` or
/// `process_spawn` that succeeded is undone, since its handle number never
/// reaches user space. Without this the new handle stayed in the table
/// until the process ended (and a child kept its `MAX_CHILDREN` unit that
/// long) while nobody could name it (breakit2's note 2). The new thread or
/// child is killed and the handle closed: for the program the spawn did
/// not happen (a thread or child that already ran user code ends). The
/// kill may land at any point up to the work test in the stub: whatever
/// sets KILL also sets the work bit the stub tests after the handler
/// returned, so a successful spawn result is always seen here; a kill
/// that comes while a suspend parks the thread here is seen too.
#[no_mangle]
pub extern "C" fn syscall_return_work(frame: &mut TrapFrame) {
    // Tested inside the work loop, not once before it: a suspend parks the
    // thread there first (the handle still only in RAX), and a kill that
    // comes while it is parked ends it in that loop (break21, ring-3 case
    // `break21_suspended_spawner_killed_leaves_no_child`).
    // Only the syscall stub's exit calls this, with its syscall frame
    // (whose vector the stub does not write, cut26s: no test of it).
    let (nr, rax) = (frame.error_code, frame.rax);
    crate::lifecycle::user_work(|| undo_spawn(nr, rax));
}

/// Kills what spawn syscall `nr` created and closes its handle (`rax`, the
/// syscall's result); nothing for another syscall or a failed spawn.
/// `inline(never)`, not `#[cold]`: with `#[cold]` (inlined into
/// [`non_canonical_return`]) the dispatcher (`syscall_dispatch`, now
/// [`SYSCALL_TABLE`]'s entries) set up its stack frame on every syscall again (+8 instructions for `null`, `bench.sh --check`).
#[inline(never)]
fn undo_spawn(nr: u64, rax: u64) {
    let Ok(h) = abi::decode_result(rax) else {
        return;
    };
    match Sysnum::try_from(nr) {
        Ok(Sysnum::ThreadSpawn) => {
            if let Ok(r) = thread::ThreadRef::decode(h, Rights::empty()) {
                let _ = thread::kill(r);
            }
        }
        Ok(Sysnum::ProcessSpawn) => {
            if let Ok(r) = process::ProcessRef::decode(h, Rights::empty()) {
                let _ = process::kill(r);
            }
        }
        _ => return,
    }
    if let Ok(h) = Handle::from_reg(h) {
        close_reaped(h);
    }
}

/// Closes handle `h` of the caller after a join or wait reaped what it
/// names. Another thread may have closed it meanwhile (then its slot has a
/// new generation and this finds nothing).
fn close_reaped(h: Handle) {
    let Some(p) = current().process.as_ref() else {
        return;
    };
    let entry = p.ipc.handles.lock().close(h);
    // Outside the table lock.
    if let Ok(e) = entry {
        crate::ipc::release(e);
    }
}

/// The caller's pid (0 for a kernel thread, which never makes syscalls).
fn caller_pid() -> u64 {
    current().pid()
}

/// A client that broke the syscall protocol: unlike an [`Error`] there is no
/// answer to give it, so the thread is stopped.
///
/// Today one case fits; IPC adds the rest (a reply to nobody, a message that
/// contradicts its own header, a receive on an endpoint the caller only
/// sends to...). Data-dependent refusals stay [`Error`]s: a fault is for a
/// request the caller could not have meant to be answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The `syscall` instruction was the last one of the user half, so the
    /// return address is not a canonical user address (CVE-2012-0217:
    /// SYSRET would fault in ring 0). Reported as #GP, as a jump there
    /// would be.
    NonCanonicalReturn,
}

impl Fault {
    /// What the log says.
    pub const fn as_str(self) -> &'static str {
        match self {
            Fault::NonCanonicalReturn => "syscall return address not a user address",
        }
    }

    /// The CPU exception the thread's status word reports
    /// ([`abi::status::faulted`]).
    pub const fn vector(self) -> u8 {
        match self {
            Fault::NonCanonicalReturn => 13,
        }
    }

    /// Stops the calling thread: logs the reason, turns `frame` into the
    /// fault's exception frame and hands it to the scheduler's user-fault
    /// path, which logs the registers and ends the thread with status
    /// `faulted(vector)` (its process ends with its last thread). Does not
    /// return to the caller's user code.
    ///
    /// Never inlined, and neither `#[cold]` nor `-> !`: with any of those
    /// the compiler sets up the syscall's entry's ([`SYSCALL_TABLE`]) stack
    /// frame on every syscall instead of only on the paths that call (+7 instructions for
    /// `null`, which `scripts/bench.sh --check` catches).
    #[inline(never)]
    pub fn stop(self, frame: &mut TrapFrame) {
        log::warn!(
            "syscall fault: pid {} tid {}: {}",
            caller_pid(),
            current().tid,
            self.as_str()
        );
        frame.vector = u64::from(self.vector());
        frame.error_code = 0;
        end_faulted(frame, 0);
    }
}
