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

use multiboot2::{BootInformation, MaybeDynSized, MemoryAreaType, TagHeader};

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

/// The firmware that booted the machine, as the loader's tags tell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// A PC BIOS (no EFI tags).
    Bios,
    /// UEFI: the loader passed an EFI system table, image handle, EFI memory
    /// map or "boot services not terminated" tag.
    Uefi,
}

impl core::fmt::Display for Firmware {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Firmware::Bios => "BIOS",
            Firmware::Uefi => "UEFI",
        })
    }
}

/// Which multiboot2 tag the memory map was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapSource {
    /// The memory-map tag (type 6), which GRUB passes under BIOS and UEFI.
    Multiboot,
    /// The EFI memory-map tag (type 17), used only when there is no type 6.
    Efi,
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
    /// The firmware that booted the machine.
    pub firmware: Firmware,
    /// Where [`Self::regions`] came from.
    pub map_source: MapSource,
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
    /// An EFI memory-map tag whose descriptor size or version is unusable,
    /// whose length is not a whole number of descriptors, or with a region
    /// that wraps past 2^64.
    BadEfiMemoryMap,
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
            BootInfoError::BadEfiMemoryMap => f.write_str(
                "the boot loader's EFI memory map is malformed (descriptor size or \
                 version, length, or a region past 2^64)",
            ),
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

    let (regions, map_source) = memory_map(info)?;
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
        firmware: firmware(info),
        map_source,
    })
}

/// UEFI when the loader passed any EFI tag (GRUB's EFI build always passes
/// the system table and the EFI memory map), else BIOS.
pub fn firmware(info: &BootInformation<'_>) -> Firmware {
    let efi = info.efi_sdt64_tag().is_some()
        || info.efi_sdt32_tag().is_some()
        || info.efi_ih64_tag().is_some()
        || info.efi_ih32_tag().is_some()
        || info.efi_memory_map_tag().is_some()
        || info.efi_bs_not_exited_tag().is_some();
    if efi {
        Firmware::Uefi
    } else {
        Firmware::Bios
    }
}

/// The byte offset of `tag` from the start of `info` (a tag reference always
/// points into the structure it came from).
fn offset_in<T>(info: &BootInformation<'_>, tag: &T) -> u64 {
    (ptr::from_ref(tag).addr() - info.as_ptr().addr()) as u64
}

/// The memory-map entries we keep.
type Regions = heapless::Vec<MemRegion, { memmap::MAX_REGIONS }>;

/// Copies the memory map — the multiboot2 memory-map tag, or the EFI memory
/// map when that is the only one — refusing a missing, empty, oversized or
/// all-reserved one here rather than letting the frame allocator find out.
fn memory_map(info: &BootInformation<'_>) -> Result<(Regions, MapSource), BootInfoError> {
    let too_many = |_| BootInfoError::TooMany {
        what: "memory-map entries",
        max: memmap::MAX_REGIONS,
    };
    let mut regions = heapless::Vec::new();
    let source = if let Some(map) = info.memory_map_tag() {
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
                .map_err(too_many)?;
        }
        MapSource::Multiboot
    } else if let Some(tag) = info.efi_memory_map_tag() {
        // The crate hides this tag when the loader left boot services
        // running (their memory is then still in use); Mica never asks for
        // that, so a map seen here describes memory after ExitBootServices.
        efi_regions(tag.payload(), &mut regions)?;
        MapSource::Efi
    } else {
        return Err(BootInfoError::NoMemoryMap);
    };
    if regions.is_empty() {
        return Err(BootInfoError::EmptyMemoryMap);
    }
    match memmap::usable_bytes(&regions, &[]) {
        Ok(_) => Ok((regions, source)),
        Err(MemMapError::NoUsableMemory) => Err(BootInfoError::NoUsableMemory),
        Err(e) => Err(BootInfoError::Map(e)),
    }
}

/// The bytes of one UEFI `EFI_MEMORY_DESCRIPTOR` (version 1): type, padding,
/// physical start, virtual start, page count, attributes.
const EFI_DESC_BYTES: usize = 40;

/// Reads an EFI memory-map tag's payload (descriptor size, descriptor version,
/// then the descriptors) into `regions`. Parsed by hand rather than through
/// the crate's iterator, which asserts (panics) on a bad size or version.
/// Loader and boot-services memory is free once boot services have ended.
fn efi_regions(payload: &[u8], regions: &mut Regions) -> Result<(), BootInfoError> {
    let u32_at =
        |o: usize| u32::from_le_bytes([payload[o], payload[o + 1], payload[o + 2], payload[o + 3]]);
    let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
    if payload.len() < 8 {
        return Err(BootInfoError::BadEfiMemoryMap);
    }
    let (desc_size, version) = (u32_at(0) as usize, u32_at(4));
    let map_len = payload.len() - 8;
    if version != 1
        || desc_size < EFI_DESC_BYTES
        || !desc_size.is_multiple_of(8)
        || !map_len.is_multiple_of(desc_size)
    {
        return Err(BootInfoError::BadEfiMemoryMap);
    }
    for d in (8..payload.len()).step_by(desc_size) {
        let (typ, base, pages) = (u32_at(d), u64_at(d + 8), u64_at(d + 24));
        let len = pages
            .checked_mul(4096)
            .ok_or(BootInfoError::BadEfiMemoryMap)?;
        base.checked_add(len)
            .ok_or(BootInfoError::BadEfiMemoryMap)?;
        let kind = match typ {
            // Conventional memory.
            7 => MemKind::Usable,
            // Loader and boot-services code and data.
            1..=4 => MemKind::Usable,
            9 => MemKind::AcpiReclaimable,
            10 => MemKind::AcpiNvs,
            8 => MemKind::Bad,
            // Reserved, runtime services, MMIO, PAL code, persistent memory,
            // anything newer.
            _ => MemKind::Reserved,
        };
        regions
            .push(MemRegion { base, len, kind })
            .map_err(|_| BootInfoError::TooMany {
                what: "memory-map entries",
                max: memmap::MAX_REGIONS,
            })?;
    }
    Ok(())
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
mod tests;
