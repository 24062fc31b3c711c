//! Quantizers for ggml block types, bit-exact with ggml's reference code.
//!
//! The block structs themselves (`BlockQ4_0`, `BlockQ4K`, …), their compile-time size checks,
//! their dequantizers and ggml's f16 conversion live in `lowbit-dtype`
//! ([`lowbit_dtype::blocks`], [`lowbit_dtype::dequantize`], [`lowbit_dtype::f16`]), so that
//! readers of quantized files need no quantizer. This crate adds the two quantizers of every
//! type it writes, as the trait `QuantBlock` on those structs: a reference one that follows
//! ggml's `quantize_row_*_ref` operation by operation (same order, same roundings, no fused
//! multiply-add, ggml's own f16 conversion), and a fast one that must write the same bytes.
//! [`quantize`] runs the fast one, [`quantize_ref`] the reference.
//!
//! The reference quantizers are in `legacy`, `ternary` and `kquants` (with `kquants::search`);
//! the fast ones run blocks or sub-blocks side by side in SIMD lanes (`lanes`, `groups`,
//! `legacy::fast`, `kquants::lockstep`), are compiled a second time for AVX2 and picked at run
//! time (`simd`), and reproduce C's float-to-integer conversions on x86-64 (`cconv`). The fast
//! quantizers are tested against the reference on random and adversarial inputs; the reference
//! is tested against ggml's C code and the `gguf` Python package by the interop tests.
//!
//! **Architecture Invariant:** pure functions over slices. No I/O, no threads, no allocation
//! beyond small stack buffers; callers parallelise over rows.

mod block;
mod cconv;
mod dense;
#[cfg(test)]
mod exactness;
mod groups;
mod kquants;
mod lanes;
mod legacy;
pub mod packed;
mod simd;
mod ternary;

pub use block::{Error, quantize, quantize_ref, supports_quantize};

use block::QuantBlock;
#[cfg(test)]
use block::quantize_baseline;
