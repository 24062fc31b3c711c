//! Why stored tensors cannot be decoded, and the checks every decoder shares.

use std::ops::Range;

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

/// `a · b`, or an error naming the shape when it overflows `u64`.
pub(crate) fn mul(a: u64, b: u64) -> Result<u64, Error> {
    a.checked_mul(b).ok_or_else(|| Error::Value {
        tensor: "weight".into(),
        reason: format!("shape [{a}, {b}] overflows"),
    })
}

/// Checks the arguments every decoder shares: `count` stored tensors, `rows` inside `0..n`,
/// and `out` of `rows.len() · k` values. Returns the row range as `usize`.
pub(crate) fn check_request(
    stored: &[&[u8]],
    count: usize,
    n: u64,
    k: u64,
    rows: &Range<u64>,
    out: &[f32],
) -> Result<Range<usize>, Error> {
    let value = |reason: String| Err(Error::Value { tensor: "weight".into(), reason });
    if stored.len() != count {
        return value(format!("{} stored tensors where the layout has {count}", stored.len()));
    }
    if rows.start > rows.end || rows.end > n {
        return value(format!("rows {rows:?} are not inside the weight's {n} rows"));
    }
    let want = mul(rows.end - rows.start, k)?;
    if out.len() as u64 != want {
        return value(format!("output holds {} values where rows {rows:?} need {want}", out.len()));
    }
    match (usize::try_from(rows.start), usize::try_from(rows.end)) {
        (Ok(a), Ok(b)) => Ok(a..b),
        _ => value(format!("rows {rows:?} do not fit in memory")),
    }
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
