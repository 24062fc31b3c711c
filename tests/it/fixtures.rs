//! The committed fixtures are exactly what the generator makes.

use crate::support::root;

#[test]
fn committed_fixtures_are_current() {
    let dir = root().join("fixtures");
    let mut stale = Vec::new();
    for (rel, bytes) in lowbit_fixtures::committed() {
        if std::fs::read(dir.join(&rel)).ok().as_deref() != Some(bytes.as_slice()) {
            stale.push(rel);
        }
    }
    assert!(stale.is_empty(), "out of date: {stale:?}; run `cargo xtask fixtures`");
}

#[test]
fn every_bad_fixture_has_an_expected_error() {
    let known: Vec<String> = lowbit_fixtures::committed().into_iter().map(|(r, _)| r).collect();
    let mut stray = Vec::new();
    let mut stack = vec![root().join("fixtures/bad")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel =
                    p.strip_prefix(root().join("fixtures")).unwrap().to_string_lossy().into_owned();
                if !known.contains(&rel) {
                    stray.push(rel);
                }
            }
        }
    }
    assert!(
        stray.is_empty(),
        "files in fixtures/bad with no case in lowbit_fixtures::bad: {stray:?}"
    );
}

#[test]
fn committed_fixtures_stay_small() {
    let total: usize = lowbit_fixtures::committed().iter().map(|(_, b)| b.len()).sum();
    assert!(total < 8_000_000, "committed fixtures grew to {total} bytes");
}
