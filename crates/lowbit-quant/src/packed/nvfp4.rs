//! NVFP4 quantizers (`formats/nvfp4.md`): diffusers' `quantize_nvfp4` (BFL) and comfy-kitchen's
//! eager `quantize_nvfp4` (ComfyUI), operation for operation in F32.
//!
//! Both take the per-tensor amax from a first pass (`lowbit-convert`'s `stats.rs`), cut each
//! row into blocks of 16, encode each block's scale `amax_block / 6 / global` as E4M3 with
//! `lowbit_dtype`'s encoder (the project's one FP8 encoder) and each element, divided by the
//! decoded block scale times the global one, as E2M1 rounded to nearest even. They differ in
//! the global scale (ComfyUI's is rounded to BF16), the order of two factors, the sign of a
//! zero, and the nibble order. A global scale of 0 (an all-zero weight) gives zero codes and
//! zero block scales, where both references divide 0 by 0 and write NaN block scales
//! (`formats/nvfp4.md`); with any other global scale the bytes are theirs.

use crate::simd::Kernel;
use lowbit_dtype::f16::{bf16_to_fp32, fp32_to_bf16};
use lowbit_dtype::fp8::{e4m3_to_f32, f32_to_e4m3};
use lowbit_layout::nvfp4::{BLOCK, GLOBAL_DIVISOR, pack};

/// Elements per block.
const B: usize = BLOCK as usize;

/// BFL's `weight_scale_2`: `amax / 2688` in F32.
#[must_use]
pub fn bfl_global(amax: f32) -> f32 {
    amax / GLOBAL_DIVISOR
}

/// ComfyUI's `weight_scale_2` for a BF16 weight: comfy-kitchen divides the BF16 amax tensor by
/// 2688, so the quotient is rounded to BF16 (then stored as F32).
#[must_use]
pub fn comfy_global(amax: f32) -> f32 {
    bf16_to_fp32(fp32_to_bf16(amax / GLOBAL_DIVISOR))
}

/// The E2M1 magnitude code (0–7) of `a ≥ 0`: round to nearest, ties to even, saturating at 6
/// (NaN gives 0). The ties are 0.25, 0.75, 1.25, 1.75, 2.5, 3.5 and 5; each goes to the even
/// code, so the comparisons alternate between `>` and `≥`.
#[inline(always)]
#[must_use]
pub fn e2m1_magnitude(a: f32) -> u8 {
    u8::from(a > 0.25)
        + u8::from(a >= 0.75)
        + u8::from(a > 1.25)
        + u8::from(a >= 1.75)
        + u8::from(a > 2.5)
        + u8::from(a >= 3.5)
        + u8::from(a > 5.0)
}

/// The E2M1 code of `x` with the sign of its sign bit (so −0 is code 8), as `ml_dtypes` and
/// comfy-kitchen encode.
#[inline(always)]
#[must_use]
pub fn e2m1(x: f32) -> u8 {
    let sign = ((x.to_bits() >> 28) & 8) as u8;
    sign | e2m1_magnitude(x.abs())
}

/// max |x| of one block (the blocks hold finite values; NaN is ignored).
#[inline(always)]
fn block_amax(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, v| {
        let a = v.abs();
        if a > m { a } else { m }
    })
}

/// One block as diffusers' `quantize_nvfp4`: `s = e4m3(amax / 6 / global)`,
/// `scale = f32(s) · global`, each code of `x / scale` (0 where `scale` is not positive), the
/// sign from `x / scale < 0`.
#[inline(always)]
fn bfl_block(x: &[f32], global: f32, codes: &mut [u8; B]) -> u8 {
    let s = f32_to_e4m3(block_amax(x) / 6.0 / global);
    let scale = e4m3_to_f32(s) * global;
    let positive = scale > 0.0;
    for (c, &v) in codes.iter_mut().zip(x) {
        let q = if positive { v / scale } else { 0.0 };
        *c = (u8::from(q < 0.0) << 3) | e2m1_magnitude(q.abs());
    }
    s
}

/// One block as comfy-kitchen's eager `quantize_nvfp4`: `s = e4m3(min(amax / 6 / global,
/// 448))`, `total = global · f32(s)`, each code of `clamp(x / total, ±6)` with its sign bit
/// (+0 for every element where `total` is 0).
#[inline(always)]
fn comfy_block(x: &[f32], global: f32, codes: &mut [u8; B]) -> u8 {
    // The encoder saturates at 448, which is comfy-kitchen's clamp.
    let s = f32_to_e4m3(block_amax(x) / 6.0 / global);
    let total = global * e4m3_to_f32(s);
    let zero = total == 0.0;
    for (c, &v) in codes.iter_mut().zip(x) {
        *c = if zero { 0 } else { e2m1((v / total).clamp(-6.0, 6.0)) };
    }
    s
}

/// Which reference's arithmetic and nibble order.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Bfl,
    Comfy,
}

/// Quantizes whole rows of length `k` (a multiple of 16) with per-tensor `global`: packed codes
/// into `out` (`k/2` bytes a row) and E4M3 block scales row-major into `scales` (`k/16` a row).
fn rows(flavor: Flavor, x: &[f32], k: usize, global: f32, out: &mut [u8], scales: &mut [u8]) {
    struct K<'a>(Flavor, &'a [f32], usize, f32, &'a mut [u8], &'a mut [u8]);
    impl Kernel for K<'_> {
        #[inline(always)]
        fn run(self) {
            let K(flavor, x, k, global, out, scales) = self;
            if k == 0 || !k.is_multiple_of(B) {
                return;
            }
            let mut codes = [0u8; B];
            let blocks = x.chunks_exact(B).zip(out.chunks_exact_mut(B / 2)).zip(scales);
            for ((block, packed), s) in blocks {
                *s = if global == 0.0 || global.is_nan() {
                    codes = [0; B];
                    0
                } else if flavor == Flavor::Bfl {
                    bfl_block(block, global, &mut codes)
                } else {
                    comfy_block(block, global, &mut codes)
                };
                pack(&codes, flavor == Flavor::Comfy, packed);
            }
        }
    }
    crate::simd::run(K(flavor, x, k, global, out, scales));
}

/// BFL `nvfp4` (diffusers' `quantize_nvfp4`) of whole rows: `global` is [`bfl_global`];
/// codes low nibble first.
pub fn bfl_rows(x: &[f32], k: usize, global: f32, out: &mut [u8], scales: &mut [u8]) {
    rows(Flavor::Bfl, x, k, global, out, scales);
}

/// ComfyUI `nvfp4` (comfy-kitchen's `quantize_nvfp4`) of whole rows: `global` is
/// [`comfy_global`]; codes high nibble first; scales row-major (the writer swizzles them).
pub fn comfy_rows(x: &[f32], k: usize, global: f32, out: &mut [u8], scales: &mut [u8]) {
    rows(Flavor::Comfy, x, k, global, out, scales);
}

#[cfg(test)]
mod tests {
    use super::{bfl_rows, comfy_rows, e2m1, e2m1_magnitude};

    #[test]
    fn e2m1_rounds_ties_to_even_and_saturates() {
        let cases = [
            (0.0, 0),
            (0.25, 0),
            (0.250_001, 1),
            (0.75, 2),
            (0.749_999, 1),
            (1.25, 2),
            (1.75, 4),
            (2.5, 4),
            (2.500_001, 5),
            (3.5, 6),
            (5.0, 6),
            (5.000_001, 7),
            (6.0, 7),
            (1e9, 7),
            (f32::NAN, 0),
        ];
        for (a, code) in cases {
            assert_eq!(e2m1_magnitude(a), code, "{a}");
        }
        assert_eq!(e2m1(-0.0), 8);
        assert_eq!(e2m1(-0.1), 8);
        assert_eq!(e2m1(-6.0), 15);
    }

    /// A block whose amax is 6 × global × 1 (E4M3 1.0): codes are the E2M1 values themselves;
    /// the references differ on −0 and in the nibble order.
    #[test]
    fn one_block_by_hand() {
        let mut x = [0.0f32; 16];
        x[..8].copy_from_slice(&[0.5, -1.0, 1.5, 2.0, -3.0, 4.0, -6.0, -0.0]);
        let (mut out, mut s) = ([0u8; 8], [0u8; 1]);
        bfl_rows(&x, 16, 1.0, &mut out, &mut s);
        assert_eq!(s, [0x38]);
        assert_eq!(out[..4], [0xa1, 0x43, 0x6d, 0x0f]);
        comfy_rows(&x, 16, 1.0, &mut out, &mut s);
        assert_eq!(s, [0x38]);
        assert_eq!(out[..4], [0x1a, 0x34, 0xd6, 0xf8]);
        // A global scale of zero: zero codes and scales, no NaN.
        for f in [bfl_rows, comfy_rows] {
            f(&[0.0; 16], 16, 0.0, &mut out, &mut s);
            assert_eq!((out, s), ([0; 8], [0]));
        }
        // A block far below the global scale: its E4M3 scale underflows to 0, codes are +0.
        let mut tiny = [1e-6f32; 16];
        tiny[3] = -1e-6;
        bfl_rows(&tiny, 16, 1.0, &mut out, &mut s);
        assert_eq!((out, s), ([0; 8], [0]));
        comfy_rows(&tiny, 16, 1.0, &mut out, &mut s);
        assert_eq!((out, s), ([0; 8], [0]));
    }
}
