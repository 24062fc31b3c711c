//! Q4_K: 4.5 bits per weight, `x ≈ d·sc·q − dmin·m` with eight sub-blocks of 32 elements.
//!
//! Every sub-block gets an asymmetric fit from `make_qkx2_quants` (codes 0..=15, weights
//! `rms(x) + |x|`, 21 trial scales). The eight scales and eight mins are then quantized to six
//! bits against `d = max_scale/63` and `dmin = max_min/63`, and every element is re-quantized
//! against the decoded f16 values.

use super::lockstep;
use super::search::{Qkx2, make_qkx2_quants};
use super::{QK_K, requantize_scale_min, rms_abs_weights, scale_min_header, super_block};
use crate::QuantBlock;
use lowbit_dtype::blocks::BlockQ4K;

/// The search parameters of this type.
const P: Qkx2 = Qkx2::Q4_K;

/// Packs the codes: two 32-element halves of each 64-element chunk share a byte.
#[inline(always)]
fn pack(l: &[u8; QK_K], qs: &mut [u8; QK_K / 2]) {
    for (chunk, q) in l.chunks_exact(64).zip(qs.chunks_exact_mut(32)) {
        for (k, q) in q.iter_mut().enumerate() {
            *q = chunk[k] | (chunk[k + 32] << 4);
        }
    }
}

/// `quantize_row_q4_K_ref` for one super-block.
fn quantize_block_ref(x: &[f32; QK_K]) -> BlockQ4K {
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
    let mut b = BlockQ4K { d, dmin, scales: sc, qs: [0; QK_K / 2] };
    pack(&l, &mut b.qs);
    b
}

/// Sub-blocks searched side by side.
const G: usize = 8;

/// The fast quantizer for one super-block: the searches run `G` side by side.
#[inline(always)]
fn quantize_block(x: &[f32; QK_K]) -> BlockQ4K {
    let fit = lockstep::make_qkx2_quants::<32, 8, G>(P, x, lockstep::rms_weights);
    let (d, dmin, sc) = scale_min_header(&fit.scale, &fit.the_min);
    let mut l = [0u8; QK_K];
    let skipped = requantize_scale_min(x, d, dmin, &sc, P.nmax, &mut l);
    // Rare: a sub-block whose scale rounds to zero keeps the codes of its search.
    for j in (0..8).filter(|j| skipped & (1 << j) != 0) {
        fit.codes(P, j, &x[32 * j..32 * j + 32], &mut l[32 * j..32 * j + 32]);
    }
    let mut b = BlockQ4K { d, dmin, scales: sc, qs: [0; QK_K / 2] };
    pack(&l, &mut b.qs);
    b
}

impl QuantBlock for BlockQ4K {
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
    use super::BlockQ4K;
    use crate::kquants::testutil;

    #[test]
    fn fast_quantizer_matches_reference() {
        testutil::assert_fast_equals_ref::<BlockQ4K>(0x404, 4500);
    }

    /// Expected error: 32 Gaussian values span about 4.1σ, cut into 15 steps of about 0.27σ; a
    /// uniform quantizer's RMS error is step/√12 ≈ 0.08σ.
    #[test]
    fn round_trip_error_is_small() {
        let e = testutil::gaussian_rel_rms::<BlockQ4K>(4, 64);
        assert!(e < 0.1, "relative RMS error {e}");
    }

    #[test]
    fn zeros_stay_zero() {
        testutil::assert_zeros::<BlockQ4K>();
    }
}
