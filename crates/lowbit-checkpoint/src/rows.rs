//! Reading tensors as `f32`, a chunk of rows or a range of elements at a time.

use crate::{Checkpoint, Error, StorageType, Tensor};
use lowbit_dtype::{Dtype, GgmlType, decode_to_f32, dequantize};
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
    /// decoded.
    pub fn read_rows_f32(
        &self,
        t: &Tensor,
        rows: Range<u64>,
        out: &mut [f32],
    ) -> Result<(), Error> {
        if rows.start > rows.end || rows.end > t.n_rows() {
            let reason =
                format!("rows {}..{} out of range (0..{})", rows.start, rows.end, t.n_rows());
            return Err(self.read_error(t, reason));
        }
        self.read_f32(t, rows.start * t.row_len()..rows.end * t.row_len(), out)
    }

    /// Decodes elements `elems` (in row-major order) of `t` into `out`. For block-quantized GGUF
    /// tensors the range must start and end on block boundaries.
    ///
    /// Data is read with positioned reads, not through the memory map, so resident memory stays
    /// at the size of `out` however much of the checkpoint is streamed.
    ///
    /// # Errors
    /// When the range is out of bounds or not block-aligned, `out` has the wrong length, the read
    /// fails, or the storage type cannot be decoded.
    pub fn read_f32(&self, t: &Tensor, elems: Range<u64>, out: &mut [f32]) -> Result<(), Error> {
        self.read_f32_with(t, elems, out, &mut Vec::new())
    }

    /// [`Checkpoint::read_f32`] with a caller-owned scratch buffer for the raw bytes, so that a
    /// loop of reads allocates once.
    ///
    /// # Errors
    /// As [`Checkpoint::read_f32`].
    pub fn read_f32_with(
        &self,
        t: &Tensor,
        elems: Range<u64>,
        out: &mut [f32],
        scratch: &mut Vec<u8>,
    ) -> Result<(), Error> {
        if elems.start > elems.end || elems.end > t.params {
            let reason =
                format!("elements {}..{} out of range (0..{})", elems.start, elems.end, t.params);
            return Err(self.read_error(t, reason));
        }
        let n = elems.end - elems.start;
        if out.len() as u64 != n {
            return Err(
                self.read_error(t, format!("buffer holds {} values, {n} needed", out.len()))
            );
        }
        let (block, type_size, dense): (u64, u64, Option<Dtype>) = match t.ty {
            StorageType::Dense(d) => (1, d.size() as u64, Some(d)),
            StorageType::Ggml(g) => (g.block_size() as u64, g.type_size() as u64, ggml_dense(g)),
        };
        if !elems.start.is_multiple_of(block) || !elems.end.is_multiple_of(block) {
            let reason = format!(
                "elements {}..{} do not fall on {block}-element block boundaries",
                elems.start, elems.end
            );
            return Err(self.read_error(t, reason));
        }
        let start = elems.start / block * type_size;
        let end = elems.end / block * type_size;
        #[expect(clippy::cast_possible_truncation, reason = "a read is as large as `out`")]
        scratch.resize((end - start) as usize, 0);
        let bytes = scratch.as_mut_slice();
        self.read_raw_at(t, start, bytes)?;
        let decoded = match (dense, t.ty) {
            (Some(d), _) => decode_to_f32(d, bytes, out).map_err(|e| e.to_string()),
            (None, StorageType::Ggml(g)) => dequantize(g, bytes, out).map_err(|e| e.to_string()),
            (None, StorageType::Dense(d)) => Err(format!("{d} cannot be decoded")),
        };
        decoded.map_err(|reason| self.read_error(t, reason))
    }

    /// Reads bytes of `t` starting `offset` bytes into its data, with a positioned read.
    ///
    /// # Errors
    /// When the range leaves the tensor or the read fails.
    pub fn read_raw_at(&self, t: &Tensor, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        if offset.checked_add(buf.len() as u64).is_none_or(|end| end > t.bytes) {
            let reason = format!("bytes {offset}..+{} out of range (0..{})", buf.len(), t.bytes);
            return Err(self.read_error(t, reason));
        }
        self.source(t)
            .read_at(t.offset + offset, buf)
            .map_err(|source| Error::Io { path: self.file_of(t).to_owned(), source })
    }

    fn read_error(&self, t: &Tensor, reason: String) -> Error {
        Error::Read { path: self.file_of(t).to_owned(), tensor: t.name.clone(), reason }
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
            let end = row.saturating_add(chunk_rows).min(total);
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
