//! Loading on the kernel's vm syscalls (ring 3 only): the one path that
//! turns an image into a process, used by the loader server for `Load`
//! and `LoadImage` and by init to load the loader itself.
//!
//! [`load`] creates an empty process, plans the image ([`crate::plan()`]),
//! and carries the plan out through [`Builder`], a [`Target`] over one
//! memory object as large as the plan's pages and the stack's top: it is
//! mapped once into the builder's own space at a scratch address
//! (writable), and each segment is the next part of it, mapped into the
//! new space with the segment's final rights; the builder writes the file
//! bytes and the relocations through its scratch view, so nothing is
//! copied through the kernel and the new process never holds a writable
//! mapping the image did not ask for. BSS needs no store: the object's
//! frames are zeroed by the kernel. PT_GNU_RELRO is then made read-only in
//! the new space. The stack's top (the last part of the object) holds the
//! SysV initial stack ([`crate::stack::build`]); the rest of the stack is
//! mapped copy-on-write from one zero object (a frame only for a page the
//! program writes), and the page below it stays unmapped (the guard). One
//! object, one scratch mapping: the fewest syscalls per load.
//!
//! Any failure kills and closes the half-built process, closes every
//! object handle and unmaps the scratch mappings: nothing is left behind.

use crate::plan::{LoadPlan, Perms};
use crate::stack::{self, StackError};
use crate::{apply, plan, Limits, LoadError, Target};
use abi::layout::{PAGE_SIZE, USER_END};
use abi::{prot, Error};
use core::sync::atomic::{AtomicU32, Ordering};
use libipc::task::ProcessHandle;
use libipc::vm::{process_create_program, MemoryHandle, Space};

/// Where the initial stack ends in every loaded process (the kernel's
/// `process_spawn` uses the same top).
pub const STACK_TOP: u64 = abi::layout::INIT_STACK_TOP;
/// Bytes of the initial stack (as `process_spawn`'s).
pub const STACK_BYTES: u64 = abi::layout::INIT_STACK_BYTES;
/// Where a static PIE's address 0 goes.
pub const PIE_BASE: u64 = 0x40_0000;
/// Bytes of the stack's top given to [`stack::build`], part of the image's
/// object: at most 3072 bytes of strings, 531 words of pointers and auxv,
/// and AT_RANDOM's 16 bytes fit. The rest of the stack is fresh pages.
const ARGS_AREA: u64 = 8 * 1024;
const _: () = assert!(
    libipc::loader::MAX_ARGS_BYTES as u64
        + 8 * (1 + (stack::MAX_ARGS as u64 + 1) + (stack::MAX_ENVS as u64 + 1) + 16)
        + 32
        <= ARGS_AREA
);

/// What one image may ask for: the plan's defaults, its pages and the
/// stack's top fitting the largest memory object.
pub const LIMITS: Limits = Limits {
    max_memory_bytes: abi::vm::MAX_MEMORY_BYTES - ARGS_AREA,
    ..Limits::DEFAULT
};

/// Why a load failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fail {
    /// The image breaks a rule.
    Refused(LoadError),
    /// argv/envp: too many, too long, a string without its NUL.
    BadArgs,
    /// The kernel refused a step.
    Kernel(Error),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Kernel(e)
    }
}

/// A loaded, not yet started process.
#[derive(Clone, Copy, Debug)]
pub struct Loaded {
    /// The handle `process_create` gave (rights `PROCESS_BUILDER`).
    pub process: ProcessHandle,
    pub entry: u64,
    /// Start the thread with this stack top: the kernel enters "as if
    /// called" (RSP = top - 8), so argc is at the entry RSP + 8.
    pub rsp: u64,
}

/// One segment's part of the object, mapped in both spaces.
#[derive(Clone, Copy)]
struct Mapped {
    /// Its first address in the new process, and its length.
    start: u64,
    len: u64,
    /// Where the builder sees it.
    scratch: u64,
}

/// Most parts one load maps: the plan's segments and the stack's top.
const MAX_MAPPED: usize = crate::plan::MAX_SEGMENTS + 1;

/// A [`Target`] building a new process through one memory object (see the
/// module docs): the object is mapped writable at the builder's scratch
/// address once, and each segment is the next part of it, mapped into the
/// child with the segment's rights. Dropping it unmaps the scratch view and
/// closes the object's handle (the child's mappings keep the frames).
pub struct Builder {
    child: ProcessHandle,
    /// The memory object holding the image from its byte 0, if the image
    /// is one that never changes (a boot module): read-only segments are
    /// mapped from it ([`apply::shares_image`]), not copied.
    image: Option<MemoryHandle>,
    mem: MemoryHandle,
    scratch: u64,
    size: u64,
    /// Bytes of the object handed out so far.
    used: u64,
    mapped: [Mapped; MAX_MAPPED],
    n: usize,
}

fn prot_of(p: Perms) -> u64 {
    let mut v = 0;
    if p.write {
        v |= prot::WRITE;
    }
    if p.execute {
        v |= prot::EXEC;
    }
    v
}

impl Builder {
    /// A builder for `child` with an object of `size` bytes (page-aligned),
    /// seen at `scratch` in the caller's own space (a range it keeps free
    /// for this).
    pub fn new(child: ProcessHandle, scratch: u64, size: u64) -> Result<Self, Error> {
        let mem = MemoryHandle::create(size)?;
        if let Err(e) = mem.map(Space::Own, scratch, 0, size, prot::WRITE) {
            let _ = mem.close();
            return Err(e);
        }
        Ok(Builder {
            child,
            image: None,
            mem,
            scratch,
            size,
            used: 0,
            mapped: [Mapped {
                start: 0,
                len: 0,
                scratch: 0,
            }; MAX_MAPPED],
            n: 0,
        })
    }

    /// Maps the next `len` bytes of the object at `start` in the child with
    /// `p`, private (`abi::vm::MAP_PRIVATE`): the child's pages are its own
    /// copy-on-write pages, so a `space_clone` of it (fork) copies its data
    /// and stack on write instead of sharing them with the clone.
    fn map_part(&mut self, start: u64, len: u64, p: u64) -> Result<(), Error> {
        let fits = self
            .used
            .checked_add(len)
            .is_some_and(|end| end <= self.size);
        if self.n == MAX_MAPPED || !fits {
            return Err(Error::NoMemory);
        }
        self.mem.map(
            self.child.space(),
            start,
            self.used,
            len,
            p | abi::vm::MAP_PRIVATE,
        )?;
        self.mapped[self.n] = Mapped {
            start,
            len,
            scratch: self.scratch + self.used,
        };
        self.n += 1;
        self.used += len;
        Ok(())
    }

    /// The builder's view of `addr..addr+len` in the child, if one part
    /// holds it all.
    fn view(&mut self, addr: u64, len: u64) -> Result<&mut [u8], Error> {
        let end = addr.checked_add(len).ok_or(Error::InvalidArgument)?;
        let m = self.mapped[..self.n]
            .iter()
            .find(|m| addr >= m.start && end <= m.start + m.len)
            .ok_or(Error::InvalidArgument)?;
        let at = m.scratch + (addr - m.start);
        // The range lies inside one part of the object's scratch view
        // (checked just above), mapped writable by `new` and unmapped only
        // when the builder drops; nothing else in this program refers to it.
        // SAFETY: a mapped, writable range of ours; `&mut self` makes it unique.
        let view = unsafe { core::slice::from_raw_parts_mut(at as *mut u8, len as usize) };
        Ok(view)
    }
}

impl Drop for Builder {
    fn drop(&mut self) {
        // SAFETY: the scratch view is this builder's alone; the views
        // borrowed from it ended with their `&mut self` borrows.
        let _ = unsafe { Space::Own.unmap(self.scratch, self.size) };
        let _ = self.mem.close();
    }
}

impl Target for Builder {
    type Error = Error;
    fn map(&mut self, start: u64, len: u64, perms: Perms) -> Result<(), Error> {
        self.map_part(start, len, prot_of(perms))
    }
    fn write(&mut self, addr: u64, bytes: &[u8]) -> Result<(), Error> {
        self.view(addr, bytes.len() as u64)?.copy_from_slice(bytes);
        Ok(())
    }
    fn zero(&mut self, addr: u64, len: u64) -> Result<(), Error> {
        // The object's frames are zeroed by the kernel: only check.
        self.view(addr, len).map(|_| ())
    }
    fn protect(&mut self, start: u64, len: u64, perms: Perms) -> Result<(), Error> {
        self.child.space().protect(start, len, prot_of(perms))
    }
    fn map_image(&mut self, start: u64, len: u64, perms: Perms, at: u64) -> Result<bool, Error> {
        let Some(image) = self.image else {
            return Ok(false);
        };
        // Private, as the object's parts (`map_part`): a fork copies on
        // write, never shares (read-only here, so it never copies).
        image.map(
            self.child.space(),
            start,
            at,
            len,
            prot_of(perms) | abi::vm::MAP_PRIVATE,
        )?;
        Ok(true)
    }
}

/// Splits `blob` (NUL-terminated strings end to end) into `out`; the count,
/// or `None` if a string lacks its NUL or there are more than `out` holds.
pub fn split_args<'a>(blob: &'a [u8], out: &mut [&'a [u8]]) -> Option<usize> {
    let mut n = 0;
    let mut rest = blob;
    while !rest.is_empty() {
        let nul = rest.iter().position(|&b| b == 0)?;
        *out.get_mut(n)? = &rest[..nul];
        n += 1;
        rest = &rest[nul + 1..];
    }
    Some(n)
}

/// 16 bytes for AT_RANDOM: RDRAND when the CPU has it, mixed with the TSC
/// and a per-call counter through splitmix64 (so two loads differ even
/// without RDRAND; without it the bytes are unpredictable only as far as
/// the TSC is, which is not cryptographic).
pub fn random_bytes() -> [u8; 16] {
    use core::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // Relaxed: only distinct values matter.
    let c = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut out = [0u8; 16];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let seed = rdtsc() ^ rdrand().unwrap_or(0) ^ c.rotate_left(17) ^ (i as u64) << 56;
        chunk.copy_from_slice(&splitmix64(seed).to_le_bytes());
    }
    out
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn rdtsc() -> u64 {
    // SAFETY: rdtsc only reads the time-stamp counter (CR4.TSD is clear:
    // every program reads it for its benchmarks).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// RDRAND's value, if the CPU has the instruction (CPUID.1:ECX bit 30) and
/// it delivered one.
fn rdrand() -> Option<u64> {
    let ecx = core::arch::x86_64::__cpuid(1).ecx;
    if ecx & (1 << 30) == 0 {
        return None;
    }
    let (value, ok): (u64, u8);
    // SAFETY: CPUID says RDRAND exists; it only writes the two registers.
    unsafe {
        core::arch::asm!(
            "rdrand {v}", // v: the random value (valid if CF=1)
            "setc {ok}",  // ok: CF, 1 if a value was delivered
            v = out(reg) value,
            ok = out(reg_byte) ok,
            options(nomem, nostack),
        );
    }
    (ok == 1).then_some(value)
}

/// Loads `image` into a new process, a program named `name` (its own
/// budgets; the name in its fault lines), with `argv`/`envp`
/// (NUL-terminated strings end to end), its scratch mappings from
/// `scratch_base` in the caller's space. The process comes back not
/// started.
pub fn load(
    image: &[u8],
    name: &str,
    argv: &[u8],
    envp: &[u8],
    scratch_base: u64,
) -> Result<Loaded, Fail> {
    let plan = plan_image(image)?;
    load_planned(&plan, None, name, argv, envp, scratch_base)
}

/// The plan [`load`] makes of `image` (this module's base and limits).
pub fn plan_image(image: &[u8]) -> Result<LoadPlan<'_>, Fail> {
    plan(image, PIE_BASE, &LIMITS).map_err(Fail::Refused)
}

/// As [`load`], with the image already planned by [`plan_image`] (the
/// loader plans each boot module once: its bytes never change). With
/// `object`, the planned image is the bytes of that memory object from its
/// byte 0 (mapped by the caller, and never written while any process it
/// loaded lives): its read-only segments are mapped from the object, not
/// copied (the loader's boot modules).
pub fn load_planned(
    plan: &LoadPlan<'_>,
    object: Option<MemoryHandle>,
    name: &str,
    argv: &[u8],
    envp: &[u8],
    scratch_base: u64,
) -> Result<Loaded, Fail> {
    // Checked before anything is made: bad arguments cost nothing.
    let mut args: [&[u8]; stack::MAX_ARGS] = [&[]; stack::MAX_ARGS];
    let mut envs: [&[u8]; stack::MAX_ENVS] = [&[]; stack::MAX_ENVS];
    if argv.len() + envp.len() > libipc::loader::MAX_ARGS_BYTES {
        return Err(Fail::BadArgs);
    }
    let na = split_args(argv, &mut args).ok_or(Fail::BadArgs)?;
    let ne = split_args(envp, &mut envs).ok_or(Fail::BadArgs)?;
    // The stack and its guard page must not share a page with the image.
    if plan.overlaps(STACK_TOP - STACK_BYTES - PAGE_SIZE, STACK_BYTES + PAGE_SIZE) {
        return Err(Fail::Refused(LoadError::StackOverlap));
    }
    const _: () = assert!(STACK_TOP <= USER_END && STACK_BYTES >= ARGS_AREA);
    let process = process_create_program(name)?;
    let r = build(
        plan,
        process,
        object,
        &args[..na],
        &envs[..ne],
        scratch_base,
    );
    if r.is_err() {
        // Not started: it has no thread; killing it (and closing the
        // only handle) frees its space and everything mapped there.
        let _ = process.kill();
        let _ = process.close();
    }
    r
}

/// Bytes of the stack below its top: zero pages the program may never touch.
const FRESH_STACK: u64 = STACK_BYTES - ARGS_AREA;

/// This program's zero object for [`map_fresh_stack`] (0 until made).
static ZERO_STACK: AtomicU32 = AtomicU32::new(0);

/// The stack below its top in `process`: [`FRESH_STACK`] bytes mapped
/// private (copy-on-write) from one object of zero frames this program
/// makes once and never writes, so a page costs a frame and its zeroing
/// only when the process first writes it (as a demand-zero stack), not at
/// every load: a program that never goes deep (hello) maps 14 pages for
/// the price of sharing them (execp). No process can write the object:
/// its only handle stays here and every mapping of it is private.
/// Without the object (it could not be made) the pages are mapped fresh.
fn map_fresh_stack(process: ProcessHandle) -> Result<(), Error> {
    let at = STACK_TOP - STACK_BYTES;
    match zero_stack() {
        Some(zero) => zero
            .map(
                process.space(),
                at,
                0,
                FRESH_STACK,
                prot::WRITE | abi::vm::MAP_PRIVATE,
            )
            .map(|_| ()),
        None => process
            .space()
            .map(at, FRESH_STACK, prot::WRITE)
            .map(|_| ()),
    }
}

/// The zero object, made on first use.
fn zero_stack() -> Option<MemoryHandle> {
    // Acquire pairs with the Release of the compare-exchange below: a
    // handle number seen here was made (and is open) before it was stored.
    let h = ZERO_STACK.load(Ordering::Acquire);
    if h != 0 {
        return Some(MemoryHandle::from_raw(h));
    }
    let made = MemoryHandle::create(FRESH_STACK).ok()?;
    // AcqRel: Release publishes the made object; Acquire, on failure,
    // sees the one another thread stored (ours is closed: one object).
    match ZERO_STACK.compare_exchange(0, made.raw(), Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Some(made),
        Err(other) => {
            let _ = made.close();
            Some(MemoryHandle::from_raw(other))
        }
    }
}

fn build(
    plan: &LoadPlan<'_>,
    process: ProcessHandle,
    object: Option<MemoryHandle>,
    argv: &[&[u8]],
    envp: &[&[u8]],
    scratch_base: u64,
) -> Result<Loaded, Fail> {
    // The object holds what is copied: less what the image's own pages
    // give.
    let shared = object.map_or(0, |_| apply::shared_bytes(plan));
    let mut b = Builder::new(
        process,
        scratch_base,
        plan.memory_bytes() - shared + ARGS_AREA,
    )?;
    b.image = object;
    apply(plan, &mut b)?;
    // The stack: its top from the object (the builder writes it), the rest
    // zero pages copied on first write; the page below stays unmapped (the
    // guard).
    b.map_part(STACK_TOP - ARGS_AREA, ARGS_AREA, prot::WRITE)?;
    map_fresh_stack(process)?;
    let buf = b.view(STACK_TOP - ARGS_AREA, ARGS_AREA)?;
    let rsp = stack::build(buf, STACK_TOP, argv, envp, &plan.aux(), &random_bytes()).map_err(
        |e| match e {
            // Our own placement: cannot happen with the constants above.
            StackError::BadStackTop | StackError::StackTooSmall => Fail::Kernel(Error::NoMemory),
            _ => Fail::BadArgs,
        },
    )?;
    Ok(Loaded {
        process,
        entry: plan.entry(),
        rsp,
    })
}
