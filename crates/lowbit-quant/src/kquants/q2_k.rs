//! Q2_K: 2.625 bits per weight, `x ≈ d·sc·q − dmin·m` with sixteen sub-blocks of 16 elements.
//!
//! Every sub-block gets an asymmetric fit from `make_qkx2_quants` (codes 0..=3, weights `|x|`,
//! minimising the weighted absolute error over 16 trial scales). The sixteen scales and mins
//! are quantized to four bits each against `d = max_scale/15` and `dmin = max_min/15`, and every
//! element is re-quantized against the decoded f16 values.

use super::lockstep;
use super::search::{Qkx2, make_qkx2_quants};
use super::{QK_K, f16_bytes, f16_value, low_byte, nearest_int, pack_2bit, super_block};
use crate::QuantBlock;
use lowbit_dtype::blocks::BlockQ2K;

/// The search parameters of this type.
const P: Qkx2 = Qkx2::Q2_K;

/// Four bits' worth of scale levels.
const Q4SCALE: f32 = 15.0;

/// The header from the sixteen fitted scales and (negated) mins: `d`, `dmin` and the packed
/// nibbles.
#[inline(always)]
fn header(scales: &[f32; 16], mins: &[f32; 16]) -> BlockQ2K {
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..16 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let mut b = BlockQ2K::default();
    // The C stores the int in a uint8_t, keeping its low byte: a negative scale sets high bits.
    if max_scale > 0.0 {
        let iscale = Q4SCALE / max_scale;
        for (out, &scale) in b.scales.iter_mut().zip(scales) {
            *out = low_byte(nearest_int(iscale * scale));
        }
        b.d = f16_bytes(max_scale / Q4SCALE);
    } else {
        b.d = f16_bytes(0.0);
    }
    if max_min > 0.0 {
        let iscale = Q4SCALE / max_min;
        for (out, &min) in b.scales.iter_mut().zip(mins) {
            *out |= low_byte(nearest_int(iscale * min) << 4);
        }
        b.dmin = f16_bytes(max_min / Q4SCALE);
    } else {
        b.dmin = f16_bytes(0.0);
    }
    b
}

/// Re-quantizes every sub-block against its decoded scale and min; sub-blocks whose decoded
/// scale is zero keep the codes already in `l`, and are returned as a bit mask.
#[inline(always)]
fn requantize(x: &[f32; QK_K], b: &BlockQ2K, l: &mut [u8; QK_K]) -> u16 {
    let d_all = f16_value(b.d);
    let dmin_all = f16_value(b.dmin);
    let mut skipped = 0u16;
    for (j, (xs, ls)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
        let d = d_all * f32::from(b.scales[j] & 0xf);
        if d == 0.0 {
            skipped |= 1 << j;
            continue;
        }
        let dm = dmin_all * f32::from(b.scales[j] >> 4);
        for (out, &v) in ls.iter_mut().zip(xs) {
            *out = low_byte(nearest_int((v + dm) / d).clamp(0, 3));
        }
    }
    skipped
}

/// `quantize_row_q2_K_ref` for one super-block.
fn quantize_block_ref(x: &[f32; QK_K]) -> BlockQ2K {
    let mut l = [0u8; QK_K];
    let mut scales = [0.0f32; 16];
    let mut mins = [0.0f32; 16];
    let mut w = [0.0f32; 16];
    for (j, (xs, ls)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
        for (w, &v) in w.iter_mut().zip(xs) {
            *w = v.abs();
        }
        (scales[j], mins[j]) = make_qkx2_quants(P, xs, &w, ls);
    }
    let mut b = header(&scales, &mins);
    requantize(x, &b, &mut l);
    pack_2bit(&l, &mut b.qs);
    b
}

/// Sub-blocks searched side by side.
const G: usize = 16;

/// The fast quantizer for one super-block: the searches run `G` side by side.
#[inline(always)]
fn quantize_block(x: &[f32; QK_K]) -> BlockQ2K {
    let fit = lockstep::make_qkx2_quants::<16, 16, G>(P, x, lockstep::abs_weights);
    let mut b = header(&fit.scale, &fit.the_min);
    let mut l = [0u8; QK_K];
    let skipped = requantize(x, &b, &mut l);
    // A sub-block whose scale rounds to zero keeps the codes of its search.
    for j in (0..16).filter(|j| skipped & (1 << j) != 0) {
        fit.codes(P, j, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
    }
    pack_2bit(&l, &mut b.qs);
    b
}

impl QuantBlock for BlockQ2K {
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
    use super::BlockQ2K;
    use crate::kquants::testutil;

    #[test]
    fn fast_quantizer_matches_reference() {
        testutil::assert_fast_equals_ref::<BlockQ2K>(0x202, 4500);
    }

    /// Expected error: 16 Gaussian values span about 3.5σ, cut into 3 steps of about 1.2σ; a
    /// uniform quantizer's RMS error is step/√12 ≈ 0.34σ (the weighted fit does a little better).
    #[test]
    fn round_trip_error_is_small() {
        let e = testutil::gaussian_rel_rms::<BlockQ2K>(2, 64);
        assert!(e < 0.4, "relative RMS error {e}");
    }

    #[test]
    fn zeros_stay_zero() {
        testutil::assert_zeros::<BlockQ2K>();
    }
}
