//! Hugging Face BitNet packing (`formats/bitnet.md`), as transformers' `BitLinear` stores it:
//! `weight` U8 `[N/4, K]`, bits `2i..2i+1` of packed row r hold row `i·N/4 + r` (code q+1);
//! `weight_scale` BF16 `[1]` holds 1/γ; W = q · γ, decoded as `q / weight_scale` (what
//! `BitLinear` computes).

use crate::error::{check_request, mul};
use crate::{Error, check_len};
use lowbit_dtype::f16::bf16_to_fp32;
use std::ops::Range;

/// Packs four quarters of codes (each `p·K` codes: rows `r0..r0+p` of quarter i) into `out`
/// (`p·K` bytes: packed rows `r0..r0+p`). Quarter i goes to bits `2i..2i+1`; only the low two
/// bits of each code are used.
#[inline]
pub fn pack(quarters: [&[u8]; 4], out: &mut [u8]) {
    let [a, b, c, d] = quarters;
    for ((((o, &a), &b), &c), &d) in out.iter_mut().zip(a).zip(b).zip(c).zip(d) {
        *o = (a & 3) | (b & 3) << 2 | (c & 3) << 4 | (d & 3) << 6;
    }
}

/// The stored `weight_scale` for the absmean γ: the BF16 bits of `1/γ` (an `f32` division,
/// rounded to nearest even), which `BitLinear` divides by.
#[must_use]
pub fn stored_scale(gamma: f32) -> u16 {
    lowbit_dtype::f16::fp32_to_bf16(1.0 / gamma)
}

/// The `quantization_config` transformers reads for this layout (JSON): what
/// `BitNetQuantConfig()` of transformers 5.24.0 serializes to, keys sorted, so that
/// `BitLinear` (offline mode, which divides by `weight_scale`) loads the weights.
#[must_use]
pub fn quantization_config() -> String {
    concat!(
        r#"{"linear_class":"bitlinear","modules_to_not_convert":null,"#,
        r#""quant_method":"bitnet","quantization_mode":"offline","#,
        r#""rms_norm_eps":1e-06,"use_rms_norm":false}"#
    )
    .to_owned()
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
    let rows = check_request(stored, 2, n, k, &rows, out)?;
    if !n.is_multiple_of(4) {
        return Err(Error::Value {
            tensor: "weight".into(),
            reason: format!("{n} rows are not a multiple of 4"),
        });
    }
    let (weight, scale) = (stored[0], stored[1]);
    check_len("weight", weight, mul(n / 4, k)?)?;
    check_len("weight_scale", scale, 2)?;
    if k == 0 || rows.is_empty() {
        return Ok(());
    }
    let inv = bf16_to_fp32(u16::from_le_bytes([scale[0], scale[1]]));
    // ±1/weight_scale rounded once: the same as q / weight_scale for q ∈ {−1, 0, +1}.
    let table = [-1.0 / inv, 0.0, 1.0 / inv];
    // Lengths checked and n ≥ 4: n/4 · k bytes exist, so k and n/4 fit in usize.
    let quarter = (n / 4) as usize;
    let k = weight.len() / quarter;
    for (row, out) in rows.zip(out.chunks_exact_mut(k)) {
        let (i, r) = (row / quarter, row % quarter);
        let shift = 2 * i;
        for (col, (&b, o)) in weight[r * k..(r + 1) * k].iter().zip(out.iter_mut()).enumerate() {
            let code = usize::from((b >> shift) & 3);
            if code == 3 {
                return Err(Error::Value {
                    tensor: "weight".into(),
                    reason: format!("code 3 at row {row}, column {col} is not a ternary code"),
                });
            }
            *o = table[code];
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{decode, pack, quantization_config};
    use crate::Error;

    #[test]
    fn bit_positions() {
        // Rows 0..4 of a [4, 2] weight, one per quarter: packed row 0 holds all four.
        let rows: [[u8; 2]; 4] = [[2, 0], [1, 1], [0, 2], [2, 1]];
        let mut out = [0u8; 2];
        pack([&rows[0], &rows[1], &rows[2], &rows[3]], &mut out);
        assert_eq!(out, [0b10_00_01_10, 0b01_10_01_00]);
    }

    #[test]
    fn decodes_row_quarters() {
        // [8, 1]: packed rows 0 and 1; row i·2 + r sits in packed row r at bits 2i.
        // Codes by logical row: [2, 0, 1, 2, 0, 1, 2, 2] → q = [1, −1, 0, 1, −1, 0, 1, 1].
        let weight = [0b10_00_01_10, 0b10_01_10_00];
        let scale = 0x4000u16.to_le_bytes(); // 1/γ = 2, so γ = 0.5
        let mut out = [0.0f32; 8];
        decode(&[&weight, &scale], 8, 1, 0..8, &mut out).unwrap();
        assert_eq!(out, [0.5, -0.5, 0.0, 0.5, -0.5, 0.0, 0.5, 0.5]);
        let mut two = [0.0f32; 2];
        decode(&[&weight, &scale], 8, 1, 5..7, &mut two).unwrap();
        assert_eq!(two, [0.0, 0.5]);
    }

    #[test]
    fn rejects_bad_stored_tensors() {
        let weight = [0x55u8, 0x55];
        let scale = [0u8, 0x40];
        let mut out = [0.0f32; 8];
        let e = decode(&[&weight[..1], &scale], 8, 1, 0..8, &mut out).unwrap_err();
        assert!(matches!(e, Error::Length { expected: 2, actual: 1, .. }), "{e}");
        let e = decode(&[&weight, &[0u8, 0x40, 0, 0]], 8, 1, 0..8, &mut out).unwrap_err();
        assert!(matches!(e, Error::Length { expected: 2, actual: 4, .. }), "{e}");
        let e = decode(&[&weight, &scale], 6, 1, 0..6, &mut out[..6]).unwrap_err();
        assert!(e.to_string().contains("multiple of 4"), "{e}");
        // Code 3 in quarter 2 of packed row 1: logical row 2·2 + 1 = 5.
        let bad = [0x55u8, 0b01_11_01_01];
        let e = decode(&[&bad, &scale], 8, 1, 0..8, &mut out).unwrap_err();
        assert_eq!(e.to_string(), "`weight`: code 3 at row 5, column 0 is not a ternary code");
    }

    #[test]
    fn config_is_json() {
        let v: serde_json::Value = serde_json::from_str(&quantization_config()).unwrap();
        assert_eq!(v["quant_method"], "bitnet");
        assert_eq!(v["linear_class"], "bitlinear");
        assert_eq!(v["quantization_mode"], "offline");
    }
}
