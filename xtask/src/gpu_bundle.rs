//! `cargo xtask gpu-bundle [--out DIR]`: the folder the GPU machine runs, which has no Rust
//! toolchain, so everything is built here and carried there.
//!
//! The folder (default `target/gpu-bundle/`, recreated each time) holds the release `lowbit` and
//! `xtask` binaries (debug sections stripped when `objcopy` or `strip` is here; `xtask` writes
//! the test data there with `gpu-data`), `gpu_peers.py` from `../shared/bench/` (which does not
//! travel with the repository) and `run.sh` from `scripts/gpu-run.sh`. The device tool carries
//! at most 64 MiB, the repository included, so a folder over 48 MiB is refused.

use crate::ci::sh;
use anyhow::{Context, bail, ensure};
use std::path::Path;
use std::process::Command;

/// The largest folder accepted: the device tool carries 64 MiB, the repository takes about 10.
const MAX_BYTES: u64 = 48 << 20;

/// The release binaries copied, by name under `target/release/`.
const BINARIES: [&str; 2] = ["lowbit", "xtask"];
/// The benchmark peers, relative to the workspace root.
const PEERS: &str = "../shared/bench/gpu_peers.py";
/// The script the GPU machine runs, relative to the workspace root.
const SCRIPT: &str = "scripts/gpu-run.sh";

/// Every name the folder holds; an existing `--out` holding anything else is not removed.
const NAMES: [&str; 4] = ["lowbit", "xtask", "gpu_peers.py", "run.sh"];

/// `cargo xtask gpu-bundle [--out DIR]`.
pub(crate) fn run(args: &[&str]) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let out = match args {
        [] => root.join("target/gpu-bundle"),
        ["--out", dir] => std::path::absolute(dir).with_context(|| format!("--out {dir}"))?,
        _ => bail!("usage: cargo xtask gpu-bundle [--out DIR]"),
    };
    let Ok(rel) = out.strip_prefix(&root).map(Path::to_owned) else {
        bail!(
            "{} is outside the repository: the device tool carries only paths inside it; use \
             the default --out (target/gpu-bundle)",
            out.display()
        );
    };
    // The two files not built here are checked first, before the slow build.
    let peers = root.join(PEERS);
    ensure!(
        peers.is_file(),
        "{} is missing: the GPU benchmarks' peers live in the shared folder beside the checkout \
         (../shared/bench/gpu_peers.py), which the device tool does not carry, so the bundle \
         copies it",
        peers.display()
    );
    let script = root.join(SCRIPT);
    ensure!(
        script.is_file(),
        "{} is missing: it is the bundle's run.sh, the script the GPU machine runs; write it \
         (or wait for it) and run gpu-bundle again",
        script.display()
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    sh(Command::new(&cargo).current_dir(&root).args([
        "build",
        "--release",
        "--locked",
        "-p",
        "lowbit-cli",
        "-p",
        "xtask",
    ]))?;

    recreate(&out)?;
    let strip = stripper();
    for name in BINARIES {
        let from = root.join("target/release").join(name);
        let to = out.join(name);
        let before = size(&from)?;
        copy_binary(&from, &to, strip)?;
        let after = size(&to)?;
        println!(
            "{name:<13}{} (release build {}{})",
            mib(after),
            mib(before),
            if strip.is_some() { ", debug sections stripped" } else { ", not stripped" }
        );
    }
    if strip.is_none() {
        eprintln!(
            "gpu-bundle: neither objcopy nor strip is here: the binaries keep their debug lines"
        );
    }
    for (from, name) in [(&peers, "gpu_peers.py"), (&script, "run.sh")] {
        let to = out.join(name);
        std::fs::copy(from, &to)
            .with_context(|| format!("copying {} into {}", from.display(), out.display()))?;
        // Not the source's mode: the shared folder's copy is read-only.
        set_mode(&to, if name == "run.sh" { 0o755 } else { 0o644 })?;
        println!("{name:<13}{}", mib(size(&to)?));
    }

    let total: u64 = NAMES.iter().map(|n| size(&out.join(n))).sum::<anyhow::Result<u64>>()?;
    if total > MAX_BYTES {
        std::fs::remove_dir_all(&out)?;
        bail!(
            "the bundle is {}, over its limit of {} (the device tool carries 64 MiB, the \
             repository included); {} removed",
            mib(total),
            mib(MAX_BYTES),
            out.display()
        );
    }
    println!("total        {} (limit {})", mib(total), mib(MAX_BYTES));
    print_how_to_run(&root, &rel);
    Ok(())
}

/// Removes `out` when it holds only the bundle's own files, then creates it empty.
fn recreate(out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        let mut foreign = Vec::new();
        for entry in std::fs::read_dir(out).with_context(|| format!("reading {}", out.display()))? {
            let name = entry?.file_name();
            if !NAMES.iter().any(|n| name == *n) {
                foreign.push(name.to_string_lossy().into_owned());
            }
        }
        ensure!(
            foreign.is_empty(),
            "{} holds files that are not the bundle's ({}): refusing to remove it; move them \
             away or pick another --out",
            out.display(),
            foreign.join(", ")
        );
        std::fs::remove_dir_all(out).with_context(|| format!("removing {}", out.display()))?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))
}

/// How debug sections are removed: `objcopy --strip-debug IN OUT`, or `strip --strip-debug -o
/// OUT IN`, whichever runs here first.
#[derive(Clone, Copy, Debug)]
enum Strip {
    Objcopy,
    Strip,
}

fn stripper() -> Option<Strip> {
    let runs =
        |tool: &str| Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    if runs("objcopy") {
        Some(Strip::Objcopy)
    } else if runs("strip") {
        Some(Strip::Strip)
    } else {
        None
    }
}

fn copy_binary(from: &Path, to: &Path, strip: Option<Strip>) -> anyhow::Result<()> {
    match strip {
        Some(Strip::Objcopy) => {
            sh(Command::new("objcopy").arg("--strip-debug").arg(from).arg(to))?;
        }
        Some(Strip::Strip) => {
            sh(Command::new("strip").arg("--strip-debug").arg("-o").arg(to).arg(from))?;
        }
        None => {
            std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
        }
    }
    set_mode(to, 0o755)
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

fn size(path: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len())
}

fn mib(bytes: u64) -> String {
    if bytes < 1 << 20 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
    }
}

/// Prints the device-tool call for `rel`, the bundle's path inside the repository.
fn print_how_to_run(root: &Path, rel: &Path) {
    let ignored = Command::new("git")
        .current_dir(root)
        .args(["check-ignore", "-q"])
        .arg(rel)
        .status()
        .is_ok_and(|s| s.success());
    if !ignored {
        eprintln!(
            "gpu-bundle: note: git does not ignore {}: it travels as an untracked folder, and \
             `carry` (which names ignored paths) is not needed for it",
            rel.display()
        );
    }
    let rel = rel.display();
    println!(
        "\nbundle ready in {rel}. Run it on the GPU machine with the device tool:\n\n    \
         run(command=\"bash {rel}/run.sh\", carry=[\"{rel}\"])\n\n\
         The results appear under $OUT (they come back under the reply's files_at)."
    );
}
