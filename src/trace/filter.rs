//! Taking the kernel's `TRACE` frame lines out of the serial stream as it
//! passes ([`FrameFilter`]), so the transcript stays readable.

use abi::trace as wire;
use std::io::Read;
use std::sync::{Arc, Mutex};

/// Frame lines the filter took out of the stream (shared with the thread
/// that pumps QEMU's output).
pub type Sink = Arc<Mutex<Vec<String>>>;

/// Longest frame line kept (a real one is under 300 bytes).
const MAX_LINE: usize = 1024;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum At {
    /// At the start of a line, holding what could still become `TRACE `.
    LineStart,
    /// Inside an ordinary line: bytes pass.
    Passing,
    /// Inside a frame line: bytes go to the sink at its end.
    Frame,
}

/// A reader over the serial stream that passes everything but frame lines
/// (`TRACE ` at the start of a line), which it hands to its [`Sink`]. Only
/// the few bytes at the start of a line that could still begin `TRACE `
/// are held back, so prompts and partial lines flow as before.
pub struct FrameFilter<R> {
    inner: R,
    sink: Sink,
    at: At,
    held: Vec<u8>,
    out: Vec<u8>,
    eof: bool,
}

impl<R: Read> FrameFilter<R> {
    pub fn new(inner: R, sink: Sink) -> Self {
        FrameFilter {
            inner,
            sink,
            at: At::LineStart,
            held: Vec::new(),
            out: Vec::new(),
            eof: false,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        let prefix = wire::PREFIX.as_bytes();
        for &b in bytes {
            match self.at {
                At::Passing => {
                    self.out.push(b);
                    if b == b'\n' {
                        self.at = At::LineStart;
                    }
                }
                At::LineStart => {
                    self.held.push(b);
                    if self.held == prefix {
                        self.at = At::Frame;
                    } else if !prefix.starts_with(&self.held) {
                        self.out.append(&mut self.held);
                        self.at = if b == b'\n' {
                            At::LineStart
                        } else {
                            At::Passing
                        };
                    }
                }
                At::Frame => {
                    if b == b'\n' {
                        let line = String::from_utf8_lossy(&self.held);
                        let line = line.trim_end_matches('\r').to_string();
                        if let Ok(mut s) = self.sink.lock() {
                            s.push(line);
                        }
                        self.held.clear();
                        self.at = At::LineStart;
                    } else if self.held.len() < MAX_LINE {
                        self.held.push(b);
                    }
                }
            }
        }
    }
}

impl<R: Read> Read for FrameFilter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut tmp = [0u8; 4096];
        while self.out.is_empty() && !self.eof {
            let n = self.inner.read(&mut tmp)?;
            if n == 0 {
                self.eof = true;
                // A held line start that never became a frame is output;
                // a frame cut off by the end is dropped (no checksum).
                if self.at == At::LineStart {
                    self.out.append(&mut self.held);
                }
            } else {
                self.feed(&tmp[..n]);
            }
        }
        let n = buf.len().min(self.out.len());
        buf[..n].copy_from_slice(&self.out[..n]);
        self.out.drain(..n);
        Ok(n)
    }
}
