//! lowbit's ternary layout (`formats/ternary.md`): `weight` U8 `[N, K/4]`, element k of a row
//! in bits `2·(k mod 4)` of byte `k/4`, code `q+1` for q ∈ {−1, 0, +1}; `weight_scale` BF16
//! `[N]` (per channel) or `[1]` (per tensor); W = q · scale.

use crate::error::{check_request, mul};
use crate::{Error, ScaleGranularity, check_len};
use lowbit_dtype::f16::bf16_to_fp32;
use std::ops::Range;

/// Packs codes (0, 1 or 2; `codes.len() == 4 * out.len()`) four per byte, first in the low bits.
/// Only the low two bits of each code are used; extra codes or bytes are left alone.
#[inline]
pub fn pack(codes: &[u8], out: &mut [u8]) {
    for (b, c) in out.iter_mut().zip(codes.chunks_exact(4)) {
        *b = (c[0] & 3) | (c[1] & 3) << 2 | (c[2] & 3) << 4 | (c[3] & 3) << 6;
    }
}

/// Unpacks `packed` into `codes` (`codes.len() == 4 * packed.len()`; extra codes are left
/// alone).
pub fn unpack(packed: &[u8], codes: &mut [u8]) {
    for (&b, c) in packed.iter().zip(codes.chunks_exact_mut(4)) {
        c[0] = b & 3;
        c[1] = (b >> 2) & 3;
        c[2] = (b >> 4) & 3;
        c[3] = b >> 6;
    }
}

/// Whether any of the four 2-bit codes of any byte of `packed` is 3 (no ternary value).
pub(crate) fn has_code3(packed: &[u8]) -> bool {
    packed.iter().fold(0u8, |acc, &b| acc | (b & (b >> 1) & 0x55)) != 0
}

/// The first `(index, code)` of a 3 in `packed`, for the error message.
pub(crate) fn first_code3(packed: &[u8]) -> Option<usize> {
    let byte = packed.iter().position(|&b| b & (b >> 1) & 0x55 != 0)?;
    let b = packed[byte];
    let lane = (0..4).find(|i| (b >> (2 * i)) & 3 == 3)?;
    Some(byte * 4 + lane)
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
    let rows = check_request(stored, 2, n, k, &rows, out)?;
    if !k.is_multiple_of(4) {
        return Err(Error::Value {
            tensor: "weight".into(),
            reason: format!("row length {k} is not a multiple of 4"),
        });
    }
    let (weight, scales) = (stored[0], stored[1]);
    check_len("weight", weight, mul(n, k / 4)?)?;
    let scale_count = match scale {
        ScaleGranularity::Channel => n,
        ScaleGranularity::Tensor => 1,
    };
    check_len("weight_scale", scales, mul(scale_count, 2)?)?;
    if k == 0 || rows.is_empty() {
        return Ok(());
    }
    // Lengths checked and n ≥ 1: n·k/4 bytes exist, so k/4 fits in usize.
    let kb = weight.len() / (n as usize);
    for (row, out) in rows.zip(out.chunks_exact_mut(kb * 4)) {
        let packed = &weight[row * kb..(row + 1) * kb];
        if has_code3(packed) {
            let at = first_code3(packed).unwrap_or(0);
            return Err(Error::Value {
                tensor: "weight".into(),
                reason: format!("code 3 at row {row}, column {at} is not a ternary code"),
            });
        }
        let si = match scale {
            ScaleGranularity::Channel => row,
            ScaleGranularity::Tensor => 0,
        };
        let s = bf16_to_fp32(u16::from_le_bytes([scales[2 * si], scales[2 * si + 1]]));
        let table = [-s, 0.0, s, 0.0];
        for (&b, o) in packed.iter().zip(out.chunks_exact_mut(4)) {
            o[0] = table[usize::from(b & 3)];
            o[1] = table[usize::from((b >> 2) & 3)];
            o[2] = table[usize::from((b >> 4) & 3)];
            o[3] = table[usize::from(b >> 6)];
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{decode, pack, unpack};
    use crate::{Error, ScaleGranularity};

    #[test]
    fn bit_positions() {
        // Element k in bits 2·(k mod 4) of byte k/4: codes [2, 1, 0, 2 | 0, 0, 1, 2].
        let mut out = [0u8; 2];
        pack(&[2, 1, 0, 2, 0, 0, 1, 2], &mut out);
        assert_eq!(out, [0b10_00_01_10, 0b10_01_00_00]);
        let mut codes = [9u8; 8];
        unpack(&out, &mut codes);
        assert_eq!(codes, [2, 1, 0, 2, 0, 0, 1, 2]);
    }

    #[test]
    fn round_trip_every_byte() {
        let bytes: Vec<u8> = (0..=255u8).collect();
        let mut codes = vec![0u8; 1024];
        unpack(&bytes, &mut codes);
        let mut back = vec![0u8; 256];
        pack(&codes, &mut back);
        assert_eq!(back, bytes);
    }

    #[test]
    fn decodes_hand_written_bytes() {
        // Two rows of 4: row 0 = [+1, 0, −1, 0] · 0.5, row 1 = [−1, −1, +1, +1] · 2.
        let weight = [0b01_00_01_10, 0b10_10_00_00];
        let scale: Vec<u8> = [0x3f00u16, 0x4000].iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut out = [0.0f32; 8];
        decode(&[&weight, &scale], ScaleGranularity::Channel, 2, 4, 0..2, &mut out).unwrap();
        assert_eq!(out, [0.5, 0.0, -0.5, 0.0, -2.0, -2.0, 2.0, 2.0]);
        let mut one = [0.0f32; 4];
        decode(&[&weight, &scale[..2]], ScaleGranularity::Tensor, 2, 4, 1..2, &mut one).unwrap();
        assert_eq!(one, [-0.5, -0.5, 0.5, 0.5]);
    }

    #[test]
    fn rejects_bad_stored_tensors() {
        let weight = [0x55u8, 0x55];
        let scale = [0u8, 0x3f, 0, 0x3f];
        let mut out = [0.0f32; 8];
        let ch = ScaleGranularity::Channel;
        let e = decode(&[&weight[..1], &scale], ch, 2, 4, 0..2, &mut out).unwrap_err();
        assert!(matches!(e, Error::Length { expected: 2, actual: 1, .. }), "{e}");
        let e = decode(&[&weight, &scale[..2]], ch, 2, 4, 0..2, &mut out).unwrap_err();
        assert!(matches!(e, Error::Length { expected: 4, actual: 2, .. }), "{e}");
        let e = decode(&[&weight], ch, 2, 4, 0..2, &mut out).unwrap_err();
        assert!(matches!(e, Error::Value { .. }), "{e}");
        let e = decode(&[&weight, &scale], ch, 2, 4, 1..3, &mut out[..8]).unwrap_err();
        assert!(e.to_string().contains("rows"), "{e}");
        let e = decode(&[&weight, &scale], ch, 2, 4, 0..1, &mut out).unwrap_err();
        assert!(e.to_string().contains("output"), "{e}");
        let e = decode(&[&weight, &scale], ch, u64::MAX, 8, 0..1, &mut out).unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
        // Code 3 at row 1, column 2.
        let bad = [0x55u8, 0b01_11_01_01];
        let e = decode(&[&bad, &scale], ch, 2, 4, 0..2, &mut out).unwrap_err();
        assert_eq!(e.to_string(), "`weight`: code 3 at row 1, column 2 is not a ternary code");
    }

    #[test]
    fn no_panic_on_any_length() {
        // Every decoder of this crate's ternary, BitNet and int4 layouts, on every small shape,
        // row range and stored length: an error or a value, never a panic.
        let bytes = [0x11u8; 64];
        let schemes = [
            crate::Scheme::Ternary { scale: ScaleGranularity::Channel },
            crate::Scheme::Ternary { scale: ScaleGranularity::Tensor },
            crate::Scheme::Bitnet,
            crate::Scheme::Int4 { group: 32, asym: false },
            crate::Scheme::Int4 { group: 32, asym: true },
        ];
        let mut out = vec![0.0f32; 256];
        let (mut ok, mut err) = (0, 0);
        for scheme in schemes {
            for (n, k) in [(0u64, 0u64), (1, 4), (4, 32), (8, 64), (3, 8), (4, 7)] {
                #[expect(
                    clippy::reversed_empty_ranges,
                    reason = "a reversed range must be rejected"
                )]
                for rows in [0..0, 0..1, 1..3, 0..n, 2..1, n..n + 1] {
                    for a in [0, 1, 2, 8, 16, 32, 64] {
                        for b in [0, 1, 2, 8, 16] {
                            let len = (rows.end.saturating_sub(rows.start) * k) as usize;
                            let stored: [&[u8]; 3] = [&bytes[..a], &bytes[..b], &bytes[..b]];
                            let out = &mut out[..len.min(256)];
                            for s in [&stored[..2], &stored[..]] {
                                match scheme.decode(s, n, k, rows.clone(), out) {
                                    Ok(()) => ok += 1,
                                    Err(_) => err += 1,
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(ok > 0 && err > ok, "{ok} decoded, {err} rejected");
    }
}
