//! Hardware access for ring-3 drivers (hw, issue 11): exit notification,
//! I/O-port grants and port I/O, IRQs bound to notifications.
//!
//! init finds its hardware roots at the numbers [`abi::boot_handles`] names
//! and hands them on with [`handle_give`](crate::ipc::handle_give).

use crate::ipc::Notification;
use crate::task::{ProcessHandle, ThreadHandle};
use abi::{decode_result, Error, Sysnum};
use core::arch::asm;

/// A handle to a range of I/O ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoPorts(pub u32);

/// A handle to the IRQ root or to one bound line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Irq(pub u32);

/// init's I/O-port root (every port).
pub const IOPORTS_ROOT: IoPorts = IoPorts(abi::boot_handles::IOPORTS);
/// init's IRQ root.
pub const IRQ_ROOT: Irq = Irq(abi::boot_handles::IRQS);

fn sys4(n: Sysnum, a0: u64, a1: u64, a2: u64, a3: u64) -> Result<u64, Error> {
    // SAFETY: the hw syscalls write no user memory.
    decode_result(unsafe { crate::sys::syscall6(n, a0, a1, a2, a3, 0, 0) })
}

/// Signals `bits` on `ntf` when the process `p` names ends.
pub fn process_notify(p: ProcessHandle, ntf: Notification, bits: u64) -> Result<(), Error> {
    sys4(Sysnum::ProcessNotify, p.raw() as u64, ntf.0 as u64, bits, 0).map(|_| ())
}

/// A handle to ports `first..first + count` of `h`.
pub fn ioport_grant(h: IoPorts, first: u64, count: u64) -> Result<IoPorts, Error> {
    sys4(Sysnum::IoportGrant, h.0 as u64, first, count, 0).map(|r| IoPorts(r as u32))
}

/// Lets this process's threads use `h`'s ports.
pub fn ioport_enable(h: IoPorts) -> Result<(), Error> {
    sys4(Sysnum::IoportEnable, h.0 as u64, 0, 0, 0).map(|_| ())
}

/// Binds ISA line `line` to signal `bits` on `ntf`.
pub fn irq_bind(root: Irq, line: u64, ntf: Notification, bits: u64) -> Result<Irq, Error> {
    sys4(Sysnum::IrqBind, root.0 as u64, line, ntf.0 as u64, bits).map(|r| Irq(r as u32))
}

/// Unmasks `irq`'s line after its interrupt was handled.
pub fn irq_ack(irq: Irq) -> Result<(), Error> {
    sys4(Sysnum::IrqAck, irq.0 as u64, 0, 0, 0).map(|_| ())
}

/// Reads a byte from `port`. A port this process has not enabled is a #GP.
pub fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: port input touches no memory of this program; a port not in
    // the process's I/O bitmap faults before it has any effect.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Writes a byte to `port`. A port this process has not enabled is a #GP.
pub fn outb(port: u16, v: u8) {
    // SAFETY: as in `inb`; what the device does with the byte is the
    // caller's business, never this program's memory.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags))
    };
}

/// Stops the thread `t` names before it next runs user code.
pub fn thread_suspend(t: ThreadHandle) -> Result<(), Error> {
    sys4(Sysnum::ThreadSuspend, t.raw() as u64, 0, 0, 0).map(|_| ())
}

/// Undoes [`thread_suspend`].
pub fn thread_resume(t: ThreadHandle) -> Result<(), Error> {
    sys4(Sysnum::ThreadResume, t.raw() as u64, 0, 0, 0).map(|_| ())
}

/// Makes `ep` (`None`: nobody) the fault handler of the process `p` names:
/// its threads' faults become [`abi::fault`] messages.
pub fn process_set_fault_ep(
    p: ProcessHandle,
    ep: Option<crate::ipc::Endpoint>,
) -> Result<(), Error> {
    let ep = ep.map_or(0, |e| e.0 as u64);
    sys4(Sysnum::ProcessSetFaultEp, p.raw() as u64, ep, 0, 0).map(|_| ())
}

/// As [`process_set_fault_ep`] with `ep`, its messages badged `badge`
/// (non-zero; `ep` unbadged, with DUPLICATE): no copy of `ep` to make and
/// close.
pub fn process_set_fault_ep_badged(
    p: ProcessHandle,
    ep: crate::ipc::Endpoint,
    badge: u64,
) -> Result<(), Error> {
    sys4(
        Sysnum::ProcessSetFaultEp,
        p.raw() as u64,
        ep.0 as u64,
        badge,
        0,
    )
    .map(|_| ())
}
