//! forku: read-only segments mapped straight from the image's pages
//! ([`crate::apply::shares_image`]) instead of copied.

use super::{check_image, FakeError, FakeSpace, PIE_BASE};
use crate::apply::{image_page, shared_bytes, shares_image};
use crate::testelf;
use crate::{apply, plan, Limits, LoadPlan, Perms, Target};
use abi::layout::PAGE_SIZE;

/// A fake space that can map the image's own pages: records each such
/// mapping and stores the image's bytes there (zeros past its end, as the
/// loader's page-rounded module objects hold).
struct SharingSpace<'i> {
    space: FakeSpace,
    image: &'i [u8],
    shared: Vec<(u64, u64, u64)>,
}

impl Target for SharingSpace<'_> {
    type Error = FakeError;
    fn map(&mut self, start: u64, len: u64, perms: Perms) -> Result<(), FakeError> {
        self.space.map(start, len, perms)
    }
    fn write(&mut self, addr: u64, bytes: &[u8]) -> Result<(), FakeError> {
        self.space.write(addr, bytes)
    }
    fn zero(&mut self, addr: u64, len: u64) -> Result<(), FakeError> {
        self.space.zero(addr, len)
    }
    fn protect(&mut self, start: u64, len: u64, perms: Perms) -> Result<(), FakeError> {
        self.space.protect(start, len, perms)
    }
    fn map_image(
        &mut self,
        start: u64,
        len: u64,
        perms: Perms,
        at: u64,
    ) -> Result<bool, FakeError> {
        assert_eq!(at % PAGE_SIZE, 0, "an unaligned image offset");
        self.space.map(start, len, perms)?;
        let bytes: Vec<u8> = (at..at + len)
            .map(|i| self.image.get(i as usize).copied().unwrap_or(0))
            .collect();
        self.space.write(start, &bytes)?;
        self.shared.push((start, len, at));
        Ok(true)
    }
}

/// Loads `image` sharing what may be shared; checks each shared segment
/// holds the image's pages (its own bytes at their place) and that only
/// writable or BSS-holding segments were copied. The shared (start, len,
/// image offset).
fn load_sharing(plan: &LoadPlan<'_>, image: &[u8]) -> Vec<(u64, u64, u64)> {
    let mut t = SharingSpace {
        space: FakeSpace::default(),
        image,
        shared: vec![],
    };
    apply(plan, &mut t).expect("apply");
    for s in plan.segments() {
        if shares_image(s) {
            let got = t.space.read(s.vaddr, s.file.len());
            assert!(
                got == s.file,
                "segment {}: its bytes are not in place",
                s.index
            );
            assert!(!s.perms.write, "a writable segment shared");
            let page = image_page(s) as usize;
            let want: Vec<u8> = (page..page + s.len() as usize)
                .map(|i| image.get(i).copied().unwrap_or(0))
                .collect();
            assert!(t.space.read(s.start, s.len() as usize) == want);
        }
    }
    let copied: Vec<_> = plan
        .segments()
        .iter()
        .filter(|s| !shares_image(s))
        .collect();
    assert!(copied
        .iter()
        .all(|s| s.perms.write || s.file.len() as u64 != s.mem_len));
    let total: u64 = t.shared.iter().map(|x| x.1).sum();
    assert_eq!(total, shared_bytes(plan));
    t.shared
}

#[test]
fn read_only_segments_are_mapped_from_the_image_and_writable_ones_copied() {
    let image = testelf::pie().build();
    let p = plan(&image, PIE_BASE, &Limits::DEFAULT).unwrap();
    let shared = load_sharing(&p, &image);
    // R (headers, RELA) at 0 and RX (text) at 0x1000; the RW one (RELRO,
    // data, BSS, relocations) is copied.
    assert_eq!(
        shared,
        vec![
            (PIE_BASE, PAGE_SIZE, 0),
            (PIE_BASE + 0x1000, PAGE_SIZE, 0x1000)
        ]
    );
    // A target that cannot share gets the old image, zeros and all.
    let mut plain = FakeSpace::default();
    apply(&p, &mut plain).unwrap();
    check_image(
        &p,
        &plain,
        &testelf::PIE_RELOCS.map(|(a, _, v)| (PIE_BASE + a, PIE_BASE.wrapping_add(v as u64))),
    );
}

#[test]
fn a_writable_segment_without_bss_is_copied() {
    let mut spec = testelf::pie();
    // The RW segment's file bytes fill it (no BSS): still copied (it takes
    // relocations and stores).
    spec.phdrs[3].filesz = spec.phdrs[3].memsz;
    spec.len = 0x5000;
    let image = spec.build();
    let p = plan(&image, PIE_BASE, &Limits::DEFAULT).unwrap();
    let rw = p.segments().iter().find(|s| s.perms.write).unwrap();
    assert!(!shares_image(rw));
    assert_eq!(load_sharing(&p, &image).len(), 2);
}

#[test]
fn a_read_only_segment_with_bss_is_copied() {
    let mut spec = testelf::pie();
    // The text gets a zero-filled tail.
    spec.phdrs[2].memsz = 0x200;
    let image = spec.build();
    let p = plan(&image, PIE_BASE, &Limits::DEFAULT).unwrap();
    let text = p.segments().iter().find(|s| s.perms.execute).unwrap();
    assert!(!shares_image(text));
    let shared = load_sharing(&p, &image);
    assert_eq!(shared, vec![(PIE_BASE, PAGE_SIZE, 0)]);
}

#[test]
fn the_real_programs_share_their_read_only_segments() {
    let Some(dir) = super::real::real_elf_dir() else {
        return; // `programs_from_the_build_...` says why
    };
    let image = std::fs::read(dir.join("hello")).expect("hello");
    let p = plan(&image, PIE_BASE, &Limits::DEFAULT).unwrap();
    let shared = load_sharing(&p, &image);
    let read_only = p.segments().iter().filter(|s| !s.perms.write).count();
    assert!(read_only >= 2 && shared.len() == read_only, "{shared:x?}");
}
