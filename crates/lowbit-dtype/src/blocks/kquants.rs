//! ggml's K-quant blocks Q2_K, Q3_K, Q4_K, Q5_K and Q6_K: super-blocks of 256 elements, cut
//! into sub-blocks of 16 or 32 that each have a small integer scale (and for Q2_K, Q4_K and Q5_K
//! a minimum), themselves scaled by one or two f16 values per super-block.
//!
//! Each struct documents where every code, scale and minimum sits. Each dequantizer is ggml's
//! `dequantize_row_q*_K`: the codes and sub-block scales are unpacked, and every value is
//! `d·sc·q − dmin·m` (or `d·sc·q`) with the products formed in ggml's order.

use super::{Block, f16_value};
use crate::GgmlType;

/// Elements per super-block (ggml's `QK_K`).
pub const QK_K: usize = 256;

/// Bytes of packed 6-bit scales and mins in Q4_K and Q5_K (ggml's `K_SCALE_SIZE`).
pub const K_SCALE_SIZE: usize = 12;

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (0..8) of Q4_K / Q5_K.
///
/// Sub-blocks 0..4 keep theirs in the low six bits of bytes `j` and `j + 4`; sub-blocks 4..8
/// keep the low four bits in the two nibbles of byte `j + 4` and the top two bits in bits 6–7
/// of bytes `j − 4` (scale) and `j` (min).
#[must_use]
#[inline(always)]
pub fn get_scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// The 256 outputs of super-block `i`.
#[inline]
fn super_block_mut(x: &mut [f32], i: usize) -> &mut [f32; QK_K] {
    (&mut x[i * QK_K..(i + 1) * QK_K]).try_into().expect("a whole super-block")
}

/// `int` to `float` as C converts it; every value here is small enough to be exact.
#[inline(always)]
#[expect(clippy::cast_precision_loss, reason = "small integers, exact in f32")]
fn fl(v: i32) -> f32 {
    v as f32
}

/// One Q2_K super-block of 256 elements (84 bytes), laid out as ggml's `block_q2_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ2K {
    /// Per sub-block: the 4-bit scale in the low nibble, the 4-bit min in the high nibble.
    pub scales: [u8; QK_K / 16],
    /// 2-bit codes: in 128-element half `h`, byte `32h + l` holds elements `128h + l`, `+ 32`,
    /// `+ 64` and `+ 96` at bit offsets 0, 2, 4 and 6.
    pub qs: [u8; QK_K / 4],
    /// Scale of the sub-block scales (f16, little-endian).
    pub d: [u8; 2],
    /// Scale of the sub-block mins (f16, little-endian).
    pub dmin: [u8; 2],
}

const _: () = assert!(size_of::<BlockQ2K>() == 84);

impl Default for BlockQ2K {
    fn default() -> Self {
        bytemuck::Zeroable::zeroed()
    }
}

impl Block for BlockQ2K {
    const TYPE: GgmlType = GgmlType::Q2_K;
    const QK: usize = QK_K;

    fn dequantize(y: &[Self], x: &mut [f32]) {
        for (i, b) in y.iter().enumerate() {
            let out = super_block_mut(x, i);
            let d = f16_value(b.d);
            let min = f16_value(b.dmin);
            // Output runs 16 at a time: in half h, shift group g, elements 128h + 32g + 0..16 and
            // then 128h + 32g + 16..32, each with its own sub-block scale.
            for (h, (q, o)) in b.qs.chunks_exact(32).zip(out.chunks_exact_mut(128)).enumerate() {
                for (g, o) in o.chunks_exact_mut(32).enumerate() {
                    let shift = 2 * g;
                    for (part, o) in o.chunks_exact_mut(16).enumerate() {
                        let sc = b.scales[8 * h + 2 * g + part];
                        let dl = d * f32::from(sc & 0xf);
                        let ml = min * f32::from(sc >> 4);
                        for (k, o) in o.iter_mut().enumerate() {
                            *o = dl * f32::from((q[16 * part + k] >> shift) & 3) - ml;
                        }
                    }
                }
            }
        }
    }
}

/// One Q3_K super-block of 256 elements (110 bytes), laid out as ggml's `block_q3_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ3K {
    /// Third bits of the codes: bit `b` of byte `l` belongs to element `32b + l`. A set bit
    /// means the code is 0..=3; a clear bit subtracts 4.
    pub hmask: [u8; QK_K / 8],
    /// Low two bits of the codes, arranged as Q2_K's `qs`.
    pub qs: [u8; QK_K / 4],
    /// Sixteen 6-bit scales, offset by 32. The low four bits of scale `j` are the low nibble of
    /// byte `j` (`j < 8`) or the high nibble of byte `j − 8`; its top two bits sit in byte
    /// `8 + j % 4` at bit offset `2·(j / 4)`.
    pub scales: [u8; 12],
    /// Super-block scale (f16, little-endian).
    pub d: [u8; 2],
}

const _: () = assert!(size_of::<BlockQ3K>() == 110);

impl Default for BlockQ3K {
    fn default() -> Self {
        bytemuck::Zeroable::zeroed()
    }
}

impl BlockQ3K {
    /// The 6-bit scale of sub-block `j` (0..16), still offset by 32.
    #[must_use]
    #[inline(always)]
    pub fn scale(&self, j: usize) -> u8 {
        let low = if j < 8 { self.scales[j] & 0xf } else { self.scales[j - 8] >> 4 };
        low | (((self.scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)
    }
}

impl Block for BlockQ3K {
    const TYPE: GgmlType = GgmlType::Q3_K;
    const QK: usize = QK_K;

    fn dequantize(y: &[Self], x: &mut [f32]) {
        for (i, b) in y.iter().enumerate() {
            let out = super_block_mut(x, i);
            let d_all = f16_value(b.d);
            for (h, (q, o)) in b.qs.chunks_exact(32).zip(out.chunks_exact_mut(128)).enumerate() {
                for (g, o) in o.chunks_exact_mut(32).enumerate() {
                    let shift = 2 * g;
                    let m = 1u8 << (4 * h + g);
                    for (part, o) in o.chunks_exact_mut(16).enumerate() {
                        let sc = i32::from(b.scale(8 * h + 2 * g + part)) - 32;
                        let dl = d_all * fl(sc);
                        for (k, o) in o.iter_mut().enumerate() {
                            let idx = 16 * part + k;
                            let high = if b.hmask[idx] & m != 0 { 0 } else { 4 };
                            let code = i32::from((q[idx] >> shift) & 3) - high;
                            *o = dl * fl(code);
                        }
                    }
                }
            }
        }
    }
}

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

impl Block for BlockQ4K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const QK: usize = QK_K;

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

impl Block for BlockQ5K {
    const TYPE: GgmlType = GgmlType::Q5_K;
    const QK: usize = QK_K;

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

/// A decoded code `(low | (high & 3) << 4) − 32` as `f32`.
#[inline]
fn code(low: u8, high: u8) -> f32 {
    f32::from(i8::try_from(low | ((high & 3) << 4)).expect("6 bits") - 32)
}

impl Block for BlockQ6K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    const QK: usize = QK_K;

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
    use super::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K};
    use crate::blocks::Block;

    #[test]
    fn q2_k_hand_built_block_decodes() {
        let mut b = BlockQ2K {
            d: [0x00, 0x38],    // 0.5
            dmin: [0x00, 0x34], // 0.25
            ..Default::default()
        };
        b.scales[0] = 0x32; // sub-block 0: scale 2, min 3
        b.scales[13] = 0x1f; // sub-block 13: scale 15, min 1
        b.qs[0] = 0b11; // element 0: code 3
        b.qs[32 + 23] = 0b10 << 4; // element 128 + 64 + 23 = 215 (sub-block 13): code 2
        let mut y = [0.0f32; 256];
        BlockQ2K::dequantize(&[b], &mut y);
        assert_eq!(y[0], 0.5 * 2.0 * 3.0 - 0.25 * 3.0);
        assert_eq!(y[1], -0.75);
        assert_eq!(y[215], 0.5 * 15.0 * 2.0 - 0.25);
        assert_eq!(y[208], -0.25);
        assert_eq!(y[16], 0.0);
    }

    #[test]
    fn q3_k_hand_built_block_decodes() {
        let mut b = BlockQ3K {
            d: [0x00, 0x38], // 0.5
            ..Default::default()
        };
        // Sub-block 0: 6-bit scale 35 (3 after the offset): low nibble in byte 0, top bits 0b10
        // in bits 0–1 of byte 8.
        b.scales[0] = 35 & 0xf;
        b.scales[8] = 35 >> 4;
        // Sub-block 13: scale 20 (−12): low nibble in the high nibble of byte 5, top bits 0b01
        // in bits 6–7 of byte 9. Every other scale is 0 (−32).
        b.scales[5] = (20 & 0xf) << 4;
        b.scales[9] = (20 >> 4) << 6;
        b.qs[0] = 0b10; // element 0: low bits 2 ...
        b.hmask[0] = 1; // ... high bit set: code 2
        b.qs[32 + 23] = 0b11 << 4; // element 215 (half 1, group 2, l 23): low bits 3 ...
        b.hmask[23] = 1 << 6; // ... high bit set: code 3
        let mut y = [0.0f32; 256];
        BlockQ3K::dequantize(&[b], &mut y);
        assert_eq!(y[0], 0.5 * 3.0 * 2.0);
        assert_eq!(y[1], 0.5 * 3.0 * -4.0, "a clear high bit subtracts 4");
        assert_eq!(y[215], 0.5 * -12.0 * 3.0);
        assert_eq!(y[16], 0.5 * -32.0 * -4.0);
    }

    #[test]
    fn q4_k_hand_built_block_decodes() {
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

    #[test]
    fn q5_k_hand_built_block_decodes() {
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

    #[test]
    fn q6_k_hand_built_block_decodes() {
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
