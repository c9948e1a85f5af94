//! Why an image is refused. One variant per rule of [`crate::plan`], so a
//! test (and the loader's client) can tell exactly which rule an image broke.
//! `index` fields are program-header indices (0-based, in file order).

use core::fmt;

/// An ELF image the loader refuses, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// The file is empty (zero bytes).
    Empty,
    /// The file is shorter than the 64-byte ELF64 file header.
    Truncated,
    /// The first four bytes are not `\x7fELF`.
    NotElf,
    /// `e_ident[EI_CLASS]` is not ELFCLASS64 (the value found).
    WrongClass(u8),
    /// `e_ident[EI_DATA]` is not ELFDATA2LSB (the value found).
    WrongData(u8),
    /// `e_ident[EI_VERSION]` or `e_version` is not EV_CURRENT.
    BadVersion,
    /// `e_machine` is not EM_X86_64 (the value found).
    WrongMachine(u16),
    /// `e_type` is neither ET_EXEC nor ET_DYN (the value found).
    WrongType(u16),
    /// `e_phentsize` is not 56, the size of an ELF64 program header.
    BadPhentsize(u16),
    /// More program headers than [`crate::Limits::max_phdrs`] (the count;
    /// PN_XNUM's extended count is refused this way too).
    TooManyPhdrs(u16),
    /// The program-header table does not lie inside the file.
    PhdrsOutsideFile,
    /// No PT_LOAD segment with a non-zero size.
    NoSegments,
    /// A PT_INTERP segment: the image wants a dynamic linker, which Mica has not.
    Interpreter,
    /// A PT_TLS segment: the ring-3 runtime sets up no thread-local storage.
    TlsUnsupported,
    /// PT_GNU_STACK asks for an executable stack (never given: W^X).
    ExecutableStack,
    /// A PT_LOAD segment's `p_filesz` exceeds its `p_memsz`.
    FileSizeExceedsMemSize { index: usize },
    /// A segment's `p_offset + p_filesz` overflows.
    OffsetOverflow { index: usize },
    /// A segment's file bytes end beyond the end of the file.
    SegmentOutsideFile { index: usize },
    /// A PT_LOAD segment's `p_vaddr + p_memsz` (after the load bias, rounded up
    /// to a page) overflows.
    AddressOverflow { index: usize },
    /// `p_align` is neither 0, 1 nor a power of two.
    BadAlignment { index: usize },
    /// `p_vaddr` and `p_offset` disagree modulo the page size (or `p_align`).
    Misaligned { index: usize },
    /// A PT_LOAD segment reaches outside [`abi::layout::USER_MIN`]..[`abi::layout::USER_END`].
    OutsideUserRange { index: usize },
    /// A PT_LOAD segment starts below the previous one (they must be sorted by
    /// address, as the ELF specification requires).
    SegmentsUnsorted { index: usize },
    /// A PT_LOAD segment shares a page with the previous one.
    SegmentsOverlap { index: usize },
    /// A PT_LOAD segment is both writable and executable.
    WriteAndExecute { index: usize },
    /// More non-empty PT_LOAD segments than [`crate::Limits::max_segments`].
    TooManySegments,
    /// The segments' pages add up to more than [`crate::Limits::max_memory_bytes`].
    TooMuchMemory,
    /// The entry point is not inside an executable PT_LOAD segment.
    EntryNotExecutable,
    /// The PIE load base is not aligned to the page size and every segment's
    /// `p_align`.
    BadBase,
    /// PT_PHDR names memory no PT_LOAD segment loads from the file.
    PhdrNotLoaded,
    /// PT_GNU_RELRO is not inside one writable PT_LOAD segment.
    BadRelro,
    /// More than one PT_DYNAMIC, or its entries are not a whole number of
    /// 16-byte entries ending in DT_NULL.
    BadDynamic,
    /// DT_NEEDED: the image wants shared libraries.
    NeedsSharedLibrary,
    /// A relocation table other than DT_RELA (DT_REL, DT_JMPREL, DT_RELR):
    /// the dynamic tag that named it.
    UnsupportedRelocationTable(i64),
    /// DT_RELA, DT_RELASZ and DT_RELAENT are inconsistent: one missing, an
    /// entry size other than 24, a size not a multiple of it, or a table not
    /// inside the file bytes of a PT_LOAD segment.
    BadRelaTable,
    /// More relocations than [`crate::Limits::max_relocations`].
    TooManyRelocations,
    /// A relocation other than R_X86_64_RELATIVE without symbol (its type).
    UnsupportedRelocation(u32),
    /// A relocation that would write outside a writable PT_LOAD segment (its
    /// `r_offset`).
    RelocationOutsideWritable(u64),
    /// A segment shares a page with the initial stack or its guard page
    /// (the loader's placement, not a rule of [`crate::plan`]).
    StackOverlap,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use LoadError::*;
        match *self {
            Empty => write!(f, "empty file"),
            Truncated => write!(f, "truncated ELF header"),
            NotElf => write!(f, "not an ELF file"),
            WrongClass(c) => write!(f, "ELF class {c}, not 64-bit"),
            WrongData(d) => write!(f, "ELF data encoding {d}, not little endian"),
            BadVersion => write!(f, "ELF version is not 1"),
            WrongMachine(m) => write!(f, "machine {m}, not x86_64"),
            WrongType(t) => write!(f, "ELF type {t}, neither executable nor static PIE"),
            BadPhentsize(s) => write!(f, "program header size {s}, not 56"),
            TooManyPhdrs(n) => write!(f, "{n} program headers, too many"),
            PhdrsOutsideFile => write!(f, "program headers outside the file"),
            NoSegments => write!(f, "no loadable segment"),
            Interpreter => write!(f, "PT_INTERP: dynamic linking is not supported"),
            TlsUnsupported => write!(f, "PT_TLS: thread-local storage is not supported"),
            ExecutableStack => write!(f, "executable stack requested"),
            FileSizeExceedsMemSize { index } => write!(f, "segment {index}: p_filesz > p_memsz"),
            OffsetOverflow { index } => write!(f, "segment {index}: p_offset + p_filesz overflows"),
            SegmentOutsideFile { index } => {
                write!(f, "segment {index}: file bytes outside the file")
            }
            AddressOverflow { index } => write!(f, "segment {index}: address range overflows"),
            BadAlignment { index } => write!(f, "segment {index}: p_align not a power of two"),
            Misaligned { index } => write!(f, "segment {index}: p_vaddr and p_offset disagree"),
            OutsideUserRange { index } => write!(f, "segment {index}: outside user space"),
            SegmentsUnsorted { index } => write!(f, "segment {index}: not in address order"),
            SegmentsOverlap { index } => write!(f, "segment {index}: overlaps the previous one"),
            WriteAndExecute { index } => write!(f, "segment {index}: writable and executable"),
            TooManySegments => write!(f, "too many loadable segments"),
            TooMuchMemory => write!(f, "segments need too much memory"),
            EntryNotExecutable => write!(f, "entry point not in an executable segment"),
            BadBase => write!(f, "load base not aligned"),
            PhdrNotLoaded => write!(f, "PT_PHDR not inside a loaded segment"),
            BadRelro => write!(f, "PT_GNU_RELRO not inside one writable segment"),
            BadDynamic => write!(f, "malformed dynamic section"),
            NeedsSharedLibrary => write!(f, "DT_NEEDED: shared libraries are not supported"),
            UnsupportedRelocationTable(t) => write!(f, "relocation table tag {t} not supported"),
            BadRelaTable => write!(f, "malformed DT_RELA table"),
            TooManyRelocations => write!(f, "too many relocations"),
            UnsupportedRelocation(t) => write!(f, "relocation type {t} not supported"),
            RelocationOutsideWritable(o) => {
                write!(f, "relocation at {o:#x} outside a writable segment")
            }
            StackOverlap => write!(f, "a segment overlaps the initial stack"),
        }
    }
}

/// A field's value back from a wire `detail`.
trait Detail: Sized {
    fn from_detail(d: u64) -> Option<Self>;
    fn to_detail(self) -> u64;
}
macro_rules! detail_unsigned {
    ($($t:ty),*) => {$(
        impl Detail for $t {
            fn from_detail(d: u64) -> Option<Self> {
                Self::try_from(d).ok()
            }
            fn to_detail(self) -> u64 {
                self as u64
            }
        }
    )*};
}
detail_unsigned!(u8, u16, u32, u64, usize);
impl Detail for i64 {
    fn from_detail(d: u64) -> Option<Self> {
        Some(d as i64) // two's complement, as `to_detail` made it
    }
    fn to_detail(self) -> u64 {
        self as u64
    }
}

/// Each variant's wire code, in one table so `code`, `detail` and
/// `from_wire` cannot disagree. Codes are stable: a new variant takes the
/// next free number, none is ever reused.
macro_rules! wire_codes {
    (
        unit { $($uc:literal => $u:ident,)* }
        value { $($vc:literal => $v:ident,)* }
        index { $($ic:literal => $i:ident,)* }
    ) => {
        impl LoadError {
            /// The stable wire code of `libipc::loader::Reply::Refused`.
            pub fn code(&self) -> u64 {
                match self {
                    $(LoadError::$u => $uc,)*
                    $(LoadError::$v(_) => $vc,)*
                    $(LoadError::$i { .. } => $ic,)*
                }
            }
            /// The variant's value (program-header index, value found,
            /// tag, type or offset); 0 if it has none.
            pub fn detail(&self) -> u64 {
                match *self {
                    $(LoadError::$u => 0,)*
                    $(LoadError::$v(x) => x.to_detail(),)*
                    $(LoadError::$i { index } => index.to_detail(),)*
                }
            }
            /// The error `code` and `detail` stand for; `None` for an
            /// unknown code or a detail its field cannot hold.
            pub fn from_wire(code: u64, detail: u64) -> Option<LoadError> {
                match code {
                    $($uc => Some(LoadError::$u),)*
                    $($vc => Some(LoadError::$v(Detail::from_detail(detail)?)),)*
                    $($ic => Some(LoadError::$i { index: Detail::from_detail(detail)? }),)*
                    _ => None,
                }
            }
        }
    };
}

wire_codes! {
    unit {
        1 => Empty,
        2 => Truncated,
        3 => NotElf,
        6 => BadVersion,
        11 => PhdrsOutsideFile,
        12 => NoSegments,
        13 => Interpreter,
        14 => TlsUnsupported,
        15 => ExecutableStack,
        26 => TooManySegments,
        27 => TooMuchMemory,
        28 => EntryNotExecutable,
        29 => BadBase,
        30 => PhdrNotLoaded,
        31 => BadRelro,
        32 => BadDynamic,
        33 => NeedsSharedLibrary,
        35 => BadRelaTable,
        36 => TooManyRelocations,
        39 => StackOverlap,
    }
    value {
        4 => WrongClass,
        5 => WrongData,
        7 => WrongMachine,
        8 => WrongType,
        9 => BadPhentsize,
        10 => TooManyPhdrs,
        34 => UnsupportedRelocationTable,
        37 => UnsupportedRelocation,
        38 => RelocationOutsideWritable,
    }
    index {
        16 => FileSizeExceedsMemSize,
        17 => OffsetOverflow,
        18 => SegmentOutsideFile,
        19 => AddressOverflow,
        20 => BadAlignment,
        21 => Misaligned,
        22 => OutsideUserRange,
        23 => SegmentsUnsorted,
        24 => SegmentsOverlap,
        25 => WriteAndExecute,
    }
}
