//! Helpers shared by the end-to-end tests.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
