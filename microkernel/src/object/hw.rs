//! Hardware objects for ring-3 drivers (hw, issue 11): I/O-port grants and
//! IRQ lines bound to notifications.
//!
//! - [`IoPorts`]: a range of ports. init gets the root (all 65536) at boot;
//!   `ioport_grant` makes narrower ranges, `ioport_enable` opens a range in
//!   the caller's I/O bitmap (`arch::iopb`).
//! - [`IrqObj`]: the root (any ISA line) or one bound line. While a line is
//!   bound, its interrupt masks the line, signals the bound notification and
//!   is acknowledged to the local APIC ([`irq_arrived`]); `irq_ack` unmasks.
//!   The last handle to a bound line going away masks it and frees the line
//!   for the next `irq_bind` ([`IrqLine`]'s `Drop`).

use super::kobject::ObjBox;
use super::notification::NotificationObj;
use crate::arch::ioapic;
use abi::Error;
use alloc::sync::Arc;

/// A notification object (what `ipc::slowpath` calls `Ntf`).
pub type Ntf = Arc<ObjBox<NotificationObj>>;
/// An endpoint object (what `ipc::slowpath` calls `Ep`).
pub type Ep = Arc<ObjBox<super::endpoint::EndpointObj>>;

/// Ports `first..first + count` (`count` >= 1, `first + count` <= 65536).
pub struct IoPorts {
    pub first: u16,
    pub count: u32,
}

impl IoPorts {
    /// Every port.
    pub const ALL: IoPorts = IoPorts {
        first: 0,
        count: crate::arch::iopb::PORTS as u32,
    };

    /// The sub-range `first..first + count` of this one: `InvalidArgument`
    /// for an empty range or one that wraps past port 0xffff,
    /// `PermissionDenied` for one not inside this range.
    pub fn narrow(&self, first: u64, count: u64) -> Result<IoPorts, Error> {
        let end = first.checked_add(count).ok_or(Error::InvalidArgument)?;
        if count == 0 || end > crate::arch::iopb::PORTS as u64 {
            return Err(Error::InvalidArgument);
        }
        let own_end = u64::from(self.first) + u64::from(self.count);
        if first < u64::from(self.first) || end > own_end {
            return Err(Error::PermissionDenied);
        }
        Ok(IoPorts {
            first: first as u16,
            count: count as u32,
        })
    }
}

/// An IRQ object: the root or one bound line.
pub enum IrqObj {
    /// May bind any ISA line.
    Root,
    /// One bound line.
    Line(IrqLine),
}

/// A bound ISA line; dropping it unbinds the line.
pub struct IrqLine {
    pub line: u8,
}

/// What a bound line signals, and where it is routed.
struct Binding {
    ntf: Ntf,
    bits: u64,
    apic_id: u32,
}

/// The bindings, one per ISA line. Each lock is taken with interrupts off
/// (syscalls, and the interrupt itself), and never while holding another.
static BOUND: [spin::Mutex<Option<Binding>>; abi::IRQ_LINES as usize] =
    [const { spin::Mutex::new(None) }; abi::IRQ_LINES as usize];

/// Binds ISA line `line` to signal `bits` on `ntf`, routes it to this CPU
/// and unmasks it. The caller checked `line` and `bits`. `Busy` when the
/// line is bound already, `NoDevice` when no I/O APIC serves it.
pub fn bind(line: u8, ntf: Ntf, bits: u64) -> Result<IrqLine, Error> {
    let apic_id = crate::arch::percpu::this()
        .apic_id()
        .ok_or(Error::NoDevice)?;
    let mut slot = BOUND[line as usize].lock();
    if slot.is_some() {
        return Err(Error::Busy);
    }
    // Masked until now (boot masks every entry; an unbind masks it again).
    ioapic::route_isa_irq(line, apic_id).map_err(|_| Error::NoDevice)?;
    *slot = Some(Binding { ntf, bits, apic_id });
    Ok(IrqLine { line })
}

/// Unmasks bound line `line` (`irq_ack`).
pub fn ack(line: u8) -> Result<(), Error> {
    let slot = BOUND[line as usize].lock();
    let b = slot.as_ref().ok_or(Error::NotFound)?;
    ioapic::route_isa_irq(line, b.apic_id).map_err(|_| Error::NoDevice)
}

impl Drop for IrqLine {
    fn drop(&mut self) {
        let old = {
            let mut slot = BOUND[self.line as usize].lock();
            ioapic::mask_isa_irq(self.line);
            slot.take()
        };
        // The notification reference goes outside the line's lock.
        drop(old);
    }
}

/// ISA line `line`'s interrupt arrived (interrupt context, before the EOI):
/// if it is bound, masks it and calls `signal` with its notification and
/// bits (the IPC layer's signal, passed down by the interrupt layer); false
/// when nobody claims it.
pub fn irq_arrived(line: u8, signal: impl FnOnce(&Ntf, u64)) -> bool {
    let Some(slot) = BOUND.get(line as usize) else {
        return false;
    };
    let g = slot.lock();
    let Some(b) = g.as_ref() else {
        return false;
    };
    // Masked before the EOI: a level-triggered device that still asserts
    // the line cannot interrupt again until the driver acknowledges.
    ioapic::mask_isa_irq(line);
    // Signalled under the line's lock, so no reference to the notification
    // is taken (and none dropped) in interrupt context. Lock order: line,
    // then the notification's (nothing takes them the other way round).
    signal(&b.ntf, b.bits);
    true
}
