//! Hugging Face BitNet packing (`formats/bitnet.md`), as transformers' `BitLinear` stores it:
//! `weight` U8 `[N/4, K]`, bits `2i..2i+1` of packed row r hold row `i·N/4 + r` (code q+1);
//! `weight_scale` BF16 `[1]` holds 1/γ; W = q · γ.

use crate::Error;
use std::ops::Range;

/// Packs four quarters of codes (each `p·K` codes: rows `r0..r0+p` of quarter i) into `out`
/// (`p·K` bytes: packed rows `r0..r0+p`).
pub fn pack(quarters: [&[u8]; 4], out: &mut [u8]) {
    todo!("helper: {} {}", quarters.len(), out.len())
}

/// The `quantization_config` transformers reads for this layout (JSON).
#[must_use]
pub fn quantization_config() -> String {
    todo!("helper")
}

/// Decodes rows `rows` of the logical weight `[n, k]` from `weight`, `weight_scale`.
///
/// # Errors
/// Stored tensors of the wrong length, or a code 3.
pub fn decode(
    stored: &[&[u8]],
    n: u64,
    k: u64,
    rows: Range<u64>,
    out: &mut [f32],
) -> Result<(), Error> {
    todo!("helper: {} {n} {k} {rows:?} {}", stored.len(), out.len())
}
