//! FP8 layouts (`formats/fp8.md`): plain (no scale), ComfyUI (`weight_scale` F32 scalar,
//! `comfy_quant` marker; W = bf16(q) · bf16(scale) rounded to BF16) and BFL `fp8r`
//! (`weight_scale` F32 `[N]`).

use crate::{Error, Fp8Format};
use std::ops::Range;

/// ComfyUI's `comfy_quant` marker: `json.dumps({"format": ...})`.
#[must_use]
pub fn comfy_marker(format: Fp8Format) -> String {
    format!("{{\"format\": \"{}\"}}", format.torch_name())
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
    todo!("helper: {} {format:?} {n} {k} {rows:?} {}", stored.len(), out.len())
}

/// Decodes rows of a ComfyUI FP8 weight (`weight`, `weight_scale`, `comfy_quant`).
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
    todo!("helper: {} {format:?} {n} {k} {rows:?} {}", stored.len(), out.len())
}

/// Decodes rows of a BFL `fp8r` weight (`weight`, `weight_scale`).
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
    todo!("helper: {} {n} {k} {rows:?} {}", stored.len(), out.len())
}

/// Whether diffusers' layerwise casting keeps this FLUX weight (BFL name) in the compute dtype.
#[must_use]
pub fn layerwise_casting_skips(bfl_name: &str) -> bool {
    todo!("helper: {bfl_name}")
}
