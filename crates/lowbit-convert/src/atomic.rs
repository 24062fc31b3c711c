//! The one way lowbit creates an output file: a temporary file beside the destination, renamed
//! over it only when complete.
//!
//! The temporary file is named `.<name>.lowbit-<random>.partial`, so a user who finds one knows
//! what left it. While a run writes it, the run holds an exclusive `flock` on it; the kernel drops
//! that lock when the process ends, however it ends (`kill -9` included). The next run for the
//! same output removes every such file whose lock it can take: those are the leftovers of dead
//! runs, never the file of a run still going. An error, a full disk or Ctrl-C removes the
//! temporary file at once (it is deleted when dropped), and the destination never holds a
//! partial file: `rename` replaces it in one step.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// What goes between the output's name and the random part of a temporary file's name.
const MARK: &str = ".lowbit-";
/// The temporary file's suffix.
const SUFFIX: &str = ".partial";

/// An output being written.
#[derive(Debug)]
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
}

/// The directory a path's file lives in (`.` for a bare name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn file_name(dest: &Path) -> String {
    dest.file_name().map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned())
}

/// An I/O error without the temporary file's name, which `tempfile` adds to its messages: the
/// user asked for `dest`, and hearing about `.dest.lowbit-Xy12ab.partial` only confuses.
fn plain(e: &io::Error) -> io::Error {
    e.raw_os_error().map_or_else(|| io::Error::from(e.kind()), io::Error::from_raw_os_error)
}

impl AtomicFile {
    /// Removes what dead runs left for `dest`, then creates and locks a new temporary file.
    ///
    /// # Errors
    /// When the directory cannot be listed or written; the error carries no path (the caller
    /// names `dest`).
    pub fn create(dest: &Path) -> io::Result<AtomicFile> {
        let dir = parent_dir(dest);
        let name = file_name(dest);
        remove_stale(dir, &name)?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}{MARK}"))
            .suffix(SUFFIX)
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .tempfile_in(dir)
            .map_err(|e| plain(&e))?;
        // A file system without `flock` (some network and FUSE mounts) still gets the atomic
        // rename; there, leftovers of killed runs stay, since a dead writer cannot be told from
        // a live one.
        match rustix::fs::flock(tmp.as_file(), rustix::fs::FlockOperation::NonBlockingLockExclusive)
        {
            Ok(()) => {}
            Err(e)
                if e == rustix::io::Errno::OPNOTSUPP
                    || e == rustix::io::Errno::NOSYS
                    || e == rustix::io::Errno::NOLCK => {}
            Err(e) => return Err(e.into()),
        }
        Ok(AtomicFile { tmp, dest: dest.to_owned() })
    }

    /// The open temporary file.
    pub fn file(&self) -> &File {
        self.tmp.as_file()
    }

    /// The open temporary file, for writing.
    pub fn file_mut(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// Renames the temporary file over the destination.
    ///
    /// # Errors
    /// When the rename fails; the temporary file is then removed.
    pub fn commit(self) -> io::Result<()> {
        self.tmp.persist(&self.dest).map(drop).map_err(|e| plain(&e.error))
    }
}

/// Removes `.<name>.lowbit-*.partial` files in `dir` that no live process holds, and the
/// temporary files of such files (`..<name>.lowbit-*.partial.lowbit-*.partial`: a zstd pack is
/// compressed from a plain file written through its own `AtomicFile`).
pub(crate) fn remove_stale(dir: &Path, name: &str) -> io::Result<()> {
    let prefix = format!(".{name}{MARK}");
    let nested = format!(".{prefix}");
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(n) = file_name.to_str() else { continue };
        if !(n.starts_with(&prefix) || n.starts_with(&nested)) || !n.ends_with(SUFFIX) {
            continue;
        }
        let path = entry.path();
        let Ok(f) = File::open(&path) else { continue };
        // Taking the lock proves the run that made the file has ended; keep it while deleting,
        // so that no other cleanup races us for it.
        if rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok() {
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::AtomicFile;
    use std::io::Write;

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn commit_renames_and_drop_removes() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.gguf");
        let mut f = AtomicFile::create(&dest).unwrap();
        f.file_mut().write_all(b"abc").unwrap();
        let tmp = names(dir.path());
        assert_eq!(tmp.len(), 1);
        assert!(tmp[0].starts_with(".a.gguf.lowbit-") && tmp[0].ends_with(".partial"), "{tmp:?}");
        f.commit().unwrap();
        assert_eq!(names(dir.path()), ["a.gguf"]);
        assert_eq!(std::fs::read(&dest).unwrap(), b"abc");

        let f = AtomicFile::create(&dest).unwrap();
        drop(f);
        assert_eq!(names(dir.path()), ["a.gguf"], "an abandoned file is removed");
    }

    #[test]
    fn stale_files_go_and_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("b.gguf");
        // A leftover of a dead run (nobody holds its lock), one of another output, and a live
        // run's file (this process holds its lock through `live`).
        std::fs::write(dir.path().join(".b.gguf.lowbit-dead01.partial"), b"x").unwrap();
        std::fs::write(dir.path().join(".c.gguf.lowbit-dead02.partial"), b"x").unwrap();
        // The temporary file of a dead run's temporary file (a zstd pack's plain stage).
        let nested = "..b.gguf.lowbit-dead03.partial.lowbit-dead04.partial";
        std::fs::write(dir.path().join(nested), b"x").unwrap();
        let live = AtomicFile::create(&dest).unwrap();
        let live_name = names(dir.path())
            .into_iter()
            .find(|n| n.starts_with(".b.gguf.lowbit-") && !n.contains("dead01"))
            .unwrap();
        let second = AtomicFile::create(&dest).unwrap();
        let after = names(dir.path());
        assert!(!after.iter().any(|n| n.contains("dead01")), "{after:?}");
        assert!(!after.iter().any(|n| n.contains("dead03")), "{after:?}");
        assert!(after.contains(&".c.gguf.lowbit-dead02.partial".to_owned()), "{after:?}");
        assert!(after.contains(&live_name), "a running conversion's file is kept: {after:?}");
        drop((live, second));
    }
}
