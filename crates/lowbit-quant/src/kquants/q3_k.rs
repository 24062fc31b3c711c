//! Q3_K: 3.4375 bits per weight, `x ≈ d·(sc − 32)·(q − 4)` with sixteen sub-blocks of 16.
//!
//! Every sub-block gets a symmetric scale from `make_q3_quants` (codes −4..=3, weights `x²`,
//! element-wise refinement). The sixteen scales are stored in six bits against
//! `d = −max_scale/32`, where `max_scale` is the signed scale of largest magnitude, and every
//! element is re-quantized against the decoded values. The codes' third bit lives in `hmask`.

use super::lockstep;
use super::search::make_q3_quants;
use super::{
    QK_K, f16_bytes, f16_value, low_byte, low_byte_i8, nearest_int, pack_2bit, super_block,
};
use crate::QuantBlock;
use lowbit_dtype::blocks::BlockQ3K;

/// Code range: `−NMAX..NMAX`, stored offset by `NMAX`.
const NMAX: i32 = 4;

/// The header from the sixteen fitted scales: `d` and the packed 6-bit scales.
#[inline(always)]
fn header(scales: &[f32; 16]) -> BlockQ3K {
    let mut max_scale = 0.0f32;
    let mut amax = 0.0f32;
    for &scale in scales {
        if scale.abs() > amax {
            amax = scale.abs();
            max_scale = scale;
        }
    }
    let mut b = BlockQ3K::default();
    // C tests the float for truth: NaN counts as true.
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for (j, &scale) in scales.iter().enumerate() {
            // The C keeps the low byte of the int in an int8_t before clamping.
            let l = i32::from(low_byte_i8(nearest_int(iscale * scale))).clamp(-32, 31) + 32;
            let l = low_byte(l);
            if j < 8 {
                b.scales[j] = l & 0xf;
            } else {
                b.scales[j - 8] |= (l & 0xf) << 4;
            }
            b.scales[j % 4 + 8] |= (l >> 4) << (2 * (j / 4));
        }
        b.d = f16_bytes(1.0 / iscale);
    } else {
        b.d = f16_bytes(0.0);
    }
    b
}

/// Re-quantizes every sub-block against its decoded scale; sub-blocks whose decoded scale is
/// zero keep the codes already in `l`, and are returned as a bit mask.
#[inline(always)]
fn requantize(x: &[f32; QK_K], b: &BlockQ3K, l: &mut [i8; QK_K]) -> u16 {
    let d_all = f16_value(b.d);
    let mut skipped = 0u16;
    for (j, (xs, ls)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
        let sc = i8::try_from(b.scale(j)).expect("6 bits") - 32;
        let d = d_all * f32::from(sc);
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

/// Moves the third bit of the codes (0..8) into `hmask` and packs the rest into `qs`.
///
/// The C tests `L[j] > 3` and subtracts 4; for codes in 0..8 that is bit 2 and a mask.
#[inline(always)]
fn pack(l: &[i8; QK_K], b: &mut BlockQ3K) {
    let mut l2 = [0u8; QK_K];
    b.hmask = [0; QK_K / 8];
    for (bit, (codes, low)) in l.chunks_exact(32).zip(l2.chunks_exact_mut(32)).enumerate() {
        for ((code, low), h) in codes.iter().zip(low.iter_mut()).zip(b.hmask.iter_mut()) {
            debug_assert!((0..8).contains(code));
            let c = code.cast_unsigned();
            *h |= ((c >> 2) & 1) << bit;
            *low = c & 3;
        }
    }
    pack_2bit(&l2, &mut b.qs);
}

/// `quantize_row_q3_K_ref` for one super-block.
fn quantize_block_ref(x: &[f32; QK_K]) -> BlockQ3K {
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; 16];
    for (j, (xs, ls)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
        scales[j] = make_q3_quants(NMAX, xs, ls);
    }
    let mut b = header(&scales);
    requantize(x, &b, &mut l);
    pack(&l, &mut b);
    b
}

/// Sub-blocks searched side by side.
const G: usize = 4;

/// The fast quantizer for one super-block: the searches run `G` side by side.
#[inline(always)]
fn quantize_block(x: &[f32; QK_K]) -> BlockQ3K {
    let fit = lockstep::make_q3_quants::<16, 16, G>(NMAX, x);
    let mut b = header(&fit.scale);
    let mut l = [0i8; QK_K];
    let skipped = requantize(x, &b, &mut l);
    // A sub-block whose scale rounds to zero keeps the codes of its search.
    for j in (0..16).filter(|j| skipped & (1 << j) != 0) {
        for (i, row) in fit.codes.iter().enumerate() {
            #[expect(clippy::cast_possible_truncation, reason = "codes are small integers")]
            {
                l[16 * j + i] = row[j] as i8;
            }
        }
    }
    pack(&l, &mut b);
    b
}

impl QuantBlock for BlockQ3K {
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
    use super::BlockQ3K;
    use crate::kquants::testutil;

    #[test]
    fn fast_quantizer_matches_reference() {
        testutil::assert_fast_equals_ref::<BlockQ3K>(0x303, 4500);
    }

    /// Expected error: the largest of 16 Gaussian values is about 2σ and maps to code −4, so the
    /// step is about 0.5σ and the RMS error about 0.5σ/√12 ≈ 0.15σ.
    #[test]
    fn round_trip_error_is_small() {
        let e = testutil::gaussian_rel_rms::<BlockQ3K>(3, 64);
        assert!(e < 0.2, "relative RMS error {e}");
    }

    #[test]
    fn zeros_stay_zero() {
        testutil::assert_zeros::<BlockQ3K>();
    }
}
