//! Group-wise int4 (`formats/int4.md`): `weight` I8 `[N, K/2]`, low nibble = even k, two's
//! complement; `weight_scale` BF16 `[K/g, N]`; with `asym`, `weight_zero` BF16 `[K/g, N]`.

use crate::Error;
use std::ops::Range;

/// Packs signed codes (−8..=7; `codes.len() == 2 * out.len()`), even index in the low nibble.
pub fn pack(codes: &[i8], out: &mut [u8]) {
    todo!("helper: {} {}", codes.len(), out.len())
}

/// Unpacks `packed` into signed codes.
pub fn unpack(packed: &[u8], codes: &mut [i8]) {
    todo!("helper: {} {}", packed.len(), codes.len())
}

/// Decodes rows `rows` of an int4 weight `[n, k]` from `weight`, `weight_scale` (and
/// `weight_zero` when `asym`).
///
/// # Errors
/// Stored tensors of the wrong length.
pub fn decode(
    stored: &[&[u8]],
    group: u32,
    asym: bool,
    n: u64,
    k: u64,
    rows: Range<u64>,
    out: &mut [f32],
) -> Result<(), Error> {
    todo!("helper: {} {group} {asym} {n} {k} {rows:?} {}", stored.len(), out.len())
}
