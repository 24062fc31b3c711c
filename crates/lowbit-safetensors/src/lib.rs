//! A validating, borrowing reader for safetensors files.
//!
//! [`Safetensors::parse`] reads the 8-byte header length and the JSON header, checks every number
//! in it against the buffer, and hands out tensor bytes as slices of the buffer it borrows.
//! The buffer is usually a memory map, so parsing touches only the header pages.
//!
//! We parse the header ourselves instead of through the `safetensors` crate because its errors do
//! not say which tensor is wrong (an unknown dtype is a bare serde message, a size mismatch is
//! `TensorInvalidInfo`), and users of a 780-tensor checkpoint need the name.
//! The rules are the crate's: a header of at most 100 MB, checked arithmetic, and tensors that
//! tile the data section exactly, with no overlap, hole or trailing byte.
//! The `safetensors` crate is still used to write fixtures, and the tests check that both readers
//! accept the same files.

mod error;
mod header;
mod layout;
pub mod pack;

pub use error::Error;
pub use header::{Header, MAX_HEADER_LEN, Safetensors, TensorEntry};
pub use layout::{Layout, LayoutError};
pub use pack::{PackError, SeekTable, Span};
