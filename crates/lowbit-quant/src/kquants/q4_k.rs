//! Q4_K: 4.5 bits per weight, `x ≈ d·sc·q − dmin·m` with eight sub-blocks of 32 elements.
//!
//! Every sub-block gets an asymmetric fit from `make_qkx2_quants` (codes 0..=15, weights
//! `rms(x) + |x|`, 21 trial scales). The eight scales and eight mins are then quantized to six
//! bits against `d = max_scale/63` and `dmin = max_min/63`, and every element is re-quantized
//! against the decoded f16 values.

use super::lockstep;
use super::search::{Qkx2, make_qkx2_quants};
use super::{
    K_SCALE_SIZE, QK_K, f16_value, get_scale_min_k4, requantize_scale_min, rms_abs_weights,
    scale_min_header, super_block, super_block_mut,
};
use crate::QuantBlock;
use lowbit_dtype::GgmlType;

/// One Q4_K super-block of 256 elements (144 bytes), laid out as ggml's `block_q4_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4K {
    /// Scale of the 6-bit sub-block scales (f16, little-endian).
    pub d: [u8; 2],
    /// Scale of the 6-bit sub-block mins (f16, little-endian).
    pub dmin: [u8; 2],
    /// Eight 6-bit scales and eight 6-bit mins. Sub-block `j < 4` keeps them in the low six bits
    /// of bytes `j` and `j + 4`; sub-block `j ≥ 4` keeps the low four bits in the nibbles of byte
    /// `j + 4` and the top two bits in bits 6–7 of bytes `j − 4` and `j`.
    pub scales: [u8; K_SCALE_SIZE],
    /// Codes, four 32-byte chunks: byte `l` of chunk `c` holds element `64c + l` in its low
    /// nibble and element `64c + 32 + l` in its high nibble.
    pub qs: [u8; QK_K / 2],
}

const _: () = assert!(size_of::<BlockQ4K>() == 144);

impl Default for BlockQ4K {
    fn default() -> Self {
        bytemuck::Zeroable::zeroed()
    }
}

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
    const TYPE: GgmlType = GgmlType::Q4_K;
    const QK: usize = QK_K;

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

    fn dequantize(y: &[Self], x: &mut [f32]) {
        for (i, b) in y.iter().enumerate() {
            let out = super_block_mut(x, i);
            let d = f16_value(b.d);
            let min = f16_value(b.dmin);
            for (c, (q, o)) in b.qs.chunks_exact(32).zip(out.chunks_exact_mut(64)).enumerate() {
                let (sc, m) = get_scale_min_k4(2 * c, &b.scales);
                let (d1, m1) = (d * f32::from(sc), min * f32::from(m));
                let (sc, m) = get_scale_min_k4(2 * c + 1, &b.scales);
                let (d2, m2) = (d * f32::from(sc), min * f32::from(m));
                for (k, &q) in q.iter().enumerate() {
                    o[k] = d1 * f32::from(q & 0xf) - m1;
                    o[k + 32] = d2 * f32::from(q >> 4) - m2;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BlockQ4K;
    use crate::QuantBlock;
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

    #[test]
    fn hand_built_block_decodes() {
        let mut b = BlockQ4K {
            d: [0x00, 0x3c],    // 1.0
            dmin: [0x00, 0x38], // 0.5
            ..Default::default()
        };
        b.scales[0] = 2; // sub-block 0: scale 2 ...
        b.scales[4] = 1; // ... min 1
        // Sub-block 5: scale 33, min 17. Low nibbles share byte 9, top bits go to bits 6–7 of
        // bytes 1 (scale) and 5 (min), whose low six bits are sub-block 1's (zero) scale and min.
        b.scales[9] = (33 & 0xf) | ((17 & 0xf) << 4);
        b.scales[1] = (33 >> 4) << 6;
        b.scales[5] = (17 >> 4) << 6;
        b.qs[0] = 0xf3; // element 0: code 3; element 32 (sub-block 1): code 15
        b.qs[64 + 7] = 9 << 4; // element 128 + 32 + 7 = 167 (sub-block 5): code 9
        let mut y = [0.0f32; 256];
        BlockQ4K::dequantize(&[b], &mut y);
        assert_eq!(y[0], 1.0 * 2.0 * 3.0 - 0.5 * 1.0);
        assert_eq!(y[1], -0.5);
        assert_eq!(y[32], 0.0);
        assert_eq!(y[167], 33.0 * 9.0 - 0.5 * 17.0);
        assert_eq!(y[160], -0.5 * 17.0);
    }
}
