//! `cargo xtask flux-dev`: a full-size FLUX.1-dev BF16 checkpoint in BFL naming with realistic,
//! non-zero values (`lowbit_fixtures::realistic`), and a matching calibration-statistics file
//! (`flux_dev_stats`), for the SVDQuant benchmark.
//!
//! The checkpoint is planned by `lowbit_safetensors::Layout` (header and offsets up front) and
//! written to `flux1-dev.safetensors.tmp` with positioned writes, a block of 64 rows at a time on
//! rayon's pool, then renamed; memory stays at a few blocks per thread.

use crate::flux_dev_stats;
use anyhow::{Context, bail, ensure};
use lowbit_dtype::Dtype;
use lowbit_fixtures::flux::FluxConfig;
use lowbit_fixtures::realistic::Tensor;
use lowbit_safetensors::Layout;
use rayon::prelude::*;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The checkpoint's file name.
pub(crate) const CHECKPOINT: &str = "flux1-dev.safetensors";
/// The statistics' file name.
pub(crate) const STATS: &str = "flux1-dev-stats.safetensors";
/// Default seed.
const SEED: u64 = 1_580_000_001;

struct Options {
    out: PathBuf,
    seed: u64,
    cfg: FluxConfig,
    force: bool,
    check: bool,
}

fn parse(args: &[&str]) -> anyhow::Result<Options> {
    let mut o = Options {
        out: crate::workspace_root().join("target/flux-dev"),
        seed: SEED,
        cfg: FluxConfig::DEV,
        force: false,
        check: false,
    };
    let mut it = args.iter();
    while let Some(&a) = it.next() {
        let mut value = || it.next().copied().with_context(|| format!("{a} needs a value"));
        match a {
            "--out" => o.out = PathBuf::from(value()?),
            "--seed" => o.seed = value()?.parse().context("--seed")?,
            "--blocks" => {
                let v = value()?;
                let (d, s) = v.split_once(',').context("--blocks D,S")?;
                o.cfg.double_blocks = d.trim().parse().context("--blocks D,S")?;
                o.cfg.single_blocks = s.trim().parse().context("--blocks D,S")?;
            }
            "--force" => o.force = true,
            "--check" => o.check = true,
            _ => bail!(
                "unknown argument {a}; usage: cargo xtask flux-dev [--out DIR] [--seed N] \
                 [--blocks D,S] [--force] [--check]"
            ),
        }
    }
    Ok(o)
}

/// `cargo xtask flux-dev [--out DIR] [--seed N] [--blocks D,S] [--force] [--check]`; `--check`
/// reads both files back whole (a small `--blocks` variant: the full size does not fit).
pub(crate) fn run(args: &[&str]) -> anyhow::Result<()> {
    let o = parse(args)?;
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    let (ckpt, stats) = (o.out.join(CHECKPOINT), o.out.join(STATS));
    let layout = checkpoint_layout(&o.cfg)?;
    let size = layout.header.len() as u64 + layout.data_len;
    let stats_bytes = flux_dev_stats::file(&o.cfg, o.seed)?;
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    if !o.force && len(&ckpt) == Some(size) && len(&stats) == Some(stats_bytes.len() as u64) {
        println!(
            "{} ({:.2} GB) and {} exist; --force regenerates them",
            ckpt.display(),
            size as f64 / 1e9,
            stats.display()
        );
        return if o.check { check(&o.out, &o.cfg) } else { Ok(()) };
    }
    let start = Instant::now();
    write_checkpoint(&o.cfg, o.seed, &layout, &ckpt)?;
    let secs = start.elapsed().as_secs_f64();
    write_atomic(&stats, &stats_bytes)?;
    let params: u64 = o.cfg.tensors().iter().map(|(_, s)| s.iter().product::<u64>()).sum();
    println!(
        "wrote {} ({} tensors, {:.3} B parameters, {size} bytes = {:.2} GB) in {secs:.1} s \
         ({:.0} MB/s, {} threads)",
        ckpt.display(),
        layout.offsets.len(),
        params as f64 / 1e9,
        size as f64 / 1e9,
        size as f64 / 1e6 / secs,
        rayon::current_num_threads()
    );
    println!("wrote {} ({} bytes)", stats.display(), stats_bytes.len());
    if o.check {
        check(&o.out, &o.cfg)?;
        println!(
            "checked: every tensor's shape, first rows finite and non-zero, statistics' shapes"
        );
    }
    Ok(())
}

/// The checkpoint's plan: every tensor of `cfg` in model order, BF16, `{"format": "pt"}`.
pub(crate) fn checkpoint_layout(cfg: &FluxConfig) -> anyhow::Result<Layout> {
    bf16_layout(&cfg.tensors())
}

/// The plan of a BF16 file holding `tensors` (name, torch-order shape) in that order, with
/// `{"format": "pt"}` as its metadata.
pub(crate) fn bf16_layout(tensors: &[(String, Vec<u64>)]) -> anyhow::Result<Layout> {
    let meta = [("format".to_owned(), "pt".to_owned())];
    Ok(Layout::new(&meta, tensors.iter().map(|(n, s)| (n.as_str(), Dtype::BF16, s.as_slice())))?)
}

/// Generates the checkpoint into `path.tmp` with positioned writes, then renames it to `path`.
pub(crate) fn write_checkpoint(
    cfg: &FluxConfig,
    seed: u64,
    layout: &Layout,
    path: &Path,
) -> anyhow::Result<()> {
    write_bf16(&cfg.tensors(), seed, layout, path, Some("flux-dev"))
}

/// Writes `tensors` (the list `layout` was planned from) with realistic values for `seed` into
/// `path.tmp`, a block of rows at a time on rayon's pool, then renames it to `path`; reports
/// progress every 10 % on stderr under `progress` when given.
pub(crate) fn write_bf16(
    tensors: &[(String, Vec<u64>)],
    seed: u64,
    layout: &Layout,
    path: &Path,
    progress: Option<&str>,
) -> anyhow::Result<()> {
    ensure!(tensors.len() == layout.offsets.len(), "the layout plans another tensor list");
    let tmp = tmp_path(path);
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let header_len = layout.header.len() as u64;
    file.set_len(header_len + layout.data_len)?;
    file.write_all_at(&layout.header, 0)?;
    let total = layout.data_len;
    let (mut done, mut next_report, start) = (0u64, 0.1, Instant::now());
    for ((name, shape), &(from, to)) in tensors.iter().zip(&layout.offsets) {
        let t = Tensor::new(seed, name, shape);
        (0..t.blocks()).into_par_iter().try_for_each(|b| {
            let at = header_len + from + 2 * t.block_elements(b).start;
            file.write_all_at(&t.block_bf16(b), at)
        })?;
        done += to - from;
        if let Some(label) = progress
            && done as f64 >= next_report * total as f64
        {
            eprintln!(
                "{label}: {:>3.0} % ({:.1} GB) in {:.0} s",
                100.0 * done as f64 / total as f64,
                done as f64 / 1e9,
                start.elapsed().as_secs_f64()
            );
            next_report += 0.1;
        }
    }
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// Reads `dir`'s two files back with the `safetensors` crate and checks the contract: every
/// tensor of `cfg` with its shape, finite and non-zero in its first rows, and one `[4, K]`
/// statistic per linear layer with K its weight's in-features.
pub(crate) fn check(dir: &Path, cfg: &FluxConfig) -> anyhow::Result<()> {
    let bytes = std::fs::read(dir.join(CHECKPOINT))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)?;
    let wanted = cfg.tensors();
    ensure!(st.len() == wanted.len(), "{} tensors, not {}", st.len(), wanted.len());
    let mut in_features = std::collections::HashMap::new();
    for (name, shape) in &wanted {
        let t = st.tensor(name)?;
        ensure!(t.dtype() == safetensors::Dtype::BF16, "{name}: {:?}", t.dtype());
        let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        ensure!(t.shape() == shape.as_slice(), "{name}: {:?}", t.shape());
        let head = &t.data()[..t.data().len().min(2 * 4 * shape.last().context("a shape")?)];
        let vals: Vec<f32> = head
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect();
        ensure!(vals.iter().all(|v| v.is_finite()), "{name}: not finite");
        ensure!(vals.iter().filter(|&&v| v == 0.0).count() * 20 < vals.len(), "{name}: zeros");
        if shape.len() == 2 {
            in_features.insert(name.clone(), shape[1]);
        }
    }
    let sbytes = std::fs::read(dir.join(STATS))?;
    let stats = safetensors::SafeTensors::deserialize(&sbytes)?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&sbytes)?;
    let cal: serde_json::Value = serde_json::from_str(
        meta.metadata()
            .as_ref()
            .and_then(|m| m.get("lowbit.calibration"))
            .context("no lowbit.calibration")?,
    )?;
    ensure!(cal["groups"] == 4, "{cal}");
    let mut linears = 0;
    for (bfl, k) in &in_features {
        let m = lowbit_arch::flux::bfl_to_diffusers(bfl).context("a FLUX name")?;
        let mut first: Option<&[u8]> = None;
        for p in &m.parts {
            let t = stats.tensor(p.strip_suffix(".weight").context("a weight")?)?;
            ensure!(t.shape() == [4, *k], "{p}: {:?}", t.shape());
            ensure!(t.dtype() == safetensors::Dtype::F32, "{p}");
            ensure!(
                t.data()
                    .chunks_exact(4)
                    .all(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) > 0.0),
                "{p}"
            );
            // Parts of one fused BFL tensor read the same input.
            ensure!(first.is_none_or(|f| f == t.data()), "{p} differs from its siblings");
            first = Some(t.data());
            linears += 1;
        }
    }
    ensure!(stats.len() == linears, "{} statistics for {linears} linears", stats.len());
    Ok(())
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = tmp_path(path);
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{CHECKPOINT, STATS, check, checkpoint_layout, write_checkpoint};
    use lowbit_fixtures::flux::FluxConfig;

    #[test]
    fn tiny_files_follow_the_contract_whatever_the_thread_count() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = FluxConfig::TINY;
        let layout = checkpoint_layout(&cfg).unwrap();
        let mut outs = Vec::new();
        for threads in [1, 2] {
            let path = dir.path().join(format!("{threads}.safetensors"));
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| write_checkpoint(&cfg, 3, &layout, &path)).unwrap();
            outs.push(std::fs::read(&path).unwrap());
        }
        assert_eq!(outs[0], outs[1]);
        std::fs::write(dir.path().join(CHECKPOINT), &outs[0]).unwrap();
        let stats = super::flux_dev_stats::file(&cfg, 3).unwrap();
        std::fs::write(dir.path().join(STATS), stats).unwrap();
        check(dir.path(), &cfg).unwrap();
    }
}
