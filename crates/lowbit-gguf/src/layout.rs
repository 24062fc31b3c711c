//! Laying out a GGUF file before any tensor data exists.
//!
//! [`Layout::new`] takes the metadata and the list of tensors (name, ggml dimensions, type),
//! computes every tensor's size from the block table and its aligned offset, and encodes the
//! header. A writer can then stream tensor data in order, padding between tensors, without the
//! zero-fill-then-seek pass that `gguf-rs` makes.

use crate::value::Value;
use crate::{MAX_DIMS, TensorInfo};
use lowbit_dtype::GgmlType;

/// Why a layout cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A tensor row is not a whole number of blocks.
    #[error("tensor `{name}`: row length {ne0} is not a multiple of the {ty} block size {block}")]
    NotBlockMultiple {
        /// Tensor name.
        name: String,
        /// Row length.
        ne0: u64,
        /// Type.
        ty: GgmlType,
        /// Block size.
        block: usize,
    },
    /// Zero or more than four dimensions, or a size that overflows.
    #[error("tensor `{name}`: dimensions {dims:?} are not representable in ggml")]
    BadDims {
        /// Tensor name.
        name: String,
        /// Dimensions, ggml order.
        dims: Vec<u64>,
    },
    /// `alignment` is not a power of two, or is too large to pad a header to.
    #[error("alignment {0} is not a power of two below 2^31")]
    BadAlignment(u64),
    /// A metadata array read from another file: its elements are not in memory.
    #[error(
        "metadata `{key}`: an array read from a file cannot be written; rebuild it with `Array::new`"
    )]
    StoredArray {
        /// The key.
        key: String,
    },
    /// The data section would pass 2^63 bytes at this tensor.
    #[error("tensor `{name}`: the data section would exceed 2^63 bytes")]
    TooLarge {
        /// Tensor name.
        name: String,
    },
}

/// A planned GGUF file: header bytes and where each tensor's data goes.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Header, metadata and tensor infos, padded to the alignment: the file's first bytes.
    pub header: Vec<u8>,
    /// Tensors in file order with offsets relative to the end of `header`.
    pub tensors: Vec<TensorInfo>,
    /// Alignment of each tensor's data.
    pub alignment: u64,
    /// Length of the data section, including the padding after the last tensor.
    pub data_len: u64,
}

impl Layout {
    /// Plans a GGUF v3 file. If `alignment` is not 32, a `general.alignment` entry must be among
    /// `kvs` for readers to find the data; this function does not add it.
    ///
    /// # Errors
    /// When a tensor's dimensions do not fit its type or the alignment is not a power of two.
    pub fn new(
        kvs: &[(String, Value)],
        tensors: impl IntoIterator<Item = (String, Vec<u64>, GgmlType)>,
        alignment: u64,
    ) -> Result<Layout, LayoutError> {
        if !alignment.is_power_of_two() || alignment > 1 << 31 {
            return Err(LayoutError::BadAlignment(alignment));
        }
        if let Some((key, _)) =
            kvs.iter().find(|(_, v)| matches!(v, Value::Array(a) if a.built_items().is_none()))
        {
            return Err(LayoutError::StoredArray { key: key.clone() });
        }
        let mut infos = Vec::new();
        let mut offset = 0u64;
        for (name, dims, ty) in tensors {
            if dims.is_empty() || dims.len() > MAX_DIMS {
                return Err(LayoutError::BadDims { name, dims });
            }
            let Some(row) = ty.row_bytes(dims[0]) else {
                if dims[0] % ty.block_size() as u64 != 0 {
                    return Err(LayoutError::NotBlockMultiple {
                        name,
                        ne0: dims[0],
                        ty,
                        block: ty.block_size(),
                    });
                }
                return Err(LayoutError::BadDims { name, dims });
            };
            let size = dims[1..].iter().try_fold(row, |acc, &d| acc.checked_mul(d));
            let Some(size) = size.filter(|&s| s <= i64::MAX as u64) else {
                return Err(LayoutError::BadDims { name, dims });
            };
            let next = offset.checked_add(size).and_then(|e| e.checked_next_multiple_of(alignment));
            let Some(next) = next.filter(|&n| n <= i64::MAX as u64) else {
                return Err(LayoutError::TooLarge { name });
            };
            infos.push(TensorInfo { name, dims, ty, offset, size });
            offset = next;
        }

        let mut h = Vec::new();
        h.extend_from_slice(b"GGUF");
        h.extend_from_slice(&3u32.to_le_bytes());
        h.extend_from_slice(&(infos.len() as u64).to_le_bytes());
        h.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
        for (key, value) in kvs {
            put_string(&mut h, key);
            h.extend_from_slice(&value.type_id().to_le_bytes());
            put_value(&mut h, value);
        }
        for t in &infos {
            put_string(&mut h, &t.name);
            #[expect(clippy::cast_possible_truncation, reason = "at most MAX_DIMS")]
            h.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                h.extend_from_slice(&d.to_le_bytes());
            }
            h.extend_from_slice(&t.ty.id().to_le_bytes());
            h.extend_from_slice(&t.offset.to_le_bytes());
        }
        #[expect(clippy::cast_possible_truncation, reason = "alignment is small")]
        h.resize(h.len().next_multiple_of(alignment as usize), 0);
        Ok(Layout { header: h, tensors: infos, alignment, data_len: offset })
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_string(out, s),
        Value::Array(a) => {
            out.extend_from_slice(&a.element_type().to_le_bytes());
            let items = a.built_items().unwrap_or_default();
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}
