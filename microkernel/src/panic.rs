//! Kernel panics and fatal exceptions: print the CPU, the message, the location,
//! the registers (for exceptions) and a frame-pointer backtrace, stop the other
//! CPUs, then leave QEMU with a failure status. And the orderly power-off
//! (init's `shutdown`, or init's end), which stops the other CPUs the same
//! way before its last lines.

use crate::arch::trap::TrapFrame;
use crate::arch::{cpu, percpu, probe, qemu};
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// The CPU that is reporting a fatal error (u32::MAX = none).
static DYING_CPU: AtomicU32 = AtomicU32::new(u32::MAX);
static STOPPING: AtomicBool = AtomicBool::new(false);
/// The APIC id of the CPU that claimed the machine (u32::MAX = none): the
/// NMI handler tells the reporter from the CPUs it stopped by the APIC id,
/// not by `gs:` (an NMI may land where `gs` is still the user's).
static REPORTER_APIC: AtomicU32 = AtomicU32::new(u32::MAX);
/// Other CPUs that took the stop (their NMI handler counts itself here).
static HALTED: AtomicU32 = AtomicU32::new(0);
/// How long the stopping CPU waits for the others to take the stop.
const STOP_WAIT_US: u64 = 200_000;

/// Whether the machine is being stopped (NMIs then mean "halt").
pub fn stopping() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

/// Whether the machine is being stopped by another CPU (NMIs then mean
/// "halt"). On the CPU that stops it an NMI is a stray one (a watchdog, a
/// hardware report, `nmi.atstop`): halting there would end the report, and
/// the power-off, before either happened (break21). SeqCst: on this CPU
/// the loads see its own stores in program order; another CPU that sees
/// `STOPPING` also sees `REPORTER_APIC`, stored before it, and its APIC id
/// differs from the reporter's either way.
pub fn stopped_by_other() -> bool {
    stopping() && REPORTER_APIC.load(Ordering::SeqCst) != crate::arch::apic::local_id()
}

/// The NMI handler's part once another CPU is stopping the machine:
/// counts this CPU as stopped and halts it for good.
pub fn halt_stopped() -> ! {
    HALTED.fetch_add(1, Ordering::SeqCst);
    cpu::halt_forever()
}

/// Marks the machine stopping and NMIs every other CPU, then waits (at
/// most [`STOP_WAIT_US`]) until each has taken the stop: a fixed short
/// delay let a vCPU the host had not run yet go on writing COM1 into the
/// last lines (and a held serial lock could be taken over under it).
fn stop_others() {
    STOPPING.store(true, Ordering::SeqCst);
    crate::arch::apic::stop_others();
    let others = (percpu::online() as u32).saturating_sub(1);
    let mut waited = 0;
    while HALTED.load(Ordering::SeqCst) < others && waited < STOP_WAIT_US {
        crate::arch::apic::delay_us(100);
        waited += 100;
    }
}

/// A test hook run at the start of [`power_off`], registered at boot
/// (`stop.midline=1`, break21: `smp::hold_serial_elsewhere` leaves another
/// CPU mid-line, where the stop halts it; the power-off's line must still
/// start a line, `smoke.sh` case `midline-at-power-off`). Registered by
/// main rather than called from here: `smp` is a higher layer.
static BEFORE_POWER_OFF: spin::Once<fn()> = spin::Once::new();

/// Registers [`BEFORE_POWER_OFF`] (once; later calls are ignored).
pub fn before_power_off(hook: fn()) {
    BEFORE_POWER_OFF.call_once(|| hook);
}

/// Powers the machine off with `success` (init's `shutdown`, or init's
/// end): the other CPUs are stopped first, so nothing a program on them
/// writes to COM1 (the console server drives the port itself) lands inside
/// `line` or the trace dump (seen: "bad" trace frame lines under host
/// load); then `line`, the trace rings, and QEMU is left. A panic racing
/// this halts in `die`, or this halts here: whoever claimed the machine
/// first reports.
pub fn power_off(line: core::fmt::Arguments<'_>, success: bool) -> ! {
    if let Some(hook) = BEFORE_POWER_OFF.get() {
        hook();
    }
    take_machine();
    crate::println!("{line}");
    crate::trace::dump();
    qemu::exit(success)
}

/// The start of a panic report or a power-off: interrupts off, this CPU
/// the machine's last (or halted here for good if another CPU, or a nested
/// fault on this one, is already reporting), the others stopped and the
/// serial lock free. Returns this CPU's number.
fn take_machine() -> percpu::CpuId {
    cpu::disable_interrupts();
    let me = percpu::cpu_id();
    if DYING_CPU
        .compare_exchange(u32::MAX, me.get(), Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        cpu::halt_forever();
    }
    // Before `STOPPING` (stop_others): see `stopped_by_other`.
    REPORTER_APIC.store(crate::arch::apic::local_id(), Ordering::SeqCst);
    stop_others();
    if crate::arch::testhooks::NMI_AT_STOP.load(Ordering::Relaxed) {
        // The `nmi.atstop` hook: a stray NMI on the reporting CPU.
        crate::arch::apic::send_nmi(crate::arch::apic::local_id());
    }
    // Every other CPU was asked to halt, and this CPU holds no serial
    // guard here (a panic inside print would have re-entered `die` and
    // halted above; a power-off comes from a syscall handler or the exit
    // path, outside any print). Breaking the lock keeps a stopped holder
    // from deadlocking the last lines.
    // SAFETY: as explained just above.
    unsafe { crate::logger::SERIAL.force_unlock() };
    // A CPU stopped in the middle of a line (a kernel `println` under the
    // lock just broken, or the console server, which drives COM1 itself
    // and whose lines the kernel cannot see) left it open: the last lines
    // start lines of their own, at the cost of an empty line when none was
    // open (break21, `midline-at-power-off`; a power-off line glued to the
    // console server's "[" was seen too).
    let _ = crate::logger::SERIAL.lock().write_str("\n");
    me
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let msg = info.message();
    match info.location() {
        Some(loc) => die(format_args!("{msg} at {}:{}", loc.file(), loc.line()), None),
        None => die(format_args!("{msg}"), None),
    }
}

/// Reports a fatal kernel error and stops the machine.
pub fn die(msg: core::fmt::Arguments<'_>, frame: Option<&TrapFrame>) -> ! {
    let me = take_machine();
    crate::println!("KERNEL PANIC on CPU {me}: {msg}");
    let rbp = match frame {
        Some(f) => {
            crate::println!(
                "  RAX={:016x} RBX={:016x} RCX={:016x} RDX={:016x}",
                f.rax,
                f.rbx,
                f.rcx,
                f.rdx
            );
            crate::println!(
                "  RSI={:016x} RDI={:016x} RBP={:016x} R8 ={:016x}",
                f.rsi,
                f.rdi,
                f.rbp,
                f.r8
            );
            crate::println!(
                "  R9 ={:016x} R10={:016x} R11={:016x} R12={:016x}",
                f.r9,
                f.r10,
                f.r11,
                f.r12
            );
            crate::println!("  R13={:016x} R14={:016x} R15={:016x}", f.r13, f.r14, f.r15);
            crate::println!("  backtrace:");
            crate::println!("    0x{:016x}", f.rip);
            f.rbp
        }
        None => {
            crate::println!("  backtrace:");
            let rbp: u64;
            // SAFETY: reading RBP has no side effects.
            unsafe { core::arch::asm!("mov {}, rbp", out(reg) rbp, options(nomem, nostack)) };
            rbp
        }
    };
    backtrace(rbp);
    // Best effort: the rings are read without locks or allocation.
    crate::trace::dump();
    qemu::exit(false)
}

/// Walks the frame-pointer chain: [rbp] = caller's rbp, [rbp+8] = return address.
/// Every read goes through a fault-tolerant probe, so a corrupt chain ends the
/// walk instead of faulting again.
fn backtrace(mut rbp: u64) {
    for _ in 0..32 {
        if rbp == 0 || !rbp.is_multiple_of(8) || rbp < 0xffff_8000_0000_0000 {
            break;
        }
        let (Some(next), Some(ret)) = (probe::read_u64(rbp), probe::read_u64(rbp + 8)) else {
            break;
        };
        if ret == 0 {
            break;
        }
        crate::println!("    0x{ret:016x}");
        if next <= rbp {
            break;
        }
        rbp = next;
    }
}
