//! Q5_K: 5.5 bits per weight, `x ≈ d·sc·q − dmin·m` with eight sub-blocks of 32 elements.
//!
//! The same scheme as Q4_K with codes 0..=31: `make_qkx2_quants` with weights `rms(x) + |x|`
//! and 16 trial scales, six-bit scales and mins packed exactly as in Q4_K, and a fifth bit per
//! element kept in `qh`.

use super::lockstep;
use super::search::{Qkx2, make_qkx2_quants};
use super::{QK_K, requantize_scale_min, rms_abs_weights, scale_min_header, super_block};
use crate::QuantBlock;
use lowbit_dtype::blocks::BlockQ5K;

/// The search parameters of this type.
const P: Qkx2 = Qkx2::Q5_K;

/// Packs the codes into `qh` (fifth bits) and `qs` (low nibbles).
///
/// The C tests `l > 15` and subtracts 16; for codes in `0..=31` that is bit 4 and a mask, which
/// keeps this loop free of branches.
#[inline(always)]
fn pack(l: &[u8; QK_K], b: &mut BlockQ5K) {
    let mut qh = [0u8; QK_K / 8];
    for (c, (chunk, q)) in l.chunks_exact(64).zip(b.qs.chunks_exact_mut(32)).enumerate() {
        for (k, (q, h)) in q.iter_mut().zip(qh.iter_mut()).enumerate() {
            let (l1, l2) = (chunk[k], chunk[k + 32]);
            debug_assert!(l1 < 32 && l2 < 32);
            *h |= ((l1 >> 4) << (2 * c)) | ((l2 >> 4) << (2 * c + 1));
            *q = (l1 & 15) | ((l2 & 15) << 4);
        }
    }
    b.qh = qh;
}

/// `quantize_row_q5_K_ref` for one super-block.
fn quantize_block_ref(x: &[f32; QK_K]) -> BlockQ5K {
    let mut l = [0u8; QK_K];
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let mut w = [0.0f32; 32];
    for (j, (xs, ls)) in x.chunks_exact(32).zip(l.chunks_exact_mut(32)).enumerate() {
        rms_abs_weights(xs, &mut w);
        (scales[j], mins[j]) = make_qkx2_quants(P, xs, &w, ls);
    }
    let (d, dmin, sc) = scale_min_header(&scales, &mins);
    requantize_scale_min(x, d, dmin, &sc, P.nmax, &mut l);
    let mut b = BlockQ5K { d, dmin, scales: sc, ..Default::default() };
    pack(&l, &mut b);
    b
}

/// Sub-blocks searched side by side.
const G: usize = 8;

/// The fast quantizer for one super-block: the searches run `G` side by side.
#[inline(always)]
fn quantize_block(x: &[f32; QK_K]) -> BlockQ5K {
    let fit = lockstep::make_qkx2_quants::<32, 8, G>(P, x, lockstep::rms_weights);
    let (d, dmin, sc) = scale_min_header(&fit.scale, &fit.the_min);
    let mut l = [0u8; QK_K];
    let skipped = requantize_scale_min(x, d, dmin, &sc, P.nmax, &mut l);
    // Rare: a sub-block whose scale rounds to zero keeps the codes of its search.
    for j in (0..8).filter(|j| skipped & (1 << j) != 0) {
        fit.codes(P, j, &x[32 * j..32 * j + 32], &mut l[32 * j..32 * j + 32]);
    }
    let mut b = BlockQ5K { d, dmin, scales: sc, ..Default::default() };
    pack(&l, &mut b);
    b
}

impl QuantBlock for BlockQ5K {
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
    use super::BlockQ5K;
    use crate::kquants::testutil;

    #[test]
    fn fast_quantizer_matches_reference() {
        testutil::assert_fast_equals_ref::<BlockQ5K>(0x505, 4500);
    }

    /// Expected error: 32 Gaussian values span about 4.1σ, cut into 31 steps of about 0.13σ; a
    /// uniform quantizer's RMS error is step/√12 ≈ 0.04σ.
    #[test]
    fn round_trip_error_is_small() {
        let e = testutil::gaussian_rel_rms::<BlockQ5K>(5, 64);
        assert!(e < 0.05, "relative RMS error {e}");
    }

    #[test]
    fn zeros_stay_zero() {
        testutil::assert_zeros::<BlockQ5K>();
    }
}
