//! Parsing and validating a GGUF header: magic, counts, metadata, tensor infos, data layout.
//!
//! Every count and length read from the file is checked against the bytes that remain before it
//! is used to size an allocation, so a hostile header cannot make us allocate more than the file.

use crate::value::{Array, Value, decode, type_id};
use crate::{DEFAULT_ALIGNMENT, Error, MAX_DIMS};
use lowbit_dtype::GgmlType;
use std::collections::HashSet;
use std::fmt;

/// Hard cap on tensors per file (FLUX has 780; the largest LLMs a few thousand).
pub const MAX_TENSORS: u64 = 1 << 20;
/// Hard cap on metadata entries per file.
pub const MAX_KVS: u64 = 1 << 20;

/// Smallest possible tensor info: name length, one-dimension count, type, offset.
const MIN_TENSOR_INFO: u64 = 8 + 4 + 8 + 4 + 8;
/// Smallest possible metadata entry: key length, type, a one-byte value.
const MIN_KV: u64 = 8 + 4 + 1;

/// One tensor described by the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name.
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the innermost (row length).
    pub dims: Vec<u64>,
    /// Storage type.
    pub ty: GgmlType,
    /// Data offset relative to the start of the data section.
    pub offset: u64,
    /// Data size in bytes, from the ggml block table.
    pub size: u64,
}

impl TensorInfo {
    /// Shape in torch order (outermost first): the ggml dimensions reversed.
    #[must_use]
    pub fn shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }

    /// Number of elements.
    #[must_use]
    pub fn numel(&self) -> u64 {
        // Checked at parse time.
        self.dims.iter().product()
    }
}

/// A parsed GGUF file borrowing its bytes.
#[derive(Debug)]
pub struct Gguf<'a> {
    buf: &'a [u8],
    version: u32,
    alignment: u64,
    data_start: u64,
    kvs: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
}

/// What is being read, for error messages; formatted only on error.
enum Ctx<'c> {
    Header(&'static str),
    KvKey(u64),
    KvValue(&'c str),
    TensorName(u64),
    Tensor(&'c str, &'static str),
}

impl fmt::Display for Ctx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ctx::Header(field) => write!(f, "header {field}"),
            Ctx::KvKey(i) => write!(f, "key of metadata entry {i}"),
            Ctx::KvValue(key) => write!(f, "metadata `{key}`"),
            Ctx::TensorName(i) => write!(f, "name of tensor info {i}"),
            Ctx::Tensor(name, field) => write!(f, "tensor `{name}` {field}"),
        }
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, ctx: &Ctx<'_>) -> Result<&'a [u8], Error> {
        if n > self.remaining() {
            return Err(Error::Truncated {
                what: ctx.to_string(),
                offset: self.pos as u64,
                needed: n,
                file_len: self.buf.len() as u64,
            });
        }
        #[expect(clippy::cast_possible_truncation, reason = "n <= remaining, which is a usize")]
        let out = &self.buf[self.pos..self.pos + n as usize];
        self.pos += out.len();
        Ok(out)
    }

    fn array<const N: usize>(&mut self, ctx: &Ctx<'_>) -> Result<[u8; N], Error> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64, ctx)?);
        Ok(a)
    }

    fn u32(&mut self, ctx: &Ctx<'_>) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.array(ctx)?))
    }

    fn u64(&mut self, ctx: &Ctx<'_>) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.array(ctx)?))
    }

    fn string(&mut self, ctx: &Ctx<'_>) -> Result<String, Error> {
        let offset = self.pos as u64;
        let len = self.u64(ctx)?;
        if len > self.remaining() {
            return Err(Error::StringPastEnd {
                what: ctx.to_string(),
                offset,
                len,
                file_len: self.buf.len() as u64,
            });
        }
        let bytes = self.take(len, ctx)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| Error::InvalidUtf8 { what: ctx.to_string() })
    }

    /// Reads one value of type `ty`. Arrays are validated and recorded, not decoded.
    fn value(&mut self, ty: u32, key: &str) -> Result<Value, Error> {
        let ctx = Ctx::KvValue(key);
        if ty == type_id::ARRAY {
            return self.stored_array(key);
        }
        let start = self.pos;
        if ty == type_id::STRING {
            return Ok(Value::String(self.string(&ctx)?));
        }
        let Some(size) = type_id::fixed_size(ty) else {
            return Err(Error::BadValueType {
                key: key.to_owned(),
                reason: format!("unknown value type id {ty}"),
            });
        };
        let bytes = self.take(size, &ctx)?;
        let (v, _) = decode(ty, bytes).ok_or_else(|| Error::BadValueType {
            key: key.to_owned(),
            reason: format!("value at offset {start} cannot be decoded"),
        })?;
        Ok(v)
    }

    /// Validates an array (element type, count, every element's bytes) without decoding it.
    fn stored_array(&mut self, key: &str) -> Result<Value, Error> {
        let ctx = Ctx::KvValue(key);
        let element_type = self.u32(&ctx)?;
        let count = self.u64(&ctx)?;
        let too_long = |remaining| Error::ArrayTooLong { key: key.to_owned(), count, remaining };
        let start = self.pos;
        match element_type {
            type_id::ARRAY => {
                return Err(Error::BadValueType {
                    key: key.to_owned(),
                    reason: "nested arrays are not supported".into(),
                });
            }
            type_id::STRING => {
                // Each string is at least its 8-byte length.
                if count.checked_mul(8).is_none_or(|n| n > self.remaining()) {
                    return Err(too_long(self.remaining()));
                }
                for _ in 0..count {
                    let len = self.u64(&ctx)?;
                    if len > self.remaining() {
                        return Err(Error::StringPastEnd {
                            what: ctx.to_string(),
                            offset: self.pos as u64 - 8,
                            len,
                            file_len: self.buf.len() as u64,
                        });
                    }
                    let bytes = self.take(len, &ctx)?;
                    if std::str::from_utf8(bytes).is_err() {
                        return Err(Error::InvalidUtf8 { what: ctx.to_string() });
                    }
                }
            }
            ty => {
                let Some(size) = type_id::fixed_size(ty) else {
                    return Err(Error::BadValueType {
                        key: key.to_owned(),
                        reason: format!("unknown array element type id {ty}"),
                    });
                };
                let bytes = count.checked_mul(size).filter(|&n| n <= self.remaining());
                let Some(bytes) = bytes else {
                    return Err(too_long(self.remaining()));
                };
                self.take(bytes, &ctx)?;
            }
        }
        Ok(Value::Array(Array::stored(element_type, count, start, self.pos - start)))
    }
}

impl<'a> Gguf<'a> {
    /// Parses and validates the header of `buf`; tensor bytes are not touched.
    ///
    /// # Errors
    /// Any [`Error`] variant; each names the metadata key or tensor where there is one.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        let magic = &buf[..buf.len().min(4)];
        if magic != b"GGUF" {
            return Err(Error::BadMagic { found: magic.to_vec() });
        }
        let mut c = Cursor { buf, pos: 4 };
        let version = c.u32(&Ctx::Header("version"))?;
        if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
            return Err(Error::BigEndian);
        }
        if version != 2 && version != 3 {
            return Err(Error::UnsupportedVersion { version });
        }
        let n_tensors = c.u64(&Ctx::Header("tensor count"))?;
        let n_kvs = c.u64(&Ctx::Header("metadata count"))?;
        let remaining = c.remaining();
        let max_kvs = (remaining / MIN_KV).min(MAX_KVS);
        if n_kvs > max_kvs {
            return Err(Error::TooManyKvs { count: n_kvs, max: max_kvs, remaining, cap: MAX_KVS });
        }
        let max_tensors =
            (remaining.saturating_sub(n_kvs * MIN_KV) / MIN_TENSOR_INFO).min(MAX_TENSORS);
        if n_tensors > max_tensors {
            return Err(Error::TooManyTensors {
                count: n_tensors,
                max: max_tensors,
                remaining,
                cap: MAX_TENSORS,
            });
        }

        #[expect(clippy::cast_possible_truncation, reason = "capped above")]
        let mut kvs: Vec<(String, Value)> = Vec::with_capacity(n_kvs as usize);
        let mut keys = HashSet::with_capacity(kvs.capacity());
        for i in 0..n_kvs {
            let key = c.string(&Ctx::KvKey(i))?;
            let ty = c.u32(&Ctx::KvValue(&key))?;
            let value = c.value(ty, &key)?;
            if !keys.insert(key.clone()) {
                return Err(Error::DuplicateKey { key });
            }
            kvs.push((key, value));
        }
        let alignment = match kvs.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, Value::U32(a))) if a.is_power_of_two() => u64::from(*a),
            Some((_, v)) => {
                return Err(Error::BadAlignment { value: format!("{v} ({})", v.type_name()) });
            }
        };

        #[expect(clippy::cast_possible_truncation, reason = "capped above")]
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut names = HashSet::with_capacity(tensors.capacity());
        for i in 0..n_tensors {
            let t = read_tensor_info(&mut c, i, alignment)?;
            if !names.insert(t.name.clone()) {
                return Err(Error::DuplicateTensor { name: t.name });
            }
            tensors.push(t);
        }
        let data_start = (c.pos as u64).next_multiple_of(alignment);
        // A file with tensors must reach its (aligned) data section, even if every tensor is
        // empty: their bytes are borrowed from there.
        let data_len = match (buf.len() as u64).checked_sub(data_start) {
            Some(n) => n,
            None => match tensors.first() {
                Some(t) => {
                    return Err(Error::OutOfBounds {
                        name: t.name.clone(),
                        begin: t.offset,
                        end: t.offset.saturating_add(t.size),
                        data_len: 0,
                    });
                }
                None => 0,
            },
        };
        check_layout(&tensors, data_len)?;
        Ok(Gguf { buf, version, alignment, data_start, kvs, tensors })
    }

    /// The GGUF version (2 or 3).
    #[must_use]
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Data alignment (`general.alignment`, 32 by default).
    #[must_use]
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute offset of the data section.
    #[must_use]
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// Metadata entries in file order. Arrays are references into the buffer: decode them
    /// with [`Array::items`](crate::Array::items) and [`Gguf::buffer`].
    #[must_use]
    pub fn kvs(&self) -> &[(String, Value)] {
        &self.kvs
    }

    /// The metadata entries, moved out (tensor infos stay readable through [`Gguf::tensors`]
    /// until then, so take them first).
    #[must_use]
    pub fn into_kvs(self) -> Vec<(String, Value)> {
        self.kvs
    }

    /// The whole buffer the file was parsed from.
    #[must_use]
    pub fn buffer(&self) -> &'a [u8] {
        self.buf
    }

    /// One metadata value by key.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kvs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Tensor infos in file order.
    #[must_use]
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The bytes of one tensor, borrowed from the buffer.
    #[must_use]
    pub fn bytes(&self, t: &TensorInfo) -> &'a [u8] {
        // Validated against the buffer when parsed; a `TensorInfo` from elsewhere gets nothing.
        let range = usize::try_from(self.data_start + t.offset)
            .ok()
            .and_then(|start| Some(start..start.checked_add(usize::try_from(t.size).ok()?)?));
        range.and_then(|r| self.buf.get(r)).unwrap_or_default()
    }
}

fn read_tensor_info(c: &mut Cursor<'_>, i: u64, alignment: u64) -> Result<TensorInfo, Error> {
    let name = c.string(&Ctx::TensorName(i))?;
    let n_dims = c.u32(&Ctx::Tensor(&name, "dimension count"))?;
    if n_dims == 0 || n_dims as usize > MAX_DIMS {
        return Err(Error::BadDimCount { name, n_dims, max: MAX_DIMS });
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(c.u64(&Ctx::Tensor(&name, "dimensions"))?);
    }
    let id = c.u32(&Ctx::Tensor(&name, "type"))?;
    let offset = c.u64(&Ctx::Tensor(&name, "offset"))?;
    let Some(ty) = GgmlType::from_id(id) else {
        return Err(Error::UnknownType { name, id });
    };
    // ggml keeps sizes in int64_t: refuse anything above i64::MAX. Zero dimensions are skipped,
    // so that every partial product of the dimensions, in any order, fits too (an empty tensor
    // of 2^40 × 2^40 × 0 would otherwise pass and overflow whoever counts its rows).
    let numel = dims
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64);
    if numel.is_none() {
        return Err(Error::ShapeOverflow { name, dims });
    }
    let row_bytes = ty.row_bytes(dims[0]);
    let Some(row_bytes) = row_bytes else {
        if dims[0] % ty.block_size() as u64 != 0 {
            return Err(Error::NotBlockMultiple {
                name,
                ne0: dims[0],
                ty: ty.name(),
                block: ty.block_size(),
            });
        }
        return Err(Error::ShapeOverflow { name, dims });
    };
    let size = dims[1..]
        .iter()
        .try_fold(row_bytes, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64);
    let Some(size) = size else {
        return Err(Error::ShapeOverflow { name, dims });
    };
    if offset % alignment != 0 {
        return Err(Error::Misaligned { name, offset, alignment });
    }
    Ok(TensorInfo { name, dims, ty, offset, size })
}

/// Checks that every tensor lies inside the data section and that none overlap.
/// Gaps are allowed: writers pad each tensor to the alignment.
fn check_layout(tensors: &[TensorInfo], data_len: u64) -> Result<(), Error> {
    let mut order: Vec<&TensorInfo> = tensors.iter().collect();
    order.sort_by_key(|t| (t.offset, t.size));
    let mut prev: Option<(&str, u64)> = None;
    for t in order {
        let end = t.offset.checked_add(t.size).filter(|&e| e <= data_len);
        let Some(end) = end else {
            return Err(Error::OutOfBounds {
                name: t.name.clone(),
                begin: t.offset,
                end: t.offset.saturating_add(t.size),
                data_len,
            });
        };
        if let Some((other, other_end)) = prev
            && t.offset < other_end
            && t.size > 0
        {
            return Err(Error::Overlap {
                name: t.name.clone(),
                begin: t.offset,
                end,
                other: other.to_owned(),
                other_end,
            });
        }
        if prev.is_none_or(|(_, e)| end > e) {
            prev = Some((&t.name, end));
        }
    }
    Ok(())
}
