//! The console server (issue 11 item 4): COM1's 16550 driven from ring 3
//! with the `uart_16550` crate over an I/O-port grant of exactly COM1's
//! eight ports, receive interrupt-driven through IRQ 4.
//!
//! init gives it, before anything else, the name service and the three
//! handles of [`abi::boot_handles::console`]: the port grant, IRQ 4 (which
//! init bound to a notification once, so the binding outlives a restart)
//! and that notification. Two threads:
//! - main serves `console` ([`libipc::console::NAME`]): writes are joined
//!   into whole lines per client ([`console::Lines`]) and printed at once,
//!   `[pid N] ` in front (N is the badge init's name service gave the
//!   client's handle: its pid); IRQ 4's notification is bound to this
//!   thread, so the serve loop also drains the receiver into the line
//!   editor ([`console::Editor`]) and acknowledges the line.
//! - the reader serves `console.in`: a `read` takes the next cooked entry,
//!   waiting (holding that one caller) for the main thread's signal when
//!   none is ready; other readers queue in the kernel, writers never wait.
//!
//! A Ctrl-C goes only to the foreground reader once the console's
//! controller (the shell: init badges its `console` handle with
//! `CONTROL_BADGE`) named one (`Foreground`; [`console::Foreground`]);
//! to everyone else it is invisible until the foreground took it.
//!
//! Transmit polls LSR's THR-empty bit (`send_bytes_exact`), no THRE
//! interrupt: a line is printed inside the write that completes it, before
//! the reply (so a program's output keeps its order with the kernel's log
//! of it), and QEMU's UART empties its FIFO at once, so the poll never
//! spins; a THRE interrupt would cost a notification and an acknowledge per
//! 16 bytes. On real hardware at 115200 baud a line of 512 bytes holds the
//! main thread for about 45 ms, a bound, not a hang.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod ring3 {
    use abi::boot_handles::console as given;
    use abi::bootinfo::names::SUPERVISED_ARG;
    use abi::rights;
    use console::{Cooked, Editor, Foreground, Lines, NotNamed, CUT_MARKER, MAX_LINE};
    use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use libipc::console::{
        Console, Reply, Request, BUFFER, CONTROL_BADGE, FOREGROUND_SELF, INPUT_NAME, MAX_READ,
        MAX_SESSIONS, MAX_WRITE, NAME,
    };
    use libipc::hw::{self, IoPorts, Irq};
    use libipc::ipc::{self, Endpoint, Notification};
    use libipc::server::{self, Caller};
    use libipc::wire::{CopiedHandle, Handle, Handler};
    use libipc::{names, sys};
    use spin::Mutex;
    use uart_16550::backend::PioBackend;
    use uart_16550::{Config, Uart16550};

    // The protocol's promises are this crate's constants.
    const _: () = assert!(MAX_LINE == libipc::console::MAX_LINE);
    const _: () = assert!(console::MAX_INPUT <= MAX_READ);
    const _: () = assert!(console::FOREGROUND_SELF == FOREGROUND_SELF);

    /// How long to wait for init's handles.
    const GIVE_TIMEOUT_NS: u64 = 5_000_000_000;
    /// The reader thread's stack.
    const READER_STACK: u64 = 0x5000_0000_0000;
    const READER_STACK_BYTES: u64 = 64 * 1024;
    /// The bit the main thread signals the reader with when input is cooked.
    const COOKED: u64 = 1;

    /// The UART (the main thread prints and receives; the reader never
    /// touches it).
    static UART: Mutex<Option<Uart16550<PioBackend>>> = Mutex::new(None);
    /// Cooked input, shared by the main thread (which feeds it) and the
    /// reader (which takes from it). Held only for a copy, never across
    /// a syscall.
    static INPUT: Mutex<Editor> = Mutex::new(Editor::new());
    /// Each client's unfinished line (both endpoints take writes). Lock
    /// order: `LINES`, then `UART`; `UART`, then `INPUT`.
    static LINES: Mutex<Lines> = Mutex::new(Lines::new());
    /// Whether the last bytes sent were echoed input not ending a line
    /// (read and written under the `UART` lock: Relaxed).
    static ECHO_OPEN: AtomicBool = AtomicBool::new(false);
    /// Who takes a Ctrl-C (gaps2). Held only for a copy or an update; never
    /// taken with another lock held.
    static FOREGROUND: Mutex<Foreground> = Mutex::new(Foreground::new());
    /// The notification the reader waits on (set before it starts).
    static COOKED_NTF: AtomicU32 = AtomicU32::new(0);

    /// Waits until handle `h` names something (init gives them in order
    /// right after the spawn; the last one arriving means all did).
    fn wait_for(h: u32) -> bool {
        let start = sys::clock_ns();
        loop {
            if ipc::signal(Notification(h), 0) != Err(libipc::Error::BadHandle) {
                return true;
            }
            if sys::clock_ns().wrapping_sub(start) > GIVE_TIMEOUT_NS {
                return false;
            }
            sys::yield_now();
        }
    }

    /// Sends `bytes` (polling THR-empty).
    fn send(uart: &mut Uart16550<PioBackend>, bytes: &[u8]) {
        uart.send_bytes_exact(bytes);
    }

    /// Prints one client line: `[pid N] ` (or `[pid ?] ` for an unbadged
    /// handle), the sanitized text, the cut marker if cut, CRLF.
    fn print_line(badge: u64, line: &[u8], cut: bool) {
        let mut out = [0u8; 32 + MAX_LINE * 3 + 16];
        let mut n = 0;
        let mut put = |b: u8| {
            if n < out.len() {
                out[n] = b;
                n += 1;
            }
        };
        for &b in b"[pid " {
            put(b);
        }
        // The pid: the badge's low 32 bits (a session's number is above).
        let pid = badge & 0xffff_ffff;
        if pid == 0 {
            put(b'?');
        } else {
            let mut digits = [0u8; 20];
            let mut d = 0;
            let mut v = pid;
            while v > 0 || d == 0 {
                digits[d] = b'0' + (v % 10) as u8;
                v /= 10;
                d += 1;
            }
            for i in (0..d).rev() {
                put(digits[i]);
            }
        }
        put(b']');
        put(b' ');
        console::sanitize(line, &mut put);
        if cut {
            for &b in CUT_MARKER {
                put(b);
            }
        }
        put(b'\r');
        put(b'\n');
        if let Some(u) = UART.lock().as_mut() {
            // Echoed input left the cursor inside a line: start a new one,
            // so every printed line begins with its prefix.
            if ECHO_OPEN.swap(false, Ordering::Relaxed) {
                send(u, b"\r\n");
            }
            send(u, &out[..n]);
        }
    }

    fn cooked_ntf() -> Notification {
        // Relaxed: stored before the reader thread was spawned (the spawn
        // syscall orders it), never changed.
        Notification(COOKED_NTF.load(Ordering::Relaxed))
    }

    /// Whether the client with `badge` may take a Ctrl-C.
    fn may_interrupt(badge: u64) -> bool {
        FOREGROUND.lock().may_interrupt(badge)
    }

    /// What a `read` took from the cooked queue (a line's bytes are in the
    /// reader's buffer).
    enum Taken {
        Line(usize),
        Interrupt,
        End,
        /// `max` 0.
        Invalid,
        /// Something is queued, but behind a Ctrl-C this reader may not
        /// take (breaku2): answered `Empty` at once, even on `console.in`,
        /// so it never holds the reader thread the foreground's own `read`
        /// queues behind (the shell at its prompt would never read again).
        Withheld,
    }

    /// Takes the client with `badge`'s `read(max)` from the cooked queue
    /// into `out`: `None` if nothing is there for it.
    fn take(badge: u64, max: u64, out: &mut [u8; MAX_READ]) -> Option<Taken> {
        if max == 0 {
            return Some(Taken::Invalid);
        }
        let max = usize::try_from(max).unwrap_or(MAX_READ).min(MAX_READ);
        let interrupts = may_interrupt(badge);
        let mut input = INPUT.lock();
        let queued = input.ready();
        Some(match input.take_for(max, interrupts) {
            Some(Cooked::Line(bytes)) => {
                out[..bytes.len()].copy_from_slice(bytes);
                Taken::Line(bytes.len())
            }
            Some(Cooked::Interrupt) => Taken::Interrupt,
            Some(Cooked::End) => Taken::End,
            None if queued => Taken::Withheld,
            None => return None,
        })
    }

    /// The reply for what a `read` took (`None`: `Empty`).
    fn answer(t: Option<Taken>, out: &[u8; MAX_READ]) -> Reply<'_> {
        match t {
            Some(Taken::Line(n)) => Reply::Line { bytes: &out[..n] },
            Some(Taken::Interrupt) => Reply::Interrupt {},
            Some(Taken::End) => Reply::EndOfInput {},
            Some(Taken::Invalid) => Reply::Invalid { limit: 0 },
            Some(Taken::Withheld) | None => Reply::Empty {},
        }
    }

    /// A waiting Ctrl-C, taken if the client with `badge` may (lines typed
    /// after it stay queued).
    fn interrupted<'r>(badge: u64) -> Reply<'r> {
        if !may_interrupt(badge) {
            return Reply::Empty {};
        }
        let mut input = INPUT.lock();
        if !input.take_interrupt() {
            return Reply::Empty {};
        }
        let behind = input.ready();
        drop(input);
        // A reader that may not take it waits on `console.in` for what is
        // queued behind it: now it is at the head.
        if behind {
            let _ = ipc::signal(cooked_ntf(), COOKED);
        }
        Reply::Interrupt {}
    }

    /// `Foreground { pid }` from the client with `badge`.
    fn foreground<'r>(badge: u64, pid: u64) -> Reply<'r> {
        match FOREGROUND.lock().name(badge, CONTROL_BADGE, pid) {
            Ok(()) => {}
            Err(NotNamed::Denied) => return Reply::Denied {},
            Err(NotNamed::Invalid) => return Reply::Invalid { limit: 0 },
        }
        // A reader that may now take a waiting interrupt looks again.
        let _ = ipc::signal(cooked_ntf(), COOKED);
        Reply::Set {}
    }

    /// The write endpoint's server.
    struct Main {
        /// `console`'s endpoint (unbadged: sessions are cut from it).
        ep: Endpoint,
        sessions: u64,
        irq: Irq,
        out: [u8; MAX_READ],
    }

    impl Handler<Console> for Main {
        fn handle<'r>(&'r mut self, badge: u64, req: Request<'r>) -> Reply<'r> {
            match req {
                Request::Write { bytes } => write(badge, bytes),
                Request::Read { max } => {
                    let t = take(badge, max, &mut self.out);
                    answer(t, &self.out)
                }
                Request::Open {} => self.open(badge),
                Request::Interrupted {} => interrupted(badge),
                Request::Foreground { pid } => foreground(badge, pid),
            }
        }

        fn notified(&mut self, bits: u64) {
            if bits & given::IRQ_BIT != 0 {
                drain_and_ack(self.irq);
            }
        }
    }

    impl Main {
        /// A new session's handle: the console's endpoint badged with the
        /// caller's pid (low 32 bits) and the next session number.
        fn open<'r>(&mut self, badge: u64) -> Reply<'r> {
            if self.sessions >= MAX_SESSIONS {
                return Reply::Invalid {
                    limit: MAX_SESSIONS,
                };
            }
            self.sessions += 1;
            let b = (badge & 0xffff_ffff) | (self.sessions << 32);
            match ipc::handle_dup(self.ep.0, rights::SEND | rights::TRANSFER, b) {
                Ok(h) => Reply::Opened { ep: Handle(h) },
                Err(_) => Reply::Invalid { limit: 0 },
            }
        }
    }

    fn write<'r>(badge: u64, bytes: &[u8]) -> Reply<'r> {
        if bytes.len() > MAX_WRITE {
            return Reply::Invalid {
                limit: MAX_WRITE as u64,
            };
        }
        LINES
            .lock()
            .write(badge, bytes, |(b, line, cut)| print_line(b, line, cut));
        Reply::Written {
            len: bytes.len() as u64,
        }
    }

    /// Drains the receiver, unmasks IRQ 4, and drains again. The second
    /// drain closes a window: a byte that arrives after the first drain
    /// found the FIFO empty but before the acknowledge raises the line while
    /// it is masked, and an edge on a masked I/O APIC pin is ignored (QEMU
    /// does as the 82093AA manual says). QEMU's 16550 with a trigger level
    /// of 1 hands over the next byte only once this one is read, so without
    /// the second drain that byte would sit in the FIFO with no interrupt
    /// to come, and input would stop for good (seen: `console-shell`'s
    /// input stopped mid-line under load, gaps session 19). Reading the
    /// FIFO empty after the unmask means the next byte raises the line
    /// while it is unmasked.
    fn drain_and_ack(irq: Irq) {
        receive();
        let _ = hw::irq_ack(irq);
        receive();
    }

    /// Drains the receiver into the line editor, echoing; wakes the reader
    /// if anything was cooked.
    fn receive() {
        let mut cooked = false;
        let mut guard = UART.lock();
        let Some(uart) = guard.as_mut() else { return };
        // Bounded: at most a FIFO's worth and then some per interrupt (the
        // line stays masked until the acknowledge, so nothing is lost).
        for _ in 0..256 {
            let Ok(b) = uart.try_receive_byte() else {
                break;
            };
            let mut echo = [0u8; 8];
            let mut elen = 0;
            {
                let mut input = INPUT.lock();
                input.feed(b, |e| {
                    let n = e.len().min(echo.len());
                    echo[..n].copy_from_slice(&e[..n]);
                    elen = n;
                });
                cooked |= input.ready();
            }
            if elen > 0 {
                ECHO_OPEN.store(echo[elen - 1] != b'\n', Ordering::Relaxed);
            }
            send(uart, &echo[..elen]);
        }
        drop(guard);
        if cooked {
            let _ = ipc::signal(cooked_ntf(), COOKED);
        }
    }

    /// The input endpoint's server: a read waits for cooked input.
    struct Reader {
        out: [u8; MAX_READ],
    }

    impl Handler<Console> for Reader {
        fn handle<'r>(&'r mut self, badge: u64, req: Request<'r>) -> Reply<'r> {
            match req {
                Request::Write { bytes } => write(badge, bytes),
                Request::Read { max } => {
                    let t = loop {
                        // A Ctrl-C this reader may not take hides the queue
                        // from it until the foreground took it: `Empty` at
                        // once (`Taken::Withheld`), never a wait.
                        if let Some(t) = take(badge, max, &mut self.out) {
                            break t;
                        }
                        // A signal that came before this wait is kept by
                        // the notification.
                        let _ = ipc::wait(cooked_ntf(), None);
                    };
                    answer(Some(t), &self.out)
                }
                // Sessions are the write endpoint's.
                Request::Open {} => Reply::Invalid { limit: 0 },
                Request::Interrupted {} => interrupted(badge),
                Request::Foreground { pid } => foreground(badge, pid),
            }
        }
    }

    extern "C" fn reader_thread(ep: u64) -> ! {
        let mut r = Reader { out: [0; MAX_READ] };
        let (mut a, mut b) = ([0u8; BUFFER], [0u8; BUFFER]);
        let e = server::serve::<Console, _>(Endpoint(ep as u32), &mut r, &mut a, &mut b);
        libipc::println!("console: the reader ended: {e:?}");
        sys::thread_exit(1)
    }

    /// Makes an endpoint and registers an unbadged copy as `name` (so
    /// init's lookups badge each client's handle with its pid).
    fn register(names_ep: Endpoint, name: &str) -> Option<Endpoint> {
        let ep = ipc::endpoint_create().ok()?;
        let copy =
            ipc::handle_dup(ep.0, rights::SEND | rights::DUPLICATE | rights::TRANSFER, 0).ok()?;
        let mut buf = [0u8; names::BUFFER];
        let mut c = names::Client::new(Caller::new(names_ep, None), &mut buf);
        let r = c.register(name, CopiedHandle(copy));
        let _ = ipc::handle_close(copy);
        match r {
            Ok(names::Reply::Registered { .. }) => Some(ep),
            other => {
                libipc::println!("console: registering {name} failed: {other:?}");
                None
            }
        }
    }

    fn start() -> Result<(Endpoint, Irq), &'static str> {
        let names_ep = server::first_endpoint(GIVE_TIMEOUT_NS).ok_or("no name service")?;
        if !wait_for(given::NOTIFY) {
            return Err("init did not give COM1");
        }
        hw::ioport_enable(IoPorts(given::PORTS)).map_err(|_| "cannot enable COM1's ports")?;
        // SAFETY: COM1's eight ports are this process's by init's grant
        // for its whole life; the kernel only writes THR (its log).
        let mut uart = unsafe { Uart16550::new_port(given::COM1) }.map_err(|_| "bad port")?;
        let config = Config {
            // The kernel's line setting: its log keeps working.
            baud_rate: uart_16550::BaudRate::Baud115200,
            interrupts: uart_16550::spec::registers::IER::DATA_READY,
            // An interrupt per received byte: typing is slow, and a piped
            // stdin is drained a FIFO at a time anyway.
            fifo_trigger_level: Some(uart_16550::spec::registers::FifoTriggerLevel::One),
            ..Config::DEFAULT
        };
        uart.init(config)
            .map_err(|_| "the UART did not initialise")?;
        // A predecessor killed in the middle of a line left it open: end it,
        // so the next line starts with its prefix.
        send(&mut uart, b"\r\n");
        *UART.lock() = Some(uart);
        let ntf = ipc::notification_create().map_err(|_| "no notification")?;
        COOKED_NTF.store(ntf.0, Ordering::Relaxed);
        ipc::bind(Some(Notification(given::NOTIFY)))
            .map_err(|_| "cannot bind IRQ 4's notification")?;
        let irq = Irq(given::IRQ);
        // A previous instance may have died with the line masked.
        drain_and_ack(irq);
        let out = register(names_ep, NAME).ok_or("cannot register console")?;
        let input = register(names_ep, INPUT_NAME).ok_or("cannot register console.in")?;
        sys::map_anon(READER_STACK, READER_STACK_BYTES, abi::prot::WRITE)
            .map_err(|_| "no reader stack")?;
        let t = sys::thread_spawn(
            reader_thread,
            READER_STACK + READER_STACK_BYTES,
            u64::from(input.0),
        )
        .map_err(|_| "no reader thread")?;
        let _ = t.close();
        Ok((out, irq))
    }

    #[no_mangle]
    fn main(arg: u64) -> i32 {
        // A demand-zero stack takes all its frames now (see the function).
        libipc::rt::pretouch_stack();
        if arg != SUPERVISED_ARG {
            libipc::println!("console: started by something other than init");
            return 1;
        }
        let (ep, irq) = match start() {
            Ok(x) => x,
            Err(why) => {
                libipc::println!("console: {why}");
                return 1;
            }
        };
        let mut m = Main {
            ep,
            sessions: 0,
            irq,
            out: [0; MAX_READ],
        };
        let (mut a, mut b) = ([0u8; BUFFER], [0u8; BUFFER]);
        match server::serve::<Console, _>(ep, &mut m, &mut a, &mut b) {
            Ok(()) => 0,
            Err(e) => {
                libipc::println!("console: serving failed: {e}");
                2
            }
        }
    }
}

/// On the host the server is a stub (its logic is tested in `lib.rs`).
#[cfg(not(target_os = "none"))]
fn main() {}
