//! `cargo xtask bench-zstd [--input FILE] [--level N] [--targets T,…] [--lowbit BIN]`: what
//! `--compress zstd` gains per layout on realistic weights: plain and packed file size, bits per
//! weight before and after, the compression time, and for the quantized codes alone (the `U8`/`I8`/FP8 tensors)
//! their stored bits per weight, what zstd makes of them, and their order-0 entropy (the bound
//! of any coder that looks at one code at a time: ternary's three values carry at most
//! log2 3 = 1.58 bits in their 2 stored bits).
//!
//! The input defaults to `flux-dev --blocks 1,1` (FLUX.1-dev's shapes and realistic values, one
//! block of each kind, 1.09 GB) in `target/bench/flux-dev-1-1/`; `--input` takes any BF16 FLUX
//! file, such as the full `target/flux-dev/flux1-dev.safetensors`. Each row converts the input
//! plain and packed with the release `lowbit`, in `zstd-bench/` beside the input, and removes
//! both files before the next row.

use anyhow::{Context, bail};
use lowbit_safetensors::{Header, SeekTable};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The layouts measured (GGUF is listed for its size: it is not packed).
const TARGETS: [&str; 7] =
    ["int4", "ternary", "nf4", "fp8", "bfl:fp8", "svdq-w4a16", "gguf:q4_k_m"];

/// Bits per code of a target's quantized tensors.
fn code_bits(target: &str) -> u32 {
    match target {
        t if t.starts_with("ternary") || t.starts_with("bitnet") => 2,
        t if t.contains("fp8") => 8,
        _ => 4,
    }
}

/// Order-0 entropy in bits of the `width`-bit fields of `bytes`.
fn entropy(bytes: &[u8], width: u32) -> f64 {
    let mut counts = [0u64; 256];
    let mask = ((1u16 << width) - 1) as u8;
    for &b in bytes {
        for i in 0..8 / width {
            counts[usize::from((b >> (i * width)) & mask)] += 1;
        }
    }
    let total: u64 = counts.iter().sum();
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total as f64;
            -p * p.log2()
        })
        .sum()
}

/// Code tensors of a plain file and their frames in its pack: (raw bytes, compressed bytes,
/// entropy in bits per code). Reads the headers, the seek table and one tensor at a time.
fn codes(plain: &Path, pack: &Path, width: u32) -> anyhow::Result<(u64, u64, f64)> {
    use std::os::unix::fs::FileExt;
    let (p, z) = (std::fs::File::open(plain)?, std::fs::File::open(pack)?);
    let (p_len, z_len) = (p.metadata()?.len(), z.metadata()?.len());
    let mut n = [0u8; 8];
    p.read_exact_at(&mut n, 0)?;
    let mut prefix = vec![0u8; 8 + usize::try_from(u64::from_le_bytes(n))?];
    p.read_exact_at(&mut prefix, 0)?;
    let header = Header::parse(&prefix, p_len)?;
    let mut footer = [0u8; 9];
    z.read_exact_at(&mut footer, z_len - 9)?;
    let table_len = SeekTable::table_len(footer).min(z_len);
    let mut tail = vec![0u8; usize::try_from(table_len)?];
    z.read_exact_at(&mut tail, z_len - table_len)?;
    let table = SeekTable::parse_tail(&tail, z_len)
        .map_err(|e| anyhow::anyhow!("{}: {e}", pack.display()))?;
    let (mut raw, mut packed, mut weighted) = (0u64, 0u64, 0.0);
    let mut data = Vec::new();
    for (t, f) in header.tensors.iter().zip(&table.frames[1..]) {
        let bytes = t.data.end - t.data.start;
        let name = t.dtype.name();
        let is_code = ["U8", "I8", "F8_E4M3", "F8_E5M2"].contains(&name) && bytes > 4096;
        if !is_code {
            continue;
        }
        data.resize(usize::try_from(bytes)?, 0);
        p.read_exact_at(&mut data, header.data_start + t.data.start)?;
        raw += bytes;
        packed += f.compressed;
        weighted += entropy(&data, width) * bytes as f64;
    }
    Ok((raw, packed, if raw == 0 { 0.0 } else { weighted / raw as f64 }))
}

/// `compressed in X s` from a conversion's summary.
fn compress_seconds(stderr: &str) -> Option<f64> {
    let tail = stderr.split("compressed in ").nth(1)?;
    tail.split(' ').next()?.parse().ok()
}

fn convert(
    lowbit: &Path,
    input: &Path,
    out: &Path,
    args: &[&str],
) -> anyhow::Result<(f64, String)> {
    let start = Instant::now();
    let o = Command::new(lowbit)
        .arg("convert")
        .arg(input)
        .arg("-o")
        .arg(out)
        .args(args)
        .output()
        .with_context(|| format!("running {}", lowbit.display()))?;
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    if !o.status.success() {
        bail!("lowbit convert {args:?} failed: {stderr}");
    }
    Ok((start.elapsed().as_secs_f64(), stderr))
}

fn params(lowbit: &Path, file: &Path) -> anyhow::Result<u64> {
    let o = Command::new(lowbit).arg("inspect").arg("--json").arg(file).output()?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    v["total_params"].as_u64().context("total_params")
}

pub(crate) fn run(args: &[&str]) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let (mut input, mut level, mut lowbit) = (None, None, None);
    let mut targets: Vec<String> = TARGETS.iter().map(|t| (*t).to_owned()).collect();
    let mut it = args.iter();
    while let Some(&a) = it.next() {
        let mut value = || it.next().copied().with_context(|| format!("{a} needs a value"));
        match a {
            "--input" => input = Some(PathBuf::from(value()?)),
            "--level" => level = Some(value()?.to_owned()),
            "--targets" => targets = value()?.split(',').map(str::to_owned).collect(),
            "--lowbit" => lowbit = Some(PathBuf::from(value()?)),
            _ => bail!(
                "usage: cargo xtask bench-zstd [--input FILE] [--level N] [--targets T,…] \
                 [--lowbit BIN]"
            ),
        }
    }
    // `--lowbit`: a release binary built elsewhere (a machine without cargo).
    let lowbit = match lowbit {
        Some(b) => b,
        None => crate::bench::release_lowbit(&root)?,
    };
    let input = match input {
        Some(p) => p,
        None => {
            let sub = root.join("target/bench/flux-dev-1-1");
            crate::flux_dev::run(&["--blocks", "1,1", "--out", sub.to_str().context("utf-8")?])?;
            sub.join(crate::flux_dev::CHECKPOINT)
        }
    };
    // Beside the input: the same disk, which has room for it.
    let dir = input.parent().unwrap_or(Path::new(".")).join("zstd-bench");
    std::fs::create_dir_all(&dir)?;
    let compress = level.map_or_else(|| "zstd".to_owned(), |l| format!("zstd:{l}"));
    let input_bytes = std::fs::metadata(&input)?.len();
    println!(
        "input: {} ({:.2} GB BF16), --compress {compress}\n",
        input.display(),
        input_bytes as f64 / 1e9
    );
    println!(
        "| layout | plain MB | bits/weight | pack MB | bits/weight | smaller | convert s | compress s | codes: stored → zstd bits/weight | codes: order-0 entropy |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for target in &targets {
        let stem = target.replace(':', "-");
        let gguf = target.starts_with("gguf:");
        let plain = dir.join(format!("{stem}.{}", if gguf { "gguf" } else { "safetensors" }));
        let (secs, _) = convert(&lowbit, &input, &plain, &["--to", target])?;
        let plain_bytes = std::fs::metadata(&plain)?.len();
        let n = params(&lowbit, &plain)? as f64;
        let bpw = |b: u64| b as f64 * 8.0 / n;
        if gguf {
            println!(
                "| {target} | {:.1} | {:.3} | not packed | – | – | {secs:.1} | – | – | – |",
                plain_bytes as f64 / 1e6,
                bpw(plain_bytes)
            );
            std::fs::remove_file(&plain)?;
            continue;
        }
        let pack = dir.join(format!("{stem}.safetensors.zst"));
        let (_, stderr) =
            convert(&lowbit, &input, &pack, &["--to", target, "--compress", &compress])?;
        let pack_bytes = std::fs::metadata(&pack)?.len();
        let width = code_bits(target);
        let (raw, packed, h) = codes(&plain, &pack, width)?;
        let ratio = if raw == 0 { 1.0 } else { packed as f64 / raw as f64 };
        println!(
            "| {target} | {:.1} | {:.3} | {:.1} | {:.3} | {:.1}% | {secs:.1} | {} | {width} → {:.3} | {h:.3} |",
            plain_bytes as f64 / 1e6,
            bpw(plain_bytes),
            pack_bytes as f64 / 1e6,
            bpw(pack_bytes),
            (1.0 - pack_bytes as f64 / plain_bytes as f64) * 100.0,
            compress_seconds(&stderr).map_or_else(|| "?".into(), |s| format!("{s:.1}")),
            f64::from(width) * ratio,
        );
        std::fs::remove_file(&plain)?;
        std::fs::remove_file(&pack)?;
    }
    println!(
        "\nbits/weight: file bytes × 8 / logical parameters (kept BF16 layers, scales and headers \
         included). codes: the U8/I8/FP8 tensors alone, bits per stored code before and after \
         zstd; order-0 entropy: -Σ p log2 p over their code values.\n\
         Reproduce: cargo xtask bench-zstd{}",
        std::env::args().skip(2).map(|a| format!(" {a}")).collect::<String>()
    );
    Ok(())
}
