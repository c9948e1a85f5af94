//! Process figures through procmgr (issue 11 item 3): `fork_exit_wait`
//! (fork, the child exits at once, the parent waits for it) and
//! `fork_chain_10` (a chain of 10 processes, each forking the next and
//! waiting for it). init adopts this program into procmgr, whose endpoint
//! lands at `abi::boot_handles::bench::PROCMGR` ([`attach`]).
//!
//! Through procmgr and the loader: `spawn_exit_wait` (procmgr `spawn`s
//! hello, which exits at once, and the caller waits for it) and
//! `fork_exec_wait` (fork; the child `exec`s hello, which exits at once;
//! the parent waits). hello exits at once for argv `quiet`
//! (apps/hello `QUIET_ARGV`). The loader alone, without procmgr, is
//! `spawn_loader_exit_wait` (spawn.rs).

use libipc::bench::rdtsc;
use libipc::procmgr::{self as pm, Ended, Fork};

/// Samples of `fork_exit_wait` (each is a whole process's life).
const FORK_ITERS: usize = 200;
/// Samples of `fork_chain_10`.
const CHAIN_ITERS: usize = 20;
/// Untimed rounds first.
const WARMUP: usize = 5;
/// Samples of `spawn_exit_wait` and `fork_exec_wait`.
const SPAWN_ITERS: usize = 100;
/// hello's argv that makes it exit 0 at once (apps/hello `QUIET_ARGV`).
const HELLO_QUIET_ARGV: &[u8] = b"quiet\0";
/// How long a wait may take.
const WAIT_US: u32 = 10_000_000;

/// Waits (up to 2 s) for the procmgr endpoint init's adoption gives.
pub fn attach() {
    if let Some(ep) = libipc::server::endpoint_at(abi::boot_handles::bench::PROCMGR, 2_000_000_000)
    {
        pm::set_endpoint(ep);
    }
}

fn fork_exit_wait_once() -> Result<(), &'static str> {
    match pm::fork().map_err(|_| "fork failed")? {
        Fork::Child => pm::exit(0),
        Fork::Parent(pid) => match pm::wait(Some(pid), Some(WAIT_US)) {
            Ok((_, Ended::Exited(0))) => Ok(()),
            _ => Err("the child did not exit with 0"),
        },
    }
}

/// `fork_exit_wait`: one fork, the child's `exit(0)`, the parent's wait.
pub fn fork_exit_wait(samples: &mut [u64]) -> Result<usize, &'static str> {
    if pm::endpoint().is_none() {
        return Err("no procmgr endpoint (init did not adopt bench)");
    }
    for _ in 0..WARMUP {
        fork_exit_wait_once()?;
    }
    let n = samples.len().min(FORK_ITERS);
    for s in samples[..n].iter_mut() {
        let t0 = rdtsc();
        fork_exit_wait_once()?;
        *s = rdtsc() - t0;
    }
    Ok(n)
}

/// A chain member at `depth`: forks the next unless 10 deep, waits for it.
fn chain(depth: i32) -> i32 {
    if depth == 10 {
        return depth;
    }
    match pm::fork() {
        Ok(Fork::Child) => pm::exit(chain(depth + 1)),
        Ok(Fork::Parent(pid)) => match pm::wait(Some(pid), Some(WAIT_US)) {
            Ok((_, Ended::Exited(c))) => c,
            _ => -1,
        },
        Err(_) => -1,
    }
}

/// `fork_chain_10`: this process and 9 descendants, each forking the next
/// and waiting for it (10 forks, exits and waits in all).
pub fn fork_chain_10(samples: &mut [u64]) -> Result<usize, &'static str> {
    if pm::endpoint().is_none() {
        return Err("no procmgr endpoint (init did not adopt bench)");
    }
    for _ in 0..WARMUP {
        if chain(0) != 10 {
            return Err("the chain broke");
        }
    }
    let n = samples.len().min(CHAIN_ITERS);
    for s in samples[..n].iter_mut() {
        let t0 = rdtsc();
        let depth = chain(0);
        *s = rdtsc() - t0;
        if depth != 10 {
            return Err("the chain broke");
        }
    }
    Ok(n)
}

/// Times `once` over [`SPAWN_ITERS`] samples after [`WARMUP`] rounds.
fn timed(
    samples: &mut [u64],
    once: fn() -> Result<(), &'static str>,
) -> Result<usize, &'static str> {
    if pm::endpoint().is_none() {
        return Err("no procmgr endpoint (init did not adopt bench)");
    }
    for _ in 0..WARMUP {
        once()?;
    }
    let n = samples.len().min(SPAWN_ITERS);
    for s in samples[..n].iter_mut() {
        let t0 = rdtsc();
        once()?;
        *s = rdtsc() - t0;
    }
    Ok(n)
}

fn spawn_exit_wait_once() -> Result<(), &'static str> {
    let pid = pm::spawn(abi::bootinfo::modules::HELLO, HELLO_QUIET_ARGV, b"")
        .map_err(|_| "procmgr did not spawn hello")?;
    match pm::wait(Some(pid), Some(WAIT_US)) {
        Ok((_, Ended::Exited(0))) => Ok(()),
        _ => Err("hello did not exit with 0"),
    }
}

/// `spawn_exit_wait`: procmgr `spawn`s hello through the loader (request,
/// load, attach, start), hello exits at once, the caller's wait reaps it.
pub fn spawn_exit_wait(samples: &mut [u64]) -> Result<usize, &'static str> {
    timed(samples, spawn_exit_wait_once)
}

fn fork_exec_wait_once() -> Result<(), &'static str> {
    match pm::fork().map_err(|_| "fork failed")? {
        Fork::Child => {
            let _ = pm::exec(abi::bootinfo::modules::HELLO, HELLO_QUIET_ARGV, b"");
            pm::exit(1)
        }
        Fork::Parent(pid) => match pm::wait(Some(pid), Some(WAIT_US)) {
            Ok((_, Ended::Exited(0))) => Ok(()),
            _ => Err("the exec'd hello did not exit with 0"),
        },
    }
}

/// `fork_exec_wait`: fork, the child `exec`s hello (which exits at once),
/// the parent's wait reaps it under the child's PID.
pub fn fork_exec_wait(samples: &mut [u64]) -> Result<usize, &'static str> {
    timed(samples, fork_exec_wait_once)
}
