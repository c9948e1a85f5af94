//! Typed handles to threads and processes: what `thread_spawn` and
//! `process_spawn` give the creator, and what joining, waiting and killing
//! take (ids are only for display). A [`ThreadHandle`] cannot be passed where
//! a [`ProcessHandle`] or an endpoint is expected: each is its own type over
//! the raw handle number (the kernel checks the kind again: `WrongType`).
//!
//! A handle is a name, not an owner (like [`crate::ipc::Endpoint`]): it is
//! `Copy`, and nothing is closed on drop. A successful [`ThreadHandle::join`]
//! or [`ProcessHandle::wait`] reaps what it names and closes the handle; an
//! ended thread or process nobody joins is freed when its last handle is
//! closed ([`ThreadHandle::close`]).

use crate::sys;
use abi::Error;

macro_rules! task_handle {
    ($(#[$m:meta])* $name:ident, $what:literal) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $name {
            raw: u32,
            id: u64,
        }

        impl $name {
            /// A handle number from elsewhere (a message, a test); its id is
            /// unknown (0).
            pub const fn from_raw(raw: u32) -> Self {
                $name { raw, id: 0 }
            }

            /// What the kernel returned: the number and the id.
            pub(crate) const fn new(raw: u32, id: u64) -> Self {
                $name { raw, id }
            }

            /// The handle number.
            pub const fn raw(self) -> u32 {
                self.raw
            }

            #[doc = concat!("The ", $what, "'s id when known (0 otherwise): for display only.")]
            pub const fn id(self) -> u64 {
                self.id
            }

            /// A new handle to the same object with `rights` (a subset of
            /// this one's; [`abi::rights`]). Needs `DUPLICATE`.
            pub fn dup(self, rights: u32) -> Result<Self, Error> {
                crate::ipc::handle_dup(self.raw, rights, 0).map(|raw| $name { raw, id: self.id })
            }

            /// Closes the handle.
            pub fn close(self) -> Result<(), Error> {
                crate::ipc::handle_close(self.raw)
            }
        }

        impl core::fmt::Display for $name {
            /// The id (as logs and notes print it).
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                self.id.fmt(f)
            }
        }
    };
}

task_handle!(
    /// A handle to a thread (`thread_spawn` gives one with
    /// [`abi::rights_sets::THREAD_CREATOR`]).
    ThreadHandle,
    "thread"
);

task_handle!(
    /// A handle to a process (`process_spawn` gives one with
    /// [`abi::rights_sets::PROCESS_CREATOR`]).
    ProcessHandle,
    "process"
);

impl ThreadHandle {
    /// Waits for the thread to end; its status word ([`abi::status`]). Closes
    /// the handle on success.
    pub fn join(self) -> Result<u64, Error> {
        sys::thread_join(self)
    }

    /// Makes the thread end before it runs user code again.
    pub fn kill(self) -> Result<(), Error> {
        sys::thread_kill(self)
    }
}

impl ProcessHandle {
    /// Waits for the process to end; its status word ([`abi::status`]).
    /// Closes the handle on success.
    pub fn wait(self) -> Result<u64, Error> {
        sys::process_wait(self)
    }

    /// Ends every thread of the process.
    pub fn kill(self) -> Result<(), Error> {
        sys::process_kill(self)
    }
}

impl ProcessHandle {
    /// The handle with its pid filled in from the kernel (`process_id`):
    /// for a handle that came in a message (e.g. the loader's `Loaded`).
    pub fn with_id(self) -> Result<ProcessHandle, Error> {
        // SAFETY: process_id writes no user memory.
        let r =
            unsafe { crate::sys::syscall6(abi::Sysnum::ProcessId, self.raw as u64, 0, 0, 0, 0, 0) };
        abi::decode_result(r).map(|id| ProcessHandle { raw: self.raw, id })
    }

    /// The CPU the process runs on now, or last ran on (`process_id`'s
    /// second result): `Ok(None)` when it has no thread (not started yet,
    /// or ended).
    pub fn cpu(&self) -> Result<Option<u32>, Error> {
        // SAFETY: process_id writes no user memory.
        let (r, cpu) =
            unsafe { crate::sys::syscall4_rdx(abi::Sysnum::ProcessId, self.raw as u64, 0, 0, 0) };
        abi::decode_result(r).map(|_| u32::try_from(cpu).ok())
    }
}
