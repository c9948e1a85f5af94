//! Multiprocessor control. Until application processors are started, the boot
//! CPU is the only one, so there is nobody to stop.

/// Asks every other CPU to halt (panic path).
pub fn stop_others() {}
