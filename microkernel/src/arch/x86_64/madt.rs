//! CPU and interrupt-controller discovery from the ACPI MADT, through the
//! `acpi` crate (5.2, no allocator features: it builds on stable). ACPI tables
//! are read through the direct map, so "mapping" a region is an address
//! computation.

use acpi::madt::{Madt, MadtEntry};
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};
use core::ptr::NonNull;

/// The most CPUs recorded.
pub const MAX_FOUND: usize = super::percpu::MAX_CPUS;

/// What the MADT says.
pub struct Topology {
    /// APIC ids of the enabled (or online-capable) processors, in table order.
    pub apic_ids: heapless::Vec<u32, MAX_FOUND>,
    /// Processors beyond [`MAX_FOUND`] that were ignored.
    pub ignored: usize,
    /// I/O APICs: (id, physical address, first GSI).
    pub io_apics: heapless::Vec<(u8, u32, u32), 8>,
    /// ISA IRQ overrides: (irq, gsi, flags).
    pub overrides: heapless::Vec<(u8, u32, u16), 16>,
}

#[derive(Clone, Copy)]
struct DirectMapHandler;

impl AcpiHandler for DirectMapHandler {
    unsafe fn map_physical_region<T>(
        &self,
        physical_address: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        let virt = super::mmu::phys_to_virt(physical_address as u64) as *mut T;
        // SAFETY: the direct map covers all physical memory the firmware tables
        // live in (RAM and the 32-bit hole); the crate guarantees `T` is there.
        unsafe {
            PhysicalMapping::new(
                physical_address,
                NonNull::new(virt).expect("direct-map addresses are never null"),
                size,
                size,
                *self,
            )
        }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// Reads the MADT starting from the RSDP at `rsdp_phys`.
pub fn discover(rsdp_phys: u64) -> Result<Topology, &'static str> {
    // SAFETY: the RSDP address comes from the boot loader's ACPI tag (a copy of
    // the RSDP inside the reserved boot information); the crate validates
    // signatures and checksums of everything it reads.
    let tables = unsafe { AcpiTables::from_rsdp(DirectMapHandler, rsdp_phys as usize) }
        .map_err(|_| "invalid ACPI RSDP/RSDT")?;
    let madt = tables.find_table::<Madt>().map_err(|_| "no ACPI MADT")?;
    let mut topo = Topology {
        apic_ids: heapless::Vec::new(),
        ignored: 0,
        io_apics: heapless::Vec::new(),
        overrides: heapless::Vec::new(),
    };
    let mut add_cpu = |id: u32, flags: u32| {
        // Bit 0: enabled; bit 1: online capable (may be enabled later).
        if flags & 0b11 != 0 && !topo.apic_ids.contains(&id) && topo.apic_ids.push(id).is_err() {
            topo.ignored += 1;
        }
    };
    for entry in madt.get().entries() {
        match entry {
            MadtEntry::LocalApic(e) => add_cpu(e.apic_id as u32, e.flags),
            MadtEntry::LocalX2Apic(e) => add_cpu(e.x2apic_id, e.flags),
            MadtEntry::IoApic(e) => {
                let _ = topo.io_apics.push((
                    e.io_apic_id,
                    e.io_apic_address,
                    e.global_system_interrupt_base,
                ));
            }
            MadtEntry::InterruptSourceOverride(e) => {
                let _ = topo
                    .overrides
                    .push((e.irq, e.global_system_interrupt, e.flags));
            }
            _ => {}
        }
    }
    if topo.apic_ids.is_empty() {
        return Err("the MADT lists no processors");
    }
    Ok(topo)
}
