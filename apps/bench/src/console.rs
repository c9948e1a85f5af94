//! `console_write_line` (issue 11 item 4): one `println!`-sized line through
//! the console server, from the client's call to its reply: the IPC round
//! trip with a 48-byte buffer, the server joining it into its session's line,
//! sanitizing it and polling it out of COM1's transmitter, `[pid N] ` first.
//! The benchmark opens a session of its own and prints [`SAMPLES`] lines (far
//! fewer than the other figures: each one is a line of the transcript).

use libipc::bench::rdtsc;
use libipc::console::{self, Client, Reply};
use libipc::ipc::{self, Endpoint};
use libipc::names;
use libipc::server::Caller;

/// Lines timed (each is printed).
const SAMPLES: usize = 300;
/// Untimed lines first.
const WARMUP: usize = 20;
/// How long to wait for init's name-service handle.
const NAMES_TIMEOUT_NS: u64 = 1_000_000_000;
/// The line: 48 bytes with its newline.
const LINE: &[u8] = b"bench: console_write_line sample 0123456789abcd\n";
const _: () = assert!(LINE.len() == 48);

pub fn console_write_line(samples: &mut [u64]) -> Result<usize, &'static str> {
    let names = names::endpoint(NAMES_TIMEOUT_NS).ok_or("init gave no name service")?;
    let (ep, _) = names::lookup(names, console::NAME).map_err(|_| "no console")?;
    let mut buf = [0u8; 128];
    let session = {
        let mut c = Client::new(Caller::new(ep, None), &mut buf);
        match c.open() {
            Ok(Reply::Opened { ep }) => Endpoint(ep.0),
            _ => return Err("cannot open a console session"),
        }
    };
    let _ = ipc::handle_close(ep.0);
    let n = samples.len().min(SAMPLES);
    let mut result = Ok(n);
    for i in 0..WARMUP + n {
        let mut c = Client::new(Caller::new(session, None), &mut buf);
        let t0 = rdtsc();
        let r = c.write(LINE);
        let t = rdtsc() - t0;
        if !matches!(r, Ok(Reply::Written { len: 48 })) {
            result = Err("a console write failed");
            break;
        }
        if i >= WARMUP {
            samples[i - WARMUP] = t;
        }
    }
    let _ = ipc::handle_close(session.0);
    result
}
