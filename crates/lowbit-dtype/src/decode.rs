//! Decoding little-endian dense elements to `f32`.
//!
//! Half-precision elements go through ggml's conversions in [`crate::f16`], the same ones the
//! GGUF block decoders use, so an F16 tensor reads the same from safetensors as from GGUF.

use crate::f16::{bf16_to_fp32, fp16_to_fp32};
use crate::{Dtype, fp8};
use std::fmt;

/// The byte and element counts handed to [`decode_to_f32`] do not agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The dtype being decoded.
    pub dtype: Dtype,
    /// Bytes given.
    pub bytes: usize,
    /// Elements asked for.
    pub elements: usize,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes cannot hold {} elements of {}", self.bytes, self.elements, self.dtype)
    }
}

impl std::error::Error for DecodeError {}

fn map<const N: usize>(src: &[u8], dst: &mut [f32], f: impl Fn([u8; N]) -> f32) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(N)) {
        let mut b = [0u8; N];
        b.copy_from_slice(s);
        *d = f(b);
    }
}

/// Decodes `dst.len()` little-endian elements of `dtype` from `src` into `dst`.
///
/// Integers and booleans become their numeric value (`i64`/`u64` beyond 2^24 lose precision, as
/// any `f32` conversion does). `src` needs no particular alignment, so slices of a memory-mapped
/// file can be passed directly.
///
/// # Errors
/// When `src.len() != dst.len() * dtype.size()`.
pub fn decode_to_f32(dtype: Dtype, src: &[u8], dst: &mut [f32]) -> Result<(), DecodeError> {
    if dst.len().checked_mul(dtype.size()) != Some(src.len()) {
        return Err(DecodeError { dtype, bytes: src.len(), elements: dst.len() });
    }
    match dtype {
        Dtype::Bool | Dtype::U8 => map(src, dst, |[b]| f32::from(b)),
        Dtype::I8 => map(src, dst, |[b]| f32::from(b as i8)),
        Dtype::F8E4M3 => map(src, dst, |[b]| fp8::e4m3_to_f32(b)),
        Dtype::F8E5M2 => map(src, dst, |[b]| fp8::e5m2_to_f32(b)),
        Dtype::F8E8M0 => map(src, dst, |[b]| fp8::e8m0_to_f32(b)),
        Dtype::U16 => map(src, dst, |b| f32::from(u16::from_le_bytes(b))),
        Dtype::I16 => map(src, dst, |b| f32::from(i16::from_le_bytes(b))),
        Dtype::F16 => map(src, dst, |b| fp16_to_fp32(u16::from_le_bytes(b))),
        Dtype::BF16 => map(src, dst, |b| bf16_to_fp32(u16::from_le_bytes(b))),
        Dtype::U32 => map(src, dst, |b| u32::from_le_bytes(b) as f32),
        Dtype::I32 => map(src, dst, |b| i32::from_le_bytes(b) as f32),
        Dtype::F32 => map(src, dst, f32::from_le_bytes),
        Dtype::U64 => map(src, dst, |b| u64::from_le_bytes(b) as f32),
        Dtype::I64 => map(src, dst, |b| i64::from_le_bytes(b) as f32),
        Dtype::F64 => map(src, dst, |b| f64::from_le_bytes(b) as f32),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{DecodeError, decode_to_f32};
    use crate::Dtype;

    #[test]
    fn decodes_each_dtype() {
        let cases: [(Dtype, Vec<u8>, Vec<f32>); 8] = [
            (Dtype::BF16, vec![0x80, 0x3f, 0x00, 0xc0], vec![1.0, -2.0]),
            (Dtype::F16, vec![0x00, 0x3c, 0x00, 0xc0], vec![1.0, -2.0]),
            (Dtype::F32, 1.5f32.to_le_bytes().to_vec(), vec![1.5]),
            (Dtype::F64, (-0.25f64).to_le_bytes().to_vec(), vec![-0.25]),
            (Dtype::I8, vec![0xff, 0x7f], vec![-1.0, 127.0]),
            (Dtype::I64, (-5i64).to_le_bytes().to_vec(), vec![-5.0]),
            (Dtype::Bool, vec![0, 1], vec![0.0, 1.0]),
            (Dtype::F8E4M3, vec![0x38, 0xfe], vec![1.0, -448.0]),
        ];
        for (dtype, bytes, want) in cases {
            let mut got = vec![0.0; want.len()];
            decode_to_f32(dtype, &bytes, &mut got).unwrap();
            assert_eq!(got, want, "{dtype}");
        }
    }

    /// ggml's conversion decodes every half, NaNs included, to the bits the `half` crate gives.
    #[test]
    fn f16_decodes_every_half_as_the_half_crate_does() {
        let src: Vec<u8> = (0..=u16::MAX).flat_map(u16::to_le_bytes).collect();
        let mut got = vec![0.0f32; 1 << 16];
        decode_to_f32(Dtype::F16, &src, &mut got).unwrap();
        for (h, v) in (0..=u16::MAX).zip(&got) {
            let want = half::f16::from_bits(h).to_f32();
            assert_eq!(v.to_bits(), want.to_bits(), "{h:#06x}");
        }
    }

    #[test]
    fn rejects_mismatched_lengths() {
        let mut out = [0.0f32; 2];
        assert_eq!(
            decode_to_f32(Dtype::BF16, &[0; 3], &mut out),
            Err(DecodeError { dtype: Dtype::BF16, bytes: 3, elements: 2 })
        );
    }
}
