//! Host tests: the malformed-ELF corpus (each image refused with its own
//! error), accepted images applied to a fake address space and compared
//! byte for byte, the programs the build produces and a linker's static
//! PIE, and the initial stack. This file holds the fake address space and
//! the helpers the others (and the fuzzer) share.

use std::collections::BTreeMap;

use abi::layout::PAGE_SIZE;

use crate::testelf::Spec;
use crate::{apply, plan, Limits, LoadError, LoadPlan, Perms, Target};

mod accepted;
mod corpus;
mod real;
mod shared;
mod stack;

pub(crate) use real::{real_elf_dir, LINKED_PIE};
pub(crate) use stack::parse_stack;

const PIE_BASE: u64 = 0x4000_0000;

fn refuse(spec: &Spec) -> LoadError {
    plan(&spec.build(), PIE_BASE, &Limits::DEFAULT).expect_err("image accepted")
}

fn refuse_with(spec: &Spec, f: impl FnOnce(&mut Spec)) -> LoadError {
    let mut s = spec.clone();
    f(&mut s);
    refuse(&s)
}

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

mod wire;
