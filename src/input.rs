//! The guest's console input: the runner's standard input goes to the
//! guest's serial port once the guest says it reads it ([`GUEST_READY`]),
//! followed by the end of input (Ctrl-D) as a terminal user would type it.

use crate::cli::Options;
use std::io::{Read, Write};

/// The guest line after which its console reads input: init prints it once
/// every supervised server, the console among them, registered.
const GUEST_READY: &[u8] = b"init: all servers up";

/// Whether this run feeds the runner's standard input to the guest's
/// serial port: headless (`-serial stdio`; a run whose stdin is not a
/// terminal always is, see `run`), not recording or replaying, and stdin
/// is not a terminal (a pipe or a file: `printf 'ps\n' | scripts/run.sh`).
/// A recording does not: fed (with the Ctrl-D and the closed stdin after
/// it), the `init=tests` replay stalled at the same byte twice, so a
/// recorded shell boot waits for input until its timeout.
pub(crate) fn stdin_feeds_guest(opts: &Options) -> bool {
    use std::io::IsTerminal;
    opts.headless
        && opts.replay.is_none()
        && opts.record.is_none()
        && !std::io::stdin().is_terminal()
}

/// Ctrl-D, the console server's end of input (`servers/console`: on an
/// empty line it is the end; on a non-empty one it hands the line over).
const CTRL_D: u8 = 0x04;

/// What the runner sends after the last byte of its standard input, so the
/// guest sees the end of input as a terminal user would type it: Ctrl-D on
/// an empty line. If the input ended inside a line (no Enter, Ctrl-C or
/// Ctrl-D after its last character), a first Ctrl-D hands that line over
/// and a second one ends the input.
fn end_of_input(last: Option<u8>) -> &'static [u8] {
    match last {
        None | Some(b'\n' | b'\r' | 0x03 | CTRL_D) => &[CTRL_D],
        Some(_) => &[CTRL_D, CTRL_D],
    }
}

/// Copies `input` into `out` and then [`end_of_input`]'s bytes.
fn copy_then_end(mut input: impl Read, out: &mut impl Write) -> std::io::Result<()> {
    let mut buf = [0u8; 4096];
    let mut last = None;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&buf[..n])?;
        out.flush()?;
        last = Some(buf[n - 1]);
    }
    out.write_all(end_of_input(last))?;
    out.flush()
}

/// Copies the runner's standard input into QEMU's once the guest said it
/// is ready ([`GUEST_READY`]), then sends Ctrl-D ([`end_of_input`]) and
/// closes it. Bytes sent earlier would meet no reader: GRUB and the
/// console's UART reset discard what waits in the receive FIFO. QEMU takes
/// bytes only as the UART's FIFO has room, so nothing is lost on the way.
/// Never ready (the guest never got there): nothing is sent.
pub(crate) fn feed_stdin(
    ready: std::sync::mpsc::Receiver<()>,
    mut qemu_in: std::process::ChildStdin,
) {
    if ready.recv().is_err() {
        return;
    }
    let _ = copy_then_end(std::io::stdin().lock(), &mut qemu_in);
}

/// Passes the serial stream through and sends once on `ready` when it
/// first shows [`GUEST_READY`].
pub(crate) struct ReadyWatch<R> {
    inner: R,
    ready: Option<std::sync::mpsc::Sender<()>>,
    /// The last bytes seen, so a marker split across reads is found.
    tail: Vec<u8>,
}

impl<R> ReadyWatch<R> {
    pub(crate) fn new(inner: R, ready: Option<std::sync::mpsc::Sender<()>>) -> Self {
        ReadyWatch {
            inner,
            ready,
            tail: Vec::new(),
        }
    }
}

impl<R: Read> Read for ReadyWatch<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.ready.is_some() {
            self.tail.extend_from_slice(&buf[..n]);
            if self
                .tail
                .windows(GUEST_READY.len())
                .any(|w| w == GUEST_READY)
            {
                if let Some(tx) = self.ready.take() {
                    let _ = tx.send(());
                }
                self.tail = Vec::new();
            } else {
                let keep = self.tail.len().saturating_sub(GUEST_READY.len());
                self.tail.drain(..keep);
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `chunks` one per `read` call.
    struct Chunks(Vec<&'static [u8]>);

    impl Read for Chunks {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() {
                return Ok(0);
            }
            let c = self.0.remove(0);
            buf[..c.len()].copy_from_slice(c);
            Ok(c.len())
        }
    }

    fn ready_after(chunks: Vec<&'static [u8]>) -> (bool, Vec<u8>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut w = ReadyWatch::new(Chunks(chunks), Some(tx));
        let mut out = Vec::new();
        w.read_to_end(&mut out).unwrap();
        drop(w);
        (rx.try_recv().is_ok(), out)
    }

    #[test]
    fn stdin_is_fed_once_the_guest_says_its_servers_are_up_even_across_reads() {
        let (ready, out) = ready_after(vec![b"[pid 1] init: all ser", b"vers up\r\n"]);
        assert!(ready);
        assert_eq!(out, b"[pid 1] init: all servers up\r\n");
        let (ready, _) = ready_after(vec![b"[pid 1] Hello\r\n", b"init: all servers"]);
        assert!(!ready);
    }

    #[test]
    fn the_end_of_the_runners_input_reaches_the_guest_as_ctrl_d() {
        let fed = |input: &[u8]| {
            let mut out = Vec::new();
            copy_then_end(input, &mut out).unwrap();
            out
        };
        // `</dev/null`: one Ctrl-D on the empty line.
        assert_eq!(fed(b""), b"\x04");
        assert_eq!(fed(b"ps\nexit\n"), b"ps\nexit\n\x04");
        assert_eq!(fed(b"ps\r"), b"ps\r\x04");
        assert_eq!(fed(b"rm\x03"), b"rm\x03\x04");
        // A last line without Enter is handed over, then the end.
        assert_eq!(fed(b"echo hi"), b"echo hi\x04\x04");
    }
}
