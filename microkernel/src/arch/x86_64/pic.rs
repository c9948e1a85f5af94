//! The legacy 8259 PICs. Mica uses the local APIC (and, for device IRQs, the
//! I/O APIC), so the PICs are remapped away from the exception vectors — the
//! BIOS leaves IRQ 0-7 on vectors 8-15, where the PIT's tick would look like a
//! double fault — and then fully masked. Spurious IRQs they may still raise land
//! on [`SPURIOUS_BASE`]`+7`/`+15`, which the IRQ dispatcher ignores.

use x86_64::instructions::port::Port;

/// Vector of (masked) PIC IRQ 0; the PICs use 16 vectors from here.
pub const SPURIOUS_BASE: u8 = 0xe0;

/// Remaps both PICs to [`SPURIOUS_BASE`] and masks every line.
pub fn disable() {
    let mut m_cmd = Port::<u8>::new(0x20);
    let mut m_data = Port::<u8>::new(0x21);
    let mut s_cmd = Port::<u8>::new(0xa0);
    let mut s_data = Port::<u8>::new(0xa1);
    // SAFETY: the standard 8259 initialisation sequence (ICW1-ICW4) on the PC's
    // fixed PIC ports; it only changes where and whether legacy IRQs arrive.
    unsafe {
        m_cmd.write(0x11); // ICW1: init, expect ICW4
        s_cmd.write(0x11);
        m_data.write(SPURIOUS_BASE); // ICW2: vector base
        s_data.write(SPURIOUS_BASE + 8);
        m_data.write(0x04); // ICW3: slave on IRQ2
        s_data.write(0x02); // ICW3: cascade identity
        m_data.write(0x01); // ICW4: 8086 mode
        s_data.write(0x01);
        m_data.write(0xff); // mask everything
        s_data.write(0xff);
    }
}
