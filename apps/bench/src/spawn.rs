//! `spawn_exit_wait` (loader, issue 11): a minimal ELF program (`hello`,
//! told to exit at once) loaded through the loader server, started and
//! waited for: request, ELF load into a new process, reply, thread start,
//! exit, wait and close, timed together. init gives this program its
//! name-service handle (slot 0) before it starts, so the loader is found
//! by name.

use abi::status::{self, Status};
use libipc::bench::rdtsc;
use libipc::loader::{Client, Loader, Reply, BUFFER};
use libipc::names::{self, Named};
use libipc::sys::ProcessHandle;

/// Samples of `spawn_exit_wait`.
const ITERS: usize = 300;
/// Untimed rounds first.
const WARMUP: usize = 10;
/// hello's argument that makes it exit at once (apps/hello `QUIET`).
const HELLO_QUIET: u64 = 0x5155_4954;

/// One load, start, exit and wait.
fn once(c: &mut Client<'_, Named<Loader>>) -> Result<(), &'static str> {
    let (p, entry, rsp) = match c.load(abi::bootinfo::modules::HELLO, b"hello\0", b"") {
        Ok(Reply::Loaded {
            process,
            entry,
            rsp,
        }) => (ProcessHandle::from_raw(process.0), entry, rsp),
        _ => return Err("the loader did not load hello"),
    };
    // SAFETY: another process: nothing of this program's runs there.
    let t = unsafe { p.space().start_thread(entry, rsp, HELLO_QUIET) };
    let r = match t {
        Ok(t) => {
            let _ = t.close();
            match p.wait().map(status::decode) {
                Ok(Status::Exited(0)) => Ok(()),
                _ => Err("hello did not exit with 0"),
            }
        }
        Err(_) => {
            let _ = p.kill();
            Err("thread_start failed")
        }
    };
    let _ = p.close();
    r
}

pub fn spawn_exit_wait(samples: &mut [u64]) -> Result<usize, &'static str> {
    let names = names::endpoint(1_000_000_000).ok_or("init gave no name-service handle")?;
    let named = Named::<Loader>::new(names, libipc::loader::NAME, None)
        .map_err(|_| "the loader is not registered")?;
    let mut buf = [0u8; BUFFER];
    let mut c = Client::new(named, &mut buf);
    for _ in 0..WARMUP {
        once(&mut c)?;
    }
    let samples = &mut samples[..ITERS];
    for s in samples.iter_mut() {
        let t0 = rdtsc();
        once(&mut c)?;
        *s = rdtsc() - t0;
    }
    Ok(samples.len())
}
