//! The boot-image format: how init (and every other boot program) reaches the
//! kernel, which has no ELF parser.
//!
//! The host build script (`build.rs`, with std) turns each program's ELF into
//! a boot image with [`encode`]; GRUB loads it as a multiboot2 module; the
//! kernel checks it with [`BootImage::parse`] and maps its segments. One
//! definition on both sides keeps the writer and the reader from drifting.
//!
//! # Layout (all integers little-endian)
//! ```text
//! offset 0   magic     [u8; 8]  = MAGIC ("MICAIMG1")
//! offset 8   entry     u64      user-space entry point
//! offset 16  nsegs     u32      1..=MAX_SEGMENTS
//! offset 20  reserved  u32      = 0
//! offset 24  nsegs segment records, 40 bytes each:
//!     +0   vaddr        u64  page-aligned user address
//!     +8   file_offset  u64  offset of the file bytes from the start of the image
//!     +16  file_size    u64  bytes copied from the image
//!     +24  mem_size     u64  bytes mapped (the tail past file_size is zeroed)
//!     +32  flags        u32  SEG_R | SEG_W | SEG_X
//!     +36  reserved     u32  = 0
//! then the segments' file bytes, wherever the records say.
//! ```
//!
//! # Invariants of a parsed [`BootImage`]
//! An image that [`BootImage::parse`] accepts is safe for the kernel to map
//! without further checks:
//! - there are 1..=[`MAX_SEGMENTS`] segments, every reserved field and flag
//!   bit is zero;
//! - every segment's file bytes lie inside the image, after the record table,
//!   and `file_size <= mem_size`, `mem_size > 0`;
//! - every `vaddr` is page-aligned and `[vaddr, vaddr + mem_size)` lies in
//!   `[USER_MIN, USER_END)` (no overflow);
//! - no segment is both writable and executable (W^X);
//! - the page-rounded ranges of the segments are pairwise disjoint, so each
//!   page belongs to exactly one segment and gets exactly one protection;
//! - `entry` lies inside an executable segment.
//!
//! # Design choices
//! - The format is fixed-size records rather than ELF program headers so the
//!   ring-0 reader is a few dozen lines of bounds checks.
//! - The parser never indexes unchecked: every read goes through
//!   `get(..)`, so a truncated or corrupted module yields an error, never a
//!   panic (a test flips every bit of a valid image to check this).
//! - No allocation: [`BootImage`] holds a fixed array of segments and borrows
//!   the image bytes. The encoder writes into a caller-sized buffer
//!   ([`encoded_len`] gives the size), which a build script gets from a `Vec`.

use crate::layout::{PAGE_SIZE, USER_END, USER_MIN};

/// The first eight bytes of every boot image.
pub const MAGIC: [u8; 8] = *b"MICAIMG1";
/// The most segments an image may have.
pub const MAX_SEGMENTS: usize = 8;
/// The size of the fixed header.
pub const HEADER_BYTES: usize = 24;
/// The size of one segment record.
pub const SEGMENT_RECORD_BYTES: usize = 40;

/// Segment flag: readable.
pub const SEG_R: u32 = 1 << 0;
/// Segment flag: writable.
pub const SEG_W: u32 = 1 << 1;
/// Segment flag: executable.
pub const SEG_X: u32 = 1 << 2;
/// Every defined flag bit; any other bit makes the image invalid.
pub const SEG_ALL: u32 = SEG_R | SEG_W | SEG_X;

/// One loadable segment, as described by its record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// The page-aligned user address of the segment's first byte.
    pub vaddr: u64,
    /// Where the file bytes start, counted from the start of the image.
    pub file_offset: u64,
    /// How many bytes come from the image.
    pub file_size: u64,
    /// How many bytes are mapped; the part past `file_size` is zero-filled.
    pub mem_size: u64,
    /// [`SEG_R`] | [`SEG_W`] | [`SEG_X`].
    pub flags: u32,
}

impl Segment {
    /// One past the segment's last mapped byte (valid once parsed: no overflow).
    pub const fn end(&self) -> u64 {
        self.vaddr + self.mem_size
    }

    /// The segment's mapped range rounded out to whole pages, `[start, end)`.
    pub const fn page_range(&self) -> (u64, u64) {
        let end = (self.vaddr + self.mem_size).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        (self.vaddr, end)
    }

    /// The number of pages the segment occupies.
    pub const fn npages(&self) -> u64 {
        let (start, end) = self.page_range();
        (end - start) / PAGE_SIZE
    }

    /// Whether the segment may be read.
    pub const fn readable(&self) -> bool {
        self.flags & SEG_R != 0
    }

    /// Whether the segment may be written.
    pub const fn writable(&self) -> bool {
        self.flags & SEG_W != 0
    }

    /// Whether the segment may be executed.
    pub const fn executable(&self) -> bool {
        self.flags & SEG_X != 0
    }
}

/// Why an image was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootImageError {
    /// The image ends before its header or segment table does (or, when
    /// encoding, the output buffer is too small).
    TooShort,
    /// The image does not start with [`MAGIC`].
    BadMagic,
    /// The header declares zero segments.
    NoSegments,
    /// The header declares more than [`MAX_SEGMENTS`] segments.
    TooManySegments,
    /// A reserved field or an undefined flag bit is not zero.
    ReservedNotZero,
    /// A segment's file bytes are not inside the image (or overlap the
    /// header and segment table).
    SegmentOutOfFile,
    /// A segment has `file_size > mem_size`.
    FileSizeExceedsMemSize,
    /// A segment maps zero bytes.
    EmptySegment,
    /// A segment's `vaddr` is not page-aligned.
    NotPageAligned,
    /// A segment is not entirely inside `[USER_MIN, USER_END)`.
    OutsideUserRange,
    /// A segment is both writable and executable.
    WritableAndExecutable,
    /// Two segments share a page.
    Overlap,
    /// The entry point is not inside an executable segment.
    EntryNotExecutable,
}

impl BootImageError {
    /// A short human-readable description.
    pub const fn as_str(self) -> &'static str {
        match self {
            BootImageError::TooShort => "image too short",
            BootImageError::BadMagic => "bad magic (not a Mica boot image)",
            BootImageError::NoSegments => "image has no segments",
            BootImageError::TooManySegments => "image has too many segments",
            BootImageError::ReservedNotZero => "reserved field or flag bit not zero",
            BootImageError::SegmentOutOfFile => "segment file bytes outside the image",
            BootImageError::FileSizeExceedsMemSize => "segment file size exceeds memory size",
            BootImageError::EmptySegment => "segment maps zero bytes",
            BootImageError::NotPageAligned => "segment address not page-aligned",
            BootImageError::OutsideUserRange => "segment outside the user address range",
            BootImageError::WritableAndExecutable => "segment both writable and executable",
            BootImageError::Overlap => "segments overlap",
            BootImageError::EntryNotExecutable => "entry point not in an executable segment",
        }
    }
}

impl core::fmt::Display for BootImageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated boot image borrowing its bytes. See the module docs for what
/// "validated" guarantees.
#[derive(Clone, Copy, Debug)]
pub struct BootImage<'a> {
    /// The user-space entry point; inside an executable segment.
    pub entry: u64,
    segments: [Segment; MAX_SEGMENTS],
    nsegs: usize,
    data: &'a [u8],
}

fn read_u32(data: &[u8], off: usize) -> Result<u32, BootImageError> {
    let bytes = data.get(off..off + 4).ok_or(BootImageError::TooShort)?;
    let mut buf = [0u8; 4];
    buf.copy_from_slice(bytes);
    Ok(u32::from_le_bytes(buf))
}

fn read_u64(data: &[u8], off: usize) -> Result<u64, BootImageError> {
    let bytes = data.get(off..off + 8).ok_or(BootImageError::TooShort)?;
    let mut buf = [0u8; 8];
    buf.copy_from_slice(bytes);
    Ok(u64::from_le_bytes(buf))
}

/// The size of the header plus `nsegs` segment records: where file bytes may
/// start.
pub const fn table_len(nsegs: usize) -> usize {
    HEADER_BYTES + nsegs * SEGMENT_RECORD_BYTES
}

impl<'a> BootImage<'a> {
    /// Checks `data` and returns the image it describes.
    ///
    /// # Errors
    /// The first problem found, as a [`BootImageError`].
    pub fn parse(data: &'a [u8]) -> Result<BootImage<'a>, BootImageError> {
        if data.len() < HEADER_BYTES {
            return Err(BootImageError::TooShort);
        }
        if data[..8] != MAGIC {
            return Err(BootImageError::BadMagic);
        }
        let entry = read_u64(data, 8)?;
        let nsegs = read_u32(data, 16)? as usize;
        if read_u32(data, 20)? != 0 {
            return Err(BootImageError::ReservedNotZero);
        }
        if nsegs == 0 {
            return Err(BootImageError::NoSegments);
        }
        if nsegs > MAX_SEGMENTS {
            return Err(BootImageError::TooManySegments);
        }
        let table_end = table_len(nsegs);
        if data.len() < table_end {
            return Err(BootImageError::TooShort);
        }

        let mut segments = [Segment::default(); MAX_SEGMENTS];
        for (i, slot) in segments.iter_mut().take(nsegs).enumerate() {
            let rec = HEADER_BYTES + i * SEGMENT_RECORD_BYTES;
            let seg = Segment {
                vaddr: read_u64(data, rec)?,
                file_offset: read_u64(data, rec + 8)?,
                file_size: read_u64(data, rec + 16)?,
                mem_size: read_u64(data, rec + 24)?,
                flags: read_u32(data, rec + 32)?,
            };
            if read_u32(data, rec + 36)? != 0 || seg.flags & !SEG_ALL != 0 {
                return Err(BootImageError::ReservedNotZero);
            }
            check_segment(&seg, data.len() as u64, table_end as u64)?;
            *slot = seg;
        }

        let segs = &segments[..nsegs];
        for (i, a) in segs.iter().enumerate() {
            let (a_start, a_end) = a.page_range();
            for b in &segs[i + 1..] {
                let (b_start, b_end) = b.page_range();
                if a_start < b_end && b_start < a_end {
                    return Err(BootImageError::Overlap);
                }
            }
        }
        if !segs
            .iter()
            .any(|s| s.executable() && s.vaddr <= entry && entry < s.end())
        {
            return Err(BootImageError::EntryNotExecutable);
        }

        Ok(BootImage {
            entry,
            segments,
            nsegs,
            data,
        })
    }

    /// The image's segments, in table order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments[..self.nsegs]
    }

    /// The file bytes of `seg` (a segment of this image): the first
    /// `file_size` bytes of the mapping; the rest up to `mem_size` is zero.
    /// A segment that does not fit this image yields an empty slice.
    pub fn segment_bytes(&self, seg: &Segment) -> &'a [u8] {
        let data: &'a [u8] = self.data;
        usize::try_from(seg.file_offset)
            .ok()
            .zip(usize::try_from(seg.file_size).ok())
            .and_then(|(off, len)| data.get(off..off.checked_add(len)?))
            .unwrap_or(&[])
    }

    /// The whole image.
    pub fn bytes(&self) -> &'a [u8] {
        self.data
    }
}

/// The per-segment checks of [`BootImage::parse`], also run by [`encode`].
fn check_segment(seg: &Segment, image_len: u64, table_end: u64) -> Result<(), BootImageError> {
    if seg.file_size > 0 {
        let file_end = seg
            .file_offset
            .checked_add(seg.file_size)
            .ok_or(BootImageError::SegmentOutOfFile)?;
        if seg.file_offset < table_end || file_end > image_len {
            return Err(BootImageError::SegmentOutOfFile);
        }
    }
    if seg.file_size > seg.mem_size {
        return Err(BootImageError::FileSizeExceedsMemSize);
    }
    if seg.mem_size == 0 {
        return Err(BootImageError::EmptySegment);
    }
    if !seg.vaddr.is_multiple_of(PAGE_SIZE) {
        return Err(BootImageError::NotPageAligned);
    }
    let end = seg
        .vaddr
        .checked_add(seg.mem_size)
        .ok_or(BootImageError::OutsideUserRange)?;
    if seg.vaddr < USER_MIN || end > USER_END {
        return Err(BootImageError::OutsideUserRange);
    }
    if seg.writable() && seg.executable() {
        return Err(BootImageError::WritableAndExecutable);
    }
    Ok(())
}

/// One segment to encode: its file bytes come from `bytes`.
#[derive(Clone, Copy, Debug)]
pub struct SegmentSpec<'b> {
    /// The page-aligned user address.
    pub vaddr: u64,
    /// The initialised bytes (ELF `p_filesz` worth).
    pub bytes: &'b [u8],
    /// The mapped size (ELF `p_memsz`), at least `bytes.len()`.
    pub mem_size: u64,
    /// [`SEG_R`] | [`SEG_W`] | [`SEG_X`].
    pub flags: u32,
}

/// The alignment [`encode`] gives each segment's file bytes (not required by
/// the reader; it just keeps the data 8-byte aligned).
pub const FILE_ALIGN: usize = 8;

/// The number of bytes [`encode`] needs for `segments`.
pub fn encoded_len(segments: &[SegmentSpec<'_>]) -> usize {
    segments.iter().fold(table_len(segments.len()), |off, s| {
        off.next_multiple_of(FILE_ALIGN) + s.bytes.len()
    })
}

/// Writes a boot image for `entry` and `segments` into `out` and returns its
/// length. The file bytes follow the record table in order, each at an
/// 8-byte-aligned offset. The result is checked with [`BootImage::parse`],
/// so an image that the kernel would refuse is refused here, at build time.
///
/// A build script does:
/// ```
/// # use abi::bootimg::*;
/// # let (entry, text) = (0x40_0000u64, [0xc3u8; 16]);
/// let specs = [SegmentSpec { vaddr: 0x40_0000, bytes: &text, mem_size: 16, flags: SEG_R | SEG_X }];
/// let mut image = vec![0u8; encoded_len(&specs)];
/// let len = encode(entry, &specs, &mut image).expect("invalid boot image");
/// image.truncate(len);
/// ```
///
/// # Errors
/// [`BootImageError::TooShort`] if `out` is smaller than
/// [`encoded_len`]`(segments)`; [`BootImageError::NoSegments`] /
/// [`BootImageError::TooManySegments`] for a bad count; otherwise whatever
/// [`BootImage::parse`] finds wrong with the result.
pub fn encode(
    entry: u64,
    segments: &[SegmentSpec<'_>],
    out: &mut [u8],
) -> Result<usize, BootImageError> {
    if segments.is_empty() {
        return Err(BootImageError::NoSegments);
    }
    if segments.len() > MAX_SEGMENTS {
        return Err(BootImageError::TooManySegments);
    }
    let total = encoded_len(segments);
    let out = out.get_mut(..total).ok_or(BootImageError::TooShort)?;
    out.fill(0);
    out[..8].copy_from_slice(&MAGIC);
    out[8..16].copy_from_slice(&entry.to_le_bytes());
    out[16..20].copy_from_slice(&(segments.len() as u32).to_le_bytes());
    let mut file_off = table_len(segments.len());
    for (i, s) in segments.iter().enumerate() {
        file_off = file_off.next_multiple_of(FILE_ALIGN);
        let rec = HEADER_BYTES + i * SEGMENT_RECORD_BYTES;
        out[rec..rec + 8].copy_from_slice(&s.vaddr.to_le_bytes());
        out[rec + 8..rec + 16].copy_from_slice(&(file_off as u64).to_le_bytes());
        out[rec + 16..rec + 24].copy_from_slice(&(s.bytes.len() as u64).to_le_bytes());
        out[rec + 24..rec + 32].copy_from_slice(&s.mem_size.to_le_bytes());
        out[rec + 32..rec + 36].copy_from_slice(&s.flags.to_le_bytes());
        out[file_off..file_off + s.bytes.len()].copy_from_slice(s.bytes);
        file_off += s.bytes.len();
    }
    BootImage::parse(out)?;
    Ok(total)
}

#[cfg(test)]
mod tests {
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
        use BootImageError::*;
        let all = [
            TooShort,
            BadMagic,
            NoSegments,
            TooManySegments,
            ReservedNotZero,
            SegmentOutOfFile,
            FileSizeExceedsMemSize,
            EmptySegment,
            NotPageAligned,
            OutsideUserRange,
            WritableAndExecutable,
            Overlap,
            EntryNotExecutable,
        ];
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
}
