//! Checking and copying out what the boot loader told us.
//!
//! The loader's multiboot2 information structure (MBI) is read through the
//! `multiboot2` crate and copied into plain fixed-size data ([`BootInfo`]), so
//! nothing later depends on the loader's memory or on the early identity map.
//!
//! Malformed input — a wrong magic, no memory map, an empty or all-reserved
//! map, a module that is empty or overlaps the kernel or another module, a
//! name or command line that is not UTF-8 or too long, more entries than the
//! fixed tables hold — is a [`BootInfoError`] whose `Display` is the message
//! the kernel prints before it exits. Never a guess, never a hang.
//!
//! # Design choices
//! - The split with the kernel's `bootinfo` glue is along `unsafe`: turning
//!   the loader's physical address into a [`BootInformation`] needs the
//!   `unsafe` [`BootInformation::load`] and knowledge of the early mapping, so
//!   the kernel does that (and checks the address is reachable); everything
//!   after it — every check here — works on the loaded `&BootInformation` and
//!   is host-tested against MBIs built with the crate's `Builder`.
//! - Physical addresses *inside* the MBI (the RSDP copy) are computed as an
//!   offset from the MBI's start plus the caller's `mbi_phys`, so this module
//!   needs no knowledge of where the kernel mapped the structure.
//! - Errors carry the offending modules' names and ranges so the message
//!   alone identifies the problem; that makes [`BootInfoError`] ~200 bytes.

// An error is built at most once per boot, then printed; its size costs
// nothing worth boxing for (and there is no heap yet).
#![allow(clippy::result_large_err)]

use core::mem::size_of;
use core::ptr;

use multiboot2::{BootInformation, MemoryAreaType, TagHeader};

use crate::memmap::{self, MemKind, MemMapError, MemRegion, Range};

/// The magic a multiboot2 loader leaves in EAX.
pub const MULTIBOOT2_MAGIC: u32 = 0x36d7_6289;
/// The most boot modules accepted.
pub const MAX_MODULES: usize = 16;
/// The longest module name kept, in bytes.
pub const MAX_NAME: usize = 64;
/// The longest kernel command line kept, in bytes.
pub const MAX_CMDLINE: usize = 512;

/// A boot module's name (its multiboot2 command line, trimmed).
pub type ModuleName = heapless::String<MAX_NAME>;

/// One boot module: a program image the loader placed in memory, named by its
/// command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// The module's command line (its name, e.g. `init`).
    pub name: ModuleName,
    /// Its physical bytes.
    pub range: Range,
}

/// The boot information the kernel keeps.
///
/// # Invariants
/// - `regions` leaves at least one free page
///   ([`memmap::usable_bytes`] succeeds on it with no reservations).
/// - Every module range is non-empty, disjoint from the kernel image passed to
///   [`parse`] and from every other module.
#[derive(Clone, Debug)]
pub struct BootInfo {
    /// The kernel command line (empty when the loader passed none).
    pub cmdline: heapless::String<MAX_CMDLINE>,
    /// The physical memory map, in the loader's order.
    pub regions: heapless::Vec<MemRegion, { memmap::MAX_REGIONS }>,
    /// The boot modules, in the loader's order.
    pub modules: heapless::Vec<Module, MAX_MODULES>,
    /// Physical address of the ACPI RSDP copy inside the boot information (the
    /// v2 one when present), if the loader provided one.
    pub rsdp_phys: Option<u64>,
    /// The boot information structure itself (kept reserved: the RSDP copy
    /// lives in it).
    pub mbi: Range,
}

impl BootInfo {
    /// The value of `key=value` on the command line, or `Some("")` for a bare
    /// `key`; `None` when absent. See [`abi::bootinfo::cmdline_arg`].
    pub fn arg(&self, key: &str) -> Option<&str> {
        abi::bootinfo::cmdline_arg(&self.cmdline, key)
    }

    /// The first module named `name`.
    pub fn module(&self, name: &str) -> Option<&Module> {
        self.modules.iter().find(|m| m.name.as_str() == name)
    }
}

/// Why the boot information was rejected.
#[derive(Debug)]
pub enum BootInfoError {
    /// The multiboot2 magic in EAX was wrong: not loaded by a multiboot2
    /// loader.
    BadMagic(u32),
    /// The structure could not be parsed (found by the kernel's `load`).
    Malformed(multiboot2::LoadError),
    /// The structure lies outside the early mapping (found by the kernel).
    OutOfReach(u64),
    /// No memory-map tag.
    NoMemoryMap,
    /// A memory-map tag with no entries.
    EmptyMemoryMap,
    /// The memory map leaves no free page (e.g. only reserved entries).
    NoUsableMemory,
    /// More entries than the fixed tables hold.
    TooMany {
        /// What overflowed, e.g. `"boot modules"`.
        what: &'static str,
        /// The table's capacity.
        max: usize,
    },
    /// Module `index`'s name is not UTF-8 or longer than [`MAX_NAME`].
    BadModuleName(usize),
    /// The command line is not UTF-8 or longer than [`MAX_CMDLINE`].
    BadCmdline,
    /// A module's start is not below its end.
    EmptyModule {
        /// The module's index in the loader's list.
        index: usize,
        /// Its name.
        name: ModuleName,
        /// Its physical range.
        range: Range,
    },
    /// A module overlaps the kernel image.
    ModuleOverlapsKernel {
        /// The module's index in the loader's list.
        index: usize,
        /// Its name.
        name: ModuleName,
        /// Its physical range.
        range: Range,
        /// The kernel image's physical range.
        kernel: Range,
    },
    /// Two modules overlap.
    ModulesOverlap {
        /// The earlier module: index, name, range.
        first: (usize, ModuleName, Range),
        /// The later module: index, name, range.
        second: (usize, ModuleName, Range),
    },
    /// Any other refusal from [`memmap`] (none is expected for inputs this
    /// module builds; kept so a new one is reported rather than mislabelled).
    Map(MemMapError),
}

/// Formats `[start, end)` in hex.
struct Hex(Range);

impl core::fmt::Display for Hex {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "[0x{:x}, 0x{:x})", self.0.start, self.0.end)
    }
}

impl core::fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BootInfoError::BadMagic(m) => write!(
                f,
                "bad multiboot2 magic 0x{m:x} (expected 0x{MULTIBOOT2_MAGIC:x}): \
                 not started by a multiboot2 loader"
            ),
            BootInfoError::Malformed(e) => {
                write!(f, "malformed multiboot2 information: {e} ({e:?})")
            }
            BootInfoError::OutOfReach(a) => write!(
                f,
                "multiboot2 information at 0x{a:x} is null or not within the first GiB"
            ),
            BootInfoError::NoMemoryMap => f.write_str("the boot loader passed no memory map"),
            BootInfoError::EmptyMemoryMap => {
                f.write_str("the boot loader's memory map has no entries")
            }
            BootInfoError::NoUsableMemory => {
                f.write_str("the boot loader's memory map has no usable page")
            }
            BootInfoError::TooMany { what, max } => {
                write!(f, "too many {what} (at most {max} are accepted)")
            }
            BootInfoError::BadModuleName(i) => write!(
                f,
                "boot module {i}'s name is not UTF-8 or longer than {MAX_NAME} bytes"
            ),
            BootInfoError::BadCmdline => write!(
                f,
                "the kernel command line is not UTF-8 or longer than {MAX_CMDLINE} bytes"
            ),
            BootInfoError::EmptyModule { index, name, range } => {
                write!(
                    f,
                    "boot module {index} {name:?} at {} is empty",
                    Hex(*range)
                )
            }
            BootInfoError::ModuleOverlapsKernel {
                index,
                name,
                range,
                kernel,
            } => write!(
                f,
                "boot module {index} {name:?} at {} overlaps the kernel image at {}",
                Hex(*range),
                Hex(*kernel)
            ),
            BootInfoError::ModulesOverlap {
                first: (i, a, ra),
                second: (j, b, rb),
            } => write!(
                f,
                "boot modules {i} {a:?} at {} and {j} {b:?} at {} overlap",
                Hex(*ra),
                Hex(*rb)
            ),
            BootInfoError::Map(e) => write!(f, "unusable memory map or modules: {e}"),
        }
    }
}

/// Refuses anything but [`MULTIBOOT2_MAGIC`]. The kernel calls this before it
/// even loads the structure (with the wrong magic, EBX is not an MBI);
/// [`parse`] checks again for direct callers.
///
/// # Errors
/// [`BootInfoError::BadMagic`].
pub fn check_magic(magic: u32) -> Result<(), BootInfoError> {
    if magic == MULTIBOOT2_MAGIC {
        Ok(())
    } else {
        Err(BootInfoError::BadMagic(magic))
    }
}

/// Checks the loaded structure `info` (which the loader placed at physical
/// `mbi_phys`) against the kernel image's physical range `kernel`, and copies
/// out what the kernel keeps.
///
/// # Errors
/// The first problem found, in this order: magic, command line, memory map,
/// modules. See [`BootInfoError`].
pub fn parse(
    magic: u32,
    info: &BootInformation<'_>,
    mbi_phys: u64,
    kernel: Range,
) -> Result<BootInfo, BootInfoError> {
    check_magic(magic)?;
    let mbi = Range::new(mbi_phys, mbi_phys + info.total_size() as u64);

    let mut cmdline = heapless::String::new();
    if let Some(tag) = info.command_line_tag() {
        let s = tag.cmdline().map_err(|_| BootInfoError::BadCmdline)?;
        cmdline.push_str(s).map_err(|_| BootInfoError::BadCmdline)?;
    }

    let regions = memory_map(info)?;
    let modules = modules(info, kernel)?;

    // The RSDP lies right after its tag's header; prefer the v2 (XSDT) copy.
    let rsdp_offset = match (info.rsdp_v2_tag(), info.rsdp_v1_tag()) {
        (Some(t), _) => Some(offset_in(info, t)),
        (None, Some(t)) => Some(offset_in(info, t)),
        (None, None) => None,
    };
    let rsdp_phys = rsdp_offset.map(|o| mbi_phys + o + size_of::<TagHeader>() as u64);

    Ok(BootInfo {
        cmdline,
        regions,
        modules,
        rsdp_phys,
        mbi,
    })
}

/// The byte offset of `tag` from the start of `info` (a tag reference always
/// points into the structure it came from).
fn offset_in<T>(info: &BootInformation<'_>, tag: &T) -> u64 {
    (ptr::from_ref(tag).addr() - info.as_ptr().addr()) as u64
}

/// Copies the memory map, refusing a missing, empty, oversized or
/// all-reserved one here rather than letting the frame allocator find out.
fn memory_map(
    info: &BootInformation<'_>,
) -> Result<heapless::Vec<MemRegion, { memmap::MAX_REGIONS }>, BootInfoError> {
    let map = info.memory_map_tag().ok_or(BootInfoError::NoMemoryMap)?;
    let mut regions = heapless::Vec::new();
    for area in map.memory_areas() {
        let kind = match area.typ() {
            MemoryAreaType::Available => MemKind::Usable,
            MemoryAreaType::AcpiAvailable => MemKind::AcpiReclaimable,
            MemoryAreaType::ReservedHibernate => MemKind::AcpiNvs,
            MemoryAreaType::Defective => MemKind::Bad,
            // `Reserved` and every type the spec does not define.
            _ => MemKind::Reserved,
        };
        regions
            .push(MemRegion {
                base: area.start_address(),
                len: area.size(),
                kind,
            })
            .map_err(|_| BootInfoError::TooMany {
                what: "memory-map entries",
                max: memmap::MAX_REGIONS,
            })?;
    }
    if regions.is_empty() {
        return Err(BootInfoError::EmptyMemoryMap);
    }
    match memmap::usable_bytes(&regions, &[]) {
        Ok(_) => Ok(regions),
        Err(MemMapError::NoUsableMemory) => Err(BootInfoError::NoUsableMemory),
        Err(e) => Err(BootInfoError::Map(e)),
    }
}

/// Copies the module list and checks every module against the kernel image
/// and the other modules.
fn modules(
    info: &BootInformation<'_>,
    kernel: Range,
) -> Result<heapless::Vec<Module, MAX_MODULES>, BootInfoError> {
    let mut modules: heapless::Vec<Module, MAX_MODULES> = heapless::Vec::new();
    for (i, m) in info.module_tags().enumerate() {
        let raw = m.cmdline().map_err(|_| BootInfoError::BadModuleName(i))?;
        let mut name = ModuleName::new();
        name.push_str(raw.trim())
            .map_err(|_| BootInfoError::BadModuleName(i))?;
        let range = Range::new(u64::from(m.start_address()), u64::from(m.end_address()));
        modules
            .push(Module { name, range })
            .map_err(|_| BootInfoError::TooMany {
                what: "boot modules",
                max: MAX_MODULES,
            })?;
    }

    let mut ranges: heapless::Vec<Range, MAX_MODULES> = heapless::Vec::new();
    for m in &modules {
        // Same capacity as `modules`, so this cannot fail.
        let _ = ranges.push(m.range);
    }
    let named = |index: usize| {
        let m = &modules[index];
        (index, m.name.clone(), m.range)
    };
    memmap::validate_modules(kernel, &ranges).map_err(|e| match e {
        MemMapError::EmptyModule { index } => {
            let (index, name, range) = named(index);
            BootInfoError::EmptyModule { index, name, range }
        }
        MemMapError::ModuleOverlapsKernel { index } => {
            let (index, name, range) = named(index);
            BootInfoError::ModuleOverlapsKernel {
                index,
                name,
                range,
                kernel,
            }
        }
        MemMapError::ModulesOverlap { first, second } => BootInfoError::ModulesOverlap {
            first: named(first),
            second: named(second),
        },
        e => BootInfoError::Map(e),
    })?;
    Ok(modules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use multiboot2::{
        Builder, CommandLineTag, MaybeDynSized, MemoryArea, MemoryMapTag, ModuleTag, RsdpV1Tag,
        RsdpV2Tag,
    };

    /// Where the tests pretend the loader put the MBI.
    const MBI_PHYS: u64 = 0x1_0000;
    /// Where the tests pretend the kernel image lies.
    const KERNEL: Range = Range::new(0x10_0000, 0x40_0000);

    /// An MBI in 8-byte-aligned memory, as a loader leaves it.
    struct Mbi(Vec<u64>);

    impl Mbi {
        fn from_bytes(bytes: &[u8]) -> Mbi {
            Mbi(bytes
                .chunks(8)
                .map(|c| {
                    let mut w = [0; 8];
                    w[..c.len()].copy_from_slice(c);
                    u64::from_ne_bytes(w)
                })
                .collect())
        }

        fn bytes(&self) -> Vec<u8> {
            self.0.iter().flat_map(|w| w.to_ne_bytes()).collect()
        }

        fn build(b: Builder) -> Mbi {
            Mbi::from_bytes(b.build().as_bytes())
        }

        // The crate offers no safe constructor; this is the only unsafe code
        // in kcore, and it is test-only (see the crate root's lint settings).
        #[allow(unsafe_code)]
        fn info(&self) -> BootInformation<'_> {
            // SAFETY: the buffer is 8-aligned, lives as long as the returned
            // borrow of `self`, is never mutated while borrowed, and holds the
            // whole structure (`from_bytes` copied every byte).
            unsafe { BootInformation::load(self.0.as_ptr().cast()) }
                .expect("test MBIs have a valid tag sequence")
        }

        fn parse(&self) -> Result<BootInfo, BootInfoError> {
            parse(MULTIBOOT2_MAGIC, &self.info(), MBI_PHYS, KERNEL)
        }
    }

    /// The memory map QEMU's SeaBIOS gives a 128 MiB guest.
    fn qemu_map() -> Box<MemoryMapTag> {
        MemoryMapTag::new(&[
            MemoryArea::new(0, 0x9_fc00, MemoryAreaType::Available),
            MemoryArea::new(0x9_fc00, 0x400, MemoryAreaType::Reserved),
            MemoryArea::new(0xf_0000, 0x1_0000, MemoryAreaType::Reserved),
            MemoryArea::new(0x10_0000, 0x7ee_0000, MemoryAreaType::Available),
            MemoryArea::new(0x7fe_0000, 0x2_0000, MemoryAreaType::Reserved),
            MemoryArea::new(0xfffc_0000, 0x4_0000, MemoryAreaType::Reserved),
        ])
    }

    /// A QEMU-like MBI with a command line and two modules after the kernel.
    fn qemu_builder() -> Builder {
        Builder::new()
            .cmdline(CommandLineTag::new("log=debug init=tests"))
            .mmap(qemu_map())
            .add_module(ModuleTag::new(0x40_0000, 0x41_0000, "init"))
            .add_module(ModuleTag::new(0x41_0000, 0x43_2000, "  tests "))
    }

    /// The byte offset of the first tag of type `typ` in a built MBI.
    fn tag_offset(bytes: &[u8], typ: u32) -> usize {
        let word = |o: usize| u32::from_ne_bytes(bytes[o..o + 4].try_into().unwrap());
        let mut o = 8;
        while word(o) != 0 {
            if word(o) == typ {
                return o;
            }
            o += (word(o + 4) as usize).next_multiple_of(8);
        }
        panic!("no tag of type {typ}");
    }

    #[test]
    fn valid_qemu_like_mbi_parses_into_cmdline_map_modules_and_its_own_range() {
        let mbi = Mbi::build(qemu_builder());
        let boot = mbi.parse().unwrap();

        assert_eq!(boot.cmdline.as_str(), "log=debug init=tests");
        assert_eq!(boot.regions.len(), 6);
        assert_eq!(
            boot.regions[3],
            MemRegion {
                base: 0x10_0000,
                len: 0x7ee_0000,
                kind: MemKind::Usable
            }
        );
        assert_eq!(boot.regions[5].kind, MemKind::Reserved);
        assert_eq!(
            memmap::usable_bytes(&boot.regions, &[]).unwrap(),
            0x9_f000 + 0x7ee_0000
        );
        let names: Vec<&str> = boot.modules.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["init", "tests"], "names are trimmed");
        assert_eq!(boot.modules[1].range, Range::new(0x41_0000, 0x43_2000));
        assert_eq!(
            boot.mbi,
            Range::new(MBI_PHYS, MBI_PHYS + mbi.info().total_size() as u64)
        );
        assert_eq!(boot.rsdp_phys, None);
    }

    #[test]
    fn arg_reads_key_values_and_module_finds_modules_by_name() {
        let boot = Mbi::build(qemu_builder()).parse().unwrap();
        assert_eq!(boot.arg("log"), Some("debug"));
        assert_eq!(boot.arg("init"), Some("tests"));
        assert_eq!(boot.arg("ktest"), None);
        assert_eq!(
            boot.module("tests").map(|m| m.range),
            Some(Range::new(0x41_0000, 0x43_2000))
        );
        assert!(boot.module("missing").is_none());
    }

    #[test]
    fn missing_cmdline_tag_gives_an_empty_cmdline() {
        let boot = Mbi::build(Builder::new().mmap(qemu_map())).parse().unwrap();
        assert_eq!(boot.cmdline.as_str(), "");
        assert!(boot.modules.is_empty());
    }

    #[test]
    fn rsdp_phys_points_at_the_v2_copy_inside_the_mbi_when_both_are_present() {
        let mbi = Mbi::build(
            qemu_builder()
                .rsdpv1(RsdpV1Tag::new(*b"OEMv1 ", 0, 0x7fe_1000))
                .rsdpv2(RsdpV2Tag::new(*b"OEMv2 ", 2, 0x7fe_1000, 36, 0x7fe_2000)),
        );
        let boot = mbi.parse().unwrap();
        let rsdp = boot.rsdp_phys.expect("an RSDP tag was passed");
        assert!(boot.mbi.start < rsdp && rsdp + 36 <= boot.mbi.end);
        let bytes = mbi.bytes();
        let at = (rsdp - MBI_PHYS) as usize;
        assert_eq!(&bytes[at..at + 8], b"RSD PTR ");
        assert_eq!(&bytes[at + 9..at + 15], b"OEMv2 ");
    }

    #[test]
    fn rsdp_phys_falls_back_to_the_v1_copy() {
        let mbi = Mbi::build(qemu_builder().rsdpv1(RsdpV1Tag::new(*b"OEMv1 ", 0, 0x7fe_1000)));
        let rsdp = mbi.parse().unwrap().rsdp_phys.unwrap();
        let bytes = mbi.bytes();
        let at = (rsdp - MBI_PHYS) as usize;
        assert_eq!(&bytes[at..at + 8], b"RSD PTR ");
        assert_eq!(&bytes[at + 9..at + 15], b"OEMv1 ");
    }

    #[test]
    fn wrong_magic_is_refused_as_bad_magic() {
        let mbi = Mbi::build(qemu_builder());
        let err = parse(0x2bad_b002, &mbi.info(), MBI_PHYS, KERNEL).unwrap_err();
        assert!(matches!(err, BootInfoError::BadMagic(0x2bad_b002)));
        assert!(err.to_string().contains("0x2badb002"));
        assert!(check_magic(MULTIBOOT2_MAGIC).is_ok());
        assert!(matches!(check_magic(0), Err(BootInfoError::BadMagic(0))));
    }

    #[test]
    fn missing_memory_map_tag_is_refused() {
        let mbi = Mbi::build(Builder::new().cmdline(CommandLineTag::new("ktest")));
        let err = mbi.parse().unwrap_err();
        assert!(matches!(err, BootInfoError::NoMemoryMap), "{err}");
        assert!(err.to_string().contains("no memory map"));
    }

    #[test]
    fn empty_memory_map_is_refused() {
        let mbi = Mbi::build(Builder::new().mmap(MemoryMapTag::new(&[])));
        let err = mbi.parse().unwrap_err();
        assert!(matches!(err, BootInfoError::EmptyMemoryMap), "{err}");
    }

    #[test]
    fn memory_map_of_only_reserved_entries_has_no_usable_memory() {
        let map = MemoryMapTag::new(&[
            MemoryArea::new(0, 0x9_fc00, MemoryAreaType::Reserved),
            MemoryArea::new(0x10_0000, 0x7ee_0000, MemoryAreaType::AcpiAvailable),
            MemoryArea::new(0x800_0000, 0x10_0000, MemoryAreaType::Defective),
        ]);
        let err = Mbi::build(Builder::new().mmap(map)).parse().unwrap_err();
        assert!(matches!(err, BootInfoError::NoUsableMemory), "{err}");
    }

    #[test]
    fn usable_entries_smaller_than_a_page_are_no_usable_memory() {
        let map = MemoryMapTag::new(&[MemoryArea::new(0x1000, 0xfff, MemoryAreaType::Available)]);
        let err = Mbi::build(Builder::new().mmap(map)).parse().unwrap_err();
        assert!(matches!(err, BootInfoError::NoUsableMemory), "{err}");
    }

    #[test]
    fn more_memory_map_entries_than_max_regions_is_too_many() {
        let areas: Vec<MemoryArea> = (0..=memmap::MAX_REGIONS as u64)
            .map(|i| MemoryArea::new(i * 0x10_0000, 0x10_0000, MemoryAreaType::Available))
            .collect();
        let err = Mbi::build(Builder::new().mmap(MemoryMapTag::new(&areas)))
            .parse()
            .unwrap_err();
        assert!(
            matches!(
                err,
                BootInfoError::TooMany {
                    what: "memory-map entries",
                    max: memmap::MAX_REGIONS
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn module_overlapping_the_kernel_is_refused_naming_the_module() {
        let mbi = Mbi::build(
            Builder::new()
                .mmap(qemu_map())
                .add_module(ModuleTag::new(0x40_0000, 0x41_0000, "init"))
                .add_module(ModuleTag::new(0x3f_f000, 0x40_0000, "tests")),
        );
        let err = mbi.parse().unwrap_err();
        match &err {
            BootInfoError::ModuleOverlapsKernel {
                index,
                name,
                range,
                kernel,
            } => {
                assert_eq!(*index, 1);
                assert_eq!(name.as_str(), "tests");
                assert_eq!(*range, Range::new(0x3f_f000, 0x40_0000));
                assert_eq!(*kernel, KERNEL);
            }
            other => panic!("wrong error: {other}"),
        }
        assert_eq!(
            err.to_string(),
            "boot module 1 \"tests\" at [0x3ff000, 0x400000) overlaps the kernel image \
             at [0x100000, 0x400000)"
        );
    }

    #[test]
    fn two_overlapping_modules_are_refused_naming_both() {
        let mbi = Mbi::build(
            Builder::new()
                .mmap(qemu_map())
                .add_module(ModuleTag::new(0x40_0000, 0x41_0000, "init"))
                .add_module(ModuleTag::new(0x50_0000, 0x51_0000, "bench"))
                .add_module(ModuleTag::new(0x40_f000, 0x42_0000, "tests")),
        );
        let err = mbi.parse().unwrap_err();
        match &err {
            BootInfoError::ModulesOverlap { first, second } => {
                assert_eq!((first.0, first.1.as_str()), (0, "init"));
                assert_eq!((second.0, second.1.as_str()), (2, "tests"));
            }
            other => panic!("wrong error: {other}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("\"init\"") && msg.contains("\"tests\""),
            "{msg}"
        );
    }

    #[test]
    fn empty_module_is_refused() {
        // The builder refuses empty modules, so patch `mod_end` down to `mod_start`.
        let mut bytes = Builder::new()
            .mmap(qemu_map())
            .add_module(ModuleTag::new(0x40_0000, 0x41_0000, "init"))
            .build()
            .as_bytes()
            .to_vec();
        let m = tag_offset(&bytes, 3);
        bytes[m + 12..m + 16].copy_from_slice(&0x40_0000u32.to_ne_bytes());
        let err = Mbi::from_bytes(&bytes).parse().unwrap_err();
        assert!(
            matches!(&err, BootInfoError::EmptyModule { index: 0, name, .. } if name == "init"),
            "{err}"
        );
    }

    #[test]
    fn module_name_that_is_not_utf8_is_refused() {
        let mut bytes = Builder::new()
            .mmap(qemu_map())
            .add_module(ModuleTag::new(0x40_0000, 0x41_0000, "init"))
            .build()
            .as_bytes()
            .to_vec();
        let m = tag_offset(&bytes, 3);
        assert_eq!(&bytes[m + 16..m + 20], b"init");
        bytes[m + 17] = 0xff;
        let err = Mbi::from_bytes(&bytes).parse().unwrap_err();
        assert!(matches!(err, BootInfoError::BadModuleName(0)), "{err}");
    }

    #[test]
    fn module_name_longer_than_max_name_is_refused() {
        let long = "m".repeat(MAX_NAME + 1);
        let mbi =
            Mbi::build(qemu_builder().add_module(ModuleTag::new(0x50_0000, 0x51_0000, &long)));
        let err = mbi.parse().unwrap_err();
        assert!(matches!(err, BootInfoError::BadModuleName(2)), "{err}");
    }

    #[test]
    fn more_than_max_modules_is_too_many() {
        let b = (0..=MAX_MODULES as u32).fold(Builder::new().mmap(qemu_map()), |b, i| {
            let start = 0x100_0000 + i * 0x1_0000;
            b.add_module(ModuleTag::new(start, start + 0x1000, "m"))
        });
        let err = Mbi::build(b).parse().unwrap_err();
        assert!(
            matches!(
                err,
                BootInfoError::TooMany {
                    what: "boot modules",
                    max: MAX_MODULES
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn exactly_max_modules_are_accepted() {
        let b = (0..MAX_MODULES as u32).fold(Builder::new().mmap(qemu_map()), |b, i| {
            let start = 0x100_0000 + i * 0x1_0000;
            b.add_module(ModuleTag::new(start, start + 0x1000, "m"))
        });
        assert_eq!(Mbi::build(b).parse().unwrap().modules.len(), MAX_MODULES);
    }

    #[test]
    fn cmdline_longer_than_512_bytes_is_bad_cmdline() {
        let long = "x".repeat(MAX_CMDLINE + 1);
        let mbi = Mbi::build(
            Builder::new()
                .mmap(qemu_map())
                .cmdline(CommandLineTag::new(&long)),
        );
        let err = mbi.parse().unwrap_err();
        assert!(matches!(err, BootInfoError::BadCmdline), "{err}");

        let fits = "x".repeat(MAX_CMDLINE);
        let mbi = Mbi::build(
            Builder::new()
                .mmap(qemu_map())
                .cmdline(CommandLineTag::new(&fits)),
        );
        assert_eq!(mbi.parse().unwrap().cmdline.len(), MAX_CMDLINE);
    }

    #[test]
    fn cmdline_that_is_not_utf8_is_bad_cmdline() {
        let mut bytes = Builder::new()
            .mmap(qemu_map())
            .cmdline(CommandLineTag::new("log=debug"))
            .build()
            .as_bytes()
            .to_vec();
        let c = tag_offset(&bytes, 1);
        assert_eq!(&bytes[c + 8..c + 11], b"log");
        bytes[c + 8] = 0xc3; // a UTF-8 lead byte followed by ASCII
        let err = Mbi::from_bytes(&bytes).parse().unwrap_err();
        assert!(matches!(err, BootInfoError::BadCmdline), "{err}");
    }
}
