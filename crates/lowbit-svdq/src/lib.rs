//! SVDQuant on the CPU (`formats/svdq.md`): per layer, smoothing λ from calibration statistics,
//! a rank-r branch of the smoothed weight by a seeded randomized SVD, and an int4 g64 residual
//! in `lowbit-layout`'s svdq layout.
//!
//! - [`linalg`]: the products (matrixmultiply) and factorizations (nalgebra) of the randomized
//!   SVD, and an exact SVD for tests.
//! - [`quantize`]: one layer. With `Alpha::Auto` it scores every α of [`ALPHA_GRID`] (and
//!   λ = 1) by the layer's output error on synthetic activations drawn from the statistics, with
//!   the low-rank branch and both quantizations in the loop, on a fixed subset of output rows;
//!   then fits the whole weight with the best λ and, with `refine > 0`, runs DeepCompressor's
//!   loop (the branch refitted to `Ŵ − Q(residual)`), keeping the best by output error.
//!
//! **Architecture Invariant:** deterministic. Every random draw comes from the seed, every
//! parallel product is split over fixed blocks, so the bytes never depend on the thread count.

pub mod linalg;
mod score;

pub use linalg::{LowRank, Mat, RsvdOptions, exact_lowrank, gemm, gemm_sub, rsvd};
pub use score::{output_error, synthetic_activations};

use lowbit_dtype::f16::{bf16_to_fp32, fp32_to_bf16};
use lowbit_fixtures::rng::Rng;
use rayon::prelude::*;
use std::time::Instant;

/// The α grid `--alpha auto` searches (λ = 1, no smoothing, is always a candidate too).
pub const ALPHA_GRID: [f32; 9] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

/// The residual's group size.
pub const GROUP: usize = 64;

/// How λ is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Alpha {
    /// λ = 1: no smoothing.
    One,
    /// `λ_k = max|X_k|^α / max|W_:,k|^(1−α)` for this α.
    Fixed(f32),
    /// The α of [`ALPHA_GRID`] (or λ = 1) with the smallest output error.
    Auto,
}

/// What [`quantize`] does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// W4A4 (activations int4 per token, group 64) or W4A16.
    pub act4: bool,
    /// Rank of the branch (0: none).
    pub rank: usize,
    /// How λ is chosen.
    pub alpha: Alpha,
    /// DeepCompressor's refinement iterations after the first fit.
    pub refine: usize,
    /// The randomized SVD of the final fit (its seed is this layer's seed).
    pub rsvd: RsvdOptions,
    /// Power iterations of the α search's sketches.
    pub search_power_iters: usize,
    /// Synthetic tokens the output error is measured on.
    pub tokens: usize,
    /// Output rows the α search fits and every score is measured on.
    pub score_rows: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            act4: true,
            rank: 32,
            alpha: Alpha::Auto,
            refine: 0,
            rsvd: RsvdOptions::default(),
            search_power_iters: 1,
            tokens: 64,
            score_rows: 1024,
        }
    }
}

/// One quantized layer, as the svdq layout stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    /// int4 codes `[N, K/2]`, low nibble = even k.
    pub qweight: Vec<u8>,
    /// BF16 bits of the group scales, `[K/64, N]`.
    pub wscales: Vec<u16>,
    /// BF16 bits of λ, `[K]`.
    pub smooth: Vec<u16>,
    /// BF16 bits of the down-projection acting on the unsmoothed input, `[K, r]`.
    pub proj_down: Vec<u16>,
    /// BF16 bits of the up-projection, `[N, r]`.
    pub proj_up: Vec<u16>,
    /// The α used (`None`: λ = 1).
    pub alpha: Option<f32>,
    /// Relative output error (‖Y − Ŷ‖² / ‖Y‖²) on the synthetic activations.
    pub error: f64,
    /// Refinement iterations kept.
    pub refined: usize,
    /// The α search: each candidate and its relative output error.
    pub candidates: Vec<(Option<f32>, f64)>,
    /// Where the time went.
    pub timings: Timings,
}

/// Seconds spent in each stage of [`quantize`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// The α search (fits and scores on the scoring rows).
    pub search: f64,
    /// Randomized SVDs of the final fit and its refinements.
    pub svd: f64,
    /// Smoothing, branch subtraction and int4 quantization of the final fit and refinements.
    pub quantize: f64,
    /// Scoring the final fit and refinements.
    pub score: f64,
}

impl Quantized {
    /// The stored tensors' bytes, in the layout's order.
    #[must_use]
    pub fn stored(&self) -> [Vec<u8>; 5] {
        let b = |v: &[u16]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        [
            self.qweight.clone(),
            b(&self.wscales),
            b(&self.smooth),
            b(&self.proj_down),
            b(&self.proj_up),
        ]
    }
}

/// Per-column absmax of the row-major `w` (`[n, k]`).
#[must_use]
pub fn column_absmax(w: &[f32], k: usize) -> Vec<f32> {
    w.par_chunks(k.max(1) * 256)
        .map(|rows| {
            let mut m = vec![0f32; k];
            for row in rows.chunks_exact(k) {
                for (m, v) in m.iter_mut().zip(row) {
                    *m = m.max(v.abs());
                }
            }
            m
        })
        .reduce(|| vec![0f32; k], |a, b| a.iter().zip(&b).map(|(x, y)| x.max(*y)).collect())
}

/// λ for one α, rounded to BF16 as stored: `max|X_k|^α / max|W_:,k|^(1−α)` (both floored at
/// 1e-5), divided by `sqrt(max λ · min λ)` so it is centred on 1, clamped to `[1e-4, 1e4]`.
#[must_use]
pub fn smooth_factors(x_absmax: &[f32], w_absmax: &[f32], alpha: f32) -> Vec<f32> {
    let a = f64::from(alpha);
    let raw: Vec<f64> = x_absmax
        .iter()
        .zip(w_absmax)
        .map(|(x, w)| f64::from(x.max(1e-5)).powf(a) / f64::from(w.max(1e-5)).powf(1.0 - a))
        .collect();
    let (lo, hi) = raw.iter().fold((f64::MAX, 0f64), |(l, h), v| (l.min(*v), h.max(*v)));
    let centre = (lo * hi).sqrt();
    #[expect(clippy::cast_possible_truncation, reason = "λ is stored in BF16")]
    raw.iter().map(|v| bf16_to_fp32(fp32_to_bf16((v / centre).clamp(1e-4, 1e4) as f32))).collect()
}

/// A fit of rows of a weight for one λ: the stored branch and the quantized residual.
struct Fit {
    /// BF16 bits `[rows, r]`.
    up: Vec<u16>,
    /// BF16 bits `[k, r]` (divided by λ).
    down: Vec<u16>,
    /// `[rows, k/2]`.
    packed: Vec<u8>,
    /// BF16 bits, row-major `[rows, k/64]`.
    scales: Vec<u16>,
    /// The dequantized residual of the rows asked for, `[rows, k]`.
    deq: Vec<f32>,
}

fn bf16_vec(v: &[f32]) -> Vec<u16> {
    v.iter().map(|x| fp32_to_bf16(*x)).collect()
}

fn f32_vec(v: &[u16]) -> Vec<f32> {
    v.iter().map(|x| bf16_to_fp32(*x)).collect()
}

/// Fits `w` (`[n, k]`) smoothed by `lam`: the branch is the rank-`rank` SVD of `Ŵ − base`
/// (`base`: the previous dequantized residual, for refinement), the residual `Ŵ − branch` (with
/// the branch as stored, in BF16) is quantized; `Fit::deq` holds the dequantized residual of
/// `deq_rows` (all rows when `None`), in that order; the time goes to `t`.
#[expect(clippy::too_many_arguments, reason = "the weight, its λ and the fit's options")]
fn fit(
    w: &[f32],
    n: usize,
    k: usize,
    lam: &[f32],
    rank: usize,
    o: &RsvdOptions,
    base: Option<&[f32]>,
    deq_rows: Option<&[usize]>,
    t: &mut Timings,
) -> Fit {
    let start = Instant::now();
    let mut what = w.to_vec();
    what.par_chunks_mut(k).for_each(|row| row.iter_mut().zip(lam).for_each(|(v, l)| *v *= l));
    let svd_start = Instant::now();
    let lr = match base {
        Some(b) => {
            let mut target = what.clone();
            target.par_iter_mut().zip(b).for_each(|(v, b)| *v -= b);
            rsvd(&target, n, k, rank, o)
        }
        None => rsvd(&what, n, k, rank, o),
    };
    let svd = svd_start.elapsed().as_secs_f64();
    t.svd += svd;
    let r = lr.rank;
    let up = bf16_vec(&lr.up);
    let down: Vec<u16> = lr
        .down
        .chunks(r.max(1))
        .zip(lam)
        .flat_map(|(d, l)| d.iter().map(move |v| fp32_to_bf16(v / l)))
        .collect();
    if r > 0 {
        let down_eff: Vec<f32> = down
            .chunks(r)
            .zip(lam)
            .flat_map(|(d, l)| d.iter().map(move |v| bf16_to_fp32(*v) * l))
            .collect();
        gemm_sub(&mut what, Mat::new(&f32_vec(&up), n, r), Mat::new(&down_eff, k, r).t());
    }
    let g = k / GROUP;
    let mut packed = vec![0u8; n * k / 2];
    let mut scales = vec![0u16; n * g];
    let rows = 64;
    what.par_chunks(rows * k)
        .zip(packed.par_chunks_mut(rows * k / 2))
        .zip(scales.par_chunks_mut(rows * g))
        .for_each(|((x, p), s)| {
            lowbit_quant::packed::int4::quantize_rows(x, k, GROUP, false, p, s, &mut []);
        });
    drop(what);
    // The dequantized residual of the rows asked for (all of them for a refinement).
    let all: Vec<usize>;
    let deq_rows = match deq_rows {
        Some(r) => r,
        None => {
            all = (0..n).collect();
            &all
        }
    };
    let mut deq = vec![0f32; deq_rows.len() * k];
    deq.par_chunks_mut(k).zip(deq_rows).for_each(|(d, &row)| {
        let mut codes = vec![0i8; k];
        lowbit_layout::int4::unpack(&packed[row * k / 2..(row + 1) * k / 2], &mut codes);
        for ((dg, cg), sc) in d.chunks_mut(GROUP).zip(codes.chunks(GROUP)).zip(&scales[row * g..]) {
            let sc = bf16_to_fp32(*sc);
            for (dv, c) in dg.iter_mut().zip(cg) {
                *dv = f32::from(*c) * sc;
            }
        }
    });
    t.quantize += start.elapsed().as_secs_f64() - svd;
    Fit { up, down, packed, scales, deq }
}

/// The rows a score is measured on: all of them, or `count` evenly spaced ones.
fn score_rows(n: usize, count: usize) -> Vec<usize> {
    if n <= count { (0..n).collect() } else { (0..count).map(|i| i * n / count).collect() }
}

fn take_rows<T: Copy>(v: &[T], width: usize, rows: &[usize]) -> Vec<T> {
    rows.iter().flat_map(|&r| v[r * width..(r + 1) * width].iter().copied()).collect()
}

/// What every output error of a layer is measured against: the synthetic tokens `x` (from the
/// statistics and the layer's seed), the scored output rows, those rows of the weight, and the
/// exact outputs `y_ref = x · wsᵀ`.
struct Reference {
    x: Vec<f32>,
    rows: Vec<usize>,
    ws: Vec<f32>,
    y_ref: Vec<f32>,
}

impl Reference {
    fn new(
        w: &[f32],
        n: usize,
        k: usize,
        act_absmax: Option<&[f32]>,
        cfg: &Config,
        seed: u64,
    ) -> Reference {
        let ones;
        let ax = match act_absmax {
            Some(a) => a,
            None => {
                ones = vec![1f32; k];
                &ones
            }
        };
        assert_eq!(ax.len(), k, "statistics of {k} channels");
        let x =
            synthetic_activations(ax, cfg.tokens, Rng::for_name(seed, "activations").next_u64());
        let rows = score_rows(n, cfg.score_rows);
        let ws = take_rows(w, k, &rows);
        let y_ref = gemm(Mat::new(&x, cfg.tokens, k), Mat::new(&ws, rows.len(), k).t());
        Reference { x, rows, ws, y_ref }
    }
}

/// Quantizes one layer `w` (`[n, k]` row-major, `k` a multiple of 64) with the per-channel input
/// absmax `act_absmax` (`[k]`; `None`: no statistics, so λ = 1) and per-layer `seed`.
///
/// # Panics
/// When `k` is not a multiple of 64 or the lengths disagree.
#[must_use]
pub fn quantize(
    w: &[f32],
    n: usize,
    k: usize,
    act_absmax: Option<&[f32]>,
    cfg: &Config,
    seed: u64,
) -> Quantized {
    assert!(k.is_multiple_of(GROUP) && w.len() == n * k, "a [{n}, {k}] weight");
    let ones = vec![1f32; k];
    let ax = act_absmax.unwrap_or(&ones);
    let Reference { x, rows, ws, y_ref } = Reference::new(w, n, k, act_absmax, cfg, seed);
    let s = rows.len();
    let aw = column_absmax(w, k);
    let lam_for = |a: Option<f32>| a.map_or_else(|| ones.clone(), |a| smooth_factors(ax, &aw, a));
    let mut candidates: Vec<Option<f32>> = match (cfg.alpha, act_absmax) {
        (Alpha::One, _) | (_, None) => vec![None],
        (Alpha::Fixed(a), Some(_)) => vec![Some(a)],
        (Alpha::Auto, Some(_)) => std::iter::once(None).chain(ALPHA_GRID.map(Some)).collect(),
    };
    let score = |fit: &Fit, lam: &[f32], sub: Option<&[usize]>| {
        let (deq, up) = match sub {
            Some(r) if fit.deq.len() == n * k && r.len() < n => {
                (take_rows(&fit.deq, k, r), take_rows(&fit.up, fit.down.len() / k, r))
            }
            Some(r) => (fit.deq.clone(), take_rows(&fit.up, fit.down.len() / k, r)),
            None => (fit.deq.clone(), fit.up.clone()),
        };
        output_error(&x, &y_ref, k, lam, &deq, &f32_vec(&up), &f32_vec(&fit.down), cfg.act4)
    };
    let mut scored = Vec::new();
    let mut timings = Timings::default();
    let search_start = Instant::now();
    if candidates.len() > 1 {
        let o = RsvdOptions { power_iters: cfg.search_power_iters, seed, ..cfg.rsvd };
        for &a in &candidates {
            let lam = lam_for(a);
            let f = fit(&ws, s, k, &lam, cfg.rank, &o, None, None, &mut Timings::default());
            scored.push((a, score(&f, &lam, None)));
        }
        let best = scored.iter().min_by(|p, q| p.1.total_cmp(&q.1)).map(|p| p.0);
        candidates = vec![best.flatten()];
    }
    timings.search = search_start.elapsed().as_secs_f64();
    let alpha = candidates[0];
    let lam = lam_for(alpha);
    let o = RsvdOptions { seed, ..cfg.rsvd };
    // A refinement needs the whole dequantized residual; the score only its rows.
    let deq_rows = (cfg.refine == 0).then_some(rows.as_slice());
    let mut best = fit(w, n, k, &lam, cfg.rank, &o, None, deq_rows, &mut timings);
    let score_start = Instant::now();
    let mut best_err = score(&best, &lam, Some(&rows));
    timings.score += score_start.elapsed().as_secs_f64();
    let mut refined = 0;
    for t in 1..=cfg.refine {
        let f = fit(w, n, k, &lam, cfg.rank, &o, Some(&best.deq), None, &mut timings);
        let score_start = Instant::now();
        let e = score(&f, &lam, Some(&rows));
        timings.score += score_start.elapsed().as_secs_f64();
        if e >= best_err {
            break;
        }
        (best, best_err, refined) = (f, e, t);
    }
    let g = k / GROUP;
    let wscales = (0..g * n).map(|i| best.scales[(i % n) * g + i / n]).collect();
    Quantized {
        qweight: best.packed,
        wscales,
        smooth: bf16_vec(&lam),
        proj_down: best.down,
        proj_up: best.up,
        alpha,
        error: best_err,
        refined,
        candidates: scored,
        timings,
    }
}

/// The relative output error of replacing the weight by `replace(rows)` (a weight-only
/// quantize-dequantize of whole rows, e.g. FP8) on the same synthetic activations and output
/// rows [`quantize`] scores with for this `seed`.
///
/// # Panics
/// When the lengths disagree.
#[must_use]
pub fn weight_only_error(
    w: &[f32],
    n: usize,
    k: usize,
    act_absmax: Option<&[f32]>,
    cfg: &Config,
    seed: u64,
    replace: &(dyn Fn(&[f32]) -> Vec<f32> + Sync),
) -> f64 {
    assert_eq!(w.len(), n * k, "a [{n}, {k}] weight");
    let r = Reference::new(w, n, k, act_absmax, cfg, seed);
    let deq = replace(&r.ws);
    output_error(&r.x, &r.y_ref, k, &vec![1f32; k], &deq, &[], &[], false)
}

#[cfg(test)]
mod tests;
