//! hw (issue 11): exit notification, I/O-port grants and the I/O bitmap,
//! IRQs bound to notifications — each with its hostile inputs.
//!
//! init gives this program its hardware roots right after the spawn
//! ([`wait_for_roots`], first thing in `main`). Children are tiny flat
//! images built on the fly, as in `process.rs`.

use crate::note;
use crate::util::{self, expect_err, ok, wait_status as wait, TestResult, CHILD_TEXT};
use abi::status::Status;
use abi::{rights, Error, Sysnum};
use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use libipc::hw::{self, IoPorts, Irq};

/// The hardware roots init gives this program (after the name service).
const IOPORTS_ROOT: IoPorts = IoPorts(abi::boot_handles::tests::IOPORTS);
const IRQ_ROOT: Irq = Irq(abi::boot_handles::tests::IRQS);
use libipc::ipc::{self, Notification};
use libipc::sys::{self, ProcessHandle, ThreadHandle};

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
    "mica_tests_hw_child_spin:",
    "pause",
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
        // SAFETY: both labels are in the same read-only section, `end` after
        // `start`, and the bytes between them never change.
        unsafe { core::slice::from_raw_parts(start, end.offset_from(start) as usize) }
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

fn cmos_read(reg: u8) -> u8 {
    hw::outb(CMOS as u16, 0x80 | reg); // bit 7: NMI stays disabled while we poke
    hw::inb(CMOS as u16 + 1)
}

fn cmos_write(reg: u8, v: u8) {
    hw::outb(CMOS as u16, 0x80 | reg);
    hw::outb(CMOS as u16 + 1, v);
}

/// Waits up to `ms` for `n`; the bits, or the error.
fn ntf_wait(n: Notification, ms: u32) -> Result<u64, Error> {
    ipc::wait(n, Some(ms * 1000))
}

/// Case: the RTC's periodic interrupt (IRQ 8, programmed through a grant of
/// ports 0x70-0x71) signals the bound notification; the line stays masked
/// until `irq_ack`; a closed IRQ handle frees the line. Hostile binds
/// refused.
pub fn irq_rtc_signals_and_ack_unmasks() -> TestResult {
    roots()?;
    let cmos = ok(hw::ioport_grant(IOPORTS_ROOT, CMOS, 2), "grant CMOS")?;
    ok(hw::ioport_enable(cmos), "enable CMOS")?;
    let n = ok(ipc::notification_create(), "notification_create")?;
    const BIT: u64 = 1 << 5;
    // Hostile binds first.
    let bad: [(Irq, u64, u32, u64, Error, &str); 7] = [
        (IRQ_ROOT, 16, n.0, BIT, Error::InvalidArgument, "line 16"),
        (
            IRQ_ROOT,
            u64::MAX,
            n.0,
            BIT,
            Error::InvalidArgument,
            "line 2^64-1",
        ),
        (
            IRQ_ROOT,
            2,
            n.0,
            BIT,
            Error::InvalidArgument,
            "the cascade line",
        ),
        (IRQ_ROOT, RTC_IRQ, n.0, 0, Error::InvalidArgument, "no bits"),
        (
            Irq(cmos.0),
            RTC_IRQ,
            n.0,
            BIT,
            Error::WrongType,
            "a port range as IRQ root",
        ),
        (
            IRQ_ROOT,
            RTC_IRQ,
            cmos.0,
            BIT,
            Error::WrongType,
            "a port range as notification",
        ),
        (
            Irq(u32::MAX),
            RTC_IRQ,
            n.0,
            BIT,
            Error::BadHandle,
            "a bogus root",
        ),
    ];
    for (root, line, ntf, bits, want, what) in bad {
        expect_err(
            irq(hw::irq_bind(root, line, Notification(ntf), bits)),
            &[want],
            what,
        )?;
    }
    let wait_only = Notification(ok(ipc::handle_dup(n.0, rights::WAIT, 0), "dup WAIT")?);
    expect_err(
        irq(hw::irq_bind(IRQ_ROOT, RTC_IRQ, wait_only, BIT)),
        &[Error::PermissionDenied],
        "a bind to a notification without SIGNAL",
    )?;
    let line = ok(hw::irq_bind(IRQ_ROOT, RTC_IRQ, n, BIT), "irq_bind")?;
    expect_err(
        irq(hw::irq_bind(IRQ_ROOT, RTC_IRQ, n, BIT)),
        &[Error::Busy],
        "a second bind of a bound line",
    )?;
    expect_err(
        irq(hw::irq_bind(line, 3, n, BIT)),
        &[Error::WrongType],
        "a bind through a bound line",
    )?;
    expect_err(
        unit(hw::irq_ack(IRQ_ROOT)),
        &[Error::WrongType],
        "irq_ack of the root",
    )?;
    // The RTC: 1024 Hz periodic interrupt (rate 6), PIE on; reading
    // register C acknowledges the RTC (it raises no new one until then).
    let a = cmos_read(0x0a);
    cmos_write(0x0a, (a & 0xf0) | 0x06);
    let b = cmos_read(0x0b);
    cmos_write(0x0b, b | 0x40);
    let _ = cmos_read(0x0c);
    let r = rtc_rounds(n, line, BIT);
    // PIE off again, whatever happened.
    cmos_write(0x0b, b & !0x40);
    let _ = cmos_read(0x0c);
    r?;
    // Closing the handle frees the line: a new bind succeeds.
    ok(ipc::handle_close(line.0), "close the IRQ")?;
    expect_err(
        unit(hw::irq_ack(line)),
        &[Error::BadHandle],
        "irq_ack of a closed IRQ",
    )?;
    let again = ok(hw::irq_bind(IRQ_ROOT, RTC_IRQ, n, BIT), "bind after close")?;
    ok(ipc::handle_close(again.0), "close")?;
    for h in [wait_only.0, n.0, cmos.0] {
        ok(ipc::handle_close(h), "close")?;
    }
    Ok(())
}

fn rtc_rounds(n: Notification, line: Irq, bit: u64) -> TestResult {
    for round in 0..3 {
        match ntf_wait(n, 1000) {
            Ok(bits) if bits & bit != 0 => {}
            other => {
                note!("round {round}: wait gave {other:?}");
                return Err("the RTC interrupt did not signal the notification");
            }
        }
        let _ = cmos_read(0x0c);
        if round == 1 {
            // Not acknowledged: the line stays masked although the RTC
            // raises the next interrupt in ~1 ms. One interrupt may already
            // be in flight past the I/O APIC (delivered to the local APIC
            // before the handler masked the line: tests-smp8 saw one), so
            // let it land and drop it first.
            sleep_ms(20);
            let _ = ntf_wait(n, 0);
            let _ = cmos_read(0x0c);
            match ntf_wait(n, 50) {
                Err(Error::TimedOut) => {}
                other => {
                    note!("unacknowledged line: wait gave {other:?}");
                    return Err("the line was not masked until irq_ack");
                }
            }
            let _ = cmos_read(0x0c);
        }
        ok(hw::irq_ack(line), "irq_ack")?;
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

// --- thread_suspend / thread_resume ---

static SPINS: AtomicU64 = AtomicU64::new(0);
static WOKEN: AtomicU64 = AtomicU64::new(0);
static SELF_DONE: AtomicU64 = AtomicU64::new(0);

/// Counts for ever (until killed).
extern "C" fn spinner(_: u64) -> ! {
    loop {
        SPINS.fetch_add(1, Ordering::Relaxed);
        core::hint::spin_loop();
    }
}

/// Waits on notification `arg`, then counts the wake-up; for ever.
extern "C" fn ntf_waiter(arg: u64) -> ! {
    loop {
        if ipc::wait(Notification(arg as u32), None).is_ok() {
            WOKEN.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Suspends itself through the handle at `*arg` (set before the parent lets
/// it go), then records that it was resumed.
extern "C" fn self_suspender(arg: u64) -> ! {
    // SAFETY: the parent keeps the AtomicU64 alive until it joined this thread.
    let h = unsafe { &*(arg as *const AtomicU64) };
    let mut raw = 0;
    while raw == 0 {
        raw = h.load(Ordering::SeqCst);
        sys::yield_now();
    }
    let r = hw::thread_suspend(ThreadHandle::from_raw(raw as u32));
    SELF_DONE.store(if r.is_ok() { 1 } else { 2 }, Ordering::SeqCst);
    sys::thread_exit(0)
}

fn sleep_ms(ms: u64) {
    sys::sleep_ns(ms * 1_000_000);
}

/// Case: a suspended thread does not run — whether it was spinning, blocked
/// in IPC (it stays stopped after the IPC completes) or suspended itself —
/// until resumed; a suspended thread can be killed; refusals for bad
/// handles, kinds and rights.
pub fn thread_suspend_and_resume() -> TestResult {
    // Spinning.
    let t = crate::util::spawn(spinner, 0)?;
    sleep_ms(10);
    ok(hw::thread_suspend(t.handle()), "suspend the spinner")?;
    sleep_ms(10);
    let c1 = SPINS.load(Ordering::Relaxed);
    sleep_ms(50);
    let c2 = SPINS.load(Ordering::Relaxed);
    if c1 != c2 {
        note!("the spinner counted {c1} -> {c2} while suspended");
        return Err("a suspended thread ran");
    }
    ok(hw::thread_resume(t.handle()), "resume the spinner")?;
    sleep_ms(20);
    if SPINS.load(Ordering::Relaxed) == c2 {
        return Err("a resumed thread did not run again");
    }
    // Suspended, then killed: the kill ends it.
    ok(hw::thread_suspend(t.handle()), "suspend again")?;
    sleep_ms(10);
    ok(sys::thread_kill(t.handle()), "kill the suspended thread")?;
    if t.join()? != Status::Exited(-1) {
        return Err("a killed suspended thread did not end with exited(-1)");
    }
    // Blocked in IPC.
    let n = ok(ipc::notification_create(), "notification_create")?;
    let w = crate::util::spawn(ntf_waiter, n.0 as u64)?;
    sleep_ms(10);
    ok(hw::thread_suspend(w.handle()), "suspend the waiter")?;
    let before = WOKEN.load(Ordering::SeqCst);
    ok(ipc::signal(n, 1), "signal")?;
    sleep_ms(50);
    if WOKEN.load(Ordering::SeqCst) != before {
        return Err("a thread suspended in IPC ran when the IPC completed");
    }
    ok(hw::thread_resume(w.handle()), "resume the waiter")?;
    let t0 = sys::clock_ns();
    while WOKEN.load(Ordering::SeqCst) == before && sys::clock_ns() - t0 < 2_000_000_000 {
        sleep_ms(1);
    }
    if WOKEN.load(Ordering::SeqCst) == before {
        return Err("a resumed waiter did not finish its IPC");
    }
    ok(sys::thread_kill(w.handle()), "kill the waiter")?;
    let _ = w.join()?;
    // Hostile handles.
    expect_err(
        unit(hw::thread_suspend(ThreadHandle::from_raw(u32::MAX))),
        &[Error::BadHandle],
        "suspend of a bogus handle",
    )?;
    expect_err(
        unit(hw::thread_resume(ThreadHandle::from_raw(n.0))),
        &[Error::WrongType],
        "resume of a notification",
    )?;
    // Itself.
    let slot = AtomicU64::new(0);
    let s = crate::util::spawn(self_suspender, &slot as *const AtomicU64 as u64)?;
    let weak = ok(
        ipc::handle_dup(s.handle().raw(), rights::WAIT, 0),
        "dup WAIT",
    )?;
    expect_err(
        unit(hw::thread_suspend(ThreadHandle::from_raw(weak))),
        &[Error::PermissionDenied],
        "suspend without KILL",
    )?;
    let _ = ipc::handle_close(weak);
    let own = ok(
        ipc::handle_dup(s.handle().raw(), rights::KILL, 0),
        "dup KILL",
    )?;
    slot.store(u64::from(own), Ordering::SeqCst);
    sleep_ms(50);
    if SELF_DONE.load(Ordering::SeqCst) != 0 {
        return Err("a thread that suspended itself went on");
    }
    ok(
        hw::thread_resume(s.handle()),
        "resume the self-suspended thread",
    )?;
    if s.join()? != Status::Exited(0) || SELF_DONE.load(Ordering::SeqCst) != 1 {
        return Err("a self-suspended thread did not return 0 from its suspend");
    }
    ok(ipc::handle_close(n.0), "close")?;
    Ok(())
}

// --- fault delivery ---

/// The badge the fault handler's endpoint handle carries.
const FAULT_BADGE: u64 = 0xb0b;

/// Starts the fault child in `mode` with `ep` (`None`: no handler) as its
/// fault endpoint, then lets it go.
fn fault_child(mode: u64, ep: Option<ipc::Endpoint>) -> Result<ProcessHandle, &'static str> {
    let pid = spawn(Child::Fault, mode)?;
    ok(hw::process_set_fault_ep(pid, ep), "process_set_fault_ep")?;
    let go = ok(ipc::notification_create(), "notification_create")?;
    let given = ipc::handle_give(pid, go.0, rights::SIGNAL);
    let _ = ipc::handle_close(go.0);
    ok(given, "handle_give")?;
    Ok(pid)
}

/// Receives one fault message on `ep` (2 s at most); checks label, badge
/// and vector.
fn fault_msg(ep: ipc::Endpoint, vector: u64) -> Result<ipc::Message, &'static str> {
    match ipc::recv(ep, Some(2_000_000)) {
        Ok(ipc::Received::Msg { badge, msg }) => {
            let w = msg.words;
            if msg.label != abi::fault::LABEL
                || badge != FAULT_BADGE
                || w[abi::fault::VECTOR] != vector
            {
                note!("label {:#x} badge {badge:#x} words {w:x?}", msg.label);
                return Err("the fault message is not the one expected");
            }
            let rip = w[abi::fault::RIP];
            if !(CHILD_TEXT..CHILD_TEXT + 4096).contains(&rip) || w[abi::fault::TID] == 0 {
                note!("words {w:x?}");
                return Err("the fault message's RIP or tid is wrong");
            }
            Ok(msg)
        }
        other => {
            note!("recv on the fault endpoint: {other:?}");
            Err("no fault message arrived")
        }
    }
}

fn reply_label(label: u32) -> Result<(), Error> {
    ipc::reply(&ipc::Message {
        label,
        words: [0; 6],
    })
}

/// Case: a fault becomes a message to the process's fault endpoint (label,
/// badge, vector, RIP, tid); reply 0 resumes the thread (an `int3` goes
/// on, a `ud2` is retried and delivered again at the same RIP); another
/// label ends the process with `faulted(vector)`; a handler that never
/// replies does not stop a kill; a dead endpoint falls back to today's
/// policy. Hostile arguments refused.
pub fn fault_delivery() -> TestResult {
    let ep = ok(ipc::endpoint_create(), "endpoint_create")?;
    let send = ipc::Endpoint(ok(
        ipc::handle_dup(ep.0, rights::SEND, FAULT_BADGE),
        "dup SEND with badge",
    )?);
    // int3, resumed: the child goes on and exits 5.
    let c = fault_child(0, Some(send))?;
    fault_msg(ep, 3)?;
    ok(reply_label(abi::fault::RESUME), "reply resume")?;
    let st = wait(c)?;
    if st != Status::Exited(5) {
        note!("resumed int3 child: {st:?}");
        return Err("a fault the handler resumed did not go on");
    }
    // ud2: resumed once (retried, delivered again at the same RIP), then
    // refused: the process ends faulted(6).
    let c = fault_child(1, Some(send))?;
    let first = fault_msg(ep, 6)?;
    ok(reply_label(abi::fault::RESUME), "reply resume")?;
    let again = fault_msg(ep, 6)?;
    if again.words[abi::fault::RIP] != first.words[abi::fault::RIP] {
        return Err("a resumed fault was not retried at the same instruction");
    }
    ok(reply_label(1), "reply kill")?;
    let st = wait(c)?;
    if st != Status::Faulted(6) {
        note!("refused ud2 child: {st:?}");
        return Err("a fault the handler refused did not end the process faulted(6)");
    }
    // A handler that never replies: the kill still ends the child.
    let c = fault_child(1, Some(send))?;
    fault_msg(ep, 6)?;
    ok(sys::process_kill(c), "kill the stopped child")?;
    let st = wait(c)?;
    if st != Status::Exited(-1) {
        note!("killed stopped child: {st:?}");
        return Err("a thread stopped in a fault did not end on kill");
    }
    // The late reply finds no caller: refused or ignored, never delivered.
    let _ = reply_label(abi::fault::RESUME);
    // Hostile arguments.
    let c = spawn(Child::Spin, 0)?;
    let recv_only = ipc::Endpoint(ok(ipc::handle_dup(ep.0, rights::RECV, 0), "dup RECV")?);
    let wait_only =
        ProcessHandle::from_raw(ok(ipc::handle_dup(c.raw(), rights::WAIT, 0), "dup WAIT")?);
    let n = ok(ipc::notification_create(), "notification_create")?;
    let bad: [(ProcessHandle, Option<ipc::Endpoint>, Error, &str); 6] = [
        (
            ProcessHandle::from_raw(u32::MAX),
            Some(send),
            Error::BadHandle,
            "a bogus process",
        ),
        (
            ProcessHandle::from_raw(n.0),
            Some(send),
            Error::WrongType,
            "a notification as process",
        ),
        (
            c,
            Some(ipc::Endpoint(n.0)),
            Error::WrongType,
            "a notification as endpoint",
        ),
        (
            c,
            Some(ipc::Endpoint(u32::MAX)),
            Error::BadHandle,
            "a bogus endpoint",
        ),
        (
            c,
            Some(recv_only),
            Error::PermissionDenied,
            "an endpoint without SEND",
        ),
        (
            wait_only,
            Some(send),
            Error::PermissionDenied,
            "a process without KILL",
        ),
    ];
    for (p, e, want, what) in bad {
        expect_err(unit(hw::process_set_fault_ep(p, e)), &[want], what)?;
    }
    ok(sys::process_kill(c), "kill")?;
    let _ = wait(c)?;
    for h in [recv_only.0, wait_only.raw(), n.0] {
        let _ = ipc::handle_close(h);
    }
    // The handler's endpoint dies (its only receive handle closed): the
    // fault is handled as without a handler.
    ok(ipc::handle_close(ep.0), "close the receive side")?;
    let c = fault_child(1, Some(send))?;
    let st = wait(c)?;
    let _ = ipc::handle_close(send.0);
    if st != Status::Faulted(6) {
        note!("child with a dead handler: {st:?}");
        return Err("a fault with a dead handler was not handled as today");
    }
    Ok(())
}
