//! bitsandbytes NF4, byte for byte as `quantize_4bit(quant_type="nf4", blocksize=64)` on CPU.

/// Quantizes `x` (a run of whole 64-blocks, except possibly the tensor's last one) into
/// `packed` (`x.len().div_ceil(2)` bytes, first element in the high nibble, an odd tail padded
/// with code 7) and `absmax` (one per block).
pub fn quantize(x: &[f32], packed: &mut [u8], absmax: &mut [f32]) {
    todo!("helper: {} {} {}", x.len(), packed.len(), absmax.len())
}

/// The double-quantization offset: the mean of all of a tensor's absmax values, as bitsandbytes
/// computes it.
#[must_use]
pub fn mean(absmax: &[f32]) -> f32 {
    todo!("helper: {}", absmax.len())
}

/// Double quantization of a run of absmax values (whole nested blocks of 256, except possibly
/// the last): `codes` one byte per absmax, `nested_absmax` one per nested block.
pub fn double_quant(absmax: &[f32], offset: f32, codes: &mut [u8], nested_absmax: &mut [f32]) {
    todo!("helper: {} {offset} {} {}", absmax.len(), codes.len(), nested_absmax.len())
}
