//! Everything x86_64-specific. Portable kernel code reaches the hardware only
//! through this module.

pub mod boot;
pub mod cpu;
pub mod gdt;
pub mod idt;
pub mod percpu;
pub mod probe;
pub mod qemu;
pub mod serial;
pub mod trap;
