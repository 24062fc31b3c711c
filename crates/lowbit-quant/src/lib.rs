//! Quantizers and dequantizers for ggml block types, bit-exact with ggml's reference code.
//!
//! Every type has a block struct (`BlockQ4_0`, …) whose size is asserted at compile time, a
//! reference quantizer that follows ggml's `quantize_row_*_ref` operation by operation (same
//! order, same roundings, no fused multiply-add, ggml's own f16 conversion), and a dequantizer.
//! Optimised quantizers, where they exist, are tested against the reference on random and
//! adversarial inputs; the reference is tested against ggml's C code and the `gguf` Python
//! package by the interop tests.
//!
//! **Architecture Invariant:** pure functions over slices. No I/O, no threads, no allocation
//! beyond small stack buffers; callers parallelise over rows.

mod block;
mod cconv;

use block::QuantBlock;
mod dense;
#[cfg(test)]
mod exactness;
pub mod f16;
mod groups;
mod kquants;
mod lanes;
mod legacy;
mod simd;
mod ternary;

pub use block::{Error, dequantize, quantize, quantize_baseline, quantize_ref, supports_quantize};
pub use dense::{BlockBF16, BlockF16, BlockF32};
pub use kquants::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K};
pub use legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};
pub use ternary::{BlockTQ1_0, BlockTQ2_0};
