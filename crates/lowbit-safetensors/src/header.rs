//! Parsing and validating the JSON header.

use crate::Error;
use lowbit_dtype::Dtype;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::ops::Range;

/// The largest header accepted, as in the `safetensors` crate.
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// One tensor described by the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    /// Tensor name as written.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape, outermost dimension first (torch order).
    pub shape: Vec<u64>,
    /// Byte range relative to the start of the data section.
    pub data: Range<u64>,
}

impl TensorEntry {
    /// Number of elements (1 for a scalar).
    #[must_use]
    pub fn numel(&self) -> u64 {
        // Checked at parse time, so this cannot overflow.
        self.shape.iter().product()
    }
}

/// A parsed safetensors file borrowing its bytes.
#[derive(Debug)]
pub struct Safetensors<'a> {
    buf: &'a [u8],
    data_start: u64,
    tensors: Vec<TensorEntry>,
    metadata: BTreeMap<String, String>,
}

impl<'a> Safetensors<'a> {
    /// Parses and validates the header of `buf`; tensor bytes are not touched.
    ///
    /// # Errors
    /// Any [`Error`] variant; each names the offending tensor where there is one.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        let Header { data_start, tensors, metadata } = Header::parse(buf, buf.len() as u64)?;
        Ok(Safetensors { buf, data_start, tensors, metadata })
    }

    /// Tensors in data order (ascending offset).
    #[must_use]
    pub fn tensors(&self) -> &[TensorEntry] {
        &self.tensors
    }

    /// The string map under `__metadata__` (empty when absent).
    #[must_use]
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Absolute offset of the data section in the buffer.
    #[must_use]
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// The bytes of one tensor, borrowed from the buffer.
    #[must_use]
    pub fn bytes(&self, entry: &TensorEntry) -> &'a [u8] {
        #[expect(clippy::cast_possible_truncation, reason = "validated against buf.len()")]
        let range = (self.data_start + entry.data.start) as usize
            ..(self.data_start + entry.data.end) as usize;
        &self.buf[range]
    }
}

/// A validated header, owning its entries: what [`Safetensors::parse`] checks, for a file whose
/// data is not in memory (a zstd pack holds the header in its first frame and tells the file's
/// length from its seek table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Absolute offset of the data section: 8 + the header length.
    pub data_start: u64,
    /// Tensors in data order (ascending offset).
    pub tensors: Vec<TensorEntry>,
    /// The string map under `__metadata__` (empty when absent).
    pub metadata: BTreeMap<String, String>,
}

impl Header {
    /// Parses the header at the start of `prefix` and checks it against a file of `file_len`
    /// bytes: the header must lie within `prefix`, and the tensors must tile the rest of the
    /// file exactly. Only `prefix` is read.
    ///
    /// # Errors
    /// Any [`Error`] variant, as [`Safetensors::parse`].
    pub fn parse(prefix: &[u8], file_len: u64) -> Result<Header, Error> {
        // The bytes both the prefix and the file hold.
        let available = file_len.min(prefix.len() as u64);
        let Some(len_bytes) = prefix.first_chunk::<8>().filter(|_| available >= 8) else {
            return Err(Error::TooShort { len: available });
        };
        let header_len = u64::from_le_bytes(*len_bytes);
        if header_len > MAX_HEADER_LEN {
            return Err(Error::HeaderTooLarge { header_len, limit: MAX_HEADER_LEN });
        }
        if header_len > available - 8 {
            return Err(Error::HeaderPastEnd { header_len, available: available - 8 });
        }
        let data_start = 8 + header_len;
        #[expect(clippy::cast_possible_truncation, reason = "bounded by prefix.len()")]
        let header = &prefix[8..data_start as usize];
        let text = std::str::from_utf8(header)
            .map_err(|e| Error::HeaderNotUtf8 { offset: e.valid_up_to() as u64 })?;
        let Entries(entries) = serde_json::from_str(text)
            .map_err(|e| Error::HeaderNotJson { message: e.to_string() })?;

        let mut seen = HashSet::with_capacity(entries.len());
        let mut tensors = Vec::with_capacity(entries.len());
        let mut metadata = BTreeMap::new();
        for (name, value) in entries {
            if !seen.insert(name.clone()) {
                return Err(Error::DuplicateTensor { name });
            }
            if name == "__metadata__" {
                metadata = parse_metadata(value)?;
            } else {
                tensors.push(parse_entry(name, &value)?);
            }
        }
        check_layout(&mut tensors, file_len - data_start)?;
        Ok(Header { data_start, tensors, metadata })
    }
}

/// Header entries in file order, duplicates kept so that they can be reported.
struct Entries(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut v = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    v.push(entry);
                }
                Ok(Entries(v))
            }
        }
        d.deserialize_map(V)
    }
}

fn parse_metadata(value: Value) -> Result<BTreeMap<String, String>, Error> {
    let Value::Object(map) = value else {
        return Err(Error::BadMetadata { reason: "not a JSON object".into() });
    };
    map.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            other => Err(Error::BadMetadata {
                reason: format!("value of `{k}` is {}, not a string", json_kind(&other)),
            }),
        })
        .collect()
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_entry(name: String, value: &Value) -> Result<TensorEntry, Error> {
    let bad = |reason: String| Error::BadEntry { name: name.clone(), reason };
    let Value::Object(obj) = value else {
        return Err(bad(format!("entry is {}, not an object", json_kind(value))));
    };
    let dtype_str = match obj.get("dtype") {
        Some(Value::String(s)) => s,
        Some(other) => return Err(bad(format!("dtype is {}, not a string", json_kind(other)))),
        None => return Err(bad("missing `dtype`".into())),
    };
    let u64_list = |field: &str| -> Result<Vec<u64>, Error> {
        match obj.get(field) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_u64()
                        .ok_or_else(|| bad(format!("`{field}` holds {v}, not an unsigned integer")))
                })
                .collect(),
            Some(other) => Err(bad(format!("`{field}` is {}, not an array", json_kind(other)))),
            None => Err(bad(format!("missing `{field}`"))),
        }
    };
    let shape = u64_list("shape")?;
    let offsets = u64_list("data_offsets")?;
    let [begin, end] = offsets[..] else {
        return Err(bad(format!("`data_offsets` has {} numbers, not 2", offsets.len())));
    };
    let Some(dtype) = Dtype::from_name(dtype_str) else {
        return Err(Error::UnknownDtype { name, dtype: dtype_str.clone() });
    };
    // Zero dimensions are skipped, so that every partial product of the shape, in any order,
    // fits in 64 bits too (an empty `[0, 2^40, 2^40]` would otherwise pass).
    let bytes = shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .and_then(|n| n.checked_mul(dtype.size() as u64));
    let Some(expected) = bytes else {
        return Err(Error::ShapeOverflow { name, shape });
    };
    let expected = if shape.contains(&0) { 0 } else { expected };
    if end < begin {
        return Err(Error::ReversedOffsets { name, begin, end });
    }
    if end - begin != expected {
        return Err(Error::SizeMismatch { name, dtype, shape, expected, actual: end - begin });
    }
    Ok(TensorEntry { name, dtype, shape, data: begin..end })
}

/// Sorts tensors by offset and checks that they tile `[0, data_len)` exactly.
fn check_layout(tensors: &mut [TensorEntry], data_len: u64) -> Result<(), Error> {
    // Zero-sized tensors may sit anywhere inside the data section; order them before others that
    // start at the same offset so that the tiling check below sees them as empty.
    tensors.sort_by(|a, b| {
        (a.data.start, a.data.end, &a.name).cmp(&(b.data.start, b.data.end, &b.name))
    });
    for t in tensors.iter() {
        if t.data.end > data_len {
            return Err(Error::OutOfBounds {
                name: t.name.clone(),
                begin: t.data.start,
                end: t.data.end,
                data_len,
            });
        }
    }
    let mut covered = 0u64;
    let mut last_name = "";
    for t in tensors.iter() {
        if t.data.start < covered {
            return Err(Error::Overlap {
                name: t.name.clone(),
                begin: t.data.start,
                end: t.data.end,
                other: last_name.to_owned(),
                other_end: covered,
            });
        }
        if t.data.start > covered {
            return Err(Error::Hole { offset: covered, len: t.data.start - covered });
        }
        if t.data.end > covered {
            covered = t.data.end;
            last_name = &t.name;
        }
    }
    if covered < data_len {
        return Err(Error::Hole { offset: covered, len: data_len - covered });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
