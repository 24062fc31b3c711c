//! The ternary types TQ1_0 and TQ2_0: 256 elements in {−1, 0, +1} times one f16 scale.
//!
//! Each dequantizer is ggml's `dequantize_row_tq1_0` / `dequantize_row_tq2_0`: the trit codes
//! 0, 1, 2 are unpacked, converted to `f32`, offset by one and multiplied by the scale.

use super::{Block, QK_K, f16_value};
use crate::GgmlType;

/// TQ1_0 (1.6875 bits per weight): five trits per byte in base 3, first trit most significant,
/// each byte stored as `ceil(v · 256 / 243)`.
/// `qs[0..32]` hold elements `m + 32n` (n = 0..5), `qs[32..48]` hold `160 + m + 16n`, and `qh`
/// holds four trits per byte (elements `240 + j + 4m`), shifted up one trit.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockTQ1_0 {
    /// Five trits per byte.
    pub qs: [u8; 48],
    /// Four trits per byte.
    pub qh: [u8; 4],
    /// Scale, f16.
    pub d: [u8; 2],
}

/// TQ2_0 (2.0625 bits per weight): in each 128-element half, byte `m` holds elements
/// `m, m + 32, m + 64, m + 96` at bits 0, 2, 4, 6; codes 0, 1, 2 mean −1, 0, +1.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockTQ2_0 {
    /// Four 2-bit codes per byte.
    pub qs: [u8; 64],
    /// Scale, f16.
    pub d: [u8; 2],
}

const _: () = assert!(size_of::<BlockTQ1_0>() == 54);
const _: () = assert!(size_of::<BlockTQ2_0>() == 66);

impl Default for BlockTQ1_0 {
    fn default() -> Self {
        bytemuck::Zeroable::zeroed()
    }
}

impl Default for BlockTQ2_0 {
    fn default() -> Self {
        bytemuck::Zeroable::zeroed()
    }
}

impl Block for BlockTQ1_0 {
    const TYPE: GgmlType = GgmlType::TQ1_0;
    const QK: usize = QK_K;

    fn dequantize(y: &[Self], x: &mut [f32]) {
        const POW3: [u8; 6] = [1, 3, 9, 27, 81, 243];
        let decode = |byte: u8, n: usize, d: f32| {
            let q = byte.wrapping_mul(POW3[n]);
            let t = (u16::from(q) * 3) >> 8;
            (f32::from(t) - 1.0) * d
        };
        for (y, x) in y.iter().zip(x.chunks_exact_mut(QK_K)) {
            let d = f16_value(y.d);
            let mut out = x.iter_mut();
            for n in 0..5 {
                for m in 0..32 {
                    *out.next().expect("256 outputs") = decode(y.qs[m], n, d);
                }
            }
            for n in 0..5 {
                for m in 0..16 {
                    *out.next().expect("256 outputs") = decode(y.qs[32 + m], n, d);
                }
            }
            for n in 0..4 {
                for j in 0..4 {
                    *out.next().expect("256 outputs") = decode(y.qh[j], n, d);
                }
            }
        }
    }
}

impl Block for BlockTQ2_0 {
    const TYPE: GgmlType = GgmlType::TQ2_0;
    const QK: usize = QK_K;

    fn dequantize(y: &[Self], x: &mut [f32]) {
        for (y, x) in y.iter().zip(x.chunks_exact_mut(QK_K)) {
            let d = f16_value(y.d);
            for (half, x) in x.chunks_exact_mut(128).enumerate() {
                for l in 0..4 {
                    for m in 0..32 {
                        let q = (y.qs[half * 32 + m] >> (2 * l)) & 3;
                        x[l * 32 + m] = (f32::from(q) - 1.0) * d;
                    }
                }
            }
        }
    }
}
