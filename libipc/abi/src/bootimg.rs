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

crate::shared_enum! {
    /// Why an image was refused.
    pub enum BootImageError {
        /// The image ends before its header or segment table does (or, when
        /// encoding, the output buffer is too small).
        TooShort => "image too short",
        /// The image does not start with [`MAGIC`].
        BadMagic => "bad magic (not a Mica boot image)",
        /// The header declares zero segments.
        NoSegments => "image has no segments",
        /// The header declares more than [`MAX_SEGMENTS`] segments.
        TooManySegments => "image has too many segments",
        /// A reserved field or an undefined flag bit is not zero.
        ReservedNotZero => "reserved field or flag bit not zero",
        /// A segment's file bytes are not inside the image (or overlap the
        /// header and segment table).
        SegmentOutOfFile => "segment file bytes outside the image",
        /// A segment has `file_size > mem_size`.
        FileSizeExceedsMemSize => "segment file size exceeds memory size",
        /// A segment maps zero bytes.
        EmptySegment => "segment maps zero bytes",
        /// A segment's `vaddr` is not page-aligned.
        NotPageAligned => "segment address not page-aligned",
        /// A segment is not entirely inside `[USER_MIN, USER_END)`.
        OutsideUserRange => "segment outside the user address range",
        /// A segment is both writable and executable.
        WritableAndExecutable => "segment both writable and executable",
        /// Two segments share a page.
        Overlap => "segments overlap",
        /// The entry point is not inside an executable segment.
        EntryNotExecutable => "entry point not in an executable segment",
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

/// The simplest image: `code` as one read-execute segment at `vaddr`, entered
/// at its first byte (what tests and benchmarks build child processes from).
/// Returns the image length written to `out`.
///
/// # Errors
/// As [`encode`].
pub fn encode_code(vaddr: u64, code: &[u8], out: &mut [u8]) -> Result<usize, BootImageError> {
    let spec = SegmentSpec {
        vaddr,
        bytes: code,
        mem_size: code.len() as u64,
        flags: SEG_R | SEG_X,
    };
    encode(vaddr, &[spec], out)
}
#[cfg(test)]
mod tests;
