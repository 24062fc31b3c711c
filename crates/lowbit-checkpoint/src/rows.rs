//! Reading tensors as `f32` rows, a chunk at a time.

use crate::{Checkpoint, Error, StorageType, Tensor};
use lowbit_dtype::{Dtype, GgmlType, decode_to_f32};
use std::ops::Range;

/// The dense dtype equivalent to a dense ggml type.
fn ggml_dense(t: GgmlType) -> Option<Dtype> {
    Some(match t {
        GgmlType::F32 => Dtype::F32,
        GgmlType::F16 => Dtype::F16,
        GgmlType::BF16 => Dtype::BF16,
        GgmlType::F64 => Dtype::F64,
        GgmlType::I8 => Dtype::I8,
        GgmlType::I16 => Dtype::I16,
        GgmlType::I32 => Dtype::I32,
        GgmlType::I64 => Dtype::I64,
        _ => return None,
    })
}

impl Checkpoint {
    /// Decodes rows `rows` of `t` into `out`, which must hold exactly
    /// `(rows.end - rows.start) * t.row_len()` values. A row is the innermost dimension.
    ///
    /// # Errors
    /// When the rows are out of range, `out` has the wrong length, or the storage type cannot be
    /// decoded (block-quantized GGUF types are not decoded yet).
    pub fn read_rows_f32(
        &self,
        t: &Tensor,
        rows: Range<u64>,
        out: &mut [f32],
    ) -> Result<(), Error> {
        let err = |reason: String| Error::Read {
            path: self.file_of(t).to_owned(),
            tensor: t.name.clone(),
            reason,
        };
        if rows.start > rows.end || rows.end > t.n_rows() {
            return Err(err(format!(
                "rows {}..{} out of range (0..{})",
                rows.start,
                rows.end,
                t.n_rows()
            )));
        }
        let n = (rows.end - rows.start) * t.row_len();
        if out.len() as u64 != n {
            return Err(err(format!("buffer holds {} values, {n} needed", out.len())));
        }
        let dtype = match t.ty {
            StorageType::Dense(d) => d,
            StorageType::Ggml(g) => ggml_dense(g)
                .ok_or_else(|| err(format!("decoding {g} blocks to f32 is not supported yet")))?,
        };
        let elem = dtype.size() as u64;
        let start = rows.start * t.row_len() * elem;
        #[expect(clippy::cast_possible_truncation, reason = "within the mapped tensor")]
        let src = &self.raw(t)[start as usize..(start + n * elem) as usize];
        decode_to_f32(dtype, src, out).map_err(|e| err(e.to_string()))
    }

    /// Streams `t` as `f32`, calling `f(first_row, values)` for chunks of at most `chunk_rows`
    /// rows; only one chunk is in memory at a time.
    ///
    /// # Errors
    /// The first error from decoding or from `f`.
    pub fn for_each_rows_f32<E: From<Error>>(
        &self,
        t: &Tensor,
        chunk_rows: u64,
        mut f: impl FnMut(u64, &[f32]) -> Result<(), E>,
    ) -> Result<(), E> {
        let chunk_rows = chunk_rows.max(1);
        let total = t.n_rows();
        let mut buf = Vec::new();
        let mut row = 0;
        while row < total {
            let end = (row + chunk_rows).min(total);
            #[expect(
                clippy::cast_possible_truncation,
                reason = "a chunk fits in memory by construction"
            )]
            buf.resize(((end - row) * t.row_len()) as usize, 0.0);
            self.read_rows_f32(t, row..end, &mut buf)?;
            f(row, &buf)?;
            row = end;
        }
        Ok(())
    }
}
