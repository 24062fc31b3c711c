//! Dense products (matrixmultiply's `sgemm`, split over fixed blocks of rows or columns so the
//! result is the same whatever the thread count) and the factorizations of a randomized SVD
//! (nalgebra's Householder QR and SVD in `f64`, on the small sketches only).
#![allow(unsafe_code, reason = "matrixmultiply's sgemm takes raw pointers and strides")]

use lowbit_fixtures::rng::Rng;
use nalgebra::DMatrix;
use rayon::prelude::*;

/// Rows or columns of the output one parallel `sgemm` call computes.
const BLOCK: usize = 256;

/// A borrowed matrix: element `(i, j)` is `data[i·rs + j·cs]`.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a> {
    /// The elements.
    pub data: &'a [f32],
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major `[rows, cols]` matrix.
    ///
    /// # Panics
    /// When `data` does not hold `rows · cols` values.
    #[must_use]
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Mat<'a> {
        assert_eq!(data.len(), rows * cols, "a [{rows}, {cols}] matrix");
        Mat { data, rows, cols, rs: cols, cs: 1 }
    }

    /// The transpose (no copy).
    #[must_use]
    pub fn t(self) -> Mat<'a> {
        Mat { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    /// Rows `r0..r1`.
    fn rows(self, r0: usize, r1: usize) -> Mat<'a> {
        Mat { data: &self.data[r0 * self.rs..], rows: r1 - r0, ..self }
    }

    /// Columns `c0..c1`.
    fn cols(self, c0: usize, c1: usize) -> Mat<'a> {
        Mat { data: &self.data[c0 * self.cs..], cols: c1 - c0, ..self }
    }

    /// Whether every element's index is inside `data`.
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `C = A · B` into the row-major `c` (`[a.rows, b.cols]`), one `sgemm` call.
fn sgemm(a: Mat<'_>, b: Mat<'_>, c: &mut [f32]) {
    sgemm_ab(a, b, c, 1.0, 0.0);
}

/// `C = alpha · A · B + beta · C` into the row-major `c` (`[a.rows, b.cols]`), one call.
fn sgemm_ab(a: Mat<'_>, b: Mat<'_>, c: &mut [f32], alpha: f32, beta: f32) {
    assert!(a.cols == b.rows && a.in_bounds() && b.in_bounds(), "gemm shapes");
    assert_eq!(c.len(), a.rows * b.cols, "gemm output");
    if c.is_empty() {
        return;
    }
    if a.cols == 0 {
        c.iter_mut().for_each(|v| *v *= beta);
        return;
    }
    let s = |v: usize| isize::try_from(v).expect("stride fits isize");
    // SAFETY: every index `i·rs + j·cs` of `a` and `b` is inside its slice (`in_bounds`), and
    // `c` holds exactly `a.rows · b.cols` values, read and written row-major with strides
    // (b.cols, 1).
    unsafe {
        matrixmultiply::sgemm(
            a.rows,
            a.cols,
            b.cols,
            alpha,
            a.data.as_ptr(),
            s(a.rs),
            s(a.cs),
            b.data.as_ptr(),
            s(b.rs),
            s(b.cs),
            beta,
            c.as_mut_ptr(),
            s(b.cols),
            1,
        );
    }
}

/// `A · B`, row-major `[a.rows, b.cols]`, computed in parallel over fixed blocks of whichever
/// output dimension is larger.
#[must_use]
pub fn gemm(a: Mat<'_>, b: Mat<'_>) -> Vec<f32> {
    let (m, n) = (a.rows, b.cols);
    let mut c = vec![0f32; m * n];
    if m >= n {
        c.par_chunks_mut(BLOCK * n.max(1)).enumerate().for_each(|(i, cb)| {
            let r0 = i * BLOCK;
            sgemm(a.rows(r0, r0 + cb.len() / n.max(1)), b, cb);
        });
    } else {
        let blocks: Vec<Vec<f32>> = (0..n.div_ceil(BLOCK))
            .into_par_iter()
            .map(|i| {
                let (c0, c1) = (i * BLOCK, ((i + 1) * BLOCK).min(n));
                let mut cb = vec![0f32; m * (c1 - c0)];
                sgemm(a, b.cols(c0, c1), &mut cb);
                cb
            })
            .collect();
        for (i, cb) in blocks.iter().enumerate() {
            let (c0, w) = (i * BLOCK, cb.len() / m.max(1));
            for (row, src) in c.chunks_exact_mut(n).zip(cb.chunks_exact(w)) {
                row[c0..c0 + w].copy_from_slice(src);
            }
        }
    }
    c
}

/// `C −= A · B` in place (`c` row-major `[a.rows, b.cols]`), in parallel over fixed blocks of
/// rows.
pub fn gemm_sub(c: &mut [f32], a: Mat<'_>, b: Mat<'_>) {
    let n = b.cols.max(1);
    assert_eq!(c.len(), a.rows * b.cols, "gemm output");
    c.par_chunks_mut(BLOCK * n).enumerate().for_each(|(i, cb)| {
        let r0 = i * BLOCK;
        sgemm_ab(a.rows(r0, r0 + cb.len() / n), b, cb, -1.0, 1.0);
    });
}

/// Replaces the columns of the row-major `y` (`[rows, cols]`, `rows ≥ cols`) with an
/// orthonormal basis of their span (Householder QR in `f64`).
pub fn orthonormalize(y: &mut [f32], rows: usize, cols: usize) {
    let m = DMatrix::<f64>::from_fn(rows, cols, |i, j| f64::from(y[i * cols + j]));
    let q = m.qr().q();
    for (i, row) in y.chunks_exact_mut(cols).enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            #[expect(clippy::cast_possible_truncation, reason = "an orthonormal basis in f32")]
            {
                *v = q[(i, j)] as f32;
            }
        }
    }
}

/// A rank-`r` factorization `W ≈ up · downᵀ`.
#[derive(Debug, Clone, PartialEq)]
pub struct LowRank {
    /// `[n, r]` row-major: left singular vectors times singular values.
    pub up: Vec<f32>,
    /// `[k, r]` row-major: right singular vectors.
    pub down: Vec<f32>,
    /// The rank.
    pub rank: usize,
    /// The `r` singular values, largest first.
    pub sigma: Vec<f64>,
}

impl LowRank {
    /// `up · downᵀ`, `[n, k]` row-major.
    #[must_use]
    pub fn product(&self, n: usize, k: usize) -> Vec<f32> {
        gemm(Mat::new(&self.up, n, self.rank), Mat::new(&self.down, k, self.rank).t())
    }
}

/// How a randomized SVD sketches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RsvdOptions {
    /// Extra sketch columns beyond the rank (at least 8).
    pub oversample: usize,
    /// Power iterations, each re-orthonormalised.
    pub power_iters: usize,
    /// Seed of the Gaussian test matrix.
    pub seed: u64,
}

impl Default for RsvdOptions {
    fn default() -> Self {
        RsvdOptions { oversample: 8, power_iters: 2, seed: 0 }
    }
}

/// The rank-`rank` truncated SVD of the row-major `w` (`[n, k]`) by a seeded randomized SVD
/// (Halko, Martinsson and Tropp): a Gaussian sketch of `rank + oversample` columns, power
/// iterations with QR between every product, then the SVD of the small projection.
/// Deterministic: the same inputs and seed give the same bits whatever the thread count.
#[must_use]
pub fn rsvd(w: &[f32], n: usize, k: usize, rank: usize, o: &RsvdOptions) -> LowRank {
    let rank = rank.min(n).min(k);
    if rank == 0 {
        return LowRank { up: Vec::new(), down: Vec::new(), rank: 0, sigma: Vec::new() };
    }
    let l = (rank + o.oversample).min(n).min(k);
    let wm = Mat::new(w, n, k);
    let mut rng = Rng::new(o.seed);
    #[expect(clippy::cast_possible_truncation, reason = "a Gaussian sample in f32")]
    let omega: Vec<f32> = (0..k * l).map(|_| rng.normal() as f32).collect();
    let mut q = gemm(wm, Mat::new(&omega, k, l));
    orthonormalize(&mut q, n, l);
    for _ in 0..o.power_iters {
        let mut z = gemm(wm.t(), Mat::new(&q, n, l));
        orthonormalize(&mut z, k, l);
        q = gemm(wm, Mat::new(&z, k, l));
        orthonormalize(&mut q, n, l);
    }
    // B = Qᵀ W, [l, k]; its SVD gives W ≈ (Q · U_B) Σ V_Bᵀ.
    let b = gemm(Mat::new(&q, n, l).t(), wm);
    let bm = DMatrix::<f64>::from_fn(l, k, |i, j| f64::from(b[i * k + j]));
    let top = Top::new(bm, rank);
    let us = top.scaled_u(l);
    let up = gemm(Mat::new(&q, n, l), Mat::new(&us, l, rank));
    let down = top.v(k);
    LowRank { up, down, rank, sigma: top.sigma }
}

/// The exact rank-`rank` truncated SVD (nalgebra's full SVD in `f64`): the optimum the
/// randomized one is tested against, for small shapes.
#[must_use]
pub fn exact_lowrank(w: &[f32], n: usize, k: usize, rank: usize) -> LowRank {
    let rank = rank.min(n).min(k);
    let top = Top::new(DMatrix::<f64>::from_fn(n, k, |i, j| f64::from(w[i * k + j])), rank);
    LowRank { up: top.scaled_u(n), down: top.v(k), rank, sigma: top.sigma }
}

/// The `rank` largest singular triplets of a matrix, from nalgebra's SVD (whose singular values
/// are not sorted).
struct Top {
    u: DMatrix<f64>,
    vt: DMatrix<f64>,
    /// Indices of the kept singular values, largest first.
    order: Vec<usize>,
    sigma: Vec<f64>,
}

impl Top {
    fn new(m: DMatrix<f64>, rank: usize) -> Top {
        let svd = m.svd(true, true);
        let (u, vt) = (svd.u.expect("asked for U"), svd.v_t.expect("asked for Vᵀ"));
        let s = &svd.singular_values;
        let mut order: Vec<usize> = (0..s.len()).collect();
        order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
        order.truncate(rank);
        let sigma = order.iter().map(|&i| s[i]).collect();
        Top { u, vt, order, sigma }
    }

    /// `U_r Σ_r`, `[rows, r]` row-major.
    #[expect(clippy::cast_possible_truncation, reason = "factors in f32")]
    fn scaled_u(&self, rows: usize) -> Vec<f32> {
        (0..rows)
            .flat_map(|i| {
                self.order.iter().zip(&self.sigma).map(move |(&j, s)| (self.u[(i, j)] * s) as f32)
            })
            .collect()
    }

    /// `V_r`, `[cols, r]` row-major.
    #[expect(clippy::cast_possible_truncation, reason = "factors in f32")]
    fn v(&self, cols: usize) -> Vec<f32> {
        (0..cols).flat_map(|c| self.order.iter().map(move |&j| self.vt[(j, c)] as f32)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{Mat, RsvdOptions, exact_lowrank, gemm, rsvd};
    use lowbit_fixtures::rng::Rng;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        (0..m * n)
            .map(|i| (0..k).map(|j| f64::from(a[i / n * k + j] * b[j * n + i % n])).sum::<f64>())
            .map(|v| v as f32)
            .collect()
    }

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut r = Rng::new(seed);
        (0..len).map(|_| r.normal() as f32).collect()
    }

    #[test]
    fn gemm_matches_the_definition_in_both_splits() {
        for (m, k, n) in [(300, 17, 5), (3, 40, 600), (1, 1, 1), (257, 33, 257)] {
            let (a, b) = (random(m * k, 1), random(k * n, 2));
            let c = gemm(Mat::new(&a, m, k), Mat::new(&b, k, n));
            for (x, y) in c.iter().zip(naive(&a, &b, m, k, n)) {
                assert!((x - y).abs() < 1e-4, "{m} {k} {n}: {x} {y}");
            }
            // Transposed views: (Bᵀ Aᵀ)ᵀ = A B.
            let ct = gemm(Mat::new(&b, k, n).t(), Mat::new(&a, m, k).t());
            for i in 0..m {
                for j in 0..n {
                    assert!((ct[j * m + i] - c[i * n + j]).abs() < 1e-4);
                }
            }
        }
    }

    fn residual(w: &[f32], lr: &super::LowRank, n: usize, k: usize) -> f64 {
        let p = lr.product(n, k);
        w.iter().zip(&p).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>().sqrt()
    }

    #[test]
    fn randomized_svd_is_within_a_percent_of_the_optimum() {
        // A decaying spectrum plus noise, as in real weights.
        for (n, k) in [(96, 160), (200, 64)] {
            let (u, v) = (random(n * 24, 3), random(24 * k, 4));
            let mut w = random(n * k, 5);
            for i in 0..n {
                for j in 0..k {
                    let s: f32 =
                        (0..24).map(|r| 0.8f32.powi(r as i32) * u[i * 24 + r] * v[r * k + j]).sum();
                    w[i * k + j] = 0.2 * w[i * k + j] + s;
                }
            }
            let exact = exact_lowrank(&w, n, k, 16);
            let fast = rsvd(&w, n, k, 16, &RsvdOptions::default());
            let (e, f) = (residual(&w, &exact, n, k), residual(&w, &fast, n, k));
            assert!(f <= e * 1.01 && f >= e * 0.999, "{n}×{k}: {f} vs optimum {e}");
            for (a, b) in fast.sigma.iter().zip(&exact.sigma).take(8) {
                assert!((a - b).abs() < 1e-3 * b, "{a} {b}");
            }
        }
    }

    #[test]
    fn randomized_svd_is_deterministic_whatever_the_threads() {
        let (n, k) = (700, 300);
        let w = random(n * k, 9);
        let o = RsvdOptions { seed: 11, ..RsvdOptions::default() };
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let a = one.install(|| rsvd(&w, n, k, 8, &o));
        let b = rsvd(&w, n, k, 8, &o);
        assert_eq!(a, b);
        assert_ne!(a, rsvd(&w, n, k, 8, &RsvdOptions { seed: 12, ..o }));
    }
}
