//! `cargo xtask ci`: the one test command (README.md and `.ci/run` both call it).
//!
//! It creates `target/interop-venv` with the pinned packages of `tests/interop/requirements.txt`
//! and `target/torch-venv` with those of `tests/interop/requirements-torch.txt` (torch and
//! diffusers, about 5 GB, for the diffusers tests; once each, reinstalled when the file
//! changes), builds ggml's reference quantizers into `target/ggml-ref/`
//! (`tests/interop/ggml_ref.py build`: the pinned sdist fetched with `pip download`, checked and
//! compiled, cached), then runs fmt, clippy and every test with `LOWBIT_PYTHON` and
//! `LOWBIT_TORCH_PYTHON` pointing at those environments, so the interop tests compare against
//! the reference implementations instead of skipping. Last, it installs the pinned cargo-fuzz
//! into `target/cargo-fuzz/` and runs `cargo xtask fuzz --smoke`. A missing C compiler or a
//! failed download stops CI at its own step, named as such.

use anyhow::{Context, bail};
use std::path::Path;
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
        .env("LOWBIT_TORCH_PYTHON", &torch_python))?;
    fuzz_smoke(&root, &cargo)?;
    eprintln!("ci: all checks passed");
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
