//! Element types found in checkpoint files and their decoding to `f32`.
//!
//! Two families live here.
//! [`Dtype`] is a dense element type as safetensors names it (`BF16`, `F8_E4M3`, …).
//! [`GgmlType`] is a ggml tensor type, dense or block-quantized, with the block table that every
//! reader, writer and kernel of lowbit takes its sizes from.
//!
//! This crate does no I/O and allocates nothing on its decoding paths.

mod decode;
mod dtype;
pub mod fp8;
mod ggml;

pub use decode::{DecodeError, decode_to_f32};
pub use dtype::Dtype;
pub use ggml::GgmlType;
