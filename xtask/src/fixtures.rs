//! `cargo xtask fixtures`: writes `fixtures/` from `lowbit_fixtures::committed()`.

use anyhow::{Context, bail};
use std::collections::BTreeSet;
use std::path::Path;

/// Writes every committed fixture, or with `check` only reports differences and stray files.
pub(crate) fn write(check: bool) -> anyhow::Result<()> {
    let root = crate::workspace_root().join("fixtures");
    let wanted = lowbit_fixtures::committed();
    let mut stale = Vec::new();
    for (rel, bytes) in &wanted {
        let path = root.join(rel);
        let current = std::fs::read(&path).ok();
        if current.as_deref() == Some(bytes.as_slice()) {
            continue;
        }
        if check {
            stale.push(rel.clone());
            continue;
        }
        std::fs::create_dir_all(path.parent().expect("under fixtures/"))?;
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {rel}");
    }
    let known: BTreeSet<&str> = wanted.iter().map(|(r, _)| r.as_str()).collect();
    let mut stray = Vec::new();
    list(&root.join("bad"), &root, &mut stray)?;
    stray.retain(|r| !known.contains(r.as_str()));
    if check {
        if !stale.is_empty() || !stray.is_empty() {
            bail!(
                "fixtures are out of date: changed {stale:?}, not generated {stray:?}; run `cargo xtask fixtures`"
            );
        }
        println!("fixtures are current ({} files)", wanted.len());
    } else {
        for r in stray {
            std::fs::remove_file(root.join(&r))?;
            println!("removed {r}");
        }
    }
    Ok(())
}

fn list(dir: &Path, root: &Path, out: &mut Vec<String>) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            list(&p, root, out)?;
        } else {
            out.push(p.strip_prefix(root)?.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}
