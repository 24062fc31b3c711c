//! Tests of a layer's quantization.

use super::{Alpha, Config, GROUP, quantize, smooth_factors};
use lowbit_fixtures::rng::Rng;

/// A weight with a decaying low-rank part and noise, and statistics with outlier channels.
fn layer(n: usize, k: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut r = Rng::new(seed);
    let rank = 24;
    let u: Vec<f32> = (0..n * rank).map(|_| r.normal() as f32).collect();
    let v: Vec<f32> = (0..rank * k).map(|_| r.normal() as f32).collect();
    let mut w = vec![0f32; n * k];
    for i in 0..n {
        for j in 0..k {
            let lr: f32 =
                (0..rank).map(|t| 0.85f32.powi(t as i32) * u[i * rank + t] * v[t * k + j]).sum();
            w[i * k + j] = 0.02 * (r.normal() as f32 + 0.15 * lr);
        }
    }
    let ax: Vec<f32> =
        (0..k).map(|j| if j % 97 == 5 { 60.0 } else { 1.0 + r.uniform() as f32 }).collect();
    (w, ax)
}

#[test]
fn smoothing_and_low_rank_beat_round_to_nearest() {
    let (n, k) = (256, 512);
    let (w, ax) = layer(n, k, 1);
    let naive = Config { rank: 0, alpha: Alpha::One, ..Config::default() };
    let rtn = quantize(&w, n, k, Some(&ax), &naive, 7);
    let svdq = quantize(&w, n, k, Some(&ax), &Config::default(), 7);
    assert!(svdq.error * 3.0 < rtn.error, "svdq {} vs rtn {}", svdq.error, rtn.error);
    assert_eq!(svdq.candidates.len(), 10);
    assert!(svdq.alpha.is_some(), "outlier channels call for smoothing");
    assert_eq!(svdq.qweight.len(), n * k / 2);
    assert_eq!(svdq.wscales.len(), n * k / GROUP);
    assert_eq!((svdq.proj_down.len(), svdq.proj_up.len()), (k * 32, n * 32));
    // The search's winner is the best candidate.
    let best = svdq.candidates.iter().map(|c| c.1).fold(f64::MAX, f64::min);
    assert_eq!(svdq.candidates.iter().find(|c| c.1 == best).unwrap().0, svdq.alpha);
}

#[test]
fn refinement_never_makes_it_worse_and_is_deterministic() {
    let (n, k) = (128, 256);
    let (w, ax) = layer(n, k, 2);
    let cfg = Config { alpha: Alpha::Fixed(0.5), ..Config::default() };
    let plain = quantize(&w, n, k, Some(&ax), &cfg, 3);
    let refined = quantize(&w, n, k, Some(&ax), &Config { refine: 4, ..cfg }, 3);
    assert!(refined.error <= plain.error);
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let again = one.install(|| quantize(&w, n, k, Some(&ax), &cfg, 3));
    assert!(again.stored() == plain.stored() && again.error == plain.error, "thread count matters");
}

#[test]
fn smooth_factors_follow_the_formula() {
    let lam = smooth_factors(&[4.0, 1.0, 1.0], &[1.0, 1.0, 4.0], 0.5);
    // Raw: 2, 1, 0.5; centred on sqrt(2 · 0.5) = 1.
    assert_eq!(lam, vec![2.0, 1.0, 0.5]);
    let lam = smooth_factors(&[9.0, 1.0], &[1.0, 1.0], 1.0);
    assert_eq!(lam, [3.0, 1.0 / 3.0f32].iter().map(|v| half_bf16(*v)).collect::<Vec<_>>());
}

fn half_bf16(v: f32) -> f32 {
    lowbit_dtype::f16::bf16_to_fp32(lowbit_dtype::f16::fp32_to_bf16(v))
}

#[test]
fn w4a16_without_statistics_is_plain_int4_plus_branch() {
    let (n, k) = (64, 128);
    let (w, _) = layer(n, k, 4);
    let cfg = Config { act4: false, ..Config::default() };
    let q = quantize(&w, n, k, None, &cfg, 1);
    assert_eq!(q.alpha, None);
    assert!(q.smooth.iter().all(|s| *s == 0x3f80));
    assert!(q.candidates.is_empty());
}
