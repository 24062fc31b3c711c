//! Everything that can be wrong with a GGUF file, one variant per cause.
//!
//! Messages name the metadata key or tensor where there is one; the caller adds the file name.

/// Why a buffer is not a GGUF file lowbit can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The first four bytes are not `GGUF`.
    #[error("bad magic {found:02x?}: not a GGUF file (expected \"GGUF\")")]
    BadMagic {
        /// The bytes found (fewer than four when the file is shorter).
        found: Vec<u8>,
    },
    /// A big-endian GGUF (its version field reads byte-swapped).
    #[error("big-endian GGUF files are not supported")]
    BigEndian,
    /// A version other than 2 or 3.
    #[error("unsupported GGUF version {version} (lowbit reads versions 2 and 3)")]
    UnsupportedVersion {
        /// The version field.
        version: u32,
    },
    /// A fixed-size field runs past the end of the file.
    #[error(
        "{what}: needs {needed} bytes at offset {offset} but the file is {file_len} bytes; it is truncated"
    )]
    Truncated {
        /// What was being read.
        what: String,
        /// Where.
        offset: u64,
        /// How many bytes it needed.
        needed: u64,
        /// File length.
        file_len: u64,
    },
    /// A string length runs past the end of the file.
    #[error(
        "{what}: string length {len} at offset {offset} runs past the end of the file ({file_len} bytes)"
    )]
    StringPastEnd {
        /// What was being read.
        what: String,
        /// Offset of the length field.
        offset: u64,
        /// Declared length.
        len: u64,
        /// File length.
        file_len: u64,
    },
    /// A string is not UTF-8.
    #[error("{what}: string is not valid UTF-8")]
    InvalidUtf8 {
        /// What was being read.
        what: String,
    },
    /// More tensors than the file could describe, or than the hard cap.
    #[error(
        "tensor count {count} is impossible: at most {max} fit in the file's remaining {remaining} bytes (cap {cap})"
    )]
    TooManyTensors {
        /// Declared count.
        count: u64,
        /// What the remaining bytes allow.
        max: u64,
        /// Remaining bytes after the header.
        remaining: u64,
        /// Hard cap.
        cap: u64,
    },
    /// More metadata entries than the file could describe, or than the hard cap.
    #[error(
        "metadata count {count} is impossible: at most {max} fit in the file's remaining {remaining} bytes (cap {cap})"
    )]
    TooManyKvs {
        /// Declared count.
        count: u64,
        /// What the remaining bytes allow.
        max: u64,
        /// Remaining bytes after the header.
        remaining: u64,
        /// Hard cap.
        cap: u64,
    },
    /// An array declares more elements than the rest of the file could hold.
    #[error(
        "metadata `{key}`: array of {count} elements cannot fit in the remaining {remaining} bytes"
    )]
    ArrayTooLong {
        /// Key.
        key: String,
        /// Declared element count.
        count: u64,
        /// Remaining bytes.
        remaining: u64,
    },
    /// A metadata value type id outside the GGUF spec, or a nested array.
    #[error("metadata `{key}`: {reason}")]
    BadValueType {
        /// Key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Two metadata entries share a key.
    #[error("metadata key `{key}` appears twice")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// `general.alignment` is not a positive power of two held in a `u32`.
    #[error("general.alignment = {value}: must be a power of two held as a u32")]
    BadAlignment {
        /// The value, printed.
        value: String,
    },
    /// Two tensors share a name.
    #[error("tensor `{name}` appears twice")]
    DuplicateTensor {
        /// The name.
        name: String,
    },
    /// More dimensions than ggml supports.
    #[error("tensor `{name}`: {n_dims} dimensions (ggml supports 1 to {max})")]
    BadDimCount {
        /// Tensor name.
        name: String,
        /// Declared dimensions.
        n_dims: u32,
        /// Maximum.
        max: usize,
    },
    /// A type id ggml does not know.
    #[error("tensor `{name}`: unknown ggml type id {id}")]
    UnknownType {
        /// Tensor name.
        name: String,
        /// The id.
        id: u32,
    },
    /// The element count or byte size overflows.
    #[error("tensor `{name}`: dimensions {dims:?} overflow a 63-bit size")]
    ShapeOverflow {
        /// Tensor name.
        name: String,
        /// Dimensions in ggml order.
        dims: Vec<u64>,
    },
    /// The innermost dimension is not a whole number of blocks.
    #[error("tensor `{name}`: row length {ne0} is not a multiple of the {ty} block size {block}")]
    NotBlockMultiple {
        /// Tensor name.
        name: String,
        /// Innermost dimension.
        ne0: u64,
        /// Type name.
        ty: &'static str,
        /// Block size.
        block: usize,
    },
    /// A data offset that is not a multiple of the alignment.
    #[error("tensor `{name}`: data offset {offset} is not a multiple of the alignment {alignment}")]
    Misaligned {
        /// Tensor name.
        name: String,
        /// Offset relative to the data section.
        offset: u64,
        /// Alignment.
        alignment: u64,
    },
    /// Tensor data past the end of the file.
    #[error(
        "tensor `{name}`: data [{begin}, {end}) runs past the end of the data section ({data_len} bytes); the file is truncated or the offset is wrong"
    )]
    OutOfBounds {
        /// Tensor name.
        name: String,
        /// Start, relative to the data section.
        begin: u64,
        /// End, relative to the data section.
        end: u64,
        /// Data section length.
        data_len: u64,
    },
    /// Two tensors share bytes.
    #[error(
        "tensor `{name}`: data [{begin}, {end}) overlaps tensor `{other}`, which ends at {other_end}"
    )]
    Overlap {
        /// The later tensor.
        name: String,
        /// Its start.
        begin: u64,
        /// Its end.
        end: u64,
        /// The earlier tensor.
        other: String,
        /// Where the earlier one ends.
        other_end: u64,
    },
}
