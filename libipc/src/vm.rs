//! Building and editing processes through handles (issue 11): empty
//! processes ([`process_create`]), copy-on-write clones ([`space_clone`]),
//! mapping into a space the caller holds MAP on ([`Space`]), memory objects
//! ([`MemoryHandle`]) shared into spaces, and threads started in another
//! process ([`Space::start_thread`]).

use crate::sys::{syscall4_rdx, syscall6};
use crate::task::{ProcessHandle, ThreadHandle};
use abi::{decode_result, Error, Sysnum};

/// A vm syscall that writes no user memory.
fn call(n: Sysnum, a: [u64; 6]) -> Result<u64, Error> {
    // SAFETY: the vm calls below write no memory of the caller's except
    // `space_unmap`/`space_protect` on its own space, whose callers carry
    // that contract (`Space::unmap`).
    decode_result(unsafe { syscall6(n, a[0], a[1], a[2], a[3], a[4], a[5]) })
}

/// The address space a vm call edits: the caller's own, or that of a
/// process it holds a handle with MAP to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    /// The caller's own space ([`abi::vm::SELF`]).
    Own,
    /// The space of the process this handle names.
    Of(ProcessHandle),
}

impl Space {
    fn reg(self) -> u64 {
        match self {
            Space::Own => abi::vm::SELF,
            Space::Of(p) => p.raw() as u64,
        }
    }

    /// Maps `len` bytes of zeroed pages at `addr` with `prot` ([`abi::prot`]);
    /// returns `addr`.
    pub fn map(self, addr: u64, len: u64, prot: u64) -> Result<u64, Error> {
        call(Sysnum::SpaceMap, [self.reg(), addr, len, prot, 0, 0])
    }

    /// Removes the mappings in `[addr, addr + len)`.
    ///
    /// # Safety
    /// In the caller's own space (or through a handle to its own process),
    /// nothing the program still uses may live in the range.
    pub unsafe fn unmap(self, addr: u64, len: u64) -> Result<(), Error> {
        call(Sysnum::SpaceUnmap, [self.reg(), addr, len, 0, 0, 0]).map(|_| ())
    }

    /// Changes the protection of the mapped pages in `[addr, addr + len)`.
    pub fn protect(self, addr: u64, len: u64, prot: u64) -> Result<(), Error> {
        call(Sysnum::SpaceProtect, [self.reg(), addr, len, prot, 0, 0]).map(|_| ())
    }

    /// Starts a thread in the process at `entry` with `arg` in RDI and the
    /// stack top `stack_top` (16-byte aligned, user addresses).
    ///
    /// # Safety
    /// For the caller's own process: as [`crate::sys::thread_spawn_at`]
    /// (the code at `entry` runs in this program).
    pub unsafe fn start_thread(
        self,
        entry: u64,
        stack_top: u64,
        arg: u64,
    ) -> Result<ThreadHandle, Error> {
        // SAFETY: thread_start writes no user memory; what the thread runs
        // is the caller's contract.
        let (rax, tid) =
            unsafe { syscall4_rdx(Sysnum::ThreadStart, self.reg(), entry, stack_top, arg) };
        decode_result(rax).map(|h| ThreadHandle::new(h as u32, tid))
    }
}

/// A new, empty process (no memory, no handles, no thread) the caller holds
/// with [`abi::rights_sets::PROCESS_BUILDER`].
pub fn process_create() -> Result<ProcessHandle, Error> {
    // SAFETY: process_create writes no user memory.
    let (rax, pid) = unsafe { syscall4_rdx(Sysnum::ProcessCreate, 0, 0, 0, 0) };
    decode_result(rax).map(|h| ProcessHandle::new(h as u32, pid))
}

/// A new, empty process that is a program of its own named `name` (its
/// own budgets; its fault lines carry the name): init and the loader only
/// (`PermissionDenied` for others; see `Sysnum::ProcessCreate`).
pub fn process_create_program(name: &str) -> Result<ProcessHandle, Error> {
    // SAFETY: process_create reads `name` (the kernel checks the range)
    // and writes no user memory.
    let (rax, pid) = unsafe {
        syscall4_rdx(
            Sysnum::ProcessCreate,
            name.as_ptr() as u64,
            name.len() as u64,
            0,
            0,
        )
    };
    decode_result(rax).map(|h| ProcessHandle::new(h as u32, pid))
}

/// Lets `p` create programs ([`process_create_program`]): init only.
pub fn process_allow_programs(p: ProcessHandle) -> Result<(), Error> {
    call(
        Sysnum::ProcessAllowPrograms,
        [p.raw() as u64, 0, 0, 0, 0, 0],
    )
    .map(|_| ())
}

/// A new process whose space is a copy-on-write copy of `src`'s (no
/// thread, no handles).
pub fn space_clone(src: Space) -> Result<ProcessHandle, Error> {
    // SAFETY: space_clone writes no user memory (it write-protects the
    // source's pages; the next write copies them transparently).
    let (rax, pid) = unsafe { syscall4_rdx(Sysnum::SpaceClone, src.reg(), 0, 0, 0) };
    decode_result(rax).map(|h| ProcessHandle::new(h as u32, pid))
}

impl ProcessHandle {
    /// The process's space, for [`Space`]'s calls.
    pub fn space(self) -> Space {
        Space::Of(self)
    }
}

/// A handle to a memory object (`mem_create` gives one with
/// [`abi::rights_sets::MEMORY_CREATOR`]). A name, not an owner: nothing is
/// closed on drop; the frames live while a handle or a mapping does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryHandle {
    raw: u32,
}

impl MemoryHandle {
    /// A memory object of `len` bytes (rounded up to pages) of zeroed
    /// frames.
    pub fn create(len: u64) -> Result<MemoryHandle, Error> {
        call(Sysnum::MemCreate, [len, 0, 0, 0, 0, 0]).map(|h| MemoryHandle { raw: h as u32 })
    }

    /// A handle number from elsewhere (a message, a test).
    pub const fn from_raw(raw: u32) -> MemoryHandle {
        MemoryHandle { raw }
    }

    /// The handle number.
    pub const fn raw(self) -> u32 {
        self.raw
    }

    /// Maps the object's bytes `[offset, offset + len)` (page-aligned
    /// offset) at `addr` in `space` with `prot`, shared; returns `addr`.
    pub fn map(
        self,
        space: Space,
        addr: u64,
        offset: u64,
        len: u64,
        prot: u64,
    ) -> Result<u64, Error> {
        call(
            Sysnum::MemMap,
            [self.raw as u64, space.reg(), addr, offset, len, prot],
        )
    }

    /// A new handle with `rights` (a subset; needs DUPLICATE).
    pub fn dup(self, rights: u32) -> Result<MemoryHandle, Error> {
        crate::ipc::handle_dup(self.raw, rights, 0).map(|raw| MemoryHandle { raw })
    }

    /// Closes the handle (mapped frames stay until unmapped).
    pub fn close(self) -> Result<(), Error> {
        crate::ipc::handle_close(self.raw)
    }
}
