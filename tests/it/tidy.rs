//! Repository rules checked as tests: documents agree with code, every source file says what it is.

use crate::support::root;
use lowbit_dtype::GgmlType;
use std::path::Path;

#[test]
fn ggml_table_in_formats_matches_the_code() {
    let doc = std::fs::read_to_string(root().join("formats/gguf.md")).unwrap();
    let rows: Vec<Vec<String>> = doc
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| type"))
        .map(|l| l.trim_matches('|').split('|').map(|c| c.trim().to_owned()).collect())
        .filter(|cells: &Vec<String>| cells.len() == 5)
        .collect();
    let want: Vec<Vec<String>> = GgmlType::ALL
        .iter()
        .map(|t| {
            vec![
                t.name().to_owned(),
                t.id().to_string(),
                t.block_size().to_string(),
                t.type_size().to_string(),
                format!("{}", t.bits_per_weight()),
            ]
        })
        .collect();
    assert_eq!(rows, want, "formats/gguf.md's type table is out of date");
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy();
        if p.is_dir() && name != "target" && !name.starts_with('.') {
            rust_files(&p, out);
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let mut files = Vec::new();
    for d in ["crates", "tests", "xtask"] {
        rust_files(&root().join(d), &mut files);
    }
    assert!(files.len() > 20);
    let missing: Vec<_> = files
        .iter()
        .filter(|p| !std::fs::read_to_string(p).unwrap().trim_start().starts_with("//!"))
        .map(|p| p.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    assert!(missing.is_empty(), "files without a `//!` opening doc: {missing:?}");
}

/// No test is ignored or expected to panic, except those needing a CUDA device (see below).
#[test]
fn no_ignored_or_should_panic_tests() {
    let mut files = Vec::new();
    for d in ["crates", "tests", "xtask"] {
        rust_files(&root().join(d), &mut files);
    }
    let banned = [concat!("#[", "ignore"), concat!("#[", "should_panic")];
    // The one exception: tests that need a CUDA device are ignored where there is none, with a
    // reason cargo prints (`ignored, skipped: no CUDA device …`), so they count as skipped.
    let gpu = concat!("#[", "ignore = \"skipped: no CUDA device");
    let offenders: Vec<_> = files
        .iter()
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let gpu_only = text.matches(banned[0]).count() == text.matches(gpu).count();
            !gpu_only || text.contains(banned[1])
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(offenders.is_empty(), "banned test attributes in {offenders:?}");
}

/// Source files stay small enough to read in one sitting (the style guide's ~600 lines).
#[test]
fn rust_files_stay_under_650_lines() {
    let mut files = Vec::new();
    for d in ["crates", "tests", "xtask", "fuzz/fuzz_targets"] {
        rust_files(&root().join(d), &mut files);
    }
    let long: Vec<_> = files
        .iter()
        .map(|p| (p, std::fs::read_to_string(p).unwrap().lines().count()))
        .filter(|(_, n)| *n > 650)
        .map(|(p, n)| format!("{} ({n} lines)", p.strip_prefix(root()).unwrap().display()))
        .collect();
    assert!(long.is_empty(), "split these: {long:?}");
}

/// Packages are fetched by name and version with their own clients, never from a hard-coded
/// registry address.
#[test]
fn no_package_host_is_named() {
    // Spelled in pieces, so that this file does not name them either.
    let hosts = [
        concat!("pythonhosted", ".org"),
        concat!("pypi", ".org"),
        concat!("static.crates", ".io"),
        concat!("registry.npmjs", ".org"),
    ];
    let mut offenders = Vec::new();
    let mut stack = vec![root()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with('.') && name != ".ci"
                || ["target", "fixtures"].contains(&name.as_str())
            {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(text) = std::fs::read_to_string(&p) {
                for h in hosts {
                    if text.contains(h) {
                        offenders
                            .push(format!("{}: {h}", p.strip_prefix(root()).unwrap().display()));
                    }
                }
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:?}");
}

/// The dependency rules of ARCHITECTURE.md: test inputs never come from the code they test
/// (`lowbit-fixtures` depends on no lowbit crate), and readers never pull in the quantizers.
#[test]
fn dependency_rules_hold() {
    let deps = |krate: &str| -> Vec<String> {
        let text =
            std::fs::read_to_string(root().join("crates").join(krate).join("Cargo.toml")).unwrap();
        text.lines()
            .skip_while(|l| l.trim() != "[dependencies]")
            .skip(1)
            .take_while(|l| !l.starts_with('['))
            .filter_map(|l| l.split(['.', ' ', '=']).next().filter(|n| !n.is_empty()))
            .map(str::to_owned)
            .collect()
    };
    let fixtures = deps("lowbit-fixtures");
    assert!(!fixtures.is_empty());
    assert!(!fixtures.iter().any(|d| d.starts_with("lowbit-")), "{fixtures:?}");
    for reader in
        ["lowbit-dtype", "lowbit-safetensors", "lowbit-gguf", "lowbit-layout", "lowbit-checkpoint"]
    {
        let d = deps(reader);
        assert!(!d.contains(&"lowbit-quant".to_owned()), "{reader} depends on {d:?}");
    }
}
