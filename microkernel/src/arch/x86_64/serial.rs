//! COM1 (16550 UART) output for the kernel log and panics.
//!
//! The kernel only writes: input belongs to the ring-3 console server. Writes go
//! through [`crate::sync::IrqMutex`], so a line is never interleaved with another
//! CPU's and an interrupt on the same CPU cannot deadlock on the lock.

use x86_64::instructions::port::Port;

const COM1: u16 = 0x3f8;

/// The UART's registers.
pub struct Serial {
    data: Port<u8>,
    int_enable: Port<u8>,
    fifo_ctrl: Port<u8>,
    line_ctrl: Port<u8>,
    modem_ctrl: Port<u8>,
    line_status: Port<u8>,
}

impl Serial {
    /// The COM1 port block.
    pub const fn com1() -> Self {
        Serial {
            data: Port::new(COM1),
            int_enable: Port::new(COM1 + 1),
            fifo_ctrl: Port::new(COM1 + 2),
            line_ctrl: Port::new(COM1 + 3),
            modem_ctrl: Port::new(COM1 + 4),
            line_status: Port::new(COM1 + 5),
        }
    }

    /// Programs 115200 baud, 8N1, FIFOs on, UART interrupts off.
    pub fn init(&mut self) {
        // SAFETY: COM1's registers are the standard PC UART; the kernel owns them
        // until the console server is granted the port range, and programming the
        // divisor and line settings has no effect on memory.
        unsafe {
            self.int_enable.write(0x00); // no UART interrupts (the kernel polls)
            self.line_ctrl.write(0x80); // DLAB on: next two writes set the divisor
            self.data.write(0x01); // divisor low: 115200 / 1
            self.int_enable.write(0x00); // divisor high
            self.line_ctrl.write(0x03); // DLAB off, 8 data bits, no parity, 1 stop
            self.fifo_ctrl.write(0xc7); // FIFOs on and cleared, 14-byte threshold
            self.modem_ctrl.write(0x0b); // DTR, RTS, OUT2
        }
    }

    /// Writes one byte, waiting for the transmitter to have room.
    pub fn write_byte(&mut self, byte: u8) {
        // SAFETY: polling LSR and writing THR only transmits a byte.
        unsafe {
            while self.line_status.read() & 0x20 == 0 {
                core::hint::spin_loop();
            }
            self.data.write(byte);
        }
    }
}

impl core::fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(b);
        }
        Ok(())
    }
}
