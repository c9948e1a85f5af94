//! What the boot loader told us, copied out of the multiboot2 information
//! structure (via the `multiboot2` crate) into plain fixed-size data, so nothing
//! later depends on the loader's memory or on the early identity map.
//!
//! Malformed input — a bad structure, no memory map, an empty map, a module
//! overlapping the kernel or another module, too many entries — is an error with
//! a message, never a guess.

use kcore::memmap::{self, MemKind, MemRegion, Range};
use multiboot2::{BootInformation, BootInformationHeader, MemoryAreaType};

/// The most boot modules accepted.
pub const MAX_MODULES: usize = 16;
/// The longest module name kept.
pub const MAX_NAME: usize = 64;

/// One boot module: a program image GRUB loaded, named by its command line.
#[derive(Clone, Debug)]
pub struct Module {
    /// The module's command line (its name, e.g. `init`).
    pub name: heapless::String<MAX_NAME>,
    /// Its physical bytes.
    pub range: Range,
}

/// The boot information the kernel keeps.
pub struct BootInfo {
    /// The kernel command line.
    pub cmdline: heapless::String<512>,
    /// The physical memory map.
    pub regions: heapless::Vec<MemRegion, { memmap::MAX_REGIONS }>,
    /// The boot modules, in order.
    pub modules: heapless::Vec<Module, MAX_MODULES>,
    /// Physical address of the ACPI RSDP copy inside the boot information (the
    /// v2 one when present), if the loader provided one.
    pub rsdp_phys: Option<u64>,
    /// The boot information structure itself (kept reserved: the RSDP copy
    /// lives in it).
    pub mbi: Range,
}

/// Why the boot information was rejected.
#[derive(Debug)]
pub enum BootInfoError {
    /// The multiboot2 magic in EAX was wrong (checked again here for direct
    /// callers; the entry stub already refuses it).
    BadMagic(u32),
    /// The structure could not be parsed.
    Malformed(multiboot2::LoadError),
    /// The structure lies outside the early mapping (above 1 GiB).
    OutOfReach(u64),
    /// No memory-map tag.
    NoMemoryMap,
    /// The memory map or module list is unusable.
    Map(memmap::MemMapError),
    /// More entries than the fixed tables hold.
    TooMany(&'static str),
    /// A module name is not UTF-8 or too long.
    BadModuleName(usize),
    /// The command line is not UTF-8 or too long.
    BadCmdline,
}

impl core::fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BootInfoError::BadMagic(m) => write!(f, "bad multiboot2 magic 0x{m:x}"),
            BootInfoError::Malformed(e) => write!(f, "malformed multiboot2 information: {e:?}"),
            BootInfoError::OutOfReach(a) => {
                write!(
                    f,
                    "multiboot2 information at 0x{a:x} is above the first GiB"
                )
            }
            BootInfoError::NoMemoryMap => f.write_str("the boot loader passed no memory map"),
            BootInfoError::Map(e) => write!(f, "unusable memory map or modules: {}", e.as_str()),
            BootInfoError::TooMany(what) => write!(f, "too many {what}"),
            BootInfoError::BadModuleName(i) => write!(f, "module {i} has an invalid name"),
            BootInfoError::BadCmdline => f.write_str("invalid kernel command line"),
        }
    }
}

/// The magic a multiboot2 loader leaves in EAX.
pub const MULTIBOOT2_MAGIC: u32 = 0x36d7_6289;

/// Parses the information at physical `mbi_phys`, reached through `phys_offset`
/// (the early higher-half map covers physical 0..1 GiB), and checks it against
/// the kernel's own physical range.
///
/// # Safety
/// `mbi_phys` must be the address the boot loader passed, and physical memory
/// 0..1 GiB must be mapped at `phys_offset`.
pub unsafe fn parse(
    magic: u32,
    mbi_phys: u64,
    phys_offset: u64,
    kernel: Range,
) -> Result<BootInfo, BootInfoError> {
    if magic != MULTIBOOT2_MAGIC {
        return Err(BootInfoError::BadMagic(magic));
    }
    if mbi_phys == 0 || mbi_phys >= (1 << 30) - 8 {
        return Err(BootInfoError::OutOfReach(mbi_phys));
    }
    // SAFETY: the caller guarantees the pointer came from the loader and is
    // mapped; `load` validates the total size and the tag sequence.
    let info =
        unsafe { BootInformation::load((mbi_phys + phys_offset) as *const BootInformationHeader) }
            .map_err(BootInfoError::Malformed)?;
    let mbi = Range::new(mbi_phys, mbi_phys + info.total_size() as u64);

    let mut cmdline = heapless::String::new();
    if let Some(tag) = info.command_line_tag() {
        let s = tag.cmdline().map_err(|_| BootInfoError::BadCmdline)?;
        cmdline.push_str(s).map_err(|_| BootInfoError::BadCmdline)?;
    }

    let mut regions = heapless::Vec::new();
    let map = info.memory_map_tag().ok_or(BootInfoError::NoMemoryMap)?;
    for area in map.memory_areas() {
        let kind = match area.typ() {
            MemoryAreaType::Available => MemKind::Usable,
            MemoryAreaType::AcpiAvailable => MemKind::AcpiReclaimable,
            MemoryAreaType::ReservedHibernate => MemKind::AcpiNvs,
            MemoryAreaType::Defective => MemKind::Bad,
            _ => MemKind::Reserved,
        };
        regions
            .push(MemRegion {
                base: area.start_address(),
                len: area.size(),
                kind,
            })
            .map_err(|_| BootInfoError::TooMany("memory-map entries"))?;
    }
    // An empty or all-reserved map is refused here, not discovered later.
    memmap::usable_bytes(&regions, &[]).map_err(BootInfoError::Map)?;

    let mut modules: heapless::Vec<Module, MAX_MODULES> = heapless::Vec::new();
    for (i, m) in info.module_tags().enumerate() {
        let name = m.cmdline().map_err(|_| BootInfoError::BadModuleName(i))?;
        let mut n = heapless::String::new();
        n.push_str(name.trim())
            .map_err(|_| BootInfoError::BadModuleName(i))?;
        modules
            .push(Module {
                name: n,
                range: Range::new(m.start_address() as u64, m.end_address() as u64),
            })
            .map_err(|_| BootInfoError::TooMany("boot modules"))?;
    }
    let mut ranges: heapless::Vec<Range, MAX_MODULES> = heapless::Vec::new();
    for m in &modules {
        // Capacity equals MAX_MODULES, which bounds `modules` too.
        let _ = ranges.push(m.range);
    }
    memmap::validate_modules(kernel, &ranges).map_err(BootInfoError::Map)?;

    let rsdp_phys = if let Some(t) = info.rsdp_v2_tag() {
        Some(t as *const _ as *const u8 as u64 - phys_offset + 8)
    } else {
        info.rsdp_v1_tag()
            .map(|t| t as *const _ as *const u8 as u64 - phys_offset + 8)
    };

    Ok(BootInfo {
        cmdline,
        regions,
        modules,
        rsdp_phys,
        mbi,
    })
}

impl BootInfo {
    /// The value of `key=value` on the command line, or `Some("")` for a bare
    /// `key`; `None` when absent.
    pub fn arg(&self, key: &str) -> Option<&str> {
        cmdline_arg(&self.cmdline, key)
    }

    /// The module named `name`.
    pub fn module(&self, name: &str) -> Option<&Module> {
        self.modules.iter().find(|m| m.name.as_str() == name)
    }
}

pub use abi::bootinfo::cmdline_arg;
