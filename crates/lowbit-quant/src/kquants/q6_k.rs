//! Q6_K: 6.5625 bits per weight, `x ≈ d·sc·(q − 32)` with sixteen sub-blocks of 16 elements.
//!
//! Every sub-block gets a symmetric scale from `make_qx_quants` (codes −32..=31, weights `x²`,
//! 19 candidate scales). The sixteen scales are stored as `int8` against `d = −max_scale/128`,
//! where `max_scale` is the signed scale of largest magnitude, and every element is re-quantized
//! against the decoded values.

use super::lockstep;
use super::search::make_qx_quants;
use super::{
    GROUP_MAX_EPS, QK_K, f16_bytes, f16_value, low_byte_i8, nearest_int, super_block,
    super_block_mut,
};
use crate::QuantBlock;
use lowbit_dtype::GgmlType;

/// One Q6_K super-block of 256 elements (210 bytes), laid out as ggml's `block_q6_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ6K {
    /// Low four bits of the codes. In 128-element half `h`, byte `64h + l` (`l < 32`) holds
    /// elements `128h + l` (low nibble) and `128h + 64 + l` (high nibble); byte `64h + 32 + l`
    /// holds elements `128h + 32 + l` and `128h + 96 + l`.
    pub ql: [u8; QK_K / 2],
    /// High two bits of the codes: byte `32h + l` holds those of elements `128h + l`, `+ 32`,
    /// `+ 64` and `+ 96` at bit offsets 0, 2, 4 and 6.
    pub qh: [u8; QK_K / 4],
    /// Sixteen signed 8-bit sub-block scales.
    pub scales: [i8; QK_K / 16],
    /// Super-block scale (f16, little-endian).
    pub d: [u8; 2],
}

const _: () = assert!(size_of::<BlockQ6K>() == 210);

impl Default for BlockQ6K {
    fn default() -> Self {
        bytemuck::Zeroable::zeroed()
    }
}

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

/// A decoded code `(low | (high & 3) << 4) − 32` as `f32`.
#[inline]
fn code(low: u8, high: u8) -> f32 {
    f32::from(i8::try_from(low | ((high & 3) << 4)).expect("6 bits") - 32)
}

impl QuantBlock for BlockQ6K {
    const TYPE: GgmlType = GgmlType::Q6_K;
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
            for (h, o) in out.chunks_exact_mut(128).enumerate() {
                let ql = &b.ql[64 * h..64 * h + 64];
                let qh = &b.qh[32 * h..32 * h + 32];
                let sc = &b.scales[8 * h..8 * h + 8];
                for k in 0..32 {
                    let is = k / 16;
                    o[k] = d * f32::from(sc[is]) * code(ql[k] & 0xf, qh[k]);
                    o[k + 32] = d * f32::from(sc[is + 2]) * code(ql[k + 32] & 0xf, qh[k] >> 2);
                    o[k + 64] = d * f32::from(sc[is + 4]) * code(ql[k] >> 4, qh[k] >> 4);
                    o[k + 96] = d * f32::from(sc[is + 6]) * code(ql[k + 32] >> 4, qh[k] >> 6);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BlockQ6K;
    use crate::QuantBlock;
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

    #[test]
    fn hand_built_block_decodes() {
        let mut b = BlockQ6K {
            d: [0x00, 0x34], // 0.25
            ..Default::default()
        };
        b.scales[0] = -3;
        b.scales[13] = 5;
        b.ql[0] = 5; // element 0: low bits 5 ...
        b.qh[0] = 0b10; // ... high bits 2: code 37, value 37 − 32 = 5
        b.ql[64 + 16] = 7 << 4; // element 128 + 64 + 16 = 208 (sub-block 13): low bits 7 ...
        b.qh[32 + 16] = 0b11 << 4; // ... high bits 3: code 55, value 23
        let mut y = [0.0f32; 256];
        BlockQ6K::dequantize(&[b], &mut y);
        assert_eq!(y[0], 0.25 * -3.0 * 5.0);
        assert_eq!(y[1], 0.25 * -3.0 * -32.0, "code 0 is −32");
        assert_eq!(y[208], 0.25 * 5.0 * 23.0);
        assert_eq!(y[16], 0.0, "scale 0");
    }
}
