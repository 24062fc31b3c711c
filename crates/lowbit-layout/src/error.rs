//! Why stored tensors cannot be decoded.

/// A stored weight whose tensors disagree with its scheme.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A stored tensor has the wrong number of bytes for the weight's shape.
    #[error("`{tensor}` holds {actual} bytes where the layout needs {expected}")]
    Length {
        /// The stored tensor's suffix (`weight_scale`).
        tensor: String,
        /// Bytes the layout needs.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },
    /// A stored value the layout does not allow (a code out of range, bad JSON).
    #[error("`{tensor}`: {reason}")]
    Value {
        /// The stored tensor's suffix.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
}

/// Checks that `bytes` has exactly `expected` bytes.
///
/// # Errors
/// [`Error::Length`] naming `tensor`.
pub fn check_len(tensor: &str, bytes: &[u8], expected: u64) -> Result<(), Error> {
    if bytes.len() as u64 == expected {
        Ok(())
    } else {
        Err(Error::Length { tensor: tensor.to_owned(), expected, actual: bytes.len() as u64 })
    }
}
