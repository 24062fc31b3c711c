//! `cargo xtask bench-convert`: end-to-end `lowbit convert` on a ≥ 1 GB FLUX-shaped BF16 file,
//! against `cp` of the same file in the same run.
//!
//! The input is FLUX.1 at full width (3072) with one double and one single block and FLUX.1-dev's
//! embedders: 0.55 B parameters, 1.1 GB, generated once under `target/bench/`. The page cache is
//! warmed first, so both `cp` and `lowbit` read from memory and the comparison is of the work,
//! not of the disk. On this kind of VM the first write into page-cache memory the guest has not
//! touched lately is several times slower than later ones, so runs vary; the table gives the
//! median and the fastest of each. Before every run the previous output is deleted and `sync` flushes dirty
//! pages, so no run pays for another's writeback. Peak memory is the converter's own report
//! (`VmHWM`).

use anyhow::{Context, bail};
use lowbit_fixtures::flux::{FluxConfig, generate_bfl};
use lowbit_fixtures::write::safetensors_bytes;
use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 7;

/// FLUX.1 at full width, one block of each kind.
const CONFIG: FluxConfig = FluxConfig { double_blocks: 1, single_blocks: 1, ..FluxConfig::DEV };

/// Runs a command `RUNS` times; returns (median, fastest, stderr of the last run).
fn median_run(
    out: &std::path::Path,
    mut make: impl FnMut() -> Command,
) -> anyhow::Result<(Duration, Duration, String)> {
    let mut times = Vec::new();
    let mut last_stderr = String::new();
    for _ in 0..RUNS {
        let _ = std::fs::remove_file(out);
        let _ = Command::new("sync").status();
        let mut cmd = make();
        let start = Instant::now();
        let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
        times.push(start.elapsed());
        last_stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            bail!("{cmd:?} failed: {last_stderr}");
        }
    }
    times.sort();
    Ok((times[RUNS / 2], times[0], last_stderr))
}

fn peak_mb(stderr: &str) -> String {
    stderr
        .split("peak memory ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .map_or_else(|| "?".into(), |mb| format!("{mb} MB"))
}

pub(crate) fn run() -> anyhow::Result<()> {
    let root = crate::workspace_root();
    crate::ci::sh(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&root)
            .args(["build", "--release", "--quiet", "-p", "lowbit-cli"]),
    )?;
    let lowbit = root.join("target/release/lowbit");
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let input = dir.join("flux-3072-1d1s.safetensors");
    if !input.exists() {
        eprintln!("generating {} …", input.display());
        std::fs::write(&input, safetensors_bytes(&generate_bfl(&CONFIG, 5)))?;
    }
    let size = std::fs::metadata(&input)?.len();
    let params = size / 2;
    // Warm the page cache so every run reads from memory.
    let _ = std::fs::read(&input)?;

    let copy = dir.join("copy.safetensors");
    let (cp, cp_min, _) = median_run(&copy, || {
        let mut c = Command::new("cp");
        c.arg(&input).arg(&copy);
        c
    })?;
    std::fs::remove_file(&copy)?;
    println!(
        "input: {} ({:.2} GB, {:.0} M parameters), {RUNS} runs each (median and fastest), {} threads",
        input.display(),
        size as f64 / 1e9,
        params as f64 / 1e6,
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    );
    println!(
        "\n{:<28} {:>8} {:>8} {:>9} {:>10} {:>10} {:>12}",
        "command", "median s", "best s", "Mparam/s", "vs cp", "best vs cp", "peak memory"
    );
    println!(
        "{:<28} {:>8.2} {:>8.2} {:>9} {:>9.2}× {:>9.2}× {:>12}",
        "cp",
        cp.as_secs_f64(),
        cp_min.as_secs_f64(),
        "",
        1.0,
        1.0,
        ""
    );
    for target in ["q8_0", "bf16", "q4_0", "q4_k_m", "q6_k", "tq2_0"] {
        let out = dir.join(format!("flux-3072-{target}.gguf"));
        let (t, t_min, stderr) = median_run(&out, || {
            let mut c = Command::new(&lowbit);
            c.arg("convert")
                .arg(&input)
                .arg("-o")
                .arg(&out)
                .args(["--to", &format!("gguf:{target}")]);
            c
        })?;
        std::fs::remove_file(&out)?;
        println!(
            "{:<28} {:>8.2} {:>8.2} {:>9.0} {:>9.2}× {:>9.2}× {:>12}",
            format!("lowbit convert gguf:{target}"),
            t.as_secs_f64(),
            t_min.as_secs_f64(),
            params as f64 / t.as_secs_f64() / 1e6,
            t.as_secs_f64() / cp.as_secs_f64(),
            t_min.as_secs_f64() / cp_min.as_secs_f64(),
            peak_mb(&stderr)
        );
    }
    println!("\nreproduce: cargo xtask bench-convert");
    Ok(())
}
