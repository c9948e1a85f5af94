//! Kernel output: `println!` to COM1 and a `log` backend whose level comes from
//! the command line (`log=error|warn|info|debug|trace`, default `info`).

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
