//! Hand-made ELF64 images for the tests and the fuzzer: a small static
//! executable and a small static PIE with RELATIVE relocations, both
//! described field by field so a test can break exactly one rule.

use elf::abi::{
    DT_NULL, DT_RELA, DT_RELAENT, DT_RELASZ, ET_DYN, ET_EXEC, PF_R, PF_W, PF_X, PT_DYNAMIC,
    PT_GNU_RELRO, PT_GNU_STACK, PT_LOAD, PT_PHDR, R_X86_64_RELATIVE,
};

pub const R: u32 = PF_R;
pub const RW: u32 = PF_R | PF_W;
pub const RX: u32 = PF_R | PF_X;

/// One program header.
#[derive(Clone, Copy, Debug)]
pub struct Ph {
    pub p_type: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub align: u64,
}

pub fn load(flags: u32, offset: u64, vaddr: u64, filesz: u64, memsz: u64) -> Ph {
    Ph {
        p_type: PT_LOAD,
        flags,
        offset,
        vaddr,
        filesz,
        memsz,
        align: 0x1000,
    }
}

/// A whole image: header fields, program headers, file length and the bytes
/// placed at offsets (after the headers are written).
#[derive(Clone, Debug)]
pub struct Spec {
    pub class: u8,
    pub data: u8,
    pub ident_version: u8,
    pub e_type: u16,
    pub machine: u16,
    pub version: u32,
    pub entry: u64,
    pub phoff: u64,
    pub phentsize: u16,
    /// `None`: the number of `phdrs`.
    pub phnum: Option<u16>,
    pub phdrs: Vec<Ph>,
    pub len: usize,
    pub blobs: Vec<(usize, Vec<u8>)>,
}

impl Spec {
    pub fn build(&self) -> Vec<u8> {
        let mut f = vec![0u8; self.len];
        // Recognisable file bytes everywhere, so a copy from the wrong
        // offset shows: byte i is (i * 7 + i / 256) mod 251 plus 1 (never 0).
        for (i, b) in f.iter_mut().enumerate() {
            *b = ((i * 7 + i / 256) % 251) as u8 + 1;
        }
        let mut put = |at: usize, bytes: &[u8]| {
            if at < f.len() {
                let n = bytes.len().min(f.len() - at);
                f[at..at + n].copy_from_slice(&bytes[..n]);
            }
        };
        let mut eh = Vec::with_capacity(64);
        eh.extend_from_slice(&[0x7f, b'E', b'L', b'F', self.class, self.data]);
        eh.push(self.ident_version);
        eh.extend_from_slice(&[0; 9]);
        eh.extend_from_slice(&self.e_type.to_le_bytes());
        eh.extend_from_slice(&self.machine.to_le_bytes());
        eh.extend_from_slice(&self.version.to_le_bytes());
        eh.extend_from_slice(&self.entry.to_le_bytes());
        eh.extend_from_slice(&self.phoff.to_le_bytes());
        eh.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no sections
        eh.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        eh.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
        eh.extend_from_slice(&self.phentsize.to_le_bytes());
        let phnum = self.phnum.unwrap_or(self.phdrs.len() as u16);
        eh.extend_from_slice(&phnum.to_le_bytes());
        eh.extend_from_slice(&[0; 6]); // shentsize, shnum, shstrndx
        assert_eq!(eh.len(), 64);
        put(0, &eh);
        for (i, ph) in self.phdrs.iter().enumerate() {
            let mut b = Vec::with_capacity(56);
            b.extend_from_slice(&ph.p_type.to_le_bytes());
            b.extend_from_slice(&ph.flags.to_le_bytes());
            b.extend_from_slice(&ph.offset.to_le_bytes());
            b.extend_from_slice(&ph.vaddr.to_le_bytes());
            b.extend_from_slice(&ph.vaddr.to_le_bytes()); // p_paddr
            b.extend_from_slice(&ph.filesz.to_le_bytes());
            b.extend_from_slice(&ph.memsz.to_le_bytes());
            b.extend_from_slice(&ph.align.to_le_bytes());
            if let Some(at) = (self.phoff as usize).checked_add(i * 56) {
                put(at, &b);
            }
        }
        for (at, bytes) in &self.blobs {
            put(*at, bytes);
        }
        f
    }
}

fn base_spec(e_type: u16) -> Spec {
    Spec {
        class: 2,
        data: 1,
        ident_version: 1,
        e_type,
        machine: elf::abi::EM_X86_64,
        version: 1,
        entry: 0,
        phoff: 64,
        phentsize: 56,
        phnum: None,
        phdrs: Vec::new(),
        len: 0,
        blobs: Vec::new(),
    }
}

/// Where the executable loads.
pub const EXEC_BASE: u64 = 0x20_0000;

/// A static executable: R (headers), RX (text), RW (data + BSS), the
/// program headers announced by PT_PHDR, a non-executable stack.
///
/// Index 0 PT_PHDR, 1 R, 2 RX, 3 RW, 4 GNU_STACK.
pub fn exec() -> Spec {
    let b = EXEC_BASE;
    Spec {
        entry: b + 0x1010,
        phdrs: vec![
            Ph {
                p_type: PT_PHDR,
                flags: R,
                offset: 64,
                vaddr: b + 64,
                filesz: 5 * 56,
                memsz: 5 * 56,
                align: 8,
            },
            load(R, 0, b, 0x200, 0x200),
            load(RX, 0x1000, b + 0x1000, 0x123, 0x123),
            load(RW, 0x2000, b + 0x2000, 0x80, 0x3000),
            Ph {
                p_type: PT_GNU_STACK,
                flags: RW,
                offset: 0,
                vaddr: 0,
                filesz: 0,
                memsz: 0,
                align: 0,
            },
        ],
        len: 0x2080,
        ..base_spec(ET_EXEC)
    }
}

/// File offset of the PIE's RELA table (inside its R segment).
pub const PIE_RELA: usize = 0x200;
/// File offset of the PIE's dynamic section (inside its RW segment).
pub const PIE_DYNAMIC: usize = 0x3100;
/// The PIE's relocations: (r_offset, r_info, r_addend).
pub const PIE_RELOCS: [(u64, u64, i64); 3] = [
    // A pointer to the text, in the RELRO page.
    (0x2000, R_X86_64_RELATIVE as u64, 0x1000),
    // A pointer into the data, in the data proper.
    (0x3008, R_X86_64_RELATIVE as u64, 0x3000),
    // A pointer in the BSS (past the file bytes), to an address below 0.
    (0x4000, R_X86_64_RELATIVE as u64, -0x10),
];

/// Encodes RELA entries.
pub fn rela_bytes(relocs: &[(u64, u64, i64)]) -> Vec<u8> {
    let mut v = Vec::new();
    for &(off, info, addend) in relocs {
        v.extend_from_slice(&off.to_le_bytes());
        v.extend_from_slice(&info.to_le_bytes());
        v.extend_from_slice(&addend.to_le_bytes());
    }
    v
}

/// Encodes dynamic entries.
pub fn dyn_bytes(entries: &[(i64, u64)]) -> Vec<u8> {
    let mut v = Vec::new();
    for &(tag, val) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&val.to_le_bytes());
    }
    v
}

/// The PIE's dynamic entries.
pub fn pie_dynamic() -> Vec<(i64, u64)> {
    vec![
        (DT_RELA, PIE_RELA as u64),
        (DT_RELASZ, 3 * 24),
        (DT_RELAENT, 24),
        (DT_NULL, 0),
    ]
}

/// A static PIE linked at 0: R (headers, RELA), RX (text), RW (RELRO page,
/// data, dynamic, BSS), PT_DYNAMIC, PT_GNU_RELRO, PT_PHDR.
///
/// Index 0 PT_PHDR, 1 R, 2 RX, 3 RW, 4 DYNAMIC, 5 GNU_RELRO, 6 GNU_STACK.
pub fn pie() -> Spec {
    Spec {
        entry: 0x1000,
        phdrs: vec![
            Ph {
                p_type: PT_PHDR,
                flags: R,
                offset: 64,
                vaddr: 64,
                filesz: 7 * 56,
                memsz: 7 * 56,
                align: 8,
            },
            load(R, 0, 0, 0x400, 0x400),
            load(RX, 0x1000, 0x1000, 0x100, 0x100),
            load(RW, 0x2000, 0x2000, 0x1200, 0x3000),
            Ph {
                p_type: PT_DYNAMIC,
                flags: RW,
                offset: PIE_DYNAMIC as u64,
                vaddr: PIE_DYNAMIC as u64,
                filesz: 4 * 16,
                memsz: 4 * 16,
                align: 8,
            },
            Ph {
                p_type: PT_GNU_RELRO,
                flags: R,
                offset: 0x2000,
                vaddr: 0x2000,
                filesz: 0x1000,
                memsz: 0x1000,
                align: 1,
            },
            Ph {
                p_type: PT_GNU_STACK,
                flags: RW,
                offset: 0,
                vaddr: 0,
                filesz: 0,
                memsz: 0,
                align: 0,
            },
        ],
        len: 0x3200,
        blobs: vec![
            (PIE_RELA, rela_bytes(&PIE_RELOCS)),
            (PIE_DYNAMIC, dyn_bytes(&pie_dynamic())),
        ],
        ..base_spec(ET_DYN)
    }
}

/// Replaces the PIE's dynamic section (its PT_DYNAMIC sized to fit).
pub fn pie_with_dynamic(entries: &[(i64, u64)]) -> Spec {
    let mut s = pie();
    s.phdrs[4].filesz = 16 * entries.len() as u64;
    s.phdrs[4].memsz = s.phdrs[4].filesz;
    s.blobs[1] = (PIE_DYNAMIC, dyn_bytes(entries));
    s
}

/// Replaces the PIE's relocations (DT_RELASZ follows).
pub fn pie_with_relocs(relocs: &[(u64, u64, i64)]) -> Spec {
    let mut d = pie_dynamic();
    d[1].1 = 24 * relocs.len() as u64;
    let mut s = pie_with_dynamic(&d);
    s.blobs[0] = (PIE_RELA, rela_bytes(relocs));
    s
}
