//! hello: the smallest program, loaded through the loader (boot module
//! `hello`). Its argument (RDI) says what to do:
//! - [`QUIET`]: exit 0 at once (the loader-only `spawn_loader_exit_wait`
//!   benchmark);
//! - anything else: check the SysV initial stack (argc, argv, envp and
//!   the auxiliary vector: AT_PHDR, AT_PHNUM, AT_ENTRY, AT_PAGESZ,
//!   AT_RANDOM), print `Hello from userland!`, and exit with
//!   [`args_hash`] of its argv and envp (so the starter can tell they
//!   arrived intact), or with a negative code naming the first check that
//!   failed. With argv exactly [`QUIET_ARGV`] it exits 0 right after the
//!   argc check (procmgr starts programs with argument 0: the
//!   `spawn_exit_wait` and `fork_exec_wait` benchmarks). With argv
//!   `hello sleep` it greets, then sleeps until killed (the shell's
//!   Ctrl-C test). With argv `hello steal` it greets, then polls the
//!   console for a Ctrl-C every millisecond ([`steal`]): the shell must
//!   take it, not hello (gaps2). With argv `hello lurk` it greets and
//!   forks a child that outlives it and waits in a `read` on `console.in`
//!   ([`lurk`]): a Ctrl-C typed at the shell's prompt must still reach the
//!   shell (breaku2). With argv exactly `scribble` it attacks its own
//!   read-only segment, which the loader maps from the boot module's own
//!   frames ([`scribble`]), and exits 0 if the module stayed unchanged.
//!   With argv exactly `reap` it waits for any child (one it inherited
//!   through an exec) and exits with what [`reap`] says.
//!
//! Started by procmgr (`spawn`/`exec`), hello holds procmgr's endpoint at
//! its first handle and nothing else: it finds the console through
//! procmgr's `Lookup` and prints there; if that fails it exits with
//! [`NO_CONSOLE`] (so a starter's status check covers the console path).
//! Started by the loader alone (no handle at all) it prints through the
//! kernel's log.
#![no_std]
#![no_main]
#![forbid(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

use core::fmt::Write as _;
use libipc::ipc::{self, Endpoint, Notification};
use libipc::server::Caller;
use libipc::{console, procmgr};

/// The argument that makes hello exit at once.
pub const QUIET: u64 = 0x5155_4954; // "QUIT"

/// Exit codes of failed checks.
const BAD_ARGC: i32 = -1;
const NO_PHDR: i32 = -2;
const BAD_PHNUM: i32 = -3;
const BAD_ENTRY: i32 = -4;
const BAD_PAGESZ: i32 = -5;
const BAD_RANDOM: i32 = -6;
const BAD_PHDRS: i32 = -7;
/// Started by procmgr, but the console could not be found or written.
pub const NO_CONSOLE: i32 = -8;

/// The argv (one string, NUL-terminated) that makes hello exit 0 at once.
pub const QUIET_ARGV: &[u8] = b"quiet\0";

const AT_NULL: u64 = 0;
const AT_PHDR: u64 = 3;
const AT_PHNUM: u64 = 5;
const AT_PAGESZ: u64 = 6;
const AT_ENTRY: u64 = 9;
const AT_RANDOM: u64 = 25;

/// FNV-1a over each string followed by a NUL, argv then a 0xff byte then
/// envp, masked to a non-negative i32: what hello exits with when every
/// check passed (apps/tests computes the same over what it sent).
pub fn args_hash<'a>(
    argv: impl Iterator<Item = &'a [u8]>,
    envp: impl Iterator<Item = &'a [u8]>,
) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |b: u8| h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    for s in argv {
        s.iter().for_each(|&b| eat(b));
        eat(0);
    }
    eat(0xff);
    for s in envp {
        s.iter().for_each(|&b| eat(b));
        eat(0);
    }
    (h & 0x7fff_ffff) as i32
}

/// The NUL-terminated string at `p`.
///
/// # Safety
/// `p` points at a NUL-terminated string that lives for ever.
unsafe fn string(p: u64) -> &'static [u8] {
    // SAFETY: the caller's contract.
    unsafe { core::ffi::CStr::from_ptr(p as *const core::ffi::c_char) }.to_bytes()
}

extern "C" {
    /// The entry point (libipc's runtime), for AT_ENTRY.
    fn _start();
}

#[no_mangle]
fn main(arg: u64) -> i32 {
    if arg == QUIET {
        return 0;
    }
    let sp = libipc::rt::initial_stack() as *const u64;
    // SAFETY: the loader built the SysV stack at `sp` (hello is only ever
    // started by it): argc, argv[argc], NULL, envp..., NULL, auxv pairs
    // ending in AT_NULL, all inside the mapped stack.
    let word = |i: usize| unsafe { sp.add(i).read() };
    let argc = word(0) as usize;
    if argc == 0 || argc > 256 || word(1 + argc) != 0 {
        return BAD_ARGC;
    }
    // SAFETY: argv[0] points at a NUL-terminated string on the stack.
    if argc == 1 && unsafe { string(word(1)) } == &QUIET_ARGV[..QUIET_ARGV.len() - 1] {
        return 0;
    }
    // SAFETY: as above.
    if argc == 1 && unsafe { string(word(1)) } == SCRIBBLE_ARGV {
        return scribble();
    }
    // SAFETY: as above.
    if argc == 1 && unsafe { string(word(1)) } == b"reap" {
        return reap();
    }
    let mut i = 2 + argc;
    let env_start = i;
    while word(i) != 0 {
        i += 1;
    }
    let envc = i - env_start;
    i += 1;
    let (mut phdr, mut phnum, mut entry, mut pagesz, mut random) = (0, 0, 0, 0, 0);
    loop {
        let (t, v) = (word(i), word(i + 1));
        i += 2;
        match t {
            AT_NULL => break,
            AT_PHDR => phdr = v,
            AT_PHNUM => phnum = v,
            AT_ENTRY => entry = v,
            AT_PAGESZ => pagesz = v,
            AT_RANDOM => random = v,
            _ => {}
        }
    }
    if phdr == 0 {
        return NO_PHDR;
    }
    if phnum == 0 || phnum > 64 {
        return BAD_PHNUM;
    }
    if entry != _start as *const () as u64 {
        return BAD_ENTRY;
    }
    if pagesz != 4096 {
        return BAD_PAGESZ;
    }
    // SAFETY: AT_RANDOM points at 16 bytes on the stack.
    let rnd = unsafe { core::slice::from_raw_parts(random as *const u8, 16) };
    if random == 0 || rnd.iter().all(|&b| b == 0) {
        return BAD_RANDOM;
    }
    // The program headers are loaded: the first PT_LOAD (type 1) among them.
    // SAFETY: AT_PHDR points at `phnum` 56-byte headers in a loaded segment.
    let loads = (0..phnum).any(|k| unsafe { ((phdr + 56 * k) as *const u32).read() } == 1);
    if !loads {
        return BAD_PHDRS;
    }
    // SAFETY: argv[k] and envp[k] point at NUL-terminated strings on the stack.
    let argv = (0..argc).map(|k| unsafe { string(word(1 + k)) });
    // SAFETY: as above.
    let envp = (0..envc).map(|k| unsafe { string(word(env_start + k)) });
    if !greet(argc, envc) {
        return NO_CONSOLE;
    }
    // SAFETY: as above (argc >= 2 checked first).
    if argc == 2 && unsafe { string(word(2)) } == b"steal" {
        return steal();
    }
    // SAFETY: as above (argc >= 2 checked first).
    if argc == 2 && unsafe { string(word(2)) } == b"lurk" {
        return lurk();
    }
    // SAFETY: as above (argc >= 2 checked first).
    if argc == 2 && unsafe { string(word(2)) } == b"sleep" {
        // Until killed: the shell's Ctrl-C in `run` has something to stop.
        loop {
            libipc::sys::sleep_ns(1_000_000_000);
        }
    }
    args_hash(argv, envp)
}

/// What `hello steal` exits with when it took a Ctrl-C.
pub const STOLE: i32 = 3;
/// How long `hello steal` polls before it exits 0.
const STEAL_NS: u64 = 60_000_000_000;

/// `hello steal`: polls `console`'s `interrupted` every millisecond (far
/// more often than the shell's 20 ms) for [`STEAL_NS`]. A Ctrl-C meant for
/// the shell, which names itself the console's foreground reader, must
/// never reach it: if one does, hello says so and exits [`STOLE`].
fn steal() -> i32 {
    let Ok(con) = procmgr::lookup(console::NAME) else {
        return NO_CONSOLE;
    };
    let start = libipc::sys::clock_ns();
    while libipc::sys::clock_ns().wrapping_sub(start) < STEAL_NS {
        if console::interrupted(con) == Ok(true) {
            let mut buf = [0u8; 128];
            let mut c = console::Client::new(Caller::new(con, None), &mut buf);
            let _ = c.write(b"hello: took a Ctrl-C meant for the shell\n");
            return STOLE;
        }
        libipc::sys::sleep_ns(1_000_000);
    }
    0
}

/// How long `hello lurk` waits before it exits: its child is in its
/// `read` on `console.in` by then, ahead of the shell's next one.
const LURK_NS: u64 = 500_000_000;

/// `hello lurk` (breaku2): forks a child that outlives hello (procmgr
/// re-parents it to init), looks up `console.in` and waits in one `read`
/// there, holding the console's one reader thread while the shell's
/// prompt `read` queues behind it. A Ctrl-C then typed is the shell's
/// (its foreground reader): the child's `read` must be refused at once
/// (`would block`), not wait for the shell to take it, which the shell,
/// queued behind, never could. The child says what its `read` got, then
/// sleeps until power-off without reading again.
fn lurk() -> i32 {
    match procmgr::fork() {
        Ok(procmgr::Fork::Child) => lurker(),
        Ok(procmgr::Fork::Parent(_)) => {}
        Err(_) => return scribble_exit::NO_FORK,
    }
    libipc::sys::sleep_ns(LURK_NS);
    0
}

/// `hello lurk`'s child: one `read` on `console.in`, said, then sleeps.
fn lurker() -> ! {
    let (Ok(input), Ok(con)) = (
        procmgr::lookup(console::INPUT_NAME),
        procmgr::lookup(console::NAME),
    ) else {
        procmgr::exit(NO_CONSOLE)
    };
    let mut buf = [0u8; 128];
    let mut c = console::Client::new(Caller::new(con, None), &mut buf);
    let _ = c.write(b"hello: lurking on console.in\n");
    let mut line = [0u8; 64];
    let said: &[u8] = match console::read(input, &mut line) {
        Ok(console::Input::Line(_)) => b"hello: the lurker read a line\n",
        Ok(console::Input::Interrupt) => b"hello: the lurker took a Ctrl-C\n",
        Ok(console::Input::End) => b"hello: the lurker read the end\n",
        Err(_) => b"hello: the lurker's read was refused\n",
    };
    let mut c = console::Client::new(Caller::new(con, None), &mut buf);
    let _ = c.write(said);
    loop {
        libipc::sys::sleep_ns(1_000_000_000);
    }
}

/// The argv (one string) that runs [`scribble`].
pub const SCRIBBLE_ARGV: &[u8] = b"scribble";

/// Bytes in hello's read-only data, which the loader maps straight from
/// the `hello` module's memory object (forku); aligned so they sit in one
/// page.
#[repr(C, align(16))]
struct Pristine([u8; 16]);
static PRISTINE: Pristine = Pristine(*b"hello's rodata!!");

/// Exit codes of [`scribble`] (0: the module stayed unchanged).
pub mod scribble_exit {
    /// The bytes were not pristine at the start: an earlier hello's write
    /// reached the module's frames.
    pub const CHANGED_BEFORE: i32 = 1;
    /// The forked child could not make the page writable or write it.
    pub const CHILD_FAILED: i32 = 2;
    /// The child's write showed in the parent's copy (shared, not COW).
    pub const CHILD_WRITE_SHARED: i32 = 3;
    /// The parent could not make the page writable, or its write did not
    /// show in its own copy.
    pub const OWN_WRITE_FAILED: i32 = 4;
    /// Fork or wait failed.
    pub const NO_FORK: i32 = 5;
}

/// The page holding [`PRISTINE`] and a volatile read of its first byte.
fn pristine() -> (u64, u8) {
    let at = PRISTINE.0.as_ptr();
    // SAFETY: `at` points into a static (mapped for the program's life);
    // volatile, so a write through the page made writable is seen.
    (at as u64, unsafe { at.read_volatile() })
}

/// Makes [`PRISTINE`]'s page writable (a private mapping: the write must
/// copy the frame) and writes its first byte; `true` if the write reads
/// back.
fn write_pristine() -> bool {
    use abi::layout::PAGE_SIZE;
    let (at, _) = pristine();
    let page = at & !(PAGE_SIZE - 1);
    if libipc::vm::Space::Own
        .protect(page, PAGE_SIZE, abi::prot::WRITE)
        .is_err()
    {
        return false;
    }
    // SAFETY: the page is mapped and now writable; nothing relies on the
    // static's contents but `pristine`, which reads it volatile.
    unsafe { (at as *mut u8).write_volatile(b'X') };
    pristine().1 == b'X'
}

/// breaku: the loader maps hello's read-only segments from the `hello`
/// module's frames, shared by every hello. Checks the bytes are pristine
/// (no earlier hello changed the module), forks a child that makes the
/// page writable and writes it (the clone's copy-on-write), checks the
/// parent's copy did not change, then writes its own copy the same way.
/// Every later hello must find the bytes pristine again.
fn scribble() -> i32 {
    use scribble_exit::*;
    if pristine().1 != PRISTINE_FIRST {
        return CHANGED_BEFORE;
    }
    procmgr::set_endpoint(Endpoint(procmgr::CHILD_HANDLE));
    let child = match procmgr::fork() {
        Ok(procmgr::Fork::Child) => procmgr::exit(if write_pristine() { 0 } else { CHILD_FAILED }),
        Ok(procmgr::Fork::Parent(pid)) => pid,
        Err(_) => return NO_FORK,
    };
    match procmgr::wait(Some(child), None) {
        Ok((_, abi::status::Ended::Exited(0))) => {}
        Ok(_) => return CHILD_FAILED,
        Err(_) => return NO_FORK,
    }
    if pristine().1 != PRISTINE_FIRST {
        return CHILD_WRITE_SHARED;
    }
    if !write_pristine() {
        return OWN_WRITE_FAILED;
    }
    0
}

/// Exit codes of [`reap`] for a child that did not exit.
pub mod reap_exit {
    /// The child was killed.
    pub const KILLED: i32 = 100;
    /// The child faulted.
    pub const FAULTED: i32 = 101;
    /// No child to wait for (`NotFound`).
    pub const NO_CHILD: i32 = 102;
    /// The wait failed otherwise.
    pub const FAILED: i32 = 103;
}

/// breaku: hello exec'd by a process that has a child waits for any child
/// (10 s at most) and exits with its exit code, or [`reap_exit`]'s code.
/// The waiters of the image it replaced must not take that child's status.
fn reap() -> i32 {
    use abi::status::Ended;
    use reap_exit::*;
    procmgr::set_endpoint(Endpoint(procmgr::CHILD_HANDLE));
    match procmgr::wait(None, Some(10_000_000)) {
        Ok((_, Ended::Exited(c))) => c,
        Ok((_, Ended::Killed)) => KILLED,
        Ok((_, Ended::Faulted(_))) => FAULTED,
        Err(libipc::Error::NotFound) => NO_CHILD,
        Err(_) => FAILED,
    }
}

/// [`PRISTINE`]'s first byte as built.
const PRISTINE_FIRST: u8 = b'h';

/// A line built on the stack.
struct Line {
    buf: [u8; 128],
    len: usize,
}

impl core::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(core::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Prints the greeting: through the console when procmgr started hello
/// (its endpoint at `procmgr::CHILD_HANDLE`), else through the kernel.
/// `false` if procmgr started hello and the console could not be used.
fn greet(argc: usize, envc: usize) -> bool {
    let mut line = Line {
        buf: [0; 128],
        len: 0,
    };
    if writeln!(line, "Hello from userland! (argc {argc}, envc {envc})").is_err() {
        return false;
    }
    // A zero-bit signal to an endpoint is WrongType; an empty slot (the
    // loader alone started hello) is BadHandle.
    let pm = procmgr::CHILD_HANDLE;
    if ipc::signal(Notification(pm), 0) != Err(libipc::Error::WrongType) {
        let _ = libipc::sys::debug_write(&line.buf[..line.len]);
        return true;
    }
    procmgr::set_endpoint(Endpoint(pm));
    let Ok(con) = procmgr::lookup(console::NAME) else {
        return false;
    };
    let mut buf = [0u8; 256];
    let mut c = console::Client::new(Caller::new(con, None), &mut buf);
    let ok = matches!(c.write(&line.buf[..line.len]), Ok(console::Reply::Written { len }) if len as usize == line.len);
    let _ = ipc::handle_close(con.0);
    ok
}
