//! Hardware interrupts (vectors 32-255).

use crate::arch::apic;
use crate::arch::trap::TrapFrame;

/// Handles an interrupt vector.
pub fn dispatch(frame: &mut TrapFrame) {
    let v = frame.vector as u8;
    match v {
        apic::TIMER_VECTOR => {
            let is_tick = apic::rearm_tick();
            apic::eoi();
            crate::sched::tick(is_tick);
        }
        apic::RESCHED_VECTOR => {
            apic::eoi();
            crate::sched::schedule();
        }
        apic::TLB_VECTOR => {
            crate::smp::service_shootdown();
            apic::eoi();
        }
        apic::PING_VECTOR => {
            crate::smp::on_ping();
            apic::eoi();
        }
        v if (crate::arch::ioapic::IRQ_BASE..crate::arch::ioapic::IRQ_BASE + 16).contains(&v) => {
            crate::arch::ioapic::unclaimed(v - crate::arch::ioapic::IRQ_BASE);
            apic::eoi();
        }
        apic::SPURIOUS_VECTOR => {} // no EOI for spurious interrupts
        v if (crate::arch::pic::SPURIOUS_BASE..crate::arch::pic::SPURIOUS_BASE + 16)
            .contains(&v) =>
        {
            // A spurious IRQ from a masked 8259: never acknowledged to the APIC.
        }
        apic::ERROR_VECTOR => {
            log::warn!("local APIC error interrupt");
            apic::eoi();
        }
        _ => {
            log::warn!("unexpected interrupt vector {v} at RIP 0x{:x}", frame.rip);
            apic::eoi();
        }
    }
}
