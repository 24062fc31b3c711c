//! NVFP4 layouts (`formats/nvfp4.md`): E2M1 codes two per byte, one E4M3 scale per 16
//! elements along K, and an F32 per-tensor `weight_scale_2`.
//!
//! - BFL (`bfl:nvfp4`, the ModelOpt layout diffusers' `bfl` quantizer loads): the even element
//!   in the low nibble, block scales `[N, K/16]` row-major, and an F32 `input_scale`;
//!   `W = e2m1 · (f32(s) · weight_scale_2)` in F32 (diffusers' `dequantize_nvfp4`).
//! - ComfyUI (`comfy:nvfp4`, comfy-kitchen's `TensorCoreNVFP4Layout`): the even element in the
//!   high nibble, block scales swizzled into cuBLAS' tiled layout (rows padded to 128, scale
//!   columns to 4), a `comfy_quant` marker; `W = bf16(e2m1 · bf16(bf16(weight_scale_2) · s))`
//!   (comfy-kitchen's `dequantize_nvfp4` to BF16).

use crate::error::{check_request, mul};
use crate::{Error, check_len};
use lowbit_dtype::f16::{bf16_to_fp32, fp32_to_bf16};
use lowbit_dtype::fp8::e4m3_to_f32;
use std::ops::Range;

/// Elements per block scale, along K.
pub const BLOCK: u64 = 16;

/// The per-tensor divisor: E4M3's largest value times E2M1's (`weight_scale_2 = amax / 2688`).
pub const GLOBAL_DIVISOR: f32 = 448.0 * 6.0;

/// The `input_scale` lowbit writes for `bfl:nvfp4` (no calibration): activations quantized with
/// a global scale of 1 on Blackwell's fused path; the CPU path never reads it.
pub const INPUT_SCALE: f32 = 1.0;

/// E2M1 values by code: bit 3 the sign, bits 2–0 the magnitude.
pub const E2M1: [f32; 16] =
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0];

/// Rows of one swizzled scale tile.
pub const TILE_ROWS: u64 = 128;
/// Scale columns of one swizzled scale tile.
pub const TILE_COLS: u64 = 4;

/// ComfyUI's `comfy_quant` marker: `json.dumps({"format": "nvfp4"})`.
#[must_use]
pub fn comfy_marker() -> &'static str {
    "{\"format\": \"nvfp4\"}"
}

/// The shape of ComfyUI's swizzled block scales for a weight `[n, k]`: `[n, k/16]` padded to
/// whole 128 × 4 tiles.
#[must_use]
pub fn swizzled_shape(n: u64, k: u64) -> [u64; 2] {
    [n.div_ceil(TILE_ROWS) * TILE_ROWS, (k / BLOCK).div_ceil(TILE_COLS) * TILE_COLS]
}

/// Where block scale `(row, col)` lies in the swizzled array whose padded width is `cols`
/// (a multiple of 4): tile `(row/128, col/4)` is 512 contiguous bytes, tiles row-major; inside
/// a tile, row `32a + b` and column `c` sit at `16b + 4a + c` (comfy-kitchen's `to_blocked`).
#[must_use]
pub fn swizzled_index(row: u64, col: u64, cols: u64) -> u64 {
    let tile = (row / TILE_ROWS) * (cols / TILE_COLS) + col / TILE_COLS;
    let (a, b) = ((row % TILE_ROWS) / 32, row % 32);
    tile * TILE_ROWS * TILE_COLS + b * 16 + a * 4 + col % TILE_COLS
}

/// Swizzles row-major block scales `[rows, k/16]` (rows starting at a multiple of 128) into
/// `out`, which holds `⌈rows/128⌉` whole tiles of width `swizzled_shape(·, k)[1]`; padding stays
/// as `out` has it (zero).
pub fn swizzle(scales: &[u8], k: u64, out: &mut [u8]) {
    let groups = (k / BLOCK) as usize;
    let cols = swizzled_shape(0, k)[1];
    if groups == 0 {
        return;
    }
    for (r, row) in scales.chunks_exact(groups).enumerate() {
        for (c, &s) in row.iter().enumerate() {
            #[expect(clippy::cast_possible_truncation, reason = "inside `out`, a slice")]
            let at = swizzled_index(r as u64, c as u64, cols) as usize;
            if let Some(o) = out.get_mut(at) {
                *o = s;
            }
        }
    }
}

/// Packs E2M1 codes (`codes.len()` even) two per byte: the even element in the high nibble
/// (ComfyUI) or in the low one (BFL).
pub fn pack(codes: &[u8], high_first: bool, out: &mut [u8]) {
    for (o, pair) in out.iter_mut().zip(codes.chunks_exact(2)) {
        let (first, second) = (pair[0] & 0x0f, pair[1] & 0x0f);
        *o = if high_first { (first << 4) | second } else { (second << 4) | first };
    }
}

/// Reads a little-endian F32 scalar (length checked by the caller).
fn f32_of(bytes: &[u8]) -> f32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[..4]);
    f32::from_le_bytes(b)
}

/// The shared checks: `k` a whole number of blocks, and the packed weight's length.
fn check_weight(weight: &[u8], n: u64, k: u64) -> Result<usize, Error> {
    if !k.is_multiple_of(BLOCK) {
        return Err(Error::Value {
            tensor: "weight".into(),
            reason: format!("row length {k} is not a multiple of the NVFP4 block {BLOCK}"),
        });
    }
    check_len("weight", weight, mul(n, k / 2)?)?;
    usize::try_from(k).map_err(|_| Error::Value {
        tensor: "weight".into(),
        reason: format!("row length {k} does not fit in memory"),
    })
}

/// Decodes rows of a BFL NVFP4 weight (`weight`, `weight_scale`, `weight_scale_2`,
/// `input_scale`), as diffusers' `dequantize_nvfp4`: `e2m1 · (f32(s) · weight_scale_2)` in F32.
///
/// # Errors
/// Stored tensors of the wrong length, or a row length that is not whole blocks.
pub fn decode_bfl(
    stored: &[&[u8]],
    n: u64,
    k: u64,
    rows: Range<u64>,
    out: &mut [f32],
) -> Result<(), Error> {
    let rows = check_request(stored, 4, n, k, &rows, out)?;
    let (weight, scales) = (stored[0], stored[1]);
    let k = check_weight(weight, n, k)?;
    check_len("weight_scale", scales, mul(n, k as u64 / BLOCK)?)?;
    check_len("weight_scale_2", stored[2], 4)?;
    check_len("input_scale", stored[3], 4)?;
    let global = f32_of(stored[2]);
    if k == 0 {
        return Ok(());
    }
    let groups = k / BLOCK as usize;
    for (i, o) in out.chunks_exact_mut(k).enumerate() {
        let r = rows.start + i;
        let codes = &weight[r * k / 2..(r + 1) * k / 2];
        let s = &scales[r * groups..(r + 1) * groups];
        for (g, (o, c)) in o.chunks_exact_mut(16).zip(codes.chunks_exact(8)).enumerate() {
            let scale = e4m3_to_f32(s[g]) * global;
            for (pair, &byte) in o.chunks_exact_mut(2).zip(c) {
                pair[0] = E2M1[usize::from(byte & 0x0f)] * scale;
                pair[1] = E2M1[usize::from(byte >> 4)] * scale;
            }
        }
    }
    Ok(())
}

/// Decodes rows of a ComfyUI NVFP4 weight (`weight`, swizzled `weight_scale`,
/// `weight_scale_2`, `comfy_quant`), as comfy-kitchen dequantizes to BF16:
/// `bf16(e2m1 · bf16(bf16(weight_scale_2) · s))`.
///
/// # Errors
/// Stored tensors of the wrong length, a row length that is not whole blocks, or a marker
/// naming another format.
pub fn decode_comfy(
    stored: &[&[u8]],
    n: u64,
    k: u64,
    rows: Range<u64>,
    out: &mut [f32],
) -> Result<(), Error> {
    let rows = check_request(stored, 4, n, k, &rows, out)?;
    let (weight, scales, marker) = (stored[0], stored[1], stored[3]);
    let kk = check_weight(weight, n, k)?;
    let [pr, pc] = swizzled_shape(n, k);
    check_len("weight_scale", scales, mul(pr, pc)?)?;
    check_len("weight_scale_2", stored[2], 4)?;
    let named = serde_json::from_slice::<serde_json::Value>(marker)
        .ok()
        .and_then(|v| v.get("format").and_then(|f| f.as_str().map(str::to_owned)));
    if named.as_deref() != Some("nvfp4") {
        return Err(Error::Value {
            tensor: "comfy_quant".to_owned(),
            reason: format!("marker {:?} does not name nvfp4", String::from_utf8_lossy(marker)),
        });
    }
    let global = bf16_to_fp32(fp32_to_bf16(f32_of(stored[2])));
    let round = |v: f32| bf16_to_fp32(fp32_to_bf16(v));
    if kk == 0 {
        return Ok(());
    }
    for (i, o) in out.chunks_exact_mut(kk).enumerate() {
        let r = rows.start + i;
        let codes = &weight[r * kk / 2..(r + 1) * kk / 2];
        for (g, (o, c)) in o.chunks_exact_mut(16).zip(codes.chunks_exact(8)).enumerate() {
            #[expect(clippy::cast_possible_truncation, reason = "inside `scales`, checked above")]
            let at = swizzled_index(r as u64, g as u64, pc) as usize;
            // An E4M3 value is exact in BF16; the product of two BF16 values is exact in F32,
            // then rounded to BF16 as torch's BF16 multiply does.
            let scale = round(global * e4m3_to_f32(scales[at]));
            for (pair, &byte) in o.chunks_exact_mut(2).zip(c) {
                pair[0] = round(E2M1[usize::from(byte >> 4)] * scale);
                pair[1] = round(E2M1[usize::from(byte & 0x0f)] * scale);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{E2M1, swizzled_shape};
    use super::{comfy_marker, decode_bfl, decode_comfy, pack, swizzle, swizzled_index};
    use crate::Error;

    #[test]
    fn swizzle_is_comfy_kitchens_tiling() {
        assert_eq!(swizzled_shape(3072, 3072), [3072, 192]);
        assert_eq!(swizzled_shape(144, 80), [256, 8]);
        assert_eq!(swizzled_shape(16, 16), [128, 4]);
        // Row 32a + b, column c of tile 0 sits at 16b + 4a + c.
        assert_eq!(swizzled_index(0, 0, 4), 0);
        assert_eq!(swizzled_index(1, 0, 4), 16);
        assert_eq!(swizzled_index(32, 0, 4), 4);
        assert_eq!(swizzled_index(33, 3, 4), 16 + 4 + 3);
        assert_eq!(swizzled_index(127, 3, 4), 31 * 16 + 12 + 3);
        // Tiles are row-major: (0, 1) follows (0, 0), then the next 128 rows.
        assert_eq!(swizzled_index(0, 4, 8), 512);
        assert_eq!(swizzled_index(128, 0, 8), 1024);
        // Every position of a padded array is reached once.
        let [r, c] = swizzled_shape(200, 80);
        let mut seen = vec![false; (r * c) as usize];
        for row in 0..r {
            for col in 0..c {
                let i = swizzled_index(row, col, c) as usize;
                assert!(!seen[i]);
                seen[i] = true;
            }
        }
        let scales: Vec<u8> = (1..=10).collect();
        let mut out = vec![0u8; 512 * 2];
        swizzle(&scales, 80, &mut out);
        // Row 0 is 1..=5 (column 4 in the second tile), row 1 is 6..=10.
        assert_eq!((out[0], out[1], out[3], out[512], out[4]), (1, 2, 4, 5, 0));
        assert_eq!((out[16], out[512 + 16]), (6, 10));
        assert_eq!(out.iter().filter(|&&v| v != 0).count(), 10);
    }

    #[test]
    fn nibble_orders() {
        let mut out = [0u8; 2];
        pack(&[1, 2, 0xf, 8], true, &mut out);
        assert_eq!(out, [0x12, 0xf8]);
        pack(&[1, 2, 0xf, 8], false, &mut out);
        assert_eq!(out, [0x21, 0x8f]);
    }

    #[test]
    fn decoders_follow_their_runtimes() {
        // One row of 16: codes 0..15, the even element of each pair first.
        let codes: Vec<u8> = (0..16).collect();
        let mut lo = [0u8; 8];
        pack(&codes, false, &mut lo);
        let global = 0.25f32.to_le_bytes();
        let one = 1.0f32.to_le_bytes();
        // E4M3 0x40 = 2.0: scale 0.5.
        let mut out = [0.0f32; 16];
        decode_bfl(&[&lo, &[0x40], &global, &one], 1, 16, 0..1, &mut out).unwrap();
        let want: Vec<f32> = E2M1.iter().map(|v| v * 0.5).collect();
        assert_eq!(out.to_vec(), want);
        let short = decode_bfl(&[&lo[..7], &[0x40], &global, &one], 1, 16, 0..1, &mut out);
        assert!(matches!(short, Err(Error::Length { .. })));
        let odd = decode_bfl(&[&lo, &[0x40], &global, &one], 1, 12, 0..1, &mut out[..12]);
        assert!(matches!(odd, Err(Error::Value { .. })));

        let mut hi = [0u8; 8];
        pack(&codes, true, &mut hi);
        let mut scales = vec![0u8; 512];
        // E4M3 0x3d = 1.625; the global 0.3 is rounded to BF16 first, then each product.
        scales[0] = 0x3d;
        let g = 0.3f32.to_le_bytes();
        let m = comfy_marker();
        decode_comfy(&[&hi, &scales, &g, m.as_bytes()], 1, 16, 0..1, &mut out).unwrap();
        // Round to BF16, nearest even, on the bits (finite values).
        let bf = |v: f32| {
            let b = v.to_bits();
            f32::from_bits(b.wrapping_add(0x7fff + ((b >> 16) & 1)) & 0xffff_0000)
        };
        assert_eq!(bf(0.3), 0.300_781_25);
        let scale = bf(bf(0.3) * 1.625);
        assert_ne!(scale, 0.300_781_25 * 1.625);
        let want: Vec<f32> = E2M1.iter().map(|v| bf(v * scale)).collect();
        assert_eq!(out.to_vec(), want);
        assert_ne!(want[3], 1.5 * scale, "the products are rounded too");
        let other = br#"{"format": "float8_e4m3fn"}"#;
        let wrong = decode_comfy(&[&hi, &scales, &g, other], 1, 16, 0..1, &mut out);
        assert!(matches!(wrong, Err(Error::Value { .. })));
        let small = decode_comfy(&[&hi, &scales[..4], &g, m.as_bytes()], 1, 16, 0..1, &mut out);
        assert!(matches!(small, Err(Error::Length { .. })));
    }
}
