//! What init gives the console server (issue 11 item 4): exactly what
//! drives COM1, never a hardware root (least privilege).
//!
//! init makes the three objects once, at its first start of the console,
//! and keeps them: COM1's eight ports (a grant cut from its I/O-port root),
//! a notification, and IRQ 4 bound to that notification. init binds the
//! line itself (the console would need the IRQ root, every line, to bind
//! it), and keeping the binding across restarts means a console that died
//! with the line masked is replaced by one that acknowledges it at start;
//! nothing is rebound. Each instance gets copies, in the order of
//! [`abi::boot_handles::console`] right after the name service: the ports
//! (`IO`), the line (`IO`: acknowledge only) and the notification (`WAIT`:
//! bind and wait, never signal).
//!
//! init also names the console's controller (gaps2): the shell it starts.
//! Its name service badges the shell's lookups of `console` with
//! [`CONTROL_BADGE`] on top of its pid, and only a handle so badged may
//! name the console's foreground reader (the one client that takes a
//! Ctrl-C: `libipc::console`, "Who takes a Ctrl-C").

use abi::boot_handles::console as given;
use abi::rights;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use libipc::console::{CONTROL_BADGE, NAME};
use libipc::hw::{self, IOPORTS_ROOT, IRQ_ROOT};
use libipc::ipc;
use libipc::sys::ProcessHandle;

/// The three handles (0: not made yet). Only the name-service thread
/// starts servers, so it is the only reader and writer: Relaxed.
static HANDLES: [AtomicU32; 3] = [AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0)];

/// COM1's port grant, IRQ 4's line and its notification (made on first use).
fn handles() -> Result<[u32; 3], libipc::Error> {
    let made = HANDLES.each_ref().map(|h| h.load(Ordering::Relaxed));
    if made[2] != 0 {
        return Ok(made);
    }
    let ports = hw::ioport_grant(IOPORTS_ROOT, u64::from(given::COM1), 8)?;
    let ntf = ipc::notification_create()?;
    let irq = hw::irq_bind(IRQ_ROOT, given::COM1_IRQ, ntf, given::IRQ_BIT)?;
    let h = [ports.0, irq.0, ntf.0];
    for (slot, v) in HANDLES.iter().zip(h) {
        slot.store(v, Ordering::Relaxed);
    }
    Ok(h)
}

/// Gives the console instance `p` its three handles (after the name
/// service, which `names::give` gave first).
pub fn give(p: ProcessHandle) -> Result<(), libipc::Error> {
    let [ports, irq, ntf] = handles()?;
    let a = ipc::handle_give(p, ports, rights::IO)?;
    let b = ipc::handle_give(p, irq, rights::IO)?;
    let c = ipc::handle_give(p, ntf, rights::WAIT)?;
    if [a, b, c] != [given::PORTS, given::IRQ, given::NOTIFY] {
        return Err(libipc::Error::InvalidArgument);
    }
    Ok(())
}

/// The name-service badge of the console's controller (0: none).
static CONTROLLER: AtomicU64 = AtomicU64::new(0);

/// Makes the client with name-service badge `badge` (the shell's, before
/// it starts) the console's controller.
pub fn set_controller(badge: u64) {
    // Release: pairs with `lookup_badge`'s Acquire on the name-service
    // thread (the shell's first lookup comes after this store anyway,
    // through the kernel's IPC; the pair says so without relying on it).
    CONTROLLER.store(badge, Ordering::Release);
}

/// The badge a lookup of `name` by the client with `badge` puts on its
/// handle: the controller's bit on top for the controller's `console`.
pub fn lookup_badge(name: &str, badge: u64) -> u64 {
    // Acquire: pairs with `set_controller`'s Release.
    if name == NAME && badge != 0 && badge == CONTROLLER.load(Ordering::Acquire) {
        badge | CONTROL_BADGE
    } else {
        badge
    }
}
