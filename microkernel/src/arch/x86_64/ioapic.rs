//! I/O APIC routing of ISA interrupts (through the `x2apic` crate).
//!
//! At boot every redirection entry is masked. [`route_isa_irq`] sends ISA IRQ n
//! — translated through the MADT's interrupt source overrides (e.g. IRQ 0 is
//! GSI 2 on PCs), with the override's polarity and trigger mode — to a chosen
//! CPU on vector [`IRQ_BASE`]` + n`. An interrupt nobody claims is counted,
//! masked again and acknowledged, so a stuck device cannot storm a CPU.

use super::madt::Topology;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use x2apic::ioapic::{IoApic, IrqFlags, IrqMode, RedirectionTableEntry};

/// Vector of ISA IRQ 0; ISA IRQs use 16 vectors from here.
pub const IRQ_BASE: u8 = 0x30;

struct Controller {
    apic: IoApic,
    gsi_base: u32,
    entries: u32,
}

struct State {
    ioapics: heapless::Vec<Controller, 8>,
    overrides: heapless::Vec<(u8, u32, u16), 16>,
}

/// The chips and overrides. A plain spinlock taken only with interrupts off
/// ([`with_state`]): [`unclaimed`] takes it from interrupt context, and no
/// holder ever waits for another CPU (this file sits below `sync`).
static STATE: spin::Mutex<Option<State>> = spin::Mutex::new(None);

fn with_state<R>(f: impl FnOnce(&mut Option<State>) -> R) -> R {
    x86_64::instructions::interrupts::without_interrupts(|| f(&mut STATE.lock()))
}

/// Times each ISA IRQ arrived unclaimed.
static HITS: [AtomicU64; 16] = [const { AtomicU64::new(0) }; 16];
/// The CPU each ISA IRQ last arrived on.
static LAST_CPU: [AtomicU32; 16] = [const { AtomicU32::new(u32::MAX) }; 16];

/// Takes over the I/O APICs the MADT lists and masks every entry.
pub fn init(topo: &Topology) {
    let mut st = State {
        ioapics: heapless::Vec::new(),
        overrides: topo.overrides.clone(),
    };
    for &(_, addr, gsi_base) in &topo.io_apics {
        // SAFETY: the MADT names this MMIO block as an I/O APIC; the direct map
        // covers the 32-bit MMIO hole (uncached through the firmware's MTRRs),
        // and this is the only IoApic created for it.
        let mut apic = unsafe { IoApic::new(super::mmu::phys_to_virt(addr as u64)) };
        // SAFETY: reading the version register, then masking every entry.
        let entries = unsafe { apic.max_table_entry() } as u32 + 1;
        for i in 0..entries {
            let mut e = RedirectionTableEntry::default();
            e.set_vector(IRQ_BASE.wrapping_add(i as u8));
            e.set_flags(IrqFlags::MASKED);
            // SAFETY: `i` is below the entry count the chip reported.
            unsafe { apic.set_table_entry(i as u8, e) };
        }
        let _ = st.ioapics.push(Controller {
            apic,
            gsi_base,
            entries,
        });
    }
    log::info!(
        "{} I/O APIC(s), {} ISA overrides",
        st.ioapics.len(),
        st.overrides.len()
    );
    with_state(|s| *s = Some(st));
}

/// Routes ISA IRQ `irq` to the CPU with APIC id `apic_id`, unmasked.
pub fn route_isa_irq(irq: u8, apic_id: u32) -> Result<(), &'static str> {
    if irq >= 16 || apic_id > 255 {
        return Err("ISA IRQ or APIC id out of range");
    }
    with_state(|guard| route_locked(guard, irq, apic_id))
}

fn route_locked(guard: &mut Option<State>, irq: u8, apic_id: u32) -> Result<(), &'static str> {
    let st = guard.as_mut().ok_or("no I/O APIC")?;
    let (gsi, flags) = match st.overrides.iter().find(|o| o.0 == irq) {
        Some(&(_, gsi, f)) => (gsi, f),
        None => (irq as u32, 0),
    };
    let c = st
        .ioapics
        .iter_mut()
        .find(|c| gsi >= c.gsi_base && gsi < c.gsi_base + c.entries)
        .ok_or("no I/O APIC serves that GSI")?;
    let mut e = RedirectionTableEntry::default();
    e.set_vector(IRQ_BASE + irq);
    e.set_mode(IrqMode::Fixed);
    let mut f = IrqFlags::empty();
    // MPS INTI flags: polarity bits 0-1 (3 = active low), trigger bits 2-3
    // (3 = level); 0 means "bus default" (ISA: active high, edge).
    if flags & 0b11 == 0b11 {
        f |= IrqFlags::LOW_ACTIVE;
    }
    if (flags >> 2) & 0b11 == 0b11 {
        f |= IrqFlags::LEVEL_TRIGGERED;
    }
    e.set_flags(f);
    e.set_dest(apic_id as u8);
    // SAFETY: the entry index is within the chip's table (checked above).
    unsafe { c.apic.set_table_entry((gsi - c.gsi_base) as u8, e) };
    Ok(())
}

/// Masks ISA IRQ `irq`.
pub fn mask_isa_irq(irq: u8) {
    with_state(|guard| mask_locked(guard, irq));
}

fn mask_locked(guard: &mut Option<State>, irq: u8) {
    let Some(st) = guard.as_mut() else { return };
    let gsi = st
        .overrides
        .iter()
        .find(|o| o.0 == irq)
        .map_or(irq as u32, |o| o.1);
    if let Some(c) = st
        .ioapics
        .iter_mut()
        .find(|c| gsi >= c.gsi_base && gsi < c.gsi_base + c.entries)
    {
        // SAFETY: masking an entry within the chip's table.
        unsafe { c.apic.disable_irq((gsi - c.gsi_base) as u8) };
    }
}

/// An ISA interrupt arrived on this CPU and nobody claims it: count it and mask
/// the line.
pub fn unclaimed(irq: u8) {
    HITS[irq as usize].fetch_add(1, Ordering::SeqCst);
    LAST_CPU[irq as usize].store(super::percpu::cpu_id().get(), Ordering::SeqCst);
    mask_isa_irq(irq);
}

/// (times arrived, last CPU) of ISA IRQ `irq`.
pub fn hits(irq: u8) -> (u64, u32) {
    (
        HITS[irq as usize].load(Ordering::SeqCst),
        LAST_CPU[irq as usize].load(Ordering::SeqCst),
    )
}
