//! Host tests of [`super`].

use super::*;
use multiboot2::{
    Builder, CommandLineTag, EFIBootServicesNotExitedTag, EFIMemoryMapTag, EFISdt64Tag,
    MaybeDynSized, MemoryArea, MemoryMapTag, ModuleTag, RsdpV1Tag, RsdpV2Tag,
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
    let mbi = Mbi::build(qemu_builder().add_module(ModuleTag::new(0x50_0000, 0x51_0000, &long)));
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

// --- firmware and the EFI memory map -------------------------------------------

/// One EFI memory descriptor of `desc_size` bytes (firmware pads the 40-byte
/// version-1 layout; OVMF uses 48).
fn efi_desc(desc_size: usize, typ: u32, base: u64, pages: u64) -> Vec<u8> {
    let mut d = vec![0u8; desc_size];
    d[0..4].copy_from_slice(&typ.to_le_bytes());
    d[8..16].copy_from_slice(&base.to_le_bytes());
    d[16..24].copy_from_slice(&base.to_le_bytes());
    d[24..32].copy_from_slice(&pages.to_le_bytes());
    d
}

/// An OVMF-like EFI memory map for a 256 MiB guest, 48-byte descriptors.
fn ovmf_efi_map() -> Box<EFIMemoryMapTag> {
    let descs = [
        efi_desc(48, 3, 0, 0xa0),             // boot-services code (free after exit)
        efi_desc(48, 0, 0xa_0000, 0x60),      // reserved: legacy video and ROMs
        efi_desc(48, 7, 0x10_0000, 0x700),    // conventional
        efi_desc(48, 2, 0x80_0000, 0x100),    // loader data (GRUB's, the MBI)
        efi_desc(48, 9, 0x90_0000, 0x10),     // ACPI tables
        efi_desc(48, 10, 0x91_0000, 0x10),    // ACPI NVS
        efi_desc(48, 4, 0x92_0000, 0xe6e0),   // boot-services data
        efi_desc(48, 6, 0xf80_0000, 0x100),   // runtime-services data
        efi_desc(48, 11, 0xffc0_0000, 0x400), // MMIO: the flash
    ]
    .concat();
    EFIMemoryMapTag::new_from_map(48, 1, &descs)
}

/// What GRUB's EFI build passes a multiboot2 kernel that did not ask to keep
/// boot services: the EFI system table, both memory maps, the ACPI 2.0 RSDP.
fn grub_efi_builder() -> Builder {
    qemu_builder()
        .efi64(EFISdt64Tag::new(0xf6b_e018))
        .efi_mmap(ovmf_efi_map())
        .rsdpv2(RsdpV2Tag::new(*b"BOCHS ", 2, 0xf77_e014, 36, 0xf77_d0e8))
}

#[test]
fn a_bios_boot_has_no_efi_tags() {
    let boot = Mbi::build(qemu_builder()).parse().unwrap();
    assert_eq!(boot.firmware, Firmware::Bios);
    assert_eq!(boot.map_source, MapSource::Multiboot);
    assert_eq!(boot.firmware.to_string(), "BIOS");
}

#[test]
fn grub_efi_boot_is_uefi_with_the_multiboot_map_and_the_rsdp_from_its_tag() {
    let mbi = Mbi::build(grub_efi_builder());
    let boot = mbi.parse().unwrap();
    assert_eq!(boot.firmware, Firmware::Uefi);
    assert_eq!(boot.firmware.to_string(), "UEFI");
    // GRUB's type-6 map wins when both are present.
    assert_eq!(boot.map_source, MapSource::Multiboot);
    assert_eq!(boot.regions.len(), 6);
    // The RSDP is the copy in the MBI, not anything found by scanning.
    let rsdp = boot.rsdp_phys.unwrap();
    let at = (rsdp - MBI_PHYS) as usize;
    assert_eq!(&mbi.bytes()[at..at + 8], b"RSD PTR ");
}

#[test]
fn any_efi_tag_alone_means_uefi() {
    let tags = [
        Builder::new()
            .mmap(qemu_map())
            .efi64(EFISdt64Tag::new(0x1000)),
        Builder::new().mmap(qemu_map()).efi_mmap(ovmf_efi_map()),
        Builder::new()
            .mmap(qemu_map())
            .efi_bs(EFIBootServicesNotExitedTag::new()),
    ];
    for b in tags {
        assert_eq!(Mbi::build(b).parse().unwrap().firmware, Firmware::Uefi);
    }
}

#[test]
fn without_a_multiboot_map_the_efi_memory_map_is_used() {
    let boot = Mbi::build(
        Builder::new()
            .efi64(EFISdt64Tag::new(0xf6b_e018))
            .efi_mmap(ovmf_efi_map()),
    )
    .parse()
    .unwrap();
    assert_eq!(boot.map_source, MapSource::Efi);
    assert_eq!(boot.regions.len(), 9);
    let kinds: Vec<MemKind> = boot.regions.iter().map(|r| r.kind).collect();
    use MemKind::*;
    assert_eq!(
        kinds,
        [
            Usable,
            Reserved,
            Usable,
            Usable,
            AcpiReclaimable,
            AcpiNvs,
            Usable,
            Reserved,
            Reserved
        ]
    );
    assert_eq!(
        boot.regions[2],
        MemRegion {
            base: 0x10_0000,
            len: 0x70_0000,
            kind: Usable
        }
    );
    // Everything but video/ROMs, ACPI, runtime data and MMIO is free.
    assert_eq!(
        memmap::usable_bytes(&boot.regions, &[]).unwrap(),
        (0xa0 + 0x700 + 0x100 + 0xe6e0) * 4096
    );
}

#[test]
fn an_efi_map_is_not_trusted_while_boot_services_still_run() {
    // Their memory would still be in use; Mica never asks GRUB to keep them.
    let r = Mbi::build(
        Builder::new()
            .efi_bs(EFIBootServicesNotExitedTag::new())
            .efi_mmap(ovmf_efi_map()),
    )
    .parse();
    assert!(matches!(r, Err(BootInfoError::NoMemoryMap)), "{r:?}");
}

#[test]
fn malformed_efi_memory_maps_are_refused() {
    let ok = efi_desc(48, 7, 0x10_0000, 0x100);
    let cases = [
        EFIMemoryMapTag::new_from_map(48, 2, &ok), // unknown version
        EFIMemoryMapTag::new_from_map(32, 1, &ok), // descriptor too small
        EFIMemoryMapTag::new_from_map(44, 1, &ok[..44]), // misaligned size
        EFIMemoryMapTag::new_from_map(48, 1, &ok[..40]), // not whole descriptors
        EFIMemoryMapTag::new_from_map(48, 1, &efi_desc(48, 7, u64::MAX - 0xfff, 2)), // wraps
        EFIMemoryMapTag::new_from_map(48, 1, &efi_desc(48, 7, 0, u64::MAX)), // size overflows
    ];
    for (i, tag) in cases.into_iter().enumerate() {
        let r = Mbi::build(Builder::new().efi_mmap(tag)).parse();
        assert!(
            matches!(r, Err(BootInfoError::BadEfiMemoryMap)),
            "case {i}: {r:?}"
        );
    }
}

#[test]
fn an_efi_memory_map_of_only_reserved_memory_has_no_usable_memory() {
    let tag = EFIMemoryMapTag::new_from_map(48, 1, &efi_desc(48, 0, 0x10_0000, 0x100));
    let r = Mbi::build(Builder::new().efi_mmap(tag)).parse();
    assert!(matches!(r, Err(BootInfoError::NoUsableMemory)), "{r:?}");
}
