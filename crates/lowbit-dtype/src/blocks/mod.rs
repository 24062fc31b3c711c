//! ggml's packed block types, laid out byte for byte, and their decoding to `f32`.
//!
//! Every block type that lowbit reads or writes has a `#[repr(C)]` struct here (`BlockQ4_0`,
//! `BlockQ4K`, …) whose size is asserted at compile time against ggml's `block_*` struct, and an
//! implementation of [`Block`] whose `dequantize` follows ggml's `dequantize_row_*` operation by
//! operation, so that the decoded `f32` bits are ggml's (the interop tests check this against
//! ggml's C code and the `gguf` Python package). The dense types F32, F16 and BF16 are
//! one-element "blocks", so that every storage type goes through the same dispatch.
//!
//! [`dequantize`] picks the struct for a runtime [`GgmlType`]. The quantizers, which need these
//! structs too, live in `lowbit-quant` and are implemented on the structs defined here.

mod dense;
mod kquants;
mod legacy;
mod ternary;

pub use dense::{BlockBF16, BlockF16, BlockF32};
pub use kquants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, K_SCALE_SIZE, QK_K, get_scale_min_k4,
};
pub use legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};
pub use ternary::{BlockTQ1_0, BlockTQ2_0};

use crate::GgmlType;
use crate::f16::fp16_to_fp32;
use std::fmt;

/// A ggml block: `QK` elements packed into `size_of::<Self>()` bytes, with ggml's decoder.
pub trait Block: bytemuck::Pod {
    /// The ggml type.
    const TYPE: GgmlType;
    /// Elements per block.
    const QK: usize;

    /// ggml's dequantizer. `x.len() == y.len() * QK`.
    fn dequantize(y: &[Self], x: &mut [f32]);

    /// Checks that `elements` values and `bytes` bytes are the same whole number of blocks.
    ///
    /// # Errors
    /// [`BlockError::Length`] when they are not.
    fn check_blocks(elements: usize, bytes: usize) -> Result<(), BlockError> {
        if elements.is_multiple_of(Self::QK) && elements / Self::QK * size_of::<Self>() == bytes {
            return Ok(());
        }
        Err(BlockError::Length {
            ty: Self::TYPE,
            elements,
            bytes,
            block: Self::QK,
            type_size: size_of::<Self>(),
        })
    }
}

/// Why a buffer of packed blocks cannot be decoded (or, in `lowbit-quant`, encoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockError {
    /// lowbit has no dequantizer (or quantizer) for this type.
    Unsupported(GgmlType),
    /// The element count is not a whole number of blocks, or the buffers disagree.
    Length {
        /// Type.
        ty: GgmlType,
        /// Elements given.
        elements: usize,
        /// Bytes given.
        bytes: usize,
        /// Elements per block.
        block: usize,
        /// Bytes per block.
        type_size: usize,
    },
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockError::Unsupported(ty) => write!(f, "{ty} is not supported"),
            BlockError::Length { ty, elements, bytes, block, type_size } => write!(
                f,
                "{ty}: {elements} elements and {bytes} bytes do not form whole blocks of {block} \
                 elements / {type_size} bytes"
            ),
        }
    }
}

impl std::error::Error for BlockError {}

/// `GGML_FP16_TO_FP32` of a little-endian half.
#[inline(always)]
fn f16_value(b: [u8; 2]) -> f32 {
    fp16_to_fp32(u16::from_le_bytes(b))
}

/// The one table from a [`GgmlType`] to its block struct: `with_block!(ty, f(args…), other)`
/// calls `f::<BlockX>(args…)` for the block struct of `ty`, or evaluates `other(ty)` for a type
/// without one. The dequantizers here and the quantizers of `lowbit-quant` both dispatch
/// through it, so a type cannot be added to one and forgotten in the other.
#[macro_export]
macro_rules! with_block {
    ($ty:expr, $f:ident ($($args:expr),*), $other:expr) => {
        match $ty {
            $crate::GgmlType::F32 => $f::<$crate::blocks::BlockF32>($($args),*),
            $crate::GgmlType::F16 => $f::<$crate::blocks::BlockF16>($($args),*),
            $crate::GgmlType::BF16 => $f::<$crate::blocks::BlockBF16>($($args),*),
            $crate::GgmlType::Q4_0 => $f::<$crate::blocks::BlockQ4_0>($($args),*),
            $crate::GgmlType::Q4_1 => $f::<$crate::blocks::BlockQ4_1>($($args),*),
            $crate::GgmlType::Q5_0 => $f::<$crate::blocks::BlockQ5_0>($($args),*),
            $crate::GgmlType::Q5_1 => $f::<$crate::blocks::BlockQ5_1>($($args),*),
            $crate::GgmlType::Q8_0 => $f::<$crate::blocks::BlockQ8_0>($($args),*),
            $crate::GgmlType::Q2_K => $f::<$crate::blocks::BlockQ2K>($($args),*),
            $crate::GgmlType::Q3_K => $f::<$crate::blocks::BlockQ3K>($($args),*),
            $crate::GgmlType::Q4_K => $f::<$crate::blocks::BlockQ4K>($($args),*),
            $crate::GgmlType::Q5_K => $f::<$crate::blocks::BlockQ5K>($($args),*),
            $crate::GgmlType::Q6_K => $f::<$crate::blocks::BlockQ6K>($($args),*),
            $crate::GgmlType::TQ1_0 => $f::<$crate::blocks::BlockTQ1_0>($($args),*),
            $crate::GgmlType::TQ2_0 => $f::<$crate::blocks::BlockTQ2_0>($($args),*),
            other => $other(other),
        }
    };
}

fn dequantize_with<B: Block>(bytes: &[u8], out: &mut [f32]) -> Result<(), BlockError> {
    B::check_blocks(out.len(), bytes.len())?;
    B::dequantize(bytemuck::cast_slice(bytes), out);
    Ok(())
}

fn supported<B: Block>() -> Result<GgmlType, BlockError> {
    Ok(B::TYPE)
}

/// Decodes packed blocks of `ty` to `f32`, exactly as ggml's `dequantize_row_*` does.
///
/// `bytes` needs no particular alignment (every block struct is made of bytes), so slices of a
/// memory-mapped file can be passed directly.
///
/// # Errors
/// An unsupported type, or lengths that do not form whole blocks.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), BlockError> {
    crate::with_block!(ty, dequantize_with(bytes, out), |t| Err(BlockError::Unsupported(t)))
}

/// Whether [`dequantize`] handles `ty`.
#[must_use]
pub fn supports_dequantize(ty: GgmlType) -> bool {
    let r: Result<GgmlType, BlockError> =
        crate::with_block!(ty, supported(), |t| Err(BlockError::Unsupported(t)));
    r.is_ok()
}

#[cfg(test)]
mod tests {
    use super::{BlockError, dequantize, supports_dequantize};
    use crate::GgmlType;

    #[test]
    fn every_dispatched_type_has_the_table_sizes() {
        for &ty in GgmlType::ALL.iter().filter(|&&t| supports_dequantize(t)) {
            let mut out = vec![0.0f32; 2 * ty.block_size()];
            let bytes = vec![0u8; 2 * ty.type_size()];
            assert_eq!(dequantize(ty, &bytes, &mut out), Ok(()), "{ty}");
            assert!(out.iter().all(|&v| v == 0.0), "{ty}: zero bytes decode to zeros");
        }
    }

    #[test]
    fn rejects_partial_blocks_and_unsupported_types() {
        let mut out = [0.0f32; 32];
        assert_eq!(
            dequantize(GgmlType::Q8_0, &[0; 33], &mut out),
            Err(BlockError::Length {
                ty: GgmlType::Q8_0,
                elements: 32,
                bytes: 33,
                block: 32,
                type_size: 34
            })
        );
        assert!(dequantize(GgmlType::Q4_K, &[0; 144], &mut out).is_err(), "32 of 256 elements");
        assert_eq!(
            dequantize(GgmlType::IQ4_NL, &[0; 18], &mut out),
            Err(BlockError::Unsupported(GgmlType::IQ4_NL))
        );
        assert!(!supports_dequantize(GgmlType::Q8_1));
    }
}
