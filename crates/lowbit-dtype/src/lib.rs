//! Element types found in checkpoint files and their decoding to `f32`.
//!
//! Three families live here.
//! [`Dtype`] is a dense element type as safetensors names it (`BF16`, `F8_E4M3`, …), decoded by
//! [`decode_to_f32`].
//! [`GgmlType`] is a ggml tensor type, dense or block-quantized, with the block table that every
//! reader, writer and kernel of lowbit takes its sizes from.
//! [`blocks`] holds ggml's packed block structs (`BlockQ4_0`, `BlockQ4K`, …), byte for byte, and
//! their dequantizers, reached at run time through [`dequantize`]; the quantizers that fill these
//! structs live in `lowbit-quant`, so that a reader needs only this crate.
//!
//! [`f16`] is ggml's own half and bfloat16 conversion, the only one lowbit's production code
//! uses, and [`fp8`] decodes the 8-bit float formats.
//!
//! This crate does no I/O and allocates nothing on its decoding paths.

pub mod blocks;
mod decode;
mod dtype;
pub mod f16;
pub mod fp8;
mod ggml;

pub use blocks::{BlockError, dequantize, supports_dequantize};
pub use decode::{DecodeError, decode_to_f32};
pub use dtype::Dtype;
pub use ggml::GgmlType;
