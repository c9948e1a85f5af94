//! The runtime: `_start`, `print!`/`println!` (to the console server once
//! the program [attached](crate::console::attach) to it, else to the kernel
//! log), and a panic handler that reports and exits.

use core::fmt::{self, Write};

extern "Rust" {
    /// The program's entry point, defined by the program: `arg` is what the
    /// creator passed (init: the address of its [`abi::bootinfo::BootInfo`]).
    fn main(arg: u64) -> i32;
}

/// The entry point. The kernel enters with RDI = the creator's argument and RSP
/// at the top of the user stack minus 8 (as if `_start` had been called).
#[no_mangle]
pub extern "C" fn _start(arg: u64) -> ! {
    // SAFETY: every program built against libipc defines `main` with this
    // signature (link error otherwise).
    let code = unsafe { main(arg) };
    crate::sys::process_exit(code)
}

/// [`LineWriter`]'s size: the console's longest kept line, so a line up to
/// that long reaches the console in one write (threads of one program,
/// which share its console session, never mix inside one).
pub const LINE_BUFFER: usize = 512;

/// A line buffer so a `println!` reaches the log as one write (one line is
/// never interleaved with another thread's output).
///
/// The kernel prints every line of a write behind `[pid N] ` and ends a last
/// line that has no `\n` itself (it keeps no state between writes), so each
/// `print!` call comes out as whole lines: `print!("a"); println!("b")`
/// prints two lines. Text longer than the buffer ([`LINE_BUFFER`]) is flushed in
/// pieces and so splits into several lines in the kernel's log (the
/// console joins them again).
pub struct LineWriter {
    buf: [u8; LINE_BUFFER],
    len: usize,
}

impl LineWriter {
    /// An empty buffer.
    pub const fn new() -> Self {
        LineWriter {
            buf: [0; LINE_BUFFER],
            len: 0,
        }
    }

    /// Sends what is buffered: to the console server when this program
    /// attached to it, else (or when it is gone for good) to the kernel log.
    pub fn flush(&mut self) {
        if self.len > 0 {
            if !crate::console::write_bytes(&self.buf[..self.len]) {
                let _ = crate::sys::debug_write(&self.buf[..self.len]);
            }
            self.len = 0;
        }
    }
}

impl Default for LineWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for LineWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// Formats and writes in one go.
pub fn print(args: fmt::Arguments<'_>) {
    let mut w = LineWriter::new();
    let _ = w.write_fmt(args);
    w.flush();
}

/// Prints to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::rt::print(format_args!($($arg)*)) };
}

/// Prints a line to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::rt::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::rt::print(format_args!("{}\n", format_args!($($arg)*))) };
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    crate::println!("user panic: {info}");
    crate::sys::process_exit(101)
}
