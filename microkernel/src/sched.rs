//! Scheduling and the fate of faulting user threads.

use crate::arch::trap::TrapFrame;

/// A ring-3 thread faulted. No user threads exist before the ring-3 work lands,
/// so this can only be reached by a kernel bug that fakes a user frame.
pub fn user_fault(frame: &mut TrapFrame) {
    let (short, long) = crate::arch::trap::exception_name(frame.vector);
    crate::panic::die(
        format_args!(
            "{short} {long} from ring 3 with no user threads (RIP=0x{:x})",
            frame.rip
        ),
        Some(frame),
    )
}
