//! Everything that can be wrong with a safetensors file, one variant per cause.
//!
//! Messages name the tensor where there is one; the caller adds the file name.

use lowbit_dtype::Dtype;

/// Why a buffer is not a valid safetensors file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The buffer cannot even hold the 8-byte header length.
    #[error("file is {len} bytes, too short for the 8-byte header length")]
    TooShort {
        /// Buffer length.
        len: u64,
    },
    /// The header length is above the 100 MB cap.
    #[error("header length {header_len} exceeds the {limit}-byte limit")]
    HeaderTooLarge {
        /// Declared header length.
        header_len: u64,
        /// The cap.
        limit: u64,
    },
    /// The header length points past the end of the buffer.
    #[error(
        "header length {header_len} runs past the end of the file ({available} bytes after the length field)"
    )]
    HeaderPastEnd {
        /// Declared header length.
        header_len: u64,
        /// Bytes actually available after the length field.
        available: u64,
    },
    /// The header is not UTF-8.
    #[error("header is not valid UTF-8 (at byte {offset})")]
    HeaderNotUtf8 {
        /// Offset of the first bad byte within the header.
        offset: u64,
    },
    /// The header is not a JSON object.
    #[error("header is not a JSON object: {message}")]
    HeaderNotJson {
        /// The JSON parser's message, with line and column.
        message: String,
    },
    /// Two header entries share a name.
    #[error("tensor `{name}` appears twice in the header")]
    DuplicateTensor {
        /// The repeated name.
        name: String,
    },
    /// A header entry lacks a field or has one of the wrong JSON type.
    #[error("tensor `{name}`: {reason}")]
    BadEntry {
        /// Tensor name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The dtype string is not one lowbit knows.
    #[error("tensor `{name}`: unknown dtype `{dtype}`")]
    UnknownDtype {
        /// Tensor name.
        name: String,
        /// The dtype string as written.
        dtype: String,
    },
    /// The element count or byte size of a shape does not fit in 64 bits.
    #[error("tensor `{name}`: shape {shape:?} overflows a 64-bit element count")]
    ShapeOverflow {
        /// Tensor name.
        name: String,
        /// The shape as written.
        shape: Vec<u64>,
    },
    /// `data_offsets` ends before it begins.
    #[error("tensor `{name}`: data_offsets [{begin}, {end}] end before they begin")]
    ReversedOffsets {
        /// Tensor name.
        name: String,
        /// Start offset.
        begin: u64,
        /// End offset.
        end: u64,
    },
    /// The bytes between the offsets do not match the shape and dtype.
    #[error(
        "tensor `{name}`: shape {shape:?} of {dtype} needs {expected} bytes but data_offsets span {actual}"
    )]
    SizeMismatch {
        /// Tensor name.
        name: String,
        /// Element type.
        dtype: Dtype,
        /// Shape as written.
        shape: Vec<u64>,
        /// Bytes the shape needs.
        expected: u64,
        /// Bytes the offsets give.
        actual: u64,
    },
    /// The tensor data ends past the end of the buffer.
    #[error(
        "tensor `{name}`: data [{begin}, {end}) runs past the end of the data section ({data_len} bytes); the file is truncated or the offsets are wrong"
    )]
    OutOfBounds {
        /// Tensor name.
        name: String,
        /// Start offset within the data section.
        begin: u64,
        /// End offset within the data section.
        end: u64,
        /// Length of the data section.
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
    /// Bytes that belong to no tensor.
    #[error("{len} bytes at data offset {offset} belong to no tensor")]
    Hole {
        /// Start of the unclaimed bytes.
        offset: u64,
        /// How many.
        len: u64,
    },
    /// `__metadata__` is not an object of strings.
    #[error("__metadata__: {reason}")]
    BadMetadata {
        /// What is wrong.
        reason: String,
    },
}
