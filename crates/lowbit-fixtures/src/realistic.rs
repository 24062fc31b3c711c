//! Weights with the structure SVDQuant and smoothing are built for, generated a block of rows at
//! a time so that a full-size FLUX.1-dev (11.9 B parameters) streams to disk in bounded memory.
//!
//! A 2-D weight `W [N, K]` is `s · (G ⊙ (r ⊗ c) + L)`:
//!
//! - `G` i.i.d. standard normal ([`Rng::normal_f32`], the ziggurat);
//! - `r` (per row) and `c` (per column) log-normal with σ = 0.3, and about 3 % of the columns
//!   3–8× larger (the outlier input channels of diffusion transformers);
//! - `L = U · diag(σ) · Vᵀ` of rank 48 (or less for a smaller side), `U` and `V` Gaussian divided
//!   by the square roots of their lengths, `σᵢ ∝ 0.93ⁱ`, scaled to carry 25–40 % of the energy;
//! - `s` such that the standard deviation is about 0.02.
//!
//! 1-D tensors: norm scales (`….scale`) `1 + 0.05·N(0, 1)`, biases `0.01·N(0, 1)`.
//!
//! Values are a function of the seed, the tensor's name and shape only: the per-tensor factors
//! come from `Rng::for_name(seed, name)`, each block of [`BLOCK_ROWS`] rows from its own stream
//! `Rng::for_name(seed, "{name}#{block}")`, so blocks can be made in any order, on any number of
//! threads, with the same bytes. (The low-rank product goes through `matrixmultiply`, whose
//! kernel is picked from the CPU's features: another machine may round `L` differently.)

use crate::rng::Rng;
use half::bf16;
use nalgebra::{DMatrix, DMatrixViewMut};
use std::ops::Range;

/// Rows per block of a 2-D tensor.
pub const BLOCK_ROWS: u64 = 64;

/// Rank of the low-rank component.
pub const RANK: usize = 48;

/// One tensor's generator: the factors shared by its row blocks.
#[derive(Debug, Clone)]
pub struct Tensor {
    seed: u64,
    name: String,
    rows: u64,
    cols: u64,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// A 1-D tensor: `base + spread · N(0, 1)`.
    Vector { base: f32, spread: f32 },
    /// A 2-D weight: `r` already multiplied by `s`, and `V · diag(σ) · s / √K` as a `K × rank`
    /// column-major matrix.
    Matrix { r: Vec<f32>, c: Vec<f32>, v: DMatrix<f32> },
}

impl Tensor {
    /// The generator of tensor `name` with torch-order `shape` (1-D or 2-D).
    ///
    /// # Panics
    /// If the shape has another rank, or a side does not fit in memory's indices.
    #[must_use]
    pub fn new(seed: u64, name: &str, shape: &[u64]) -> Tensor {
        let (rows, cols, kind) = match *shape {
            [n] => {
                let (base, spread) =
                    if name.ends_with(".scale") { (1.0, 0.05) } else { (0.0, 0.01) };
                (1, n, Kind::Vector { base, spread })
            }
            [n, k] => (n, k, matrix(seed, name, n, k)),
            _ => panic!("{name}: only 1-D and 2-D tensors are generated, not {shape:?}"),
        };
        Tensor { seed, name: name.to_owned(), rows, cols, kind }
    }

    /// Number of row blocks (1 for a 1-D tensor).
    #[must_use]
    pub fn blocks(&self) -> u64 {
        match self.kind {
            Kind::Vector { .. } => 1,
            Kind::Matrix { .. } => self.rows.div_ceil(BLOCK_ROWS),
        }
    }

    /// Element range of block `b` within the tensor (row-major).
    #[must_use]
    pub fn block_elements(&self, b: u64) -> Range<u64> {
        match self.kind {
            Kind::Vector { .. } => 0..self.cols,
            Kind::Matrix { .. } => {
                let r0 = b * BLOCK_ROWS;
                let r1 = (r0 + BLOCK_ROWS).min(self.rows);
                r0 * self.cols..r1 * self.cols
            }
        }
    }

    /// Block `b`'s values as `f32`.
    #[must_use]
    pub fn block_f32(&self, b: u64) -> Vec<f32> {
        let mut rng = Rng::for_name(self.seed, &format!("{}#{b}", self.name));
        match &self.kind {
            Kind::Vector { base, spread } => {
                (0..self.cols).map(|_| base + spread * rng.normal_f32()).collect()
            }
            Kind::Matrix { r, c, v } => {
                let range = self.block_elements(b);
                let k = to_usize(self.cols);
                let n = to_usize((range.end - range.start) / self.cols);
                let r0 = to_usize(range.start / self.cols);
                let rank = v.ncols();
                // Uᵀ for these rows: column j holds row j's coefficients (U / √N).
                #[expect(clippy::cast_precision_loss, reason = "a scale factor")]
                let inv_sqrt_n = 1.0 / (self.rows as f32).sqrt();
                let mut ut = DMatrix::<f32>::zeros(rank, n);
                for x in ut.iter_mut() {
                    *x = rng.normal_f32() * inv_sqrt_n;
                }
                let mut out = vec![0.0f32; n * k];
                // Column-major K × n is row-major n × K: Lᵀ = V' · Uᵀ.
                DMatrixViewMut::from_slice(&mut out, k, n).gemm(1.0, v, &ut, 0.0);
                for (i, row) in out.chunks_exact_mut(k).enumerate() {
                    let ri = r[r0 + i];
                    for (x, &cj) in row.iter_mut().zip(c) {
                        *x += rng.normal_f32() * ri * cj;
                    }
                }
                out
            }
        }
    }

    /// Block `b` as BF16 little-endian bytes (round to nearest even).
    #[must_use]
    pub fn block_bf16(&self, b: u64) -> Vec<u8> {
        let values = self.block_f32(b);
        let mut out = Vec::with_capacity(values.len() * 2);
        for v in values {
            out.extend_from_slice(&bf16::from_f32(v).to_le_bytes());
        }
        out
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).expect("tensor sides fit in memory")
}

/// The per-tensor factors of a 2-D weight `[n, k]`, with `s` folded in.
#[expect(clippy::cast_precision_loss, reason = "sizes and scale factors")]
fn matrix(seed: u64, name: &str, n: u64, k: u64) -> Kind {
    let mut rng = Rng::for_name(seed, name);
    let lognormal = |rng: &mut Rng| (0.3 * rng.normal_f32()).exp();
    let mut r: Vec<f32> = (0..n).map(|_| lognormal(&mut rng)).collect();
    let mut c: Vec<f32> = (0..k).map(|_| lognormal(&mut rng)).collect();
    for cj in &mut c {
        if rng.uniform() < 0.03 {
            *cj *= 3.0 + 5.0 * rng.uniform_f32(0.0, 1.0);
        }
    }
    let rank = RANK.min(to_usize(n)).min(to_usize(k));
    // Energy per element of G ⊙ (r ⊗ c), expected over G.
    let mean_sq =
        |xs: &[f32]| xs.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / xs.len() as f64;
    let e_g = mean_sq(&r) * mean_sq(&c);
    // L carries a fraction f of the total: ‖L‖² ≈ Σσᵢ² (U, V have near-unit columns).
    let f = 0.25 + 0.15 * rng.uniform();
    let decay: f64 = (0..rank).map(|i| 0.93f64.powi(2 * i as i32)).sum();
    let a = (f / (1.0 - f) * e_g * n as f64 * k as f64 / decay).sqrt();
    let s = 0.02 / (e_g / (1.0 - f)).sqrt();
    for ri in &mut r {
        *ri = (f64::from(*ri) * s) as f32;
    }
    let inv_sqrt_k = 1.0 / (k as f64).sqrt();
    let mut v = DMatrix::<f32>::zeros(to_usize(k), rank);
    for (i, mut col) in v.column_iter_mut().enumerate() {
        let sigma = (a * 0.93f64.powi(i as i32) * s * inv_sqrt_k) as f32;
        for x in col.iter_mut() {
            *x = rng.normal_f32() * sigma;
        }
    }
    Kind::Matrix { r, c, v }
}

#[cfg(test)]
mod tests {
    use super::{BLOCK_ROWS, Tensor};

    fn all(t: &Tensor) -> Vec<f32> {
        (0..t.blocks()).flat_map(|b| t.block_f32(b)).collect()
    }

    #[test]
    fn weights_have_the_planned_statistics() {
        let (n, k) = (384u64, 512u64);
        let t = Tensor::new(5, "double_blocks.0.img_attn.proj.weight", &[n, k]);
        assert_eq!(t.blocks(), n / BLOCK_ROWS);
        let w = all(&t);
        assert_eq!(w.len() as u64, n * k);
        let e = w.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / w.len() as f64;
        assert!((e.sqrt() - 0.02).abs() < 0.004, "std {}", e.sqrt());
        // The leading singular direction stands out: power iteration on WᵀW.
        let (n, k) = (n as usize, k as usize);
        let mut x = vec![1.0f64; k];
        let mut lambda = 0.0;
        for _ in 0..30 {
            let wx: Vec<f64> =
                (0..n).map(|i| (0..k).map(|j| f64::from(w[i * k + j]) * x[j]).sum()).collect();
            let y: Vec<f64> =
                (0..k).map(|j| (0..n).map(|i| f64::from(w[i * k + j]) * wx[i]).sum()).collect();
            lambda = y.iter().map(|v| v * v).sum::<f64>().sqrt();
            x = y.iter().map(|v| v / lambda).collect();
        }
        let total = e * (n * k) as f64;
        // σ₀² of L alone is (1 − 0.93²)/(1 − 0.93^96) ≈ 13.5 % of L's energy, itself ≥ 25 %.
        assert!(lambda / total > 0.03, "top singular value carries {}", lambda / total);
    }

    #[test]
    fn vectors_and_determinism() {
        let s = all(&Tensor::new(1, "single_blocks.0.norm.key_norm.scale", &[128]));
        assert!(s.iter().all(|&x| (0.7..1.3).contains(&x)));
        let b = all(&Tensor::new(1, "img_in.bias", &[3072]));
        assert!(b.iter().all(|&x| x.abs() < 0.07) && b.iter().any(|&x| x != 0.0));
        let t = Tensor::new(9, "txt_in.weight", &[200, 100]);
        assert_eq!(t.block_bf16(2), Tensor::new(9, "txt_in.weight", &[200, 100]).block_bf16(2));
        assert_ne!(t.block_bf16(2), Tensor::new(10, "txt_in.weight", &[200, 100]).block_bf16(2));
        assert_eq!(t.block_elements(3), 192 * 100..200 * 100);
    }
}
