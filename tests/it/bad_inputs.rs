//! Every malformed input gets one clear line naming the file, exit code 1, and no panic.

use crate::support::{lowbit, root};
use lowbit_fixtures::bad::cases;

#[test]
fn each_bad_fixture_fails_cleanly() {
    let mut failures = Vec::new();
    for case in cases() {
        let rel = format!("fixtures/bad/{}", case.name);
        let out = lowbit(&["inspect", &rel]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let mut problems = Vec::new();
        if out.status.code() != Some(1) {
            problems.push(format!("exit code {:?}", out.status.code()));
        }
        if stderr.contains("panicked") {
            problems.push("panicked".into());
        }
        if stderr.lines().count() != 1 || !stderr.starts_with("error: ") {
            problems.push("not one `error: …` line".into());
        }
        if !stderr.contains(&rel) {
            problems.push(format!("does not name {rel}"));
        }
        for want in case.expect {
            if !stderr.contains(want) {
                problems.push(format!("lacks {want:?}"));
            }
        }
        if !out.stdout.is_empty() {
            problems.push("printed to stdout".into());
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {} — stderr: {stderr}", case.name, problems.join(", ")));
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
    for case in cases() {
        let _ = lowbit(&["inspect", &format!("fixtures/bad/{}", case.name)]);
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
