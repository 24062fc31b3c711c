//! bitsandbytes NF4 (`formats/nf4.md`), as `quantize_4bit(quant_type="nf4", blocksize=64)` and
//! `QuantState.as_dict(packed=True)` store it.

use crate::Error;
use lowbit_dtype::Dtype;
use std::ops::Range;

/// The NF4 code table (`quant_map`), bitsandbytes' values.
pub const CODE: [f32; 16] = [0.0; 16];

/// bitsandbytes' signed 8-bit dynamic map (`nested_quant_map`, `create_dynamic_map(signed=True)`).
#[must_use]
pub fn nested_code() -> [f32; 256] {
    todo!("helper")
}

/// The `quant_state.bitsandbytes__nf4` JSON, byte for byte as bitsandbytes writes it
/// (Python's `json.dumps` separators; the nested offset as Python's shortest `repr`).
#[must_use]
pub fn quant_state_json(shape: [u64; 2], dtype: Dtype, nested_offset: Option<f32>) -> String {
    todo!("helper: {shape:?} {dtype} {nested_offset:?}")
}

/// Decodes rows `rows` of an NF4 weight `[n, k]` from its stored tensors, in
/// [`crate::Scheme::stored`] order.
///
/// # Errors
/// Stored tensors of the wrong length or quant-state JSON that disagrees with the shape.
pub fn decode(
    stored: &[&[u8]],
    double_quant: bool,
    n: u64,
    k: u64,
    rows: Range<u64>,
    out: &mut [f32],
) -> Result<(), Error> {
    todo!("helper: {} {double_quant} {n} {k} {rows:?} {}", stored.len(), out.len())
}
