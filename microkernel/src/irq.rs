//! Hardware interrupts (vectors 32-255).

use crate::arch::trap::TrapFrame;

/// Handles an interrupt vector.
pub fn dispatch(frame: &mut TrapFrame) {
    log::warn!(
        "unexpected interrupt vector {} at RIP 0x{:x}",
        frame.vector,
        frame.rip
    );
}
