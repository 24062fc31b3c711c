//! `cargo xtask bench-packed`: how fast lowbit's packed-scheme quantizers run, next to what a
//! user has today, on one FLUX-like matrix; then `bench-size`'s storage table.
//!
//! The matrix is `bench-quant`'s 12288×3072 FLUX-like weight (N(0, 1/3072), sixteen outlier
//! columns) rounded to BF16, as a FLUX checkpoint holds it, and handed to everyone as f32 (what
//! `lowbit convert` decodes BF16 to before quantizing); it is written to `target/bench/` for the
//! peers. lowbit runs in this process, release build, **one thread**, the same calls in the same
//! order as `lowbit convert`'s encoder (`lowbit_quant::packed` and `lowbit_layout`'s packers),
//! outputs allocated inside the timed region as there. The peers, in
//! `tests/interop/bench_packed_peers.py`, are pinned to one thread too (the script says whether
//! torch took it): bitsandbytes `quantize_4bit` NF4 on CPU (torch venv), `ml_dtypes` FP8 casts
//! and numpy ternary / int4 (interop venv). Best of several runs each; Mparam/s is parameters of
//! the matrix per second. A quantizer that is not implemented in this build (`todo!`) is reported
//! as such and the table goes on.
//!
//! The venvs are `crate::ci`'s (`target/interop-venv`, `target/torch-venv`); `LOWBIT_PYTHON` and
//! `LOWBIT_TORCH_PYTHON`, as the tests read them, point elsewhere instead.

use anyhow::{Context, bail};
use lowbit_dtype::f16::{bf16_to_fp32, fp32_to_bf16};
use lowbit_layout::{Fp8Format, NF4_BLOCK, NF4_NESTED_BLOCK};
use lowbit_quant::packed;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::bench::{QUANT_COLS as K, QUANT_ROWS as N};

/// Timed runs of each lowbit quantizer; the best counts.
const REPEATS: usize = 5;
/// Timed runs of each peer (slower, and the script pays torch's import once per venv).
const PEER_REPEATS: usize = 3;

/// lowbit's ternary, per-channel scale: per row Σ|W| → γ (a BF16 scale), codes, then 2-bit packing.
fn ternary(x: &[f32]) {
    let mut codes = vec![0u8; x.len()];
    let mut gammas = vec![0f32; x.len() / K];
    packed::ternary::row_gammas(x, K, &mut gammas);
    let scales: Vec<u8> = gammas.iter().flat_map(|g| fp32_to_bf16(*g).to_le_bytes()).collect();
    for ((row, c), &g) in x.chunks(K).zip(codes.chunks_mut(K)).zip(&gammas) {
        packed::ternary::codes(row, g, c);
    }
    let mut w = vec![0u8; x.len() / 4];
    lowbit_layout::ternary::pack(&codes, &mut w);
    black_box((w, scales));
}

/// BitNet: one γ for the tensor (the statistics pass: row sums, then their sum in row order),
/// codes, the row-quarter packing.
fn bitnet(x: &[f32]) {
    let mut sums = vec![0f64; x.len() / K];
    packed::ternary::row_abs_sums(x, K, &mut sums);
    let gamma = packed::ternary::gamma(sums.iter().sum(), x.len() as u64);
    let mut codes = vec![0u8; x.len()];
    packed::ternary::codes(x, gamma, &mut codes);
    let q = x.len() / 4;
    let mut w = vec![0u8; q];
    lowbit_layout::bitnet::pack(
        [&codes[..q], &codes[q..2 * q], &codes[2 * q..3 * q], &codes[3 * q..]],
        &mut w,
    );
    black_box(w);
}

/// int4, group 64, symmetric.
fn int4(x: &[f32]) {
    let mut w = vec![0u8; x.len() / 2];
    let mut scales = vec![0u16; x.len() / 64];
    packed::int4::quantize_rows(x, K, 64, false, &mut w, &mut scales, &mut []);
    black_box((w, scales));
}

fn nf4_blocks(x: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let mut w = vec![0u8; x.len().div_ceil(2)];
    let mut absmax = vec![0f32; x.len().div_ceil(NF4_BLOCK as usize)];
    packed::nf4::quantize(x, &mut w, &mut absmax);
    (w, absmax)
}

/// bitsandbytes NF4, blocksize 64.
fn nf4(x: &[f32]) {
    black_box(nf4_blocks(x));
}

/// NF4 with double quantization: the absmax mean (statistics pass), then the nested blocks.
fn nf4_dq(x: &[f32]) {
    let (w, absmax) = nf4_blocks(x);
    let offset = packed::nf4::mean(&absmax);
    let mut codes = vec![0u8; absmax.len()];
    let mut nested = vec![0f32; absmax.len().div_ceil(NF4_NESTED_BLOCK as usize)];
    packed::nf4::double_quant(&absmax, offset, &mut codes, &mut nested);
    black_box((w, codes, nested));
}

/// Plain E4M3, saturating, no scale.
fn fp8(x: &[f32]) {
    let mut w = vec![0u8; x.len()];
    packed::fp8::plain(x, Fp8Format::E4M3, &mut w);
    black_box(w);
}

/// ComfyUI: max |W| (statistics pass), the per-tensor scale, the scaled cast.
fn comfy_fp8(x: &[f32]) {
    let scale = packed::fp8::comfy_scale(packed::fp8::amax(x), Fp8Format::E4M3);
    let mut w = vec![0u8; x.len()];
    packed::fp8::comfy(x, scale, Fp8Format::E4M3, &mut w);
    black_box(w);
}

/// BFL `fp8r`: one FP32 scale per row.
fn bfl_fp8(x: &[f32]) {
    let mut w = vec![0u8; x.len()];
    let mut scales = vec![0f32; x.len() / K];
    packed::fp8::bfl_rows(x, K, &mut w, &mut scales);
    black_box((w, scales));
}

/// (scheme, lowbit's quantizer, peer key in the script's JSON, the peer's short name).
type Row = (&'static str, fn(&[f32]), &'static str, &'static str);

const SCHEMES: [Row; 9] = [
    ("ternary", ternary, "numpy_ternary", "numpy absmean/row"),
    ("bitnet", bitnet, "numpy_ternary_tensor", "numpy absmean/tensor"),
    ("int4 g64", int4, "numpy_int4_g64", "numpy int4 g64"),
    ("nf4", nf4, "bnb_nf4", "bnb nf4 (bf16)"),
    ("nf4", nf4, "bnb_nf4_f32", "bnb nf4 (f32)"),
    ("nf4:dq", nf4_dq, "bnb_nf4_dq", "bnb nf4 dq (bf16)"),
    ("fp8", fp8, "mldtypes_fp8", "ml_dtypes cast"),
    ("comfy:fp8", comfy_fp8, "mldtypes_fp8_tensor", "numpy+ml_dtypes /tensor"),
    ("bfl:fp8", bfl_fp8, "mldtypes_fp8_row", "numpy+ml_dtypes /row"),
];

/// Best time of [`REPEATS`] runs, or why it could not run (a `todo!` not yet merged).
fn time_lowbit(f: fn(&[f32]), x: &[f32]) -> Result<Duration, String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let mut best = Duration::MAX;
        for _ in 0..REPEATS {
            let start = Instant::now();
            f(x);
            best = best.min(start.elapsed());
        }
        best
    }));
    std::panic::set_hook(hook);
    result.map_err(|payload| {
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("panic");
        if msg.starts_with("not yet implemented") {
            "not implemented in this build".to_owned()
        } else {
            format!("panicked: {msg}")
        }
    })
}

/// One peer's result from the script.
struct Peer {
    mparams: f64,
    single_thread: bool,
    what: String,
}

/// Runs the peer script with `python` (if there is one) and adds what it measured to `peers`.
fn run_peers(
    python: anyhow::Result<PathBuf>,
    script: &Path,
    input: &Path,
    group: &str,
    peers: &mut BTreeMap<String, Result<Peer, String>>,
) -> anyhow::Result<()> {
    let python = match python {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bench-packed: no {group} peers: {e:#}");
            return Ok(());
        }
    };
    let out = Command::new(&python)
        .arg(script)
        .arg(input)
        .args([N.to_string(), K.to_string(), PEER_REPEATS.to_string(), group.to_owned()])
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!("{} {} failed", python.display(), script.display());
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{}: not JSON", script.display()))?;
    if let Some(found) = json["peers"].as_object() {
        for (name, p) in found {
            peers.insert(
                name.clone(),
                Ok(Peer {
                    mparams: p["mparams"].as_f64().unwrap_or(f64::NAN),
                    single_thread: p["single_thread"].as_bool().unwrap_or(false),
                    what: p["what"].as_str().unwrap_or_default().to_owned(),
                }),
            );
        }
    }
    if let Some(missing) = json["unavailable"].as_object() {
        for (name, why) in missing {
            peers
                .entry(name.clone())
                .or_insert_with(|| Err(why.as_str().unwrap_or("unavailable").to_owned()));
        }
    }
    Ok(())
}

/// `LOWBIT_PYTHON`-style override, or the xtask's venv.
fn python(var: &str, venv: fn(&Path) -> anyhow::Result<PathBuf>) -> anyhow::Result<PathBuf> {
    match std::env::var_os(var) {
        Some(p) => Ok(PathBuf::from(p)),
        None => venv(&crate::workspace_root()),
    }
}

pub(crate) fn run() -> anyhow::Result<()> {
    let root = crate::workspace_root();
    if cfg!(debug_assertions) {
        // Timing an unoptimised lowbit-quant would be meaningless.
        return crate::bench::rerun_in_release(&root, &["bench-packed"]);
    }
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let x: Vec<f32> =
        crate::bench::flux_matrix().into_iter().map(|v| bf16_to_fp32(fp32_to_bf16(v))).collect();
    let input = dir.join(format!("flux-like-{N}x{K}-bf16.f32"));
    std::fs::write(&input, x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())?;

    let script = root.join("tests/interop/bench_packed_peers.py");
    let mut peers = BTreeMap::new();
    run_peers(python("LOWBIT_PYTHON", crate::ci::venv), &script, &input, "numpy", &mut peers)?;
    run_peers(
        python("LOWBIT_TORCH_PYTHON", crate::ci::torch_venv),
        &script,
        &input,
        "bnb",
        &mut peers,
    )?;

    println!(
        "{N}×{K} BF16 values as f32, FLUX-like (N(0, 1/{K}), 16 outlier columns); Mparam/s, best \
         of {REPEATS} (lowbit, in-process, release build, 1 thread) and {PEER_REPEATS} (peers)\n"
    );
    println!("| scheme | lowbit (1 thr) | peer | peer Mparam/s | peer 1 thr | lowbit / peer |");
    println!("|--------|---:|--------|---:|:---:|---:|");
    let mut cache: BTreeMap<&str, Result<f64, String>> = BTreeMap::new();
    for (scheme, f, key, peer_name) in SCHEMES {
        let ours = cache
            .entry(scheme)
            .or_insert_with(|| time_lowbit(f, &x).map(|d| (N * K) as f64 / d.as_secs_f64() / 1e6))
            .clone();
        let peer = peers.get(key);
        let (peer_m, single) = match peer {
            Some(Ok(p)) => {
                (format!("{:.1}", p.mparams), if p.single_thread { "yes" } else { "NO" }.to_owned())
            }
            Some(Err(why)) => (format!("– ({why})"), "–".to_owned()),
            None => ("–".to_owned(), "–".to_owned()),
        };
        let ratio = match (&ours, peer) {
            (Ok(o), Some(Ok(p))) => format!("{:.2}×", o / p.mparams),
            _ => "–".to_owned(),
        };
        println!(
            "| {scheme} | {} | {peer_name} | {peer_m} | {single} | {ratio} |",
            ours.as_ref().map_or_else(Clone::clone, |m| format!("{m:.0}")),
        );
    }
    println!("\npeers:");
    for (name, p) in &peers {
        match p {
            Ok(p) => println!("  {name}: {}", p.what),
            Err(why) => println!("  {name}: unavailable ({why})"),
        }
    }
    println!("\nReproduce: cargo xtask bench-packed\n\n--- storage (cargo xtask bench-size) ---\n");
    crate::bench_size::table(&crate::bench::release_lowbit(&root)?, &dir)
}
