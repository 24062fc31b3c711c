//! Q6_K: 6.5625 bits per weight, `x ≈ d·sc·(q − 32)` with sixteen sub-blocks of 16 elements.
//!
//! Every sub-block gets a symmetric scale from `make_qx_quants` (codes −32..=31, weights `x²`,
//! 19 candidate scales). The sixteen scales are stored as `int8` against `d = −max_scale/128`,
//! where `max_scale` is the signed scale of largest magnitude, and every element is re-quantized
//! against the decoded values.

use super::lockstep;
use super::search::make_qx_quants;
use super::{GROUP_MAX_EPS, QK_K, f16_bytes, f16_value, low_byte_i8, nearest_int, super_block};
use crate::QuantBlock;
use lowbit_dtype::blocks::BlockQ6K;

/// Code range: `−NMAX..NMAX`, stored offset by `NMAX`.
const NMAX: i32 = 32;

/// The header from the sixteen fitted scales, or `None` when they are all (nearly) zero and the
/// whole block is written as zeros.
#[inline(always)]
fn header(scales: &[f32; 16]) -> Option<([u8; 2], [i8; 16])> {
    let mut max_scale = 0.0f32;
    let mut max_abs_scale = 0.0f32;
    for &scale in scales {
        let abs_scale = scale.abs();
        if abs_scale > max_abs_scale {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        return None;
    }
    let iscale = -128.0 / max_scale;
    let mut sc = [0i8; 16];
    for (out, &scale) in sc.iter_mut().zip(scales) {
        // The C assigns MIN(127, ·) to an int8_t, keeping the low byte.
        *out = low_byte_i8(nearest_int(iscale * scale).min(127));
    }
    Some((f16_bytes(1.0 / iscale), sc))
}

/// Re-quantizes every sub-block against its decoded scale; sub-blocks whose decoded scale is
/// zero keep the codes already in `l`, and are returned as a bit mask.
#[inline(always)]
fn requantize(x: &[f32; QK_K], d: [u8; 2], sc: &[i8; 16], l: &mut [i8; QK_K]) -> u16 {
    let d_all = f16_value(d);
    let mut skipped = 0u16;
    for (j, (xs, ls)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
        let d = d_all * f32::from(sc[j]);
        if d == 0.0 {
            skipped |= 1 << j;
            continue;
        }
        for (out, &v) in ls.iter_mut().zip(xs) {
            *out = low_byte_i8(nearest_int(v / d).clamp(-NMAX, NMAX - 1) + NMAX);
        }
    }
    skipped
}

/// Packs the 6-bit codes into `ql` and `qh`.
#[inline(always)]
fn pack(l: &[i8; QK_K], b: &mut BlockQ6K) {
    for (h, half) in l.chunks_exact(128).enumerate() {
        let ql = &mut b.ql[64 * h..64 * h + 64];
        let qh = &mut b.qh[32 * h..32 * h + 32];
        for k in 0..32 {
            let q1 = half[k].cast_unsigned();
            let q2 = half[k + 32].cast_unsigned();
            let q3 = half[k + 64].cast_unsigned();
            let q4 = half[k + 96].cast_unsigned();
            ql[k] = (q1 & 0xf) | ((q3 & 0xf) << 4);
            ql[k + 32] = (q2 & 0xf) | ((q4 & 0xf) << 4);
            qh[k] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
}

/// `quantize_row_q6_K_ref` for one super-block.
fn quantize_block_ref(x: &[f32; QK_K]) -> BlockQ6K {
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; 16];
    for (j, (xs, ls)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
        scales[j] = make_qx_quants(NMAX, xs, ls);
    }
    let Some((d, sc)) = header(&scales) else {
        return BlockQ6K::default();
    };
    requantize(x, d, &sc, &mut l);
    let mut b = BlockQ6K { scales: sc, d, ..Default::default() };
    pack(&l, &mut b);
    b
}

/// Sub-blocks searched side by side.
const G: usize = 16;

/// The fast quantizer for one super-block: the searches run `G` side by side.
#[inline(always)]
fn quantize_block(x: &[f32; QK_K]) -> BlockQ6K {
    let fit = lockstep::make_qx_quants::<16, 16, G>(NMAX, x);
    let Some((d, sc)) = header(&fit.scale) else {
        return BlockQ6K::default();
    };
    let mut l = [0i8; QK_K];
    let skipped = requantize(x, d, &sc, &mut l);
    // A sub-block whose scale rounds to zero keeps the codes of its search.
    for j in (0..16).filter(|j| skipped & (1 << j) != 0) {
        fit.codes(NMAX, j, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
    }
    let mut b = BlockQ6K { scales: sc, d, ..Default::default() };
    pack(&l, &mut b);
    b
}

impl QuantBlock for BlockQ6K {
    fn quantize_ref(x: &[f32], y: &mut [Self]) {
        for (i, b) in y.iter_mut().enumerate() {
            *b = quantize_block_ref(super_block(x, i));
        }
    }

    #[inline(always)]
    fn quantize(x: &[f32], y: &mut [Self]) {
        for (i, b) in y.iter_mut().enumerate() {
            *b = quantize_block(super_block(x, i));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BlockQ6K;
    use crate::kquants::testutil;

    #[test]
    fn fast_quantizer_matches_reference() {
        testutil::assert_fast_equals_ref::<BlockQ6K>(0x606, 4500);
    }

    /// Expected error: the largest of 16 Gaussian values is about 2σ and maps to code −32, so the
    /// step is about 0.06σ and the RMS error about 0.06σ/√12 ≈ 0.018σ.
    #[test]
    fn round_trip_error_is_small() {
        let e = testutil::gaussian_rel_rms::<BlockQ6K>(6, 64);
        assert!(e < 0.025, "relative RMS error {e}");
    }

    #[test]
    fn zeros_stay_zero() {
        testutil::assert_zeros::<BlockQ6K>();
    }
}
