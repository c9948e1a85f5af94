//! The runtime: `_start`, `print!`/`println!` (to the console server once
//! the program [attached](crate::console::attach) to it, else to the kernel
//! log), and a panic handler that reports and exits.

use core::fmt::{self, Write};

extern "Rust" {
    /// The program's entry point, defined by the program: `arg` is what the
    /// creator passed (init: the address of its [`abi::bootinfo::BootInfo`]).
    fn main(arg: u64) -> i32;
}

// The entry point. The kernel enters every thread "as if called": RDI =
// the creator's argument, RSP = the stack top it was given minus 8. A
// program the loader built has its SysV initial stack (argc, argv, envp,
// auxv) at that top, i.e. at RSP + 8; a flat image (init) has nothing there.
// `_start` passes that address on and jumps (not calls), so `mica_start`
// sees the same "just called" alignment the kernel set up.
core::arch::global_asm!(
    ".globl _start",
    "_start:",
    // rdi: the creator's argument, left as mica_start's first parameter.
    // rsi: mica_start's second parameter, the initial-stack address.
    "lea rsi, [rsp + 8]",
    "jmp {start}",
    start = sym mica_start,
);

/// Where the initial stack was (see [`initial_stack`]).
static INITIAL_STACK: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

extern "C" fn mica_start(arg: u64, initial_stack: u64) -> ! {
    // Relaxed: stored before `main` runs, read by this program's threads
    // only after a thread_spawn (a syscall) that follows it.
    INITIAL_STACK.store(initial_stack, core::sync::atomic::Ordering::Relaxed);
    // SAFETY: every program built against libipc defines `main` with this
    // signature (link error otherwise).
    let code = unsafe { main(arg) };
    crate::sys::process_exit(code)
}

/// [`LineWriter`]'s size: the console's longest kept line, so a line up to
/// that long reaches the console in one write (threads of one program,
/// which share its console session, never mix inside one).
pub const LINE_BUFFER: usize = 512;

/// The address of the SysV initial stack (argc, then argv, envp and auxv)
/// the loader built for this program: the main thread's stack top. Only
/// meaningful in a program started by the loader (`libipc::loader`) at the
/// `rsp` its `Loaded` reply named; a flat image (init) may have no memory
/// there.
pub fn initial_stack() -> u64 {
    INITIAL_STACK.load(core::sync::atomic::Ordering::Relaxed)
}

/// Writes each page of the main thread's stack below the caller's frame
/// once, so all of it has its frames now. The loader maps a new stack
/// demand-zero (copy-on-write from one zero object: a page takes a frame
/// at its first write), so without this a deeper call later takes frames
/// then. Long-lived servers call it at start, and so do programs whose
/// leak checks compare free memory (the fuzzer, the test suite), so their
/// footprint does not grow while they run. Only from the main thread of a
/// program the loader started (a flat image has no such stack: nothing is
/// done there).
#[inline(never)]
pub fn pretouch_stack() {
    if initial_stack() == 0 {
        return;
    }
    let bottom = abi::layout::INIT_STACK_TOP - abi::layout::INIT_STACK_BYTES;
    let marker = 0u8;
    let here = core::ptr::addr_of!(marker) as u64;
    let mut p = bottom;
    // Whole pages below this frame only (a margin for the write's own
    // spills): what lies above belongs to live frames.
    while p + abi::layout::PAGE_SIZE + 512 <= here {
        // `[bottom, here)` is this thread's own stack (the loader maps all
        // of it), unused below the current frame, and no handler ever runs
        // on it asynchronously.
        // SAFETY: a zero written there changes nothing anyone reads (above).
        unsafe { (p as *mut u64).write_volatile(0) };
        p += abi::layout::PAGE_SIZE;
    }
}

/// Longest argument [`arg`] returns (bytes before its NUL).
pub const MAX_ARG_BYTES: usize = 256;

/// `argv[n]` of the SysV initial stack the loader built (without its NUL),
/// or `None` past argc, for a string that is not NUL-terminated within
/// [`MAX_ARG_BYTES`], or when there is no initial stack (`initial_stack` 0).
///
/// Only for a program started by the loader at its `rsp` (every program but
/// init): a flat image has no initial stack, so it must not call this.
pub fn arg(n: usize) -> Option<&'static [u8]> {
    let sp = initial_stack();
    if sp == 0 {
        return None;
    }
    // SAFETY: the loader built argc, then argc argv pointers, at `sp`, in
    // the stack it mapped for this program's whole life (nothing writes it:
    // the main thread's stack grows down from below it).
    let argc = unsafe { *(sp as *const u64) };
    if n as u64 >= argc {
        return None;
    }
    // SAFETY: as above, `n < argc`: argv[n] is a pointer on that stack.
    let p = unsafe { *((sp + 8 + 8 * n as u64) as *const u64) } as *const u8;
    // The strings are on the same stack, above the pointers; the length is
    // bounded so a malformed stack cannot make this read without end.
    let mut len = 0;
    // SAFETY: the loader's argv strings are NUL-terminated inside the
    // mapped stack; reading stops at the NUL or at MAX_ARG_BYTES.
    while len < MAX_ARG_BYTES && unsafe { *p.add(len) } != 0 {
        len += 1;
    }
    if len == MAX_ARG_BYTES {
        return None;
    }
    // SAFETY: the `len` bytes just read, which never change.
    Some(unsafe { core::slice::from_raw_parts(p, len) })
}

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
