//! SDNQ's `uint4` (`formats/sdnq.md`), as `sdnq` 0.2.8 stores a quantized `nn.Linear` of a
//! diffusers model: `weight` U8 `[N·K/2]` (flat, element 2i in the low nibble), `scale` and
//! `zero_point` F32 `[N, K/g, 1]` (`[N, 1]` for one group per row), and with SVD `svd_up` BF16
//! `[N, r]` and `svd_down` BF16 `[r, K]`. W = q · scale + zero_point (+ svd_up · svd_down), in
//! `f32`, not fused.

use crate::error::{check_request, mul};
use crate::{Error, Stored, check_len};
use lowbit_dtype::Dtype;
use lowbit_dtype::f16::bf16_to_fp32;
use std::ops::Range;

/// Largest rank of the low-rank branch `sdnq:uint4-svd:rR` accepts.
pub const MAX_RANK: u16 = 512;

/// Stored tensors, in file order (the last two only with SVD).
pub const SUFFIXES: [&str; 5] = ["weight", "scale", "zero_point", "svd_up", "svd_down"];

/// What `sdnq` keeps at source precision in `FluxTransformer2DModel`
/// (`sdnq/common.py: module_skip_keys_dict`), as its `modules_to_not_convert` spells it: a
/// leading `.` matches the start of a name, other entries a whole name or one of its dotted parts.
pub const FLUX_SKIP_KEYS: [&str; 7] = [
    "single_transformer_blocks.0.norm.linear.weight",
    "time_text_embed",
    "time_embed",
    "context_embedder",
    "x_embedder",
    ".proj_out",
    "norm_out",
];

/// Smallest weight (elements) and row length `sdnq` quantizes (`minimum_allowed_numel`,
/// `minimum_allowed_channel_size`); smaller `Linear`s stay at source precision.
pub const MIN_NUMEL: u64 = 16384;
/// See [`MIN_NUMEL`].
pub const MIN_ROW: u64 = 32;

/// Whether `sdnq` leaves the diffusers parameter `name` (`…​.weight`) unquantized by its FLUX
/// skip keys (`sdnq/utils.py: check_param_name_in`).
#[must_use]
pub fn flux_skips(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    FLUX_SKIP_KEYS.iter().any(|key| match key.strip_prefix('.') {
        Some(start) => name.starts_with(start),
        None => name == *key || parts.contains(key),
    })
}

/// The group `sdnq` asks for by default on a `Linear`: 2^(1 + 4 bits + 1), doubled with SVD.
#[must_use]
pub fn default_group(svd: bool) -> u64 {
    if svd { 128 } else { 64 }
}

/// `sdnq`'s effective group size and group count for rows of `k` (`sdnq_quantize_layer_weight`):
/// the requested group when it divides `k`; else the largest `k / c` for a count `c` below
/// `k / group` that divides `k` exactly; one group of the whole row when none does or the group
/// is at least `k`.
#[must_use]
pub fn groups(k: u64, requested: u64) -> (u64, u64) {
    if requested == 0 || requested >= k {
        return (k, 1);
    }
    let mut count = k / requested;
    let mut group = requested;
    while count * group != k {
        count -= 1;
        if count <= 1 {
            return (k, 1);
        }
        group = k / count;
    }
    (group, count)
}

/// The shape of `scale` and `zero_point`: `[n, G, 1]`, or `[n, 1]` for one group per row.
#[must_use]
pub fn scale_shape(n: u64, k: u64, svd: bool) -> Vec<u64> {
    match groups(k, default_group(svd)) {
        (_, 1) => vec![n, 1],
        (_, count) => vec![n, count, 1],
    }
}

/// The tensors stored for a weight `[n, k]`; `rank` 0 is plain `uint4`.
#[must_use]
pub fn stored(n: u64, k: u64, rank: u16) -> Vec<Stored> {
    let scale = scale_shape(n, k, rank > 0);
    let r = u64::from(rank);
    let mut v = vec![
        Stored { suffix: SUFFIXES[0], dtype: Dtype::U8, shape: vec![n * k / 2] },
        Stored { suffix: SUFFIXES[1], dtype: Dtype::F32, shape: scale.clone() },
        Stored { suffix: SUFFIXES[2], dtype: Dtype::F32, shape: scale },
    ];
    if rank > 0 {
        v.push(Stored { suffix: SUFFIXES[3], dtype: Dtype::BF16, shape: vec![n, r] });
        v.push(Stored { suffix: SUFFIXES[4], dtype: Dtype::BF16, shape: vec![r, k] });
    }
    v
}

/// The `quantization_config` `sdnq` 0.2.8's `SDNQConfig(weights_dtype="uint4", use_svd=…)`
/// serializes to, with `modules_to_not_convert` as given (the FLUX skip keys and every other
/// `Linear` weight kept dense).
#[must_use]
pub fn quantization_config(rank: u16, not_convert: &[String]) -> serde_json::Value {
    serde_json::json!({
        "weights_dtype": "uint4",
        "scale_dtype": null,
        "zero_point_dtype": null,
        "quantized_matmul_dtype": null,
        "is_training": false,
        "hadamard_group_size": 256,
        "group_size": 0,
        "svd_rank": if rank > 0 { rank } else { 32 },
        "dynamic_loss_threshold": null,
        "use_svd": rank > 0,
        "svd_steps": 8,
        "codebook_steps": 24,
        "use_hadamard": false,
        "use_codebook": false,
        "use_codebook_scale": false,
        "use_grad_ckpt": true,
        "quant_conv": false,
        "quant_embedding": false,
        "use_quantized_matmul": false,
        "use_quantized_matmul_conv": false,
        "use_static_quantization": true,
        "use_dynamic_quantization": false,
        "use_stochastic_rounding": false,
        "dequantize_fp32": true,
        "non_blocking": false,
        "add_skip_keys": true,
        "minimum_allowed_numel": MIN_NUMEL,
        "minimum_allowed_channel_size": MIN_ROW,
        "modules_to_not_convert": not_convert,
        "modules_to_not_use_matmul": [],
        "modules_dtype_dict": {},
        "modules_quant_config": {},
        "quantization_device": null,
        "return_device": null,
        "sdnq_version": "0.2.8",
        "is_integer": true,
        "is_unsigned": true,
        "quant_method": "sdnq",
    })
}

/// The little-endian `f32` at index `i` of `bytes` (length checked by the caller).
#[inline]
fn f32_at(bytes: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2], bytes[4 * i + 3]])
}

/// Decodes rows `rows` of an SDNQ `uint4` weight `[n, k]` (`rank` 0: no branch) from the
/// tensors of [`stored`]: `zero_point + q · scale`, plus `Σ_j svd_up[r, j] · svd_down[j, c]`
/// summed in `f32` in order of `j`.
///
/// # Errors
/// Stored tensors of the wrong length, or a packed weight of an odd element count.
pub fn decode(
    stored: &[&[u8]],
    rank: u16,
    n: u64,
    k: u64,
    rows: Range<u64>,
    out: &mut [f32],
) -> Result<(), Error> {
    let rows = check_request(stored, if rank > 0 { 5 } else { 3 }, n, k, &rows, out)?;
    let numel = mul(n, k)?;
    if numel % 2 != 0 {
        return Err(Error::Value {
            tensor: "weight".into(),
            reason: format!("[{n}, {k}] has an odd number of elements (two codes per byte)"),
        });
    }
    let (g, count) = groups(k, default_group(rank > 0));
    check_len("weight", stored[0], numel / 2)?;
    check_len("scale", stored[1], mul(mul(n, count)?, 4)?)?;
    check_len("zero_point", stored[2], mul(mul(n, count)?, 4)?)?;
    let r = u64::from(rank);
    if rank > 0 {
        check_len("svd_up", stored[3], mul(mul(n, r)?, 2)?)?;
        check_len("svd_down", stored[4], mul(mul(r, k)?, 2)?)?;
    }
    if rows.is_empty() || k == 0 {
        return Ok(());
    }
    // Lengths checked: n·k/2 bytes exist, so every index below fits in usize.
    let (k, g, count, r) = (k as usize, g as usize, count as usize, usize::from(rank));
    let down: Vec<f32> = if r > 0 {
        stored[4].chunks_exact(2).map(|b| bf16_to_fp32(u16::from_le_bytes([b[0], b[1]]))).collect()
    } else {
        Vec::new()
    };
    for (row, o) in rows.zip(out.chunks_exact_mut(k)) {
        for (c, v) in o.iter_mut().enumerate() {
            let i = row * k + c;
            let b = stored[0][i / 2];
            let q = if i % 2 == 0 { b & 15 } else { b >> 4 };
            let s = row * count + c / g;
            *v = f32_at(stored[2], s) + f32::from(q) * f32_at(stored[1], s);
        }
        for j in 0..r {
            let i = 2 * (row * r + j);
            let up = bf16_to_fp32(u16::from_le_bytes([stored[3][i], stored[3][i + 1]]));
            for (v, d) in o.iter_mut().zip(&down[j * k..(j + 1) * k]) {
                *v += up * d;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{decode, flux_skips, groups, stored};

    #[test]
    fn groups_follow_sdnq() {
        // Divisible, at least the row, and the search for a divisor (sdnq's loop by hand).
        assert_eq!(groups(3072, 64), (64, 48));
        assert_eq!(groups(64, 64), (64, 1));
        assert_eq!(groups(32, 64), (32, 1));
        assert_eq!(groups(200, 64), (100, 2));
        assert_eq!(groups(130, 64), (130, 1));
        assert_eq!(groups(131, 64), (131, 1));
        assert_eq!(groups(15360, 128), (128, 120));
    }

    #[test]
    fn flux_skip_keys() {
        for skip in [
            "x_embedder.weight",
            "proj_out.weight",
            "norm_out.linear.weight",
            "time_text_embed.timestep_embedder.linear_1.weight",
            "single_transformer_blocks.0.norm.linear.weight",
        ] {
            assert!(flux_skips(skip), "{skip}");
        }
        for keep in [
            "single_transformer_blocks.0.proj_out.weight",
            "single_transformer_blocks.1.norm.linear.weight",
            "transformer_blocks.0.norm1.linear.weight",
        ] {
            assert!(!flux_skips(keep), "{keep}");
        }
    }

    #[test]
    fn decodes_a_hand_built_layer() {
        // [2, 4], one group per row; codes 0..7 with element 0 in the low nibble.
        let w = [0x10u8, 0x32, 0x54, 0x76];
        let scale: Vec<u8> = [0.5f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let zero: Vec<u8> = [-1.0f32, 3.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut out = [0f32; 8];
        decode(&[&w, &scale, &zero], 0, 2, 4, 0..2, &mut out).unwrap();
        assert_eq!(out, [-1.0, -0.5, 0.0, 0.5, 11.0, 13.0, 15.0, 17.0]);
        // Rank 1: up [2, 1] = [1, 2], down [1, 4] = [1, 0, 0, 0.5] (BF16).
        let up: Vec<u8> = [0x3f80u16, 0x4000].iter().flat_map(|v| v.to_le_bytes()).collect();
        let down: Vec<u8> =
            [0x3f80u16, 0, 0, 0x3f00].iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut out = [0f32; 4];
        decode(&[&w, &scale, &zero, &up, &down], 1, 2, 4, 1..2, &mut out).unwrap();
        assert_eq!(out, [13.0, 13.0, 15.0, 18.0]);
        assert!(decode(&[&w[..3], &scale, &zero], 0, 2, 4, 0..2, &mut [0f32; 8]).is_err());
        assert_eq!(stored(2, 4, 1).len(), 5);
    }
}
