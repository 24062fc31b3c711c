//! The quantizers of ggml's K-quants: Q2_K, Q3_K, Q4_K, Q5_K and Q6_K.
//!
//! All five types cut a row into super-blocks of 256 elements, split each super-block into
//! sub-blocks of 16 or 32 elements, fit a scale (and for Q2_K, Q4_K and Q5_K a minimum) to every
//! sub-block, and then quantize those per-sub-block scales once more against one or two f16
//! super-block scales. The super-block structs, with their layouts documented field by field,
//! and the dequantizers are in [`lowbit_dtype::blocks`].
//!
//! Each type has two quantizers. The reference one ports ggml's `quantize_row_q*_K_ref` one
//! operation at a time: the same f32 expressions evaluated in the same order, the same
//! comparisons (which decide ties and NaN), ggml's `nearest_int` rounding trick and its f16
//! conversion. The fast one, in [`lockstep`], performs exactly the same arithmetic for every
//! sub-block, but runs several sub-blocks of a super-block side by side so that each SIMD lane
//! follows one sub-block's scalar computation; it never reassociates a sum, so its bytes equal
//! the reference's, which the tests check on random and adversarial data.
//!
//! Both are bit-exact with ggml for every input free of NaN, infinities and subnormals
//! included. For a block containing NaN the bytes depend on which NaN payload each operation
//! propagates, which is up to the compiler's operand order, in ggml's build as in this one.

mod lockstep;
mod q2_k;
mod q3_k;
mod q4_k;
mod q5_k;
mod q6_k;
mod search;

use lowbit_dtype::blocks::{K_SCALE_SIZE, QK_K, get_scale_min_k4};
use lowbit_dtype::f16::{fp16_to_fp32, fp32_to_fp16};

/// Below this magnitude a group counts as all zero (ggml's `GROUP_MAX_EPS`).
const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: rounds to the nearest integer, ties to even, for `|v| < 2^22`.
///
/// Adding 1.5·2^23 pushes the integer part into the low mantissa bits. Outside that range
/// (infinities and NaN included) the C asserts in debug builds; release builds return whatever
/// those bits say, and so does this port, which the callers then clamp as the C does.
#[inline(always)]
pub(crate) fn nearest_int(v: f32) -> i32 {
    let biased = v + 12_582_912.0;
    #[expect(clippy::cast_possible_wrap, reason = "the bits are reinterpreted, as ggml does")]
    let bits = biased.to_bits() as i32;
    (bits & 0x007f_ffff) - 0x0040_0000
}

/// Q4_K and Q5_K sub-block weights, as ggml's reference computes them: `sqrt(Σx²/32) + |x|`.
fn rms_abs_weights(x: &[f32], w: &mut [f32; 32]) {
    let mut sum_x2 = 0.0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    let av_x = (sum_x2 / 32.0).sqrt();
    for (w, &v) in w.iter_mut().zip(x) {
        *w = av_x + v.abs();
    }
}

/// C's conversion of an `int` to `uint8_t`: the low byte.
#[inline(always)]
#[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "modulo 256, as in C")]
fn low_byte(v: i32) -> u8 {
    v as u8
}

/// C's conversion of an `int` to `int8_t` (as gcc and clang define it): the low byte.
#[inline(always)]
#[expect(clippy::cast_possible_truncation, reason = "modulo 256, as in C")]
fn low_byte_i8(v: i32) -> i8 {
    v as i8
}

/// Packs the eight 6-bit scales and mins of Q4_K / Q5_K, as the inverse of `lowbit-dtype`'s
/// [`get_scale_min_k4`]. Values above 63 must already be clamped.
#[inline(always)]
fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; K_SCALE_SIZE] {
    let mut s = [0u8; K_SCALE_SIZE];
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0xf) | ((lm[j] & 0xf) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    s
}

/// The header of Q4_K and Q5_K: from the eight fitted scales and (negated) mins, the f16 `d`
/// and `dmin` and the packed 6-bit scales and mins, as `quantize_row_q4_K_ref` computes them.
#[inline(always)]
fn scale_min_header(scales: &[f32; 8], mins: &[f32; 8]) -> ([u8; 2], [u8; 2], [u8; K_SCALE_SIZE]) {
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..8 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        // The C assigns the int to a uint8_t (keeping its low byte), then takes MIN(63, ·).
        ls[j] = low_byte(nearest_int(inv_scale * scales[j])).min(63);
        lm[j] = low_byte(nearest_int(inv_min * mins[j])).min(63);
    }
    (f16_bytes(max_scale / 63.0), f16_bytes(max_min / 63.0), pack_scale_min_k4(&ls, &lm))
}

/// The second pass of Q4_K and Q5_K: re-quantizes every sub-block of 32 against its decoded
/// scale `d·sc` and min `dmin·m`, codes clamped to `0..=nmax`. Sub-blocks whose decoded scale is
/// zero are skipped, keeping the codes already in `l`; returns a bit mask of them.
#[inline(always)]
fn requantize_scale_min(
    x: &[f32; QK_K],
    d: [u8; 2],
    dmin: [u8; 2],
    scales: &[u8; K_SCALE_SIZE],
    nmax: i32,
    l: &mut [u8; QK_K],
) -> u8 {
    let d_all = f16_value(d);
    let dmin_all = f16_value(dmin);
    let mut skipped = 0u8;
    for (j, (xs, ls)) in x.chunks_exact(32).zip(l.chunks_exact_mut(32)).enumerate() {
        let (sc, m) = get_scale_min_k4(j, scales);
        let d = d_all * f32::from(sc);
        if d == 0.0 {
            skipped |= 1 << j;
            continue;
        }
        let dm = dmin_all * f32::from(m);
        for (out, &v) in ls.iter_mut().zip(xs) {
            *out = low_byte(nearest_int((v + dm) / d).clamp(0, nmax));
        }
    }
    skipped
}

/// `GGML_FP32_TO_FP16`, stored little-endian.
#[inline(always)]
fn f16_bytes(v: f32) -> [u8; 2] {
    fp32_to_fp16(v).to_le_bytes()
}

/// `GGML_FP16_TO_FP32` of a little-endian half.
#[inline(always)]
fn f16_value(b: [u8; 2]) -> f32 {
    fp16_to_fp32(u16::from_le_bytes(b))
}

/// The 256 inputs of super-block `i`.
#[inline(always)]
fn super_block(x: &[f32], i: usize) -> &[f32; QK_K] {
    x[i * QK_K..(i + 1) * QK_K].try_into().expect("a whole super-block")
}

/// Packs 2-bit values as Q2_K and Q3_K do: in each 128-element half, byte `l` holds elements
/// `l`, `l + 32`, `l + 64` and `l + 96` at bit offsets 0, 2, 4 and 6.
#[inline(always)]
fn pack_2bit(l: &[u8; QK_K], qs: &mut [u8; QK_K / 4]) {
    for (half, out) in l.chunks_exact(128).zip(qs.chunks_exact_mut(32)) {
        for (k, q) in out.iter_mut().enumerate() {
            *q = half[k] | (half[k + 32] << 2) | (half[k + 64] << 4) | (half[k + 96] << 6);
        }
    }
}

#[cfg(test)]
mod testutil;

#[cfg(test)]
mod tests {
    use super::testutil::gaussian_rel_rms;
    use super::{get_scale_min_k4, nearest_int, pack_scale_min_k4};
    use lowbit_dtype::blocks::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K};

    #[test]
    fn more_bits_give_less_error() {
        let errors = [
            gaussian_rel_rms::<BlockQ2K>(9, 16),
            gaussian_rel_rms::<BlockQ3K>(9, 16),
            gaussian_rel_rms::<BlockQ4K>(9, 16),
            gaussian_rel_rms::<BlockQ5K>(9, 16),
            gaussian_rel_rms::<BlockQ6K>(9, 16),
        ];
        // Each extra bit should roughly halve the error.
        for pair in errors.windows(2) {
            assert!(pair[1] < 0.7 * pair[0], "{errors:?}");
        }
    }

    #[test]
    fn nearest_int_rounds_ties_to_even() {
        let cases = [
            (0.5, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (-2.5, -2),
            (0.49, 0),
            (7.51, 8),
            (-7.51, -8),
            (4_194_303.0, 4_194_303),
        ];
        for (v, want) in cases {
            assert_eq!(nearest_int(v), want, "{v}");
        }
    }

    #[test]
    fn nearest_int_reproduces_c_outside_its_range() {
        // Values the C asserts against still give deterministic bits; the callers clamp them.
        assert_eq!(nearest_int(f32::INFINITY), -0x40_0000);
        assert_eq!(nearest_int(f32::from_bits(0x7fc0_0000)), 0);
        // 1e10 + 1.5·2^23 = 9777913·2^10: mantissa field 9777913 − 2^23, minus 2^22.
        assert_eq!(nearest_int(1e10), -2_804_999);
    }

    #[test]
    fn scale_min_packing_round_trips() {
        let ls = [0, 1, 17, 63, 32, 15, 48, 63];
        let lm = [63, 2, 40, 0, 33, 16, 1, 62];
        let packed = pack_scale_min_k4(&ls, &lm);
        for j in 0..8 {
            assert_eq!(get_scale_min_k4(j, &packed), (ls[j], lm[j]), "sub-block {j}");
        }
    }
}
