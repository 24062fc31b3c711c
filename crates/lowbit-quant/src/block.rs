//! The quantizer trait and the runtime dispatch from a [`GgmlType`] to its block struct.
//!
//! The block structs, their layout and their dequantizers belong to `lowbit-dtype`
//! ([`lowbit_dtype::blocks`]); [`QuantBlock`] adds the two quantizers to each of them.

use lowbit_dtype::GgmlType;
use lowbit_dtype::blocks::Block;

/// A ggml block that lowbit can write: ggml's reference quantizer and a fast one.
///
/// The element count, the type and the dequantizer come from [`Block`].
pub(crate) trait QuantBlock: Block {
    /// ggml's reference quantizer, operation for operation. `x.len() == y.len() * QK`.
    fn quantize_ref(x: &[f32], y: &mut [Self]);

    /// The fast quantizer; must produce exactly the bytes of [`Self::quantize_ref`].
    fn quantize(x: &[f32], y: &mut [Self]) {
        Self::quantize_ref(x, y);
    }
}

/// Why a buffer cannot be quantized: the block error of `lowbit-dtype`, since a quantizer and a
/// dequantizer refuse the same things (a type without a block struct, lengths that are not
/// whole blocks).
pub use lowbit_dtype::BlockError as Error;

fn quantize_with<B: QuantBlock>(x: &[f32], out: &mut [u8]) -> Result<(), Error> {
    B::check_blocks(x.len(), out.len())?;
    crate::simd::quantize(x, bytemuck::cast_slice_mut::<u8, B>(out));
    Ok(())
}

#[cfg(test)]
fn quantize_baseline_with<B: QuantBlock>(x: &[f32], out: &mut [u8]) -> Result<(), Error> {
    B::check_blocks(x.len(), out.len())?;
    B::quantize(x, bytemuck::cast_slice_mut(out));
    Ok(())
}

fn quantize_ref_with<B: QuantBlock>(x: &[f32], out: &mut [u8]) -> Result<(), Error> {
    B::check_blocks(x.len(), out.len())?;
    B::quantize_ref(x, bytemuck::cast_slice_mut(out));
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
    lowbit_dtype::with_block!(ty, quantize_with(x, out), |t| Err(Error::Unsupported(t)))
}

/// [`quantize`] without the AVX2 dispatch: the fast path as compiled for the baseline target,
/// for tests that check both copies.
///
/// # Errors
/// As [`quantize`].
#[cfg(test)]
pub(crate) fn quantize_baseline(ty: GgmlType, x: &[f32], out: &mut [u8]) -> Result<(), Error> {
    lowbit_dtype::with_block!(ty, quantize_baseline_with(x, out), |t| Err(Error::Unsupported(t)))
}

/// The scalar reference quantizer behind [`quantize`], for tests and benchmarks.
///
/// # Errors
/// As [`quantize`].
pub fn quantize_ref(ty: GgmlType, x: &[f32], out: &mut [u8]) -> Result<(), Error> {
    lowbit_dtype::with_block!(ty, quantize_ref_with(x, out), |t| Err(Error::Unsupported(t)))
}

/// Whether [`quantize`] handles `ty`.
#[must_use]
pub fn supports_quantize(ty: GgmlType) -> bool {
    let r: Result<(), Error> =
        lowbit_dtype::with_block!(ty, supported(), |t| Err(Error::Unsupported(t)));
    r.is_ok()
}

#[cfg(test)]
mod tests {
    use super::supports_quantize;
    use lowbit_dtype::{GgmlType, supports_dequantize};

    /// Whatever lowbit writes, it can read back.
    #[test]
    fn every_quantized_type_can_be_dequantized() {
        for &ty in GgmlType::ALL {
            assert!(!supports_quantize(ty) || supports_dequantize(ty), "{ty}");
        }
    }
}
