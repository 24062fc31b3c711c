//! FP8 layouts (`formats/fp8.md`): plain (no scale), ComfyUI (`weight_scale` F32 scalar,
//! `comfy_quant` marker; W = bf16(q) · bf16(scale) rounded to BF16) and BFL `fp8r`
//! (`weight_scale` F32 `[N]`), and which layers diffusers' layerwise casting leaves in BF16.

use crate::error::{check_request, mul};
use crate::{Error, Fp8Format, check_len};
use lowbit_dtype::f16::{bf16_to_fp32, fp32_to_bf16};
use lowbit_dtype::fp8::{e4m3_to_f32, e5m2_to_f32};
use std::ops::Range;

/// ComfyUI's `comfy_quant` marker: `json.dumps({"format": ...})`.
#[must_use]
pub fn comfy_marker(format: Fp8Format) -> String {
    format!("{{\"format\": \"{}\"}}", format.torch_name())
}

/// Whether diffusers' layerwise casting leaves the module of a FLUX tensor, named the BFL way
/// (`double_blocks.0.img_mod.lin.weight`, or the module path alone), in the compute dtype.
///
/// diffusers skips every module whose dotted name matches (`re.search`) one of
/// `DEFAULT_SKIP_MODULES_PATTERN` = `pos_embed`, `patch_embed`, `norm`, `^proj_in$`, `^proj_out$`
/// or FLUX's `_skip_layerwise_casting_patterns` = `pos_embed`, `norm`. On FLUX those are the
/// AdaLN modulations (`norm1.linear` = `img_mod.lin`, `norm1_context.linear` = `txt_mod.lin`,
/// single `norm.linear` = `modulation.lin`, `norm_out.linear` = `final_layer.adaLN_modulation.1`),
/// the q/k RMS norms (`attn.norm_q` = `*.norm.query_norm`, …) and the top-level `proj_out`
/// (`final_layer.linear`). Single blocks' `proj_out` (`linear2`) and the embedders are cast.
#[must_use]
pub fn layerwise_casting_skips(bfl_name: &str) -> bool {
    let name = bfl_name.strip_prefix("model.diffusion_model.").unwrap_or(bfl_name);
    let parts: Vec<&str> = name.split('.').collect();
    if parts.first() == Some(&"final_layer") {
        return true;
    }
    if parts.iter().any(|p| p.contains("norm")) {
        return true;
    }
    parts.windows(2).any(|w| matches!(w, ["img_mod" | "txt_mod" | "modulation", "lin"]))
}

/// The element range of `rows` in a row-major `[·, k]` array (rows already checked).
fn elements(rows: &Range<usize>, k: u64) -> Result<Range<usize>, Error> {
    let too_large = || Error::Value { tensor: "weight".to_owned(), reason: "too large".to_owned() };
    let k = usize::try_from(k).map_err(|_| too_large())?;
    let start = rows.start.checked_mul(k).ok_or_else(too_large)?;
    let end = rows.end.checked_mul(k).ok_or_else(too_large)?;
    Ok(start..end)
}

/// The decoding table of `format`.
fn table(format: Fp8Format) -> fn(u8) -> f32 {
    match format {
        Fp8Format::E4M3 => e4m3_to_f32,
        Fp8Format::E5M2 => e5m2_to_f32,
    }
}

/// Reads a little-endian F32 at element `i` of `bytes` (length checked by the caller).
fn f32_at(bytes: &[u8], i: usize) -> f32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[4 * i..4 * i + 4]);
    f32::from_le_bytes(b)
}

/// Decodes rows of a plain FP8 weight `[n, k]`.
///
/// # Errors
/// Stored tensors of the wrong length.
pub fn decode_plain(
    stored: &[&[u8]],
    format: Fp8Format,
    n: u64,
    k: u64,
    rows: Range<u64>,
    out: &mut [f32],
) -> Result<(), Error> {
    let rows = check_request(stored, 1, n, k, &rows, out)?;
    let weight = stored[0];
    check_len("weight", weight, mul(n, k)?)?;
    let range = elements(&rows, k)?;
    let decode = table(format);
    for (o, &q) in out.iter_mut().zip(&weight[range]) {
        *o = decode(q);
    }
    Ok(())
}

/// Decodes rows of a ComfyUI FP8 weight (`weight`, `weight_scale`, `comfy_quant`), as
/// comfy-kitchen dequantizes to BF16: `bf16(q) · bf16(scale)`, the product rounded to BF16.
///
/// # Errors
/// Stored tensors of the wrong length, or a marker naming another format.
pub fn decode_comfy(
    stored: &[&[u8]],
    format: Fp8Format,
    n: u64,
    k: u64,
    rows: Range<u64>,
    out: &mut [f32],
) -> Result<(), Error> {
    let rows = check_request(stored, 3, n, k, &rows, out)?;
    let (weight, scale, marker) = (stored[0], stored[1], stored[2]);
    check_len("weight", weight, mul(n, k)?)?;
    let range = elements(&rows, k)?;
    check_len("weight_scale", scale, 4)?;
    let named = serde_json::from_slice::<serde_json::Value>(marker)
        .ok()
        .and_then(|v| v.get("format").and_then(|f| f.as_str().map(str::to_owned)));
    if named.as_deref() != Some(format.torch_name()) {
        return Err(Error::Value {
            tensor: "comfy_quant".to_owned(),
            reason: format!(
                "marker {:?} does not name {}",
                String::from_utf8_lossy(marker),
                format.torch_name()
            ),
        });
    }
    let s = bf16_to_fp32(fp32_to_bf16(f32_at(scale, 0)));
    let decode = table(format);
    for (o, &q) in out.iter_mut().zip(&weight[range]) {
        // FP8 values are exact in BF16, and the product of two BF16 values is exact in F32.
        *o = bf16_to_fp32(fp32_to_bf16(decode(q) * s));
    }
    Ok(())
}

/// Decodes rows of a BFL `fp8r` weight (`weight`, `weight_scale`), as diffusers'
/// `dequantize_fp8r` does: `f32(q) · scale[row]` in F32.
///
/// # Errors
/// Stored tensors of the wrong length.
pub fn decode_bfl(
    stored: &[&[u8]],
    n: u64,
    k: u64,
    rows: Range<u64>,
    out: &mut [f32],
) -> Result<(), Error> {
    let rows = check_request(stored, 2, n, k, &rows, out)?;
    let (weight, scales) = (stored[0], stored[1]);
    check_len("weight", weight, mul(n, k)?)?;
    check_len("weight_scale", scales, n.saturating_mul(4))?;
    let range = elements(&rows, k)?;
    let Ok(k) = usize::try_from(k) else { return Ok(()) };
    if k == 0 {
        return Ok(());
    }
    let first = rows.start;
    for (r, (o, q)) in out.chunks_exact_mut(k).zip(weight[range].chunks_exact(k)).enumerate() {
        let s = f32_at(scales, first + r);
        for (o, &q) in o.iter_mut().zip(q) {
            *o = e4m3_to_f32(q) * s;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{comfy_marker, decode_bfl, decode_comfy, decode_plain, layerwise_casting_skips};
    use crate::{Error, Fp8Format};

    #[test]
    fn layerwise_casting_skip_rule() {
        for skipped in [
            "double_blocks.0.img_mod.lin.weight",
            "double_blocks.3.txt_mod.lin.bias",
            "single_blocks.7.modulation.lin.weight",
            "final_layer.adaLN_modulation.1.weight",
            "final_layer.linear.weight",
            "double_blocks.0.img_attn.norm.query_norm.scale",
            "double_blocks.0.txt_attn.norm.key_norm.scale",
            "single_blocks.0.norm.key_norm.scale",
            "model.diffusion_model.final_layer.linear.weight",
        ] {
            assert!(layerwise_casting_skips(skipped), "{skipped}");
        }
        for cast in [
            "img_in.weight",
            "txt_in.weight",
            "time_in.in_layer.weight",
            "vector_in.out_layer.weight",
            "guidance_in.in_layer.weight",
            "double_blocks.0.img_attn.qkv.weight",
            "double_blocks.0.img_attn.proj.weight",
            "double_blocks.0.txt_mlp.2.weight",
            "single_blocks.0.linear1.weight",
            "single_blocks.0.linear2.weight",
        ] {
            assert!(!layerwise_casting_skips(cast), "{cast}");
        }
    }

    #[test]
    fn decoders_check_lengths_and_markers() {
        let mut out = [0.0f32; 4];
        // 0x38 is 1.0 in E4M3, 0x3c in E5M2.
        decode_plain(&[&[0x38, 0xb8, 0, 0x7e]], Fp8Format::E4M3, 2, 2, 0..2, &mut out).unwrap();
        assert_eq!(out, [1.0, -1.0, 0.0, 448.0]);
        let short = decode_plain(&[&[0x38]], Fp8Format::E4M3, 2, 2, 0..2, &mut out);
        assert!(matches!(short, Err(Error::Length { .. })));
        let rows = decode_plain(&[&[0; 4]], Fp8Format::E4M3, 2, 2, 1..3, &mut out);
        assert!(matches!(rows, Err(Error::Value { .. })));

        let marker = comfy_marker(Fp8Format::E4M3);
        let scale = 0.5f32.to_le_bytes();
        let w = [0x38, 0x40, 0xb8, 0x7e];
        decode_comfy(&[&w, &scale, marker.as_bytes()], Fp8Format::E4M3, 2, 2, 0..2, &mut out)
            .unwrap();
        assert_eq!(out, [0.5, 1.0, -0.5, 224.0]);
        let other = comfy_marker(Fp8Format::E5M2);
        let wrong =
            decode_comfy(&[&w, &scale, other.as_bytes()], Fp8Format::E4M3, 2, 2, 0..2, &mut out);
        assert!(matches!(wrong, Err(Error::Value { .. })));

        let scales: Vec<u8> = [2.0f32, 0.25].iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut row = [0.0f32; 2];
        decode_bfl(&[&w, &scales], 2, 2, 1..2, &mut row).unwrap();
        assert_eq!(row, [-0.25, 112.0]);
        assert!(decode_bfl(&[&w, &scales[..4]], 2, 2, 0..1, &mut row).is_err());
        assert!(decode_bfl(&[&w], 2, 2, 0..1, &mut row).is_err());
    }
}
