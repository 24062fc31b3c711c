//! `lowbit validate --bench`: each kernel's time against cuBLAS BF16 on the same shape, in the
//! same process, at 1, 16 and 4608 tokens.
//!
//! Both sides are timed alike, and the way `../shared/bench/gpu_peers.py` times torch's peers
//! (which takes 5 warm-up runs and the median of 50): 3 warm-up runs, then the median of 20 runs,
//! each between two CUDA events, on the same buffers (so small weights sit in L2 for both sides).

use lowbit_cuda::cublas::Blas;
use lowbit_cuda::{DeviceWeight, Gpu, Kernel, Scratch};
use lowbit_dtype::f16::fp32_to_bf16;
use lowbit_fixtures::rng::Rng;
use lowbit_layout::gemm::Weight;
use serde::Serialize;
use std::fmt::Write as _;

/// Token counts timed.
pub(crate) const TOKENS: [usize; 3] = [1, 16, 4608];
const WARMUP: usize = 3;
const REPS: usize = 20;

/// One timing.
#[derive(Debug, Serialize)]
pub(crate) struct Timing {
    layer: String,
    kernel: String,
    m: usize,
    n: u64,
    k: u64,
    ms: f64,
    cublas_bf16_ms: f64,
    /// cuBLAS time over ours: above 1 is faster than cuBLAS.
    speedup: f64,
    tflops: f64,
    /// Stored bytes of the weight over the time (GB/s).
    weight_gbps: f64,
}

fn bf16_normal(rng: &mut Rng, len: usize) -> Vec<u16> {
    (0..len).map(|_| fp32_to_bf16(rng.normal_f32())).collect()
}

/// Times `kernel` on `w` (`[n, k]`, `weight_bytes` stored) and cuBLAS BF16 on a random weight
/// of the same shape.
#[expect(clippy::too_many_arguments, reason = "a layer, its kernel and the device")]
pub(crate) fn time_layer(
    gpu: &Gpu,
    blas: &Blas,
    layer: &str,
    w: &Weight<'_>,
    kernel: &Kernel,
    n: u64,
    k: u64,
    weight_bytes: u64,
) -> Result<Vec<Timing>, lowbit_cuda::Error> {
    let (nu, ku) = (n as usize, k as usize);
    let mut rng = Rng::for_name(7, layer);
    let dw = DeviceWeight::upload(gpu, w, n, k)?;
    let dense = gpu.upload(&bf16_normal(&mut rng, nu * ku))?;
    let mut out = Vec::new();
    for m in TOKENS {
        let x = gpu.upload(&bf16_normal(&mut rng, m * ku))?;
        let mut y = gpu.zeros::<u16>(m * nu)?;
        let mut scratch = Scratch::new(gpu, m, ku, kernel.rank())?;
        let ms =
            gpu.time(WARMUP, REPS, || gpu.gemm(kernel, &dw, &x, m, None, &mut y, &mut scratch))?;
        let cublas =
            gpu.time(WARMUP, REPS, || blas.gemm_bf16(gpu, &x, &dense, &mut y, m, nu, ku))?;
        let flops = 2.0 * m as f64 * n as f64 * k as f64;
        out.push(Timing {
            layer: layer.to_owned(),
            kernel: kernel.label.clone(),
            m,
            n,
            k,
            ms,
            cublas_bf16_ms: cublas,
            speedup: cublas / ms,
            tflops: flops / ms / 1e9,
            weight_gbps: weight_bytes as f64 / ms / 1e6,
        });
    }
    Ok(out)
}

/// The text table of timings.
pub(crate) fn table(rows: &[Timing]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{:<44} {:<24} {:>5} {:>13} {:>10} {:>10} {:>8} {:>8} {:>9}",
        "layer", "kernel", "M", "N×K", "ours ms", "cuBLAS ms", "speedup", "TFLOP/s", "W GB/s"
    );
    for t in rows {
        let _ = writeln!(
            s,
            "{:<44} {:<24} {:>5} {:>13} {:>10.4} {:>10.4} {:>7.2}× {:>8.1} {:>9.0}",
            t.layer,
            t.kernel,
            t.m,
            format!("{}×{}", t.n, t.k),
            t.ms,
            t.cublas_bf16_ms,
            t.speedup,
            t.tflops,
            t.weight_gbps
        );
    }
    s
}
