//! Host tests of [`super`].

use super::*;

const TEXT_VA: u64 = 0x40_0000;
const DATA_VA: u64 = 0x60_0000;

fn text() -> Vec<u8> {
    (0..100u8).collect()
}

fn data() -> Vec<u8> {
    vec![0xaa; 30]
}

fn valid_image() -> Vec<u8> {
    let (t, d) = (text(), data());
    let specs = [
        SegmentSpec {
            vaddr: TEXT_VA,
            bytes: &t,
            mem_size: 100,
            flags: SEG_R | SEG_X,
        },
        SegmentSpec {
            vaddr: DATA_VA,
            bytes: &d,
            mem_size: 0x3000,
            flags: SEG_R | SEG_W,
        },
    ];
    let mut out = vec![0u8; encoded_len(&specs)];
    let len = encode(TEXT_VA + 4, &specs, &mut out).unwrap();
    assert_eq!(len, out.len());
    out
}

fn put_u32(img: &mut [u8], off: usize, v: u32) {
    img[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(img: &mut [u8], off: usize, v: u64) {
    img[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// Offset of field `field_off` in segment record `i`.
fn rec(i: usize, field_off: usize) -> usize {
    HEADER_BYTES + i * SEGMENT_RECORD_BYTES + field_off
}

fn parse_err(img: &[u8]) -> BootImageError {
    BootImage::parse(img).unwrap_err()
}

#[test]
fn an_encoded_image_parses_back_to_the_same_segments() {
    let img = valid_image();
    let parsed = BootImage::parse(&img).unwrap();
    assert_eq!(parsed.entry, TEXT_VA + 4);
    let segs = parsed.segments();
    assert_eq!(segs.len(), 2);
    assert_eq!(segs[0].vaddr, TEXT_VA);
    assert_eq!(segs[0].mem_size, 100);
    assert_eq!(segs[0].flags, SEG_R | SEG_X);
    assert_eq!(parsed.segment_bytes(&segs[0]), &text()[..]);
    assert_eq!(segs[1].vaddr, DATA_VA);
    assert_eq!(segs[1].mem_size, 0x3000);
    assert_eq!(segs[1].npages(), 3);
    assert!(segs[1].writable() && !segs[1].executable());
    assert_eq!(parsed.segment_bytes(&segs[1]), &data()[..]);
    assert_eq!(segs[0].file_offset as usize % FILE_ALIGN, 0);
    assert_eq!(segs[1].file_offset as usize % FILE_ALIGN, 0);
}

#[test]
fn header_layout_matches_the_documented_offsets() {
    let img = valid_image();
    assert_eq!(&img[..8], b"MICAIMG1");
    assert_eq!(
        u64::from_le_bytes(img[8..16].try_into().unwrap()),
        TEXT_VA + 4
    );
    assert_eq!(u32::from_le_bytes(img[16..20].try_into().unwrap()), 2);
    assert_eq!(
        u64::from_le_bytes(img[rec(1, 0)..rec(1, 8)].try_into().unwrap()),
        DATA_VA
    );
    assert_eq!(table_len(2), 104);
}

#[test]
fn segments_without_file_bytes_are_allowed() {
    let t = text();
    let specs = [
        SegmentSpec {
            vaddr: TEXT_VA,
            bytes: &t,
            mem_size: 100,
            flags: SEG_R | SEG_X,
        },
        SegmentSpec {
            vaddr: DATA_VA,
            bytes: &[],
            mem_size: 0x1000,
            flags: SEG_R | SEG_W,
        },
    ];
    let mut out = vec![0u8; encoded_len(&specs)];
    encode(TEXT_VA, &specs, &mut out).unwrap();
    let img = BootImage::parse(&out).unwrap();
    assert_eq!(img.segment_bytes(&img.segments()[1]), &[] as &[u8]);
}

#[test]
fn encode_refuses_a_small_buffer_and_invalid_images() {
    let t = text();
    let specs = [SegmentSpec {
        vaddr: TEXT_VA,
        bytes: &t,
        mem_size: 100,
        flags: SEG_R | SEG_X,
    }];
    let mut small = vec![0u8; encoded_len(&specs) - 1];
    assert_eq!(
        encode(TEXT_VA, &specs, &mut small),
        Err(BootImageError::TooShort)
    );
    let mut out = vec![0u8; encoded_len(&specs)];
    assert_eq!(
        encode(0, &specs, &mut out),
        Err(BootImageError::EntryNotExecutable)
    );
    assert_eq!(encode(0, &[], &mut out), Err(BootImageError::NoSegments));
    let many = [specs[0]; MAX_SEGMENTS + 1];
    assert_eq!(
        encode(0, &many, &mut out),
        Err(BootImageError::TooManySegments)
    );
}

#[test]
fn a_truncated_header_is_too_short() {
    let img = valid_image();
    assert_eq!(
        parse_err(&img[..HEADER_BYTES - 1]),
        BootImageError::TooShort
    );
    assert_eq!(parse_err(&[]), BootImageError::TooShort);
}

#[test]
fn a_truncated_segment_table_is_too_short() {
    let img = valid_image();
    assert_eq!(
        parse_err(&img[..table_len(2) - 1]),
        BootImageError::TooShort
    );
}

#[test]
fn wrong_magic_is_refused() {
    let mut img = valid_image();
    img[7] = b'2';
    assert_eq!(parse_err(&img), BootImageError::BadMagic);
}

#[test]
fn zero_segments_are_refused() {
    let mut img = valid_image();
    put_u32(&mut img, 16, 0);
    assert_eq!(parse_err(&img), BootImageError::NoSegments);
}

#[test]
fn more_than_max_segments_are_refused() {
    let mut img = valid_image();
    put_u32(&mut img, 16, MAX_SEGMENTS as u32 + 1);
    assert_eq!(parse_err(&img), BootImageError::TooManySegments);
    put_u32(&mut img, 16, u32::MAX);
    assert_eq!(parse_err(&img), BootImageError::TooManySegments);
}

#[test]
fn nonzero_reserved_fields_and_unknown_flags_are_refused() {
    let mut img = valid_image();
    put_u32(&mut img, 20, 1);
    assert_eq!(parse_err(&img), BootImageError::ReservedNotZero);

    let mut img = valid_image();
    put_u32(&mut img, rec(1, 36), 1);
    assert_eq!(parse_err(&img), BootImageError::ReservedNotZero);

    let mut img = valid_image();
    put_u32(&mut img, rec(0, 32), SEG_R | SEG_X | 8);
    assert_eq!(parse_err(&img), BootImageError::ReservedNotZero);
}

#[test]
fn file_bytes_past_the_end_or_inside_the_table_are_refused() {
    let mut img = valid_image();
    let len = img.len() as u64;
    put_u64(&mut img, rec(0, 8), len - 10);
    assert_eq!(parse_err(&img), BootImageError::SegmentOutOfFile);

    let mut img = valid_image();
    put_u64(&mut img, rec(0, 8), u64::MAX - 5);
    assert_eq!(parse_err(&img), BootImageError::SegmentOutOfFile);

    let mut img = valid_image();
    put_u64(&mut img, rec(0, 8), 0);
    assert_eq!(parse_err(&img), BootImageError::SegmentOutOfFile);
}

#[test]
fn file_size_above_mem_size_is_refused() {
    let mut img = valid_image();
    put_u64(&mut img, rec(0, 24), 99);
    assert_eq!(parse_err(&img), BootImageError::FileSizeExceedsMemSize);
}

#[test]
fn an_empty_segment_is_refused() {
    let mut img = valid_image();
    put_u64(&mut img, rec(1, 16), 0);
    put_u64(&mut img, rec(1, 24), 0);
    assert_eq!(parse_err(&img), BootImageError::EmptySegment);
}

#[test]
fn an_unaligned_vaddr_is_refused() {
    let mut img = valid_image();
    put_u64(&mut img, rec(1, 0), DATA_VA + 8);
    assert_eq!(parse_err(&img), BootImageError::NotPageAligned);
}

#[test]
fn segments_outside_the_user_range_are_refused() {
    for (va, mem) in [
        (0, 0x1000),
        (USER_END, 0x1000),
        (USER_END - 0x1000, 0x1001),
        (0xffff_ffff_8000_0000, 0x1000),
        (0xffff_ffff_ffff_f000, 0x2000),
    ] {
        let mut img = valid_image();
        put_u64(&mut img, rec(1, 0), va);
        put_u64(&mut img, rec(1, 24), mem);
        assert_eq!(
            parse_err(&img),
            BootImageError::OutsideUserRange,
            "va {va:#x}"
        );
    }
    // The very last user page is fine.
    let mut img = valid_image();
    put_u64(&mut img, rec(1, 0), USER_END - 0x1000);
    put_u64(&mut img, rec(1, 24), 0x1000);
    assert!(BootImage::parse(&img).is_ok());
}

#[test]
fn writable_and_executable_segments_are_refused() {
    let mut img = valid_image();
    put_u32(&mut img, rec(1, 32), SEG_R | SEG_W | SEG_X);
    assert_eq!(parse_err(&img), BootImageError::WritableAndExecutable);
}

#[test]
fn segments_sharing_a_page_are_refused() {
    // The text segment covers only 100 bytes, but its page is whole.
    let mut img = valid_image();
    put_u64(&mut img, rec(1, 0), TEXT_VA);
    assert_eq!(parse_err(&img), BootImageError::Overlap);
    // A data segment starting inside the text page (aligned up) is fine.
    let mut img = valid_image();
    put_u64(&mut img, rec(1, 0), TEXT_VA + 0x1000);
    assert!(BootImage::parse(&img).is_ok());
    // Data starting below text and running into it overlaps.
    let mut img = valid_image();
    put_u64(&mut img, rec(1, 0), TEXT_VA - 0x2000);
    assert_eq!(parse_err(&img), BootImageError::Overlap);
}

#[test]
fn an_entry_outside_executable_segments_is_refused() {
    let mut img = valid_image();
    put_u64(&mut img, 8, DATA_VA);
    assert_eq!(parse_err(&img), BootImageError::EntryNotExecutable);
    // One past the text segment's mapped bytes is outside it.
    put_u64(&mut img, 8, TEXT_VA + 100);
    assert_eq!(parse_err(&img), BootImageError::EntryNotExecutable);
    put_u64(&mut img, 8, TEXT_VA + 99);
    assert!(BootImage::parse(&img).is_ok());
}

#[test]
fn every_error_has_a_distinct_description() {
    let all = BootImageError::ALL;
    for (i, a) in all.iter().enumerate() {
        assert_eq!(a.to_string(), a.as_str());
        for b in &all[i + 1..] {
            assert_ne!(a.as_str(), b.as_str());
        }
    }
}

#[test]
fn parse_never_panics_on_truncated_or_corrupted_images() {
    let img = valid_image();
    for len in 0..img.len() {
        // Every strict prefix cuts off file bytes the table points at.
        assert!(BootImage::parse(&img[..len]).is_err(), "prefix {len}");
    }
    let mut copy = img.clone();
    for i in 0..img.len() {
        for mask in (0..8).map(|b| 1u8 << b).chain([0xff]) {
            copy[i] ^= mask;
            if let Ok(parsed) = BootImage::parse(&copy) {
                // Whatever is accepted still satisfies the invariants.
                for s in parsed.segments() {
                    assert_eq!(parsed.segment_bytes(s).len() as u64, s.file_size);
                    assert!(!(s.writable() && s.executable()));
                    assert!(s.vaddr >= USER_MIN && s.end() <= USER_END);
                }
            }
            copy[i] ^= mask;
        }
    }
}

#[test]
fn segment_bytes_of_a_foreign_segment_is_empty_not_a_panic() {
    let img = valid_image();
    let parsed = BootImage::parse(&img).unwrap();
    let bogus = Segment {
        file_offset: u64::MAX,
        file_size: 10,
        ..Segment::default()
    };
    assert!(parsed.segment_bytes(&bogus).is_empty());
}

#[test]
fn encode_code_makes_one_executable_segment_entered_at_its_start() {
    let code = [0x90u8, 0x90, 0xc3];
    let mut out = [0u8; 256];
    let n = encode_code(0x40_0000, &code, &mut out).unwrap();
    let img = BootImage::parse(&out[..n]).unwrap();
    assert_eq!(img.entry, 0x40_0000);
    assert_eq!(img.segments().len(), 1);
    let seg = &img.segments()[0];
    assert_eq!(
        (seg.vaddr, seg.mem_size, seg.flags),
        (0x40_0000, 3, SEG_R | SEG_X)
    );
    assert_eq!(img.segment_bytes(seg), &code);
}
