//! The malformed corpus: each image breaks one rule and gets its own error.

use abi::layout::{USER_END, USER_MIN};
use elf::abi::{
    DT_JMPREL, DT_NEEDED, DT_NULL, DT_REL, DT_RELA, DT_RELAENT, DT_RELASZ, PT_DYNAMIC,
    PT_GNU_RELRO, PT_INTERP, PT_TLS, R_X86_64_64, R_X86_64_RELATIVE,
};

use super::{refuse, refuse_with, PIE_BASE};
use crate::testelf::{self, load, Ph, Spec, R, RW};
use crate::{plan, Limits, LoadError};

#[test]
fn empty_file_is_refused() {
    assert_eq!(
        plan(&[], 0, &Limits::DEFAULT).unwrap_err(),
        LoadError::Empty
    );
}

#[test]
fn truncated_headers_are_refused() {
    let image = testelf::exec().build();
    for len in [1, 4, 16, 40, 63] {
        assert_eq!(
            plan(&image[..len], 0, &Limits::DEFAULT).unwrap_err(),
            LoadError::Truncated,
            "len {len}"
        );
    }
    // The header survives but the program headers are cut off.
    assert_eq!(
        plan(&image[..100], 0, &Limits::DEFAULT).unwrap_err(),
        LoadError::PhdrsOutsideFile
    );
}

#[test]
fn non_elf_bytes_are_refused() {
    assert_eq!(
        plan(b"#!/bin/sh", 0, &Limits::DEFAULT).unwrap_err(),
        LoadError::NotElf
    );
    let mut image = testelf::exec().build();
    image[1] = b'e';
    assert_eq!(
        plan(&image, 0, &Limits::DEFAULT).unwrap_err(),
        LoadError::NotElf
    );
}

#[test]
fn wrong_class_data_version_machine_type_are_refused() {
    let e = testelf::exec();
    assert_eq!(refuse_with(&e, |s| s.class = 1), LoadError::WrongClass(1));
    assert_eq!(refuse_with(&e, |s| s.class = 7), LoadError::WrongClass(7));
    assert_eq!(refuse_with(&e, |s| s.data = 2), LoadError::WrongData(2));
    assert_eq!(refuse_with(&e, |s| s.data = 0), LoadError::WrongData(0));
    assert_eq!(
        refuse_with(&e, |s| s.ident_version = 0),
        LoadError::BadVersion
    );
    assert_eq!(refuse_with(&e, |s| s.version = 2), LoadError::BadVersion);
    assert_eq!(
        refuse_with(&e, |s| s.machine = 3),
        LoadError::WrongMachine(3)
    );
    assert_eq!(
        refuse_with(&e, |s| s.machine = 183),
        LoadError::WrongMachine(183)
    );
    assert_eq!(refuse_with(&e, |s| s.e_type = 1), LoadError::WrongType(1)); // ET_REL
    assert_eq!(refuse_with(&e, |s| s.e_type = 4), LoadError::WrongType(4)); // ET_CORE
}

#[test]
fn bad_program_header_tables_are_refused() {
    let e = testelf::exec();
    assert_eq!(
        refuse_with(&e, |s| s.phentsize = 32),
        LoadError::BadPhentsize(32)
    );
    assert_eq!(
        refuse_with(&e, |s| s.phnum = Some(0)),
        LoadError::NoSegments
    );
    assert_eq!(
        refuse_with(&e, |s| s.phnum = Some(65)),
        LoadError::TooManyPhdrs(65)
    );
    assert_eq!(
        refuse_with(&e, |s| s.phnum = Some(0xffff)),
        LoadError::TooManyPhdrs(0xffff)
    );
    assert_eq!(
        refuse_with(&e, |s| s.phoff = 0x2070),
        LoadError::PhdrsOutsideFile
    );
    // e_phoff 0 ("no table") with a count: the header is not a table.
    let mut image = e.build();
    image[32..40].fill(0);
    assert_eq!(
        plan(&image, 0, &Limits::DEFAULT).unwrap_err(),
        LoadError::PhdrsOutsideFile
    );
    assert_eq!(
        refuse_with(&e, |s| s.phoff = u64::MAX - 8),
        LoadError::PhdrsOutsideFile
    );
    // Headers inside the file but announcing more entries than it holds.
    let mut cut = e.clone();
    cut.len = 64 + 4 * 56;
    cut.phdrs[1].filesz = 0x100;
    cut.phdrs[1].memsz = 0x100;
    assert_eq!(refuse(&cut), LoadError::PhdrsOutsideFile);
}

#[test]
fn interpreter_tls_and_executable_stack_are_refused() {
    let e = testelf::exec();
    assert_eq!(
        refuse_with(&e, |s| s.phdrs[4].p_type = PT_INTERP),
        LoadError::Interpreter
    );
    assert_eq!(
        refuse_with(&e, |s| s.phdrs[4].p_type = PT_TLS),
        LoadError::TlsUnsupported
    );
    assert_eq!(
        refuse_with(&e, |s| s.phdrs[4].flags = RW | elf::abi::PF_X),
        LoadError::ExecutableStack
    );
    // Even when the PT_INTERP comes after the segments.
    let mut s = e.clone();
    s.phdrs.push(Ph {
        p_type: PT_INTERP,
        flags: R,
        offset: 0x100,
        vaddr: 0,
        filesz: 8,
        memsz: 8,
        align: 1,
    });
    s.phdrs[0].filesz = 6 * 56;
    assert_eq!(refuse(&s), LoadError::Interpreter);
}

#[test]
fn segment_file_ranges_are_checked() {
    let e = testelf::exec();
    assert_eq!(
        refuse_with(&e, |s| s.phdrs[3].filesz = 0x3001),
        LoadError::FileSizeExceedsMemSize { index: 3 }
    );
    assert_eq!(
        refuse_with(&e, |s| s.phdrs[2].offset = u64::MAX - 0x10),
        LoadError::OffsetOverflow { index: 2 }
    );
    assert_eq!(
        refuse_with(&e, |s| s.phdrs[3].filesz = 0x81),
        LoadError::SegmentOutsideFile { index: 3 }
    );
    assert_eq!(
        refuse_with(&e, |s| s.phdrs[2].offset = 0x3000),
        LoadError::SegmentOutsideFile { index: 2 }
    );
}

#[test]
fn segment_alignment_is_checked() {
    let e = testelf::exec();
    assert_eq!(
        refuse_with(&e, |s| s.phdrs[2].align = 0x1800),
        LoadError::BadAlignment { index: 2 }
    );
    assert_eq!(
        refuse_with(&e, |s| s.phdrs[2].vaddr += 0x10),
        LoadError::Misaligned { index: 2 }
    );
    // Congruent modulo the page but not modulo its 2 MiB p_align.
    assert_eq!(
        refuse_with(&e, |s| {
            s.phdrs[2].align = 0x20_0000;
            s.phdrs[2].vaddr = testelf::EXEC_BASE + 0x11000;
        }),
        LoadError::Misaligned { index: 2 }
    );
}

#[test]
fn segments_outside_user_space_are_refused() {
    let e = testelf::exec();
    // Below USER_MIN (the null guard).
    let low = |s: &mut Spec| {
        s.phdrs[1].vaddr = USER_MIN - 0x1000;
    };
    assert_eq!(
        refuse_with(&e, low),
        LoadError::OutsideUserRange { index: 1 }
    );
    // Crossing USER_END.
    assert_eq!(
        refuse_with(&e, |s| {
            s.phdrs[3].vaddr = USER_END - 0x2000;
            s.entry = 0;
        }),
        LoadError::OutsideUserRange { index: 3 }
    );
    // A kernel address.
    assert_eq!(
        refuse_with(&e, |s| s.phdrs[3].vaddr = 0xffff_8000_0000_2000),
        LoadError::OutsideUserRange { index: 3 }
    );
    // A PIE at base 0 puts its first page at 0.
    let image = testelf::pie().build();
    assert_eq!(
        plan(&image, 0, &Limits::DEFAULT).unwrap_err(),
        LoadError::OutsideUserRange { index: 1 }
    );
}

#[test]
fn overflowing_addresses_are_refused() {
    let e = testelf::exec();
    assert_eq!(
        refuse_with(&e, |s| {
            s.phdrs[3].vaddr = u64::MAX - 0xfff;
            s.phdrs[3].offset = 0x2000;
        }),
        LoadError::AddressOverflow { index: 3 }
    );
    // Rounding the end up to a page overflows.
    assert_eq!(
        refuse_with(&e, |s| s.phdrs[3].memsz =
            u64::MAX - testelf::EXEC_BASE - 0x2000),
        LoadError::AddressOverflow { index: 3 }
    );
    // The PIE bias pushes a segment past 2^64.
    let image = testelf::pie().build();
    assert_eq!(
        plan(&image, u64::MAX - 0xfff, &Limits::DEFAULT).unwrap_err(),
        LoadError::AddressOverflow { index: 1 }
    );
}

#[test]
fn overlapping_or_unsorted_segments_are_refused() {
    let e = testelf::exec();
    // Two segments in one page (page-granular: no byte overlap needed).
    assert_eq!(
        refuse_with(&e, |s| {
            s.phdrs[2].vaddr = testelf::EXEC_BASE + 0x200;
            s.phdrs[2].offset = 0x200;
            s.entry = testelf::EXEC_BASE + 0x210;
        }),
        LoadError::SegmentsOverlap { index: 2 }
    );
    // Byte overlap.
    assert_eq!(
        refuse_with(&e, |s| s.phdrs[2].memsz = 0x2000),
        LoadError::SegmentsOverlap { index: 3 }
    );
    assert_eq!(
        refuse_with(&e, |s| s.phdrs.swap(2, 3)),
        LoadError::SegmentsUnsorted { index: 3 }
    );
}

#[test]
fn writable_and_executable_segments_are_refused() {
    let e = testelf::exec();
    assert_eq!(
        refuse_with(&e, |s| s.phdrs[2].flags = RW | elf::abi::PF_X),
        LoadError::WriteAndExecute { index: 2 }
    );
    assert_eq!(
        refuse_with(&e, |s| s.phdrs[3].flags = elf::abi::PF_W | elf::abi::PF_X),
        LoadError::WriteAndExecute { index: 3 }
    );
}

#[test]
fn segment_count_and_memory_are_capped() {
    let e = testelf::exec();
    // Huge p_memsz inside user space: 1 TiB of BSS.
    assert_eq!(
        refuse_with(&e, |s| s.phdrs[3].memsz = 1 << 40),
        LoadError::TooMuchMemory
    );
    // Just over the default 256 MiB.
    assert_eq!(
        refuse_with(&e, |s| s.phdrs[3].memsz = (256 << 20) - 0x2000 + 1),
        LoadError::TooMuchMemory
    );
    let image = e.build();
    let two = Limits {
        max_segments: 2,
        ..Limits::DEFAULT
    };
    assert_eq!(
        plan(&image, 0, &two).unwrap_err(),
        LoadError::TooManySegments
    );
    // 17 one-page segments: one more than a plan holds.
    let mut s = e.clone();
    s.phdrs.truncate(3);
    s.phdrs[1].filesz = 0x800;
    s.phdrs[1].memsz = 0x800;
    for i in 0..15u64 {
        let off = 0x2000 + i * 0x1000;
        s.phdrs
            .push(load(RW, off, testelf::EXEC_BASE + off, 0x10, 0x10));
    }
    s.phdrs[0].filesz = 18 * 56;
    s.phdrs[0].memsz = 18 * 56;
    s.len = 0x11000;
    assert_eq!(refuse(&s), LoadError::TooManySegments);
    s.phdrs.pop();
    s.phdrs[0].filesz = 17 * 56;
    s.phdrs[0].memsz = 17 * 56;
    assert!(
        plan(&s.build(), 0, &Limits::DEFAULT).is_ok(),
        "16 segments fit"
    );
}

#[test]
fn entry_outside_executable_segments_is_refused() {
    let e = testelf::exec();
    let b = testelf::EXEC_BASE;
    for entry in [b + 0x2000, b, b + 0x1123, 0, u64::MAX] {
        assert_eq!(
            refuse_with(&e, |s| s.entry = entry),
            LoadError::EntryNotExecutable,
            "{entry:#x}"
        );
    }
    let image = testelf::pie().build();
    let mut s = testelf::pie();
    s.entry = u64::MAX;
    assert_eq!(
        plan(&s.build(), PIE_BASE, &Limits::DEFAULT).unwrap_err(),
        LoadError::EntryNotExecutable
    );
    assert!(plan(&image, PIE_BASE, &Limits::DEFAULT).is_ok());
}

#[test]
fn misaligned_pie_bases_are_refused() {
    let image = testelf::pie().build();
    assert_eq!(
        plan(&image, PIE_BASE + 0x800, &Limits::DEFAULT).unwrap_err(),
        LoadError::BadBase
    );
    let mut s = testelf::pie();
    for i in 1..=3 {
        s.phdrs[i].align = 0x20_0000;
        s.phdrs[i].offset = s.phdrs[i].vaddr;
    }
    let image = s.build();
    assert_eq!(
        plan(&image, PIE_BASE + 0x1000, &Limits::DEFAULT).unwrap_err(),
        LoadError::BadBase
    );
    assert!(plan(&image, PIE_BASE, &Limits::DEFAULT).is_ok());
}

#[test]
fn pt_phdr_and_relro_must_lie_in_loaded_segments() {
    let e = testelf::exec();
    assert_eq!(
        refuse_with(&e, |s| s.phdrs[0].vaddr = testelf::EXEC_BASE + 0x1f0),
        LoadError::PhdrNotLoaded
    );
    assert_eq!(
        refuse_with(&e, |s| s.phdrs[0].vaddr = 0x1_0000_0000),
        LoadError::PhdrNotLoaded
    );
    let p = testelf::pie();
    // RELRO over the read-only segment or past the writable one's pages.
    assert_eq!(
        refuse_with(&p, |s| s.phdrs[5].vaddr = 0),
        LoadError::BadRelro
    );
    assert_eq!(
        refuse_with(&p, |s| s.phdrs[5].memsz = 0x3001),
        LoadError::BadRelro
    );
    assert_eq!(
        refuse_with(&p, |s| s.phdrs[5].memsz = u64::MAX),
        LoadError::BadRelro
    );
    assert_eq!(
        refuse_with(&p, |s| s.phdrs[6].p_type = PT_GNU_RELRO),
        LoadError::BadRelro,
        "(the stack header, now a RELRO at 0)"
    );
}

#[test]
fn bad_dynamic_sections_are_refused() {
    let p = testelf::pie();
    // Two PT_DYNAMIC.
    assert_eq!(
        refuse_with(&p, |s| s.phdrs[6].p_type = PT_DYNAMIC),
        LoadError::BadDynamic
    );
    // No DT_NULL.
    let d = testelf::pie_dynamic();
    assert_eq!(
        refuse(&testelf::pie_with_dynamic(&d[..3])),
        LoadError::BadDynamic
    );
    // Not a whole number of entries.
    assert_eq!(
        refuse_with(&p, |s| s.phdrs[4].filesz = 60),
        LoadError::BadDynamic
    );
    // A tag given twice.
    let mut twice = d.clone();
    twice.insert(0, (DT_RELA, 0));
    assert_eq!(
        refuse(&testelf::pie_with_dynamic(&twice)),
        LoadError::BadDynamic
    );
    // Outside the file.
    assert_eq!(
        refuse_with(&p, |s| s.phdrs[4].offset = 0x3200),
        LoadError::SegmentOutsideFile { index: 4 }
    );
}

#[test]
fn shared_libraries_and_other_relocation_tables_are_refused() {
    let d = testelf::pie_dynamic();
    let with = |tag: i64| {
        let mut v = d.clone();
        v.insert(0, (tag, 0x100));
        testelf::pie_with_dynamic(&v)
    };
    assert_eq!(refuse(&with(DT_NEEDED)), LoadError::NeedsSharedLibrary);
    assert_eq!(
        refuse(&with(DT_REL)),
        LoadError::UnsupportedRelocationTable(DT_REL)
    );
    assert_eq!(
        refuse(&with(DT_JMPREL)),
        LoadError::UnsupportedRelocationTable(DT_JMPREL)
    );
    assert_eq!(refuse(&with(36)), LoadError::UnsupportedRelocationTable(36)); // DT_RELR
                                                                              // Tags after DT_NULL are not read.
    let mut after = d.clone();
    after.push((DT_NEEDED, 1));
    assert!(plan(
        &testelf::pie_with_dynamic(&after).build(),
        PIE_BASE,
        &Limits::DEFAULT
    )
    .is_ok());
}

#[test]
fn inconsistent_rela_tables_are_refused() {
    let full = [
        (DT_RELA, testelf::PIE_RELA as u64),
        (DT_RELASZ, 72),
        (DT_RELAENT, 24),
    ];
    let spec = |entries: &[(i64, u64)]| {
        let mut v = entries.to_vec();
        v.push((DT_NULL, 0));
        testelf::pie_with_dynamic(&v)
    };
    assert_eq!(refuse(&spec(&full[..2])), LoadError::BadRelaTable); // no RELAENT
    assert_eq!(refuse(&spec(&full[1..])), LoadError::BadRelaTable); // no RELA
    assert_eq!(refuse(&spec(&[full[0], full[2]])), LoadError::BadRelaTable); // no RELASZ
    assert_eq!(
        refuse(&spec(&[full[0], full[1], (DT_RELAENT, 16)])),
        LoadError::BadRelaTable
    );
    assert_eq!(
        refuse(&spec(&[full[0], (DT_RELASZ, 73), full[2]])),
        LoadError::BadRelaTable
    );
    // The table beyond the file bytes of the segment holding its start.
    assert_eq!(
        refuse(&spec(&[(DT_RELA, 0x3f0), full[1], full[2]])),
        LoadError::BadRelaTable
    );
    assert_eq!(
        refuse(&spec(&[(DT_RELA, u64::MAX - 8), full[1], full[2]])),
        LoadError::BadRelaTable
    );
    assert_eq!(
        refuse(&spec(&[full[0], (DT_RELASZ, u64::MAX / 24 * 24), full[2]])),
        LoadError::TooManyRelocations
    );
    // The table in the BSS (no file bytes there).
    assert_eq!(
        refuse(&spec(&[(DT_RELA, 0x4000), full[1], full[2]])),
        LoadError::BadRelaTable
    );
    let one = Limits {
        max_relocations: 2,
        ..Limits::DEFAULT
    };
    let image = testelf::pie().build();
    assert_eq!(
        plan(&image, PIE_BASE, &one).unwrap_err(),
        LoadError::TooManyRelocations
    );
}

#[test]
fn relocations_other_than_relative_or_outside_writable_memory_are_refused() {
    let rel = R_X86_64_RELATIVE as u64;
    let ok = testelf::PIE_RELOCS;
    let with = |i: usize, r: (u64, u64, i64)| {
        let mut v = ok.to_vec();
        v[i] = r;
        refuse(&testelf::pie_with_relocs(&v))
    };
    assert_eq!(
        with(1, (0x3008, R_X86_64_64 as u64, 0)),
        LoadError::UnsupportedRelocation(R_X86_64_64)
    );
    assert_eq!(with(0, (0x3008, 0, 0)), LoadError::UnsupportedRelocation(0));
    // RELATIVE naming a symbol.
    assert_eq!(
        with(2, (0x3008, (1 << 32) | rel, 0)),
        LoadError::UnsupportedRelocation(R_X86_64_RELATIVE)
    );
    // Into the text, the headers, past the RW segment, straddling its end,
    // into the gap before it, at an offset the bias overflows.
    for off in [0x1000, 0x10, 0x5000, 0x4ffc, 0x1ff8, u64::MAX - 4] {
        assert_eq!(
            with(1, (off, rel, 0)),
            LoadError::RelocationOutsideWritable(off),
            "{off:#x}"
        );
    }
    // The last 8 bytes of the RW segment are fine.
    assert!(plan(
        &testelf::pie_with_relocs(&[(0x4ff8, rel, 0)]).build(),
        PIE_BASE,
        &Limits::DEFAULT
    )
    .is_ok());
}

#[test]
fn every_error_displays() {
    // Display is what the server logs; it must not panic for any variant.
    let e = LoadError::RelocationOutsideWritable(0x10);
    assert_eq!(
        e.to_string(),
        "relocation at 0x10 outside a writable segment"
    );
    assert_eq!(LoadError::Empty.to_string(), "empty file");
}
