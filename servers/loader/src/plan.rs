//! Validating an ELF64 image into a [`LoadPlan`].
//!
//! [`plan`] reads the file header and the program headers with the `elf`
//! crate and checks every rule the loader relies on, in this order (the
//! first broken rule is the error): the file header (size, magic, class,
//! data, version, machine, type), the program-header table (entry size,
//! count, inside the file), the segment types (no PT_INTERP, no PT_TLS, no
//! executable PT_GNU_STACK, at most one PT_DYNAMIC), then each PT_LOAD in
//! file order, then the entry point, PT_PHDR, PT_GNU_RELRO and the RELA
//! relocations ([`crate::reloc`]).
//!
//! # Invariants of an accepted plan
//! - Every segment's page range `start..end` is page-aligned, non-empty and
//!   inside `USER_MIN..USER_END`; segments are sorted and share no page.
//! - No segment is both writable and executable.
//! - Each segment's file bytes are a slice of the image and fit, at
//!   `vaddr`, inside its page range; `vaddr + mem_len <= end`.
//! - The entry point lies inside an executable segment's `vaddr..vaddr+mem_len`.
//! - Every relocation writes 8 bytes inside one writable segment.
//! - The segments' pages add up to at most `Limits::max_memory_bytes`.
//!
//! All arithmetic on file fields is checked: a sum that overflows is an
//! error, never a wrap.

use abi::layout::{PAGE_SIZE, USER_END, USER_MIN};
use elf::abi::{
    EM_X86_64, ET_DYN, ET_EXEC, EV_CURRENT, PF_R, PF_W, PF_X, PN_XNUM, PT_DYNAMIC, PT_GNU_RELRO,
    PT_GNU_STACK, PT_INTERP, PT_LOAD, PT_PHDR, PT_TLS,
};
use elf::endian::{AnyEndian, LittleEndian};
use elf::file::{Class, FileHeader};
use elf::segment::{ProgramHeader, SegmentTable};
use elf::ParseError;

use crate::reloc::{self, Relocations};
use crate::LoadError;

/// Size of the ELF64 file header.
pub const EHDR_SIZE: usize = 64;
/// Size of one ELF64 program header.
pub const PHDR_SIZE: usize = 56;
/// The most PT_LOAD segments a plan can hold (its array's length);
/// [`Limits::max_segments`] may only lower it.
pub const MAX_SEGMENTS: usize = 16;

/// Bounds on what one image may ask for, so a hostile image costs the loader
/// bounded time and the new process bounded memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most program headers of any type.
    pub max_phdrs: u16,
    /// Most non-empty PT_LOAD segments (at most [`MAX_SEGMENTS`]).
    pub max_segments: usize,
    /// Most bytes of pages all segments together may cover.
    pub max_memory_bytes: u64,
    /// Most RELA entries.
    pub max_relocations: u64,
}

impl Limits {
    /// The loader's defaults: far above what Mica's programs use (4 segments,
    /// under 1 MiB, no relocations) and small enough to bound the work.
    pub const DEFAULT: Limits = Limits {
        max_phdrs: 64,
        max_segments: MAX_SEGMENTS,
        max_memory_bytes: 256 << 20,
        max_relocations: 1 << 16,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A segment's access rights in the new process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Perms {
    pub read: bool,
    pub write: bool,
    pub execute: bool,
}

impl Perms {
    /// Read-only (what PT_GNU_RELRO becomes after relocation).
    pub const R: Perms = Perms {
        read: true,
        write: false,
        execute: false,
    };

    fn from_flags(p_flags: u32) -> Perms {
        Perms {
            read: p_flags & PF_R != 0,
            write: p_flags & PF_W != 0,
            execute: p_flags & PF_X != 0,
        }
    }
}

/// Whether the image is placed where it says (ET_EXEC) or at a chosen base
/// (ET_DYN, a static PIE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Exec,
    Pie,
}

/// One PT_LOAD segment, placed (the load bias already added).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    /// First byte of its first page.
    pub start: u64,
    /// One past its last page (page-aligned, `> start`).
    pub end: u64,
    pub perms: Perms,
    /// Where its first byte goes (`p_vaddr` plus the bias).
    pub vaddr: u64,
    /// `p_memsz`.
    pub mem_len: u64,
    /// The bytes to copy to `vaddr` (`p_filesz` of them from `p_offset`).
    pub file: &'a [u8],
    /// `p_offset` (to find the relocation table).
    pub file_offset: u64,
    /// Its index among the program headers.
    pub index: usize,
}

impl Segment<'_> {
    const EMPTY: Segment<'static> = Segment {
        start: 0,
        end: 0,
        perms: Perms {
            read: false,
            write: false,
            execute: false,
        },
        vaddr: 0,
        mem_len: 0,
        file: &[],
        file_offset: 0,
        index: 0,
    };

    /// Bytes of pages it covers.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Never true for a planned segment (kept for clippy's `len` rule).
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// The ranges (`addr`, `len`) inside its pages that no file byte covers and
    /// so must read as zero: the head of the first page before `vaddr`, and
    /// everything after the file bytes (the BSS and the last page's tail).
    pub fn zero_ranges(&self) -> [(u64, u64); 2] {
        let file_end = self.vaddr + self.file.len() as u64;
        [
            (self.start, self.vaddr - self.start),
            (file_end, self.end - file_end),
        ]
    }

    /// Whether `addr..addr+len` lies inside `vaddr..vaddr+mem_len`.
    pub fn covers(&self, addr: u64, len: u64) -> bool {
        match addr.checked_add(len) {
            Some(end) => addr >= self.vaddr && end <= self.vaddr + self.mem_len,
            None => false,
        }
    }
}

/// The auxiliary-vector facts the plan determines (see [`crate::stack`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuxValues {
    /// AT_PHDR: where the program headers are in the new process, if a
    /// loaded segment holds them.
    pub phdr: Option<u64>,
    /// AT_PHENT.
    pub phent: u64,
    /// AT_PHNUM.
    pub phnum: u64,
    /// AT_ENTRY.
    pub entry: u64,
    /// AT_BASE: the load bias, for a PIE only.
    pub base: Option<u64>,
}

/// What to do to load one image: which pages to map with which rights, which
/// bytes to copy where, what to zero, which relocations to apply and what
/// to make read-only afterwards. It borrows the image.
#[derive(Clone, Debug)]
pub struct LoadPlan<'a> {
    kind: Kind,
    bias: u64,
    entry: u64,
    segments: [Segment<'a>; MAX_SEGMENTS],
    nsegments: usize,
    memory_bytes: u64,
    phdr: Option<u64>,
    phnum: u16,
    relro: Option<(u64, u64)>,
    relocs: Relocations<'a>,
}

impl<'a> LoadPlan<'a> {
    pub fn kind(&self) -> Kind {
        self.kind
    }
    /// What was added to every address in the file (0 for ET_EXEC).
    pub fn bias(&self) -> u64 {
        self.bias
    }
    /// The entry point in the new process.
    pub fn entry(&self) -> u64 {
        self.entry
    }
    /// The PT_LOAD segments, sorted by address.
    pub fn segments(&self) -> &[Segment<'a>] {
        &self.segments[..self.nsegments]
    }
    /// Bytes of pages all segments cover.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }
    /// The page range (`start`, `len`) to make read-only after relocation.
    pub fn relro(&self) -> Option<(u64, u64)> {
        self.relro
    }
    /// The relocations to apply, each an 8-byte little-endian store.
    pub fn relocations(&self) -> Relocations<'a> {
        self.relocs
    }
    /// What the initial stack's auxiliary vector says about this image.
    pub fn aux(&self) -> AuxValues {
        AuxValues {
            phdr: self.phdr,
            phent: PHDR_SIZE as u64,
            phnum: u64::from(self.phnum),
            entry: self.entry,
            base: (self.kind == Kind::Pie).then_some(self.bias),
        }
    }
    /// Whether `start..start+len` shares a page with any segment (for
    /// placing the stack and its guard page).
    pub fn overlaps(&self, start: u64, len: u64) -> bool {
        let end = start.saturating_add(len);
        self.segments()
            .iter()
            .any(|s| start < s.end && s.start < end)
    }
}

fn page_down(x: u64) -> u64 {
    x & !(PAGE_SIZE - 1)
}

fn page_up(x: u64) -> Option<u64> {
    Some(x.checked_add(PAGE_SIZE - 1)? & !(PAGE_SIZE - 1))
}

/// The file header, checked.
fn header(image: &[u8]) -> Result<FileHeader<LittleEndian>, LoadError> {
    if image.is_empty() {
        return Err(LoadError::Empty);
    }
    if image.len() < EHDR_SIZE {
        let n = image.len().min(4);
        return Err(if image[..n] == elf::abi::ELFMAGIC[..n] {
            LoadError::Truncated
        } else {
            LoadError::NotElf
        });
    }
    // `parse_ident` checks magic, EI_VERSION, class and data, in that order.
    let (endian, class, osabi, abiversion) = elf::file::parse_ident::<AnyEndian>(
        &image[..elf::abi::EI_NIDENT],
    )
    .map_err(|e| match e {
        ParseError::BadMagic(_) => LoadError::NotElf,
        ParseError::UnsupportedElfClass(c) => LoadError::WrongClass(c),
        ParseError::UnsupportedElfEndianness(d) => LoadError::WrongData(d),
        _ => LoadError::BadVersion,
    })?;
    if class != Class::ELF64 {
        return Err(LoadError::WrongClass(image[elf::abi::EI_CLASS]));
    }
    if !matches!(endian, AnyEndian::Little) {
        return Err(LoadError::WrongData(image[elf::abi::EI_DATA]));
    }
    let ehdr = FileHeader::parse_tail(
        (LittleEndian, class, osabi, abiversion),
        &image[elf::abi::EI_NIDENT..EHDR_SIZE],
    )
    // The slice is exactly the tail's size, so parsing cannot run short.
    .map_err(|_| LoadError::Truncated)?;
    if ehdr.version != u32::from(EV_CURRENT) {
        return Err(LoadError::BadVersion);
    }
    if ehdr.e_machine != EM_X86_64 {
        return Err(LoadError::WrongMachine(ehdr.e_machine));
    }
    if ehdr.e_type != ET_EXEC && ehdr.e_type != ET_DYN {
        return Err(LoadError::WrongType(ehdr.e_type));
    }
    Ok(ehdr)
}

/// The program-header table, checked to lie inside the file.
fn phdr_table<'a>(
    image: &'a [u8],
    ehdr: &FileHeader<LittleEndian>,
    limits: &Limits,
) -> Result<SegmentTable<'a, LittleEndian>, LoadError> {
    if ehdr.e_phnum == 0 {
        return Err(LoadError::NoSegments);
    }
    if usize::from(ehdr.e_phentsize) != PHDR_SIZE {
        return Err(LoadError::BadPhentsize(ehdr.e_phentsize));
    }
    if ehdr.e_phnum == PN_XNUM || ehdr.e_phnum > limits.max_phdrs {
        return Err(LoadError::TooManyPhdrs(ehdr.e_phnum));
    }
    let size = (PHDR_SIZE as u64) * u64::from(ehdr.e_phnum);
    let end = ehdr
        .e_phoff
        .checked_add(size)
        .ok_or(LoadError::PhdrsOutsideFile)?;
    if ehdr.e_phoff == 0 || end > image.len() as u64 {
        return Err(LoadError::PhdrsOutsideFile);
    }
    Ok(SegmentTable::new(
        LittleEndian,
        Class::ELF64,
        &image[ehdr.e_phoff as usize..end as usize],
    ))
}

/// The file bytes of a segment, checked.
pub(crate) fn file_bytes<'a>(
    image: &'a [u8],
    ph: &ProgramHeader,
    index: usize,
) -> Result<&'a [u8], LoadError> {
    let end = ph
        .p_offset
        .checked_add(ph.p_filesz)
        .ok_or(LoadError::OffsetOverflow { index })?;
    if end > image.len() as u64 {
        return Err(LoadError::SegmentOutsideFile { index });
    }
    Ok(&image[ph.p_offset as usize..end as usize])
}

/// Validates `image` and plans its loading. A static PIE (ET_DYN) is placed
/// with its address 0 at `pie_base` (page-aligned, and aligned to every
/// segment's `p_align`); an ET_EXEC ignores `pie_base` and loads where its
/// headers say.
pub fn plan<'a>(
    image: &'a [u8],
    pie_base: u64,
    limits: &Limits,
) -> Result<LoadPlan<'a>, LoadError> {
    let ehdr = header(image)?;
    let table = phdr_table(image, &ehdr, limits)?;
    let kind = if ehdr.e_type == ET_DYN {
        Kind::Pie
    } else {
        Kind::Exec
    };
    let bias = match kind {
        Kind::Exec => 0,
        Kind::Pie => pie_base,
    };
    if bias % PAGE_SIZE != 0 {
        return Err(LoadError::BadBase);
    }

    // Segment types first: an image we would refuse anyway is not worth
    // checking further.
    let mut dynamic = None;
    let mut phdr_seg = None;
    let mut relro_seg = None;
    for (index, ph) in table.iter().enumerate() {
        match ph.p_type {
            PT_INTERP => return Err(LoadError::Interpreter),
            PT_TLS => return Err(LoadError::TlsUnsupported),
            PT_GNU_STACK if ph.p_flags & PF_X != 0 => return Err(LoadError::ExecutableStack),
            PT_DYNAMIC if dynamic.is_some() => return Err(LoadError::BadDynamic),
            PT_DYNAMIC => dynamic = Some((index, ph)),
            PT_PHDR => phdr_seg = Some(ph),
            PT_GNU_RELRO => relro_seg = Some(ph),
            _ => {}
        }
    }

    let mut segments = [Segment::EMPTY; MAX_SEGMENTS];
    let mut n = 0usize;
    let mut memory_bytes = 0u64;
    let max_segments = limits.max_segments.min(MAX_SEGMENTS);
    for (index, ph) in table.iter().enumerate() {
        if ph.p_type != PT_LOAD {
            continue;
        }
        if ph.p_filesz > ph.p_memsz {
            return Err(LoadError::FileSizeExceedsMemSize { index });
        }
        let file = file_bytes(image, &ph, index)?;
        if ph.p_memsz == 0 {
            continue; // maps nothing (filesz is 0 too)
        }
        if ph.p_align > 1 && !ph.p_align.is_power_of_two() {
            return Err(LoadError::BadAlignment { index });
        }
        let align = ph.p_align.max(PAGE_SIZE);
        if ph.p_vaddr % PAGE_SIZE != ph.p_offset % PAGE_SIZE
            || ph.p_vaddr % align != ph.p_offset % align
        {
            return Err(LoadError::Misaligned { index });
        }
        if bias % align != 0 {
            return Err(LoadError::BadBase);
        }
        let perms = Perms::from_flags(ph.p_flags);
        if perms.write && perms.execute {
            return Err(LoadError::WriteAndExecute { index });
        }
        let overflow = LoadError::AddressOverflow { index };
        let vaddr = bias.checked_add(ph.p_vaddr).ok_or(overflow)?;
        let mem_end = vaddr.checked_add(ph.p_memsz).ok_or(overflow)?;
        let start = page_down(vaddr);
        let end = page_up(mem_end).ok_or(overflow)?;
        if start < USER_MIN || end > USER_END {
            return Err(LoadError::OutsideUserRange { index });
        }
        if let Some(prev) = n.checked_sub(1).map(|i| &segments[i]) {
            if vaddr < prev.vaddr {
                return Err(LoadError::SegmentsUnsorted { index });
            }
            if start < prev.end {
                return Err(LoadError::SegmentsOverlap { index });
            }
        }
        if n == max_segments {
            return Err(LoadError::TooManySegments);
        }
        // Cannot overflow: every segment lies below USER_END and they do not
        // overlap, so the sum is below USER_END too.
        memory_bytes += end - start;
        if memory_bytes > limits.max_memory_bytes {
            return Err(LoadError::TooMuchMemory);
        }
        segments[n] = Segment {
            start,
            end,
            perms,
            vaddr,
            mem_len: ph.p_memsz,
            file,
            file_offset: ph.p_offset,
            index,
        };
        n += 1;
    }
    if n == 0 {
        return Err(LoadError::NoSegments);
    }
    let placed = &segments[..n];

    let entry = bias
        .checked_add(ehdr.e_entry)
        .ok_or(LoadError::EntryNotExecutable)?;
    if !placed.iter().any(|s| s.perms.execute && s.covers(entry, 1)) {
        return Err(LoadError::EntryNotExecutable);
    }

    // AT_PHDR: PT_PHDR if present (it must be loaded from the file), else the
    // loaded segment whose file bytes hold the table, else none.
    let table_len = (PHDR_SIZE as u64) * u64::from(ehdr.e_phnum);
    let phdr = match phdr_seg {
        Some(ph) => {
            let at = bias
                .checked_add(ph.p_vaddr)
                .ok_or(LoadError::PhdrNotLoaded)?;
            let loaded = placed.iter().any(|s| {
                at >= s.vaddr
                    && at
                        .checked_add(table_len)
                        .is_some_and(|e| e <= s.vaddr + s.file.len() as u64)
            });
            if !loaded {
                return Err(LoadError::PhdrNotLoaded);
            }
            Some(at)
        }
        // phoff + table_len was checked against the file's length above.
        None => placed
            .iter()
            .find(|s| {
                ehdr.e_phoff >= s.file_offset
                    && ehdr.e_phoff + table_len <= s.file_offset + s.file.len() as u64
            })
            .map(|s| s.vaddr + (ehdr.e_phoff - s.file_offset)),
    };

    // PT_GNU_RELRO: whole pages inside one writable segment, made read-only
    // after relocation (glibc's rounding: both ends down to a page).
    let relro = match relro_seg {
        None => None,
        Some(ph) => {
            let lo = bias.checked_add(ph.p_vaddr).ok_or(LoadError::BadRelro)?;
            let hi = lo.checked_add(ph.p_memsz).ok_or(LoadError::BadRelro)?;
            let inside = placed
                .iter()
                .any(|s| s.perms.write && lo >= s.start && hi <= s.end);
            if !inside {
                return Err(LoadError::BadRelro);
            }
            let (lo, hi) = (page_down(lo), page_down(hi));
            (hi > lo).then_some((lo, hi - lo))
        }
    };

    let relocs = match dynamic {
        None => Relocations::EMPTY,
        Some((index, ph)) => reloc::check(image, &ph, index, placed, bias, limits)?,
    };

    Ok(LoadPlan {
        kind,
        bias,
        entry,
        segments,
        nsegments: n,
        memory_bytes,
        phdr,
        phnum: ehdr.e_phnum,
        relro,
        relocs,
    })
}
