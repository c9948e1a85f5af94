//! Starting programs: the loader (looked up, and again after it died)
//! loads a module into a new process, which `spawn` registers as a child
//! and `exec` puts in its caller's slot; `adopt` and `fork` register a
//! process made elsewhere.

use super::{failed, Kernel, Server};
use abi::status::Ended;
use libipc::ipc::{self, Endpoint};
use libipc::loader;
use libipc::procmgr::Reply;
use libipc::server::Caller;
use libipc::sys::ProcessHandle;
use libipc::wire::CallError;
use libipc::{names, Error};
use procmgr::table::{self, Pid, INIT};

impl Server {
    /// The loader's endpoint (looked up again after `PeerDied` or
    /// `NotDelivered`).
    /// After a death it waits (at most `names::RECOVERY_NS`) for init
    /// to register the successor: a spawn while the loader restarts is
    /// retried on the new one, not refused `NotFound` (supervise).
    fn loader(&mut self, again: bool) -> Result<Endpoint, Error> {
        let mut stale = 0;
        if again {
            if let Some((old, instance)) = self.loader.take() {
                let _ = ipc::handle_close(old.0);
                stale = instance;
            }
        }
        if let Some((l, _)) = self.loader {
            return Ok(l);
        }
        let wait = if again { names::RECOVERY_NS } else { 0 };
        let (ep, instance) =
            names::lookup_newer(self.names, loader::NAME, stale, wait).map_err(|_| {
                if again {
                    Error::PeerDied
                } else {
                    Error::NotFound
                }
            })?;
        self.loader = Some((ep, instance));
        Ok(ep)
    }

    /// Loads `module` through the loader: the process (not started),
    /// its entry and stack pointer.
    fn load(
        &mut self,
        module: &str,
        argv: &[u8],
        envp: &[u8],
    ) -> Result<(ProcessHandle, u64, u64), Error> {
        let mut buf = [0u8; loader::BUFFER];
        let mut again = false;
        loop {
            let ep = self.loader(again)?;
            let mut c = loader::Client::new(Caller::new(ep, None), &mut buf);
            return match c.load(module, argv, envp) {
                Ok(loader::Reply::Loaded {
                    process,
                    entry,
                    rsp,
                }) => Ok((ProcessHandle::from_raw(process.0), entry, rsp)),
                Ok(loader::Reply::NotFound {}) => Err(Error::NotFound),
                Ok(loader::Reply::Refused { .. } | loader::Reply::BadArgs { .. }) => {
                    Err(Error::InvalidArgument)
                }
                Ok(loader::Reply::Failed { error }) => {
                    Err(Error::try_from(error).unwrap_or(Error::InvalidArgument))
                }
                // Peer death: one retry on the successor (a load is
                // idempotent, and NotDelivered was never taken).
                Err(CallError::Transport(Error::PeerDied | Error::NotDelivered)) if !again => {
                    again = true;
                    continue;
                }
                Err(CallError::Transport(e)) => Err(e),
                Err(_) => Err(Error::InvalidArgument),
            };
        }
    }

    pub(super) fn spawn(
        &mut self,
        caller: Pid,
        module: &str,
        argv: &[u8],
        envp: &[u8],
    ) -> Reply<'static> {
        let (p, entry, rsp) = match self.load(module, argv, envp) {
            Ok(x) => x,
            Err(e) => return failed(e),
        };
        let pid = match self.register(caller, module, p, true, true) {
            Ok((pid, _)) => pid,
            Err(e) => return failed(e),
        };
        // SAFETY: the thread runs in the new process, at the entry the
        // loader mapped, on the stack it built.
        match unsafe { p.space().start_thread(entry, rsp, 0) } {
            Ok(t) => {
                let _ = t.close();
                Reply::Pid {
                    pid: u64::from(pid),
                }
            }
            Err(e) => {
                self.kill_slot(pid, Ended::Killed);
                failed(e)
            }
        }
    }

    pub(super) fn exec(
        &mut self,
        caller: Pid,
        module: &str,
        argv: &[u8],
        envp: &[u8],
    ) -> Reply<'static> {
        let Some(slot) = self.table.slot(caller) else {
            return failed(Error::NotFound);
        };
        let (p, entry, rsp) = match self.load(module, argv, envp) {
            Ok(x) => x,
            Err(e) => return failed(e),
        };
        let old = self.kernel[slot];
        // The old image goes first (its handles with it: the kernel
        // closes them), then the new one takes its slot and PID.
        let oldp = ProcessHandle::from_raw(old.process);
        let _ = oldp.kill();
        if old.reaps {
            let _ = oldp.wait();
        } else {
            let _ = oldp.close();
        }
        self.kernel[slot] = Kernel::default();
        // The old image's waits died with it: its waiters go untold,
        // so none takes a child's status from the new image (breaku).
        let stale = self.table.replace_image(caller);
        self.release(&stale);
        if let Err(e) = self.attach(slot, caller, p, true, true) {
            let _ = p.kill();
            let _ = p.close();
            self.ended(slot, Ended::Killed);
            return failed(e);
        }
        self.table.rename(caller, module);
        // SAFETY: as in `spawn`.
        match unsafe { p.space().start_thread(entry, rsp, 0) } {
            Ok(t) => {
                let _ = t.close();
            }
            Err(_) => self.kill_slot(caller, Ended::Killed),
        }
        // Nobody hears this: the caller was the old image.
        Reply::Done {}
    }

    pub(super) fn adopt(&mut self, process: u32, program: &str, faults: bool) -> Reply<'static> {
        match self.register(
            INIT,
            program,
            ProcessHandle::from_raw(process),
            false,
            faults,
        ) {
            // Where its endpoint landed in the process: init tells a
            // process it re-adopted after a restart (gaps2).
            Ok((pid, handle)) => Reply::Adopted {
                pid: u64::from(pid),
                handle: u64::from(handle),
            },
            Err(e) => failed(e),
        }
    }

    pub(super) fn fork(&mut self, caller: Pid, child: u32) -> Reply<'static> {
        let name = match self.table.get(caller) {
            Some(p) => {
                let mut n = [0u8; table::NAME_BYTES];
                let s = p.name();
                n[..s.len()].copy_from_slice(s.as_bytes());
                (n, s.len())
            }
            None => {
                let _ = ipc::handle_close(child);
                return failed(Error::NotFound);
            }
        };
        let name = core::str::from_utf8(&name.0[..name.1]).unwrap_or("");
        match self.register(caller, name, ProcessHandle::from_raw(child), true, true) {
            Ok((pid, _)) => Reply::Pid {
                pid: u64::from(pid),
            },
            Err(e) => failed(e),
        }
    }
}
