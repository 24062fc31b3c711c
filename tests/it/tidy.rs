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

#[test]
fn no_ignored_or_should_panic_tests() {
    let mut files = Vec::new();
    for d in ["crates", "tests", "xtask"] {
        rust_files(&root().join(d), &mut files);
    }
    let banned = [concat!("#[", "ignore"), concat!("#[", "should_panic")];
    let offenders: Vec<_> = files
        .iter()
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            banned.iter().any(|b| text.contains(b))
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(offenders.is_empty(), "banned test attributes in {offenders:?}");
}
