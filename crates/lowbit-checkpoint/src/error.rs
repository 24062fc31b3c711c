//! Errors from opening and reading checkpoints.
//!
//! Every message starts with the file's path; for wrapped errors the cause follows through
//! `source()`, so `{:#}` in anyhow prints `path: cause` on one line.

use std::path::PathBuf;

/// Why a checkpoint cannot be opened or a tensor read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused a read, open or map.
    #[error("{}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a valid safetensors file.
    #[error("{}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: lowbit_safetensors::Error,
    },
    /// The file is not a valid GGUF file.
    #[error("{}", path.display())]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: lowbit_gguf::Error,
    },
    /// The file is not a valid zstd pack (`formats/zstd.md`).
    #[error("{}", path.display())]
    Pack {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: lowbit_safetensors::PackError,
    },
    /// A sharded checkpoint's index is malformed or disagrees with its shards.
    #[error("{}: {reason}", path.display())]
    Index {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The path is neither a file lowbit reads nor a directory holding one.
    #[error("{}: {reason}", path.display())]
    NotACheckpoint {
        /// The path.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// A tensor cannot be decoded to f32 (an unsupported storage type, or rows out of range).
    #[error("{}: tensor `{tensor}`: {reason}", path.display())]
    Read {
        /// The file holding the tensor.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// A packed layout whose tensors disagree with its scheme (missing companions, wrong
    /// dtypes or shapes, unreadable markers or `lowbit.schemes` metadata).
    #[error(
        "{}: tensor `{tensor}`: a layout file with inconsistent companion tensors: {reason}",
        path.display()
    )]
    Layout {
        /// The file holding the tensor.
        path: PathBuf,
        /// The weight or companion.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// Scale companions or markers that no layout lowbit reads explains.
    #[error("{}: tensor `{tensor}`: {reason}", path.display())]
    UnknownLayout {
        /// The file holding the tensor.
        path: PathBuf,
        /// The weight or marker.
        tensor: String,
        /// What was found.
        reason: String,
    },
}
