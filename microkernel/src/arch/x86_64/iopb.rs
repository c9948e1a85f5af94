//! Each CPU's task state segment with its I/O permission bitmap, and the
//! per-process bitmaps switched into it (hw, issue 11).
//!
//! Ring 3 runs with IOPL 0, so every `in`/`out` is checked against the TSS's
//! I/O permission bitmap: one bit per port, a clear bit allows the port. The
//! bitmap must sit inside the TSS segment, so each CPU's TSS lives here, in a
//! [`TssIo`] that is the 104-byte hardware TSS followed by 8192 bytes of
//! bitmap and the terminating all-ones byte the CPU may read past the last
//! port. The TSS's I/O-map offset is either [`IOMAP_BASE`] (the bitmap is
//! live) or [`IOMAP_NONE`] (past the segment limit: every port faults).
//!
//! A process that enabled ports owns an [`IoPerm`]: its own bitmap and a
//! key naming its current version, a number taken afresh from one global
//! counter by every change (so no two versions of any process's bitmaps
//! ever share a key; 0 means no bitmap). Each CPU records the key of the
//! bitmap live in its TSS (`PerCpu::io_live_key`, 0 while the I/O-map offset is
//! [`IOMAP_NONE`]) and the key of the bits its bitmap holds (`LOADED_KEY`,
//! live or not). Switching to a thread ([`switch_to`]) is one compare when
//! nothing changes -- neither process has a bitmap, or both are the same
//! version of one (ipcfast: the IPC fast path switches twice per round
//! trip) -- and otherwise turns the CPU's bitmap off for a process without
//! one and, for one with one, copies its 8 KiB into the CPU's bitmap only
//! when this CPU does not hold that version already. Permissions only grow
//! (an enable is sticky for the process's life), so a CPU holding an older
//! version grants a subset: a thread there whose `in` faults on a port
//! enabled meanwhile gets its bitmap refreshed and the instruction retried
//! ([`refresh`], from the user-fault path).
//!
//! A switch between two threads that never ran with a bitmap live skips
//! even the compare (switch2: their summaries, `FpuState::extra`'s
//! `fpu::IO`, set by [`switch_to`]'s caller, [`IoPerm::enable`] and
//! [`refresh`] before a thread runs with one): the bitmap is off then. A
//! thread of a process with a bitmap switched in that way gets it through
//! [`refresh`] at its first port access, like a thread whose CPU holds an
//! older version.
//!
//! Each CPU's record is touched only by that CPU with interrupts off (the
//! rule of `percpu`), so the statics below need no locks.

use super::fpu::FpuState;
use super::percpu::{CpuId, MAX_CPUS};
use alloc::boxed::Box;
use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::structures::tss::TaskStateSegment;

/// Ports an x86 CPU addresses.
pub const PORTS: usize = 1 << 16;
/// Bytes of a full bitmap (one bit per port).
pub const BITMAP_BYTES: usize = PORTS / 8;

/// One CPU's TSS and I/O bitmap, in the layout the CPU reads.
#[repr(C)]
pub struct TssIo {
    /// The hardware TSS (RSP0, IST stacks, I/O-map offset).
    pub tss: TaskStateSegment,
    /// One bit per port; a clear bit allows it.
    bitmap: [u8; BITMAP_BYTES],
    /// All ones: the CPU reads two bytes for an access near port 0xffff.
    tail: u8,
}

/// The I/O-map offset of a live bitmap.
pub const IOMAP_BASE: u16 = offset_of!(TssIo, bitmap) as u16;
/// The last byte of the TSS segment (its descriptor's limit).
pub const TSS_LIMIT: u64 = offset_of!(TssIo, tail) as u64;
/// The I/O-map offset meaning "no bitmap": past the limit, so every port
/// access from ring 3 is a #GP.
pub const IOMAP_NONE: u16 = TSS_LIMIT as u16 + 1;

const _: () = assert!(offset_of!(TssIo, tss) == 0);
const _: () = assert!(offset_of!(TssIo, bitmap) == size_of::<TaskStateSegment>());
const _: () = assert!(offset_of!(TssIo, tail) == offset_of!(TssIo, bitmap) + BITMAP_BYTES);
// The offset field is 16 bits wide.
const _: () = assert!(TSS_LIMIT < u16::MAX as u64);

impl TssIo {
    /// All zero: [`init_cpu`] fills the bitmap and the TSS fields before
    /// the TSS is loaded.
    // SAFETY: all-zero is a valid TaskStateSegment (integers only) and a
    // valid byte array.
    pub const ZERO: TssIo = unsafe { core::mem::zeroed() };
}

/// The key of the bits each CPU's bitmap holds, live or not (0: none yet).
/// Kept while a process without ports runs, so switching back to the one
/// with them does not copy its 8 KiB again.
static LOADED_KEY: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// CPU `cpu`'s TSS: in its per-CPU record (`percpu::PerCpu::io`, cut26s:
/// there its RSP0 is at a fixed `gs:` offset). Read and written only by CPU
/// `cpu` with interrupts off (and by the CPU itself on ring changes and
/// port accesses).
pub fn tss(cpu: CpuId) -> *mut TssIo {
    super::percpu::slot(cpu).tss_io()
}

/// Fills CPU `cpu`'s bitmap with ones (every port denied) and turns it off.
///
/// # Safety
/// On CPU `cpu`, with interrupts off, before its TSS is loaded.
pub unsafe fn init_cpu(cpu: CpuId) {
    let t = tss(cpu);
    // SAFETY: the caller owns the slot and nothing has loaded it yet.
    unsafe {
        (*t).bitmap.fill(0xff);
        (*t).tail = 0xff;
        (*t).tss.iomap_base = IOMAP_NONE;
    }
}

/// The next bitmap version's key (never 0, never reused: 2^64 changes do
/// not happen, so a CPU's record of a dead process's bitmap, or of an older
/// version of a live one, never matches another).
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// A process's I/O permissions: its bitmap once it enabled a port.
pub struct IoPerm {
    /// 0 while there is no bitmap; else the key of its current version,
    /// replaced (Release, under `bits`' lock, after the bits changed) by
    /// every change, read by [`switch_to`].
    key: AtomicU64,
    bits: spin::Mutex<Option<Box<[u8; BITMAP_BYTES]>>>,
}

impl Default for IoPerm {
    fn default() -> Self {
        Self::new()
    }
}

impl IoPerm {
    /// No port allowed.
    pub fn new() -> Self {
        IoPerm {
            key: AtomicU64::new(0),
            bits: spin::Mutex::new(None),
        }
    }

    /// Allows ports `first..first + count` (the caller checked the range
    /// lies within 0..65536) and loads the result on this CPU. `Err` when
    /// the first bitmap cannot be allocated. Call with interrupts off (a
    /// syscall), from a thread of the process this belongs to, whose FPU
    /// record is `cur` (its summary says it runs with a bitmap now:
    /// `FpuState::note_io`).
    pub fn enable(&self, first: u16, count: u32, cur: &FpuState) -> Result<(), abi::Error> {
        {
            let mut g = self.bits.lock();
            if g.is_none() {
                *g = Some(new_bitmap().ok_or(abi::Error::NoMemory)?);
            }
            let b = g.as_mut().expect("allocated above");
            for port in first as usize..first as usize + count as usize {
                b[port / 8] &= !(1 << (port % 8));
            }
            // A new version: its key, fresh from the global counter
            // (Relaxed: only uniqueness matters). Release: the bits above
            // are visible to a CPU that reads this key (Acquire); the copy
            // itself reads them under the lock.
            let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
            self.key.store(key, Ordering::Release);
        }
        cur.note_io();
        switch_to(Some(self));
        Ok(())
    }
}

/// A bitmap with every port denied, or `None` when the heap is exhausted.
fn new_bitmap() -> Option<Box<[u8; BITMAP_BYTES]>> {
    let layout = core::alloc::Layout::new::<[u8; BITMAP_BYTES]>();
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { alloc::alloc::alloc(layout) } as *mut [u8; BITMAP_BYTES];
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` is a fresh allocation of this layout; writing every byte
    // initialises it, and Box takes ownership with the same layout.
    unsafe {
        p.write_bytes(0xff, 1);
        Some(Box::from_raw(p))
    }
}

/// Makes this CPU's bitmap that of `perm` (the process of the thread about
/// to run; `None`: a process without one). Interrupts off (the scheduler's
/// switch, or a syscall). Inlined: the common case (nothing to change: no
/// bitmap before or after, or the same version of the same one) is one
/// compare of `perm`'s key with the CPU's live one on every context switch.
/// Returns whether a bitmap is live now (the caller records it in the
/// thread's summary: `FpuState::note_io`); none is exactly when `perm`
/// has none.
#[inline(always)]
pub fn switch_to(perm: Option<&IoPerm>) -> bool {
    let key = perm.map_or(0, |p| p.key.load(Ordering::Acquire));
    // Equal keys: the TSS's bitmap is live with exactly that version's bits
    // (the live key is set only after they were copied, below), or both
    // are 0 and the offset is IOMAP_NONE. Either way nothing to write.
    if key != super::percpu::io_live_key() {
        switch_slow(perm, key, super::percpu::cpu_index());
    }
    // `switch_slow` makes the live key 0 for a 0 key, else the version it
    // copied (never older than `key`, so never 0).
    key != 0
}

/// [`switch_to`] when the live bitmap must change: off, on, or another
/// version. `key` is `perm`'s key as `switch_to` read it; `i` this CPU.
#[inline(never)]
fn switch_slow(perm: Option<&IoPerm>, key: u64, i: usize) {
    let t = tss(CpuId::from_index(i));
    let (base, live) = if key == 0 {
        (IOMAP_NONE, 0)
    } else {
        let p = perm.expect("a key means a bitmap");
        if LOADED_KEY[i].load(Ordering::Relaxed) != key {
            let g = p.bits.lock();
            let b = g.as_ref().expect("a key means a bitmap");
            // SAFETY: this CPU's own slot, interrupts off; the CPU reads the
            // bitmap only on a ring-3 port access, not during this copy.
            unsafe { (*t).bitmap.copy_from_slice(&b[..]) };
            // Under the lock the key cannot move: record the version copied
            // (it may be newer than `key`, never older).
            LOADED_KEY[i].store(p.key.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        (IOMAP_BASE, LOADED_KEY[i].load(Ordering::Relaxed))
    };
    // SAFETY: this CPU's own slot, interrupts off.
    unsafe { (*t).tss.iomap_base = base };
    super::percpu::set_io_live_key(live);
}

/// A #GP from ring 3 in a thread of the process owning `perm`: if the
/// bitmap live on this CPU is not the current version of `perm`'s (another
/// thread enabled ports since this CPU loaded it, or it had none when this
/// thread was switched in), loads the current one and says so -- the
/// faulting instruction is retried. False: the fault stands. `cur` is the
/// faulting thread's FPU record (its summary says it runs with a bitmap
/// now: `FpuState::note_io`); a thread switched in without a bitmap (the
/// switch skips the bitmap between two threads whose summaries say they
/// never ran with one: `sched::ustate`) gets its process's here too.
pub fn refresh(perm: &IoPerm, cur: &FpuState) -> bool {
    let key = perm.key.load(Ordering::Acquire);
    let i = super::percpu::cpu_index();
    let stale = key != 0 && super::percpu::io_live_key() != key;
    if stale {
        cur.note_io();
        switch_slow(Some(perm), key, i);
    }
    stale
}
