//! `cargo xtask bench-svdq [--full]`: SVDQuant on the FLUX.1-dev-shaped checkpoint of
//! `cargo xtask flux-dev` (realistic values, statistics with outlier channels).
//!
//! Per FLUX layer type (block 0's `img_attn.qkv`, `img_attn.proj`, `img_mlp.0`, `img_mlp.2`,
//! single block 0's `linear1`, `linear2`), in this process, release build, all cores:
//! - the rank-32 randomized SVD's time and its Frobenius residual against the optimum (the
//!   residual of a rank-32 SVD sketched with 64 extra columns and 12 power iterations, which is
//!   the truncated SVD to within rounding for these spectra);
//! - fidelity: the relative output error ‖Y − Ŷ‖²/‖Y‖² on 64 fresh synthetic tokens (a seed the
//!   α search never saw) of `svdq-w4a4` (α auto) against naive W4A4 round-to-nearest (same int4
//!   groups, per-token int4 activations, λ = 1, no branch), and of `svdq-w4a16` against plain
//!   int4 g64 W4A16.
//!
//! `--full` then converts the whole checkpoint to `svdq-w4a4 --alpha auto` with the release
//! `lowbit` under `/usr/bin/time -v` and prints its per-stage report, wall time and peak RSS.

use anyhow::{Context, bail};
use lowbit_checkpoint::Checkpoint;
use lowbit_svdq::{
    Alpha, Config, RsvdOptions, output_error, quantize, rsvd, synthetic_activations,
};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const LAYERS: [&str; 6] = [
    "double_blocks.0.img_attn.qkv.weight",
    "double_blocks.0.img_attn.proj.weight",
    "double_blocks.0.img_mlp.0.weight",
    "double_blocks.0.img_mlp.2.weight",
    "single_blocks.0.linear1.weight",
    "single_blocks.0.linear2.weight",
];

/// Frobenius norm of `w − up·downᵀ`.
fn residual(w: &[f32], lr: &lowbit_svdq::LowRank, n: usize, k: usize) -> f64 {
    let p = lr.product(n, k);
    w.iter().zip(&p).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>().sqrt()
}

/// The relative output error of a quantized layer on fresh tokens `x`.
fn fidelity(
    w: &[f32],
    n: usize,
    k: usize,
    x: &[f32],
    q: &lowbit_svdq::Quantized,
    act4: bool,
) -> f64 {
    let tokens = x.len() / k;
    let y_ref =
        lowbit_svdq::gemm(lowbit_svdq::Mat::new(x, tokens, k), lowbit_svdq::Mat::new(w, n, k).t());
    let mut deq = vec![0f32; n * k];
    let stored = q.stored();
    lowbit_layout::int4::decode(
        &[&stored[0], &stored[1]],
        64,
        false,
        n as u64,
        k as u64,
        0..n as u64,
        &mut deq,
    )
    .expect("our own layout decodes");
    let bf =
        |v: &[u16]| v.iter().map(|b| lowbit_dtype::f16::bf16_to_fp32(*b)).collect::<Vec<f32>>();
    output_error(x, &y_ref, k, &bf(&q.smooth), &deq, &bf(&q.proj_up), &bf(&q.proj_down), act4)
}

pub(crate) fn run(args: &[&str]) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    if cfg!(debug_assertions) {
        let mut cmd = vec!["bench-svdq"];
        cmd.extend(args);
        return crate::bench::rerun_in_release(&root, &cmd);
    }
    let dir = root.join("target/flux-dev");
    let (model, stats) =
        (dir.join("flux1-dev.safetensors"), dir.join("flux1-dev-stats.safetensors"));
    if !model.exists() || !stats.exists() {
        bail!("{} is missing: run `cargo xtask flux-dev` first", model.display());
    }
    let ckpt = Checkpoint::open(&model)?;
    let calib = lowbit_convert::Calibration::open(&stats)?;
    let layers = ckpt.layers()?;
    println!("SVDQuant on {} ({} threads)\n", model.display(), rayon::current_num_threads());
    println!(
        "| layer | [N, K] | rSVD r=32 | residual / optimum | svdq-w4a4 | naive W4A4 RTN | ratio | α | svdq-w4a16 | int4 W4A16 | ratio |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for name in LAYERS {
        let layer = layers.iter().find(|l| l.name == name).with_context(|| format!("no {name}"))?;
        let (n, k) = (layer.shape[0] as usize, layer.shape[1] as usize);
        let mut w = vec![0f32; n * k];
        ckpt.read_layer_f32(layer, 0..n as u64, &mut w)?;
        let max = calib.absmax(name).with_context(|| format!("no statistics for {name}"))?;
        let groups = max.len() / k;
        let ax: Vec<f32> =
            (0..k).map(|c| (0..groups).map(|g| max[g * k + c]).fold(0f32, f32::max)).collect();
        let start = Instant::now();
        let fast = rsvd(&w, n, k, 32, &RsvdOptions::default());
        let svd_s = start.elapsed().as_secs_f64();
        let best = rsvd(&w, n, k, 32, &RsvdOptions { oversample: 64, power_iters: 12, seed: 1 });
        let ratio_svd = residual(&w, &fast, n, k) / residual(&w, &best, n, k);
        let x = synthetic_activations(&ax, 64, 0x5eed_f00d);
        let auto = Config::default();
        let q = |cfg: &Config| quantize(&w, n, k, Some(&ax), cfg, 7);
        let svdq4 = q(&auto);
        let rtn4 = q(&Config { rank: 0, alpha: Alpha::One, ..auto });
        let svdq16 = q(&Config { act4: false, ..auto });
        let int4 = q(&Config { act4: false, rank: 0, alpha: Alpha::One, ..auto });
        let (e1, e2) = (fidelity(&w, n, k, &x, &svdq4, true), fidelity(&w, n, k, &x, &rtn4, true));
        let (e3, e4) =
            (fidelity(&w, n, k, &x, &svdq16, false), fidelity(&w, n, k, &x, &int4, false));
        let short = name.trim_end_matches(".weight");
        println!(
            "| {short} | [{n}, {k}] | {svd_s:.2} s | {ratio_svd:.4} | {e1:.2e} | {e2:.2e} | {:.1}× | {} | {e3:.2e} | {e4:.2e} | {:.1}× |",
            e2 / e1,
            svdq4.alpha.map_or_else(|| "none".into(), |a| format!("{a:.1}")),
            e4 / e3
        );
    }
    if args.contains(&"--full") {
        full(&root, &model, &stats)?;
    }
    Ok(())
}

/// The whole checkpoint through the release binary under `/usr/bin/time -v`.
fn full(root: &Path, model: &Path, stats: &Path) -> anyhow::Result<()> {
    let lowbit = crate::bench::release_lowbit(root)?;
    let out = model.with_file_name("flux1-dev-svdq-w4a4.safetensors");
    println!("\nfull conversion: {} → {}", model.display(), out.display());
    let status = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(&lowbit)
        .args(["convert"])
        .arg(model)
        .arg("-o")
        .arg(&out)
        .args(["--to", "svdq-w4a4", "--alpha", "auto", "--stats"])
        .arg(stats)
        .status()
        .context("running /usr/bin/time (GNU time)")?;
    if !status.success() {
        bail!("the conversion failed: {status}");
    }
    Ok(())
}
