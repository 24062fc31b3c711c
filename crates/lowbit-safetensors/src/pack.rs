//! The zstd pack container (`formats/zstd.md`): a safetensors file as zstd frames in the zstd
//! project's seekable format. Frame 0 holds the 8-byte length and the JSON header, then one frame
//! per tensor in data order, then a skippable frame holding the seek table (each frame's
//! compressed and decompressed size) and its footer.
//!
//! This module is the format alone, with no I/O and no zstd library: parsing and writing the seek
//! table, reading the content size a zstd frame header declares, and checking a seek table
//! against the safetensors header of frame 0. Every number read from the file is checked against
//! the file's length before it sizes anything.

use crate::{Header, MAX_HEADER_LEN};

/// The first four bytes of a zstd frame (magic number 0xFD2FB528, little-endian).
pub const FRAME_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// The magic number of the skippable frame that holds the seek table.
pub const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
/// The last four bytes of a seekable file.
pub const SEEKABLE_MAGIC: u32 = 0x8F92_EAB1;
/// Bytes of the footer: number of frames (4), descriptor (1), seekable magic (4).
pub const FOOTER_LEN: u64 = 9;
/// The largest frame, compressed or not: its sizes are stored in 32 bits.
pub const MAX_FRAME_BYTES: u64 = u32::MAX as u64;
/// The largest frame 0: the length field and a header of at most [`MAX_HEADER_LEN`] bytes.
pub const MAX_HEADER_FRAME: u64 = 8 + MAX_HEADER_LEN;
/// Descriptor bit 7: every entry carries a 4-byte checksum.
const CHECKSUM_FLAG: u8 = 0x80;
/// Descriptor bits 6–2, which a decoder must find zero.
const RESERVED_BITS: u8 = 0x7C;
/// Skippable magic and frame size.
const SKIPPABLE_HEADER_LEN: u64 = 8;

/// Why a file is not a valid zstd pack, or a pack cannot be written. Messages name the frame and,
/// for data frames, the tensor; the caller adds the file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackError {
    /// Too short for a seek table.
    #[error("{len} bytes, too short for a zstd pack (a seek table alone takes 17)")]
    TooShort {
        /// File length.
        len: u64,
    },
    /// The last four bytes are not the seekable magic number.
    #[error(
        "no zstd seek table at the end (the last 4 bytes are {found:#010x}, not {SEEKABLE_MAGIC:#010x}): the file is truncated or is not a lowbit zstd pack"
    )]
    NoSeekTable {
        /// The last four bytes, little-endian.
        found: u32,
    },
    /// Reserved bits of the seek table descriptor are set.
    #[error("the seek table descriptor {descriptor:#04x} sets reserved bits")]
    ReservedBits {
        /// The descriptor byte.
        descriptor: u8,
    },
    /// The seek table claims more bytes than the file holds.
    #[error(
        "the seek table lists {frames} frames ({table_len} bytes of table), more than the file's {file_len} bytes hold"
    )]
    TableTooLarge {
        /// Number of frames the footer gives.
        frames: u32,
        /// Bytes the table would take.
        table_len: u64,
        /// File length.
        file_len: u64,
    },
    /// The seek table is not in a skippable frame with the seekable format's magic.
    #[error("the seek table does not start with the skippable frame magic (found {found:#010x})")]
    NotSkippable {
        /// The four bytes found where the table should start.
        found: u32,
    },
    /// The skippable frame's size field disagrees with the footer's number of frames.
    #[error("the seek table frame says it holds {declared} bytes, its footer {expected}")]
    TableSize {
        /// The frame size field.
        declared: u32,
        /// What the number of frames gives.
        expected: u64,
    },
    /// The seek table lists no frame: not even the header.
    #[error("the seek table lists no frame")]
    NoFrames,
    /// The frames do not fill the bytes before the seek table exactly.
    #[error(
        "the seek table's compressed sizes add up to {sum} bytes, but {expected} bytes precede the seek table"
    )]
    FramesLength {
        /// Sum of the compressed sizes.
        sum: u64,
        /// Bytes before the seek table.
        expected: u64,
    },
    /// Frame 0 cannot hold a safetensors header.
    #[error(
        "frame 0 (the header) decompresses to {raw} bytes; a safetensors header takes 10 to {limit}"
    )]
    HeaderFrameSize {
        /// Its decompressed size in the seek table.
        raw: u64,
        /// [`MAX_HEADER_FRAME`].
        limit: u64,
    },
    /// Frame 0 holds more or less than the length field and the header.
    #[error(
        "frame 0 holds {frame} bytes, but the safetensors header it holds takes {header} (length field included)"
    )]
    HeaderFrameLength {
        /// Frame 0's decompressed size.
        frame: u64,
        /// 8 + the header length.
        header: u64,
    },
    /// Not one data frame per tensor.
    #[error("the seek table lists {frames} data frames but the header {tensors} tensors")]
    FrameCount {
        /// Data frames (frames after frame 0).
        frames: u64,
        /// Tensors in the header.
        tensors: u64,
    },
    /// A frame's decompressed size is not its tensor's byte size.
    #[error(
        "tensor `{tensor}`: frame {index} decompresses to {frame} bytes but the header gives the tensor {bytes}"
    )]
    FrameSize {
        /// Frame index.
        index: usize,
        /// The tensor it holds.
        tensor: String,
        /// Its decompressed size in the seek table.
        frame: u64,
        /// The tensor's size in the header.
        bytes: u64,
    },
    /// A frame is not a zstd frame, or its header is damaged or disagrees with the seek table.
    #[error("{what}: frame {index} {reason}")]
    Frame {
        /// Frame index.
        index: usize,
        /// `tensor `name`` or `the header`.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor too large for one frame (writing).
    #[error(
        "tensor `{tensor}` is {bytes} bytes; a zstd pack holds each tensor in one frame of at most {MAX_FRAME_BYTES} bytes"
    )]
    TensorTooLarge {
        /// The tensor.
        tensor: String,
        /// Its size.
        bytes: u64,
    },
    /// More frames than a seek table describes (writing).
    #[error("{frames} frames are more than one seek table describes")]
    TooManyFrames {
        /// Frames asked for.
        frames: usize,
    },
}

/// One frame: where it lies in the pack and which bytes of the safetensors file it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Offset of the compressed frame in the pack.
    pub offset: u64,
    /// Compressed size.
    pub compressed: u64,
    /// Offset of its content in the decompressed safetensors file.
    pub raw_offset: u64,
    /// Decompressed size.
    pub raw: u64,
}

/// A parsed seek table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeekTable {
    /// Every frame, in file order.
    pub frames: Vec<Span>,
    /// Whether entries carry checksums (lowbit writes none: each frame has its own).
    pub checksums: bool,
    /// Bytes of the skippable frame holding the table, at the end of the file.
    pub table_len: u64,
}

fn u32_at(b: &[u8], at: u64) -> u32 {
    // Callers check `at + 4 <= b.len()` first.
    usize::try_from(at)
        .ok()
        .and_then(|at| b.get(at..at + 4))
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

impl SeekTable {
    /// Whether `file` is laid out as a zstd pack: a zstd frame at the start and the seekable
    /// magic at the end. [`SeekTable::parse`] says what is wrong with one that only starts well.
    #[must_use]
    pub fn recognise(file: &[u8]) -> (bool, bool) {
        let frame = file.starts_with(&FRAME_MAGIC);
        let footer = file.len() >= 4 && file.ends_with(&SEEKABLE_MAGIC.to_le_bytes());
        (frame, footer)
    }

    /// Parses the seek table at the end of `file` and checks that its frames fill the bytes
    /// before it exactly. Only the table is read; nothing is allocated before the number of
    /// frames has been checked against the file's length.
    ///
    /// # Errors
    /// [`PackError::TooShort`], [`PackError::NoSeekTable`], [`PackError::ReservedBits`],
    /// [`PackError::TableTooLarge`], [`PackError::NotSkippable`], [`PackError::TableSize`],
    /// [`PackError::NoFrames`], [`PackError::FramesLength`].
    pub fn parse(file: &[u8]) -> Result<SeekTable, PackError> {
        SeekTable::parse_tail(file, file.len() as u64)
    }

    /// The length of the seek table whose 9-byte footer is `footer`, for reading it alone
    /// ([`SeekTable::parse_tail`]); the footer is checked there.
    #[must_use]
    pub fn table_len(footer: [u8; 9]) -> u64 {
        let n = u32::from_le_bytes([footer[0], footer[1], footer[2], footer[3]]);
        let entry = if footer[4] & CHECKSUM_FLAG != 0 { 12 } else { 8 };
        SKIPPABLE_HEADER_LEN + u64::from(n) * entry + FOOTER_LEN
    }

    /// [`SeekTable::parse`] from the last `tail.len()` bytes of a file of `file_len` bytes, which
    /// must hold the whole seek table ([`SeekTable::table_len`] says how much that is).
    ///
    /// # Errors
    /// As [`SeekTable::parse`]; [`PackError::TooShort`] also when `tail` holds less than the
    /// table.
    pub fn parse_tail(tail: &[u8], file_len: u64) -> Result<SeekTable, PackError> {
        let len = file_len;
        let held = (tail.len() as u64).min(len);
        let base = len - held;
        // Reads at absolute offsets within the tail; callers check them first.
        let at = |abs: u64| u32_at(tail, abs - base);
        if held < SKIPPABLE_HEADER_LEN + FOOTER_LEN {
            return Err(PackError::TooShort { len: held });
        }
        let magic = at(len - 4);
        if magic != SEEKABLE_MAGIC {
            return Err(PackError::NoSeekTable { found: magic });
        }
        #[expect(clippy::cast_possible_truncation, reason = "held ≥ 17 bytes are in memory")]
        let descriptor = tail[(held - 5) as usize];
        if descriptor & RESERVED_BITS != 0 {
            return Err(PackError::ReservedBits { descriptor });
        }
        let checksums = descriptor & CHECKSUM_FLAG != 0;
        let n = at(len - FOOTER_LEN);
        let entry: u64 = if checksums { 12 } else { 8 };
        // At most 2^32 · 12 + 17: no overflow in 64 bits.
        let table_len = SKIPPABLE_HEADER_LEN + u64::from(n) * entry + FOOTER_LEN;
        if table_len > len {
            return Err(PackError::TableTooLarge { frames: n, table_len, file_len: len });
        }
        if table_len > held {
            return Err(PackError::TooShort { len: held });
        }
        let start = len - table_len;
        let found = at(start);
        if found != SKIPPABLE_MAGIC {
            return Err(PackError::NotSkippable { found });
        }
        let declared = at(start + 4);
        if u64::from(declared) != table_len - SKIPPABLE_HEADER_LEN {
            return Err(PackError::TableSize { declared, expected: table_len - 8 });
        }
        if n == 0 {
            return Err(PackError::NoFrames);
        }
        // Bounded by the bytes held, checked above.
        let mut frames = Vec::with_capacity(n as usize);
        let (mut offset, mut raw_offset) = (0u64, 0u64);
        for i in 0..u64::from(n) {
            let entry_at = start + SKIPPABLE_HEADER_LEN + i * entry;
            let compressed = u64::from(at(entry_at));
            let raw = u64::from(at(entry_at + 4));
            frames.push(Span { offset, compressed, raw_offset, raw });
            // Sums of at most 2^32 values below 2^32: no overflow.
            offset += compressed;
            raw_offset += raw;
        }
        if offset != start {
            return Err(PackError::FramesLength { sum: offset, expected: start });
        }
        Ok(SeekTable { frames, checksums, table_len })
    }

    /// Length of the decompressed safetensors file.
    #[must_use]
    pub fn raw_len(&self) -> u64 {
        self.frames.last().map_or(0, |f| f.raw_offset + f.raw)
    }

    /// Frame 0, whose decompressed size is checked to fit a safetensors header: decompressing it
    /// takes at most [`MAX_HEADER_FRAME`] bytes.
    ///
    /// # Errors
    /// [`PackError::NoFrames`], [`PackError::HeaderFrameSize`].
    pub fn header_frame(&self) -> Result<Span, PackError> {
        let f = *self.frames.first().ok_or(PackError::NoFrames)?;
        if f.raw < 10 || f.raw > MAX_HEADER_FRAME {
            return Err(PackError::HeaderFrameSize { raw: f.raw, limit: MAX_HEADER_FRAME });
        }
        Ok(f)
    }

    /// Checks the seek table against the header frame 0 holds (parsed for a file of
    /// [`SeekTable::raw_len`] bytes): frame 0 is the length field and the header exactly, then
    /// one frame per tensor in data order, each decompressing to the tensor's size; and every
    /// frame of `file` is a zstd frame whose header declares the size the seek table gives.
    ///
    /// # Errors
    /// [`PackError::HeaderFrameLength`], [`PackError::FrameCount`], [`PackError::FrameSize`],
    /// [`PackError::Frame`].
    pub fn check(&self, file: &[u8], header: &Header) -> Result<(), PackError> {
        let first = self.header_frame()?;
        if first.raw != header.data_start {
            return Err(PackError::HeaderFrameLength {
                frame: first.raw,
                header: header.data_start,
            });
        }
        let data = &self.frames[1..];
        if data.len() != header.tensors.len() {
            return Err(PackError::FrameCount {
                frames: data.len() as u64,
                tensors: header.tensors.len() as u64,
            });
        }
        for (i, (f, t)) in data.iter().zip(&header.tensors).enumerate() {
            let bytes = t.data.end - t.data.start;
            if f.raw != bytes {
                let tensor = t.name.clone();
                return Err(PackError::FrameSize { index: i + 1, tensor, frame: f.raw, bytes });
            }
        }
        for (i, f) in self.frames.iter().enumerate() {
            let what = || match i {
                0 => "the header".to_owned(),
                _ => format!("tensor `{}`", header.tensors[i - 1].name),
            };
            let bad = |reason: String| PackError::Frame { index: i, what: what(), reason };
            // Offsets and sizes were checked to lie within the file by `parse`.
            let frame = usize::try_from(f.offset)
                .ok()
                .and_then(|s| file.get(s..s + usize::try_from(f.compressed).ok()?))
                .unwrap_or_default();
            match frame_content_size(frame) {
                Ok(Some(n)) if n == f.raw => {}
                Ok(Some(n)) => {
                    return Err(bad(format!(
                        "declares {n} decompressed bytes in its header, the seek table {}",
                        f.raw
                    )));
                }
                Ok(None) => {
                    return Err(bad("does not declare its decompressed size".to_owned()));
                }
                Err(reason) => return Err(bad(reason.to_owned())),
            }
        }
        Ok(())
    }

    /// The frame holding byte `raw_offset` of the decompressed file (the last non-empty frame
    /// starting at or before it).
    #[must_use]
    pub fn frame_at(&self, raw_offset: u64) -> Option<usize> {
        let i = self.frames.partition_point(|f| f.raw_offset + f.raw <= raw_offset);
        (i < self.frames.len()).then_some(i)
    }

    /// The seek table frame for frames of the given (compressed, decompressed) sizes, without
    /// checksums.
    ///
    /// # Errors
    /// [`PackError::TooManyFrames`] when the table would not fit its 32-bit size fields.
    pub fn encode(frames: &[(u32, u32)]) -> Result<Vec<u8>, PackError> {
        let too_many = PackError::TooManyFrames { frames: frames.len() };
        let n = u32::try_from(frames.len()).map_err(|_| too_many.clone())?;
        let size = u32::try_from(frames.len() as u64 * 8 + FOOTER_LEN).map_err(|_| too_many)?;
        let mut out = Vec::with_capacity(size as usize + 8);
        out.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        for &(compressed, raw) in frames {
            out.extend_from_slice(&compressed.to_le_bytes());
            out.extend_from_slice(&raw.to_le_bytes());
        }
        out.extend_from_slice(&n.to_le_bytes());
        out.push(0);
        out.extend_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
        Ok(out)
    }
}

/// The content size a zstd frame's header declares (zstd's format spec, "Frame_Header"):
/// `Ok(None)` when the header leaves it out.
///
/// # Errors
/// A message when `frame` does not start with the zstd magic, is shorter than its header, or sets
/// the header's reserved bit.
pub fn frame_content_size(frame: &[u8]) -> Result<Option<u64>, &'static str> {
    if !frame.starts_with(&FRAME_MAGIC) {
        return Err("is not a zstd frame (no zstd magic number)");
    }
    let Some(&descriptor) = frame.get(4) else {
        return Err("is too short for a zstd frame header");
    };
    if descriptor & 0x08 != 0 {
        return Err("sets the reserved bit of its zstd frame header");
    }
    let fcs_flag = descriptor >> 6;
    let single_segment = descriptor & 0x20 != 0;
    let dict_len = [0, 1, 2, 4][usize::from(descriptor & 0x03)];
    let fcs_len = match (fcs_flag, single_segment) {
        (0, false) => return Ok(None),
        (0, true) => 1,
        (1, _) => 2,
        (2, _) => 4,
        _ => 8,
    };
    let at = 5 + usize::from(!single_segment) + dict_len;
    let Some(field) = frame.get(at..at + fcs_len) else {
        return Err("is too short for a zstd frame header");
    };
    let mut le = [0u8; 8];
    le[..fcs_len].copy_from_slice(field);
    let value = u64::from_le_bytes(le);
    // A 2-byte field stores the size minus 256.
    Ok(Some(if fcs_len == 2 { value + 256 } else { value }))
}

#[cfg(test)]
#[path = "pack_tests.rs"]
mod tests;
