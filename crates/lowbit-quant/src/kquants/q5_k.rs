//! Q5_K: 5.5 bits per weight, `x ≈ d·sc·q − dmin·m` with eight sub-blocks of 32 elements.
//!
//! The same scheme as Q4_K with codes 0..=31: `make_qkx2_quants` with weights `rms(x) + |x|`
//! and 16 trial scales, six-bit scales and mins packed exactly as in Q4_K, and a fifth bit per
//! element kept in `qh`.

use super::lockstep;
use super::search::{Qkx2, make_qkx2_quants};
use super::{
    K_SCALE_SIZE, QK_K, f16_value, get_scale_min_k4, requantize_scale_min, rms_abs_weights,
    scale_min_header, super_block, super_block_mut,
};
use crate::QuantBlock;
use lowbit_dtype::GgmlType;

/// One Q5_K super-block of 256 elements (176 bytes), laid out as ggml's `block_q5_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5K {
    /// Scale of the 6-bit sub-block scales (f16, little-endian).
    pub d: [u8; 2],
    /// Scale of the 6-bit sub-block mins (f16, little-endian).
    pub dmin: [u8; 2],
    /// Eight 6-bit scales and eight 6-bit mins, packed as in Q4_K.
    pub scales: [u8; K_SCALE_SIZE],
    /// Fifth bits: bit `2c` of byte `l` belongs to element `64c + l`, bit `2c + 1` to element
    /// `64c + 32 + l`.
    pub qh: [u8; QK_K / 8],
    /// Low four bits of the codes, arranged as Q4_K's `qs`.
    pub qs: [u8; QK_K / 2],
}

const _: () = assert!(size_of::<BlockQ5K>() == 176);

impl Default for BlockQ5K {
    fn default() -> Self {
        bytemuck::Zeroable::zeroed()
    }
}

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
    const TYPE: GgmlType = GgmlType::Q5_K;
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
                let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
                for (k, &q) in q.iter().enumerate() {
                    let h1 = if b.qh[k] & u1 != 0 { 16 } else { 0 };
                    let h2 = if b.qh[k] & u2 != 0 { 16 } else { 0 };
                    o[k] = d1 * f32::from((q & 0xf) + h1) - m1;
                    o[k + 32] = d2 * f32::from((q >> 4) + h2) - m2;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BlockQ5K;
    use crate::QuantBlock;
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

    #[test]
    fn hand_built_block_decodes() {
        let mut b = BlockQ5K {
            d: [0x00, 0x3c],    // 1.0
            dmin: [0x00, 0x38], // 0.5
            ..Default::default()
        };
        b.scales[0] = 2; // sub-block 0: scale 2, min 1
        b.scales[4] = 1;
        b.scales[9] = (33 & 0xf) | ((17 & 0xf) << 4); // sub-block 5: scale 33, min 17
        b.scales[1] = (33 >> 4) << 6;
        b.scales[5] = (17 >> 4) << 6;
        b.qs[0] = 3; // element 0: low bits 3 ...
        b.qh[0] = 1; // ... fifth bit (bit 0 of byte 0): code 19
        b.qs[64 + 7] = 9 << 4; // element 167 (chunk 2, high half): low bits 9 ...
        b.qh[7] = 1 << 5; // ... fifth bit (bit 2·2 + 1 of byte 7): code 25
        let mut y = [0.0f32; 256];
        BlockQ5K::dequantize(&[b], &mut y);
        assert_eq!(y[0], 2.0 * 19.0 - 0.5);
        assert_eq!(y[167], 33.0 * 25.0 - 0.5 * 17.0);
        assert_eq!(y[7], -0.5, "qh bit 0 of byte 7 is unset");
        assert_eq!(y[128 + 7], 0.0, "sub-block 4 has scale and min 0");
    }
}
