//! Kernel output: `println!` to COM1, a `log` backend whose level comes from
//! the command line (`log=error|warn|info|debug|trace`, default `info`), and
//! [`user_write`], the only way user bytes reach the console.
//!
//! The kernel's voice is its own: every line of user output starts with
//! `[pid N] ` (framing rules in [`kcore::userlog`]), so no process can print
//! a line that starts like a kernel line (`KERNEL PANIC ...`, `mica: ...`,
//! `smp: ...`).

use crate::arch::serial::Serial;
use crate::sync::IrqMutex;
use core::fmt::Write;

/// The serial port, shared by every CPU.
pub static SERIAL: IrqMutex<Serial> = IrqMutex::new(Serial::com1());

/// Prints pre-formatted arguments atomically (one lock hold per call).
pub fn print(args: core::fmt::Arguments<'_>) {
    let _ = SERIAL.lock().write_fmt(args);
}

/// Prints to the serial console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::logger::print(format_args!($($arg)*)) };
}

/// Prints a line to the serial console; the line is never interleaved with
/// another CPU's output.
#[macro_export]
macro_rules! println {
    () => { $crate::logger::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::logger::print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Prints bytes a process wrote (already copied into kernel memory): one
/// `[pid N] `-prefixed line per line of `bytes`, a partial last line ended
/// by the kernel, control characters and invalid UTF-8 shown as `?`. The
/// serial lock is taken per printed line, so no hold lasts longer than one line of at most
/// [`kcore::userlog::MAX_LINE_BYTES`] bytes plus its prefix, and a line is
/// never interleaved with another CPU's output.
/// `between_lines` runs between two lines, with no lock held (the caller
/// passes a preemption point).
pub fn user_write(pid: u64, bytes: &[u8], mut between_lines: impl FnMut()) {
    for (i, line) in kcore::userlog::lines(bytes).enumerate() {
        if i != 0 {
            between_lines();
        }
        let mut serial = SERIAL.lock();
        let _ = write!(serial, "[pid {pid}] ");
        kcore::userlog::sanitize_line(line, |b| serial.write_byte(b));
        serial.write_byte(b'\r');
        serial.write_byte(b'\n');
    }
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            crate::println!(
                "[{:>5} cpu{}] {}",
                record.level(),
                crate::arch::percpu::cpu_id(),
                record.args()
            );
        }
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

/// Sets up the UART and the logger at `level`.
pub fn init(level: log::LevelFilter) {
    SERIAL.lock().init();
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Parses a `log=` value.
pub fn parse_level(s: &str) -> Option<log::LevelFilter> {
    Some(match s {
        "off" => log::LevelFilter::Off,
        "error" => log::LevelFilter::Error,
        "warn" => log::LevelFilter::Warn,
        "info" => log::LevelFilter::Info,
        "debug" => log::LevelFilter::Debug,
        "trace" => log::LevelFilter::Trace,
        _ => return None,
    })
}
