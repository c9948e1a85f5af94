//! The initial stack, read back the way a C runtime's `_start` would.

use abi::layout::USER_END;

use super::PIE_BASE;
use crate::stack::{self, at, StackError};
use crate::{plan, testelf, Limits};

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
