//! procmgr: serves [`libipc::procmgr::Procmgr`] over the process
//! [`table`](procmgr::table). Started by init (argument
//! [`SUPERVISED_ARG`](abi::bootinfo::names::SUPERVISED_ARG)), it registers
//! as `procmgr` with the name service init gave it.
//!
//! One thread does everything (the table has one owner, no lock):
//! - requests arrive badged: a process's own handle carries its PID, the
//!   fault endpoint of process P carries `FAULT_BADGE | P`, the handle
//!   registered by name carries [`NAMED_BADGE`];
//! - a notification bound to the thread learns of ends: every process's
//!   kernel handle is registered with `process_notify` on bit `slot % 64`;
//!   a signal makes procmgr check the processes on that bit (a probe
//!   registration on a notification no running process is registered on,
//!   which signals at once for an ended process) and hand each ended
//!   one's status to a waiter of its parent, reaped at once (the waiter's
//!   notification word carries it: `abi::status::wake`), or keep it as a
//!   zombie with its status.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod ring3 {
    use abi::bootinfo::names::SUPERVISED_ARG;
    use abi::rights;
    use abi::status::wake;
    use abi::status::Ended;
    use libipc::hw::{process_notify, process_set_fault_ep_badged};
    use libipc::ipc::{self, Endpoint, Notification};

    use libipc::procmgr::{Procmgr, Reply, Request, BUFFER, NAME};
    use libipc::server::{self, Caller};
    use libipc::sys::ProcessHandle;
    use libipc::wire::{Handle, Handler};
    use libipc::{names, println, Error};
    use procmgr::table::{self, Pid, Table, Target, Wake, INIT, MAX_PROCS};

    /// How long to wait for init's `handle_give`.
    const GIVE_TIMEOUT_NS: u64 = 5_000_000_000;
    /// The badge of the handle clients get by name (above every PID).
    const NAMED_BADGE: u64 = 1 << 40;
    /// The fault endpoint of process P is badged `FAULT_BADGE | P`.
    const FAULT_BADGE: u64 = 1 << 41;
    const _: () = assert!((table::PID_LIMIT as u64) < NAMED_BADGE);

    /// `spawn`, `exec`, `adopt` and `fork`, and the loader they use.
    mod launch;

    /// Who called.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Caller_ {
        /// A managed process (its own handle).
        Process(Pid),
        /// The kernel, for a fault of this process.
        Fault(Pid),
        /// Anyone through the named handle.
        Named,
        /// Nobody we know (a stale or forged badge).
        Unknown,
    }

    fn who(badge: u64) -> Caller_ {
        let pid = (badge & 0xffff_ffff) as Pid;
        match badge & !0xffff_ffff {
            0 if pid > INIT => Caller_::Process(pid),
            FAULT_BADGE if pid > INIT => Caller_::Fault(pid),
            NAMED_BADGE if pid == 0 => Caller_::Named,
            _ => Caller_::Unknown,
        }
    }

    /// The kernel side of one table slot.
    #[derive(Clone, Copy, Default)]
    struct Kernel {
        /// procmgr's handle to the process (0: none).
        process: u32,
        /// Whether procmgr may reap it with `process_wait` (not for an
        /// adopted process: its starter waits, and one wait reaps).
        reaps: bool,
        /// How procmgr ended it (kill, fault) or what it said at exit:
        /// wins over the kernel's word (which says `exited(-1)` for a kill).
        reason: Option<Ended>,
    }

    struct Server {
        table: Table,
        kernel: [Kernel; MAX_PROCS],
        /// Our endpoint (every right).
        ep: Endpoint,
        /// Bound to the serving thread: process ends.
        ends: Notification,
        /// init's name service.
        names: Endpoint,
        /// The loader, once looked up, and its registration's instance.
        loader: Option<(Endpoint, u64)>,
        /// The end probe kept for the next [`has_ended`](Server::has_ended):
        /// no process is registered on it and no signal is pending.
        probe: Option<Notification>,
    }

    fn bit(slot: usize) -> u64 {
        1 << (slot % 64)
    }

    fn code(e: table::Error) -> Error {
        match e {
            table::Error::Full | table::Error::TooManyWaiters => Error::NoMemory,
            table::Error::NoSuchProcess | table::Error::NoChild => Error::NotFound,
            table::Error::Denied => Error::PermissionDenied,
        }
    }

    fn failed(e: Error) -> Reply<'static> {
        Reply::Failed { error: e as u64 }
    }

    impl Server {
        /// Makes procmgr the fault handler of `p` (PID `pid`), gives it its
        /// procmgr endpoint and watches its end; records the handle in
        /// `slot`.
        fn attach(
            &mut self,
            slot: usize,
            pid: Pid,
            p: ProcessHandle,
            reaps: bool,
            faults: bool,
        ) -> Result<u32, Error> {
            // SEND only in the process: the handle can never leave it, so
            // its badge stays its identity. Badged in the give itself (one
            // call, not a dup, a give and a close: forku).
            let given = ipc::handle_give_badged(p, self.ep.0, rights::SEND, u64::from(pid))?;
            process_notify(p, self.ends, bit(slot))?;
            if faults {
                // Last, so nothing after it can fail and leave procmgr the
                // fault handler of a process it does not know. Badged by
                // the kernel as it records it (no copy to make and close).
                process_set_fault_ep_badged(p, self.ep, FAULT_BADGE | u64::from(pid))?;
            }
            self.kernel[slot] = Kernel {
                process: p.raw(),
                reaps,
                reason: None,
            };
            Ok(given)
        }

        /// Records a new child of `parent` for process `p` and attaches it;
        /// on failure kills `p` (if `kill`), closes it and drops the entry.
        fn register(
            &mut self,
            parent: Pid,
            name: &str,
            p: ProcessHandle,
            reaps: bool,
            faults: bool,
        ) -> Result<(Pid, u32), Error> {
            let (pid, slot) = match self.table.insert(parent, name) {
                Ok(x) => x,
                Err(e) => {
                    let _ = p.close();
                    return Err(code(e));
                }
            };
            let given = self.attach(slot, pid, p, reaps, faults);
            if let Err(e) = given {
                if reaps {
                    let _ = p.kill();
                }
                let _ = p.close();
                self.kernel[slot] = Kernel::default();
                // Never started and never named to anyone: gone without a
                // status (a wait-any of the parent must not get it).
                let _ = self.table.remove_new(pid);
                return Err(e);
            }
            Ok((pid, given.unwrap_or(0)))
        }

        /// Tells each released waiter ([`abi::status::wake`]'s word) and
        /// closes our copy of its notification.
        fn release(&self, r: &table::Released) {
            for (token, how) in r.iter() {
                let word = match how {
                    Wake::Drop => None,
                    Wake::Again => Some(wake::AGAIN),
                    Wake::Delivered(pid, st) => Some(wake::delivered(pid, st)),
                };
                if let Some(w) = word {
                    let _ = ipc::signal(Notification(token), w);
                }
                let _ = ipc::handle_close(token);
            }
        }

        /// Kills the process `pid`, recording `why` (its end arrives as a
        /// notification).
        fn kill_slot(&mut self, pid: Pid, why: Ended) {
            if let Some(slot) = self.table.slot(pid) {
                let k = &mut self.kernel[slot];
                if k.process != 0 {
                    k.reason = Some(why);
                    let _ = ProcessHandle::from_raw(k.process).kill();
                }
            }
        }

        fn wait(&mut self, caller: Pid, pid: u64, ntf: Option<(u32, u64)>) -> Reply<'static> {
            let target = match pid {
                0 => Target::Any,
                p => match Pid::try_from(p) {
                    Ok(p) => Target::Pid(p),
                    Err(_) => Target::Pid(0),
                },
            };
            let r = match self.table.wait(caller, target) {
                Ok((Some((pid, st)), rel)) => {
                    self.release(&rel);
                    Reply::Reaped {
                        pid: u64::from(pid),
                        status: st.word(),
                    }
                }
                Ok((None, _)) => match ntf {
                    None => Reply::Running {},
                    Some((n, cookie)) => match self.table.add_waiter(caller, target, n, cookie) {
                        // The copy is the table's now (closed on release).
                        Ok(replaced) => {
                            // A waiter this one replaced (the caller's
                            // bound): woken, so a live one asks again.
                            if let Some(old) = replaced {
                                let _ = ipc::signal(Notification(old), wake::AGAIN);
                                let _ = ipc::handle_close(old);
                            }
                            return Reply::Queued {};
                        }
                        Err(e) => failed(code(e)),
                    },
                },
                Err(e) => failed(code(e)),
            };
            if let Some((n, _)) = ntf {
                let _ = ipc::handle_close(n);
            }
            r
        }

        /// `CancelWait`: the caller's waiter `cookie` taken back
        /// unsignalled, or `NotFound` (it was signalled already).
        fn cancel_wait(&mut self, caller: Pid, cookie: u64) -> Reply<'static> {
            match self.table.cancel_waiter(caller, cookie) {
                Some(token) => {
                    let _ = ipc::handle_close(token);
                    Reply::Done {}
                }
                None => failed(Error::NotFound),
            }
        }

        fn list(&self, index: u64) -> Reply<'_> {
            let start = usize::try_from(index).unwrap_or(usize::MAX);
            for i in start..MAX_PROCS {
                if let Some(p) = self.table.at(i) {
                    let (zombie, status) = match p.state {
                        table::State::Running => (false, 0),
                        table::State::Zombie(st) => (true, st.word()),
                    };
                    // The kernel's answer for the process behind our handle
                    // (none for init, or once it ended): `u32::MAX` unknown.
                    let k = self.kernel[i].process;
                    let cpu = (k != 0 && !zombie)
                        .then(|| ProcessHandle::from_raw(k).cpu().ok().flatten())
                        .flatten()
                        .unwrap_or(u32::MAX);
                    return Reply::Entry {
                        index: i as u64,
                        pid: u64::from(p.pid),
                        ppid_cpu: u64::from(p.ppid) | u64::from(cpu) << 32,
                        zombie,
                        status,
                        program: p.name(),
                    };
                }
            }
            Reply::End {}
        }

        /// Looks `name` up for `caller`: badged with the caller's own
        /// kernel pid (`LookupFor`), so the console prints its lines under
        /// it, not procmgr's; under procmgr's badge when the caller's pid
        /// is not known (no kernel handle).
        fn lookup(&mut self, caller: Option<Pid>, name: &str) -> Reply<'static> {
            let kernel_pid = caller
                .and_then(|p| self.table.slot(p))
                .map(|slot| self.kernel[slot].process)
                .filter(|&h| h != 0)
                .and_then(|h| ProcessHandle::from_raw(h).with_id().ok())
                .map(|h| h.id());
            let found = match kernel_pid {
                Some(pid) => names::lookup_for(self.names, name, pid),
                None => names::lookup(self.names, name),
            };
            match found {
                // Moved on to the caller with the reply.
                Ok((ep, _)) => Reply::Found { ep: Handle(ep.0) },
                Err(_) => failed(Error::NotFound),
            }
        }

        fn fault(&mut self, pid: Pid, vector: u64, rip: u64, cr2: u64) -> Reply<'static> {
            let name = self.table.get(pid).map_or("?", |p| p.name());
            println!(
                "procmgr: pid {pid} ({name}) killed by fault: vector {vector} ({}) rip={rip:#x} cr2={cr2:#x}",
                fault_name(vector)
            );
            if let Some(slot) = self.table.slot(pid) {
                self.kernel[slot].reason = Some(Ended::Faulted(vector as u8));
            }
            // Any label but RESUME ends the process with faulted(vector).
            Reply::Done {}
        }

        /// The process in `slot` ended with `st` (the kernel handle is
        /// already gone): record it in the table.
        fn ended(&mut self, slot: usize, st: Ended) {
            let Some(pid) = self.table.at(slot).map(|p| p.pid) else {
                return;
            };
            self.kernel[slot] = Kernel::default();
            if let Ok(out) = self.table.end(pid, st) {
                self.release(&out.released);
            }
        }

        /// Whether the process behind `h` has ended (see the module docs):
        /// registering it on a notification signals that at once if it
        /// has. A fresh notification each time (breakit): the kernel keeps
        /// one registration per notification, so with one shared probe
        /// every process probed while running stayed registered on it and
        /// its later end left a signal there that the next probe of a
        /// running process took for its own end (procmgr then blocked in
        /// `process_wait` on a running process). Closing the notification
        /// leaves its registration signalling nobody (the kernel prunes
        /// it); the process stays registered on `ends`.
        ///
        /// forkperf2: the probe is kept after a probe that found the
        /// process ended, the common case (its bit was signalled because it
        /// ended): the kernel signalled it at once without recording a
        /// registration (or the registration fired and the kernel took it
        /// before signalling: `lifecycle` takes the list, then signals), and
        /// the wait consumed the signal, so it is again a notification no
        /// process is registered on, with nothing pending. Any other
        /// outcome (running: it stays registered there; an error) closes
        /// it as before. Saves a create and a close per end.
        fn has_ended(&mut self, h: ProcessHandle) -> bool {
            let probe = match self.probe.take() {
                Some(p) => p,
                None => match ipc::notification_create() {
                    Ok(p) => p,
                    // Checked again at the next signal of its bit.
                    Err(_) => return false,
                },
            };
            let ended = process_notify(h, probe, 1).is_ok() && ipc::wait(probe, Some(0)).is_ok();
            if ended {
                self.probe = Some(probe);
            } else {
                let _ = ipc::handle_close(probe.0);
            }
            ended
        }

        fn check_ends(&mut self, bits: u64) {
            for slot in 0..MAX_PROCS {
                let k = self.kernel[slot];
                if k.process == 0 || bit(slot) & bits == 0 {
                    continue;
                }
                let h = ProcessHandle::from_raw(k.process);
                if !self.has_ended(h) {
                    continue;
                }
                let kernel_word = if k.reaps {
                    h.wait().ok()
                } else {
                    let _ = h.close();
                    None
                };
                let st = k
                    .reason
                    .or(kernel_word.map(Ended::from_word))
                    .unwrap_or(Ended::Killed);
                self.ended(slot, st);
            }
        }
    }

    fn fault_name(v: u64) -> &'static str {
        match v {
            0 => "divide error",
            6 => "invalid opcode",
            13 => "general protection",
            14 => "page fault",
            _ => "exception",
        }
    }

    impl Handler<Procmgr> for Server {
        fn handle<'r>(&'r mut self, badge: u64, req: Request<'r>) -> Reply<'r> {
            let me = who(badge);
            // A process is served only while the table knows it running.
            let me = match me {
                Caller_::Process(p) | Caller_::Fault(p)
                    if !self
                        .table
                        .get(p)
                        .is_some_and(|e| e.state == table::State::Running) =>
                {
                    Caller_::Unknown
                }
                other => other,
            };
            match (me, req) {
                (
                    Caller_::Fault(p),
                    Request::Fault {
                        vector, rip, cr2, ..
                    },
                ) => self.fault(p, vector, rip, cr2),
                (_, Request::Fault { .. }) | (Caller_::Fault(_), _) => {
                    failed(Error::PermissionDenied)
                }
                (
                    Caller_::Named,
                    Request::Adopt {
                        process,
                        program,
                        faults,
                    },
                ) => self.adopt(process.0, program, faults),
                (_, Request::Adopt { process, .. }) => {
                    let _ = ipc::handle_close(process.0);
                    failed(Error::PermissionDenied)
                }
                (Caller_::Named | Caller_::Process(_), Request::List { index }) => self.list(index),
                (Caller_::Named, Request::Lookup { name }) => self.lookup(None, name),
                (Caller_::Process(p), Request::Lookup { name }) => self.lookup(Some(p), name),
                (Caller_::Process(p), req) => self.serve_process(p, req),
                (_, Request::Fork { child }) => {
                    let _ = ipc::handle_close(child.0);
                    failed(Error::PermissionDenied)
                }
                (_, Request::WaitOn { ntf, .. }) => {
                    let _ = ipc::handle_close(ntf.0);
                    failed(Error::PermissionDenied)
                }
                _ => failed(Error::PermissionDenied),
            }
        }

        fn notified(&mut self, bits: u64) {
            self.check_ends(bits);
        }
    }

    impl Server {
        fn serve_process<'r>(&'r mut self, p: Pid, req: Request<'r>) -> Reply<'r> {
            match req {
                Request::Spawn { module, argv, envp } => self.spawn(p, module, argv, envp),
                Request::Fork { child } => self.fork(p, child.0),
                Request::Exec { module, argv, envp } => self.exec(p, module, argv, envp),
                Request::Exit { code } => {
                    if let Some(slot) = self.table.slot(p) {
                        if self.kernel[slot].reason.is_none() {
                            self.kernel[slot].reason = Some(Ended::Exited(code as i32));
                        }
                    }
                    Reply::Done {}
                }
                Request::TryWait { pid } => self.wait(p, pid, None),
                Request::WaitOn { pid, ntf, cookie } => self.wait(p, pid, Some((ntf.0, cookie))),
                Request::CancelWait { cookie } => self.cancel_wait(p, cookie),
                Request::GetPid {} => Reply::Pid { pid: u64::from(p) },
                Request::GetPpid {} => Reply::Pid {
                    pid: u64::from(self.table.ppid(p).unwrap_or(0)),
                },
                Request::Kill { pid } => {
                    let Ok(target) = Pid::try_from(pid) else {
                        return failed(Error::NotFound);
                    };
                    match self.table.may_kill(p, target) {
                        Ok(()) => {
                            self.kill_slot(target, Ended::Killed);
                            Reply::Done {}
                        }
                        Err(e) => failed(code(e)),
                    }
                }
                // Handled by the caller.
                Request::List { .. }
                | Request::Lookup { .. }
                | Request::Adopt { .. }
                | Request::Fault { .. } => failed(Error::PermissionDenied),
            }
        }
    }

    /// Makes our endpoint and registers a badged copy as `procmgr`.
    fn register(names: Endpoint, ep: Endpoint) -> Result<(), Error> {
        let copy = ipc::handle_dup(
            ep.0,
            rights::SEND | rights::DUPLICATE | rights::TRANSFER,
            NAMED_BADGE,
        )?;
        let mut buf = [0u8; names::BUFFER];
        let mut c = names::Client::new(Caller::new(names, None), &mut buf);
        let r = c.register(NAME, libipc::wire::CopiedHandle(copy));
        let _ = ipc::handle_close(copy);
        match r {
            Ok(names::Reply::Registered { .. }) => Ok(()),
            other => {
                println!("procmgr: registering failed: {other:?}");
                Err(Error::PermissionDenied)
            }
        }
    }

    /// The server's handles: made and registered before it serves.
    struct Handles {
        names: Endpoint,
        ep: Endpoint,
        ends: Notification,
    }

    fn setup() -> Result<Handles, Error> {
        let names = server::first_endpoint(GIVE_TIMEOUT_NS).ok_or(Error::BadHandle)?;
        let ep = ipc::endpoint_create()?;
        let ends = ipc::notification_create()?;
        ipc::bind(Some(ends))?;
        register(names, ep)?;
        Ok(Handles { names, ep, ends })
    }

    const NO_KERNEL: Kernel = Kernel {
        process: 0,
        reaps: false,
        reason: None,
    };

    /// The server lives in a static, built in place: its table is about
    /// 20 KiB (4 waiters per entry, breakit), and a `Server` built on the
    /// stack and moved here left copies in `main`'s frame that, inlined
    /// with the serving loop, took 59 KiB of the 64 KiB stack (the merged
    /// tree's `fork_exit_wait` overflowed it).
    static mut SERVER: Server = Server {
        table: Table::new(),
        kernel: [NO_KERNEL; MAX_PROCS],
        ep: Endpoint(0),
        ends: Notification(0),
        names: Endpoint(0),
        loader: None,
        probe: None,
    };

    #[no_mangle]
    fn main(arg: u64) -> i32 {
        // A demand-zero stack takes all its frames now (see the function).
        libipc::rt::pretouch_stack();
        if arg != SUPERVISED_ARG {
            println!("procmgr: not started by init");
            return 1;
        }
        let h = match setup() {
            Ok(h) => h,
            Err(e) => {
                println!("procmgr: cannot start: {e}");
                return 1;
            }
        };
        // SAFETY: main is procmgr's only thread and runs once: this is the
        // only reference to SERVER ever made.
        let s = unsafe { &mut *core::ptr::addr_of_mut!(SERVER) };
        (s.names, s.ep, s.ends) = (h.names, h.ep, h.ends);
        let ep = s.ep;
        let (mut a, mut b) = ([0u8; BUFFER], [0u8; BUFFER]);
        match server::serve::<Procmgr, _>(ep, s, &mut a, &mut b) {
            Ok(()) => 0,
            Err(e) => {
                println!("procmgr: serving failed: {e}");
                2
            }
        }
    }
}

/// On the host the server is a stub (its logic is tested in `lib.rs`).
#[cfg(not(target_os = "none"))]
fn main() {}
