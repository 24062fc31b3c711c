//! F32, F16 and BF16 as one-element "blocks", so that every storage type goes through the same
//! dispatch.
//!
//! F16 and BF16 decode through ggml's own conversions in [`crate::f16`].

use super::Block;
use crate::GgmlType;
use crate::f16::{bf16_to_fp32, fp16_to_fp32};

/// One little-endian `f32`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockF32(pub [u8; 4]);
/// One little-endian IEEE half.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockF16(pub [u8; 2]);
/// One little-endian bfloat16.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockBF16(pub [u8; 2]);

const _: () = assert!(size_of::<BlockF32>() == 4);
const _: () = assert!(size_of::<BlockF16>() == 2);
const _: () = assert!(size_of::<BlockBF16>() == 2);

impl Block for BlockF32 {
    const TYPE: GgmlType = GgmlType::F32;
    const QK: usize = 1;
    fn dequantize(y: &[Self], x: &mut [f32]) {
        for (v, b) in x.iter_mut().zip(y) {
            *v = f32::from_le_bytes(b.0);
        }
    }
}

impl Block for BlockF16 {
    const TYPE: GgmlType = GgmlType::F16;
    const QK: usize = 1;
    fn dequantize(y: &[Self], x: &mut [f32]) {
        for (v, b) in x.iter_mut().zip(y) {
            *v = fp16_to_fp32(u16::from_le_bytes(b.0));
        }
    }
}

impl Block for BlockBF16 {
    const TYPE: GgmlType = GgmlType::BF16;
    const QK: usize = 1;
    fn dequantize(y: &[Self], x: &mut [f32]) {
        for (v, b) in x.iter_mut().zip(y) {
            *v = bf16_to_fp32(u16::from_le_bytes(b.0));
        }
    }
}
