//! The loader server (issue 11 item 2): serves [`libipc::loader::Loader`]
//! over `elfload::ring3` (see docs/decisions.md, "loader server").
//!
//! init loads it (the one ELF init maps itself) and gives it, before its
//! thread starts, in this order: a badged SEND handle to the name service
//! (slot 0, as every child of init), its endpoint with RECV (slot 1; init
//! registers the name `loader` for it and keeps no RECV, so the endpoint
//! dies with this process), then one memory object per boot module (slots
//! 2, 3, ...) holding the module's ELF bytes. Its argv names them:
//! `loader NAME=LEN NAME=LEN ...`, one per module handle, in slot order.
//! The modules are mapped once, read-only, and loads read them in place.
//!
//! Every request field is hostile: each failure is a typed reply and the
//! loop goes on (`libipc::server::serve` already answers what does not
//! decode and closes the handles it carried).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod ring3 {
    use abi::bootinfo::{MAX_MODULES, NAME_BYTES};
    use abi::layout::PAGE_SIZE;
    use abi::vm::MAX_MEMORY_BYTES;
    use abi::Error;
    use elfload::ring3::{load, load_planned, plan_image, Fail, Loaded};
    use elfload::LoadPlan;
    use libipc::ipc::{Endpoint, FIRST_HANDLE};
    use libipc::loader::{Loader, Reply, Request, BUFFER};
    use libipc::vm::{MemoryHandle, Space};
    use libipc::wire::{CopiedHandle, Handle, Handler};
    use libipc::{println, server};

    /// Where the modules are mapped in this process (each in a 16 MiB
    /// window, the largest memory object).
    const MODULES_AT: u64 = 0x2000_0000_0000;
    /// Where a `LoadImage` image is mapped (read-only) and then copied.
    const IMAGE_AT: u64 = 0x3000_0000_0000;
    const COPY_AT: u64 = 0x3100_0000_0000;
    /// The builder's scratch range (one load at a time).
    const SCRATCH_AT: u64 = 0x4000_0000_0000;

    /// The program name of what `LoadImage` builds (no boot module's: the
    /// runner has no ELF for it).
    const IMAGE_NAME: &str = "image";

    /// The endpoint init gives (slot 1).
    const ENDPOINT: u32 = FIRST_HANDLE + 1;
    /// The first module's handle (slot 2).
    const FIRST_MODULE: u32 = FIRST_HANDLE + 2;

    #[derive(Clone, Copy)]
    struct Module {
        name: [u8; NAME_BYTES],
        name_len: usize,
        at: u64,
        len: u64,
        /// Its memory object (the image from byte 0; init never writes it
        /// after boot).
        mem: MemoryHandle,
    }

    struct Server {
        modules: [Module; MAX_MODULES],
        /// Each module's plan, made once in [`Server::new`] (a module's
        /// bytes never change: execp), or why it is refused.
        plans: [Option<Result<LoadPlan<'static>, Fail>>; MAX_MODULES],
        n: usize,
    }

    /// The initial stack's argv (see `libipc::rt::initial_stack`).
    fn args() -> impl Iterator<Item = &'static [u8]> {
        let sp = libipc::rt::initial_stack() as *const u64;
        // SAFETY: init started this program at the `rsp` the loader path
        // returned: argc, then argc pointers to NUL-terminated strings, all
        // inside the stack mapped for its whole life.
        let argc = unsafe { sp.read() } as usize;
        (0..argc.min(64)).map(move |i| {
            // SAFETY: as above; `i < argc`.
            let p = unsafe { sp.add(1 + i).read() } as *const u8;
            // SAFETY: each argv string ends with a NUL inside the stack.
            unsafe { core::ffi::CStr::from_ptr(p.cast()) }.to_bytes()
        })
    }

    impl Module {
        /// The module's bytes.
        fn bytes(&self) -> &'static [u8] {
            // SAFETY: `Server::new` mapped the module's object read-only
            // at `at` for at least `len` bytes before recording it, and it
            // stays mapped for ever.
            unsafe { core::slice::from_raw_parts(self.at as *const u8, self.len as usize) }
        }
    }

    impl Server {
        /// Maps each module init gave (argv `NAME=LEN`, handles from slot 2).
        fn new() -> Server {
            let mut s = Server {
                modules: [Module {
                    name: [0; NAME_BYTES],
                    name_len: 0,
                    at: 0,
                    len: 0,
                    mem: MemoryHandle::from_raw(0),
                }; MAX_MODULES],
                plans: [const { None }; MAX_MODULES],
                n: 0,
            };
            for (i, arg) in args().skip(1).enumerate() {
                let Some(eq) = arg.iter().position(|&b| b == b'=') else {
                    continue;
                };
                let (name, len) = (&arg[..eq], &arg[eq + 1..]);
                let len = core::str::from_utf8(len)
                    .ok()
                    .and_then(|l| l.parse::<u64>().ok());
                let Some(len) = len.filter(|&l| l > 0 && l <= MAX_MEMORY_BYTES) else {
                    continue;
                };
                if name.len() > NAME_BYTES || s.n == MAX_MODULES {
                    continue;
                }
                let at = MODULES_AT + (i as u64) * MAX_MEMORY_BYTES;
                let mem = MemoryHandle::from_raw(FIRST_MODULE + i as u32);
                let mapped = len.div_ceil(PAGE_SIZE) * PAGE_SIZE;
                if let Err(e) = mem.map(Space::Own, at, 0, mapped, 0) {
                    println!("loader: cannot map module {i}: {e}");
                    continue;
                }
                let mut m = Module {
                    name: [0; NAME_BYTES],
                    name_len: name.len(),
                    at,
                    len,
                    mem,
                };
                m.name[..name.len()].copy_from_slice(name);
                s.modules[s.n] = m;
                s.plans[s.n] = Some(plan_image(m.bytes()));
                s.n += 1;
            }
            s
        }

        /// The module `name`'s plan (or why it is refused) and object.
        fn module(&self, name: &str) -> Option<(&Result<LoadPlan<'static>, Fail>, MemoryHandle)> {
            let i = self.modules[..self.n]
                .iter()
                .position(|m| &m.name[..m.name_len] == name.as_bytes())?;
            Some((self.plans[i].as_ref()?, self.modules[i].mem))
        }

        /// `LoadImage`: the first `len` bytes of the object, copied here
        /// first (the caller may keep writing to its object: the plan must
        /// check bytes that no longer change).
        fn load_image(&mut self, image: u32, len: u64, argv: &[u8], envp: &[u8]) -> Reply<'static> {
            let r = self.copy_image(image, len);
            let _ = libipc::ipc::handle_close(image);
            let copied = match r {
                Ok(c) => c,
                Err(e) => return failed(e),
            };
            // SAFETY: `copy_image` mapped `len` bytes at COPY_AT, ours
            // until the unmap below.
            let bytes = unsafe { core::slice::from_raw_parts(COPY_AT as *const u8, len as usize) };
            let reply = loaded(load(bytes, IMAGE_NAME, argv, envp, SCRATCH_AT));
            if copied > 0 {
                // SAFETY: the copy's range is ours and `bytes` ends here.
                let _ = unsafe { Space::Own.unmap(COPY_AT, copied) };
            }
            reply
        }

        /// Copies `len` bytes of object `image` to COPY_AT; the bytes mapped there.
        fn copy_image(&mut self, image: u32, len: u64) -> Result<u64, Error> {
            if len == 0 {
                return Ok(0); // an empty image: the plan refuses it
            }
            if len > MAX_MEMORY_BYTES {
                return Err(Error::InvalidArgument);
            }
            let pages = len.div_ceil(PAGE_SIZE) * PAGE_SIZE;
            let mem = MemoryHandle::from_raw(image);
            mem.map(Space::Own, IMAGE_AT, 0, pages, 0)
                .map_err(|e| match e {
                    // Longer than the object, or a bad range: say so.
                    Error::InvalidArgument => Error::InvalidArgument,
                    // Not a memory object, or no MAP right.
                    _ => Error::BadHandle,
                })?;
            let r = libipc::sys::map_anon(COPY_AT, pages, abi::prot::WRITE);
            if r.is_ok() {
                // SAFETY: both ranges were just mapped, `len` bytes each,
                // and are ours alone; they do not overlap.
                unsafe {
                    core::ptr::copy_nonoverlapping(
                        IMAGE_AT as *const u8,
                        COPY_AT as *mut u8,
                        len as usize,
                    );
                }
            }
            // SAFETY: the image's mapping is ours and no longer used.
            let _ = unsafe { Space::Own.unmap(IMAGE_AT, pages) };
            r.map(|_| pages)
        }
    }

    fn failed(e: Error) -> Reply<'static> {
        Reply::Failed { error: e.code() }
    }

    fn loaded(r: Result<Loaded, Fail>) -> Reply<'static> {
        match r {
            Ok(l) => Reply::Loaded {
                // Moved to the caller with the reply.
                process: Handle(l.process.raw()),
                entry: l.entry,
                rsp: l.rsp,
            },
            Err(Fail::Refused(e)) => Reply::Refused {
                code: e.code(),
                detail: e.detail(),
            },
            Err(Fail::BadArgs) => Reply::BadArgs {
                max: libipc::loader::MAX_ARGS_BYTES as u64,
            },
            Err(Fail::Kernel(e)) => failed(e),
        }
    }

    impl Handler<Loader> for Server {
        fn handle<'r>(&'r mut self, _badge: u64, req: Request<'r>) -> Reply<'r> {
            match req {
                Request::Load { module, argv, envp } => match self.module(module) {
                    Some((Ok(plan), mem)) => loaded(load_planned(
                        plan,
                        Some(mem),
                        module,
                        argv,
                        envp,
                        SCRATCH_AT,
                    )),
                    Some((Err(e), _)) => loaded(Err(*e)),
                    None => Reply::NotFound {},
                },
                Request::LoadImage {
                    image: CopiedHandle(h),
                    len,
                    argv,
                    envp,
                } => self.load_image(h, len, argv, envp),
            }
        }
    }

    #[no_mangle]
    fn main(_arg: u64) -> i32 {
        // A demand-zero stack takes all its frames now (see the function).
        libipc::rt::pretouch_stack();
        let mut s = Server::new();
        let (mut a, mut b) = ([0u8; BUFFER], [0u8; BUFFER]);
        let e = server::serve::<Loader, _>(Endpoint(ENDPOINT), &mut s, &mut a, &mut b);
        println!("loader: serving failed: {e:?}");
        1
    }
}
