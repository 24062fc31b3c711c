//! Synthetic activations drawn from calibration statistics, and a layer's output error on them.

use crate::linalg::{Mat, gemm};
use lowbit_fixtures::rng::Rng;

/// `tokens` synthetic input rows `[tokens, K]` matching per-channel absmax statistics: channel
/// k is Gaussian with standard deviation `absmax_k / 3`, clamped to `±absmax_k`, so outlier
/// channels stay outliers in every token.
#[must_use]
pub fn synthetic_activations(absmax: &[f32], tokens: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut x = Vec::with_capacity(tokens * absmax.len());
    for _ in 0..tokens {
        for &a in absmax {
            #[expect(clippy::cast_possible_truncation, reason = "a sample in f32")]
            let z = (rng.normal() / 3.0).clamp(-1.0, 1.0) as f32;
            x.push(a * z);
        }
    }
    x
}

/// The relative output error `‖Y − Ŷ‖² / ‖Y‖²` of a quantized layer on `x` (`[m, k]`), where
/// `y_ref = x · Wᵀ` (`[m, s]`) and `Ŷ = A(x) · deqᵀ + (x · down) · upᵀ`: `A(x) = x / λ`
/// quantized per token (W4A4) or not (W4A16), `deq` the dequantized residual (`[s, k]`),
/// `down` (`[k, r]`, acting on the unsmoothed input) and `up` (`[s, r]`) the branch as stored.
#[must_use]
#[expect(clippy::too_many_arguments, reason = "the layer's parts")]
pub fn output_error(
    x: &[f32],
    y_ref: &[f32],
    k: usize,
    lam: &[f32],
    deq: &[f32],
    up: &[f32],
    down: &[f32],
    act4: bool,
) -> f64 {
    let m = x.len() / k.max(1);
    let s = deq.len() / k.max(1);
    let mut xa = vec![0f32; x.len()];
    for (xr, o) in x.chunks_exact(k).zip(xa.chunks_exact_mut(k)) {
        if act4 {
            lowbit_layout::svdq::quantize_token(xr, lam, o);
        } else {
            for ((o, v), l) in o.iter_mut().zip(xr).zip(lam) {
                *o = v / l;
            }
        }
    }
    let mut y = gemm(Mat::new(&xa, m, k), Mat::new(deq, s, k).t());
    let r = down.len() / k.max(1);
    if r > 0 {
        let lora = gemm(Mat::new(x, m, k), Mat::new(down, k, r));
        let branch = gemm(Mat::new(&lora, m, r), Mat::new(up, s, r).t());
        y.iter_mut().zip(&branch).for_each(|(y, b)| *y += b);
    }
    let (mut num, mut den) = (0f64, 0f64);
    for (a, b) in y_ref.iter().zip(&y) {
        num += f64::from(a - b).powi(2);
        den += f64::from(*a).powi(2);
    }
    if den > 0.0 { num / den } else { num }
}
