//! Element types found in checkpoint files and their decoding to `f32`.
//!
//! Two families of types live here, with what it takes to decode them.
//! [`Dtype`] is a dense element type as safetensors names it (`BF16`, `F8_E4M3`, …), decoded by
//! [`decode_to_f32`].
//! [`GgmlType`] is a ggml tensor type, dense or block-quantized, with the block table that every
//! reader, writer and kernel of lowbit takes its sizes from. The module [`blocks`] lays out each
//! of ggml's packed blocks byte for byte (`BlockQ4_0`, `BlockQ4K`, …) with its dequantizer, and
//! [`dequantize`] picks one for a runtime type. The quantizers that fill these structs live in
//! `lowbit-quant`, so a reader of quantized files needs only this crate.
//!
//! The module [`f16`](mod@f16) is ggml's own half and bfloat16 conversion, the only one in
//! lowbit's production code; [`fp8`] decodes the 8-bit float formats.
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
