//! A validating, borrowing reader for GGUF v2 and v3 files.
//!
//! [`Gguf::parse`] reads the header (magic, version, counts, metadata, tensor infos) from a byte
//! buffer, usually a memory map, and checks every number in it before use: counts against the
//! bytes left, string lengths against the end of the file, tensor sizes from the ggml block table
//! in [`lowbit_dtype::GgmlType`], offsets against the data section and each other.
//!
//! We do not use `gguf-rs` for reading: it derives block sizes from the type id (so BF16 comes out
//! 256 times too small), its memory-mapped reader copies the whole file into a `Vec`, and it
//! accepts any element or tensor count. ARCHITECTURE.md has the details.

mod error;
mod layout;
mod reader;
mod value;

pub use error::Error;
pub use layout::{Layout, LayoutError};
pub use reader::{Gguf, MAX_KVS, MAX_TENSORS, TensorInfo};
pub use value::{Array, Value, type_id};

/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Largest dimension count ggml supports (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;

#[cfg(test)]
mod tests;
