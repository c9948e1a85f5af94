//! hw (issue 11): exit notification, I/O-port grants and the I/O bitmap,
//! IRQs bound to notifications — each with its hostile inputs.
//!
//! init gives this program its hardware roots right after the spawn
//! ([`wait_for_roots`], first thing in `main`). Children are tiny flat
//! images built on the fly, as in `process.rs`.
//!
//! This file holds the roots, the children, the I/O-port and exit
//! notification cases; the rest by concern: [`irq`] (IRQs),
//! [`suspend`] (`thread_suspend`/`thread_resume`), [`fault`] (fault
//! delivery).

mod fault;
mod irq;
mod suspend;
pub use fault::fault_delivery;
pub use irq::irq_rtc_signals_and_ack_unmasks;
pub use suspend::thread_suspend_and_resume;

use crate::note;
use crate::util::{self, expect_err, ok, wait_status as wait, TestResult};
use abi::status::Status;
use abi::{rights, Error, Sysnum};
use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, Ordering};
use libipc::hw::{self, IoPorts, Irq};

/// The hardware roots init gives this program (after the name service).
const IOPORTS_ROOT: IoPorts = IoPorts(abi::boot_handles::tests::IOPORTS);
const IRQ_ROOT: Irq = Irq(abi::boot_handles::tests::IRQS);
use libipc::ipc::{self, Notification};
use libipc::sys::{self, ProcessHandle};

/// COM1's eight ports.
const COM1: u64 = 0x3f8;
/// COM1's scratch register (no UART function; the kernel's log never uses it).
const COM1_SCRATCH: u16 = 0x3ff;
/// The CMOS/RTC index and data ports.
const CMOS: u64 = 0x70;
/// The RTC's ISA line.
const RTC_IRQ: u64 = 8;

static ROOTS: AtomicBool = AtomicBool::new(false);

/// Waits (at most 2 s) until init's `handle_give`s of the hardware roots
/// landed. Called before anything in this program makes a handle, so they
/// take the slots after the name service's (`abi::boot_handles::tests`).
pub fn wait_for_roots() {
    let t0 = sys::clock_ns();
    while sys::clock_ns() - t0 < 2_000_000_000 {
        // A zero-length grant is InvalidArgument once the root is there;
        // an IRQ root is not a bound line (WrongType).
        let ports = hw::ioport_grant(IOPORTS_ROOT, 0, 0);
        let irqs = hw::irq_ack(IRQ_ROOT);
        if ports == Err(Error::InvalidArgument) && irqs == Err(Error::WrongType) {
            ROOTS.store(true, Ordering::Relaxed);
            return;
        }
        sys::yield_now();
    }
}

fn roots() -> TestResult {
    if ROOTS.load(Ordering::Relaxed) {
        Ok(())
    } else {
        Err("init did not give this program its hardware roots")
    }
}

fn unit(r: Result<(), Error>) -> Result<u64, Error> {
    r.map(|_| 0)
}

fn ports(r: Result<IoPorts, Error>) -> Result<u64, Error> {
    r.map(|h| h.0 as u64)
}

fn irq(r: Result<Irq, Error>) -> Result<u64, Error> {
    r.map(|h| h.0 as u64)
}

/// Waits up to `ms` for `n`; the bits, or the error.
fn ntf_wait(n: Notification, ms: u32) -> Result<u64, Error> {
    ipc::wait(n, Some(ms * 1000))
}

fn sleep_ms(ms: u64) {
    sys::sleep_ns(ms * 1_000_000);
}

// The children. Position-independent, no stack; RDI = the spawn argument.
global_asm!(
    ".pushsection .rodata.mica_tests_hw_children, \"a\"",
    // io: waits for the parent's COM1 grant (its first handle), enables
    // it, writes and reads back the scratch register (exit 2 if the byte
    // differs, 3 if the enable failed), then reads port `arg` if non-zero
    // (which must #GP) and exits 0.
    "mica_tests_hw_child_io:",
    "mov r12, rdi",              // r12: the port to probe outside the grant (0: none)
    "2:",
    "mov edi, {first}",          // rdi: the first handle of this table
    "mov eax, {enable}",
    "syscall",
    "cmp rax, -{bad_handle}",    // not given yet?
    "jne 3f",
    "mov eax, {yield_}",
    "syscall",
    "jmp 2b",
    "3:",
    "mov edi, 3",                // exit 3: the enable failed
    "test rax, rax",
    "jnz 9f",
    "mov edi, 1000000",          // rdi: 1 ms: switched out and back in, so
    "mov eax, {sleep}",          // the bitmap must come back with it
    "syscall",
    "mov dx, {scratch}",         // dx: COM1's scratch register
    "mov al, 0x5a",
    "out dx, al",
    "xor eax, eax",
    "in al, dx",
    "mov edi, 2",                // exit 2: the byte did not come back
    "cmp al, 0x5a",
    "jne 9f",
    "test r12, r12",
    "jz 4f",
    "mov rdx, r12",              // dx: the port outside the grant
    "in al, dx",                 // must #GP
    "4:",
    "xor edi, edi",              // exit 0
    "9:",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "mica_tests_hw_child_io_end:",
    // io_none: reads COM1's scratch register with no grant (must #GP).
    "mica_tests_hw_child_io_none:",
    "mov dx, {scratch}",
    "in al, dx",
    "xor edi, edi",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "mica_tests_hw_child_io_none_end:",
    // fault: waits for its first handle (a notification the parent gives
    // once the fault endpoint is set), then arg 0: `int3` and exit 5;
    // arg 1: `ud2`.
    "mica_tests_hw_child_fault:",
    "mov r12, rdi",              // r12: the mode
    "2:",
    "mov edi, {first}",          // rdi: the first handle of this table
    "xor esi, esi",              // rsi: no bits (only "is it there?")
    "mov eax, {signal}",
    "syscall",
    "cmp rax, -{bad_handle}",
    "jne 3f",
    "mov eax, {yield_}",
    "syscall",
    "jmp 2b",
    "3:",
    "test r12, r12",
    "jnz 4f",
    "int3",                      // #BP: a trap, resumed after the int3
    "mov edi, 5",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "4:",
    "ud2",                       // #UD: retried as long as the handler resumes
    "mica_tests_hw_child_fault_end:",
    // exit_arg: process_exit(arg).
    "mica_tests_hw_child_exit:",
    "mov eax, {pexit}",
    "syscall",
    "ud2",
    "mica_tests_hw_child_exit_end:",
    // spin: runs until killed.
    "mica_tests_hw_child_spin:",             // no PAUSE: util::relax
    "jmp mica_tests_hw_child_spin",
    "mica_tests_hw_child_spin_end:",
    ".popsection",
    first = const ipc::FIRST_HANDLE,
    enable = const Sysnum::IoportEnable as u64,
    bad_handle = const Error::BadHandle as u64,
    yield_ = const Sysnum::Yield as u64,
    sleep = const Sysnum::SleepNs as u64,
    signal = const Sysnum::NtfSignal as u64,
    scratch = const COM1_SCRATCH,
    pexit = const Sysnum::ProcessExit as u64,
);

extern "C" {
    static mica_tests_hw_child_io: u8;
    static mica_tests_hw_child_io_end: u8;
    static mica_tests_hw_child_io_none: u8;
    static mica_tests_hw_child_io_none_end: u8;
    static mica_tests_hw_child_fault: u8;
    static mica_tests_hw_child_fault_end: u8;
    static mica_tests_hw_child_exit: u8;
    static mica_tests_hw_child_exit_end: u8;
    static mica_tests_hw_child_spin: u8;
    static mica_tests_hw_child_spin_end: u8;
}

#[derive(Clone, Copy)]
pub(crate) enum Child {
    Io,
    IoNone,
    Fault,
    Exit,
    Spin,
}

impl Child {
    fn code(self) -> &'static [u8] {
        use core::ptr::addr_of;
        let (start, end) = match self {
            Child::Io => (
                addr_of!(mica_tests_hw_child_io),
                addr_of!(mica_tests_hw_child_io_end),
            ),
            Child::IoNone => (
                addr_of!(mica_tests_hw_child_io_none),
                addr_of!(mica_tests_hw_child_io_none_end),
            ),
            Child::Fault => (
                addr_of!(mica_tests_hw_child_fault),
                addr_of!(mica_tests_hw_child_fault_end),
            ),
            Child::Exit => (
                addr_of!(mica_tests_hw_child_exit),
                addr_of!(mica_tests_hw_child_exit_end),
            ),
            Child::Spin => (
                addr_of!(mica_tests_hw_child_spin),
                addr_of!(mica_tests_hw_child_spin_end),
            ),
        };
        crate::lifecycle::code(start, end)
    }
}

pub(crate) fn spawn(child: Child, arg: u64) -> Result<ProcessHandle, &'static str> {
    util::spawn_code(child.code(), arg)
}

/// Case: grants narrow and never widen; bad ranges, wrong kinds, stale
/// handles and missing rights are refused.
pub fn ioport_grants_are_checked() -> TestResult {
    roots()?;
    let com1 = ok(hw::ioport_grant(IOPORTS_ROOT, COM1, 8), "grant COM1")?;
    let bad: [(IoPorts, u64, u64, Error, &str); 8] = [
        (
            com1,
            COM1,
            9,
            Error::PermissionDenied,
            "a grant one port wider than its parent",
        ),
        (
            com1,
            COM1 - 1,
            1,
            Error::PermissionDenied,
            "a grant of the port below its parent",
        ),
        (
            com1,
            COM1 + 8,
            1,
            Error::PermissionDenied,
            "a grant of the port above its parent",
        ),
        (com1, COM1, 0, Error::InvalidArgument, "an empty grant"),
        (
            IOPORTS_ROOT,
            0xffff,
            2,
            Error::InvalidArgument,
            "a grant past port 0xffff",
        ),
        (
            IOPORTS_ROOT,
            u64::MAX,
            2,
            Error::InvalidArgument,
            "a grant whose end wraps",
        ),
        (
            IOPORTS_ROOT,
            1 << 16,
            1,
            Error::InvalidArgument,
            "a grant starting past 0xffff",
        ),
        (
            IOPORTS_ROOT,
            0,
            u64::MAX,
            Error::InvalidArgument,
            "a grant of 2^64 ports",
        ),
    ];
    for (h, first, count, want, what) in bad {
        expect_err(ports(hw::ioport_grant(h, first, count)), &[want], what)?;
    }
    let last = ok(
        hw::ioport_grant(com1, COM1 + 7, 1),
        "grant COM1's last port",
    )?;
    let all = ok(
        hw::ioport_grant(IOPORTS_ROOT, 0, 1 << 16),
        "grant every port",
    )?;
    // Wrong kinds: a notification is no port range, a port range no IRQ.
    let n = ok(ipc::notification_create(), "notification_create")?;
    expect_err(
        ports(hw::ioport_grant(IoPorts(n.0), 0, 1)),
        &[Error::WrongType],
        "grant from a notification",
    )?;
    expect_err(
        unit(hw::ioport_enable(IoPorts(n.0))),
        &[Error::WrongType],
        "enable of a notification",
    )?;
    expect_err(
        unit(hw::irq_ack(Irq(com1.0))),
        &[Error::WrongType],
        "irq_ack of a port range",
    )?;
    // Without IO: a copy with DUPLICATE only can neither grant nor enable.
    let weak = IoPorts(ok(
        ipc::handle_dup(com1.0, rights::DUPLICATE, 0),
        "dup without IO",
    )?);
    expect_err(
        ports(hw::ioport_grant(weak, COM1, 1)),
        &[Error::PermissionDenied],
        "grant without IO",
    )?;
    expect_err(
        unit(hw::ioport_enable(weak)),
        &[Error::PermissionDenied],
        "enable without IO",
    )?;
    // Stale: closed handles name nothing.
    for h in [weak, last, all] {
        ok(ipc::handle_close(h.0), "close")?;
        expect_err(
            ports(hw::ioport_grant(h, COM1, 1)),
            &[Error::BadHandle],
            "grant from a closed handle",
        )?;
        expect_err(
            unit(hw::ioport_enable(h)),
            &[Error::BadHandle],
            "enable of a closed handle",
        )?;
    }
    expect_err(
        ports(hw::ioport_grant(IoPorts(u32::MAX), 0, 1)),
        &[Error::BadHandle],
        "grant from a bogus number",
    )?;
    ok(ipc::handle_close(n.0), "close")?;
    ok(ipc::handle_close(com1.0), "close")?;
    Ok(())
}

/// Runs the io child with the COM1 grant and probe port `probe`.
fn io_child(probe: u64) -> Result<Status, &'static str> {
    let com1 = ok(hw::ioport_grant(IOPORTS_ROOT, COM1, 8), "grant COM1")?;
    let pid = spawn(Child::Io, probe)?;
    let given = ipc::handle_give(pid, com1.0, rights::IO);
    let _ = ipc::handle_close(com1.0);
    ok(given, "handle_give")?;
    wait(pid)
}

/// Case: a child granted COM1's eight ports reads back the scratch register
/// through its I/O bitmap (also after a sleep switched it out and back in),
/// and faults (#GP) on the ports just outside; a process started right
/// after it, without a grant, faults on COM1 (the bitmap is switched out
/// with its owner).
pub fn ioport_grant_gives_exactly_its_ports() -> TestResult {
    roots()?;
    let cases: [(u64, Status, &str); 3] = [
        (
            0,
            Status::Exited(0),
            "in/out on a granted port did not work",
        ),
        (
            COM1 + 8,
            Status::Faulted(13),
            "the port just above the grant was allowed",
        ),
        (
            COM1 - 1,
            Status::Faulted(13),
            "the port just below the grant was allowed",
        ),
    ];
    for (probe, want, what) in cases {
        let st = io_child(probe)?;
        if st != want {
            note!("probe {probe:#x}: child ended with {st:?}, expected {want:?}");
            return Err(what);
        }
    }
    for round in 0..4 {
        if io_child(0)? != Status::Exited(0) {
            return Err("in/out on a granted port did not work");
        }
        let st = wait(spawn(Child::IoNone, 0)?)?;
        if st != Status::Faulted(13) {
            note!("round {round}: the child without a grant ended with {st:?}");
            return Err("a process without a grant used the previous process's ports");
        }
    }
    Ok(())
}

/// Case: `process_notify` signals its bits when a process exits, when it
/// is killed, and at once for one that ended already; the wait that
/// follows finds the status. Refusals for wrong kinds, rights and bits.
pub fn process_notify_signals_exit_and_kill() -> TestResult {
    let n = ok(ipc::notification_create(), "notification_create")?;
    let a = spawn(Child::Spin, 0)?;
    let b = spawn(Child::Spin, 0)?;
    ok(hw::process_notify(a, n, 1), "notify a")?;
    ok(hw::process_notify(b, n, 2), "notify b")?;
    expect_err(
        unit(hw::process_notify(a, n, 0)),
        &[Error::InvalidArgument],
        "notify with no bits",
    )?;
    expect_err(
        unit(hw::process_notify(a, Notification(a.raw()), 1)),
        &[Error::WrongType],
        "a process as notification",
    )?;
    expect_err(
        unit(hw::process_notify(ProcessHandle::from_raw(n.0), n, 1)),
        &[Error::WrongType],
        "a notification as process",
    )?;
    let kill_only = ok(ipc::handle_dup(a.raw(), rights::KILL, 0), "dup KILL")?;
    expect_err(
        unit(hw::process_notify(ProcessHandle::from_raw(kill_only), n, 1)),
        &[Error::PermissionDenied],
        "notify without WAIT",
    )?;
    let _ = ipc::handle_close(kill_only);
    expect_err(
        ntf_wait(n, 20),
        &[Error::TimedOut],
        "a signal before anything ended",
    )?;
    ok(sys::process_kill(b), "kill b")?;
    match ntf_wait(n, 2000) {
        Ok(2) => {}
        other => {
            note!("after killing b: {other:?}");
            return Err("a killed process did not signal its exit notification");
        }
    }
    if wait(b)? != Status::Exited(-1) {
        return Err("b's status was not exited(-1)");
    }
    ok(sys::process_kill(a), "kill a")?;
    match ntf_wait(n, 2000) {
        Ok(1) => {}
        other => {
            note!("after killing a: {other:?}");
            return Err("the second exit notification did not come");
        }
    }
    let _ = wait(a)?;
    // A process that exits by itself; registered after it ended: at once.
    let c = spawn(Child::Exit, 7)?;
    let d = ok(ipc::handle_dup(c.raw(), rights::WAIT, 0), "dup WAIT")?;
    if wait(c)? != Status::Exited(7) {
        return Err("the exiting child's status was not exited(7)");
    }
    ok(
        hw::process_notify(ProcessHandle::from_raw(d), n, 4),
        "notify an ended process",
    )?;
    match ntf_wait(n, 0) {
        Ok(4) => {}
        other => {
            note!("notify of an ended process: {other:?}");
            return Err("a process that had ended was not signalled at once");
        }
    }
    let _ = ipc::handle_close(d);
    ok(ipc::handle_close(n.0), "close")?;
    Ok(())
}

/// Case: a killed process's handles are closed: the endpoint whose only
/// receive handle it held is dead, so a call on it fails with `NotDelivered`
/// instead of waiting.
pub fn dead_process_handles_are_closed() -> TestResult {
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let send = ok(ipc::handle_dup(ep.0, rights::SEND, 0), "dup SEND")?;
    let c = spawn(Child::Spin, 0)?;
    ok(
        ipc::handle_give(c, ep.0, rights::RECV | rights::SEND),
        "give the receive side",
    )?;
    ok(ipc::handle_close(ep.0), "close own receive side")?;
    ok(sys::process_kill(c), "kill")?;
    let _ = wait(c)?;
    let r = ipc::call(
        ipc::Endpoint(send),
        &ipc::Message::default(),
        Some(1_000_000),
    );
    let _ = ipc::handle_close(send);
    match r {
        Err(Error::NotDelivered) => Ok(()),
        other => {
            note!("call after the receiver's death: {other:?}");
            Err("a dead process's receive handle was not closed")
        }
    }
}
