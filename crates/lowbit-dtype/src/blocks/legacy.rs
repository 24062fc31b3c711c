//! The 32-element types Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0: one f16 scale (and for Q4_1 and Q5_1
//! an f16 minimum) per block of 32 elements.
//!
//! Each dequantizer is ggml's `dequantize_row_*`: codes are widened to integers, offset where the
//! type is symmetric, converted to `f32` and multiplied by the scale (then the minimum added), in
//! that order.

use super::{Block, f16_value};
use crate::GgmlType;

/// Elements per block (ggml's `QK4_0`, …, `QK8_0`).
const QK: usize = 32;

/// Q4_0: `d` (f16), then 16 bytes; byte `j` holds element `j` (low nibble) and `j + 16` (high).
/// Value = (q − 8)·d.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_0 {
    /// Scale, f16 little-endian.
    pub d: [u8; 2],
    /// Nibbles.
    pub qs: [u8; 16],
}

/// Q4_1: `d`, `m` (f16), then 16 bytes of nibbles as in Q4_0. Value = q·d + m.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_1 {
    /// Scale, f16.
    pub d: [u8; 2],
    /// Minimum, f16.
    pub m: [u8; 2],
    /// Nibbles.
    pub qs: [u8; 16],
}

/// Q5_0: `d`, then `qh` (bit `j` of the little-endian u32 is bit 4 of element `j`), then the low
/// nibbles as in Q4_0. Value = (q − 16)·d.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_0 {
    /// Scale, f16.
    pub d: [u8; 2],
    /// Fifth bits.
    pub qh: [u8; 4],
    /// Low nibbles.
    pub qs: [u8; 16],
}

/// Q5_1: `d`, `m`, `qh`, low nibbles. Value = q·d + m.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_1 {
    /// Scale, f16.
    pub d: [u8; 2],
    /// Minimum, f16.
    pub m: [u8; 2],
    /// Fifth bits.
    pub qh: [u8; 4],
    /// Low nibbles.
    pub qs: [u8; 16],
}

/// Q8_0: `d` (f16), then 32 signed bytes in order. Value = q·d.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_0 {
    /// Scale, f16.
    pub d: [u8; 2],
    /// Quants.
    pub qs: [i8; 32],
}

const _: () = assert!(size_of::<BlockQ4_0>() == 18);
const _: () = assert!(size_of::<BlockQ4_1>() == 20);
const _: () = assert!(size_of::<BlockQ5_0>() == 22);
const _: () = assert!(size_of::<BlockQ5_1>() == 24);
const _: () = assert!(size_of::<BlockQ8_0>() == 34);

impl Block for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const QK: usize = QK;

    fn dequantize(y: &[Self], x: &mut [f32]) {
        for (y, x) in y.iter().zip(x.chunks_exact_mut(QK)) {
            let d = f16_value(y.d);
            for j in 0..QK / 2 {
                x[j] = (i32::from(y.qs[j] & 0x0f) - 8) as f32 * d;
                x[j + QK / 2] = (i32::from(y.qs[j] >> 4) - 8) as f32 * d;
            }
        }
    }
}

impl Block for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const QK: usize = QK;

    fn dequantize(y: &[Self], x: &mut [f32]) {
        for (y, x) in y.iter().zip(x.chunks_exact_mut(QK)) {
            let d = f16_value(y.d);
            let m = f16_value(y.m);
            for j in 0..QK / 2 {
                x[j] = f32::from(y.qs[j] & 0x0f) * d + m;
                x[j + QK / 2] = f32::from(y.qs[j] >> 4) * d + m;
            }
        }
    }
}

impl Block for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const QK: usize = QK;

    fn dequantize(y: &[Self], x: &mut [f32]) {
        for (y, x) in y.iter().zip(x.chunks_exact_mut(QK)) {
            let d = f16_value(y.d);
            let qh = u32::from_le_bytes(y.qh);
            for j in 0..QK / 2 {
                let h0 = ((qh >> j) << 4) & 0x10;
                let h1 = (qh >> (j + 12)) & 0x10;
                #[expect(clippy::cast_possible_wrap, reason = "at most 31")]
                let x0 = (u32::from(y.qs[j] & 0x0f) | h0) as i32 - 16;
                #[expect(clippy::cast_possible_wrap, reason = "at most 31")]
                let x1 = (u32::from(y.qs[j] >> 4) | h1) as i32 - 16;
                x[j] = x0 as f32 * d;
                x[j + QK / 2] = x1 as f32 * d;
            }
        }
    }
}

impl Block for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const QK: usize = QK;

    fn dequantize(y: &[Self], x: &mut [f32]) {
        for (y, x) in y.iter().zip(x.chunks_exact_mut(QK)) {
            let d = f16_value(y.d);
            let m = f16_value(y.m);
            let qh = u32::from_le_bytes(y.qh);
            for j in 0..QK / 2 {
                let h0 = ((qh >> j) << 4) & 0x10;
                let h1 = (qh >> (j + 12)) & 0x10;
                x[j] = (u32::from(y.qs[j] & 0x0f) | h0) as f32 * d + m;
                x[j + QK / 2] = (u32::from(y.qs[j] >> 4) | h1) as f32 * d + m;
            }
        }
    }
}

impl Block for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const QK: usize = QK;

    fn dequantize(y: &[Self], x: &mut [f32]) {
        for (y, x) in y.iter().zip(x.chunks_exact_mut(QK)) {
            let d = f16_value(y.d);
            for (v, &q) in x.iter_mut().zip(&y.qs) {
                *v = f32::from(q) * d;
            }
        }
    }
}
