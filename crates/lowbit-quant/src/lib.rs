//! Quantizers for ggml block types, bit-exact with ggml's reference code.
//!
//! The block structs themselves (`BlockQ4_0`, `BlockQ4K`, …), their compile-time size checks,
//! their dequantizers and ggml's f16 conversion live in `lowbit-dtype`
//! ([`lowbit_dtype::blocks`], [`lowbit_dtype::dequantize`], [`lowbit_dtype::f16`]), so that
//! readers of quantized files need no quantizer. This crate adds, for every type it can write,
//! a reference quantizer that follows ggml's `quantize_row_*_ref` operation by operation (same
//! order, same roundings, no fused multiply-add, ggml's own f16 conversion) and a fast quantizer
//! (lockstep SIMD lanes, compiled twice and picked at run time for AVX2) that must write the
//! same bytes. The fast ones are tested against the reference on random and adversarial
//! inputs; the reference is tested against ggml's C code and the `gguf` Python package by the
//! interop tests.
//!
//! **Architecture Invariant:** pure functions over slices. No I/O, no threads, no allocation
//! beyond small stack buffers; callers parallelise over rows.

mod block;
mod cconv;

use block::QuantBlock;
mod dense;
#[cfg(test)]
mod exactness;
mod groups;
mod kquants;
mod lanes;
mod legacy;
mod simd;
mod ternary;

#[cfg(test)]
use block::quantize_baseline;
pub use block::{Error, quantize, quantize_ref, supports_quantize};
