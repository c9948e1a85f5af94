//! How init starts programs (loader, issue 11): every program but init is
//! an ELF boot module. init loads the loader itself with the `elfload`
//! library (the one path, `elfload::ring3`, the loader uses too) and every
//! other program through the loader's `Load`.
//!
//! The loader gets the modules' bytes as memory objects: at boot init
//! copies each ELF module (all but itself and the loader) once into an
//! object of its own ([`copy_modules`]); each loader instance gets a
//! handle to each (MAP only: the kernel has no read-only memory right, and
//! the loader maps them read-only) and their names and lengths in argv.
//! See docs/decisions.md, "loader server".

use abi::bootinfo::{modules, BootInfo, MAX_MODULES};
use abi::layout::PAGE_SIZE;
use abi::rights;
use core::fmt::Write;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use libipc::ipc::{self, Endpoint};
use libipc::loader::{Reply, BUFFER};
use libipc::server::Caller;
use libipc::sys::ProcessHandle;
use libipc::vm::{MemoryHandle, Space};

/// Where init maps a module's object to copy into it.
const COPY_AT: u64 = 0x6000_0000_0000;
/// The builder's scratch range when init loads the loader.
const SCRATCH_AT: u64 = 0x6100_0000_0000;
/// How long init waits for the loader to answer a `Load`.
const LOAD_TIMEOUT_US: u32 = 10_000_000;

/// Per boot-module index: its object's handle (0: none), and its length.
static OBJECTS: [AtomicU32; MAX_MODULES] = [const { AtomicU32::new(0) }; MAX_MODULES];
static LENGTHS: [AtomicU64; MAX_MODULES] = [const { AtomicU64::new(0) }; MAX_MODULES];

/// Copies every ELF module but the loader into a memory object (once, at
/// boot, before any thread that reads [`OBJECTS`] starts: `thread_spawn`
/// orders the Relaxed stores). A module that cannot be copied is left out
/// (the loader answers `NotFound` for it) and said so.
pub fn copy_modules(info: &BootInfo) {
    for (i, m) in info.modules().iter().enumerate() {
        if m.name() == modules::INIT || m.name() == modules::LOADER || m.len == 0 {
            continue;
        }
        match copy(crate::module_bytes(m)) {
            Ok(h) => {
                OBJECTS[i].store(h.raw(), Ordering::Relaxed);
                LENGTHS[i].store(m.len, Ordering::Relaxed);
            }
            Err(e) => libipc::println!("init: cannot copy module {}: {e}", m.name()),
        }
    }
}

fn copy(bytes: &[u8]) -> Result<MemoryHandle, abi::Error> {
    let len = (bytes.len() as u64).div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let mem = MemoryHandle::create(len)?;
    if let Err(e) = mem.map(Space::Own, COPY_AT, 0, len, abi::prot::WRITE) {
        let _ = mem.close();
        return Err(e);
    }
    // SAFETY: `COPY_AT..+len` was just mapped writable and nothing else
    // uses it; `bytes` is the kernel's read-only mapping of the module.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), COPY_AT as *mut u8, bytes.len()) };
    // SAFETY: the copy's mapping is ours and no longer used (the object
    // keeps the frames).
    let _ = unsafe { Space::Own.unmap(COPY_AT, len) };
    Ok(mem)
}

/// A fixed buffer for argv.
struct Args {
    buf: [u8; libipc::loader::MAX_ARGS_BYTES],
    len: usize,
}

impl Write for Args {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(core::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// A loader instance, loaded and given its handles, not started.
pub struct LoaderStart {
    pub process: ProcessHandle,
    /// init's handle to its endpoint (every right: the caller registers a
    /// copy, keeps a SEND copy and closes this one, so that only the loader
    /// holds RECV).
    pub endpoint: Endpoint,
    pub entry: u64,
    pub rsp: u64,
}

/// Loads the loader from its boot module and gives it, in this order, the
/// name service (`give`, slot 0), its endpoint (slot 1, RECV) and the
/// module objects (slots 2...); allows it to create programs. Not started.
pub fn load_loader(
    info: &BootInfo,
    give: impl FnOnce(ProcessHandle) -> Result<u64, abi::Error>,
) -> Result<(LoaderStart, u64), abi::Error> {
    let m = info
        .modules()
        .iter()
        .find(|m| m.name() == modules::LOADER)
        .ok_or(abi::Error::NotFound)?;
    let mut argv = Args {
        buf: [0; libipc::loader::MAX_ARGS_BYTES],
        len: 0,
    };
    let _ = write!(argv, "{}\0", modules::LOADER);
    let mut given = [0u32; MAX_MODULES];
    let mut n = 0;
    for (i, m) in info.modules().iter().enumerate() {
        let h = OBJECTS[i].load(Ordering::Relaxed);
        if h != 0
            && write!(
                argv,
                "{}={}\0",
                m.name(),
                LENGTHS[i].load(Ordering::Relaxed)
            )
            .is_ok()
        {
            given[n] = h;
            n += 1;
        }
    }
    let l = elfload::ring3::load(
        crate::module_bytes(m),
        modules::LOADER,
        &argv.buf[..argv.len],
        b"",
        SCRATCH_AT,
    )
    .map_err(|e| match e {
        elfload::ring3::Fail::Kernel(e) => e,
        other => {
            libipc::println!("init: the loader module is refused: {other:?}");
            abi::Error::InvalidArgument
        }
    })?;
    let p = l.process;
    let r = (|| {
        let badge = give(p)?;
        let ep = ipc::endpoint_create()?;
        let handed = ipc::handle_give(p, ep.0, rights::RECV)
            .and_then(|_| {
                given[..n]
                    .iter()
                    .try_for_each(|&h| ipc::handle_give(p, h, rights::MAP).map(|_| ()))
            })
            .and_then(|_| libipc::vm::process_allow_programs(p));
        if let Err(e) = handed {
            let _ = ipc::handle_close(ep.0);
            return Err(e);
        }
        Ok((ep, badge))
    })();
    match r {
        Ok((endpoint, badge)) => Ok((
            LoaderStart {
                process: p.with_id().unwrap_or(p),
                endpoint,
                entry: l.entry,
                rsp: l.rsp,
            },
            badge,
        )),
        Err(e) => {
            let _ = p.kill();
            let _ = p.close();
            Err(e)
        }
    }
}

/// Asks the loader at `loader` to load boot module `module` (argv: its
/// name); the process not started, its pid known.
pub fn load(loader: Endpoint, module: &str) -> Result<Loaded, LoadFailed> {
    load_args(loader, module, &[])
}

/// [`load`] with argv `module` then `args` (`BadArgs` if they hold a NUL
/// or do not fit the loader's argv buffer).
pub fn load_args(loader: Endpoint, module: &str, args: &[&str]) -> Result<Loaded, LoadFailed> {
    let mut argv = Args {
        buf: [0; libipc::loader::MAX_ARGS_BYTES],
        len: 0,
    };
    write!(argv, "{module}\0").map_err(|_| LoadFailed::BadArgs)?;
    for a in args {
        if a.contains('\0') {
            return Err(LoadFailed::BadArgs);
        }
        write!(argv, "{a}\0").map_err(|_| LoadFailed::BadArgs)?;
    }
    let argv = &argv.buf[..argv.len];
    let mut buf = [0u8; BUFFER];
    let mut c = libipc::loader::Client::new(Caller::new(loader, Some(LOAD_TIMEOUT_US)), &mut buf);
    match c.load(module, argv, b"") {
        Ok(Reply::Loaded {
            process,
            entry,
            rsp,
        }) => {
            let p = ProcessHandle::from_raw(process.0);
            Ok(Loaded {
                process: p.with_id().unwrap_or(p),
                entry,
                rsp,
            })
        }
        Ok(Reply::NotFound {}) => Err(LoadFailed::NotFound),
        Ok(Reply::Refused { code, detail }) => Err(LoadFailed::Refused(code, detail)),
        Ok(Reply::BadArgs { .. }) => Err(LoadFailed::BadArgs),
        Ok(Reply::Failed { error }) => Err(LoadFailed::Failed(error)),
        Err(e) => Err(LoadFailed::Call(e)),
    }
}

/// A loaded, not started program.
#[derive(Clone, Copy)]
pub struct Loaded {
    pub process: ProcessHandle,
    pub entry: u64,
    pub rsp: u64,
}

/// Why a `Load` gave no process.
#[derive(Debug)]
pub enum LoadFailed {
    NotFound,
    /// The image's `elfload::LoadError` wire code and detail.
    Refused(u64, u64),
    BadArgs,
    /// The kernel's error code.
    Failed(u64),
    /// The call failed.
    Call(libipc::wire::CallError<abi::Error>),
}

impl core::fmt::Display for LoadFailed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LoadFailed::NotFound => write!(f, "no such boot module"),
            LoadFailed::Refused(code, detail) => {
                match elfload::LoadError::from_wire(*code, *detail) {
                    Some(e) => write!(f, "refused: {e}"),
                    None => write!(f, "refused (code {code}, detail {detail})"),
                }
            }
            LoadFailed::BadArgs => write!(f, "bad arguments"),
            LoadFailed::Failed(e) => write!(f, "the loader failed (error {e})"),
            LoadFailed::Call(e) => write!(f, "calling the loader failed: {e:?}"),
        }
    }
}

/// Starts `p`'s first thread at `entry` with stack `rsp` and `arg` in RDI.
pub fn start(p: ProcessHandle, entry: u64, rsp: u64, arg: u64) -> Result<(), abi::Error> {
    // SAFETY: `p` is another process (a child init built or the loader
    // loaded): what runs there is no concern of this program's memory.
    let t = unsafe { p.space().start_thread(entry, rsp, arg) }?;
    let _ = t.close();
    Ok(())
}
