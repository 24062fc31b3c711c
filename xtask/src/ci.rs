//! `cargo xtask ci`: the one test command (README.md and `.ci/run` both call it).
//!
//! It creates `target/interop-venv` with the pinned packages of `tests/interop/requirements.txt`
//! and `target/torch-venv` with those of `tests/interop/requirements-torch.txt` (torch and
//! diffusers, about 5 GB, for the diffusers tests; once each, reinstalled when the file
//! changes), builds ggml's reference quantizers into `target/ggml-ref/`
//! (`tests/interop/ggml_ref.py build`: the pinned sdist fetched with `pip download`, checked and
//! compiled, cached), unpacks NVRTC from the pinned `nvidia-cuda-nvrtc` wheel into
//! `target/nvrtc/` (`nvrtc`: fetched with `pip download`, checked by sha256, once), then runs
//! fmt, clippy and every test with `LOWBIT_PYTHON` and `LOWBIT_TORCH_PYTHON` pointing at those
//! environments, so the interop tests compare against the reference implementations instead of
//! skipping, and with NVRTC on `LD_LIBRARY_PATH`, so lowbit-cuda's test (which fails without
//! NVRTC) compiles every kernel for every checked architecture (NVRTC needs no GPU). Last, it installs
//! the pinned cargo-fuzz into `target/cargo-fuzz/` and runs `cargo xtask fuzz --smoke`. A
//! missing C compiler or a failed download stops CI at its own step, named as such.

use anyhow::{Context, bail, ensure};
use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) fn sh(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("$ {cmd:?}");
    let status = cmd.status().with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Creates or refreshes the interop virtual environment and returns its python.
pub(crate) fn venv(root: &Path) -> anyhow::Result<std::path::PathBuf> {
    venv_from(root, "interop-venv", "requirements.txt")
}

/// Creates or refreshes the torch virtual environment (torch, diffusers) and returns its python.
pub(crate) fn torch_venv(root: &Path) -> anyhow::Result<std::path::PathBuf> {
    venv_from(root, "torch-venv", "requirements-torch.txt")
}

/// Creates or refreshes `target/<name>` from `tests/interop/<requirements>`; returns its python.
fn venv_from(root: &Path, name: &str, requirements: &str) -> anyhow::Result<std::path::PathBuf> {
    let venv = root.join("target").join(name);
    let python = venv.join("bin/python");
    let reqs = root.join("tests/interop").join(requirements);
    let wanted =
        std::fs::read_to_string(&reqs).with_context(|| format!("reading {}", reqs.display()))?;
    let stamp = venv.join("lowbit-requirements.txt");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) && python.exists() {
        return Ok(python);
    }
    let system_python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    sh(Command::new(system_python).args(["-m", "venv", "--clear"]).arg(&venv))?;
    sh(Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&reqs))?;
    std::fs::write(&stamp, wanted)?;
    Ok(python)
}

/// Builds (or finds cached) ggml's C quantizers, the reference of the bit-exactness tests.
pub(crate) fn ggml_ref(root: &Path, python: &Path) -> anyhow::Result<()> {
    eprintln!("ci: building ggml's reference quantizers (download, verify, compile; cached)");
    sh(Command::new(python).arg(root.join("tests/interop/ggml_ref.py")).arg("build")).context(
        "building ggml's reference library failed: it needs a C compiler (gcc, or set CC) and, \
         the first time, network access for `pip download`",
    )
}

pub(crate) fn run() -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let python = venv(&root)?;
    let torch_python = torch_venv(&root)?;
    ggml_ref(&root, &python)?;
    let nvrtc_lib = nvrtc(&root, &python)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    sh(Command::new(&cargo).current_dir(&root).args(["fmt", "--all", "--", "--check"]))?;
    sh(Command::new(&cargo).current_dir(&root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]))?;
    sh(Command::new(&cargo)
        .current_dir(&root)
        .args(["test", "--workspace", "--locked"])
        .env("LOWBIT_PYTHON", &python)
        .env("LOWBIT_TORCH_PYTHON", &torch_python)
        .env("LD_LIBRARY_PATH", with_nvrtc(&nvrtc_lib)?))?;
    fuzz_smoke(&root, &cargo)?;
    eprintln!("ci: all checks passed");
    Ok(())
}

/// The NVRTC wheel the kernel-compilation tests load, pinned by version and by the sha256 PyPI
/// lists for its one Linux x86-64 file,
/// `nvidia_cuda_nvrtc-13.0.88-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl`.
const NVRTC_PACKAGE: &str = "nvidia-cuda-nvrtc";
const NVRTC_VERSION: &str = "13.0.88";
const NVRTC_SHA256: &str = "ad9b6d2ead2435f11cbb6868809d2adeeee302e9bb94bcf0539c7a40d80e8575";
/// The members unpacked: the library cudarc loads, the builtins it loads in turn, the licence.
/// (The wheel's `.alt` variants, another 110 MB, are not needed.)
const NVRTC_MEMBERS: [&str; 3] = [
    "nvidia/cu13/lib/libnvrtc.so.13",
    "nvidia/cu13/lib/libnvrtc-builtins.so.13.0",
    "nvidia_cuda_nvrtc-13.0.88.dist-info/licenses/License.txt",
];
/// Checks the wheel's sha256 and extracts the named members, with Python's standard library:
/// `python -c NVRTC_UNPACK WHEEL SHA256 DEST MEMBER…`.
const NVRTC_UNPACK: &str = "\
import hashlib, sys, zipfile
wheel, want, dest, *members = sys.argv[1:]
h = hashlib.sha256()
with open(wheel, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
        h.update(chunk)
if h.hexdigest() != want:
    sys.exit(f'{wheel} has sha256 {h.hexdigest()}, expected {want}')
with zipfile.ZipFile(wheel) as z:
    for m in members:
        z.extract(m, dest)
";

/// Unpacks NVRTC into `target/nvrtc/` unless the same wheel already is, and returns the folder
/// to put on `LD_LIBRARY_PATH`: the wheel fetched by `python -m pip download` (three attempts),
/// its sha256 checked, two libraries extracted, the wheel deleted, a stamp written last.
pub(crate) fn nvrtc(root: &Path, python: &Path) -> anyhow::Result<PathBuf> {
    let dir = root.join("target/nvrtc");
    let lib = dir.join("nvidia/cu13/lib");
    let stamp = dir.join("lowbit-wheel.txt");
    let wanted = format!("{NVRTC_PACKAGE}=={NVRTC_VERSION} sha256:{NVRTC_SHA256}\n");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str())
        && NVRTC_MEMBERS.iter().all(|m| dir.join(m).is_file())
    {
        return Ok(lib);
    }
    eprintln!(
        "ci: fetching NVRTC ({NVRTC_PACKAGE}=={NVRTC_VERSION}, a 90 MB wheel) into target/nvrtc/"
    );
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let staging = dir.join("download");
    std::fs::create_dir_all(&staging)?;
    let requirement = format!("{NVRTC_PACKAGE}=={NVRTC_VERSION}");
    for attempt in 1..=3 {
        let mut pip = Command::new(python);
        pip.args(["-m", "pip", "download", "--quiet", "--disable-pip-version-check"])
            .args(["--no-deps", "--only-binary=:all:", "--python-version", "3.12"])
            .args(["--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64"])
            .args(["--platform", "manylinux_2_28_x86_64", "-d"])
            .arg(&staging)
            .arg(&requirement);
        match sh(&mut pip) {
            Ok(()) => break,
            Err(e) if attempt == 3 => {
                return Err(e).context(format!(
                    "pip could not download {requirement} (network access is needed once)"
                ));
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_secs(2 * attempt)),
        }
    }
    let wheels: Vec<PathBuf> =
        std::fs::read_dir(&staging)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    ensure!(
        wheels.len() == 1 && wheels[0].extension().is_some_and(|e| e == "whl"),
        "pip download {requirement} left {wheels:?}, not one wheel"
    );
    sh(Command::new(python)
        .args(["-c", NVRTC_UNPACK])
        .arg(&wheels[0])
        .arg(NVRTC_SHA256)
        .arg(&dir)
        .args(NVRTC_MEMBERS))
    .context("checking and unpacking the NVRTC wheel")?;
    std::fs::remove_dir_all(&staging)?;
    std::fs::write(&stamp, wanted)?;
    Ok(lib)
}

/// `LD_LIBRARY_PATH` with `lib` first.
fn with_nvrtc(lib: &Path) -> anyhow::Result<std::ffi::OsString> {
    let old = std::env::var_os("LD_LIBRARY_PATH").unwrap_or_default();
    let mut dirs = vec![lib.to_owned()];
    // An empty entry would mean the current directory.
    dirs.extend(std::env::split_paths(&old).filter(|d| !d.as_os_str().is_empty()));
    Ok(std::env::join_paths(dirs)?)
}

/// `cargo xtask nvrtc`: only the NVRTC step of `ci`; prints the folder for `LD_LIBRARY_PATH`.
pub(crate) fn nvrtc_only() -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let lib = nvrtc(&root, &venv(&root)?)?;
    println!("{}", lib.display());
    Ok(())
}

/// cargo-fuzz's version, pinned: installed by `cargo install` into `target/cargo-fuzz/`.
const CARGO_FUZZ: &str = "0.13.2";

/// `cargo xtask fuzz --smoke`: every fuzz target builds and runs 20 s on its seeds, so the
/// targets keep compiling as the readers change and a shallow crash shows up at once.
fn fuzz_smoke(root: &Path, cargo: &str) -> anyhow::Result<()> {
    let prefix = root.join("target/cargo-fuzz");
    let stamp = prefix.join("lowbit-version.txt");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(CARGO_FUZZ) {
        sh(Command::new(cargo)
            .args([
                "install",
                "--locked",
                "--quiet",
                "--force",
                "cargo-fuzz",
                "--version",
                CARGO_FUZZ,
            ])
            .arg("--root")
            .arg(&prefix))?;
        std::fs::write(&stamp, CARGO_FUZZ)?;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![prefix.join("bin")];
    dirs.extend(std::env::split_paths(&path));
    sh(Command::new(cargo)
        .current_dir(root)
        .args(["xtask", "fuzz", "--smoke"])
        .env("PATH", std::env::join_paths(dirs)?))
}
