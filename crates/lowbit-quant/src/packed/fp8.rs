//! FP8 quantizers: plain codes, and the scaled variants of ComfyUI (per tensor, BF16
//! reciprocal) and BFL (`fp8r`, per row).
//!
//! The element encoder is `lowbit_dtype::fp8`'s (round to nearest even with explicit saturation
//! at the format's largest finite value, bit-exact with `ml_dtypes` on every finite input);
//! it is branch-free and inlined, so the loops over slices here vectorise.

use crate::simd::Kernel;
use lowbit_dtype::f16::{bf16_to_fp32, fp32_to_bf16};
use lowbit_dtype::fp8::{f32_to_e4m3, f32_to_e5m2};
use lowbit_layout::Fp8Format;

/// Encodes one value (NaN stays NaN).
#[must_use]
pub fn encode(x: f32, format: Fp8Format) -> u8 {
    match format {
        Fp8Format::E4M3 => f32_to_e4m3(x),
        Fp8Format::E5M2 => f32_to_e5m2(x),
    }
}

/// Applies `f` element-wise from `x` into `out` (the shorter length wins).
#[inline(always)]
fn each(x: &[f32], out: &mut [u8], f: impl Fn(f32) -> u8) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = f(v);
    }
}

/// Encodes `x` into `out` without a scale.
pub fn plain(x: &[f32], format: Fp8Format, out: &mut [u8]) {
    struct K<'a>(&'a [f32], Fp8Format, &'a mut [u8]);
    impl Kernel for K<'_> {
        #[inline(always)]
        fn run(self) {
            match self.1 {
                Fp8Format::E4M3 => each(self.0, self.2, f32_to_e4m3),
                Fp8Format::E5M2 => each(self.0, self.2, f32_to_e5m2),
            }
        }
    }
    crate::simd::run(K(x, format, out));
}

/// max |x| (NaN-free input).
#[must_use]
pub fn amax(x: &[f32]) -> f32 {
    super::absmax(x)
}

/// ComfyUI's per-tensor scale for a BF16 tensor whose max |W| is `amax`: comfy-kitchen computes
/// `amax / finfo.max` on the BF16 tensor, so the quotient is rounded to BF16 (then stored as
/// F32). An all-zero tensor (where comfy-kitchen would divide by zero) gets scale 1.
#[must_use]
pub fn comfy_scale(amax: f32, format: Fp8Format) -> f32 {
    if amax == 0.0 {
        return 1.0;
    }
    bf16_to_fp32(fp32_to_bf16(amax / format.max()))
}

/// ComfyUI's quantization of BF16 values `x` with per-tensor `scale`: the F32 reciprocal is
/// rounded to BF16, each product `x · r` is rounded to BF16, clamped and encoded.
pub fn comfy(x: &[f32], scale: f32, format: Fp8Format, out: &mut [u8]) {
    let r = bf16_to_fp32(fp32_to_bf16(1.0 / scale));
    // The product of two BF16 values is exact in F32; one rounding to BF16 follows, as torch's
    // BF16 multiply does. Rounding to nearest even on the bits (inputs are finite).
    struct K<'a>(&'a [f32], f32, Fp8Format, &'a mut [u8]);
    impl Kernel for K<'_> {
        #[inline(always)]
        fn run(self) {
            let r = self.1;
            let round = |v: f32| {
                let u = v.to_bits();
                f32::from_bits(u.wrapping_add(0x7fff + ((u >> 16) & 1)) & 0xffff_0000)
            };
            match self.2 {
                Fp8Format::E4M3 => each(self.0, self.3, |v| f32_to_e4m3(round(v * r))),
                Fp8Format::E5M2 => each(self.0, self.3, |v| f32_to_e5m2(round(v * r))),
            }
        }
    }
    crate::simd::run(K(x, r, format, out));
}

/// BFL `fp8r`: whole rows of length `k`, codes into `out`, one FP32 scale per row into `scales`
/// (diffusers' `quantize_fp8r`: `scale = max(amax/448, 1e-12)`, codes of `x / scale`).
pub fn bfl_rows(x: &[f32], k: usize, out: &mut [u8], scales: &mut [f32]) {
    if k == 0 {
        return;
    }
    struct K<'a>(&'a [f32], usize, &'a mut [u8], &'a mut [f32]);
    impl Kernel for K<'_> {
        #[inline(always)]
        fn run(self) {
            let k = self.1;
            let rows = self.0.chunks_exact(k).zip(self.2.chunks_exact_mut(k));
            for ((row, codes), s) in rows.zip(self.3.iter_mut()) {
                let scale = (super::absmax(row) / 448.0).max(1e-12);
                *s = scale;
                each(row, codes, |v| f32_to_e4m3(v / scale));
            }
        }
    }
    crate::simd::run(K(x, k, out, scales));
}
