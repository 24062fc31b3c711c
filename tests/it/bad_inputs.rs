//! Every malformed or unconvertible input gets one clear line naming the file (and the tensor
//! where there is one), exit code 1, no panic and no output file, from `inspect`, `convert` and
//! `convert --dry-run` alike; and the dry run refuses with exactly the real run's words.

use crate::support::{lowbit, root};
use lowbit_fixtures::bad::{BadCase, cases};
use std::path::Path;

/// What is wrong with one run's outcome (empty when it is what the case expects).
fn problems(out: &std::process::Output, rel: &str, want: Option<&[&str]>) -> Vec<String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut problems = Vec::new();
    if stderr.contains("panicked") {
        problems.push("panicked".into());
    }
    let Some(want) = want else {
        if !out.status.success() {
            problems.push(format!("failed on a valid file: {stderr}"));
        }
        return problems;
    };
    if out.status.code() != Some(1) {
        problems.push(format!("exit code {:?}", out.status.code()));
    }
    if stderr.lines().count() != 1 || !stderr.starts_with("error: ") {
        problems.push("not one `error: …` line".into());
    }
    if !stderr.contains(rel) {
        problems.push(format!("does not name {rel}"));
    }
    for w in want {
        if !stderr.contains(w) {
            problems.push(format!("lacks {w:?}"));
        }
    }
    if !out.stdout.is_empty() {
        problems.push("printed to stdout".into());
    }
    problems
}

fn convert(case: &BadCase, out_dir: &Path, dry_run: bool) -> std::process::Output {
    let rel = format!("fixtures/bad/{}", case.name);
    let out = out_dir.join("out.gguf");
    let mut args = vec!["convert", &rel, "-o", out.to_str().unwrap(), "--to", "gguf:q8_0"];
    args.extend_from_slice(case.convert_args);
    if dry_run {
        args.push("--dry-run");
    }
    lowbit(&args)
}

#[test]
fn each_bad_fixture_fails_cleanly_in_every_command() {
    let mut failures = Vec::new();
    for case in cases() {
        let rel = format!("fixtures/bad/{}", case.name);
        let inspect = lowbit(&["inspect", &rel]);
        for p in problems(&inspect, &rel, case.inspect) {
            failures.push(format!("{}: inspect: {p}", case.name));
        }
        let dir = tempfile::tempdir().unwrap();
        let real = convert(&case, dir.path(), false);
        let dry = convert(&case, dir.path(), true);
        for (what, out) in [("convert", &real), ("convert --dry-run", &dry)] {
            for p in problems(out, &rel, Some(case.convert)) {
                let stderr = String::from_utf8_lossy(&out.stderr);
                failures.push(format!("{}: {what}: {p} — stderr: {stderr}", case.name));
            }
        }
        if real.stderr != dry.stderr {
            failures.push(format!(
                "{}: the dry run refuses differently: {:?} vs {:?}",
                case.name,
                String::from_utf8_lossy(&dry.stderr),
                String::from_utf8_lossy(&real.stderr)
            ));
        }
        if std::fs::read_dir(dir.path()).unwrap().next().is_some() {
            failures.push(format!("{}: convert left a file behind", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn missing_and_unreadable_paths() {
    let out = lowbit(&["inspect", "fixtures/does-not-exist.safetensors"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("fixtures/does-not-exist.safetensors") && stderr.contains("No such file"),
        "{stderr}"
    );

    let empty = tempfile::tempdir().unwrap();
    let out = lowbit(&["inspect", empty.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds no"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A device is not a checkpoint, and is not read to its (endless) end.
    let out = lowbit(&["inspect", "/dev/zero"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/dev/zero") && stderr.contains("not a regular file"), "{stderr}");
}

#[test]
fn inputs_are_never_modified() {
    let before: Vec<(String, Vec<u8>)> = cases()
        .into_iter()
        .flat_map(|c| c.files)
        .map(|(p, _)| {
            let bytes = std::fs::read(root().join("fixtures/bad").join(&p)).unwrap();
            (p, bytes)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    for case in cases() {
        let _ = lowbit(&["inspect", &format!("fixtures/bad/{}", case.name)]);
        let _ = convert(&case, dir.path(), false);
    }
    for (p, bytes) in before {
        assert_eq!(std::fs::read(root().join("fixtures/bad").join(&p)).unwrap(), bytes, "{p}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let out = lowbit(&["inspect"]);
    assert_eq!(out.status.code(), Some(2));
    let out = lowbit(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}
