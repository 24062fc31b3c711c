//! Element types found in checkpoint files, their decoding to `f32`, and the encoding of `f32`
//! to the 8-bit float formats.
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
//! lowbit's production code; [`fp8`] decodes the 8-bit float formats and encodes to them
//! ([`fp8::f32_to_e4m3`], [`fp8::f32_to_e5m2`]: round to nearest even, saturating), the one
//! encoder the FP8 quantizers of `lowbit-quant` and the W8A8 activation quantizer of the GEMM
//! reference (`lowbit_layout::gemm::fp8_token`) share.
//!
//! This crate does no I/O and allocates nothing on its decoding and encoding paths.

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
