//! The loader server's protocol (issue 11 item 2): ELF64 programs become
//! processes. The server itself is `servers/loader`; its checks are the
//! `elfload` library's (see `docs/decisions.md`, "loader").
//!
//! A client finds the loader by name ([`NAME`], through init's name
//! service). Both requests build a *new* process and hand it back not yet
//! running: the caller moves it on as it likes (sets its fault endpoint,
//! gives it handles) and then starts it with
//! `Space::start_thread(entry, rsp, 0)` from [`Reply::Loaded`]. The
//! loader keeps no handle to what it built.
//!
//! # Arguments
//! `argv` and `envp` are each a run of NUL-terminated strings laid end to
//! end (`b"sh\0-c\0"` is two arguments; empty is none). The loader puts
//! them on the new process's SysV initial stack with the auxiliary vector
//! (AT_PHDR, AT_PHNUM, AT_ENTRY, AT_PAGESZ, AT_RANDOM). Together at most
//! [`MAX_ARGS_BYTES`] bytes; a string without its NUL is [`Reply::BadArgs`].
//!
//! # Retrying after the loader died
//! Both requests are marked idempotent, so a [`crate::names::Named`]
//! client sends one again to the restarted loader when the first died with
//! `PeerDied` (a `NotDelivered` call is always sent again). That is safe: until the loader's reply moves the process
//! handle to the caller, the half-built process is held by the loader
//! alone and ends with it (its memory freed with its last handle), so a
//! failed call has no effect the caller can see and the retry builds the
//! one process the caller gets. `LoadImage`'s image travels as a *copy*,
//! which the caller still holds for the retry.

/// The name the loader registers with init's name service.
pub const NAME: &str = "loader";
/// Most bytes of `argv` and `envp` together.
pub const MAX_ARGS_BYTES: usize = 3072;
/// Bytes a loader client or server buffer needs (a module name and the
/// arguments, with their words).
pub const BUFFER: usize = 4096;

wire::protocol! {
    /// The ELF loader.
    pub protocol Loader<'a>;
    /// What clients ask.
    pub enum Request {
        /// Loads the boot module named `module` (an ELF64 program):
        /// `Loaded`, or `NotFound`, `Refused`, `BadArgs`, `Failed`.
        Load = 1 (idempotent) => fn load { module: &'a str, argv: &'a [u8], envp: &'a [u8] },
        /// Loads the ELF64 image in the first `len` bytes of memory object
        /// `image` (a copy of the caller's handle with at least READ; the
        /// loader closes its copy before it answers): as `Load`.
        LoadImage = 2 (idempotent) => fn load_image { image: wire::CopiedHandle, len: u64, argv: &'a [u8], envp: &'a [u8] },
    }
    /// What the loader answers.
    pub enum Reply {
        /// The new process (its handle moved to the caller, with the rights
        /// of `abi::rights_sets::PROCESS_BUILDER`), not started: start it at
        /// `entry` with stack pointer `rsp`.
        Loaded = 1 { process: wire::Handle, entry: u64, rsp: u64 },
        /// No boot module has that name.
        NotFound = 2 {},
        /// The image was refused: `code` is the `elfload::LoadError` wire
        /// code, `detail` its program-header index or value (0 if none).
        Refused = 3 { code: u64, detail: u64 },
        /// `argv`/`envp` exceed `max` bytes or a string lacks its NUL.
        BadArgs = 4 { max: u64 },
        /// The kernel refused a step (the `abi::Error` code: `OutOfMemory`
        /// when the loader or the system has no room, `BadHandle` for an
        /// image handle that is no readable memory object).
        Failed = 5 { error: u64 },
    }
    /// Typed calls.
    pub struct Client;
}
