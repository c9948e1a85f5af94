//! `LoadError`'s wire code: every variant survives `code`/`detail` and back,
//! and the codes are distinct (the loader's `Refused` reply carries them).

use crate::LoadError::{self, *};

/// One of each variant, with details at their fields' edges.
fn all() -> Vec<LoadError> {
    vec![
        Empty,
        Truncated,
        NotElf,
        WrongClass(0xff),
        WrongData(2),
        BadVersion,
        WrongMachine(u16::MAX),
        WrongType(3),
        BadPhentsize(32),
        TooManyPhdrs(0xffff),
        PhdrsOutsideFile,
        NoSegments,
        Interpreter,
        TlsUnsupported,
        ExecutableStack,
        FileSizeExceedsMemSize { index: 0 },
        OffsetOverflow { index: 1 },
        SegmentOutsideFile { index: 2 },
        AddressOverflow { index: 3 },
        BadAlignment { index: 4 },
        Misaligned { index: 5 },
        OutsideUserRange { index: 6 },
        SegmentsUnsorted { index: 7 },
        SegmentsOverlap { index: 8 },
        WriteAndExecute { index: 63 },
        TooManySegments,
        TooMuchMemory,
        EntryNotExecutable,
        BadBase,
        PhdrNotLoaded,
        BadRelro,
        BadDynamic,
        NeedsSharedLibrary,
        UnsupportedRelocationTable(-5),
        UnsupportedRelocationTable(36),
        BadRelaTable,
        TooManyRelocations,
        UnsupportedRelocation(u32::MAX),
        RelocationOutsideWritable(u64::MAX),
        StackOverlap,
    ]
}

#[test]
fn every_error_round_trips_through_its_wire_code() {
    for e in all() {
        assert_eq!(LoadError::from_wire(e.code(), e.detail()), Some(e), "{e:?}");
    }
}

#[test]
fn wire_codes_are_distinct_and_stable() {
    let mut codes: Vec<u64> = all().iter().map(LoadError::code).collect();
    codes.dedup(); // UnsupportedRelocationTable twice, adjacent
    let n = codes.len();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), n, "two variants share a code");
    // A few pinned values: clients (the tests, procmgr) may match on them.
    assert_eq!(Empty.code(), 1);
    assert_eq!(WriteAndExecute { index: 0 }.code(), 25);
    assert_eq!(StackOverlap.code(), 39);
}

#[test]
fn unknown_codes_and_oversized_details_are_none() {
    assert_eq!(LoadError::from_wire(0, 0), None);
    assert_eq!(LoadError::from_wire(40, 0), None);
    assert_eq!(LoadError::from_wire(u64::MAX, 0), None);
    // WrongClass holds a u8.
    assert_eq!(LoadError::from_wire(WrongClass(0).code(), 256), None);
}
