//! `cargo xtask bench-inspect`: how long `lowbit inspect` takes on FLUX.1-dev-sized headers.
//!
//! The inputs are sparse files: a real 780-tensor FLUX.1-dev header (BF16 safetensors, and a
//! Q8_0 GGUF laid out by `lowbit_gguf::Layout`) followed by a hole of the full data size, so the
//! files are 23.8 GB and 12.6 GB to every reader while costing no disk.
//! The peers, timed in the same run when the interop venv exists, are the `safetensors` Python
//! package listing names and shapes, and `gguf`'s `GGUFReader`.

use anyhow::{Context, bail};
use lowbit_fixtures::flux::FluxConfig;
use lowbit_fixtures::write::bf16_header;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 15;

fn time(cmd: &mut Command) -> anyhow::Result<Duration> {
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
        times.push(start.elapsed());
        if !out.status.success() {
            bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    times.sort();
    Ok(times[RUNS / 2])
}

fn sparse(path: &Path, header: &[u8], data_len: u64) -> anyhow::Result<()> {
    let f = std::fs::File::create(path)?;
    std::io::Write::write_all(&mut &f, header)?;
    f.set_len(header.len() as u64 + data_len)?;
    Ok(())
}

pub(crate) fn inspect() -> anyhow::Result<()> {
    let root = crate::workspace_root();
    crate::ci::sh(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&root)
            .args(["build", "--release", "--quiet", "-p", "lowbit-cli"]),
    )?;
    let lowbit = root.join("target/release/lowbit");
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;

    let tensors = FluxConfig::DEV.tensors();
    let st = dir.join("flux1-dev-bf16.safetensors");
    let (header, data_len) = bf16_header(&tensors);
    sparse(&st, &header, data_len)?;

    let gg = dir.join("flux1-dev-q8_0.gguf");
    let layout = lowbit_fixtures::bench_gguf_layout(&tensors)?;
    sparse(&gg, &layout.header, layout.data_len)?;

    let python = root.join("target/interop-venv/bin/python");
    println!(
        "{} tensors; safetensors {:.1} GB, GGUF {:.1} GB (sparse)",
        tensors.len(),
        std::fs::metadata(&st)?.len() as f64 / 1e9,
        std::fs::metadata(&gg)?.len() as f64 / 1e9
    );
    println!("median of {RUNS} runs, wall time including process start\n");
    println!("{:<46} {:>10} {:>10}", "command", "ms", "vs lowbit");
    for (label, file, peer) in [
        (
            "safetensors",
            &st,
            "from safetensors import safe_open\nimport sys\nf = safe_open(sys.argv[1], 'np')\nfor k in f.keys(): f.get_slice(k).get_shape()",
        ),
        (
            "gguf",
            &gg,
            "import sys, gguf\nr = gguf.GGUFReader(sys.argv[1])\nfor t in r.tensors: (t.name, t.shape, t.tensor_type)",
        ),
    ] {
        let ours = time(Command::new(&lowbit).arg("inspect").arg(file).arg("--json"))?;
        println!(
            "{:<46} {:>10.1} {:>10}",
            format!("lowbit inspect --json ({label})"),
            ours.as_secs_f64() * 1e3,
            "1.00×"
        );
        let text = time(Command::new(&lowbit).arg("inspect").arg(file))?;
        println!(
            "{:<46} {:>10.1} {:>9.2}×",
            format!("lowbit inspect ({label})"),
            text.as_secs_f64() * 1e3,
            text.as_secs_f64() / ours.as_secs_f64()
        );
        if python.exists() {
            let peer_t = time(Command::new(&python).arg("-c").arg(peer).arg(file))
                .with_context(|| format!("timing the {label} Python peer"))?;
            println!(
                "{:<46} {:>10.1} {:>9.2}×",
                format!("python {label} reader (names + shapes)"),
                peer_t.as_secs_f64() * 1e3,
                peer_t.as_secs_f64() / ours.as_secs_f64()
            );
        } else {
            println!(
                "(no target/interop-venv: run `cargo xtask ci` once to time the Python peers)"
            );
        }
    }
    Ok(())
}
