//! Checks on the output path, run before any work (and by `--dry-run`, which must refuse what
//! a real run refuses): its extension fits the target, its directory exists and can be written,
//! it is not a directory, and it is none of the input files.

use crate::Error;
use crate::atomic::parent_dir;
use crate::recipe::Target;
use lowbit_checkpoint::Checkpoint;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The file format a target writes and the extension its files carry.
fn format_of(target: &Target) -> (&'static str, &'static str) {
    match target {
        Target::Gguf { .. } => ("GGUF", "gguf"),
        Target::Packed(_) => ("safetensors", "safetensors"),
    }
}

/// Refuses an output path that a conversion to `target` must not write.
///
/// # Errors
/// A contradicting extension (unless `force_extension`), a missing or read-only directory, a
/// directory at the path, or one of `ckpt`'s files at the path (compared by device and inode,
/// so no other spelling of the path gets through: links, `..`, a bind mount).
pub fn check_output(
    ckpt: &Checkpoint,
    output: &Path,
    target: &Target,
    force_extension: bool,
) -> Result<(), Error> {
    let (format, extension) = format_of(target);
    let has_ext = output.extension().is_some_and(|e| e.eq_ignore_ascii_case(extension));
    check_path(ckpt, output, target, (format, extension, has_ext || force_extension))
}

/// [`check_output`] for a zstd pack of a safetensors target (`--compress zstd`), whose name
/// must end in `.safetensors.zst` (so that `zstd -d` names the file it restores
/// `….safetensors`).
///
/// # Errors
/// As [`check_output`].
pub fn check_pack_output(
    ckpt: &Checkpoint,
    output: &Path,
    target: &Target,
    force_extension: bool,
) -> Result<(), Error> {
    let extension = crate::zstd_pack::EXTENSION;
    let name = output.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase());
    let has_ext = name.is_some_and(|n| n.ends_with(&format!(".{extension}")));
    let format = "zstd-packed safetensors";
    check_path(ckpt, output, target, (format, extension, has_ext || force_extension))
}

/// The checks after the extension's: `ext` is (format, extension, whether the name is fine).
fn check_path(
    ckpt: &Checkpoint,
    output: &Path,
    target: &Target,
    (format, extension, ext_ok): (&'static str, &'static str, bool),
) -> Result<(), Error> {
    if !ext_ok {
        return Err(Error::OutputExtension {
            output: output.to_owned(),
            target: target.name(),
            format,
            extension,
        });
    }
    let dir = parent_dir(output);
    let dir_problem = |problem: String| Error::OutputDir {
        output: output.to_owned(),
        dir: dir.to_owned(),
        problem,
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(dir_problem("not a directory".into())),
        Err(e) => return Err(dir_problem(plain_message(&e))),
    }
    if let Err(e) = rustix::fs::access(dir, rustix::fs::Access::WRITE_OK) {
        return Err(dir_problem(plain_message(&std::io::Error::from(e))));
    }
    let Ok(meta) = std::fs::metadata(output) else {
        return Ok(()); // nothing there yet (or a dangling link, which the rename replaces)
    };
    if meta.is_dir() {
        return Err(Error::OutputIsDirectory { output: output.to_owned() });
    }
    let id = (meta.dev(), meta.ino());
    if let Some((input, _)) = ckpt.input_files().find(|(_, i)| *i == id) {
        return Err(Error::OutputIsInput { output: output.to_owned(), input: input.to_owned() });
    }
    Ok(())
}

/// An I/O error's message without Rust's ` (os error N)` suffix.
fn plain_message(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}
