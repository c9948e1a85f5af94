//! The per-CPU GDT and TSS.
//!
//! Descriptor order is dictated by `syscall`/`sysret` (see
//! [`super::syscall`]): STAR's kernel base 0x08 gives CS 0x08 / SS 0x10 on entry,
//! and its user base 0x10 gives SS 0x18|3 / CS 0x20|3 on `sysretq`.

use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::{lgdt, load_tss};
use x86_64::structures::gdt::SegmentSelector;
use x86_64::structures::DescriptorTablePointer;
use x86_64::{PrivilegeLevel, VirtAddr};

/// Kernel code selector.
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data/stack selector.
pub const KERNEL_DS: u16 = 0x10;
/// User data/stack selector (RPL 3).
pub const USER_DS: u16 = 0x18 | 3;
/// User 64-bit code selector (RPL 3).
pub const USER_CS: u16 = 0x20 | 3;
/// The TSS selector (a 16-byte system descriptor).
pub const TSS_SEL: u16 = 0x28;

/// IST slot (1-based, as in the IDT) for double faults.
pub const IST_DOUBLE_FAULT: u8 = 1;
/// IST slot for NMIs.
pub const IST_NMI: u8 = 2;
/// IST slot for machine checks.
pub const IST_MACHINE_CHECK: u8 = 3;
/// IST slot for debug exceptions.
pub const IST_DEBUG: u8 = 4;
/// How many IST stacks each CPU has.
pub const IST_COUNT: usize = 4;

/// One CPU's descriptor table.
#[repr(C, align(16))]
pub struct Gdt {
    entries: [u64; 7],
}

const CODE64_KERNEL: u64 = 0x00af_9a00_0000_ffff; // P, DPL0, code, L
const DATA_KERNEL: u64 = 0x00cf_9200_0000_ffff; // P, DPL0, data, writable
const DATA_USER: u64 = 0x00cf_f200_0000_ffff; // P, DPL3, data, writable
const CODE64_USER: u64 = 0x00af_fa00_0000_ffff; // P, DPL3, code, L

impl Gdt {
    /// An empty table (filled by [`Gdt::fill`]).
    pub const fn empty() -> Gdt {
        Gdt { entries: [0; 7] }
    }

    /// Writes the kernel/user segments and a TSS descriptor for the TSS at
    /// `base` whose last byte is at `base + limit` (the hardware TSS plus
    /// its I/O bitmap, `iopb`).
    pub fn fill(&mut self, base: u64, limit: u64) {
        let tss_low = (limit & 0xffff)
            | ((base & 0xff_ffff) << 16)
            | (0x9 << 40) // type: available 64-bit TSS
            | (1 << 47) // present
            | (((limit >> 16) & 0xf) << 48)
            | (((base >> 24) & 0xff) << 56);
        self.entries = [
            0,
            CODE64_KERNEL,
            DATA_KERNEL,
            DATA_USER,
            CODE64_USER,
            tss_low,
            base >> 32,
        ];
    }

    /// Loads this table, reloads every segment register and loads the TSS.
    ///
    /// # Safety
    /// `self` must have been filled and stay at this address forever (the CPU
    /// keeps pointing at it), and its TSS likewise.
    pub unsafe fn load(&'static self) {
        let ptr = DescriptorTablePointer {
            limit: (core::mem::size_of::<Gdt>() - 1) as u16,
            base: VirtAddr::new(self.entries.as_ptr() as u64),
        };
        // SAFETY: the table is filled, 'static, and has the selectors we load.
        unsafe {
            lgdt(&ptr);
            CS::set_reg(SegmentSelector::new(KERNEL_CS >> 3, PrivilegeLevel::Ring0));
            SS::set_reg(SegmentSelector::new(KERNEL_DS >> 3, PrivilegeLevel::Ring0));
            DS::set_reg(SegmentSelector(0));
            ES::set_reg(SegmentSelector(0));
            load_tss(SegmentSelector::new(TSS_SEL >> 3, PrivilegeLevel::Ring0));
        }
    }
}
