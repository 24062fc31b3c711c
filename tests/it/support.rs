//! Helpers shared by the end-to-end tests: running `lowbit` and the Python references, and the
//! full-width FLUX inputs that several tests share (generated once per test process).

use lowbit_fixtures::flux::{FluxConfig, GenTensor, generate_tensor};
use lowbit_fixtures::write::bf16_header;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The repository root.
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// Runs `lowbit` with `args` from the repository root.
pub(crate) fn lowbit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lowbit"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("lowbit runs")
}

/// `lowbit inspect --json PATH`, parsed; panics with stderr on failure.
pub(crate) fn inspect_json(path: &Path) -> serde_json::Value {
    let out = lowbit(&["inspect", "--json", path.to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "inspect {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("inspect prints JSON")
}

/// The interpreter with the pinned reference packages.
pub(crate) fn python() -> PathBuf {
    std::env::var_os("LOWBIT_PYTHON").map_or_else(|| PathBuf::from("python3"), PathBuf::from)
}

/// Runs `tests/interop/<script>` with `args` and returns its stdout; fails the test with a
/// how-to-fix message when the reference packages are missing.
pub(crate) fn run_python(script: &str, args: &[&Path]) -> String {
    let args: Vec<&OsStr> = args.iter().map(|p| p.as_os_str()).collect();
    run_script(script, &args)
}

/// [`run_python`] for arguments that are not all paths (type names, counts).
pub(crate) fn run_script(script: &str, args: &[&OsStr]) -> String {
    let script_path = root().join("tests/interop").join(script);
    let out = Command::new(python())
        .arg(&script_path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}); run `cargo xtask ci`, or set LOWBIT_PYTHON to a python with tests/interop/requirements.txt installed", python().display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} {} failed{}:\n{stderr}",
        args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "),
        if stderr.contains("ModuleNotFoundError") {
            " (reference packages missing: run `cargo xtask ci`, or `pip install -r tests/interop/requirements.txt` and set LOWBIT_PYTHON)"
        } else {
            ""
        }
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The interpreter with torch, diffusers and the `gguf` package (`tests/interop/requirements-torch.txt`).
pub(crate) fn torch_python() -> PathBuf {
    std::env::var_os("LOWBIT_TORCH_PYTHON").map_or_else(|| PathBuf::from("python3"), PathBuf::from)
}

/// Runs `tests/interop/<script>` under [`torch_python`] and returns its stdout; fails the test,
/// with what the script printed and how to fix the environment, when the script fails.
pub(crate) fn run_torch_script(script: &str, args: &[&OsStr]) -> String {
    let fix = "set LOWBIT_TORCH_PYTHON to a python with tests/interop/requirements-torch.txt \
               installed (`cargo xtask ci` makes one under target/torch-venv)";
    let out = Command::new(torch_python())
        .arg(root().join("tests/interop").join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}); {fix}", torch_python().display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed{}:\n{stdout}\n{stderr}",
        if stderr.contains("ModuleNotFoundError") {
            format!(" (packages missing: {fix})")
        } else {
            String::new()
        }
    );
    stdout.into_owned()
}

/// FLUX.1 at full width with one block of each kind (about 0.5 B parameters, 1 GB in BF16):
/// diffusers' converter hard-codes the width 3072, so inputs it converts must have it.
pub(crate) const FLUX_3072: FluxConfig = FluxConfig {
    hidden: 3072,
    head_dim: 128,
    mlp_hidden: 12288,
    in_channels: 64,
    context_dim: 256,
    vec_dim: 256,
    time_dim: 256,
    double_blocks: 1,
    single_blocks: 1,
    guidance: true,
};

/// The seed of [`flux_3072`]'s weights.
const FLUX_3072_SEED: u64 = 11;

/// This process's folder for inputs that several tests share, under Cargo's temporary folder
/// for this target (`target/tmp`), named by the process id. Folders left by processes that have
/// ended are removed on first use, so runs do not pile up files.
fn shared_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("lowbit-it-shared");
        std::fs::create_dir_all(&base).expect("create target/tmp/lowbit-it-shared");
        for entry in std::fs::read_dir(&base).expect("list shared folders").flatten() {
            let pid = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok());
            if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = base.join(std::process::id().to_string());
        std::fs::create_dir_all(&dir).expect("create this process's shared folder");
        dir
    })
}

/// [`FLUX_3072`] in BFL naming, every tensor BF16, generated once per test process.
pub(crate) fn flux_3072() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = shared_dir().join("flux-3072-bfl.safetensors");
        // Tensors are generated in parallel (Box–Muller dominates), then written header first
        // and data in the header's order.
        let specs = FLUX_3072.tensors();
        let slots: Vec<OnceLock<GenTensor>> = specs.iter().map(|_| OnceLock::new()).collect();
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..std::thread::available_parallelism().map_or(1, usize::from) {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((name, shape)) = specs.get(i) else { break };
                        let _ = slots[i].set(generate_tensor(FLUX_3072_SEED, name, shape));
                    }
                });
            }
        });
        let (header, _) = bf16_header(&specs);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create input"));
        f.write_all(&header).expect("write header");
        for slot in &slots {
            f.write_all(&slot.get().expect("generated").data).expect("write tensor");
        }
        f.flush().expect("write input");
        path
    })
}

/// [`flux_3072`] converted to diffusers naming by diffusers' own converter
/// (`convert_flux_transformer_checkpoint_to_diffusers`), once per test process.
pub(crate) struct DiffusersTwin {
    /// One safetensors file.
    pub(crate) single: PathBuf,
    /// A model folder whose `transformer/` holds the same tensors in three shards and an index.
    pub(crate) model: PathBuf,
}

/// See [`DiffusersTwin`].
pub(crate) fn flux_3072_diffusers() -> &'static DiffusersTwin {
    static TWIN: OnceLock<DiffusersTwin> = OnceLock::new();
    TWIN.get_or_init(|| {
        let single = shared_dir().join("flux-3072-diffusers.safetensors");
        let model = shared_dir().join("FLUX.1-3072");
        let transformer = model.join("transformer");
        run_torch_script(
            "diffusers_convert.py",
            &[
                flux_3072().as_os_str(),
                single.as_os_str(),
                transformer.as_os_str(),
                OsStr::new("3"),
            ],
        );
        DiffusersTwin { single, model }
    })
}

/// One tensor as a safetensors header describes it.
pub(crate) struct StEntry {
    /// `BF16`, `F32`, ….
    pub(crate) dtype: String,
    /// Torch-order shape.
    pub(crate) shape: Vec<u64>,
    /// Absolute byte range in the file.
    pub(crate) bytes: Range<u64>,
}

/// The tensors of a safetensors file, from its JSON header alone: a reader independent of
/// lowbit's, small enough to check by eye.
pub(crate) fn safetensors_entries(path: &Path) -> BTreeMap<String, StEntry> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut n = [0u8; 8];
    f.read_exact_at(&mut n, 0).unwrap();
    let n = u64::from_le_bytes(n);
    let mut header = vec![0u8; usize::try_from(n).unwrap()];
    f.read_exact_at(&mut header, 8).unwrap();
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).unwrap();
    header
        .into_iter()
        .filter(|(k, _)| k != "__metadata__")
        .map(|(name, v)| {
            let u = |v: &serde_json::Value| v.as_u64().unwrap();
            let offsets: Vec<u64> = v["data_offsets"].as_array().unwrap().iter().map(u).collect();
            let entry = StEntry {
                dtype: v["dtype"].as_str().unwrap().to_owned(),
                shape: v["shape"].as_array().unwrap().iter().map(u).collect(),
                bytes: 8 + n + offsets[0]..8 + n + offsets[1],
            };
            (name, entry)
        })
        .collect()
}

/// The `__metadata__` string map of a safetensors file (empty when absent).
pub(crate) fn safetensors_metadata(path: &Path) -> BTreeMap<String, String> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut n = [0u8; 8];
    f.read_exact_at(&mut n, 0).unwrap();
    let mut header = vec![0u8; usize::try_from(u64::from_le_bytes(n)).unwrap()];
    f.read_exact_at(&mut header, 8).unwrap();
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
    header["__metadata__"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())).collect())
        .unwrap_or_default()
}

/// The bytes `range` of the file at `path`.
pub(crate) fn read_at(path: &Path, range: Range<u64>) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut buf = vec![0u8; usize::try_from(range.end - range.start).unwrap()];
    f.read_exact_at(&mut buf, range.start).unwrap();
    buf
}

/// Little-endian BF16 bytes as `f32`, through the `half` crate.
pub(crate) fn bf16_values(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
}

/// Runs `lowbit convert INPUT -o OUT EXTRA…` and fails the test with its stderr if it fails.
pub(crate) fn convert_ok(input: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec!["convert", input.to_str().unwrap(), "-o", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = lowbit(&args);
    assert!(
        o.status.success(),
        "convert {} {extra:?} failed: {}",
        input.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// [`flux_3072`] converted by `lowbit convert --to gguf:TARGET` (default threads and chunks),
/// once per test process; `target` is `q8_0` or `q4_k_m`.
pub(crate) fn flux_3072_gguf(target: &str) -> &'static Path {
    static Q8_0: OnceLock<PathBuf> = OnceLock::new();
    static Q4_K_M: OnceLock<PathBuf> = OnceLock::new();
    let cell = match target {
        "q8_0" => &Q8_0,
        "q4_k_m" => &Q4_K_M,
        _ => panic!("no shared conversion to {target}"),
    };
    cell.get_or_init(|| {
        let out = shared_dir().join(format!("flux-3072-{target}.gguf"));
        convert_ok(flux_3072(), &out, &["--to", &format!("gguf:{target}")]);
        out
    })
}

/// A BF16 tensor of N(0, 1/cols) weights with two outlier columns (× `outlier`) and one row of
/// zeros, drawn from `seed` and the name.
pub(crate) fn outlier_weights(
    seed: u64,
    name: &str,
    rows: u64,
    cols: u64,
    outlier: f64,
) -> GenTensor {
    let mut rng = lowbit_fixtures::rng::Rng::for_name(seed, name);
    let outliers = [rng.below(cols), rng.below(cols)];
    let zero_row = rng.below(rows);
    let std = 1.0 / (cols as f64).sqrt();
    let mut data = Vec::new();
    for r in 0..rows {
        for c in 0..cols {
            let scale = if outliers.contains(&c) { outlier } else { 1.0 };
            let v = if r == zero_row { 0.0 } else { std * scale * rng.normal() };
            data.extend_from_slice(&half::bf16::from_f64(v).to_le_bytes());
        }
    }
    GenTensor { name: name.to_owned(), shape: vec![rows, cols], data }
}

/// `lowbit dequantize INPUT -o OUT EXTRA…`, failing the test with its stderr.
pub(crate) fn dequantize_ok(input: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec!["dequantize", input.to_str().unwrap(), "-o", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = lowbit(&args);
    assert!(
        o.status.success(),
        "dequantize {}: {}",
        input.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}
