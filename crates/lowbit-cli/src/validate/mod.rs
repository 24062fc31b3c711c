//! `lowbit validate FILE`: every quantized layer's fused GEMM on the GPU against the CPU
//! reference on the same packed bytes (`formats/gemm.md`).
//!
//! Per layer: seeded BF16 activations `[M, K]` with outlier channels (1 % of the channels 20×
//! larger, as diffusion transformers' activations have), the layer's bias when the file has
//! one, the kernels that serve its storage (`lowbit_cuda::kernels_for`), the reference
//! (`lowbit_layout::gemm::reference`, f64) on at most 64 evenly spaced tokens, split over
//! threads by output columns. The GPU output buffer is poisoned with NaN first, so a value the
//! kernel never wrote fails the check.

mod bench;

use crate::cli::{Device, ValidateArgs};
use crate::diff::Side;
use crate::output::{self, Usage};
use lowbit_checkpoint::{Checkpoint, Layer, StorageType};
use lowbit_cuda::{DeviceWeight, Gpu, Kernel, Scratch, kernels_for};
use lowbit_dtype::Dtype;
use lowbit_dtype::f16::{bf16_to_fp32, fp32_to_bf16};
use lowbit_fixtures::rng::Rng;
use lowbit_layout::gemm::{Weight, compare, reference};
use rayon::prelude::*;
use serde::Serialize;
use std::fmt::Write as _;

/// Tokens the reference checks at most.
const CHECKED_TOKENS: usize = 64;
/// Output columns per reference task.
const COLUMN_CHUNK: u64 = 64;

/// One row of the report.
#[derive(Debug, Serialize)]
struct Row {
    layer: String,
    storage: String,
    kernel: String,
    shape: [u64; 3],
    status: &'static str,
    rel: Option<f64>,
    max_abs: Option<f64>,
    tolerance: Option<f64>,
    exact: Option<bool>,
    nonfinite: Option<usize>,
    quant_error: Option<f64>,
    gpu_ms: Option<f64>,
    note: Option<String>,
}

/// Whether `name` matches `glob` (`*` any run, `?` one character).
fn glob_match(glob: &[u8], name: &[u8]) -> bool {
    match (glob.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&glob[1..], name) || (!name.is_empty() && glob_match(glob, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob_match(&glob[1..], &name[1..]),
        (Some(g), Some(c)) if g == c => glob_match(&glob[1..], &name[1..]),
        _ => false,
    }
}

/// What a layer's storage is, for the table (`int4:g64`, `Q4_K`, `F8_E4M3`).
fn storage_name(ckpt: &Checkpoint, layer: &Layer) -> String {
    match layer.scheme {
        Some(s) => s.to_string(),
        None => ckpt.tensor(&layer.name).map_or_else(String::new, |t| t.ty.to_string()),
    }
}

/// Whether a layer holds a quantized 2-D weight a kernel could serve.
fn quantized(ckpt: &Checkpoint, layer: &Layer) -> bool {
    if layer.shape.len() != 2 {
        return false;
    }
    if layer.scheme.is_some() {
        return true;
    }
    match ckpt.tensor(&layer.name).map(|t| t.ty) {
        Some(StorageType::Ggml(ty)) => ty.block_size() > 1,
        Some(StorageType::Dense(d)) => matches!(d, Dtype::F8E4M3 | Dtype::F8E5M2),
        None => false,
    }
}

/// Seeded activations `[m, k]`, BF16 values: standard normal, 1 % of the channels 20× larger.
fn activations(seed: u64, name: &str, m: usize, k: usize) -> Vec<f32> {
    let mut rng = Rng::for_name(seed, &format!("validate {name}"));
    let outliers: Vec<bool> = (0..k).map(|_| rng.below(100) == 0).collect();
    (0..m * k)
        .map(|i| {
            let v = rng.normal_f32() * if outliers[i % k] { 20.0 } else { 1.0 };
            bf16_to_fp32(fp32_to_bf16(v))
        })
        .collect()
}

/// The tokens the reference checks: all up to [`CHECKED_TOKENS`], else evenly spaced.
fn checked_rows(m: usize) -> Vec<usize> {
    if m <= CHECKED_TOKENS {
        (0..m).collect()
    } else {
        (0..CHECKED_TOKENS).map(|i| i * (m - 1) / (CHECKED_TOKENS - 1)).collect()
    }
}

/// `[rows, n]` of the reference, columns split over threads.
fn reference_rows(
    w: &Weight<'_>,
    kernel: &Kernel,
    n: u64,
    k: u64,
    x: &[f32],
    bias: Option<&[f32]>,
) -> anyhow::Result<Vec<f32>> {
    let m = x.len() / k as usize;
    let chunks: Vec<u64> = (0..n.div_ceil(COLUMN_CHUNK)).collect();
    let parts = chunks
        .par_iter()
        .map(|c| {
            let cols = c * COLUMN_CHUNK..((c + 1) * COLUMN_CHUNK).min(n);
            reference(w, n, k, cols, x, kernel.activation, bias)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = vec![0f32; m * n as usize];
    for (c, part) in parts.iter().enumerate() {
        let c0 = c * COLUMN_CHUNK as usize;
        let width = part.len() / m.max(1);
        for r in 0..m {
            out[r * n as usize + c0..r * n as usize + c0 + width]
                .copy_from_slice(&part[r * width..(r + 1) * width]);
        }
    }
    Ok(out)
}

/// `‖yq − yo‖ / ‖yo‖` where yo uses the original layer `name` (BFL view) for the same tokens.
fn quant_error(
    original: &Side,
    name: &str,
    n: u64,
    k: u64,
    x: &[f32],
    bias: Option<&[f32]>,
    yq: &[f32],
) -> anyhow::Result<Option<f64>> {
    let Some(view) = original.views.get(name) else { return Ok(None) };
    if view.shape != [n, k] {
        anyhow::bail!("the original `{name}` is {:?}, the quantized layer [{n}, {k}]", view.shape);
    }
    let (ku, nu) = (k as usize, n as usize);
    let m = x.len() / ku;
    let mut yo = vec![0f64; m * nu];
    let mut rows = vec![0f32; COLUMN_CHUNK as usize * ku];
    let mut tmp = Vec::new();
    let mut c0 = 0u64;
    while c0 < n {
        let c1 = (c0 + COLUMN_CHUNK).min(n);
        let w = &mut rows[..(c1 - c0) as usize * ku];
        original.read(view, c0..c1, w, &mut tmp)?;
        let w = &*w;
        yo.par_chunks_mut(nu).enumerate().for_each(|(r, y)| {
            let xr = &x[r * ku..(r + 1) * ku];
            for (j, wr) in w.chunks_exact(ku).enumerate() {
                let dot: f64 = xr.iter().zip(wr).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
                y[c0 as usize + j] = dot + bias.map_or(0.0, |b| f64::from(b[c0 as usize + j]));
            }
        });
        c0 = c1;
    }
    let (mut num, mut den) = (0f64, 0f64);
    for (q, o) in yq.iter().zip(&yo) {
        num += (f64::from(*q) - o).powi(2);
        den += o * o;
    }
    Ok(Some(if den > 0.0 { (num / den).sqrt() } else { 0.0 }))
}

/// Runs `lowbit validate`.
pub(crate) fn run(args: &ValidateArgs) -> anyhow::Result<()> {
    if !(1..=8192).contains(&args.tokens) {
        return Err(Usage(format!("--tokens {} is outside 1..=8192", args.tokens)).into());
    }
    let ckpt = Checkpoint::open(&args.file)?;
    let layers = ckpt.layers()?;
    let det = lowbit_arch::detect(layers.iter().map(|l| l.name.as_str()));
    let strip = |n: &str| n.strip_prefix(det.prefix.as_str()).unwrap_or(n).to_owned();
    let selected: Vec<&Layer> = layers
        .iter()
        .filter(|l| quantized(&ckpt, l))
        .filter(|l| {
            args.layers.is_empty()
                || args.layers.iter().any(|g| {
                    glob_match(g.as_bytes(), l.name.as_bytes())
                        || glob_match(g.as_bytes(), strip(&l.name).as_bytes())
                })
        })
        .collect();
    if selected.is_empty() {
        anyhow::bail!(
            "{}: no quantized layer{} to validate",
            args.file.display(),
            if args.layers.is_empty() { String::new() } else { " matches --layers".into() }
        );
    }
    let gpu =
        match args.device {
            Device::Cuda => Some(Gpu::open().map_err(|e| {
                anyhow::anyhow!("{e} (`--device cpu` runs the CPU reference alone)")
            })?),
            Device::Cpu => None,
        };
    if args.bench && gpu.is_none() {
        return Err(Usage("--bench times kernels on the GPU: it needs --device cuda".into()).into());
    }
    let blas = match (&gpu, args.bench) {
        (Some(g), true) => Some(lowbit_cuda::cublas::Blas::new(g)?),
        _ => None,
    };
    let original = args.reference.as_deref().map(Side::open).transpose()?;
    let m = args.tokens as usize;
    let mut rows = Vec::new();
    let mut timings = Vec::new();
    for layer in selected {
        let ctx =
            Ctx { ckpt: &ckpt, layers: &layers, args, gpu: gpu.as_ref(), blas: blas.as_ref() };
        let (checks, times) = check_layer(&ctx, layer, m, original.as_ref())?;
        rows.extend(checks);
        timings.extend(times);
    }
    if args.json {
        let device = gpu
            .as_ref()
            .map_or_else(|| "cpu".to_owned(), |g| format!("{} ({})", g.name(), g.arch()));
        let doc = serde_json::json!({
            "device": device,
            "tokens": m,
            "checks": rows,
            "bench": timings,
        });
        output::print(&(serde_json::to_string_pretty(&doc)? + "\n"))?;
    } else {
        let mut text = table(&rows, gpu.as_ref(), m);
        if !timings.is_empty() {
            text.push_str(&bench::table(&timings));
        }
        output::print(&text)?;
    }
    let failed = rows.iter().filter(|r| r.status == "FAIL").count();
    if failed > 0 {
        anyhow::bail!("{}: {failed} of {} kernel checks failed", args.file.display(), rows.len());
    }
    Ok(())
}

/// What every layer's check shares.
struct Ctx<'a> {
    ckpt: &'a Checkpoint,
    layers: &'a [Layer],
    args: &'a ValidateArgs,
    gpu: Option<&'a Gpu>,
    blas: Option<&'a lowbit_cuda::cublas::Blas>,
}

/// The checks of one layer (one row per kernel, or one skipped row), and with `--bench` its
/// timings.
fn check_layer(
    ctx: &Ctx<'_>,
    layer: &Layer,
    m: usize,
    original: Option<&Side>,
) -> anyhow::Result<(Vec<Row>, Vec<bench::Timing>)> {
    let (ckpt, layers, args, gpu) = (ctx.ckpt, ctx.layers, ctx.args, ctx.gpu);
    let [n, k] = layer.shape[..] else { return Ok((Vec::new(), Vec::new())) };
    let stored: Vec<&[u8]> = layer
        .stored
        .iter()
        .map(|s| ckpt.tensor(s).map_or(Ok(&[][..]), |t| ckpt.try_raw(t)))
        .collect::<Result<_, _>>()?;
    let main = ckpt.tensor(&layer.name).or_else(|| ckpt.tensor(&layer.stored[0]));
    let w = match (layer.scheme, main.map(|t| t.ty)) {
        (Some(scheme), _) if layer.is_packed() => Weight::Packed { scheme, stored: &stored },
        (_, Some(StorageType::Ggml(ty))) => Weight::Ggml { ty, bytes: stored[0] },
        (_, Some(StorageType::Dense(dtype))) => Weight::Dense { dtype, bytes: stored[0] },
        _ => anyhow::bail!("{}: `{}` has no stored weight", ckpt.path().display(), layer.name),
    };
    let storage = storage_name(ckpt, layer);
    let skipped = |note: String| Row {
        layer: layer.name.clone(),
        storage: storage.clone(),
        kernel: "-".into(),
        shape: [m as u64, n, k],
        status: "skipped",
        rel: None,
        max_abs: None,
        tolerance: None,
        exact: None,
        nonfinite: None,
        quant_error: None,
        gpu_ms: None,
        note: Some(note),
    };
    let kernels = match kernels_for(&w, n, k) {
        Ok(k) => k,
        Err(e) => return Ok((vec![skipped(e.to_string())], Vec::new())),
    };
    let module = layer.name.strip_suffix(".weight").unwrap_or(&layer.name);
    let bias = match layers.iter().find(|l| l.name == format!("{module}.bias")) {
        Some(b) if b.params() == n => {
            let mut v = vec![0f32; n as usize];
            ckpt.read_layer_f32(b, 0..1, &mut v)?;
            Some(v.iter().map(|x| bf16_to_fp32(fp32_to_bf16(*x))).collect::<Vec<f32>>())
        }
        _ => None,
    };
    let x = activations(args.seed, &layer.name, m, k as usize);
    let picked = checked_rows(m);
    let ku = k as usize;
    let xs: Vec<f32> =
        picked.iter().flat_map(|&r| x[r * ku..(r + 1) * ku].iter().copied()).collect();
    let mut out = Vec::new();
    let mut timings = Vec::new();
    let weight_bytes: u64 = stored.iter().map(|s| s.len() as u64).sum();
    for kernel in kernels {
        let want = reference_rows(&w, &kernel, n, k, &xs, bias.as_deref()).map_err(|e| {
            anyhow::anyhow!("{}: tensor `{}`: reference: {e}", ckpt.path().display(), layer.name)
        })?;
        let det = lowbit_arch::detect(layers.iter().map(|l| l.name.as_str()));
        let bfl = layer.name.strip_prefix(det.prefix.as_str()).unwrap_or(&layer.name);
        let quant_error = match original {
            Some(o) => quant_error(o, bfl, n, k, &xs, bias.as_deref(), &want)?,
            None => None,
        };
        let mut row = Row {
            layer: layer.name.clone(),
            storage: storage.clone(),
            kernel: kernel.label.clone(),
            shape: [m as u64, n, k],
            status: "reference",
            rel: None,
            max_abs: None,
            tolerance: Some(kernel.tolerance),
            exact: Some(kernel.exact),
            nonfinite: None,
            quant_error,
            gpu_ms: None,
            note: None,
        };
        if let Some(gpu) = gpu {
            match run_gpu(gpu, &w, &kernel, n, k, &x, m, bias.as_deref()) {
                Ok((y, ms)) => {
                    let nonfinite = y.iter().filter(|v| !v.is_finite()).count();
                    let got: Vec<f32> = picked
                        .iter()
                        .flat_map(|&r| y[r * n as usize..(r + 1) * n as usize].iter().copied())
                        .collect();
                    let c = compare(&got, &want)?;
                    let pass = nonfinite == 0 && c.rel <= kernel.tolerance;
                    row.status = if pass { "pass" } else { "FAIL" };
                    row.rel = Some(c.rel);
                    row.max_abs = Some(c.max_abs);
                    row.nonfinite = Some(nonfinite);
                    row.gpu_ms = Some(ms);
                    if let (Some(blas), true) = (ctx.blas, pass) {
                        timings.extend(bench::time_layer(
                            gpu,
                            blas,
                            &layer.name,
                            &w,
                            &kernel,
                            n,
                            k,
                            weight_bytes,
                        )?);
                    }
                }
                Err(lowbit_cuda::Error::Unsupported(why)) => {
                    row.status = "skipped";
                    row.note = Some(why);
                }
                Err(e) => {
                    row.status = "FAIL";
                    row.note = Some(e.to_string());
                }
            }
        }
        out.push(row);
    }
    Ok((out, timings))
}

/// The kernel's output `[m, n]` as f32, and its median time in milliseconds.
#[expect(clippy::too_many_arguments, reason = "a GEMM's operands")]
fn run_gpu(
    gpu: &Gpu,
    w: &Weight<'_>,
    kernel: &Kernel,
    n: u64,
    k: u64,
    x: &[f32],
    m: usize,
    bias: Option<&[f32]>,
) -> Result<(Vec<f32>, f64), lowbit_cuda::Error> {
    let arch: u32 = gpu.arch().trim_start_matches("sm_").trim_end_matches('a').parse().unwrap_or(0);
    if arch < kernel.min_arch {
        return Err(lowbit_cuda::Error::Unsupported(format!(
            "needs sm_{} or newer; this device is {}",
            kernel.min_arch,
            gpu.arch()
        )));
    }
    let dw = DeviceWeight::upload(gpu, w, n, k)?;
    let bits: Vec<u16> = x.iter().map(|v| fp32_to_bf16(*v)).collect();
    let xd = gpu.upload(&bits)?;
    let bd = match bias {
        Some(b) => Some(gpu.upload(&b.iter().map(|v| fp32_to_bf16(*v)).collect::<Vec<u16>>())?),
        None => None,
    };
    let mut scratch = Scratch::new(gpu, m, k as usize, kernel.rank())?;
    let mut y = gpu.zeros::<u16>(m * n as usize)?;
    gpu.fill(&mut y, 0xFF)?;
    gpu.gemm(kernel, &dw, &xd, m, bd.as_ref(), &mut y, &mut scratch)?;
    let out: Vec<f32> = gpu.download(&y)?.into_iter().map(bf16_to_fp32).collect();
    let ms =
        gpu.time(2, 10, || gpu.gemm(kernel, &dw, &xd, m, bd.as_ref(), &mut y, &mut scratch))?;
    Ok((out, ms))
}

fn fmt_opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".into(), f)
}

/// The text report.
fn table(rows: &[Row], gpu: Option<&Gpu>, m: usize) -> String {
    let mut s = String::new();
    let _ = match gpu {
        Some(g) => writeln!(s, "device: {} ({}), {m} tokens", g.name(), g.arch()),
        None => writeln!(s, "device: cpu (reference only), {m} tokens"),
    };
    let _ = writeln!(
        s,
        "{:<44} {:<14} {:<24} {:>13} {:>9} {:>9} {:>7} {:>9} {:>8}  result",
        "layer", "storage", "kernel", "N×K", "rel err", "max abs", "tol", "quant err", "GPU ms"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:<44} {:<14} {:<24} {:>13} {:>9} {:>9} {:>7} {:>9} {:>8}  {}{}",
            r.layer,
            r.storage,
            r.kernel,
            format!("{}×{}", r.shape[1], r.shape[2]),
            fmt_opt(r.rel, |v| format!("{v:.2e}")),
            fmt_opt(r.max_abs, |v| format!("{v:.2e}")),
            fmt_opt(r.tolerance, |v| format!("{v:.0e}")),
            fmt_opt(r.quant_error, |v| format!("{v:.2e}")),
            fmt_opt(r.gpu_ms, |v| format!("{v:.3}")),
            r.status,
            r.note.as_ref().map_or_else(String::new, |n| format!(" ({n})")),
        );
    }
    let count = |st: &str| rows.iter().filter(|r| r.status == st).count();
    let _ = writeln!(
        s,
        "{} checks: {} pass, {} FAIL, {} reference only, {} skipped",
        rows.len(),
        count("pass"),
        count("FAIL"),
        count("reference"),
        count("skipped")
    );
    s
}

#[cfg(test)]
mod tests {
    use super::{checked_rows, glob_match};

    #[test]
    fn globs() {
        assert!(glob_match(
            b"double_blocks.*.img_mlp.?.weight",
            b"double_blocks.0.img_mlp.2.weight"
        ));
        assert!(glob_match(b"*", b""));
        assert!(!glob_match(b"single_*", b"double_blocks.0"));
        assert!(!glob_match(b"a?", b"a"));
    }

    #[test]
    fn checked_rows_span_the_tokens() {
        assert_eq!(checked_rows(3), vec![0, 1, 2]);
        let r = checked_rows(4608);
        assert_eq!((r.len(), r[0], r[63]), (64, 0, 4607));
    }
}
