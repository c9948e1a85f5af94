//! Accepted images: what the plan says, and what applying it leaves.

use super::{check_image, load_dirty, PIE_BASE};
use crate::testelf::{self, load, Ph, RW};
use crate::{plan, Kind, Limits, Perms};

#[test]
fn exec_is_planned_where_its_headers_say() {
    let image = testelf::exec().build();
    let p = plan(&image, PIE_BASE, &Limits::DEFAULT).unwrap();
    let b = testelf::EXEC_BASE;
    assert_eq!(p.kind(), Kind::Exec);
    assert_eq!(p.bias(), 0, "an ET_EXEC ignores the PIE base");
    assert_eq!(p.entry(), b + 0x1010);
    let segs: Vec<_> = p
        .segments()
        .iter()
        .map(|s| (s.start, s.end, s.perms, s.vaddr, s.file.len(), s.index))
        .collect();
    let r = Perms::R;
    let rx = Perms { execute: true, ..r };
    let rw = Perms { write: true, ..r };
    assert_eq!(
        segs,
        [
            (b, b + 0x1000, r, b, 0x200, 1),
            (b + 0x1000, b + 0x2000, rx, b + 0x1000, 0x123, 2),
            (b + 0x2000, b + 0x5000, rw, b + 0x2000, 0x80, 3),
        ]
    );
    assert_eq!(p.memory_bytes(), 0x5000);
    assert_eq!(p.relocations().count(), 0);
    assert_eq!(p.relro(), None);
    let aux = p.aux();
    assert_eq!(aux.phdr, Some(b + 64));
    assert_eq!(
        (aux.phent, aux.phnum, aux.entry, aux.base),
        (56, 5, b + 0x1010, None)
    );
    // The file bytes are the image's own, from the segment's offset.
    assert_eq!(p.segments()[1].file, &image[0x1000..0x1123]);
}

#[test]
fn exec_applied_to_a_fake_space_matches_byte_for_byte() {
    let image = testelf::exec().build();
    let p = plan(&image, 0, &Limits::DEFAULT).unwrap();
    let space = load_dirty(&p);
    check_image(&p, &space, &[]);
    // BSS and page tails are zero, the head page holds the headers.
    let b = testelf::EXEC_BASE;
    assert_eq!(space.read(b + 0x2080, 0x2f80), vec![0; 0x2f80]);
    assert_eq!(space.read(b + 0x1123, 0xedd), vec![0; 0xedd]);
    assert_eq!(space.read(b, 64), image[..64].to_vec());
    assert!(space.perms_at(b + 0x1000).unwrap().execute);
    assert!(space.perms_at(b + 0x2000).unwrap().write);
}

#[test]
fn bytes_before_an_unaligned_segment_start_are_zeroed() {
    // The data segment starts 0x40 into its page (as lld lays out segments
    // without -zseparate-loadable-segments): the page's first 0x40 bytes
    // belong to no segment and must read as zero, not as stale memory or
    // the file bytes before p_offset.
    let mut s = testelf::exec();
    let b = testelf::EXEC_BASE;
    s.phdrs[3] = load(RW, 0x2040, b + 0x2040, 0x40, 0x1000);
    let image = s.build();
    let p = plan(&image, 0, &Limits::DEFAULT).unwrap();
    assert_eq!(p.segments()[2].zero_ranges()[0], (b + 0x2000, 0x40));
    let space = load_dirty(&p);
    check_image(&p, &space, &[]);
    assert_eq!(space.read(b + 0x2000, 0x40), vec![0; 0x40]);
    assert_eq!(space.read(b + 0x2040, 0x40), image[0x2040..0x2080].to_vec());
}

/// The expected relocation stores of `testelf::pie` at `base`.
fn pie_stores(base: u64) -> Vec<(u64, u64)> {
    testelf::PIE_RELOCS
        .iter()
        .map(|&(off, _, addend)| (base + off, base.wrapping_add(addend as u64)))
        .collect()
}

#[test]
fn pie_relocations_are_applied_at_the_chosen_base() {
    let image = testelf::pie().build();
    for base in [0x1_0000, PIE_BASE, 0x7fff_0000_0000] {
        let p = plan(&image, base, &Limits::DEFAULT).unwrap();
        assert_eq!(p.kind(), Kind::Pie);
        assert_eq!(p.bias(), base);
        assert_eq!(p.entry(), base + 0x1000);
        let stores: Vec<_> = p.relocations().map(|r| (r.addr, r.value)).collect();
        assert_eq!(stores, pie_stores(base));
        assert_eq!(p.relro(), Some((base + 0x2000, 0x1000)));
        let aux = p.aux();
        assert_eq!((aux.phdr, aux.base), (Some(base + 64), Some(base)));
        let space = load_dirty(&p);
        check_image(&p, &space, &stores);
        // The text pointer at base+0x2000 really points at base+0x1000.
        assert_eq!(space.read(base + 0x2000, 8), (base + 0x1000).to_le_bytes());
        // RELRO became read-only after the stores; the data stays writable.
        assert_eq!(space.perms_at(base + 0x2000), Some(Perms::R));
        assert!(space.perms_at(base + 0x3000).unwrap().write);
    }
}

#[test]
fn pie_without_dynamic_section_loads_without_relocations() {
    let mut s = testelf::pie();
    s.phdrs[4].p_type = 0x6fff_0000; // an OS-specific type, ignored
    let image = s.build();
    let p = plan(&image, PIE_BASE, &Limits::DEFAULT).unwrap();
    assert_eq!(p.relocations().count(), 0);
}

#[test]
fn empty_segments_and_unknown_types_are_skipped() {
    let mut s = testelf::exec();
    s.phdrs.insert(2, load(RW, 0, 0xdead_0000, 0, 0));
    s.phdrs[0].filesz = 6 * 56;
    s.phdrs[0].memsz = 6 * 56;
    s.phdrs.push(Ph {
        p_type: 0x7000_0001,
        flags: 0,
        offset: 0,
        vaddr: 0,
        filesz: 0,
        memsz: 0,
        align: 0,
    });
    s.phdrs[0].filesz = 7 * 56;
    let image = s.build();
    let p = plan(&image, 0, &Limits::DEFAULT).unwrap();
    assert_eq!(p.segments().len(), 3);
}

#[test]
fn overlaps_tells_whether_a_range_shares_a_page_with_a_segment() {
    // The server places the stack and its guard page with this.
    let image = testelf::exec().build();
    let p = plan(&image, 0, &Limits::DEFAULT).unwrap();
    let b = testelf::EXEC_BASE;
    assert!(p.overlaps(b + 0x4fff, 1));
    assert!(p.overlaps(b - 0x1000, 0x1001));
    assert!(!p.overlaps(b + 0x5000, 0x1000));
    assert!(!p.overlaps(b - 0x1000, 0x1000));
    assert!(!p.overlaps(u64::MAX - 0xfff, 0x1000));
    assert!(!p.overlaps(b, 0));
}

#[test]
fn phdr_address_is_found_without_pt_phdr() {
    let mut s = testelf::exec();
    s.phdrs[0].p_type = 0x6fff_0001;
    let image = s.build();
    let p = plan(&image, 0, &Limits::DEFAULT).unwrap();
    assert_eq!(p.aux().phdr, Some(testelf::EXEC_BASE + 64));
    // Headers that no segment loads: no AT_PHDR at all.
    s.phdrs[1].offset = 0x1000;
    s.phdrs[1].filesz = 0x10;
    s.phdrs[1].memsz = 0x10;
    let image = s.build();
    let p = plan(&image, 0, &Limits::DEFAULT).unwrap();
    assert_eq!(p.aux().phdr, None);
}
