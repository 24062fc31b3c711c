//! Group-wise int4 (`formats/int4.md`): `weight` I8 `[N, K/2]`, low nibble = even k, two's
//! complement; `weight_scale` BF16 `[K/g, N]`; with `asym`, `weight_zero` BF16 `[K/g, N]`.
//! W = c · scale (symmetric) or c · scale + zero (asymmetric), in `f32`, not fused.

use crate::error::{check_request, mul};
use crate::{Error, check_len};
use lowbit_dtype::f16::bf16_to_fp32;
use std::ops::Range;

/// Packs signed codes (−8..=7; `codes.len() == 2 * out.len()`), even index in the low nibble.
/// Only the low four bits of each code are used; extra codes or bytes are left alone.
#[inline]
pub fn pack(codes: &[i8], out: &mut [u8]) {
    for (b, c) in out.iter_mut().zip(codes.chunks_exact(2)) {
        *b = (c[0].cast_unsigned() & 15) | (c[1].cast_unsigned() << 4);
    }
}

/// The signed low nibble of `b`.
#[inline]
fn lo(b: u8) -> i8 {
    (b << 4).cast_signed() >> 4
}

/// The signed high nibble of `b`.
#[inline]
fn hi(b: u8) -> i8 {
    b.cast_signed() >> 4
}

/// Unpacks `packed` into signed codes (`codes.len() == 2 * packed.len()`; extra codes are left
/// alone).
pub fn unpack(packed: &[u8], codes: &mut [i8]) {
    for (&b, c) in packed.iter().zip(codes.chunks_exact_mut(2)) {
        c[0] = lo(b);
        c[1] = hi(b);
    }
}

/// The BF16 value at index `i` of `bytes` (length checked by the caller).
#[inline]
fn bf16_at(bytes: &[u8], i: usize) -> f32 {
    bf16_to_fp32(u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]))
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
    let rows = check_request(stored, if asym { 3 } else { 2 }, n, k, &rows, out)?;
    let g = u64::from(group);
    if g == 0 || g % 2 != 0 || !k.is_multiple_of(g) {
        return Err(Error::Value {
            tensor: "weight".into(),
            reason: format!("row length {k} is not a multiple of the even group size {group}"),
        });
    }
    let weight = stored[0];
    check_len("weight", weight, mul(n, k / 2)?)?;
    let scale_bytes = mul(mul(k / g, n)?, 2)?;
    check_len("weight_scale", stored[1], scale_bytes)?;
    if asym {
        check_len("weight_zero", stored[2], scale_bytes)?;
    }
    if k == 0 || rows.is_empty() {
        return Ok(());
    }
    // Lengths checked and n, k ≥ 1: n·k/2 bytes exist, so n and k/2 fit in usize.
    let n = n as usize;
    let kb = weight.len() / n;
    let gb = group as usize / 2;
    for (row, out) in rows.zip(out.chunks_exact_mut(2 * kb)) {
        let packed = &weight[row * kb..(row + 1) * kb];
        for (j, (p, o)) in packed.chunks_exact(gb).zip(out.chunks_exact_mut(2 * gb)).enumerate() {
            let s = bf16_at(stored[1], j * n + row);
            if asym {
                let z = bf16_at(stored[2], j * n + row);
                for (&b, o) in p.iter().zip(o.chunks_exact_mut(2)) {
                    o[0] = f32::from(lo(b)) * s + z;
                    o[1] = f32::from(hi(b)) * s + z;
                }
            } else {
                for (&b, o) in p.iter().zip(o.chunks_exact_mut(2)) {
                    o[0] = f32::from(lo(b)) * s;
                    o[1] = f32::from(hi(b)) * s;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{decode, pack, unpack};
    use crate::Error;

    #[test]
    fn nibble_positions() {
        // Even index in the low nibble, two's complement: [−1, 7] → 0x7F, [−8, 0] → 0x08.
        let mut out = [0u8; 3];
        pack(&[-1, 7, -8, 0, 3, -7], &mut out);
        assert_eq!(out, [0x7f, 0x08, 0x93]);
        let mut codes = [0i8; 6];
        unpack(&out, &mut codes);
        assert_eq!(codes, [-1, 7, -8, 0, 3, -7]);
    }

    #[test]
    fn round_trip_every_byte() {
        let bytes: Vec<u8> = (0..=255u8).collect();
        let mut codes = vec![0i8; 512];
        unpack(&bytes, &mut codes);
        assert!(codes.iter().all(|c| (-8..=7).contains(c)));
        let mut back = vec![0u8; 256];
        pack(&codes, &mut back);
        assert_eq!(back, bytes);
    }

    #[test]
    fn decodes_transposed_scales() {
        // [2, 4], group 2: scales [K/g = 2, N = 2] = [[s(r0,g0), s(r1,g0)], [s(r0,g1), s(r1,g1)]].
        let weight = [0x21u8, 0xf0, 0x7f, 0x80];
        let bf = |v: &[u16]| v.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>();
        let scale = bf(&[0x3f80, 0x4000, 0x3f00, 0x4080]); // 1, 2 / 0.5, 4
        let zero = bf(&[0x0000, 0x3f80, 0xbf80, 0x0000]); // 0, 1 / −1, 0
        let mut out = [0.0f32; 8];
        decode(&[&weight, &scale], 2, false, 2, 4, 0..2, &mut out).unwrap();
        // Row 0 codes [1, 2, 0, −1]; row 1 codes [−1, 7, 0, −8].
        assert_eq!(out, [1.0, 2.0, 0.0, -0.5, -2.0, 14.0, 0.0, -32.0]);
        decode(&[&weight, &scale, &zero], 2, true, 2, 4, 0..2, &mut out).unwrap();
        assert_eq!(out, [1.0, 2.0, -1.0, -1.5, -1.0, 15.0, 0.0, -32.0]);
        let mut one = [0.0f32; 4];
        decode(&[&weight, &scale, &zero], 2, true, 2, 4, 1..2, &mut one).unwrap();
        assert_eq!(one, [-1.0, 15.0, 0.0, -32.0]);
    }

    #[test]
    fn rejects_bad_stored_tensors() {
        let weight = [0u8; 4];
        let scale = [0u8; 8];
        let mut out = [0.0f32; 8];
        let e = decode(&[&weight[..3], &scale], 2, false, 2, 4, 0..2, &mut out).unwrap_err();
        assert!(matches!(e, Error::Length { expected: 4, actual: 3, .. }), "{e}");
        let e = decode(&[&weight, &scale[..6]], 2, false, 2, 4, 0..2, &mut out).unwrap_err();
        assert!(matches!(e, Error::Length { expected: 8, actual: 6, .. }), "{e}");
        let e = decode(&[&weight, &scale, &scale[..2]], 2, true, 2, 4, 0..2, &mut out).unwrap_err();
        assert_eq!(e.to_string(), "`weight_zero` holds 2 bytes where the layout needs 8");
        let e = decode(&[&weight, &scale], 2, true, 2, 4, 0..2, &mut out).unwrap_err();
        assert!(matches!(e, Error::Value { .. }), "{e}");
        let e = decode(&[&weight, &scale], 3, false, 2, 6, 0..2, &mut [0.0; 12]).unwrap_err();
        assert!(e.to_string().contains("group"), "{e}");
        let e = decode(&[&weight, &scale], 2, false, u64::MAX, 4, 0..1, &mut out[..4]).unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
    }
}
