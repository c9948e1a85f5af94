//! The loader server (issue 11 item 2), found by name: `hello` loaded with
//! argv and envp that checks its initial stack; the malformed-ELF corpus
//! through `LoadImage`, each refused with its own `elfload::LoadError`
//! code; hostile requests, each a typed reply with the loader still
//! serving; no frame or thread left behind by 100 loads; and the loader
//! killed under a client (`Load` is idempotent: the client's next call goes
//! to the restarted loader).

use crate::note;
use crate::util::{self, check, expect, TestResult};
use abi::status::{self, Status};
use core::sync::atomic::{AtomicBool, Ordering};
use elfload::LoadError;
use libipc::ipc::{handle_close, notification_create, Endpoint};
use libipc::loader::{Client, Loader, Reply, MAX_ARGS_BYTES};
use libipc::names::{self, Named};
use libipc::server::Caller;
use libipc::sys::{self, ProcessHandle};
use libipc::vm::{MemoryHandle, Space};
use libipc::wire::CopiedHandle;

/// Long enough never to expire in a passing run.
const GUARD_US: Option<u32> = Some(10_000_000);
/// hello's argument that makes it exit at once (apps/hello `QUIET`).
const HELLO_QUIET: u64 = 0x5155_4954;
/// Where these cases map the images they build.
const IMAGE_AT: u64 = 0x6600_0000_0000;
/// The largest image they build.
const IMAGE_BYTES: u64 = 2 * 4096;

fn service() -> Result<Endpoint, &'static str> {
    names::endpoint(1_000_000_000).ok_or("init gave no name-service handle")
}

fn loader() -> Result<Named<Loader>, &'static str> {
    Named::<Loader>::new(service()?, libipc::loader::NAME, GUARD_US).map_err(|e| {
        note!("lookup loader: {e:?}");
        "the loader is not registered"
    })
}

/// What a loader call came back with, without borrows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Got {
    Loaded(ProcessHandle, u64, u64),
    NotFound,
    Refused(u64, u64),
    BadArgs(u64),
    Failed(u64),
    CallFailed,
}

fn got(r: Result<Reply<'_>, libipc::wire::CallError<libipc::Error>>) -> Got {
    match r {
        Ok(Reply::Loaded {
            process,
            entry,
            rsp,
        }) => Got::Loaded(ProcessHandle::from_raw(process.0), entry, rsp),
        Ok(Reply::NotFound {}) => Got::NotFound,
        Ok(Reply::Refused { code, detail }) => Got::Refused(code, detail),
        Ok(Reply::BadArgs { max }) => Got::BadArgs(max),
        Ok(Reply::Failed { error }) => Got::Failed(error),
        Err(e) => {
            note!("loader call: {e:?}");
            Got::CallFailed
        }
    }
}

/// A loader client by name.
type C<'b> = Client<'b, Named<Loader>>;

fn load(c: &mut C<'_>, module: &str, argv: &[u8], envp: &[u8]) -> Got {
    got(c.load(module, argv, envp))
}

fn load_image(c: &mut C<'_>, mem: u32, len: u64, argv: &[u8]) -> Got {
    got(c.load_image(CopiedHandle(mem), len, argv, b""))
}

/// Starts a loaded process with `arg` and waits for it; closes its handle.
fn run(g: Got, arg: u64) -> Result<Status, &'static str> {
    let Got::Loaded(p, entry, rsp) = g else {
        note!("load: {g:?}");
        return Err("the loader did not load it");
    };
    // SAFETY: another process: nothing of this program's runs there.
    let t = unsafe { p.space().start_thread(entry, rsp, arg) };
    let r = match t {
        Ok(t) => {
            let _ = t.close();
            p.wait().map(status::decode).map_err(|_| "waiting failed")
        }
        Err(e) => {
            note!("thread_start: {e}");
            let _ = p.kill();
            Err("thread_start failed")
        }
    };
    let _ = p.close();
    r
}

/// hello's exit code for `argv`/`envp` (apps/hello `args_hash`).
pub(crate) fn args_hash(argv: &[u8], envp: &[u8]) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |b: u8| h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    argv.iter().for_each(|&b| eat(b));
    eat(0xff);
    envp.iter().for_each(|&b| eat(b));
    (h & 0x7fff_ffff) as i32
}

/// `hello` through `Load` with argv and envp: it checks argc, argv, envp
/// and the auxiliary vector (AT_PHDR, AT_PHNUM, AT_ENTRY, AT_PAGESZ,
/// AT_RANDOM non-zero), prints `Hello from userland!` and exits with a
/// hash of what it received.
pub fn hello_gets_its_stack() -> TestResult {
    let mut buf = [0u8; libipc::loader::BUFFER];
    let mut c = Client::new(loader()?, &mut buf);
    let argv = b"hello\0first arg\0\0last\0";
    let envp = b"MICA=1\0TERM=dumb\0";
    let st = run(load(&mut c, "hello", argv, envp), 0)?;
    expect(
        st,
        Status::Exited(args_hash(argv, envp)),
        "hello's exit status",
    )?;
    // No arguments at all: argc 0 is refused by hello itself (-1), so the
    // loader must have built an empty argv faithfully.
    let st = run(load(&mut c, "hello", b"", b""), 0)?;
    expect(st, Status::Exited(-1), "hello with argc 0")
}

// ---- a tiny ELF64 builder (no allocation) ----

const BASE: u64 = 0x40_0000;
const CODE_AT: usize = 0x100;
/// `mov edi, 42; mov eax, ProcessExit; syscall; ud2`.
const EXIT_42: [u8; 14] = [
    0xbf, 42, 0, 0, 0, // mov edi, 42
    0xb8, 6, 0, 0, 0, // mov eax, 6 (process_exit)
    0x0f, 0x05, // syscall
    0x0f, 0x0b, // ud2
];
const _: () = assert!(abi::Sysnum::ProcessExit as u64 == 6);

struct Image {
    b: [u8; 0x200],
}

impl Image {
    fn put(&mut self, at: usize, bytes: &[u8]) {
        self.b[at..at + bytes.len()].copy_from_slice(bytes);
    }
    fn u16(&mut self, at: usize, v: u16) {
        self.put(at, &v.to_le_bytes());
    }
    fn u32(&mut self, at: usize, v: u32) {
        self.put(at, &v.to_le_bytes());
    }
    fn u64(&mut self, at: usize, v: u64) {
        self.put(at, &v.to_le_bytes());
    }

    /// A valid static executable: one RX PT_LOAD of the whole file at
    /// BASE, entry at the code that exits with 42.
    fn exec() -> Image {
        let mut i = Image { b: [0; 0x200] };
        i.put(0, &[0x7f, b'E', b'L', b'F', 2, 1, 1]);
        i.u16(16, 2); // e_type ET_EXEC
        i.u16(18, 62); // e_machine EM_X86_64
        i.u32(20, 1); // e_version
        i.u64(24, BASE + CODE_AT as u64); // e_entry
        i.u64(32, 64); // e_phoff
        i.u16(52, 64); // e_ehsize
        i.u16(54, 56); // e_phentsize
        i.u16(56, 1); // e_phnum
        i.phdr(0, 1, 5, [0, BASE, 0x200, 0x200]);
        i.put(CODE_AT, &EXIT_42);
        i
    }

    /// Program header `n`: type, flags, [offset, vaddr, filesz, memsz].
    fn phdr(&mut self, n: usize, t: u32, flags: u32, [off, vaddr, fsz, msz]: [u64; 4]) {
        let at = 64 + 56 * n;
        self.u32(at, t);
        self.u32(at + 4, flags);
        self.u64(at + 8, off);
        self.u64(at + 16, vaddr);
        self.u64(at + 24, vaddr);
        self.u64(at + 32, fsz);
        self.u64(at + 40, msz);
        self.u64(at + 48, 0x1000);
    }

    /// A static PIE whose only relocation has type `rtype` and offset
    /// `r_offset` (a RELATIVE one into the read-only segment, or any other
    /// type: both refused).
    fn pie_with_relocation(rtype: u32, r_offset: u64) -> Image {
        let mut i = Image::exec();
        i.u16(16, 3); // ET_DYN
        i.u64(24, CODE_AT as u64);
        i.u16(56, 2);
        i.phdr(0, 1, 5, [0, 0, 0x200, 0x200]);
        i.phdr(1, 2, 6, [0x180, 0x180, 64, 64]); // PT_DYNAMIC
        for (k, (tag, val)) in [(7u64, 0x1c0u64), (8, 24), (9, 24), (0, 0)]
            .iter()
            .enumerate()
        {
            i.u64(0x180 + 16 * k, *tag); // DT_RELA, DT_RELASZ, DT_RELAENT, DT_NULL
            i.u64(0x188 + 16 * k, *val);
        }
        i.u64(0x1c0, r_offset);
        i.u64(0x1c8, u64::from(rtype)); // r_info: symbol 0
        i.u64(0x1d0, 0);
        i
    }
}

/// A memory object holding `bytes` (mapped here at IMAGE_AT until `drop`).
struct Object(MemoryHandle);

impl Object {
    fn new(bytes: &[u8]) -> Result<Object, &'static str> {
        let mem = MemoryHandle::create(IMAGE_BYTES).map_err(|_| "mem_create failed")?;
        if mem
            .map(Space::Own, IMAGE_AT, 0, IMAGE_BYTES, abi::prot::WRITE)
            .is_err()
        {
            let _ = mem.close();
            return Err("mem_map failed");
        }
        // SAFETY: IMAGE_AT..+IMAGE_BYTES was just mapped writable for us
        // alone; `bytes` is at most IMAGE_BYTES long (the images above).
        unsafe {
            core::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                IMAGE_AT as *mut u8,
                bytes.len().min(IMAGE_BYTES as usize),
            )
        };
        Ok(Object(mem))
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        // SAFETY: our mapping of the object; nothing refers to it now.
        let _ = unsafe { Space::Own.unmap(IMAGE_AT, IMAGE_BYTES) };
        let _ = self.0.close();
    }
}

/// `LoadImage` of `bytes[..len]`.
fn load_bytes(c: &mut C<'_>, bytes: &[u8], len: u64) -> Result<Got, &'static str> {
    let o = Object::new(bytes)?;
    Ok(load_image(c, o.0.raw(), len, b"image\0"))
}

/// The malformed corpus through `LoadImage`, each refused with its
/// own code and detail; the valid image next to them loads and exits 42.
pub fn malformed_corpus_is_refused() -> TestResult {
    let mut buf = [0u8; libipc::loader::BUFFER];
    let mut c = Client::new(loader()?, &mut buf);
    let good = Image::exec();
    let st = run(load_bytes(&mut c, &good.b, 0x200)?, 0)?;
    expect(st, Status::Exited(42), "the valid image's exit status")?;

    let with = |f: &dyn Fn(&mut Image)| {
        let mut i = Image::exec();
        f(&mut i);
        i
    };
    let huge = u64::MAX - 0x10;
    let cases: [(&str, Image, u64, LoadError); 12] = [
        ("zero-length file", Image::exec(), 0, LoadError::Empty),
        ("truncated header", Image::exec(), 40, LoadError::Truncated),
        (
            "truncated program headers",
            Image::exec(),
            100,
            LoadError::PhdrsOutsideFile,
        ),
        (
            "wrong class",
            with(&|i| i.b[4] = 1),
            0x200,
            LoadError::WrongClass(1),
        ),
        (
            "wrong machine",
            with(&|i| i.u16(18, 3)),
            0x200,
            LoadError::WrongMachine(3),
        ),
        (
            "W+X segment",
            with(&|i| i.u32(64 + 4, 7)),
            0x200,
            LoadError::WriteAndExecute { index: 0 },
        ),
        (
            "segment outside user space",
            with(&|i| i.phdr(0, 1, 5, [0, 0xffff_8000_0000_0000, 0x200, 0x200])),
            0x200,
            LoadError::OutsideUserRange { index: 0 },
        ),
        (
            "huge p_memsz",
            with(&|i| i.phdr(0, 1, 5, [0, BASE, 0x200, 1 << 40])),
            0x200,
            LoadError::TooMuchMemory,
        ),
        (
            "overflowing offset",
            with(&|i| i.phdr(0, 1, 5, [huge, BASE, 0x100, 0x200])),
            0x200,
            LoadError::OffsetOverflow { index: 0 },
        ),
        (
            "overlapping segments",
            with(&|i| {
                i.u16(56, 2);
                i.phdr(1, 1, 4, [0, BASE, 0x200, 0x200]);
            }),
            0x200,
            LoadError::SegmentsOverlap { index: 1 },
        ),
        (
            "PIE with a symbol relocation",
            Image::pie_with_relocation(1, 0x100),
            0x200,
            LoadError::UnsupportedRelocation(1),
        ),
        (
            "PIE with a relocation into its text",
            Image::pie_with_relocation(8, 0x100),
            0x200,
            LoadError::RelocationOutsideWritable(0x100),
        ),
    ];
    let mut bad = 0;
    for (what, image, len, want) in cases.iter() {
        let g = load_bytes(&mut c, &image.b, *len)?;
        if g != Got::Refused(want.code(), want.detail()) {
            note!(
                "{what}: {g:?}, wanted {want:?} ({}, {})",
                want.code(),
                want.detail()
            );
            if let Got::Loaded(p, ..) = g {
                let _ = p.kill();
                let _ = p.close();
            }
            bad += 1;
        }
    }
    check(bad == 0, "an image was not refused with its own error")
}

/// Hostile requests: each gets its typed reply, and the loader still
/// serves afterwards.
pub fn hostile_requests_get_typed_replies() -> TestResult {
    let mut buf = [0u8; libipc::loader::BUFFER];
    let mut c = Client::new(loader()?, &mut buf);
    let good = Image::exec();
    let bad_handle = abi::Error::BadHandle.code();
    let invalid = abi::Error::InvalidArgument.code();
    // A handle that is no memory object.
    let n = notification_create().map_err(|_| "notification_create failed")?;
    let g = load_image(&mut c, n.0, 0x200, b"x\0");
    let _ = handle_close(n.0);
    expect(g, Got::Failed(bad_handle), "a notification as the image")?;
    let o = Object::new(&good.b)?;
    // A memory handle without MAP (the right to read it by mapping).
    let no_map =
        o.0.dup(abi::rights::DUPLICATE | abi::rights::TRANSFER)
            .map_err(|_| "dup failed")?;
    let g = load_image(&mut c, no_map.raw(), 0x200, b"x\0");
    let _ = no_map.close();
    expect(g, Got::Failed(bad_handle), "an image handle without MAP")?;
    // `len` past the object's end, and huge.
    let g = load_image(&mut c, o.0.raw(), IMAGE_BYTES + 1, b"x\0");
    expect(g, Got::Failed(invalid), "len past the object")?;
    let g = load_image(&mut c, o.0.raw(), u64::MAX, b"x\0");
    expect(g, Got::Failed(invalid), "len u64::MAX")?;
    drop(o);
    // Arguments: a string without its NUL, in argv and in envp; too many bytes.
    let max = MAX_ARGS_BYTES as u64;
    expect(
        load(&mut c, "hello", b"hello", b""),
        Got::BadArgs(max),
        "argv without NUL",
    )?;
    expect(
        load(&mut c, "hello", b"hello\0", b"A=1\0B"),
        Got::BadArgs(max),
        "envp without NUL",
    )?;
    let mut long = [b'a'; MAX_ARGS_BYTES + 2];
    for k in (1..long.len()).step_by(2) {
        long[k] = 0;
    }
    expect(
        load(&mut c, "hello", &long, b""),
        Got::BadArgs(max),
        "argv over the limit",
    )?;
    // Unknown modules, the loader's and init's own (not offered), a 4 KiB name.
    for m in ["nosuch", "", "init", "loader"] {
        if load(&mut c, m, b"x\0", b"") != Got::NotFound {
            note!("module {m:?}");
            return Err("an unknown module was not NotFound");
        }
    }
    let name = [b'h'; 4096];
    let name = core::str::from_utf8(&name).unwrap_or("");
    let mut big = [0u8; 8192];
    let g = got(Client::new(loader()?, &mut big).load(name, b"", b""));
    check(
        !matches!(g, Got::Loaded(..)),
        "a 4 KiB module name was loaded",
    )?;
    // Still serving.
    let st = run(load(&mut c, "hello", b"hello\0", b""), HELLO_QUIET)?;
    expect(st, Status::Exited(0), "hello after the hostile requests")
}

/// Free memory and live threads and processes, once they hold still.
fn usage() -> Result<(u64, u64, u64), &'static str> {
    let mut last = (0, 0, 0);
    for _ in 0..200 {
        let i = sys::sysinfo().map_err(|_| "sysinfo failed")?;
        let now = (i.free_bytes, i.threads, i.processes);
        if now == last {
            return Ok(now);
        }
        last = now;
        sys::sleep_ns(2_000_000);
    }
    Err("sysinfo figures did not settle")
}

/// One round: hello loaded and run, a valid image loaded and run, a bad
/// image refused.
fn round(c: &mut C<'_>) -> TestResult {
    let st = run(load(c, "hello", b"hello\0", b""), HELLO_QUIET)?;
    expect(st, Status::Exited(0), "hello")?;
    let good = Image::exec();
    let st = run(load_bytes(c, &good.b, 0x200)?, 0)?;
    expect(st, Status::Exited(42), "the image")?;
    let g = load_bytes(c, &good.b, 40)?;
    let want = LoadError::Truncated;
    expect(
        g,
        Got::Refused(want.code(), want.detail()),
        "a truncated image",
    )
}

/// 100 rounds of loads give back every frame, thread and process.
pub fn hundred_loads_leak_nothing() -> TestResult {
    let mut buf = [0u8; libipc::loader::BUFFER];
    let mut c = Client::new(loader()?, &mut buf);
    // The first rounds may grow page tables that stay (ours, the loader's).
    for _ in 0..3 {
        round(&mut c)?;
    }
    let before = usage()?;
    for _ in 0..100 {
        round(&mut c)?;
    }
    let after = usage()?;
    if after.0 < before.0 || after.1 > before.1 || after.2 > before.2 {
        note!(
            "free bytes {} -> {}, threads {} -> {}, processes {} -> {}",
            before.0,
            after.0,
            before.1,
            after.1,
            before.2,
            after.2
        );
        return Err("100 loads left something behind");
    }
    Ok(())
}

/// The loader's record in init's `servers`: (pid, restarts).
fn loader_record(ep: Endpoint) -> Result<(u64, u64), &'static str> {
    for i in 0..16 {
        let mut buf = [0u8; names::BUFFER];
        let mut c = names::Client::new(Caller::new(ep, GUARD_US), &mut buf);
        match c.server(i) {
            Ok(names::Reply::Server {
                name,
                pid,
                restarts,
                ..
            }) if name == libipc::loader::NAME => return Ok((pid, restarts)),
            Ok(names::Reply::Server { .. }) => {}
            _ => break,
        }
    }
    Err("the loader is not in init's server table")
}

/// Tells [`loading_client`] to stop.
static STOP: AtomicBool = AtomicBool::new(false);

/// Loads and runs hello until [`STOP`]; exits with its client's retries.
extern "C" fn loading_client(_arg: u64) -> ! {
    let r = (|| {
        let mut buf = [0u8; libipc::loader::BUFFER];
        let mut c = Client::new(loader()?, &mut buf);
        // Relaxed: only the flag itself is shared.
        while !STOP.load(Ordering::Relaxed) {
            let st = run(load(&mut c, "hello", b"hello\0", b""), HELLO_QUIET)?;
            expect(st, Status::Exited(0), "hello")?;
        }
        Ok::<u64, &'static str>(c.transport().retries)
    })();
    match r {
        Ok(retries) => sys::thread_exit(retries as i32),
        Err(e) => {
            note!("client: {e}");
            sys::thread_exit(-1)
        }
    }
}

/// The loader killed (init's test-only `Restart`) while a client loads in
/// a loop: init restarts it from its boot module and every one of the
/// client's loads succeeds. The client's first call after the kill finds
/// the endpoint dead (in the call or at its start) and, `Load` being
/// idempotent, sends it once more to the successor: at least one retry.
pub fn killed_under_a_client() -> TestResult {
    let ep = service()?;
    let (pid0, restarts0) = loader_record(ep)?;
    check(pid0 != 0, "the loader's record has no pid")?;
    STOP.store(false, Ordering::Relaxed);
    let t = util::spawn(loading_client, 0)?;
    sys::sleep_ns(20_000_000);
    let mut buf = [0u8; names::BUFFER];
    let mut n = names::Client::new(Caller::new(ep, GUARD_US), &mut buf);
    let restarting = matches!(
        n.restart(libipc::loader::NAME),
        Ok(names::Reply::Restarting {})
    );
    // Let the client load from the new loader for a while.
    let deadline = sys::clock_ns() + 10_000_000_000;
    let mut back = false;
    while !back && sys::clock_ns() < deadline {
        back = matches!(loader_record(ep), Ok((p, r)) if r > restarts0 && p != 0 && p != pid0);
        sys::sleep_ns(5_000_000);
    }
    sys::sleep_ns(30_000_000);
    STOP.store(true, Ordering::Relaxed);
    let st = t.join()?;
    check(restarting, "restart loader refused")?;
    check(back, "the loader was not restarted")?;
    match st {
        Status::Exited(n) if n >= 1 => {
            note!("client retries: {n}");
        }
        other => {
            note!("client: {other:?}");
            return Err("a load failed across the loader's restart, or none was retried");
        }
    }
    // Serving.
    let mut buf = [0u8; libipc::loader::BUFFER];
    let mut c = Client::new(loader()?, &mut buf);
    let st = run(load(&mut c, "hello", b"hello\0", b""), HELLO_QUIET)?;
    expect(st, Status::Exited(0), "hello after the restart")
}

/// The stack's lowest page (execp: mapped copy-on-write from the loader's
/// one zero object, not fresh frames).
const STACK_BOTTOM: u64 = abi::layout::INIT_STACK_TOP - abi::layout::INIT_STACK_BYTES;
/// The page under the stack's top, where `LoadImage`'s initial stack ends.
const STACK_UNDER_ARGS: u64 = abi::layout::INIT_STACK_TOP - 0x3000;

/// Code that reads the word at `at`, writes 0x55 there and exits with
/// what it read plus what it reads back: 0x55 when the page was zero and
/// is the process's own.
fn read_write_exit(at: u64) -> [u8; 32] {
    let mut c = [0u8; 32];
    c[..2].copy_from_slice(&[0x48, 0xb8]); // mov rax, imm64
    c[2..10].copy_from_slice(&at.to_le_bytes());
    c[10..32].copy_from_slice(&[
        0x48, 0x8b, 0x38, // mov rdi, [rax]
        0x48, 0xc7, 0x00, 0x55, 0, 0, 0, // mov qword [rax], 0x55
        0x48, 0x03, 0x38, // add rdi, [rax]
        0xb8, 6, 0, 0, 0, // mov eax, 6 (process_exit)
        0x0f, 0x05, // syscall
        0x0f, 0x0b, // ud2
    ]);
    c
}

/// Every load's stack is zero and writable, and the process's own: images
/// that write 0x55 deep in their stack (its lowest page, and a page under
/// the initial stack), loaded one after another and two at a time, each
/// read 0 first and their own write back (exit 0x55). A stack page shared
/// between loads (the zero object mapped without `MAP_PRIVATE`) shows the
/// last run's 0x55 (exit 0xaa); one mapped read-only faults (killed).
pub fn stacks_are_zero_and_private() -> TestResult {
    let mut buf = [0u8; libipc::loader::BUFFER];
    let mut c = Client::new(loader()?, &mut buf);
    for at in [STACK_BOTTOM, STACK_UNDER_ARGS, STACK_BOTTOM + 0x8000] {
        let mut i = Image::exec();
        i.put(CODE_AT, &read_write_exit(at));
        for round in 0..3 {
            let st = run(load_bytes(&mut c, &i.b, 0x200)?, 0)?;
            if st != Status::Exited(0x55) {
                note!("stack word {at:#x}, round {round}: {st:?}");
                return Err("a loaded stack page was not zero and private");
            }
        }
        // Two loaded before either runs: the first's write is not the
        // second's.
        let a = load_bytes(&mut c, &i.b, 0x200)?;
        let b = load_bytes(&mut c, &i.b, 0x200)?;
        let (sa, sb) = (run(a, 0)?, run(b, 0)?);
        check(
            sa == Status::Exited(0x55) && sb == Status::Exited(0x55),
            "two loads share a stack page",
        )?;
    }
    Ok(())
}

/// Code that asks for write access to its stack page `wp` (`protect`)
/// and writes 0x77 there, then has the kernel write a `SysInfo` into the
/// untouched stack page `kp` (`sysinfo`), and exits with sysinfo's result
/// plus 8 x protect's (64 when both worked).
fn dirty_stack_exit(wp: u64, kp: u64) -> [u8; 82] {
    let mut c = [0u8; 82];
    let mut n = 0;
    let mut put = |b: &[u8]| {
        c[n..n + b.len()].copy_from_slice(b);
        n += b.len();
    };
    put(&[0x48, 0xbf]); // mov rdi, imm64
    put(&wp.to_le_bytes());
    put(&[0xbe, 0, 0x10, 0, 0]); // mov esi, 4096
    put(&[0xba, abi::prot::WRITE as u8, 0, 0, 0]); // mov edx, WRITE
    put(&[0xb8, abi::Sysnum::Protect as u8, 0, 0, 0]); // mov eax, protect
    put(&[0x0f, 0x05]); // syscall
    put(&[0x48, 0x89, 0xc3]); // mov rbx, rax
    put(&[0x48, 0xb8]); // mov rax, imm64
    put(&wp.to_le_bytes());
    put(&[0x48, 0xc7, 0x00, 0x77, 0, 0, 0]); // mov qword [rax], 0x77
    put(&[0x48, 0xbf]); // mov rdi, imm64
    put(&kp.to_le_bytes());
    put(&[0xbe, 64, 0, 0, 0]); // mov esi, 64
    put(&[0xb8, abi::Sysnum::SysInfo as u8, 0, 0, 0]); // mov eax, sysinfo
    put(&[0x0f, 0x05]); // syscall
    put(&[0x48, 0x8d, 0x3c, 0xd8]); // lea rdi, [rax + rbx*8]
    put(&[0xb8, 6, 0, 0, 0]); // mov eax, 6 (process_exit)
    put(&[0x0f, 0x05, 0x0f, 0x0b]); // syscall; ud2
    c
}

/// The zero object behind every loaded stack (execp) stays zero when a
/// program attacks it (breakx): `protect` making its stack page writable
/// and a write there, and a kernel write (`sysinfo`) into another stack
/// page, both land in the program's own copies; images loaded after it
/// read zero on both pages (exit 0x55). A write that reached the shared
/// frames shows in the next load's stack (0x77 or the sysinfo figures).
pub fn stack_zero_object_survives_protect_and_kernel_writes() -> TestResult {
    let mut buf = [0u8; libipc::loader::BUFFER];
    let mut c = Client::new(loader()?, &mut buf);
    let (wp, kp) = (STACK_BOTTOM + 0x4000, STACK_BOTTOM + 0x6000);
    let mut attack = Image::exec();
    attack.put(CODE_AT, &dirty_stack_exit(wp, kp));
    for round in 0..2 {
        let st = run(load_bytes(&mut c, &attack.b, 0x200)?, 0)?;
        if st != Status::Exited(64) {
            note!("round {round}: attacker {st:?}");
            return Err("the attacker's protect or sysinfo did not work");
        }
        for at in [kp, wp] {
            let mut i = Image::exec();
            i.put(CODE_AT, &read_write_exit(at));
            let st = run(load_bytes(&mut c, &i.b, 0x200)?, 0)?;
            if st != Status::Exited(0x55) {
                note!("round {round}, stack word {at:#x} after the attack: {st:?}");
                return Err("a later load's stack was not zero");
            }
        }
    }
    Ok(())
}
