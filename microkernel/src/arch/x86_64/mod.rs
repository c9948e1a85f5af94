//! Everything x86_64-specific. Portable kernel code reaches the hardware only
//! through this module.
//!
//! This is layer 0 (DESIGN.md 6a): it names nothing above it, with one
//! exception.
//!
//! # Entry up-calls
//! The entry stubs name the Rust code they enter with `sym`; these are the
//! only paths from here to a higher layer (`scripts/layers.sh` reads this
//! list):
//! - `sym crate::kernel_entry` (boot.rs: the boot CPU's 64-bit entry)
//! - `sym crate::interrupt::trap_dispatch` (idt.rs: every interrupt and exception)
//! - `sym crate::syscall::SYSCALL_TABLE` (syscall.rs: every syscall, one entry per number, then `syscall_unknown` for any number past them)
//! - `sym crate::lifecycle::return_to_user_work` (idt.rs: deferred work)
//! - `sym crate::syscall::syscall_return_work` (syscall.rs: deferred work, with the frame)
//! - `sym crate::sched::finish_switch` (context.rs: the first code after a switch)
//! - `sym crate::syscall::frameless_resume` (frameless.rs: a frameless IPC wait's end, which runs `finish_switch` first)
//! - `sym crate::syscall::frameless_handoff_cold` (frameless.rs: the cold end of the hand-off between frameless threads, whose common resume is the hand-off's own assembly)
//!
//! An AP enters `main.rs`'s `ap_main` through an address `smp` passes down
//! to the trampoline, not through a path named here.

pub mod apic;
pub mod boot;
pub mod context;
pub mod cpu;
pub mod cpustate;
pub mod fpu;
pub mod frameless;
pub mod gdt;
pub mod idt;
pub mod ioapic;
pub mod iopb;
pub mod madt;
pub mod mmu;
pub mod percpu;
pub mod pic;
pub mod probe;
pub mod qemu;
pub mod serial;
pub mod syscall;
pub mod testhooks;
pub mod tlb;
pub mod trampoline;
pub mod trap;
pub mod uaccess;
