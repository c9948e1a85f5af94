//! The IPC syscall family: decode the registers (`kcore::ipc::msg`'s table)
//! into typed requests — handles looked up with the rights each call needs,
//! `MsgInfo`/`RecvSpec` checked — then invoke `ipc::slowpath`. Every
//! malformed argument is an `Error` before anything happens.
//!
//! Handle numbers index the caller's own table ([`ProcessIpc`]); an entry
//! of the wrong kind is `WrongType`, a missing right `PermissionDenied`, a
//! closed or stale number `BadHandle`.
//!
//! [`ProcessIpc`]: crate::object::kobject::ProcessIpc

use crate::arch::trap::TrapFrame;
use crate::ipc::fastpath::{self, put_msg, ReplyRecv};
use crate::ipc::slowpath::{self, Ep, Ntf, Received, Timeout};
use crate::ipc::transfer::Extra;
use crate::ipc::xcall;
use crate::ipc::Handoff;
use crate::object::endpoint::EndpointObj;
use crate::object::kobject::{charge, Handles, Object};
use crate::object::notification::NotificationObj;
use crate::object::process::Process;
use crate::object::waitstate::Msg;
use crate::sched;
use abi::layout::{USER_END, USER_MIN};
use abi::trace::Kind;
use abi::{Error, Sysnum};
use alloc::sync::Arc;
use kcore::handles::{Entry, Handle, Rights};
use kcore::ipc::{MsgInfo, RecvSpec, MAX_BUFFER};

/// Rights of a new endpoint's handle.
const EP_RIGHTS: Rights = Rights::SEND
    .union(Rights::RECV)
    .union(Rights::DUPLICATE)
    .union(Rights::TRANSFER);
/// Rights of a new notification's handle.
const NTF_RIGHTS: Rights = Rights::SIGNAL
    .union(Rights::WAIT)
    .union(Rights::DUPLICATE)
    .union(Rights::TRANSFER);

/// Runs IPC syscall `n` on `frame`: the result for RAX; output registers are
/// written into the frame. Inlined into each of the dispatcher's handlers,
/// where `n` is a constant, so the `match` folds away (the fast path's
/// calls pay for no second dispatch).
#[inline(always)]
pub fn invoke(n: Sysnum, frame: &mut TrapFrame) -> Result<u64, Error> {
    match n {
        Sysnum::HandleDup => dup(frame.rdi, frame.rsi, frame.rdx),
        Sysnum::HandleClose => close(frame.rdi),
        Sysnum::HandleGive => give(frame.rdi, frame.rsi, frame.rdx, frame.r10),
        Sysnum::EndpointCreate => create(true),
        Sysnum::NotificationCreate => create(false),
        Sysnum::IpcCall => call::<false>(frame),
        Sysnum::IpcSend => send(frame),
        Sysnum::IpcRecv => recv::<false>(frame, false),
        Sysnum::IpcReply => {
            let info = MsgInfo::from_user(frame.rsi)?;
            let (m, extra) = message(info, frame, 0)?;
            super::trace::reply(None);
            slowpath::reply(m, extra, false).map(|_| 0)
        }
        Sysnum::IpcReplyRecv => recv::<false>(frame, true),
        Sysnum::NtfSignal => {
            let n = ntf(frame.rdi, Rights::SIGNAL)?;
            slowpath::signal(&n, frame.rsi);
            Ok(0)
        }
        Sysnum::NtfWait => {
            let info = MsgInfo::from_user(frame.rsi)?;
            let spec = RecvSpec::from_user(frame.r15, info)?;
            let n = ntf(frame.rdi, Rights::WAIT)?;
            let bits = slowpath::ntf_wait(&n, timeout(spec))?;
            frame.rsi = MsgInfo::new(0, 0, 0, 0).with_notified().raw();
            frame.rdx = bits;
            Ok(0)
        }
        Sysnum::NtfBind => if frame.rdi == 0 {
            slowpath::bind(None)
        } else {
            slowpath::bind(Some(&ntf(frame.rdi, Rights::WAIT)?))
        }
        .map(|_| 0),
        _ => Err(Error::BadSyscall),
    }
}

fn process() -> Result<&'static Arc<Process>, Error> {
    sched::current()
        .process
        .as_ref()
        .ok_or(Error::PermissionDenied)
}

/// The endpoint handle `h` names with `rights`, and its badge: one table
/// lock, one compare of the slot's number with the register. Inlined: it
/// is on both fast paths (`call`, `reply_recv`), where a call's frame
/// setup is a fifth of its cost.
///
/// The lookup that succeeds is tested as one condition (a live slot whose
/// number is the whole register, holding an endpoint with `rights`), and a
/// refusal is told apart out of line ([`ep_refusal`], the same tests in
/// their order, `Handle::from_reg`'s first): entrycut, the error codes
/// were set up before each test on the fast path, and "live slot" was a
/// test of its own; entry2, the register's upper half was a test of its
/// own (`find_reg`: a register with any of them set matches no slot).
#[inline(always)]
fn ep(h: u64, rights: Rights) -> Result<(Ep, u64), Error> {
    let p = syscall_process(sched::current());
    // Syscalls run with interrupts off: no RFLAGS save and restore.
    let t = p.ipc.handles.lock_irqs_off();
    find_ep(&t, h, rights).map(|(ep, badge)| (ep.clone(), badge))
}

/// [`ep`]'s test on the table `t` (locked by the caller): the endpoint
/// entry register `h` names with `rights`, borrowed, and its badge.
#[inline(always)]
fn find_ep(t: &Handles, h: u64, rights: Rights) -> Result<(&Ep, u64), Error> {
    // The kind tested inside the lookup, alone (`find_reg_if`: one
    // compare for "live" and "an endpoint"), the rights after it.
    if let Some(Entry {
        object: Object::Endpoint(ep),
        rights: r,
        badge,
    }) = t.find_reg_if(h, |e| matches!(e.object, Object::Endpoint(_)))
    {
        if r.contains(rights) {
            return Ok((ep, *badge));
        }
    }
    Err(ep_refusal(t, h, rights))
}

/// Why [`ep`] refused register `h`: `BadHandle` (upper bits set, or no
/// such live number), `WrongType`, `PermissionDenied`, in that order.
#[cold]
#[inline(never)]
fn ep_refusal(t: &Handles, h: u64, rights: Rights) -> Error {
    refusal(t, h, rights, |o| matches!(o, Object::Endpoint(_)))
}

/// [`ep_refusal`] for a lookup of the kind `kind` accepts ([`ntf`]).
#[inline(always)]
fn refusal(t: &Handles, h: u64, rights: Rights, kind: fn(&Object) -> bool) -> Error {
    let Ok(h) = Handle::from_reg(h) else {
        return Error::BadHandle;
    };
    let e = match t.get(h, Rights::empty()) {
        Ok(e) => e,
        Err(e) => return e.into(),
    };
    if !kind(&e.object) {
        return Error::WrongType;
    }
    if !e.rights.contains(rights) {
        return Error::PermissionDenied;
    }
    // (Not reached: `ep` found nothing to refuse.)
    Error::BadHandle
}

/// The process of `cur`, the thread making a syscall, untested: only a
/// CPU's idle thread has none (`Thread::new_idle`), and it runs kernel
/// code only, so it makes no syscall; a thread's process is set at its
/// creation and taken only by its drop (lookup3: the test was 2
/// instructions a lookup, on both fast paths).
#[inline(always)]
fn syscall_process(cur: &crate::object::thread::Thread) -> &Arc<Process> {
    debug_assert!(cur.process.is_some());
    // SAFETY: as said above: a thread that makes a syscall has a process.
    unsafe { cur.process.as_ref().unwrap_unchecked() }
}

/// The notification handle `h` names with `rights`: [`ep`]'s lookup (one
/// compare of the whole register, the kind inside it, the refusals told
/// apart out of line in the same order) for a notification (cut28l: the
/// `Handle::from_reg` test, the interrupt flag's save and restore, the
/// process test and the separate live and kind tests were
/// `notify_signal_wait`'s).
fn ntf(h: u64, rights: Rights) -> Result<Ntf, Error> {
    let p = syscall_process(sched::current());
    // Syscalls run with interrupts off: no RFLAGS save and restore.
    let t = p.ipc.handles.lock_irqs_off();
    if let Some(Entry {
        object: Object::Notification(n),
        rights: r,
        ..
    }) = t.find_reg_if(h, |e| matches!(e.object, Object::Notification(_)))
    {
        if r.contains(rights) {
            return Ok(n.clone());
        }
    }
    Err(ntf_refusal(&t, h, rights))
}

/// Why [`ntf`] refused register `h` (as [`ep_refusal`]).
#[cold]
#[inline(never)]
fn ntf_refusal(t: &Handles, h: u64, rights: Rights) -> Error {
    refusal(t, h, rights, |o| matches!(o, Object::Notification(_)))
}

/// `handle_dup(h, rights, badge)`.
fn dup(h: u64, rights: u64, badge: u64) -> Result<u64, Error> {
    let h = Handle::from_reg(h)?;
    let rights = u32::try_from(rights)
        .ok()
        .and_then(Rights::from_bits)
        .ok_or(Error::InvalidArgument)?;
    let mut t = process()?.ipc.handles.lock();
    let new = t.duplicate(h, rights, (badge != 0).then_some(badge))?;
    // Counted under the table lock (table before object: the lock order),
    // so a concurrent close of the source cannot kill the endpoint between.
    let obj = t.get(new, Rights::empty())?.object.clone();
    crate::ipc::retain(&obj, rights);
    drop(t);
    drop(obj);
    Ok(new.raw() as u64)
}

/// `handle_give(proc, h, rights, badge)`: a copy of `h` into the table of
/// the process handle `proc` names (needs `KILL`); a non-zero `badge`
/// badges the copy as `handle_dup` would (only from an unbadged `h`), so
/// a server gives a client its own badged handle in one call, not a dup,
/// a give and a close (forku: procmgr's `Fork`).
fn give(pid: u64, h: u64, rights: u64, badge: u64) -> Result<u64, Error> {
    let me = process()?;
    let h = Handle::from_reg(h)?;
    let rights = u32::try_from(rights)
        .ok()
        .and_then(Rights::from_bits)
        .ok_or(Error::InvalidArgument)?;
    let child = super::ProcessRef::decode(pid, Rights::KILL)?.process;
    let entry = {
        let t = me.ipc.handles.lock();
        let e = t.get(h, Rights::DUPLICATE | Rights::TRANSFER)?;
        if !e.rights.contains(rights) {
            return Err(Error::PermissionDenied);
        }
        let badge = match badge {
            0 => e.badge,
            b if e.badge == 0 => b,
            _ => return Err(kcore::handles::HandleError::AlreadyBadged.into()),
        };
        let entry = Entry {
            object: e.object.clone(),
            rights,
            badge,
        };
        // Counted under our table lock (as `dup`): a close of `h` between
        // could otherwise kill the endpoint and this count revive it.
        crate::ipc::retain(&entry.object, rights);
        entry
    };
    let r = {
        let mut t = child.ipc.handles.lock();
        // Under the child's table lock: a child that is ending has closed
        // (or is about to close, after this lock) its table for good.
        if child.threads.lock().is_exiting() {
            Err(Error::NotFound)
        } else {
            t.insert(entry.clone()).map_err(Error::from)
        }
    };
    match r {
        Ok(n) => Ok(n.raw() as u64),
        Err(e) => {
            crate::ipc::release(entry);
            Err(e)
        }
    }
}

/// `handle_close(h)`.
fn close(h: u64) -> Result<u64, Error> {
    let h = Handle::from_reg(h)?;
    let entry = process()?.ipc.handles.lock().close(h)?;
    // Outside the table lock (it may wake threads and free the object).
    crate::ipc::release(entry);
    Ok(0)
}

/// `endpoint_create()` / `notification_create()`.
fn create(endpoint: bool) -> Result<u64, Error> {
    let p = process()?;
    let (object, rights) = if endpoint {
        (
            Object::Endpoint(charge(&p.ipc.objects, EndpointObj::new())?),
            EP_RIGHTS,
        )
    } else {
        (
            Object::Notification(charge(&p.ipc.objects, NotificationObj::new())?),
            NTF_RIGHTS,
        )
    };
    crate::ipc::retain(&object, rights);
    let entry = Entry {
        object: object.clone(),
        rights,
        badge: 0,
    };
    let r = p.ipc.handles.lock().insert(entry);
    match r {
        Ok(h) => Ok(h.raw() as u64),
        Err(e) => {
            crate::ipc::release(Entry {
                object,
                rights,
                badge: 0,
            });
            Err(e.into())
        }
    }
}

/// The message a sender describes: registers, and its buffer and handles
/// taken from the sender now (a bad buffer or handle is its error before
/// anything is delivered).
fn message(info: MsgInfo, f: &TrapFrame, badge: u64) -> Result<(Msg, Extra), Error> {
    let extra = Extra::take(f.r14, info.buffer_len(), &info.transfers(f.rbx, f.rbp))?;
    let m = Msg {
        badge,
        // What the receiver sees: label and buffer length (its handle
        // count is set when they are placed).
        info: MsgInfo::new(info.label(), 0, 0, info.buffer_len()),
        words: [f.rdx, f.r10, f.r8, f.r9, f.r12, f.r13],
        handles: [0; 4],
    };
    Ok((m, extra))
}

/// Whether RSI and R15 are the fast paths' case: an RSI with nothing above
/// its label (no handles, copy mask, timeout, buffer, reserved or notified
/// bit) is always a valid register-only `MsgInfo`, and with no timeout bit
/// R15 is only the receive capacity, valid up to `MAX_BUFFER`. Tested
/// first and apart ([`call`], [`recv`]): the fast case then runs with the
/// message known register-only and the receive known to have no timeout
/// (constants: their tests fold away; a decode merged from both cases
/// tested them again after the lookup), and [`decode`] runs only for the
/// rest, in a copy of its own whose fallback is inlined (`recv_with`'s
/// `COLD`; out of line it cost `ipc_buffer_4k_same_core` 48).
#[inline(always)]
fn fast_regs(f: &TrapFrame) -> bool {
    // RSI's upper half read as a `u32` of its own and compared in memory
    // (cut26l: a shift of the whole register needed a copy of it, which the
    // label keeps).
    // SAFETY: the upper half of the aligned `u64` `f.rsi` (x86_64 is
    // little-endian), in bounds of `f` and initialised.
    let rsi_hi = unsafe { core::ptr::addr_of!(f.rsi).cast::<u32>().add(1).read() };
    rsi_hi == 0 && f.r15 as u32 as usize <= MAX_BUFFER
}

/// RSI and R15 decoded (`MsgInfo::from_user`, `RecvSpec::from_user`:
/// they decide everything, errors included).
#[inline(always)]
fn decode(f: &TrapFrame) -> Result<(MsgInfo, RecvSpec), Error> {
    let info = MsgInfo::from_user(f.rsi)?;
    Ok((info, RecvSpec::from_user(f.r15, info)?))
}

/// The `RecvSpec` [`decode`] or [`fast_decode`] gave for `info` (from the
/// same frame, unchanged since): made again from R15 by the paths out of
/// line rather than passed to them (a `RecvSpec` argument was built in
/// memory on the fast path, for its fallback).
#[inline(always)]
fn spec_of(f: &TrapFrame, info: MsgInfo) -> RecvSpec {
    RecvSpec::of(f.r15, info)
}

/// [`fast_regs`]'s case decoded: what [`decode`] gives for it.
#[inline(always)]
fn fast_decode(f: &TrapFrame) -> (MsgInfo, RecvSpec) {
    let info = MsgInfo::new(f.rsi as u32, 0, 0, 0);
    (info, RecvSpec::of(f.r15, info))
}

/// The receive buffer R14/R15 name: its range must be a user range.
fn recv_buf(f: &TrapFrame, spec: RecvSpec) -> Result<u64, Error> {
    if spec.capacity > 0 && !buffer_ok(f.r14, spec.capacity as u64) {
        return Err(refused(Error::BadAddress));
    }
    Ok(f.r14)
}

// `buffer_ok`'s bound: a capacity never exceeds the user range's length.
const _: () = assert!(MAX_BUFFER as u64 <= USER_END - USER_MIN);

/// `user_range_ok(addr, len)` for a receive capacity `len` in
/// `1..=MAX_BUFFER` (both decodes bound it: `fast_regs`,
/// `RecvSpec::from_user`), as one compare: `addr - USER_MIN` wraps above
/// any bound for an `addr` below `USER_MIN`, and for the rest it is
/// exact, as `(USER_END - USER_MIN) - len` is (the assertion above), so
/// this is `USER_MIN <= addr && addr + len <= USER_END` with no wrap
/// (cut28l: the overflow test and the two bounds were 7 instructions of
/// the reply side, 5 here).
#[inline(always)]
fn buffer_ok(addr: u64, len: u64) -> bool {
    debug_assert!((1..=MAX_BUFFER as u64).contains(&len));
    addr.wrapping_sub(USER_MIN) <= (USER_END - USER_MIN) - len
}

/// `e`, made where it is returned: the fast paths' refusals share one
/// exit, and a plain constant there is set up in a register before each
/// test on the fast path instead (entrycut).
#[inline(always)]
fn refused(e: Error) -> Error {
    core::hint::black_box(e)
}

/// The timeout a `RecvSpec` asks for.
fn timeout(spec: RecvSpec) -> Timeout {
    match spec.timeout_us {
        None => Timeout::Never,
        Some(0) => Timeout::Poll,
        Some(us) => Timeout::At(crate::time::now_ns().saturating_add(us as u64 * 1000)),
    }
}

/// `ipc_call` on the frame `f` points at. `FRAMELESS`: the fast path's
/// wait may end frameless (the dispatcher's IPC entry,
/// [`fast_entry`]); then this never returns, and its locals must own
/// nothing at the fast path's call (the table lock is released before it,
/// and the call side holds no endpoint reference).
///
/// `f` is the current thread's own frame; only short-lived references to
/// it are made, none across a block.
#[inline(always)]
fn call<const FRAMELESS: bool>(f: *mut TrapFrame) -> Result<u64, Error> {
    // SAFETY: the current thread's own frame (see above), not written
    // while this reference lives.
    let fr = unsafe { &*f };
    if !fast_regs(fr) {
        return call_decoded::<FRAMELESS>(f);
    }
    let (info, spec) = fast_decode(fr);
    call_with::<FRAMELESS, false>(f, info, spec)
}

/// [`call`] of any other RSI and R15: decoded (their refusals first).
#[inline(always)]
fn call_decoded<const FRAMELESS: bool>(f: *mut TrapFrame) -> Result<u64, Error> {
    // SAFETY: as in `call`.
    let (info, spec) = decode(unsafe { &*f })?;
    call_with::<FRAMELESS, true>(f, info, spec)
}

/// [`call`] of the decoded `info` and `spec`: the receive buffer, the
/// endpoint, then the fast path. The fast call's claim is made under the
/// handle-table lock (table before endpoint: the lock order), from the
/// table's own entry, so the fast path takes no endpoint reference of its
/// own and drops none (the claimed receiver's record holds one until the
/// call takes it); a counted one is taken only for the rest.
///
/// `DECODED`: [`call_decoded`]'s copy, whose message is never
/// register-only (an RSI that [`fast_regs`] refused and [`decode`]
/// accepted has handles, a buffer or a timeout: a copy mask needs
/// handles), so it has no fast path and no cross-core path to test.
#[inline(always)]
fn call_with<const FRAMELESS: bool, const DECODED: bool>(
    f: *mut TrapFrame,
    info: MsgInfo,
    spec: RecvSpec,
) -> Result<u64, Error> {
    // SAFETY: as in `call`.
    let fr = unsafe { &*f };
    let buf = recv_buf(fr, spec)?;
    let h = fr.rdi;
    let cur = sched::current();
    // A kill pending leaves the call to the slow path, which notices it
    // (tested before the lookup, which still refuses first: the thread
    // is at hand here, and only a spill of it after the table lock).
    debug_assert!(!DECODED || !info.is_register_only());
    let fast = !DECODED && info.is_register_only() && !cur.killed();
    let p = syscall_process(cur);
    // Syscalls run with interrupts off: no RFLAGS save and restore.
    let t = p.ipc.handles.lock_irqs_off();
    let (e, badge) = find_ep(&t, h, Rights::SEND)?;
    if !FRAMELESS {
        // (The frameless entry runs only with the IPC category off.)
        super::trace::sent(Kind::IpcCall, e, badge);
    }
    if fast {
        // The fast path (`ipc::fastpath`): the receiver claimed under the
        // table lock; `None` changed nothing.
        if let Some(r) = fastpath::call_claim(e) {
            drop(t);
            // The reply is in the frame already.
            return fastpath::call::<FRAMELESS>(cur, r, info.label(), badge, buf, spec.capacity, f)
                .map(|_| 0);
        }
    }
    let ep = e.clone();
    drop(t);
    // Inlined in both copies (out of line on the fast copy it cost the
    // cross-core call 22 and the same-core one 2, lookup3).
    call_rest::<FRAMELESS, DECODED>(f, ep, badge, info, buf)
}

/// The rest of [`call_with`] once the same-core fast path did not take
/// the call (nothing changed): the cross-core path, else the slow path. `DECODED`: as for
/// [`call_with`].
#[inline(always)]
fn call_rest<const FRAMELESS: bool, const DECODED: bool>(
    f: *mut TrapFrame,
    ep: Ep,
    badge: u64,
    info: MsgInfo,
    buf: u64,
) -> Result<u64, Error> {
    // SAFETY: as in `call`.
    let spec = spec_of(unsafe { &*f }, info);
    if !DECODED && info.is_register_only() {
        // The receiver waits on another CPU: the same steps, with a wake
        // instead of the switch (`ipc::xcall`); `None` changed nothing.
        if let Some(r) = xcall::call(FRAMELESS, &ep, info.label(), badge, buf, spec.capacity, f) {
            return r.map(|_| 0);
        }
    }
    // SAFETY: as in `call`.
    let (m, extra) = message(info, unsafe { &*f }, badge)?;
    let r = slowpath::call(&ep, m, extra, buf, spec.capacity, timeout(spec))?;
    // SAFETY: as in `call`; the call's wait is over.
    put_msg(unsafe { &mut *f }, &r);
    Ok(0)
}

/// Which IPC syscall the dispatcher's own IPC entry runs ([`fast_entry`]).
#[derive(Clone, Copy)]
pub(super) enum FastOp {
    /// `ipc_call`.
    Call,
    /// `ipc_reply_recv`.
    ReplyRecv,
}

/// The dispatcher's entry for `ipc_call` and `ipc_reply_recv`: their
/// fast path may block *frameless* (`arch::frameless`), so they run from
/// the raw frame pointer, with no handler frame in between; a wait that
/// blocked frameless ends in [`super::frameless_resume`] instead of
/// returning here. The result is for RAX. Traced syscalls do not come
/// here (the tracing handler wraps the call in frames of its own).
///
/// # Safety
/// `f` is the current thread's syscall frame (the stub's), and the frames
/// above this call own nothing (the dispatcher's tail jump).
#[inline(always)]
pub(super) unsafe fn fast_entry(op: FastOp, f: *mut TrapFrame) -> Result<u64, Error> {
    match op {
        FastOp::Call => call::<true>(f),
        FastOp::ReplyRecv => recv::<true>(f, true),
    }
}

fn send(f: &mut TrapFrame) -> Result<u64, Error> {
    let info = MsgInfo::from_user(f.rsi)?;
    if info.has_timeout() {
        return Err(Error::InvalidArgument);
    }
    let (ep, badge) = ep(f.rdi, Rights::SEND)?;
    super::trace::sent(Kind::IpcSend, &ep, badge);
    let (m, extra) = message(info, f, badge)?;
    slowpath::send(&ep, m, extra).map(|_| 0)
}

/// `recv`, or `reply_recv` (`reply` first: a dead or missing caller is not
/// this call's error, it goes on receiving). `FRAMELESS` and `f`: as for
/// [`call`].
#[inline(always)]
fn recv<const FRAMELESS: bool>(f: *mut TrapFrame, reply_first: bool) -> Result<u64, Error> {
    // SAFETY: the current thread's own frame, not written while this
    // reference lives.
    let fr = unsafe { &*f };
    if !fast_regs(fr) {
        return recv_decoded::<FRAMELESS>(f, reply_first);
    }
    let (info, spec) = fast_decode(fr);
    recv_with::<FRAMELESS, false>(f, reply_first, info, spec)
}

/// [`recv`] of any other RSI and R15: decoded (their refusals first).
#[inline(always)]
fn recv_decoded<const FRAMELESS: bool>(f: *mut TrapFrame, reply_first: bool) -> Result<u64, Error> {
    // SAFETY: as in `recv`.
    let (info, spec) = decode(unsafe { &*f })?;
    recv_with::<FRAMELESS, true>(f, reply_first, info, spec)
}

/// [`recv`] of the decoded `info` and `spec`: the receive buffer, the
/// endpoint, then the fast path (whose record takes the lookup's endpoint
/// reference). `COLD`: [`recv_decoded`]'s copy, the rest inlined rather
/// than called, with no fast path to test (its message is never
/// register-only, as [`call_with`]'s `DECODED`).
#[inline(always)]
fn recv_with<const FRAMELESS: bool, const COLD: bool>(
    f: *mut TrapFrame,
    reply_first: bool,
    info: MsgInfo,
    spec: RecvSpec,
) -> Result<u64, Error> {
    // SAFETY: as in `recv`.
    let fr = unsafe { &*f };
    let buf = recv_buf(fr, spec)?;
    let (ep, _) = ep(fr.rdi, Rights::RECV)?;
    if reply_first && !FRAMELESS {
        // (The frameless entry runs only with the IPC category off.)
        super::trace::reply(Some(&ep));
    }
    debug_assert!(!COLD || !info.is_register_only());
    if reply_first && !COLD && info.is_register_only() && spec.timeout_us.is_none() {
        // The fast path back to the caller (`ipc::fastpath`).
        match fastpath::reply_recv::<FRAMELESS>(ep, info.label(), buf, spec.capacity, f) {
            ReplyRecv::Done(r) => r.map(|_| 0),
            ReplyRecv::ReceiveSlow(h, ep) => receive_slow(f, ep, buf, h),
            ReplyRecv::NotTaken(ep) => recv_rest(f, ep, reply_first, info, buf),
        }
    } else if COLD {
        recv_rest_inline(f, ep, reply_first, info, buf)
    } else {
        recv_rest(f, ep, reply_first, info, buf)
    }
}

/// The receive of a fast `reply_recv` whose reply was delivered (and the
/// hand-off `h` made) but whose receive found a caller queued.
#[inline(never)]
fn receive_slow(f: *mut TrapFrame, ep: Ep, buf: u64, h: Handoff) -> Result<u64, Error> {
    // SAFETY: as in `recv`.
    let capacity = unsafe { &*f }.r15 as u32 as usize;
    let r = slowpath::recv(&ep, buf, capacity, Timeout::Never, h)?;
    super::trace::received(&ep, &r);
    // SAFETY: as in `recv`; the receive is over.
    finish_recv(unsafe { &mut *f }, r)
}

/// The rest of [`recv_with`] once the fast path did not take it (nothing
/// changed): the slow reply, then the slow receive.
#[inline(never)]
fn recv_rest(
    f: *mut TrapFrame,
    ep: Ep,
    reply_first: bool,
    info: MsgInfo,
    buf: u64,
) -> Result<u64, Error> {
    recv_rest_inline(f, ep, reply_first, info, buf)
}

/// [`recv_rest`]'s body, inlined into [`recv_decoded`].
#[inline(always)]
fn recv_rest_inline(
    f: *mut TrapFrame,
    ep: Ep,
    reply_first: bool,
    info: MsgInfo,
    buf: u64,
) -> Result<u64, Error> {
    // SAFETY: as in `recv`.
    let spec = spec_of(unsafe { &*f }, info);
    let mut handoff = Handoff::none();
    if reply_first {
        // The fast path's hand-off back to the caller: a register-only
        // reply, and no timeout on the receive that follows.
        let fast = info.is_register_only();
        // SAFETY: as in `recv`.
        let (m, extra) = message(info, unsafe { &*f }, 0)?;
        match slowpath::reply(m, extra, fast) {
            Ok(h) => handoff = h,
            Err(Error::PeerDied) | Err(Error::InvalidArgument) => {}
            Err(e) => return Err(e),
        }
    } else if info.label() != 0 || info.handles() != 0 || info.buffer_len() != 0 {
        // A receive sends nothing: only the timeout bit may be set.
        return Err(Error::InvalidArgument);
    }
    let r = slowpath::recv(&ep, buf, spec.capacity, timeout(spec), handoff)?;
    super::trace::received(&ep, &r);
    // SAFETY: as in `recv`; the receive is over.
    finish_recv(unsafe { &mut *f }, r)
}

/// Writes what a receive got into the output registers.
fn finish_recv(f: &mut TrapFrame, r: Received) -> Result<u64, Error> {
    match r {
        Received::Msg(m) => put_msg(f, &m),
        Received::Notified(bits) => put_msg(
            f,
            &Msg {
                badge: 0,
                info: MsgInfo::new(0, 0, 0, 0).with_notified(),
                words: [bits, 0, 0, 0, 0, 0],
                handles: [0; 4],
            },
        ),
    }
    Ok(0)
}
