//! FP8 encoders: round to nearest even with explicit saturation at the format's largest finite
//! value (bit-exact with `ml_dtypes` on every finite input), and the scaled variants of
//! ComfyUI (per tensor, BF16 reciprocal) and BFL (`fp8r`, per row).

use lowbit_layout::Fp8Format;

/// Encodes one value (NaN stays NaN).
#[must_use]
pub fn encode(x: f32, format: Fp8Format) -> u8 {
    todo!("helper: {x} {format:?}")
}

/// Encodes `x` into `out` without a scale.
pub fn plain(x: &[f32], format: Fp8Format, out: &mut [u8]) {
    todo!("helper: {} {format:?} {}", x.len(), out.len())
}

/// max |x| (NaN-free input).
#[must_use]
pub fn amax(x: &[f32]) -> f32 {
    todo!("helper: {}", x.len())
}

/// ComfyUI's per-tensor scale for a tensor whose max |W| is `amax`.
#[must_use]
pub fn comfy_scale(amax: f32, format: Fp8Format) -> f32 {
    todo!("helper: {amax} {format:?}")
}

/// ComfyUI's quantization of BF16 values `x` with per-tensor `scale`.
pub fn comfy(x: &[f32], scale: f32, format: Fp8Format, out: &mut [u8]) {
    todo!("helper: {} {scale} {format:?} {}", x.len(), out.len())
}

/// BFL `fp8r`: whole rows of length `k`, codes into `out`, one FP32 scale per row into `scales`.
pub fn bfl_rows(x: &[f32], k: usize, out: &mut [u8], scales: &mut [f32]) {
    todo!("helper: {} {k} {} {}", x.len(), out.len(), scales.len())
}
