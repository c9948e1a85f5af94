//! The dynamic section and the RELA relocations of a static PIE.
//!
//! A static PIE (`ET_DYN`, no PT_INTERP) carries only R_X86_64_RELATIVE
//! relocations: "store load bias + addend at load bias + r_offset". The
//! loader applies exactly those. Anything that would need a symbol lookup or
//! a dynamic linker is refused: DT_NEEDED, a DT_REL, DT_JMPREL or DT_RELR
//! table, any other relocation type, a RELATIVE one with a symbol.
//!
//! [`check`] validates the table once, at planning time; [`Relocations`]
//! then yields the stores without re-checking (the plan owns the proof).

use elf::abi::{
    DT_JMPREL, DT_NEEDED, DT_NULL, DT_REL, DT_RELA, DT_RELAENT, DT_RELASZ, R_X86_64_RELATIVE,
};
use elf::dynamic::Dyn;
use elf::endian::LittleEndian;
use elf::file::Class;
use elf::parse::{ParsingIterator, ParsingTable};
use elf::relocation::Rela;
use elf::segment::ProgramHeader;

use crate::plan::{file_bytes, Limits, Segment};
use crate::LoadError;

/// Size of one Elf64_Rela.
pub const RELA_SIZE: u64 = 24;
/// Size of one Elf64_Dyn.
const DYN_SIZE: u64 = 16;
/// DT_RELR (packed relative relocations; `elf` 0.8 does not name it).
const DT_RELR: i64 = 36;

/// One relocation to apply: store `value` (8 bytes, little endian) at `addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Relocation {
    pub addr: u64,
    pub value: u64,
}

/// The validated relocations of a plan, yielded in table order.
#[derive(Clone, Copy, Debug)]
pub struct Relocations<'a> {
    table: &'a [u8],
    bias: u64,
}

impl Relocations<'_> {
    pub(crate) const EMPTY: Relocations<'static> = Relocations {
        table: &[],
        bias: 0,
    };

    /// How many relocations the table holds.
    pub fn count(&self) -> usize {
        self.table.len() / RELA_SIZE as usize
    }
}

impl Iterator for Relocations<'_> {
    type Item = Relocation;
    fn next(&mut self) -> Option<Relocation> {
        let (entry, rest) = self.table.split_at_checked(RELA_SIZE as usize)?;
        self.table = rest;
        let mut at = 0;
        let rela =
            <Rela as elf::parse::ParseAt>::parse_at(LittleEndian, Class::ELF64, &mut at, entry)
                .ok()?;
        Some(Relocation {
            // Checked in `check` (the target lies in a segment below USER_END).
            addr: self.bias + rela.r_offset,
            // B + A modulo 2^64, as the psABI defines R_X86_64_RELATIVE.
            value: self.bias.wrapping_add(rela.r_addend as u64),
        })
    }
}

/// Validates PT_DYNAMIC (`dynamic`, program header `index`) and its RELA
/// table against the placed segments.
pub(crate) fn check<'a>(
    image: &'a [u8],
    dynamic: &ProgramHeader,
    index: usize,
    segments: &[Segment<'a>],
    bias: u64,
    limits: &Limits,
) -> Result<Relocations<'a>, LoadError> {
    let bytes = file_bytes(image, dynamic, index)?;
    if !(bytes.len() as u64).is_multiple_of(DYN_SIZE) {
        return Err(LoadError::BadDynamic);
    }
    let (mut rela, mut relasz, mut relaent) = (None, None, None);
    let mut terminated = false;
    let entries: ParsingIterator<'_, LittleEndian, Dyn> =
        ParsingTable::new(LittleEndian, Class::ELF64, bytes).iter();
    for d in entries {
        let slot = match d.d_tag {
            DT_NULL => {
                terminated = true;
                break;
            }
            DT_NEEDED => return Err(LoadError::NeedsSharedLibrary),
            DT_REL | DT_JMPREL | DT_RELR => {
                return Err(LoadError::UnsupportedRelocationTable(d.d_tag))
            }
            DT_RELA => &mut rela,
            DT_RELASZ => &mut relasz,
            DT_RELAENT => &mut relaent,
            _ => continue,
        };
        if slot.replace(d.d_val()).is_some() {
            return Err(LoadError::BadDynamic); // a tag given twice
        }
    }
    if !terminated {
        return Err(LoadError::BadDynamic);
    }
    let (rela, relasz) = match (rela, relasz, relaent) {
        (None, None, None) => return Ok(Relocations::EMPTY),
        (Some(rela), Some(relasz), Some(RELA_SIZE)) if relasz % RELA_SIZE == 0 => (rela, relasz),
        _ => return Err(LoadError::BadRelaTable),
    };
    if relasz / RELA_SIZE > limits.max_relocations {
        return Err(LoadError::TooManyRelocations);
    }
    // The table, found through the file bytes of the segment that loads it
    // (its addresses in the file are unbiased).
    let table = segments
        .iter()
        .find_map(|s| {
            let seg_vaddr = s.vaddr - bias;
            let off = rela.checked_sub(seg_vaddr)?;
            let end = off.checked_add(relasz)?;
            (end <= s.file.len() as u64).then(|| &s.file[off as usize..end as usize])
        })
        .ok_or(LoadError::BadRelaTable)?;
    let entries: ParsingIterator<'_, LittleEndian, Rela> =
        ParsingTable::new(LittleEndian, Class::ELF64, table).iter();
    for r in entries {
        if r.r_type != R_X86_64_RELATIVE || r.r_sym != 0 {
            return Err(LoadError::UnsupportedRelocation(r.r_type));
        }
        let writable = bias
            .checked_add(r.r_offset)
            .is_some_and(|addr| segments.iter().any(|s| s.perms.write && s.covers(addr, 8)));
        if !writable {
            return Err(LoadError::RelocationOutsideWritable(r.r_offset));
        }
    }
    Ok(Relocations { table, bias })
}
