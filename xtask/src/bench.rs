//! `cargo xtask bench-inspect`: how long `lowbit inspect` takes on FLUX.1-dev-sized headers;
//! `cargo xtask bench-quant`: how fast lowbit quantizes, next to ggml's C code and the `gguf`
//! package, on the same FLUX-like matrix (see [`quant`]).
//!
//! For `bench-inspect`, the inputs are sparse files: a real 780-tensor FLUX.1-dev header (BF16 safetensors, and a
//! Q8_0 GGUF header from `lowbit_fixtures::gguf`) followed by a hole of the full data size, so the
//! files are 23.8 GB and 12.6 GB to every reader while costing no disk.
//! The peers, timed in the same run when the interop venv exists, are the `safetensors` Python
//! package listing names and shapes, and `gguf`'s `GGUFReader`.

use anyhow::{Context, bail};
use lowbit_dtype::GgmlType;
use lowbit_fixtures::flux::FluxConfig;
use lowbit_fixtures::rng::Rng;
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
    Ok(lowbit_fixtures::write::sparse_file(path, header, data_len)?)
}

/// Writes the sparse FLUX.1-dev BF16 checkpoint (real header, a hole for the data) into `dir`.
pub(crate) fn flux_dev_bf16(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let st = dir.join("flux1-dev-bf16.safetensors");
    let (header, data_len) = bf16_header(&FluxConfig::DEV.tensors());
    sparse(&st, &header, data_len)?;
    Ok(st)
}

pub(crate) fn inspect() -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let lowbit = release_lowbit(&root)?;
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;

    let tensors = FluxConfig::DEV.tensors();
    let st = flux_dev_bf16(&dir)?;

    let gg = dir.join("flux1-dev-q8_0.gguf");
    let (header, data_len) = lowbit_fixtures::gguf::flux_q8_0_header(&tensors);
    sparse(&gg, &header, data_len)?;

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

// --- bench-quant -------------------------------------------------------------------------------

/// Rows and columns of the benchmark matrix: FLUX.1's `linear1`-like 12288×3072.
pub(crate) const QUANT_ROWS: usize = 12288;
pub(crate) const QUANT_COLS: usize = 3072;
/// Threads for lowbit and for ggml's C code.
const QUANT_THREADS: usize = 2;
/// Timed runs per implementation; the best counts.
const QUANT_REPEATS: usize = 5;
/// The `gguf` package is slow enough that fewer runs say as much.
const GGUF_REPEATS: usize = 2;

/// The types `gguf.quants.quantize` implements (gguf 0.19.0).
const GGUF_QUANTIZES: [GgmlType; 10] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
];

/// A FLUX-like weight matrix: N(0, 1/3072) with sixteen outlier columns 10–30 times larger.
pub(crate) fn flux_matrix() -> Vec<f32> {
    let mut rng = Rng::new(lowbit_fixtures::SEED);
    let outliers: Vec<(usize, f64)> = (0..16)
        .map(|i| {
            let col = rng.below(QUANT_COLS as u64) as usize;
            (col, 10.0 + 20.0 * f64::from(i) / 15.0)
        })
        .collect();
    let sigma = 1.0 / (QUANT_COLS as f64).sqrt();
    let mut x = Vec::with_capacity(QUANT_ROWS * QUANT_COLS);
    for _ in 0..QUANT_ROWS {
        let start = x.len();
        x.extend((0..QUANT_COLS).map(|_| (rng.normal() * sigma) as f32));
        for &(col, factor) in &outliers {
            x[start + col] *= factor as f32;
        }
    }
    x
}

/// `lowbit_quant::quantize` or `quantize_ref`.
type Quantizer = fn(GgmlType, &[f32], &mut [u8]) -> Result<(), lowbit_quant::Error>;

/// Best wall time of `repeats` runs of lowbit's quantizer over `x`, rows split evenly between
/// [`QUANT_THREADS`] scoped threads (contiguous slices, as `lowbit convert` hands them out).
fn time_lowbit(
    ty: GgmlType,
    x: &[f32],
    out: &mut [u8],
    repeats: usize,
    quantize: Quantizer,
) -> anyhow::Result<Duration> {
    let row_bytes = QUANT_COLS / ty.block_size() * ty.type_size();
    let rows_per_thread = QUANT_ROWS.div_ceil(QUANT_THREADS);
    let mut best = Duration::MAX;
    for _ in 0..repeats {
        let start = Instant::now();
        std::thread::scope(|s| {
            let workers: Vec<_> = x
                .chunks(rows_per_thread * QUANT_COLS)
                .zip(out.chunks_mut(rows_per_thread * row_bytes))
                .map(|(x, out)| s.spawn(move || quantize(ty, x, out)))
                .collect();
            workers.into_iter().try_for_each(|w| w.join().expect("quantizer thread panicked"))
        })?;
        best = best.min(start.elapsed());
    }
    Ok(best)
}

/// Runs a `tests/interop` benchmark script and parses the Mparam/s it prints last.
fn python_mparams(python: &Path, script: &Path, args: &[String]) -> anyhow::Result<f64> {
    let out = Command::new(python).arg(script).args(args).stderr(Stdio::inherit()).output()?;
    if !out.status.success() {
        bail!("{} {} failed", script.display(), args.join(" "));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    last.trim().parse().with_context(|| format!("{}: unexpected output {text:?}", script.display()))
}

fn mparams(d: Duration) -> f64 {
    (QUANT_ROWS * QUANT_COLS) as f64 / d.as_secs_f64() / 1e6
}

/// Builds the release `lowbit` and returns its path.
pub(crate) fn release_lowbit(root: &Path) -> anyhow::Result<std::path::PathBuf> {
    crate::ci::sh(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root)
            .args(["build", "--release", "--quiet", "-p", "lowbit-cli"]),
    )?;
    Ok(root.join("target/release/lowbit"))
}

/// Runs `cargo xtask <command>` again as a release build: `cargo xtask` builds xtask, and with
/// it the quantizers it times in-process, without optimisation, and timing that would be
/// meaningless.
pub(crate) fn rerun_in_release(root: &Path, command: &[&str]) -> anyhow::Result<()> {
    eprintln!("{}: rebuilding xtask in release mode", command.join(" "));
    crate::ci::sh(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root)
            .args(["run", "--release", "--quiet", "--package", "xtask", "--"])
            .args(command),
    )
}

fn ratio(ours: f64, theirs: Option<f64>) -> String {
    theirs.map_or_else(|| "–".into(), |t| format!("{:.2}×", ours / t))
}

/// `cargo xtask bench-quant`: Mparam/s of lowbit's `quantize` (and its scalar reference), of
/// ggml's C quantizers with as many threads, and of the `gguf` package, on one FLUX-like matrix.
pub(crate) fn quant() -> anyhow::Result<()> {
    let root = crate::workspace_root();
    if cfg!(debug_assertions) {
        return rerun_in_release(&root, &["bench-quant"]);
    }
    let python = crate::ci::venv(&root)?;
    crate::ci::ggml_ref(&root, &python)?;
    let ggml_ref = root.join("tests/interop/ggml_ref.py");
    let gguf_quant = root.join("tests/interop/gguf_quant.py");

    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let x = flux_matrix();
    let input = dir.join(format!("flux-like-{QUANT_ROWS}x{QUANT_COLS}.f32"));
    std::fs::write(&input, x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())?;

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    println!(
        "{QUANT_ROWS}×{QUANT_COLS} f32, FLUX-like (N(0, 1/{QUANT_COLS}), 16 outlier columns); \
         {cpu}; Mparam/s, best of {QUANT_REPEATS} ({GGUF_REPEATS} for gguf-py)\n"
    );
    println!(
        "| type  | lowbit ({QUANT_THREADS} thr) | lowbit ref ({QUANT_THREADS} thr) | ggml C ({QUANT_THREADS} thr) \
         | gguf-py (1 thr) | lowbit / ggml | lowbit / gguf-py | same bytes as ggml |"
    );
    println!("|-------|---:|---:|---:|---:|---:|---:|:---:|");
    for &ty in GgmlType::ALL.iter().filter(|&&t| lowbit_quant::supports_quantize(t)) {
        let name = ty.name();
        let mut out = vec![0u8; QUANT_ROWS * QUANT_COLS / ty.block_size() * ty.type_size()];
        let ours = mparams(time_lowbit(ty, &x, &mut out, QUANT_REPEATS, lowbit_quant::quantize)?);
        let mut out_ref = vec![0u8; out.len()];
        let ours_ref =
            mparams(time_lowbit(ty, &x, &mut out_ref, QUANT_REPEATS, lowbit_quant::quantize_ref)?);
        let ggml = python_mparams(
            &python,
            &ggml_ref,
            &[
                "bench".into(),
                name.into(),
                QUANT_ROWS.to_string(),
                QUANT_COLS.to_string(),
                QUANT_THREADS.to_string(),
                QUANT_REPEATS.to_string(),
                input.display().to_string(),
            ],
        )?;
        let gguf = if GGUF_QUANTIZES.contains(&ty) {
            Some(python_mparams(
                &python,
                &gguf_quant,
                &[
                    "bench".into(),
                    name.into(),
                    QUANT_ROWS.to_string(),
                    QUANT_COLS.to_string(),
                    GGUF_REPEATS.to_string(),
                    input.display().to_string(),
                ],
            )?)
        } else {
            None
        };
        // The same work: ggml's bytes for the whole matrix against ours.
        let ggml_out = dir.join(format!("flux-like-{name}.ggml.bin"));
        crate::ci::sh(
            Command::new(&python)
                .arg(&ggml_ref)
                .args(["quantize", name, &QUANT_COLS.to_string()])
                .arg(&input)
                .arg(&ggml_out),
        )?;
        let same = std::fs::read(&ggml_out)? == out && out == out_ref;
        std::fs::remove_file(&ggml_out)?;
        println!(
            "| {name:<5} | {ours:.0} | {ours_ref:.0} | {ggml:.0} | {} | {} | {} | {} |",
            gguf.map_or_else(|| "–".into(), |g| format!("{g:.1}")),
            ratio(ours, Some(ggml)),
            ratio(ours, gguf),
            if same { "yes" } else { "NO" }
        );
    }
    println!(
        "\nReproduce: `cargo xtask bench-quant` (release build; ggml is llama-cpp-python 0.3.36's \
         ggml-quants.c, built by tests/interop/ggml_ref.py with gcc -O3 -ffp-contract=off, no \
         -march; its threads run through ctypes; gguf-py is gguf 0.19.0 on numpy, one thread)."
    );
    Ok(())
}
