//! Writing to stdout and stderr, and writing output files atomically.

use std::io::Write;
use std::path::Path;

/// Whether an error chain ends in a closed pipe (`lowbit inspect … | head`).
pub(crate) fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Prints an error and its causes on one line.
pub(crate) fn error_line(e: &anyhow::Error) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "error: {e:#}");
}

/// Writes a one-line note to stderr (what was written where), leaving stdout to the result.
pub(crate) fn note(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}");
}

/// Writes text to stdout.
pub(crate) fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Writes `bytes` to `path` through lowbit's one atomic writer ([`lowbit_convert::AtomicFile`]),
/// so that `path` never holds a partial file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let fail = |e: std::io::Error| anyhow::Error::new(e).context(path.display().to_string());
    let mut f = lowbit_convert::AtomicFile::create(path).map_err(fail)?;
    f.file_mut().write_all(bytes).map_err(fail)?;
    f.commit().map_err(fail)
}

/// A mistake in what was asked that the command line, not a library, finds (exit code 2).
#[derive(Debug)]
pub(crate) struct Usage(pub(crate) String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}
