//! The block trait and the runtime dispatch from a [`GgmlType`] to its block struct.

use lowbit_dtype::GgmlType;

/// A ggml block: `QK` elements packed into `size_of::<Self>()` bytes.
pub(crate) trait QuantBlock: bytemuck::Pod {
    /// The ggml type.
    const TYPE: GgmlType;
    /// Elements per block.
    const QK: usize;

    /// ggml's reference quantizer, operation for operation. `x.len() == y.len() * QK`.
    fn quantize_ref(x: &[f32], y: &mut [Self]);

    /// The fast quantizer; must produce exactly the bytes of [`Self::quantize_ref`].
    fn quantize(x: &[f32], y: &mut [Self]) {
        Self::quantize_ref(x, y);
    }

    /// ggml's dequantizer. `x.len() == y.len() * QK`.
    fn dequantize(y: &[Self], x: &mut [f32]);
}

/// Why a buffer cannot be (de)quantized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// lowbit has no quantizer (or dequantizer) for this type.
    #[error("{0} is not supported")]
    Unsupported(GgmlType),
    /// The element count is not a whole number of blocks, or the buffers disagree.
    #[error(
        "{ty}: {elements} elements and {bytes} bytes do not form whole blocks of {block} elements / {type_size} bytes"
    )]
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

fn blocks<B: QuantBlock>(x_len: usize, bytes: usize) -> Result<(), Error> {
    let ok = x_len.is_multiple_of(B::QK) && x_len / B::QK * size_of::<B>() == bytes;
    if ok {
        Ok(())
    } else {
        Err(Error::Length {
            ty: B::TYPE,
            elements: x_len,
            bytes,
            block: B::QK,
            type_size: size_of::<B>(),
        })
    }
}

macro_rules! dispatch {
    ($ty:expr, $f:ident, $($args:expr),*) => {
        match $ty {
            GgmlType::F32 => $f::<crate::dense::BlockF32>($($args),*),
            GgmlType::F16 => $f::<crate::dense::BlockF16>($($args),*),
            GgmlType::BF16 => $f::<crate::dense::BlockBF16>($($args),*),
            GgmlType::Q4_0 => $f::<crate::legacy::BlockQ4_0>($($args),*),
            GgmlType::Q4_1 => $f::<crate::legacy::BlockQ4_1>($($args),*),
            GgmlType::Q5_0 => $f::<crate::legacy::BlockQ5_0>($($args),*),
            GgmlType::Q5_1 => $f::<crate::legacy::BlockQ5_1>($($args),*),
            GgmlType::Q8_0 => $f::<crate::legacy::BlockQ8_0>($($args),*),
            GgmlType::Q2_K => $f::<crate::kquants::BlockQ2K>($($args),*),
            GgmlType::Q3_K => $f::<crate::kquants::BlockQ3K>($($args),*),
            GgmlType::Q4_K => $f::<crate::kquants::BlockQ4K>($($args),*),
            GgmlType::Q5_K => $f::<crate::kquants::BlockQ5K>($($args),*),
            GgmlType::Q6_K => $f::<crate::kquants::BlockQ6K>($($args),*),
            GgmlType::TQ1_0 => $f::<crate::ternary::BlockTQ1_0>($($args),*),
            GgmlType::TQ2_0 => $f::<crate::ternary::BlockTQ2_0>($($args),*),
            other => Err(Error::Unsupported(other)),
        }
    };
}

fn quantize_with<B: QuantBlock>(x: &[f32], out: &mut [u8]) -> Result<(), Error> {
    blocks::<B>(x.len(), out.len())?;
    crate::simd::quantize(x, bytemuck::cast_slice_mut::<u8, B>(out));
    Ok(())
}

fn quantize_baseline_with<B: QuantBlock>(x: &[f32], out: &mut [u8]) -> Result<(), Error> {
    blocks::<B>(x.len(), out.len())?;
    B::quantize(x, bytemuck::cast_slice_mut(out));
    Ok(())
}

fn quantize_ref_with<B: QuantBlock>(x: &[f32], out: &mut [u8]) -> Result<(), Error> {
    blocks::<B>(x.len(), out.len())?;
    B::quantize_ref(x, bytemuck::cast_slice_mut(out));
    Ok(())
}

fn dequantize_with<B: QuantBlock>(bytes: &[u8], out: &mut [f32]) -> Result<(), Error> {
    blocks::<B>(out.len(), bytes.len())?;
    B::dequantize(bytemuck::cast_slice(bytes), out);
    Ok(())
}

fn supported<B: QuantBlock>() -> Result<(), Error> {
    Ok(())
}

/// Quantizes `x` (a whole number of blocks, usually one or more rows) into `out`, which must be
/// exactly the packed size. Output bytes equal ggml's `ggml_quantize_chunk` without an
/// importance matrix.
///
/// # Errors
/// An unsupported type, or lengths that do not form whole blocks.
pub fn quantize(ty: GgmlType, x: &[f32], out: &mut [u8]) -> Result<(), Error> {
    dispatch!(ty, quantize_with, x, out)
}

/// [`quantize`] without the AVX2 dispatch: the fast path as compiled for the baseline target,
/// for tests that check both copies.
///
/// # Errors
/// As [`quantize`].
pub fn quantize_baseline(ty: GgmlType, x: &[f32], out: &mut [u8]) -> Result<(), Error> {
    dispatch!(ty, quantize_baseline_with, x, out)
}

/// The scalar reference quantizer behind [`quantize`], for tests and benchmarks.
///
/// # Errors
/// As [`quantize`].
pub fn quantize_ref(ty: GgmlType, x: &[f32], out: &mut [u8]) -> Result<(), Error> {
    dispatch!(ty, quantize_ref_with, x, out)
}

/// Decodes packed blocks to `f32`, exactly as ggml's `dequantize_row_*` does.
///
/// # Errors
/// An unsupported type, or lengths that do not form whole blocks.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), Error> {
    dispatch!(ty, dequantize_with, bytes, out)
}

/// Whether [`quantize`] and [`dequantize`] handle `ty`.
#[must_use]
pub fn supports_quantize(ty: GgmlType) -> bool {
    let r: Result<(), Error> = dispatch!(ty, supported,);
    r.is_ok()
}
