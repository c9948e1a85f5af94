//! Leaving QEMU with a verdict through the `isa-debug-exit` device that the test
//! runner attaches (see [`abi::debug_exit`]). On real hardware, or when the
//! device is absent, the write is ignored and the CPU halts.

use x86_64::instructions::port::Port;

/// Exits QEMU reporting success (or failure), then halts forever.
pub fn exit(success: bool) -> ! {
    let code = if success {
        abi::debug_exit::SUCCESS
    } else {
        abi::debug_exit::FAILURE
    };
    // SAFETY: writing the debug-exit port only asks the emulator to exit; on a
    // machine without the device the write goes nowhere.
    unsafe { Port::<u32>::new(abi::debug_exit::PORT).write(code) };
    super::cpu::halt_forever()
}
