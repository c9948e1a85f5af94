//! What linkers make: the programs the build produces and a static PIE
//! from rustc/rust-lld.

use super::{check_image, load_dirty, PIE_BASE};
use crate::{plan, Kind, Limits, Perms};

pub(crate) fn real_elf_dir() -> Option<std::path::PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("cross/user/x86_64-unknown-none/release");
    dir.join("init").exists().then_some(dir)
}

/// Every user program build.rs makes is accepted, and its plan matches
/// what build.rs put in the boot image: init's flat image (an independent
/// reader: `abi::bootimg` via `elf::ElfBytes`), and for every other
/// program the stripped ELF (build.rs `strip`), which must plan exactly as
/// the full one.
#[test]
fn programs_from_the_build_are_accepted_and_match_their_boot_images() {
    let Some(dir) = real_elf_dir() else {
        if std::env::var_os("LOADER_SKIP_REAL_ELFS").is_some() {
            return;
        }
        panic!("no user ELFs under target/cross: run `cargo build` first (or set LOADER_SKIP_REAL_ELFS=1)");
    };
    let boot = dir.join("../../../../mica/iso_root/boot");
    let mut seen = 0;
    for name in ["init", "tests", "bench", "fuzz", "kv", "loader", "hello"] {
        let Ok(image) = std::fs::read(dir.join(name)) else {
            continue;
        };
        seen += 1;
        let p = plan(&image, PIE_BASE, &Limits::DEFAULT)
            .unwrap_or_else(|e| panic!("{name}: refused: {e}"));
        let space = load_dirty(&p);
        check_image(&p, &space, &[]);
        let file = elf::ElfBytes::<elf::endian::LittleEndian>::minimal_parse(&image).unwrap();
        assert_eq!(p.entry(), file.ehdr.e_entry, "{name}");
        assert_eq!(
            p.aux().phdr,
            Some(0x20_0040),
            "{name}: lld puts them at base+64"
        );
        let Ok(module) = std::fs::read(boot.join(name)) else {
            continue;
        };
        if name != "init" {
            assert!(module.len() <= image.len(), "{name}: stripped is larger");
            let q = plan(&module, PIE_BASE, &Limits::DEFAULT)
                .unwrap_or_else(|e| panic!("{name}: stripped module refused: {e}"));
            assert_eq!(q.entry(), p.entry(), "{name}");
            assert_eq!(q.aux(), p.aux(), "{name}");
            assert_eq!(q.segments().len(), p.segments().len(), "{name}");
            for (a, b) in q.segments().iter().zip(p.segments()) {
                let place = |s: &crate::Segment<'_>| (s.start, s.end, s.perms, s.vaddr, s.mem_len);
                assert_eq!(place(a), place(b), "{name}: stripped plans differently");
                assert_eq!(a.file.len(), b.file.len(), "{name}");
                // Only the section-header fields of the file header differ.
                let shdr_fields = |i: u64| (0x28..0x30).contains(&i) || (0x3c..0x40).contains(&i);
                for (i, (x, y)) in a.file.iter().zip(b.file).enumerate() {
                    let at = a.file_offset + i as u64;
                    assert!(x == y || shdr_fields(at), "{name}: byte {at:#x} differs");
                }
            }
            continue;
        }
        {
            let flat = abi::bootimg::BootImage::parse(&module).unwrap();
            assert_eq!(flat.segments().len(), p.segments().len(), "{name}");
            for (f, s) in flat.segments().iter().zip(p.segments()) {
                assert_eq!((f.vaddr, f.mem_size), (s.vaddr, s.mem_len), "{name}");
                assert_eq!(
                    (f.readable(), f.writable(), f.executable()),
                    (s.perms.read, s.perms.write, s.perms.execute),
                    "{name}"
                );
                assert_eq!(flat.segment_bytes(f), s.file, "{name}");
            }
        }
    }
    assert!(seen >= 4, "only {seen} programs found in {}", dir.display());
}

/// A static PIE as rustc and rust-lld make it (see testdata/README.md).
pub(crate) const LINKED_PIE: &[u8] = include_bytes!("../testdata/pie.elf");

/// The linker's own PIE: its relocations, read by `plan`, equal
/// `.rela.dyn` as the `elf` crate's section reader sees it, and the loaded
/// image matches byte for byte at several bases.
#[test]
fn a_static_pie_from_the_linker_loads_at_any_base() {
    use elf::endian::LittleEndian;
    let file = elf::ElfBytes::<LittleEndian>::minimal_parse(LINKED_PIE).unwrap();
    let shdr = file.section_header_by_name(".rela.dyn").unwrap().unwrap();
    let relas: Vec<_> = file.section_data_as_relas(&shdr).unwrap().collect();
    assert_eq!(relas.len(), 8, "the fixture has 8 RELATIVE relocations");
    for base in [0x1_0000, PIE_BASE, 0x5555_5555_4000] {
        let p = plan(LINKED_PIE, base, &Limits::DEFAULT).unwrap();
        assert_eq!(p.kind(), Kind::Pie);
        assert_eq!(p.entry(), base + file.ehdr.e_entry);
        assert_eq!(p.segments().len(), 4);
        let want: Vec<_> = relas
            .iter()
            .map(|r| (base + r.r_offset, base.wrapping_add(r.r_addend as u64)))
            .collect();
        let got: Vec<_> = p.relocations().map(|r| (r.addr, r.value)).collect();
        assert_eq!(got, want);
        // RELRO covers the first RW segment's page: read-only after the
        // stores into it.
        assert_eq!(p.relro(), Some((base + 0x2000, 0x1000)));
        let space = load_dirty(&p);
        check_image(&p, &space, &want);
        assert_eq!(space.perms_at(base + 0x2418), Some(Perms::R));
        assert!(space.perms_at(base + 0x3528).unwrap().write);
        // TABLE[0] (the first relocation) points at a byte holding 1.
        let ptr = u64::from_le_bytes(space.read(base + 0x2418, 8).try_into().unwrap());
        assert_eq!(space.read(ptr, 1), [1]);
    }
}
