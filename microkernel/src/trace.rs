//! The kernel trace (issue 12 part 4): per-CPU rings of TSC-stamped
//! records (context switches, IPC, interrupts, user faults, process start
//! and exit, syscalls, ring-3 marks), off by default, read out over serial
//! at shutdown and on panic for the runner's `--trace FILE.json`.
//! Record layout and framing: [`abi::trace`].
//!
//! # Cost when off
//! Every trace point is an `#[inline(always)]` test of one global mask
//! ([`MASK`], one RIP-relative load) and a predicted-not-taken branch. The
//! arguments are closures, evaluated only inside the branch, so a disabled
//! point computes nothing. The recording itself ([`record`]) is out of
//! line and cold.
//!
//! # The rings: one writer, lock-free readers
//! Each CPU owns one ring, allocated at its init when tracing is on, and
//! hung off its `PerCpu::trace` (no `[_; MAX_CPUS]` side array). Only the
//! owning CPU writes it, with interrupts off for the whole record (NMIs
//! record nothing), so writes never nest. A record goes into slot
//! `head % len` (five relaxed word stores), then `head + 1` is stored with
//! Release: a reader that loads `head` with Acquire sees every record below
//! it complete. The ring never stops: the newest `len` records are kept.
//!
//! A reader ([`dump`]) copies without stopping the writer: it loads `head`
//! (Acquire), copies the slots below it, then loads `head` again after an
//! Acquire fence (the seqlock reader pattern: the copies cannot move past
//! the second load). The writer may have been storing into the slot of
//! index `head2` meanwhile, which held index `head2 - len`; so only copied
//! indices `> head2 - len` are known intact, and the rest are dropped.
//! The dump first clears the mask (SeqCst), so writers soon stop.
//!
//! # Names
//! A process's program name is recorded with its start (category `proc`),
//! and also kept in a small global table of the latest [`MAX_NAMES`]
//! starts ([`NAMES`], lock-free: a slot is claimed with `fetch_add` modulo
//! its size, unpublished (pid 0), filled, then published by a Release store
//! of its pid), so the rings' newest records still find the names of
//! processes whose start they no longer hold. Two starts [`MAX_NAMES`]
//! apart that fill one slot at the same instant may mix their names: a
//! display glitch, never memory unsafety.

use crate::arch::cpu;
use crate::arch::percpu;
use abi::trace::{self as wire, cat, head_word, Kind};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// The categories on ([`abi::trace::cat`] bits); 0 = tracing off. Set once
/// at boot, cleared by [`dump`].
static MASK: AtomicU32 = AtomicU32::new(0);
/// The categories asked for on the command line (the rings are allocated
/// only then).
static WANTED: AtomicU32 = AtomicU32::new(0);
/// Records per CPU ring (a power of two).
static EVENTS: AtomicUsize = AtomicUsize::new(wire::DEFAULT_EVENTS);
/// Set by the first [`dump`]: the rings are read out once.
static DUMPED: AtomicBool = AtomicBool::new(false);

/// One CPU's ring: `words.len() / WORDS` records.
struct Ring {
    /// Records ever written (the next one goes to `head % len`).
    head: AtomicU64,
    /// `len - 1` (`len` is a power of two).
    mask: u64,
    words: Box<[AtomicU64]>,
}

/// Whether any of the categories `c` is on: the whole cost of a disabled
/// trace point.
#[inline(always)]
pub fn on(c: u32) -> bool {
    // Relaxed: the mask is a hint read on every point; a point that races
    // with the boot-time store or the dump's clear records or not, either
    // is fine (the ring itself is published separately, see `record`).
    MASK.load(Ordering::Relaxed) & c != 0
}

/// Whether the command line asked for any of the categories `c` (a
/// superset of what [`on`] ever reports: the mask is set to it at a CPU's
/// init and cleared by the dump).
pub fn wanted(c: u32) -> bool {
    WANTED.load(Ordering::Relaxed) & c != 0
}

/// Reads `trace=` and `trace.events=` from the command line (called once
/// on the boot CPU, after the heap is up, before any CPU's [`init_cpu`]).
pub fn configure(value: Option<&str>, events: Option<&str>) {
    let Some(value) = value else { return };
    let mask = match wire::parse_categories(value) {
        Ok(m) => m,
        Err(word) => {
            log::warn!(
                "trace: unknown category {word:?} (known: on, off, sched, ipc, irq, fault, proc, syscall, mark); tracing stays off"
            );
            return;
        }
    };
    if let Some(n) = events {
        match n.parse::<usize>() {
            Ok(n) if n.is_power_of_two() && (wire::MIN_EVENTS..=wire::MAX_EVENTS).contains(&n) => {
                EVENTS.store(n, Ordering::Relaxed)
            }
            _ => log::warn!(
                "trace.events={n:?} is not a power of two in {}..={}; keeping {}",
                wire::MIN_EVENTS,
                wire::MAX_EVENTS,
                wire::DEFAULT_EVENTS
            ),
        }
    }
    WANTED.store(mask, Ordering::Relaxed);
    if mask != 0 {
        log::info!(
            "trace: categories 0x{mask:x} on, {} records per CPU ring",
            EVENTS.load(Ordering::Relaxed)
        );
    }
}

/// Gives this CPU its ring if tracing was asked for, then (on the first
/// CPU to get one) turns the categories on. Once per CPU, at its init.
pub fn init_cpu() {
    let wanted = WANTED.load(Ordering::Relaxed);
    if wanted == 0 {
        return;
    }
    let len = EVENTS.load(Ordering::Relaxed);
    let mut words = Vec::new();
    if words.try_reserve_exact(len * wire::WORDS).is_err() {
        log::warn!("trace: no memory for this CPU's ring; it records nothing");
        return;
    }
    words.resize_with(len * wire::WORDS, || AtomicU64::new(0));
    let ring = Box::new(Ring {
        head: AtomicU64::new(0),
        mask: len as u64 - 1,
        words: words.into_boxed_slice(),
    });
    // Release: the ring's initialised memory is visible to whoever loads
    // the pointer (this CPU's `record`, any CPU's `dump`). Never freed.
    percpu::this()
        .trace
        .store(Box::into_raw(ring).cast(), Ordering::Release);
    MASK.store(wanted, Ordering::Relaxed);
}

/// This CPU's ring, if it has one.
fn ring_of(pc: &percpu::PerCpu) -> Option<&'static Ring> {
    // Acquire: pairs with the Release store in `init_cpu`.
    let p = pc.trace.load(Ordering::Acquire) as *const Ring;
    // SAFETY: non-null only after `init_cpu` stored a leaked `Box<Ring>`,
    // which lives for the rest of the machine's life.
    unsafe { p.as_ref() }
}

/// Appends one record to this CPU's ring: the out-of-line half of every
/// trace point (only reached when its category is on).
#[inline(never)]
#[cold]
fn record(head: u64, b: u64, c: u64, d: u64) {
    // Interrupts off for the whole record, so an interrupt's trace point
    // never lands in the middle of this one (the single-writer rule).
    let was_on = cpu::interrupts_enabled();
    cpu::disable_interrupts();
    if let Some(r) = percpu::this_if_up().and_then(ring_of) {
        // Relaxed: only this CPU writes `head`.
        let h = r.head.load(Ordering::Relaxed);
        let base = (h & r.mask) as usize * wire::WORDS;
        let w = &r.words[base..base + wire::WORDS];
        w[0].store(cpu::rdtsc(), Ordering::Relaxed);
        w[1].store(head, Ordering::Relaxed);
        w[2].store(b, Ordering::Relaxed);
        w[3].store(c, Ordering::Relaxed);
        w[4].store(d, Ordering::Relaxed);
        // Release: the record above is complete for any reader that sees
        // the new head (module doc).
        r.head.store(h + 1, Ordering::Release);
    }
    if was_on {
        cpu::enable_interrupts();
    }
}

/// A context switch: `f` gives the reason ([`abi::trace::reason`]) and
/// `[previous tid, next tid, previous pid, next pid]`.
#[inline(always)]
pub fn switch(f: impl FnOnce() -> (u16, [u64; 4])) {
    if on(cat::SCHED) {
        let (why, [pt, nt, pp, np]) = f();
        record(head_word(Kind::Switch, why, pt as u32), nt, pp, np);
    }
}

/// The reason of a scheduler switch away from a thread that is still
/// runnable (`ready`), has ended (`dead`), or neither (it blocked).
pub fn reason(ready: bool, dead: bool) -> u16 {
    if dead {
        wire::reason::EXIT
    } else if ready {
        wire::reason::PREEMPT
    } else {
        wire::reason::BLOCK
    }
}

/// An IPC event of `kind` (one of the `Ipc*` kinds): `f` gives
/// `(tid, endpoint id, badge or the caller's tid)`.
#[inline(always)]
pub fn ipc(kind: Kind, f: impl FnOnce() -> (u64, u64, u64)) {
    if on(cat::IPC) {
        let (tid, ep, x) = f();
        record(head_word(kind, 0, tid as u32), ep, x, 0);
    }
}

/// Interrupt `vector` entered (`enter`) or left.
#[inline(always)]
pub fn irq(vector: u64, enter: bool) {
    if on(cat::IRQ) {
        let k = if enter { Kind::IrqEnter } else { Kind::IrqExit };
        record(head_word(k, vector as u16, 0), 0, 0, 0);
    }
}

/// An exception from ring 3: `f` gives `(vector, tid, RIP, error code)`;
/// CR2 is read here for a page fault.
#[inline(always)]
pub fn fault(f: impl FnOnce() -> (u64, u64, u64, u64)) {
    if on(cat::FAULT) {
        let (vector, tid, rip, err) = f();
        let cr2 = if vector == 14 { cpu::cr2() } else { 0 };
        record(
            head_word(Kind::Fault, vector as u16, tid as u32),
            rip,
            cr2,
            err,
        );
    }
}

/// Process names [`NAMES`] keeps (the latest starts).
const MAX_NAMES: usize = 512;

/// One published program name.
struct NameSlot {
    /// 0 until published (Release, after the name words).
    pid: AtomicU64,
    name: [AtomicU64; 2],
}

/// The process-name table (module doc).
static NAMES: [NameSlot; MAX_NAMES] = [const {
    NameSlot {
        pid: AtomicU64::new(0),
        name: [AtomicU64::new(0), AtomicU64::new(0)],
    }
}; MAX_NAMES];
/// Slots of [`NAMES`] ever claimed (slot = claim % [`MAX_NAMES`]).
static NAMES_USED: AtomicUsize = AtomicUsize::new(0);

/// Process `pid` started running program `name` (a boot module's name).
#[inline(always)]
pub fn process_start(pid: u64, name: &str) {
    if on(cat::PROC) {
        named_start(pid, name.as_bytes());
    }
}

#[inline(never)]
#[cold]
fn named_start(pid: u64, name: &[u8]) {
    let [lo, hi] = wire::name_words(name);
    // Relaxed claim: the slot is ours (module doc); published below.
    let s = &NAMES[NAMES_USED.fetch_add(1, Ordering::Relaxed) % MAX_NAMES];
    s.pid.store(0, Ordering::Relaxed);
    s.name[0].store(lo, Ordering::Relaxed);
    s.name[1].store(hi, Ordering::Relaxed);
    // Release: a reader that sees the pid sees the name.
    s.pid.store(pid, Ordering::Release);
    record(head_word(Kind::ProcStart, 0, pid as u32), lo, hi, 0);
}

/// Process `pid` ended with status word `status`.
#[inline(always)]
pub fn process_exit(pid: u64, status: u64) {
    if on(cat::PROC) {
        record(head_word(Kind::ProcExit, 0, pid as u32), status, 0, 0);
    }
}

/// A syscall through a handler begins (`exit == None`) or ends with
/// RAX = `Some(result)`: `f` gives `(syscall number, tid)`.
#[inline(always)]
pub fn syscall(exit: Option<u64>, f: impl FnOnce() -> (u64, u64)) {
    if on(cat::SYSCALL) {
        let (n, tid) = f();
        match exit {
            None => record(head_word(Kind::SyscallEnter, n as u16, tid as u32), 0, 0, 0),
            Some(rax) => record(
                head_word(Kind::SyscallExit, n as u16, tid as u32),
                rax,
                0,
                0,
            ),
        }
    }
}

/// `trace_mark`'s record: `name` (validated by the caller) and `value`
/// from thread `tid`. Whether the category was on.
pub fn mark(tid: u64, name: &[u8], value: u64) -> bool {
    if !on(cat::MARK) {
        return false;
    }
    let [lo, hi] = wire::name_words(name);
    record(head_word(Kind::Mark, 0, tid as u32), lo, hi, value);
    true
}

/// A frame line being built: `TRACE ...` then `*checksum` on [`Line::send`].
struct Line {
    buf: [u8; 320],
    len: usize,
}

impl Line {
    fn new(tag: char) -> Line {
        let mut l = Line {
            buf: [0; 320],
            len: 0,
        };
        let _ = write!(l, "{}{tag}", wire::PREFIX);
        l
    }

    fn hex_word(&mut self, w: u64) {
        let _ = write!(self, "{w:016x}");
    }

    /// Prints the line with its checksum (one serial-lock hold: never
    /// interleaved with other kernel lines).
    fn send(self) {
        let body = &self.buf[..self.len];
        let sum = wire::fnv1a32(body);
        // The buffer holds only ASCII written through `write_str`.
        let text = core::str::from_utf8(body).unwrap_or("TRACE ?");
        crate::println!("{text}*{sum:08x}");
    }
}

impl Write for Line {
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

/// What [`dump`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dumped {
    /// Tracing is off: there are no rings.
    Off,
    /// An earlier call dumped them (they are read out once).
    Already,
    /// This call printed them: this many `D` (record) lines.
    Lines(u64),
}

/// Reads every CPU's ring out over serial in the framed encoding of
/// [`abi::trace`], once (later calls print nothing), and stops tracing.
/// Called at shutdown, on panic and by `trace_dump` (init only: the
/// shell's `trace`); prints nothing when tracing is off.
pub fn dump() -> Dumped {
    let mask = WANTED.load(Ordering::Relaxed);
    if mask == 0 {
        return Dumped::Off;
    }
    if DUMPED.swap(true, Ordering::SeqCst) {
        return Dumped::Already;
    }
    // SeqCst: writers that load the mask after this record nothing more;
    // one already inside `record` is handled by the head check below.
    MASK.store(0, Ordering::SeqCst);
    let cpus = percpu::online();
    let mut l = Line::new('H');
    let _ = write!(
        l,
        " {} {cpus} {} {mask}",
        wire::VERSION,
        crate::arch::apic::tsc_per_ms()
    );
    l.send();
    for s in &NAMES {
        // Acquire: pairs with `named_start`'s Release.
        let pid = s.pid.load(Ordering::Acquire);
        if pid == 0 {
            continue; // claimed, not yet published
        }
        let mut l = Line::new('N');
        let _ = write!(l, " {pid} ");
        for w in &s.name {
            for b in w.load(Ordering::Relaxed).to_le_bytes() {
                let _ = write!(l, "{b:02x}");
            }
        }
        l.send();
    }
    let mut lines = 0u64;
    for pc in percpu::online_cpus() {
        let Some(r) = ring_of(pc) else { continue };
        lines += dump_ring(pc.id().index(), r);
    }
    let mut l = Line::new('Z');
    let _ = write!(l, " {lines}");
    l.send();
    Dumped::Lines(lines)
}

/// Prints ring `r` of CPU `cpu` as `C`, `D` and `V` lines, straight from
/// the ring (no copy, no allocation: this runs on panic too, maybe with
/// the heap's lock held); the `D` count.
fn dump_ring(cpu: usize, r: &Ring) -> u64 {
    let len = r.mask + 1;
    // Acquire: every record below `h1` is complete (module doc).
    let h1 = r.head.load(Ordering::Acquire);
    let first = h1.saturating_sub(len);
    let mut l = Line::new('C');
    let _ = write!(l, " {cpu} {h1} {first} {len}");
    l.send();
    let mut lines = 0;
    let mut i = first;
    while i < h1 {
        let mut l = Line::new('D');
        let _ = write!(l, " {cpu} {i} ");
        let end = (i + wire::EVENTS_PER_LINE as u64).min(h1);
        while i < end {
            let base = (i & r.mask) as usize * wire::WORDS;
            for k in 0..wire::WORDS {
                l.hex_word(r.words[base + k].load(Ordering::Relaxed));
            }
            i += 1;
        }
        l.send();
        lines += 1;
    }
    // The seqlock reader's fence: the reads above happen before this
    // second head load. A record the writer began overwriting meanwhile
    // has an index `<= h2 - len`; the reader drops those (module doc).
    fence(Ordering::Acquire);
    let h2 = r.head.load(Ordering::Relaxed);
    let mut l = Line::new('V');
    let _ = write!(l, " {cpu} {h2}");
    l.send();
    lines
}
