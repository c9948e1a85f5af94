//! The process manager's protocol and client (issue 11 item 3): PIDs,
//! `fork`, `spawn`, `exec`, `exit`, `wait`/`waitpid`, `getpid`, `getppid`,
//! `kill`, `list`. The server is `servers/procmgr`; `docs/decisions.md`,
//! "procmgr", gives the rules.
//!
//! # Who calls
//! Every process procmgr manages holds one SEND handle to it badged with its
//! PID (given by procmgr, without DUPLICATE or TRANSFER, so it never leaves
//! the process): the badge is the caller's identity, a process can act only
//! as itself. A process procmgr forked or spawned finds it at
//! [`CHILD_HANDLE`] (its first handle); the `init=tests` program at
//! `abi::boot_handles::tests::PROCMGR`. Anyone else reaches procmgr by
//! name ([`NAME`]) with a handle that names no process: it may `list`,
//! `lookup` and `adopt`, nothing else.
//!
//! # Blocking waits
//! The kernel gives a server thread one reply capability: receiving the
//! next call abandons a held one. So procmgr never holds a waiter's call:
//! [`wait`] sends `WaitOn` with a copy of a notification, which reaps a
//! zombie at once or, if the child still runs, is recorded. When a
//! matching child ends procmgr reaps it for that waiter and signals the
//! outcome itself in the notification's word
//! ([`abi::status::wake`]): a wait is one request and one notification
//! wait (forku). A waiter that was not met (its child went to another
//! waiter, or it was replaced) is signalled "ask again". A wait that times
//! out takes its waiter back with `CancelWait`; if procmgr says it has
//! none, the signal is already in the notification and is read from there
//! ([`cancel_wait`]), so no status is lost. A notification that ended a
//! wait clean (no record at procmgr, its signal consumed) is kept for the
//! next wait.
//!
//! # Errors
//! Calls return [`abi::Error`]: `NotFound` for no such child or process
//! (the ECHILD of `wait`), `PermissionDenied` for a caller who may not,
//! `NoMemory` at a limit (processes, waiters), `BadHandle` when this
//! process has no procmgr endpoint, `PeerDied` when procmgr died holding
//! the call, `NotDelivered` when it was dead (or died) before taking it.

mod fork;
mod rejoin;

pub use abi::status::Ended;
pub use fork::{fork, Fork};
pub use rejoin::{rejoin, rejoin_through};

use crate::ipc::{self, Endpoint, Notification, Timeout};
use crate::server::Caller;
use abi::Error;
use core::sync::atomic::{AtomicU32, Ordering};
use wire::{CallError, CopiedHandle, Handle};

/// The name procmgr registers with init's name service.
pub const NAME: &str = "procmgr";
/// Bytes a procmgr client or server buffer needs (a module name and the
/// loader's arguments, with their words).
pub const BUFFER: usize = crate::loader::BUFFER;
/// Where a process procmgr forked, spawned or exec'd finds its procmgr
/// endpoint: its first handle.
pub const CHILD_HANDLE: u32 = ipc::FIRST_HANDLE;
/// The label of procmgr's answer to a fault message (not
/// [`abi::fault::RESUME`]: the kernel ends the faulting process).
pub const FAULT_KILL_LABEL: u32 = 7;

wire::protocol! {
    /// The process manager.
    pub protocol Procmgr<'a>;
    /// What clients ask.
    pub enum Request {
        /// Starts boot module `module` through the loader as a child of the
        /// caller: `Pid`, or `Failed` (`NotFound`: no loader or no such
        /// module; `InvalidArgument`: refused image or arguments).
        Spawn = 1 => fn spawn { module: &'a str, argv: &'a [u8], envp: &'a [u8] },
        /// Makes the running process `process` (a copy of a handle with
        /// KILL and WAIT) a child of init with a PID and gives it its
        /// procmgr endpoint: `Adopted`. With `faults`, procmgr becomes its fault
        /// handler too (a fault kills the whole process); without, its
        /// faults keep the kernel's default (the faulting thread ends),
        /// which the tests program's deliberately faulting threads need.
        Adopt = 2 => fn adopt { process: CopiedHandle, program: &'a str, faults: bool },
        /// Registers `child` (a copy of the handle `space_clone` gave, not
        /// started yet) as the caller's child: `Pid`. See [`fork`].
        Fork = 3 => fn fork { child: CopiedHandle },
        /// Replaces the caller with boot module `module` loaded anew (same
        /// PID): no reply on success (the caller is gone), `Failed` if the
        /// load failed (the caller goes on).
        Exec = 4 => fn exec { module: &'a str, argv: &'a [u8], envp: &'a [u8] },
        /// The caller is about to exit with `code`: `Done`.
        Exit = 5 => fn exit { code: i64 },
        /// Reaps a zombie child (`pid` 0: any): `Reaped`, `Running` if a
        /// matching child still runs, `Failed(NotFound)` if none.
        TryWait = 6 => fn try_wait { pid: u64 },
        /// As `TryWait`, but when a matching child still runs records
        /// `ntf` (a copy of a notification with SIGNAL) under the caller's
        /// name `cookie`: `Queued`. procmgr signals it once, with
        /// [`abi::status::wake`]'s word: the outcome (the child is reaped
        /// for this waiter) or "ask again".
        WaitOn = 7 => fn wait_on { pid: u64, ntf: CopiedHandle, cookie: u64 },
        /// The caller's PID: `Pid`.
        GetPid = 8 (idempotent) => fn getpid {},
        /// The caller's parent's PID: `Pid`.
        GetPpid = 9 (idempotent) => fn getppid {},
        /// Kills process `pid` (the caller's own descendants only; init's
        /// may kill any but init): `Done`.
        Kill = 10 => fn kill { pid: u64 },
        /// The first process in a table slot at or after `index`: `Entry`
        /// or `End`.
        List = 11 (idempotent) => fn list { index: u64 },
        /// Looks `name` up in init's name service on the caller's behalf
        /// (procmgr's children get no name-service handle of their own):
        /// `Found` or `Failed(NotFound)`.
        Lookup = 12 (idempotent) => fn lookup { name: &'a str },
        /// Takes back the caller's waiter recorded as `cookie`, unsignalled:
        /// `Done`; `Failed(NotFound)` if there is none (it was signalled
        /// already: read the notification).
        CancelWait = 13 => fn cancel_wait { cookie: u64 },
        /// The kernel's fault message (`abi::fault`), through the badged
        /// handle procmgr made the process's fault endpoint: the process is
        /// killed (reply label [`FAULT_KILL_LABEL`]).
        Fault = 0xfa17 => fn fault { vector: u64, error_code: u64, rip: u64, cr2: u64, tid: u64, rsp: u64 },
    }
    /// What procmgr answers.
    pub enum Reply {
        /// A PID (spawn, adopt, fork, getpid, getppid).
        Pid = 1 { pid: u64 },
        /// Done.
        Done = 2 {},
        /// Child `pid` was reaped; it ended with `status`
        /// ([`Ended::word`]).
        Reaped = 3 { pid: u64, status: u64 },
        /// A matching child still runs.
        Running = 4 {},
        /// The waiter is recorded; its notification will be signalled.
        Queued = 5 {},
        /// One process: its slot (ask for `index + 1` next), PID, parent,
        /// whether it is a zombie (then `status`), its program.
        Entry = 6 { index: u64, pid: u64, ppid_cpu: u64, zombie: bool, status: u64, program: &'a str },
        /// No process at or after that index.
        End = 7 {},
        /// An endpoint (moved to the caller).
        Found = 8 { ep: Handle },
        /// Refused: the `abi::Error` code.
        Failed = 9 { error: u64 },
        /// `Adopt`'s answer: the PID, and the handle number the procmgr
        /// endpoint got in the adopted process (its owner, init, tells
        /// a process re-adopted after a procmgr restart where it is).
        Adopted = 10 { pid: u64, handle: u64 },
    }
    /// Typed calls.
    pub struct Client;
}

const _: () = assert!(FAULT_KILL_LABEL == 7 && FAULT_KILL_LABEL != abi::fault::RESUME);

/// This process's procmgr endpoint (0: none known).
static ENDPOINT: AtomicU32 = AtomicU32::new(0);

/// Tells libipc where this process's procmgr endpoint is (the tests
/// program: `abi::boot_handles::tests::PROCMGR`). A forked child's is set
/// by [`fork`].
pub fn set_endpoint(ep: Endpoint) {
    // Relaxed: a handle number, read by this process's own calls.
    ENDPOINT.store(ep.0, Ordering::Relaxed);
}

/// This process's procmgr endpoint, if known.
pub fn endpoint() -> Option<Endpoint> {
    match ENDPOINT.load(Ordering::Relaxed) {
        0 => None,
        h => Some(Endpoint(h)),
    }
}

/// Small requests' buffer (no names, no arguments).
const SMALL: usize = 128;

fn err(e: CallError<Error>) -> Error {
    match e {
        CallError::Transport(e) => e,
        _ => Error::InvalidArgument,
    }
}

fn failed(code: u64) -> Error {
    Error::try_from(code).unwrap_or(Error::InvalidArgument)
}

/// A client over this process's procmgr endpoint, encoding into `buf`.
/// After a procmgr restart it finds the successor once, if this process
/// can ([`rejoin`]).
fn client(buf: &mut [u8]) -> Result<Client<'_, rejoin::Rejoining>, Error> {
    let ep = endpoint().ok_or(Error::BadHandle)?;
    Ok(Client::new(rejoin::Rejoining { ep, timeout: None }, buf))
}

/// A reply's result: `Failed` is its error, anything `ok` does not accept
/// a protocol violation.
fn answer<R>(
    r: Result<Reply<'_>, CallError<Error>>,
    ok: impl FnOnce(Reply<'_>) -> Option<R>,
) -> Result<R, Error> {
    match r.map_err(err)? {
        Reply::Failed { error } => Err(failed(error)),
        r => ok(r).ok_or(Error::InvalidArgument),
    }
}

fn pid_of(r: Reply<'_>) -> Option<u32> {
    match r {
        Reply::Pid { pid } => u32::try_from(pid).ok(),
        _ => None,
    }
}

/// This process's PID.
pub fn getpid() -> Result<u32, Error> {
    answer(client(&mut [0; SMALL])?.getpid(), pid_of)
}

/// This process's parent's PID (1 once re-parented to init).
pub fn getppid() -> Result<u32, Error> {
    answer(client(&mut [0; SMALL])?.getppid(), pid_of)
}

/// Kills process `pid` (a descendant of the caller).
pub fn kill(pid: u32) -> Result<(), Error> {
    answer(client(&mut [0; SMALL])?.kill(u64::from(pid)), |r| {
        matches!(r, Reply::Done {}).then_some(())
    })
}

/// Tells procmgr (unless it reaps this process), then ends this process
/// with `code`.
pub fn exit(code: i32) -> ! {
    // procmgr learns of the end from the kernel anyway: the notice only
    // records the code first, so a failure changes nothing. A process
    // procmgr reaps (a forked one) gets its code from the kernel's status
    // word (`process_exit(code)` gives exited(code)), so the notice, a
    // round trip of ~5,000 instructions per fork_exit_wait, is skipped
    // there (forkperf2); an adopted process's kernel status procmgr never
    // sees, so it still tells.
    // Relaxed: set in this process before any of its threads ran.
    if !REAPED_BY_PROCMGR.load(Ordering::Relaxed) {
        let mut buf = [0; SMALL];
        if let Ok(mut c) = client(&mut buf) {
            let _ = c.exit(i64::from(code));
        }
    }
    crate::sys::process_exit(code)
}

/// Set in a process procmgr registered as a child it reaps (a forked one:
/// its thread starts only after procmgr answered `Fork`): its exit status
/// reaches procmgr from the kernel.
static REAPED_BY_PROCMGR: core::sync::atomic::AtomicBool =
    core::sync::atomic::AtomicBool::new(false);

/// Starts boot module `module` with `argv`/`envp` (see
/// [`crate::loader`]) as a child: its PID.
pub fn spawn(module: &str, argv: &[u8], envp: &[u8]) -> Result<u32, Error> {
    answer(client(&mut [0; BUFFER])?.spawn(module, argv, envp), pid_of)
}

/// Replaces this process with boot module `module` (same PID); returns
/// only if that failed.
pub fn exec(module: &str, argv: &[u8], envp: &[u8]) -> Error {
    let mut buf = [0; BUFFER];
    let r = match client(&mut buf) {
        Ok(mut c) => answer(c.exec(module, argv, envp), |_| Some(())),
        Err(e) => Err(e),
    };
    match r {
        Err(e) => e,
        // procmgr answers a successful exec only if it could not end us.
        Ok(()) => Error::InvalidArgument,
    }
}

/// Adopts the running process `process` as a child of init (init, for
/// the programs it starts itself), with procmgr as its fault handler if
/// `faults`: its PID and the handle number its procmgr endpoint got in it.
pub fn adopt(
    ep: Endpoint,
    process: crate::task::ProcessHandle,
    program: &str,
    faults: bool,
) -> Result<(u32, u32), Error> {
    let mut buf = [0u8; SMALL];
    let mut c = Client::new(Caller::new(ep, None), &mut buf);
    match c
        .adopt(CopiedHandle(process.raw()), program, faults)
        .map_err(err)?
    {
        Reply::Failed { error } => Err(failed(error)),
        Reply::Adopted { pid, handle } => match (u32::try_from(pid), u32::try_from(handle)) {
            (Ok(pid), Ok(handle)) => Ok((pid, handle)),
            _ => Err(Error::InvalidArgument),
        },
        _ => Err(Error::InvalidArgument),
    }
}

/// Looks `name` up in the name service through procmgr: a SEND handle.
pub fn lookup(name: &str) -> Result<Endpoint, Error> {
    answer(client(&mut [0; SMALL])?.lookup(name), |r| match r {
        Reply::Found { ep } => Some(Endpoint(ep.0)),
        _ => None,
    })
}

/// One line of [`list`]: a process as procmgr sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcInfo {
    /// Its table slot (the next `list` index is `index + 1`).
    pub index: u64,
    /// PID.
    pub pid: u32,
    /// Parent's PID (0 for init).
    pub ppid: u32,
    /// `Some` for a zombie: how it ended.
    pub zombie: Option<Ended>,
    /// The CPU it runs on or last ran on (`None`: not known, e.g. a
    /// zombie, or init, which procmgr holds no handle to).
    pub cpu: Option<u32>,
    /// Its program's name (cut to 16 bytes).
    pub program: [u8; 16],
    /// Valid bytes of `program`.
    pub program_len: usize,
}

/// The first process at or after table slot `index` (`None`: no more).
pub fn list(index: u64) -> Result<Option<ProcInfo>, Error> {
    answer(client(&mut [0; SMALL])?.list(index), |r| match r {
        Reply::End {} => Some(None),
        Reply::Entry {
            index,
            pid,
            ppid_cpu,
            zombie,
            status,
            program,
        } => {
            // Six words at most: the parent in the low half, the CPU
            // (`u32::MAX`: unknown) in the high half.
            let (ppid, cpu) = (ppid_cpu as u32, (ppid_cpu >> 32) as u32);
            let mut p = [0u8; 16];
            let n = program.len().min(16);
            p[..n].copy_from_slice(&program.as_bytes()[..n]);
            Some(Some(ProcInfo {
                index,
                pid: pid as u32,
                ppid,
                zombie: zombie.then(|| Ended::from_word(status)),
                cpu: (cpu != u32::MAX).then_some(cpu),
                program: p,
                program_len: n,
            }))
        }
        _ => None,
    })
}

/// Waits for child `pid` (`None`: any) to end and reaps it: its PID and
/// how it ended. `NotFound` if there is no such child; `TimedOut` after
/// `timeout` (the waiter is then taken back: the child stays for a later
/// wait).
///
/// With no timeout the wait is still made again every [`RECHECK_US`], so
/// a procmgr that died (a restarted one never knew the child) ends it
/// with an error instead of a sleep for good.
pub fn wait(pid: Option<u32>, timeout: Timeout) -> Result<(u32, Ended), Error> {
    let target = u64::from(pid.unwrap_or(0));
    match timeout {
        Some(_) => wait_once(target, |n| ipc::wait(n, timeout)),
        None => wait_rechecking(target, |n| ipc::wait(n, Some(RECHECK_US))),
    }
}

/// How long a wait with no timeout blocks before it asks procmgr again:
/// a procmgr that died never signals the waits recorded with it.
pub const RECHECK_US: u32 = 1_000_000;

/// One wait over a kept or new notification, blocking with `block`.
fn wait_once(
    target: u64,
    block: impl FnMut(Notification) -> Result<u64, Error>,
) -> Result<(u32, Ended), Error> {
    let ntf = take_wait_ntf()?;
    let (r, clean) = wait_with(target, ntf, block);
    // A clean notification (no record at procmgr names it, no signal
    // pending) is kept for the next wait; any other is closed (procmgr may
    // still signal it, or its state is unknown).
    if clean {
        put_wait_ntf(ntf);
    } else {
        let _ = ipc::handle_close(ntf.0);
    }
    r
}

/// A wait with no timeout: `block` gives up with `TimedOut` now and then;
/// the wait is then taken back (`CancelWait`) and made again. A live
/// procmgr records it again; a dead one fails the cancel or the new
/// `WaitOn` (peer death: nobody would ever signal the old record), and
/// that error ends the wait.
fn wait_rechecking(
    target: u64,
    mut block: impl FnMut(Notification) -> Result<u64, Error>,
) -> Result<(u32, Ended), Error> {
    loop {
        match wait_once(target, &mut block) {
            Err(Error::TimedOut) => continue,
            r => return r,
        }
    }
}

/// The wait protocol over `ntf` (see the module docs), blocking with
/// `block` (which returns the signalled word, or `TimedOut` to stop
/// waiting): the outcome, and whether `ntf` is clean after it.
fn wait_with(
    target: u64,
    ntf: Notification,
    mut block: impl FnMut(Notification) -> Result<u64, Error>,
) -> (Result<(u32, Ended), Error>, bool) {
    use abi::status::wake::{decode, Wake};
    loop {
        let mut buf = [0; SMALL];
        let mut c = match client(&mut buf) {
            Ok(c) => c,
            Err(e) => return (Err(e), true),
        };
        match c.wait_on(target, CopiedHandle(ntf.0), u64::from(ntf.0)) {
            Ok(Reply::Reaped { pid, status }) => {
                return (Ok((pid as u32, Ended::from_word(status))), true)
            }
            Ok(Reply::Queued {}) => {}
            // Not recorded (procmgr closed its copy).
            Ok(Reply::Failed { error }) => return (Err(failed(error)), true),
            Ok(_) => return (Err(Error::InvalidArgument), false),
            // procmgr may have recorded it and died, or never saw it.
            Err(e) => return (Err(err(e)), false),
        }
        let word = match block(ntf) {
            Ok(w) => w,
            Err(Error::TimedOut) => {
                return match cancel_wait(ntf) {
                    Ok(None) => (Err(Error::TimedOut), true),
                    Ok(Some(done)) => (Ok(done), true),
                    // procmgr gone: the record can never be signalled.
                    Err(e @ (Error::PeerDied | Error::NotDelivered)) => (Err(e), false),
                    Err(_) => (Err(Error::TimedOut), false),
                };
            }
            Err(e) => return (Err(e), false),
        };
        match decode(word) {
            Wake::Delivered(pid, ended) => return (Ok((pid, ended)), true),
            // Clean again: ask again with it.
            Wake::Again => continue,
            Wake::Invalid => return (Err(Error::InvalidArgument), false),
        }
    }
}

/// Stops a wait recorded with `WaitOn` on `ntf` (cookie: its handle
/// number here) whose signal was not consumed: `None` if procmgr took the
/// waiter back unsignalled, the outcome if it had delivered one (read from
/// `ntf`, so it is never lost); either way `ntf` is clean after. `TimedOut`
/// if it had only said "ask again"; any other error leaves `ntf`'s state
/// unknown (do not reuse it).
pub fn cancel_wait(ntf: Notification) -> Result<Option<(u32, Ended)>, Error> {
    use abi::status::wake::{decode, Wake};
    let cancelled = answer(
        client(&mut [0; SMALL])?.cancel_wait(u64::from(ntf.0)),
        |r| matches!(r, Reply::Done {}).then_some(()),
    );
    match cancelled {
        Ok(()) => Ok(None),
        // No record: procmgr signalled it before this answer (one thread
        // serves both), so the word is there now.
        Err(Error::NotFound) => match decode(ipc::wait(ntf, Some(0))?) {
            Wake::Delivered(pid, ended) => Ok(Some((pid, ended))),
            Wake::Again => Err(Error::TimedOut),
            Wake::Invalid => Err(Error::InvalidArgument),
        },
        Err(e) => Err(e),
    }
}

/// A clean notification kept for the next [`wait`] (0: none): creating
/// and closing one per wait cost ~1,400 instructions of fork_exit_wait's.
/// A handle number of this process; a forked child forgets it
/// ([`forget_wait_ntf`]: handles are not inherited).
static WAIT_NTF: AtomicU32 = AtomicU32::new(0);

/// The kept notification, or a new one. Each is used by one waiting
/// thread at a time: taking it empties the slot.
fn take_wait_ntf() -> Result<Notification, Error> {
    // Relaxed: a handle number, used only by this process's threads, and
    // the swap hands it to exactly one of them.
    match WAIT_NTF.swap(0, Ordering::Relaxed) {
        0 => ipc::notification_create(),
        h => Ok(Notification(h)),
    }
}

/// Keeps `ntf` (clean: no signal pending, no record at procmgr) for the
/// next wait, or closes it if another is kept already.
fn put_wait_ntf(ntf: Notification) {
    if WAIT_NTF
        .compare_exchange(0, ntf.0, Ordering::Relaxed, Ordering::Relaxed)
        .is_err()
    {
        let _ = ipc::handle_close(ntf.0);
    }
}

/// In a forked child: the kept notification's number names nothing here
/// (or, later, some other object).
fn forget_wait_ntf() {
    WAIT_NTF.store(0, Ordering::Relaxed);
}

/// In a forked child: procmgr reaps it (see [`exit`]).
fn reaped_by_procmgr() {
    REAPED_BY_PROCMGR.store(true, Ordering::Relaxed);
}

/// As [`wait`] for child `pid` with no timeout, but calls `tick` every
/// `every_us` microseconds while the child runs (a foreground shell polls
/// for Ctrl-C there). One waiter stays recorded across the ticks.
pub fn wait_ticking(
    pid: u32,
    every_us: u32,
    mut tick: impl FnMut(),
) -> Result<(u32, Ended), Error> {
    let ticks = (RECHECK_US / every_us.max(1)).max(1);
    wait_rechecking(u64::from(pid), |n| {
        for _ in 0..ticks {
            match ipc::wait(n, Some(every_us)) {
                Err(Error::TimedOut) => tick(),
                other => return other,
            }
        }
        // Ask procmgr again (see `wait_rechecking`).
        Err(Error::TimedOut)
    })
}
