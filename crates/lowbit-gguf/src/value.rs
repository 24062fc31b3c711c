//! GGUF metadata values.
//!
//! Scalars and strings are decoded when the header is parsed. Arrays are not: a reader records
//! where an array's elements lie in the file and decodes them on demand ([`Array::items`]), so a
//! header holding a ten-million-element array costs a few words of memory, not ten million
//! [`Value`]s.

use std::fmt;

/// GGUF metadata value type ids, as in the spec.
pub mod type_id {
    /// `u8`.
    pub const U8: u32 = 0;
    /// `i8`.
    pub const I8: u32 = 1;
    /// `u16`.
    pub const U16: u32 = 2;
    /// `i16`.
    pub const I16: u32 = 3;
    /// `u32`.
    pub const U32: u32 = 4;
    /// `i32`.
    pub const I32: u32 = 5;
    /// `f32`.
    pub const F32: u32 = 6;
    /// One-byte boolean.
    pub const BOOL: u32 = 7;
    /// Length-prefixed UTF-8 string.
    pub const STRING: u32 = 8;
    /// Typed array.
    pub const ARRAY: u32 = 9;
    /// `u64`.
    pub const U64: u32 = 10;
    /// `i64`.
    pub const I64: u32 = 11;
    /// `f64`.
    pub const F64: u32 = 12;

    /// The spec's name of a type id (`u8`, `string`, …), or `None` outside the spec.
    #[must_use]
    pub const fn name(id: u32) -> Option<&'static str> {
        Some(match id {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            BOOL => "bool",
            STRING => "string",
            ARRAY => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
            _ => return None,
        })
    }

    /// Bytes of one element of a fixed-size type; `None` for strings, arrays and unknown ids.
    #[must_use]
    pub const fn fixed_size(id: u32) -> Option<u64> {
        Some(match id {
            U8 | I8 | BOOL => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 => 8,
            _ => return None,
        })
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `u8`.
    U8(u8),
    /// `i8`.
    I8(i8),
    /// `u16`.
    U16(u16),
    /// `i16`.
    I16(i16),
    /// `u32`.
    U32(u32),
    /// `i32`.
    I32(i32),
    /// `f32`.
    F32(f32),
    /// Boolean.
    Bool(bool),
    /// String.
    String(String),
    /// An array; all elements share one type.
    Array(Array),
    /// `u64`.
    U64(u64),
    /// `i64`.
    I64(i64),
    /// `f64`.
    F64(f64),
}

/// A typed array: built in memory by a writer, or a reference into the file for a reader.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    element_type: u32,
    len: u64,
    repr: Repr,
}

#[derive(Debug, Clone, PartialEq)]
enum Repr {
    /// Elements to write.
    Built(Vec<Value>),
    /// Elements already validated in a file: `bytes` bytes starting at `offset`.
    Stored { offset: usize, bytes: usize },
}

impl Array {
    /// An array to write. Every item should have type `element_type`.
    #[must_use]
    pub fn new(element_type: u32, items: Vec<Value>) -> Array {
        Array { element_type, len: items.len() as u64, repr: Repr::Built(items) }
    }

    /// An array whose `len` elements of `element_type` lie validated at `offset..offset + bytes`
    /// of the file being read.
    pub(crate) fn stored(element_type: u32, len: u64, offset: usize, bytes: usize) -> Array {
        Array { element_type, len, repr: Repr::Stored { offset, bytes } }
    }

    /// Type id of the elements.
    #[must_use]
    pub fn element_type(&self) -> u32 {
        self.element_type
    }

    /// Number of elements.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the array has no elements.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes the elements take in the file (0 for an array built in memory).
    #[must_use]
    pub fn stored_bytes(&self) -> u64 {
        match self.repr {
            Repr::Stored { bytes, .. } => bytes as u64,
            Repr::Built(_) => 0,
        }
    }

    /// The elements, decoded one at a time. `file` is the buffer the array was parsed from; it is
    /// not used for arrays built in memory. Elements that cannot be decoded (a different buffer
    /// was passed) end the iteration early.
    pub fn items<'b>(&'b self, file: &'b [u8]) -> Box<dyn Iterator<Item = Value> + 'b> {
        match &self.repr {
            Repr::Built(items) => Box::new(items.iter().cloned()),
            Repr::Stored { offset, bytes } => {
                let data = offset
                    .checked_add(*bytes)
                    .and_then(|end| file.get(*offset..end))
                    .unwrap_or_default();
                let ty = self.element_type;
                let mut rest = data;
                Box::new((0..self.len).map_while(move |_| {
                    let (v, used) = decode(ty, rest)?;
                    rest = &rest[used..];
                    Some(v)
                }))
            }
        }
    }

    pub(crate) fn built_items(&self) -> Option<&[Value]> {
        match &self.repr {
            Repr::Built(items) => Some(items),
            Repr::Stored { .. } => None,
        }
    }
}

/// Decodes one element of `ty` from the front of `b`: the value and the bytes it used.
pub(crate) fn decode(ty: u32, b: &[u8]) -> Option<(Value, usize)> {
    fn arr<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
        b.first_chunk::<N>().copied()
    }
    Some(match ty {
        type_id::U8 => (Value::U8(arr::<1>(b)?[0]), 1),
        type_id::I8 => (Value::I8(i8::from_le_bytes(arr(b)?)), 1),
        type_id::BOOL => (Value::Bool(arr::<1>(b)?[0] != 0), 1),
        type_id::U16 => (Value::U16(u16::from_le_bytes(arr(b)?)), 2),
        type_id::I16 => (Value::I16(i16::from_le_bytes(arr(b)?)), 2),
        type_id::U32 => (Value::U32(u32::from_le_bytes(arr(b)?)), 4),
        type_id::I32 => (Value::I32(i32::from_le_bytes(arr(b)?)), 4),
        type_id::F32 => (Value::F32(f32::from_le_bytes(arr(b)?)), 4),
        type_id::U64 => (Value::U64(u64::from_le_bytes(arr(b)?)), 8),
        type_id::I64 => (Value::I64(i64::from_le_bytes(arr(b)?)), 8),
        type_id::F64 => (Value::F64(f64::from_le_bytes(arr(b)?)), 8),
        type_id::STRING => {
            let len = usize::try_from(u64::from_le_bytes(arr(b)?)).ok()?;
            let s = b.get(8..8usize.checked_add(len)?)?;
            (Value::String(std::str::from_utf8(s).ok()?.to_owned()), 8 + len)
        }
        _ => return None,
    })
}

impl Value {
    /// The GGUF type id of this value.
    #[must_use]
    pub fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => type_id::U8,
            Value::I8(_) => type_id::I8,
            Value::U16(_) => type_id::U16,
            Value::I16(_) => type_id::I16,
            Value::U32(_) => type_id::U32,
            Value::I32(_) => type_id::I32,
            Value::F32(_) => type_id::F32,
            Value::Bool(_) => type_id::BOOL,
            Value::String(_) => type_id::STRING,
            Value::Array(_) => type_id::ARRAY,
            Value::U64(_) => type_id::U64,
            Value::I64(_) => type_id::I64,
            Value::F64(_) => type_id::F64,
        }
    }

    /// The spec's name of this value's type (`u32`, `string`, `array`, …).
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        type_id::name(self.type_id()).unwrap_or("?")
    }

    /// The value as an unsigned integer, when it is a non-negative integer of any width.
    #[must_use]
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a string slice, when it is a string.
    #[must_use]
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    /// A short rendering of a scalar or string; an array shows its type and length only (its
    /// elements need the file: [`Array::items`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::U8(v) => write!(f, "{v}"),
            Value::I8(v) => write!(f, "{v}"),
            Value::U16(v) => write!(f, "{v}"),
            Value::I16(v) => write!(f, "{v}"),
            Value::U32(v) => write!(f, "{v}"),
            Value::I32(v) => write!(f, "{v}"),
            Value::F32(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::String(s) => write!(f, "{s:?}"),
            Value::U64(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
            Value::Array(a) => {
                write!(f, "[{}; {}]", type_id::name(a.element_type).unwrap_or("?"), a.len)
            }
        }
    }
}
