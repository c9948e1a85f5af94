//! Host tests: the malformed-ELF corpus (each image refused with its own
//! error), accepted images applied to a fake address space and compared
//! byte for byte, the programs the build produces, and the initial stack.

use std::collections::BTreeMap;

use abi::layout::{PAGE_SIZE, USER_END, USER_MIN};
use elf::abi::{
    DT_JMPREL, DT_NEEDED, DT_NULL, DT_REL, DT_RELA, DT_RELAENT, DT_RELASZ, PT_DYNAMIC,
    PT_GNU_RELRO, PT_INTERP, PT_TLS, R_X86_64_64, R_X86_64_RELATIVE,
};

use crate::stack::{self, at, StackError};
use crate::testelf::{self, load, Ph, Spec, R, RW};
use crate::{apply, plan, Kind, Limits, LoadError, LoadPlan, Perms, Target};

const PIE_BASE: u64 = 0x4000_0000;

fn refuse(spec: &Spec) -> LoadError {
    plan(&spec.build(), PIE_BASE, &Limits::DEFAULT).expect_err("image accepted")
}

fn refuse_with(spec: &Spec, f: impl FnOnce(&mut Spec)) -> LoadError {
    let mut s = spec.clone();
    f(&mut s);
    refuse(&s)
}

// ---------------------------------------------------------------------------
// A fake address space: mapped ranges with rights, sparse pages of bytes.

#[derive(Default)]
pub(crate) struct FakeSpace {
    /// (start, end, perms), as mapped (protect splits are recorded as extra
    /// entries that take precedence: later entries win).
    pub maps: Vec<(u64, u64, Perms)>,
    /// Pages written (never-written mapped pages read as zero).
    pub pages: BTreeMap<u64, Box<[u8; 4096]>>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FakeError {
    Unaligned,
    AlreadyMapped,
    NotMapped(u64),
}

impl FakeSpace {
    fn mapped(&self, addr: u64, len: u64) -> bool {
        // Every byte inside some mapping (mappings never overlap, except
        // protect entries, which lie inside one).
        let mut at = addr;
        let end = addr + len;
        while at < end {
            match self.maps.iter().find(|m| m.0 <= at && at < m.1) {
                Some(m) => at = m.1,
                None => return false,
            }
        }
        true
    }
    pub fn perms_at(&self, addr: u64) -> Option<Perms> {
        self.maps
            .iter()
            .rev()
            .find(|m| m.0 <= addr && addr < m.1)
            .map(|m| m.2)
    }
    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        (addr..addr + len as u64)
            .map(|a| {
                self.pages
                    .get(&(a & !(PAGE_SIZE - 1)))
                    .map_or(0, |p| p[(a % PAGE_SIZE) as usize])
            })
            .collect()
    }
    /// Fills `len` bytes at `addr` with 0xAA, mapped or not (stale memory).
    pub fn dirty(&mut self, addr: u64, len: usize) {
        self.store(addr, &vec![0xAA; len]);
    }
    fn store(&mut self, addr: u64, bytes: &[u8]) {
        let mut done = 0;
        while done < bytes.len() {
            let a = addr + done as u64;
            let off = (a % PAGE_SIZE) as usize;
            let n = (bytes.len() - done).min(PAGE_SIZE as usize - off);
            let page = self
                .pages
                .entry(a - off as u64)
                .or_insert_with(|| Box::new([0; 4096]));
            page[off..off + n].copy_from_slice(&bytes[done..done + n]);
            done += n;
        }
    }
}

impl Target for FakeSpace {
    type Error = FakeError;
    fn map(&mut self, start: u64, len: u64, perms: Perms) -> Result<(), FakeError> {
        if !start.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) || len == 0 {
            return Err(FakeError::Unaligned);
        }
        if self.maps.iter().any(|m| start < m.1 && m.0 < start + len) {
            return Err(FakeError::AlreadyMapped);
        }
        self.maps.push((start, start + len, perms));
        Ok(())
    }
    fn write(&mut self, addr: u64, bytes: &[u8]) -> Result<(), FakeError> {
        if !self.mapped(addr, bytes.len() as u64) {
            return Err(FakeError::NotMapped(addr));
        }
        self.store(addr, bytes);
        Ok(())
    }
    fn zero(&mut self, addr: u64, len: u64) -> Result<(), FakeError> {
        if !self.mapped(addr, len) {
            return Err(FakeError::NotMapped(addr));
        }
        // Only pages already written can hold non-zero bytes.
        let written: Vec<u64> = self
            .pages
            .range(addr & !(PAGE_SIZE - 1)..addr + len)
            .map(|(k, _)| *k)
            .collect();
        for page in written {
            let lo = addr.max(page);
            let hi = (addr + len).min(page + PAGE_SIZE);
            self.store(lo, &vec![0; (hi - lo) as usize]);
        }
        Ok(())
    }
    fn protect(&mut self, start: u64, len: u64, perms: Perms) -> Result<(), FakeError> {
        if !start.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) {
            return Err(FakeError::Unaligned);
        }
        if !self.mapped(start, len) {
            return Err(FakeError::NotMapped(start));
        }
        self.maps.push((start, start + len, perms));
        Ok(())
    }
}

/// Loads `image` into a fresh fake space, after `dirty` has filled the
/// segment pages with garbage (so zeroing is checked, not assumed).
fn load_dirty(plan: &LoadPlan<'_>) -> FakeSpace {
    let mut space = FakeSpace::default();
    for s in plan.segments() {
        space.dirty(s.start, s.len() as usize);
    }
    apply(plan, &mut space).expect("apply");
    space
}

/// What the loaded image must look like, computed independently of
/// `apply`: per segment, zeros with the file bytes at their place, then the
/// relocations as (address, value) stores.
fn check_image(plan: &LoadPlan<'_>, space: &FakeSpace, relocs: &[(u64, u64)]) {
    for s in plan.segments() {
        let mut want = vec![0u8; s.len() as usize];
        let at = (s.vaddr - s.start) as usize;
        want[at..at + s.file.len()].copy_from_slice(s.file);
        for &(addr, value) in relocs {
            if addr >= s.start && addr < s.end {
                let i = (addr - s.start) as usize;
                want[i..i + 8].copy_from_slice(&value.to_le_bytes());
            }
        }
        let got = space.read(s.start, s.len() as usize);
        assert!(got == want, "segment {} differs", s.index);
    }
}

// ---------------------------------------------------------------------------
// Accepted images.

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

// ---------------------------------------------------------------------------
// The malformed corpus: each image breaks one rule and gets its own error.

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

// ---------------------------------------------------------------------------
// The programs the build produces.

pub(crate) fn real_elf_dir() -> Option<std::path::PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("cross/user/x86_64-unknown-none/release");
    dir.join("init").exists().then_some(dir)
}

/// Every user program build.rs makes is accepted, and its plan matches the
/// flat boot image build.rs made from the same ELF (an independent reader:
/// `abi::bootimg` via `elf::ElfBytes`) and loads byte for byte.
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
    for name in ["init", "tests", "bench", "fuzz", "kv"] {
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
        if let Ok(flat) = std::fs::read(boot.join(name)) {
            let flat = abi::bootimg::BootImage::parse(&flat).unwrap();
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
pub(crate) const LINKED_PIE: &[u8] = include_bytes!("testdata/pie.elf");

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

// ---------------------------------------------------------------------------
// The initial stack.

const TOP: u64 = 0x7fff_ff00_0000;

/// What a built stack says, read back the way a C runtime's `_start` would.
#[derive(Debug, PartialEq)]
pub(crate) struct Parsed {
    pub argv: Vec<Vec<u8>>,
    pub envp: Vec<Vec<u8>>,
    pub auxv: Vec<(u64, u64)>,
    pub random: [u8; 16],
}

pub(crate) fn parse_stack(buf: &[u8], top: u64, rsp: u64) -> Parsed {
    let bottom = top - buf.len() as u64;
    let word = |a: u64| {
        let i = (a - bottom) as usize;
        u64::from_le_bytes(buf[i..i + 8].try_into().unwrap())
    };
    let cstr = |a: u64| {
        let i = (a - bottom) as usize;
        let n = buf[i..].iter().position(|&b| b == 0).expect("NUL");
        buf[i..i + n].to_vec()
    };
    let argc = word(rsp);
    let mut at = rsp + 8;
    let argv: Vec<_> = (0..argc).map(|k| cstr(word(at + 8 * k))).collect();
    at += 8 * argc;
    assert_eq!(word(at), 0, "argv NULL");
    at += 8;
    let mut envp = Vec::new();
    while word(at) != 0 {
        envp.push(cstr(word(at)));
        at += 8;
    }
    at += 8;
    let mut auxv = Vec::new();
    loop {
        let (t, v) = (word(at), word(at + 8));
        auxv.push((t, v));
        at += 16;
        if t == at::NULL {
            break;
        }
    }
    let r = auxv
        .iter()
        .find(|a| a.0 == at::RANDOM)
        .expect("AT_RANDOM")
        .1;
    let i = (r - bottom) as usize;
    Parsed {
        argv,
        envp,
        auxv,
        random: buf[i..i + 16].try_into().unwrap(),
    }
}

fn aux_of(image: &[u8], base: u64) -> crate::AuxValues {
    plan(image, base, &Limits::DEFAULT).unwrap().aux()
}

#[test]
fn stack_reads_back_as_built() {
    let image = testelf::pie().build();
    let aux = aux_of(&image, PIE_BASE);
    let mut buf = vec![0xEEu8; 8192];
    let random = *b"0123456789abcdef";
    let argv: [&[u8]; 3] = [b"tests", b"--case", b""];
    let envp: [&[u8]; 2] = [b"HOME=/", b"TERM=vt100"];
    let rsp = stack::build(&mut buf, TOP, &argv, &envp, &aux, &random).unwrap();
    assert_eq!(rsp % 16, 0);
    let got = parse_stack(&buf, TOP, rsp);
    assert_eq!(got.argv, argv.map(|s| s.to_vec()));
    assert_eq!(got.envp, envp.map(|s| s.to_vec()));
    assert_eq!(got.random, random);
    assert_eq!(
        got.auxv,
        [
            (at::PHDR, PIE_BASE + 64),
            (at::PHENT, 56),
            (at::PHNUM, 7),
            (at::PAGESZ, 4096),
            (at::BASE, PIE_BASE),
            (at::ENTRY, PIE_BASE + 0x1000),
            (at::RANDOM, TOP - 16),
            (at::NULL, 0),
        ]
    );
    // Nothing below rsp was touched.
    let used = (TOP - rsp) as usize;
    assert!(buf[..buf.len() - used].iter().all(|&b| b == 0xEE));
}

#[test]
fn exec_stack_has_no_at_base() {
    let image = testelf::exec().build();
    let aux = aux_of(&image, 0);
    let mut buf = vec![0u8; 4096];
    let rsp = stack::build(&mut buf, TOP, &[], &[], &aux, &[7; 16]).unwrap();
    let got = parse_stack(&buf, TOP, rsp);
    assert!(got.argv.is_empty() && got.envp.is_empty());
    assert!(got.auxv.iter().all(|a| a.0 != at::BASE));
    assert_eq!(got.auxv[0], (at::PHDR, testelf::EXEC_BASE + 64));
}

#[test]
fn stack_bounds_are_errors() {
    let aux = aux_of(&testelf::exec().build(), 0);
    let mut buf = vec![0u8; 64 * 1024];
    let r = [0u8; 16];
    let s: &[u8] = b"x";
    let many = vec![s; stack::MAX_ARGS + 1];
    let long = vec![b'a'; stack::MAX_STRING + 1];
    let big = vec![b'a'; stack::MAX_STRING];
    let bigs = vec![&big[..]; 9];
    type Case<'a> = (&'a [&'a [u8]], &'a [&'a [u8]], u64, StackError);
    let cases: [Case<'_>; 8] = [
        (&many, &[], TOP, StackError::TooManyArgs),
        (&[], &many, TOP, StackError::TooManyEnvs),
        (&[&long], &[], TOP, StackError::StringTooLong),
        (&[b"a\0b"], &[], TOP, StackError::StringHasNul),
        (&bigs, &[], TOP, StackError::TooMuchData),
        (&[], &[], TOP + 8, StackError::BadStackTop),
        (&[], &[], USER_END + 16, StackError::BadStackTop),
        (&[], &[], 0x100, StackError::BadStackTop),
    ];
    for (argv, envp, top, want) in cases {
        assert_eq!(stack::build(&mut buf, top, argv, envp, &aux, &r), Err(want));
    }
    // A buffer too small for the vector (or the strings).
    let mut small = [0u8; 64];
    assert_eq!(
        stack::build(&mut small, TOP, &[b"prog"], &[], &aux, &r),
        Err(StackError::StackTooSmall)
    );
    let mut tiny = [0u8; 16];
    assert_eq!(
        stack::build(&mut tiny, 16, &[], &[], &aux, &r),
        Err(StackError::StackTooSmall)
    );
}

proptest::proptest! {
    #[test]
    fn any_arguments_within_bounds_read_back(
        argv in proptest::collection::vec(proptest::collection::vec(1u8..=255, 0..40), 0..12),
        envp in proptest::collection::vec(proptest::collection::vec(1u8..=255, 0..40), 0..12),
        random in proptest::array::uniform16(0u8..),
        top_pages in 1u64..1000,
    ) {
        let image = testelf::pie().build();
        let aux = aux_of(&image, PIE_BASE);
        let top = TOP - top_pages * 16;
        let mut buf = vec![0u8; 4096];
        let a: Vec<&[u8]> = argv.iter().map(|v| &v[..]).collect();
        let e: Vec<&[u8]> = envp.iter().map(|v| &v[..]).collect();
        let rsp = stack::build(&mut buf, top, &a, &e, &aux, &random).unwrap();
        proptest::prop_assert_eq!(rsp % 16, 0);
        let got = parse_stack(&buf, top, rsp);
        proptest::prop_assert_eq!(got.argv, argv);
        proptest::prop_assert_eq!(got.envp, envp);
        proptest::prop_assert_eq!(got.random, random);
    }
}

#[test]
fn fake_space_refuses_what_a_kernel_would() {
    // The fake must be strict, or the byte comparisons above prove little.
    let mut f = FakeSpace::default();
    assert_eq!(f.map(0x1001, 0x1000, Perms::R), Err(FakeError::Unaligned));
    f.map(0x1000, 0x1000, Perms::R).unwrap();
    assert_eq!(
        f.map(0x1000, 0x2000, Perms::R),
        Err(FakeError::AlreadyMapped)
    );
    assert_eq!(f.write(0x1ff8, &[0; 9]), Err(FakeError::NotMapped(0x1ff8)));
    assert_eq!(f.zero(0x2000, 1), Err(FakeError::NotMapped(0x2000)));
    f.write(0x1ff8, &[1; 8]).unwrap();
    assert_eq!(f.read(0x1ff8, 9), [1, 1, 1, 1, 1, 1, 1, 1, 0]);
    f.zero(0x1ffc, 4).unwrap();
    assert_eq!(f.read(0x1ff8, 8), [1, 1, 1, 1, 0, 0, 0, 0]);
}
