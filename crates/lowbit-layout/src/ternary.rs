//! lowbit's ternary layout (`formats/ternary.md`): `weight` U8 `[N, K/4]`, element k of a row
//! in bits `2·(k mod 4)` of byte `k/4`, code `q+1` for q ∈ {−1, 0, +1}; `weight_scale` BF16
//! `[N]` (per channel) or `[1]` (per tensor); W = q · scale.

use crate::{Error, ScaleGranularity};
use std::ops::Range;

/// Packs codes (0, 1 or 2; `codes.len() == 4 * out.len()`) four per byte, first in the low bits.
pub fn pack(codes: &[u8], out: &mut [u8]) {
    todo!("helper: {} {}", codes.len(), out.len())
}

/// Unpacks `packed` into `codes` (`codes.len() == 4 * packed.len()`).
pub fn unpack(packed: &[u8], codes: &mut [u8]) {
    todo!("helper: {} {}", packed.len(), codes.len())
}

/// Decodes rows `rows` of a ternary weight `[n, k]` from its stored tensors (`weight`,
/// `weight_scale`, in [`crate::Scheme::stored`] order) into `out` (`rows.len() · k` values).
///
/// # Errors
/// Stored tensors of the wrong length, or a code 3.
pub fn decode(
    stored: &[&[u8]],
    scale: ScaleGranularity,
    n: u64,
    k: u64,
    rows: Range<u64>,
    out: &mut [f32],
) -> Result<(), Error> {
    todo!("helper: {} {scale:?} {n} {k} {rows:?} {}", stored.len(), out.len())
}
