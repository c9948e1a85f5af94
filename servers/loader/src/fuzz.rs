//! The host fuzzer: a seeded, structure-aware mutation loop (stable Rust, no
//! `cargo fuzz`) over a corpus of valid and malformed images.
//!
//! Each round takes a corpus image, applies one to four mutations (header
//! and program-header fields set to boundary values, dynamic and RELA
//! words rewritten, bytes flipped, the file cut or grown), plans it at a
//! random base under random limits, and asserts:
//! - `plan` returned (a panic fails the test and prints the round's seed);
//! - an accepted plan keeps every invariant of [`crate::plan`], checked
//!   here from the plan's public view, independently of how it was made;
//! - applying it to a strict fake address space succeeds and leaves
//!   exactly the file bytes and relocation stores, zeros elsewhere;
//! - the initial stack, from random arguments (some past the bounds) at a
//!   random top in a random buffer, reads back exactly, or is refused for
//!   a reason that holds, checked from the inputs.
//!
//! `fuzz_smoke` runs a few thousand rounds with every `cargo test`;
//! `fuzz_timed` (ignored by default) runs for `LOADER_FUZZ_SECS` seconds
//! (20 unless set) from `LOADER_FUZZ_SEED` (the clock unless set):
//! `scripts/test.sh` runs it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use abi::layout::{PAGE_SIZE, USER_END, USER_MIN};

use crate::plan::{EHDR_SIZE, PHDR_SIZE};
use crate::tests::FakeSpace;
use crate::{apply, plan, stack, testelf, Limits, LoadError, LoadPlan};

/// How many distinct errors `fuzz_smoke`'s 3,000 rounds must provoke.
const MIN_VARIANTS: usize = 30;

/// xorshift64*: small, seedable, good enough to drive mutations.
struct Rng(abi::rng::XorShift64Star);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

/// Values that sit on the rules' edges.
fn interesting(rng: &mut Rng, old: u64) -> u64 {
    const EDGES: [u64; 16] = [
        0,
        1,
        8,
        24,
        56,
        0x1000,
        0xfff,
        0x20_0000,
        USER_MIN,
        USER_MIN - 1,
        USER_END,
        USER_END - PAGE_SIZE,
        u64::MAX,
        u64::MAX - 0xfff,
        1 << 63,
        256 << 20,
    ];
    match rng.below(5) {
        0 => EDGES[rng.below(EDGES.len() as u64) as usize],
        1 => old.wrapping_add(rng.below(0x2000)).wrapping_sub(0x1000),
        2 => old ^ (1 << rng.below(64)),
        3 => old.wrapping_add(PAGE_SIZE * rng.below(4)),
        _ => rng.next(),
    }
}

fn set(image: &mut [u8], at: usize, width: usize, value: u64) {
    if at.checked_add(width).is_some_and(|end| end <= image.len()) {
        image[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
    }
}

fn get(image: &[u8], at: usize, width: usize) -> u64 {
    let mut b = [0u8; 8];
    if at.checked_add(width).is_some_and(|end| end <= image.len()) {
        b[..width].copy_from_slice(&image[at..at + width]);
    }
    u64::from_le_bytes(b)
}

/// (offset, width) of the ELF header's fields after e_ident, and of one
/// program header's.
const EHDR_FIELDS: [(usize, usize); 12] = [
    (4, 1),
    (5, 1),
    (6, 1),
    (16, 2),
    (18, 2),
    (20, 4),
    (24, 8),
    (32, 8),
    (54, 2),
    (56, 2),
    (0, 1),
    (7, 1),
];
const PHDR_FIELDS: [(usize, usize); 7] =
    [(0, 4), (4, 4), (8, 8), (16, 8), (32, 8), (40, 8), (48, 8)];

fn mutate(rng: &mut Rng, image: &mut Vec<u8>) {
    let phoff = get(image, 32, 8) as usize;
    let phnum = get(image, 56, 2) as usize;
    match rng.below(8) {
        0 => {
            let (at, w) = EHDR_FIELDS[rng.below(EHDR_FIELDS.len() as u64) as usize];
            let v = interesting(rng, get(image, at, w));
            set(image, at, w, v);
        }
        1 | 2 => {
            // A program-header field: the most productive mutation.
            let i = rng.below(phnum.clamp(1, 20) as u64) as usize;
            let (f, w) = PHDR_FIELDS[rng.below(PHDR_FIELDS.len() as u64) as usize];
            let at = phoff.saturating_add(i * PHDR_SIZE + f);
            let v = match (f, rng.below(3)) {
                (0, 0) => [1u64, 2, 3, 6, 7, 0x6474_e551, 0x6474_e552][rng.below(7) as usize],
                (4, 0) => rng.below(8),
                (_, _) => interesting(rng, get(image, at, w)),
            };
            set(image, at, w, v);
        }
        3 => {
            // An 8-byte word in the PIE's RELA table or dynamic section (or
            // wherever those offsets fall in another image).
            let region = if rng.chance(2) {
                testelf::PIE_RELA
            } else {
                testelf::PIE_DYNAMIC
            };
            let at = region + 8 * rng.below(10) as usize;
            let v = match rng.below(3) {
                0 => rng.below(40),
                1 => 8, // R_X86_64_RELATIVE / DT_RELASZ-ish
                _ => interesting(rng, get(image, at, 8)),
            };
            set(image, at, 8, v);
        }
        4 => {
            if !image.is_empty() {
                let at = rng.below(image.len() as u64) as usize;
                image[at] ^= 1 << rng.below(8);
            }
        }
        5 => {
            if !image.is_empty() {
                let at = rng.below(image.len().min(EHDR_SIZE + 20 * PHDR_SIZE) as u64) as usize;
                image[at] = rng.next() as u8;
            }
        }
        6 => {
            let len = rng.below(image.len() as u64 + 1) as usize;
            image.truncate(len);
        }
        _ => {
            let n = rng.below(0x2000) as usize;
            image.extend((0..n).map(|_| rng.next() as u8));
        }
    }
}

fn corpus() -> Vec<Vec<u8>> {
    let mut c = vec![testelf::exec().build(), testelf::pie().build()];
    // A few malformed seeds, so mutations start near the edges too.
    let mut s = testelf::pie();
    s.phdrs[3].flags |= elf::abi::PF_X;
    c.push(s.build());
    let mut s = testelf::exec();
    s.phdrs[3].memsz = 1 << 40;
    c.push(s.build());
    c.push(testelf::pie_with_relocs(&[(0x1000, 8, 0), (0x3000, 1, 0)]).build());
    c.push(Vec::new());
    // What linkers make: a static PIE, and init as the build links it.
    c.push(crate::tests::LINKED_PIE.to_vec());
    if let Some(dir) = crate::tests::real_elf_dir() {
        if let Ok(init) = std::fs::read(dir.join("init")) {
            c.push(init);
        }
    }
    c
}

/// The plan invariants, from the plan's public view only.
fn check_invariants(p: &LoadPlan<'_>, image: &[u8], limits: &Limits) {
    let segs = p.segments();
    assert!(!segs.is_empty());
    assert!(segs.len() <= limits.max_segments.min(crate::plan::MAX_SEGMENTS));
    let img = image.as_ptr() as usize..image.as_ptr() as usize + image.len();
    let mut total = 0u64;
    for (k, s) in segs.iter().enumerate() {
        assert!(s.start % PAGE_SIZE == 0 && s.end % PAGE_SIZE == 0 && s.start < s.end);
        assert!(s.start >= USER_MIN && s.end <= USER_END, "{s:?}");
        if k > 0 {
            assert!(segs[k - 1].end <= s.start, "overlap {s:?}");
        }
        assert!(!(s.perms.write && s.perms.execute), "W+X {s:?}");
        assert!(s.vaddr >= s.start && s.vaddr + s.mem_len <= s.end);
        assert!(s.file.len() as u64 <= s.mem_len);
        if !s.file.is_empty() {
            let f = s.file.as_ptr() as usize;
            assert!(img.contains(&f) && f + s.file.len() <= img.end);
        }
        total += s.len();
    }
    assert_eq!(total, p.memory_bytes());
    assert!(total <= limits.max_memory_bytes);
    assert!(segs
        .iter()
        .any(|s| s.perms.execute && s.covers(p.entry(), 1)));
    for r in p.relocations() {
        assert!(
            segs.iter().any(|s| s.perms.write && s.covers(r.addr, 8)),
            "{r:?}"
        );
        assert_eq!(
            r.value,
            p.bias().wrapping_add(r.value.wrapping_sub(p.bias()))
        );
    }
    if let Some((start, len)) = p.relro() {
        assert!(segs
            .iter()
            .any(|s| s.perms.write && start >= s.start && start + len <= s.end));
    }
    if let Some(phdr) = p.aux().phdr {
        assert!(segs.iter().any(|s| s.covers(phdr, 56 * p.aux().phnum)));
    }
}

fn relocated_at(p: &LoadPlan<'_>, a: u64) -> bool {
    p.relocations().any(|r| a >= r.addr && a < r.addr + 8)
}

/// One round: `Ok` if the image was accepted (and every check passed),
/// else the error `plan` gave.
fn round(seed: u64, corpus: &[Vec<u8>]) -> Result<(), LoadError> {
    let mut rng = Rng(abi::rng::XorShift64Star(seed | 1));
    let mut image = corpus[rng.below(corpus.len() as u64) as usize].clone();
    for _ in 0..1 + rng.below(4) {
        mutate(&mut rng, &mut image);
    }
    let base = match rng.below(4) {
        0 => 0x4000_0000,
        1 => rng.next() & !(PAGE_SIZE - 1) & (USER_END - 1),
        2 => rng.next(),
        _ => 0x1_0000,
    };
    let limits = if rng.chance(8) {
        Limits {
            max_phdrs: rng.below(70) as u16,
            max_segments: rng.below(20) as usize,
            max_memory_bytes: rng.below(1 << 24),
            max_relocations: rng.below(5),
        }
    } else {
        Limits::DEFAULT
    };
    let p = plan(&image, base, &limits)?;
    check_invariants(&p, &image, &limits);
    let mut space = FakeSpace::default();
    // Stale bytes where zeroing matters most (the first page, and the page
    // where the file bytes end), so a skipped zero shows.
    for s in p.segments() {
        let file_end_page = (s.vaddr + s.file.len() as u64) & !(PAGE_SIZE - 1);
        for page in [s.start, file_end_page.min(s.end - PAGE_SIZE)] {
            space.dirty(page, PAGE_SIZE as usize);
        }
    }
    apply(&p, &mut space).expect("an accepted plan applies");
    for s in p.segments() {
        // Spot-check rather than compare whole (possibly 256 MiB) segments:
        // the file bytes (minus relocated words), the head of the first page
        // and the first BSS bytes.
        let n = s.file.len().min(512);
        let got = space.read(s.vaddr, n);
        for (i, (&g, &w)) in got.iter().zip(s.file).enumerate() {
            let a = s.vaddr + i as u64;
            assert!(g == w || relocated_at(&p, a), "byte at {a:#x}");
        }
        let head = space.read(s.start, (s.vaddr - s.start) as usize);
        for (i, &b) in head.iter().enumerate() {
            let a = s.start + i as u64;
            assert!(b == 0 || relocated_at(&p, a), "head byte at {a:#x}");
        }
        let tail = s.vaddr + s.file.len() as u64;
        let zeros = space.read(tail, ((s.end - tail).min(64)) as usize);
        for (i, &b) in zeros.iter().enumerate() {
            assert!(
                b == 0 || relocated_at(&p, tail + i as u64),
                "BSS byte at {:#x}",
                tail + i as u64
            );
        }
    }
    // Relocation stores land in table order (overlapping ones included:
    // the later store wins, byte by byte).
    let mut stores = std::collections::BTreeMap::new();
    for r in p.relocations() {
        for (i, b) in r.value.to_le_bytes().into_iter().enumerate() {
            stores.insert(r.addr + i as u64, b);
        }
    }
    for (&a, &b) in &stores {
        assert_eq!(space.read(a, 1)[0], b, "relocated byte at {a:#x}");
    }
    stack_round(&mut rng, &p.aux());
    Ok(())
}

/// A random string: mostly short, sometimes at or past the length bound,
/// rarely holding a NUL.
fn arg(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(16) {
        0 => stack::MAX_STRING + rng.below(2) as usize,
        1 => rng.below(stack::MAX_STRING as u64) as usize,
        _ => rng.below(24) as usize,
    };
    let mut v: Vec<u8> = (0..len).map(|_| (rng.next() as u8).max(1)).collect();
    if !v.is_empty() && rng.chance(64) {
        let i = rng.below(v.len() as u64) as usize;
        v[i] = 0;
    }
    v
}

/// Builds an initial stack from random arguments into a random buffer at a
/// random top. Accepted: it reads back exactly and `rsp` is aligned.
/// Refused: the reason holds, checked from the inputs.
fn stack_round(rng: &mut Rng, aux: &crate::AuxValues) {
    let count = |rng: &mut Rng| match rng.below(32) {
        0 => stack::MAX_ARGS + rng.below(2) as usize,
        _ => rng.below(6) as usize,
    };
    let (na, ne) = (count(rng), count(rng));
    let argv: Vec<Vec<u8>> = (0..na).map(|_| arg(rng)).collect();
    let envp: Vec<Vec<u8>> = (0..ne).map(|_| arg(rng)).collect();
    let a: Vec<&[u8]> = argv.iter().map(|v| &v[..]).collect();
    let e: Vec<&[u8]> = envp.iter().map(|v| &v[..]).collect();
    let top = match rng.below(8) {
        0 => rng.next() & (USER_END * 2 - 1),
        1 => USER_END,
        _ => 0x7fff_ff00_0000 - 16 * rng.below(1 << 20),
    };
    let mut buf = vec![0u8; [256, 4096, 40 * 1024][rng.below(3) as usize]];
    let mut random = [0u8; 16];
    random[..8].copy_from_slice(&rng.next().to_le_bytes());
    random[8..].copy_from_slice(&rng.next().to_le_bytes());
    let strings: usize = a.iter().chain(&e).map(|s| s.len() + 1).sum();
    // The psABI layout's size, from the inputs: AT_RANDOM's bytes, the
    // strings, argc, argv + NULL, envp + NULL, the auxv pairs (PHENT, PHNUM,
    // PAGESZ, ENTRY, RANDOM, NULL, and PHDR and BASE when known), then rsp
    // rounded down to 16.
    let pairs = 6 + usize::from(aux.phdr.is_some()) + usize::from(aux.base.is_some());
    let need = (16 + strings + 8 * (na + ne + 3) + 16 * pairs) as u64;
    let too_small = top
        .checked_sub(need)
        .is_none_or(|rsp| (rsp & !15) < top.saturating_sub(buf.len() as u64));
    match stack::build(&mut buf, top, &a, &e, aux, &random) {
        Ok(rsp) => {
            assert!(!too_small, "built in a buffer too small");
            assert_eq!(rsp % 16, 0);
            assert_eq!(rsp, (top - need) & !15);
            assert!(rsp >= top - buf.len() as u64 && rsp < top);
            let got = crate::tests::parse_stack(&buf, top, rsp);
            assert_eq!((got.argv, got.envp, got.random), (argv, envp, random));
        }
        Err(err) => {
            use stack::StackError::*;
            let holds = match err {
                TooManyArgs => na > stack::MAX_ARGS,
                TooManyEnvs => ne > stack::MAX_ENVS,
                StringTooLong => a.iter().chain(&e).any(|s| s.len() > stack::MAX_STRING),
                StringHasNul => a.iter().chain(&e).any(|s| s.contains(&0)),
                TooMuchData => strings > stack::MAX_STRINGS_TOTAL,
                BadStackTop => top % 16 != 0 || top > USER_END || top < buf.len() as u64,
                StackTooSmall => too_small,
            };
            assert!(
                holds,
                "{err:?} with {na} args, {ne} envs, {strings} bytes, top {top:#x}, buffer {}",
                buf.len()
            );
        }
    }
}

/// What a run saw: rounds, accepted images, and how often each error
/// variant (by name) was the verdict.
struct Outcome {
    rounds: u64,
    accepted: u64,
    errors: BTreeMap<String, u64>,
}

/// Runs rounds until `budget` is spent (or `max_rounds` is reached).
fn run(seed: u64, budget: Duration, max_rounds: u64) -> Outcome {
    let corpus = corpus();
    let t0 = Instant::now();
    let mut master = Rng(abi::rng::XorShift64Star(seed | 1));
    let (mut rounds, mut accepted) = (0u64, 0u64);
    let mut errors = BTreeMap::new();
    while rounds < max_rounds && t0.elapsed() < budget {
        let s = master.next();
        let r = std::panic::catch_unwind(|| round(s, &corpus));
        match r {
            Ok(Ok(())) => accepted += 1,
            Ok(Err(e)) => {
                let name = format!("{e:?}");
                let name = name.split([' ', '(']).next().unwrap_or("").to_string();
                *errors.entry(name).or_insert(0) += 1;
            }
            Err(e) => {
                eprintln!("loader fuzz: round seed {s:#x} (master seed {seed:#x}) failed");
                std::panic::resume_unwind(e);
            }
        }
        rounds += 1;
    }
    Outcome {
        rounds,
        accepted,
        errors,
    }
}

#[test]
fn fuzz_smoke() {
    let o = run(0x5eed_1234, Duration::from_secs(60), 3000);
    assert_eq!(o.rounds, 3000);
    eprintln!(
        "loader fuzz smoke: {} accepted, verdicts {:?}",
        o.accepted, o.errors
    );
    // The mutations must leave some images valid, or the invariants are
    // never exercised, and must reach most rules, or the fuzzer only ever
    // tests the header checks.
    assert!(o.accepted > 100, "only {} accepted", o.accepted);
    assert!(o.errors.len() >= MIN_VARIANTS, "only {:?}", o.errors);
}

#[test]
#[ignore = "timed: scripts/test.sh runs it (LOADER_FUZZ_SECS)"]
fn fuzz_timed() {
    let secs = std::env::var("LOADER_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed = std::env::var("LOADER_FUZZ_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("loader fuzz: seed {seed:#x} (LOADER_FUZZ_SEED), {secs} s");
    let o = run(seed, Duration::from_secs(secs), u64::MAX);
    eprintln!(
        "loader fuzz: {} rounds, {} accepted, {} error variants seen, no failure",
        o.rounds,
        o.accepted,
        o.errors.len()
    );
    eprintln!("loader fuzz: verdicts {:?}", o.errors);
    assert!(o.rounds > 0);
}
