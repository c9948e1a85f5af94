//! Everything x86_64-specific. Portable kernel code reaches the hardware only
//! through this module.

pub mod apic;
pub mod boot;
pub mod context;
pub mod cpu;
pub mod cpustate;
pub mod fpu;
pub mod gdt;
pub mod idt;
pub mod ioapic;
pub mod madt;
pub mod percpu;
pub mod pic;
pub mod probe;
pub mod qemu;
pub mod serial;
pub mod syscall;
pub mod trampoline;
pub mod trap;
pub mod uaccess;
