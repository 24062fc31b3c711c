//! Test inputs and checks shared by the K-quant tests.
//!
//! Inputs come from the seeded generator of `lowbit-fixtures`, so every run sees the same data. Besides
//! Gaussian rows the corpus holds the cases that exercise the reference's branches: all-zero and
//! constant sub-blocks, lone outliers, values far below f16's range, one-signed sub-blocks,
//! values on a coarse grid (which land exactly on rounding ties), bf16-rounded heavy-tailed
//! rows like real checkpoint weights, subnormals, huge values and infinities.
//!
//! NaN inputs are left out on purpose: which NaN payload an operation propagates depends on the
//! operand order the compiler picks, so the bytes written for a block containing NaN are not a
//! property of the algorithm (ggml's own output for such blocks changes with its build flags).

use super::QK_K;
use crate::QuantBlock;
use lowbit_dtype::f16::{bf16_to_fp32, fp32_to_bf16};
use lowbit_fixtures::rng::Rng;

fn bf16(v: f32) -> f32 {
    bf16_to_fp32(fp32_to_bf16(v))
}

/// One super-block of a kind picked by `kind`.
fn block(rng: &mut Rng, kind: usize) -> Vec<f32> {
    let mut x: Vec<f32> = (0..QK_K).map(|_| rng.normal() as f32).collect();
    match kind {
        0 => {}
        1 => {
            // A few huge outliers.
            for _ in 0..1 + rng.index(4) {
                let i = rng.index(QK_K);
                x[i] *= [100.0, 1e3, 1e4, -3e4][rng.index(4)];
            }
        }
        2 => x.fill(0.0),
        3 => {
            // Constant sub-blocks (of 16), some zero, some negative, some positive.
            for c in x.chunks_mut(16) {
                c.fill([0.0, -0.0, 1.0, -1.0, 0.25, -3.5, 1e-3][rng.index(7)]);
            }
        }
        4 => {
            let scale = [1e-30f32, 1e-20, 1e-9, 1e-6, 3e-5][rng.index(5)];
            x.iter_mut().for_each(|v| *v *= scale);
        }
        5 => {
            // One-signed sub-blocks of random length.
            for c in x.chunks_mut(16) {
                match rng.index(3) {
                    0 => c.iter_mut().for_each(|v| *v = v.abs()),
                    1 => c.iter_mut().for_each(|v| *v = -v.abs()),
                    _ => {}
                }
            }
        }
        6 => {
            // A coarse grid: many values sit exactly on rounding ties.
            let step = [0.5f32, 0.25, 1.0, 0.125][rng.index(4)];
            x.iter_mut().for_each(|v| *v = (rng.index(17) as f32 - 8.0) * step);
        }
        7 => {
            // Sparse: mostly zeros.
            x.iter_mut().for_each(|v| {
                if rng.index(8) != 0 {
                    *v = 0.0;
                }
            });
        }
        8 => {
            // bf16-rounded, heavy-tailed (Laplace) with a per-block scale, like trained weights.
            let scale = [0.002f64, 0.02, 0.05, 0.3][rng.index(4)];
            x.iter_mut().for_each(|v| {
                let u = rng.uniform() - 0.5;
                let lap = -u.signum() * (1.0 - 2.0 * u.abs()).ln();
                *v = bf16((lap * scale) as f32);
            });
        }
        9 => {
            // bf16-rounded Gaussian with a bias.
            let bias = rng.normal() as f32 * 0.5;
            x.iter_mut().for_each(|v| *v = bf16(*v * 0.05 + bias));
        }
        10 => {
            // Integers (ties again), with zero sub-blocks mixed in.
            for c in x.chunks_mut(32) {
                let z = rng.index(4) == 0;
                c.iter_mut().for_each(|v| *v = if z { 0.0 } else { (*v * 3.0).round() });
            }
        }
        11 => {
            // Values far apart in magnitude within one block.
            for c in x.chunks_mut(16) {
                let s = 10f32.powi(rng.index(12) as i32 - 6);
                c.iter_mut().for_each(|v| *v *= s);
            }
        }
        12 => {
            // One nonzero element per sub-block.
            for c in x.chunks_mut(16) {
                let keep = rng.index(16);
                for (i, v) in c.iter_mut().enumerate() {
                    if i != keep {
                        *v = 0.0;
                    }
                }
            }
        }
        13 => {
            // A few infinities.
            for _ in 0..1 + rng.index(3) {
                let i = rng.index(QK_K);
                x[i] = if rng.index(2) == 0 { f32::INFINITY } else { f32::NEG_INFINITY };
            }
        }
        _ => {
            // Subnormals and values near f32's extremes.
            let scale = [1e-40f32, 1e-44, 1e30, 1e37][rng.index(4)];
            x.iter_mut().for_each(|v| *v *= scale);
        }
    }
    x
}

/// Number of input kinds [`corpus`] draws from.
const KINDS: usize = 15;

/// `blocks` super-blocks cycling through every kind of input.
pub(super) fn corpus(seed: u64, blocks: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut x = Vec::with_capacity(blocks * QK_K);
    for b in 0..blocks {
        x.extend(block(&mut rng, b % KINDS));
    }
    x
}

/// Asserts that the fast quantizer writes the reference's bytes on the corpus.
pub(super) fn assert_fast_equals_ref<B: QuantBlock + std::fmt::Debug>(seed: u64, blocks: usize) {
    let x = corpus(seed, blocks);
    let mut want = vec![B::zeroed(); blocks];
    let mut got = vec![B::zeroed(); blocks];
    B::quantize_ref(&x, &mut want);
    B::quantize(&x, &mut got);
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!(
            bytemuck::bytes_of(w),
            bytemuck::bytes_of(g),
            "block {i} (kind {}) differs: {:?}",
            i % KINDS,
            &x[i * QK_K..(i + 1) * QK_K]
        );
    }
}

/// Relative RMS error `‖x − dq(q(x))‖ / ‖x‖` over `blocks` Gaussian super-blocks.
pub(super) fn gaussian_rel_rms<B: QuantBlock>(seed: u64, blocks: usize) -> f64 {
    let mut rng = Rng::new(seed);
    let x: Vec<f32> = (0..blocks * QK_K).map(|_| rng.normal() as f32).collect();
    let mut q = vec![B::zeroed(); blocks];
    B::quantize(&x, &mut q);
    let mut y = vec![0.0f32; x.len()];
    B::dequantize(&q, &mut y);
    let err: f64 = x.iter().zip(&y).map(|(&a, &b)| f64::from(a - b).powi(2)).sum();
    let norm: f64 = x.iter().map(|&a| f64::from(a).powi(2)).sum();
    (err / norm).sqrt()
}

/// Asserts that all-zero input gives an all-zero block that decodes to zeros.
pub(super) fn assert_zeros<B: QuantBlock>() {
    let x = vec![0.0f32; 2 * QK_K];
    for quantize in [B::quantize_ref, B::quantize] {
        let mut q = vec![B::zeroed(); 2];
        quantize(&x, &mut q);
        let mut y = vec![1.0f32; x.len()];
        B::dequantize(&q, &mut y);
        assert!(y.iter().all(|&v| v == 0.0));
    }
}
