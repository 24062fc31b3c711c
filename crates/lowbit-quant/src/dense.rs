//! The quantizers of F32, F16 and BF16, the one-element "blocks" of `lowbit-dtype`, so that
//! every storage type goes through the same dispatch.
//!
//! F16 and BF16 round through ggml's own conversions ([`lowbit_dtype::f16`]).

use crate::QuantBlock;
use lowbit_dtype::blocks::{BlockBF16, BlockF16, BlockF32};
use lowbit_dtype::f16::{fp32_to_bf16, fp32_to_fp16};

impl QuantBlock for BlockF32 {
    #[inline(always)]
    fn quantize_ref(x: &[f32], y: &mut [Self]) {
        for (b, v) in y.iter_mut().zip(x) {
            b.0 = v.to_le_bytes();
        }
    }
}

impl QuantBlock for BlockF16 {
    #[inline(always)]
    fn quantize_ref(x: &[f32], y: &mut [Self]) {
        for (b, v) in y.iter_mut().zip(x) {
            b.0 = fp32_to_fp16(*v).to_le_bytes();
        }
    }
}

impl QuantBlock for BlockBF16 {
    #[inline(always)]
    fn quantize_ref(x: &[f32], y: &mut [Self]) {
        for (b, v) in y.iter_mut().zip(x) {
            b.0 = fp32_to_bf16(*v).to_le_bytes();
        }
    }
}
