//! Errors from planning and running a conversion.

use std::path::PathBuf;

/// Why a conversion cannot be planned or finished.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The recipe, target or a rule is invalid.
    #[error("{reason}")]
    Recipe {
        /// What is wrong.
        reason: String,
    },
    /// A tensor cannot be converted as asked.
    #[error("tensor `{tensor}`: {reason}")]
    Plan {
        /// The tensor (empty when the problem is not one tensor's).
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// A weight is NaN or infinite.
    #[error(
        "tensor `{tensor}`: non-finite value {value} at index {index:?}; fix the checkpoint or pass --allow-non-finite to write it as is"
    )]
    NonFinite {
        /// The tensor.
        tensor: String,
        /// Index in torch order.
        index: Vec<u64>,
        /// The value.
        value: f32,
    },
    /// Reading the input failed.
    #[error(transparent)]
    Read(#[from] lowbit_checkpoint::Error),
    /// Writing the output failed (the temporary file has been removed).
    #[error("{}: {source}", path.display())]
    Io {
        /// The output path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Stopped by the user; nothing was written at the output path.
    #[error("interrupted; no output written")]
    Cancelled,
}
