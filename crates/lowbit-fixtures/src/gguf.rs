//! A minimal GGUF v3 encoder for test inputs, written from the GGUF specification and
//! independent of `lowbit-gguf`: the reader under test never checks files made by its own
//! writer. It knows only what fixtures need: string, `u32` and `u8`-array metadata, and F32
//! and Q8_0 tensors (sizes from ggml's `type_traits`: F32 is 4 bytes per element, Q8_0 34 bytes
//! per 32 elements).

/// A metadata value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Meta {
    /// A UTF-8 string (type 8).
    String(String),
    /// A `u32` (type 4).
    U32(u32),
    /// An array of `u8` (type 9 of type 0).
    U8Array(Vec<u8>),
}

/// The tensor types fixtures use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// `GGML_TYPE_F32` (id 0).
    F32,
    /// `GGML_TYPE_Q8_0` (id 8).
    Q8_0,
}

impl Ty {
    fn id(self) -> u32 {
        match self {
            Ty::F32 => 0,
            Ty::Q8_0 => 8,
        }
    }

    /// Bytes of a row of `ne0` elements (`ne0` a multiple of the block).
    fn row_bytes(self, ne0: u64) -> u64 {
        match self {
            Ty::F32 => 4 * ne0,
            Ty::Q8_0 => ne0 / 32 * 34,
        }
    }
}

/// A tensor info: name, dimensions in ggml order (innermost first), type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Name.
    pub name: String,
    /// Dimensions, ggml order.
    pub dims: Vec<u64>,
    /// Type.
    pub ty: Ty,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The header of a GGUF v3 file (padded to `alignment`) and the length of its data section,
/// tensors laid out in order, each padded to `alignment`.
///
/// # Panics
/// If `alignment` is zero.
#[must_use]
pub fn header(kvs: &[(String, Meta)], tensors: &[TensorSpec], alignment: u64) -> (Vec<u8>, u64) {
    let mut h = b"GGUF".to_vec();
    h.extend_from_slice(&3u32.to_le_bytes());
    h.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    h.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (key, value) in kvs {
        put_str(&mut h, key);
        match value {
            Meta::String(s) => {
                h.extend_from_slice(&8u32.to_le_bytes());
                put_str(&mut h, s);
            }
            Meta::U32(v) => {
                h.extend_from_slice(&4u32.to_le_bytes());
                h.extend_from_slice(&v.to_le_bytes());
            }
            Meta::U8Array(items) => {
                h.extend_from_slice(&9u32.to_le_bytes());
                h.extend_from_slice(&0u32.to_le_bytes());
                h.extend_from_slice(&(items.len() as u64).to_le_bytes());
                h.extend_from_slice(items);
            }
        }
    }
    let mut offset = 0u64;
    for t in tensors {
        put_str(&mut h, &t.name);
        h.extend_from_slice(&u32::try_from(t.dims.len()).expect("a few dims").to_le_bytes());
        for d in &t.dims {
            h.extend_from_slice(&d.to_le_bytes());
        }
        h.extend_from_slice(&t.ty.id().to_le_bytes());
        h.extend_from_slice(&offset.to_le_bytes());
        let size = t.ty.row_bytes(t.dims[0]) * t.dims[1..].iter().product::<u64>();
        offset = (offset + size).next_multiple_of(alignment);
    }
    let align = usize::try_from(alignment).expect("small alignment");
    h.resize(h.len().next_multiple_of(align), 0);
    (h, offset)
}

/// A whole file: the header, then a data section filled with a repeating byte pattern.
#[must_use]
pub fn file(kvs: &[(String, Meta)], tensors: &[TensorSpec], alignment: u64) -> Vec<u8> {
    let (mut out, data_len) = header(kvs, tensors, alignment);
    out.extend((0..data_len).map(|i| (i % 7) as u8));
    out
}

/// The header of a FLUX-shaped GGUF as `llama-quantize` would emit for Q8_0 (2-D weights Q8_0,
/// everything else F32), from torch-order shapes; and its data length. Used for sparse
/// benchmark and inspect inputs.
#[must_use]
pub fn flux_q8_0_header(tensors: &[(String, Vec<u64>)]) -> (Vec<u8>, u64) {
    let kvs = vec![
        ("general.architecture".to_owned(), Meta::String("flux".into())),
        ("general.quantization_version".to_owned(), Meta::U32(2)),
        ("general.file_type".to_owned(), Meta::U32(7)),
    ];
    let specs: Vec<TensorSpec> = tensors
        .iter()
        .map(|(name, shape)| TensorSpec {
            name: name.clone(),
            dims: shape.iter().rev().copied().collect(),
            ty: if shape.len() == 2 { Ty::Q8_0 } else { Ty::F32 },
        })
        .collect();
    header(&kvs, &specs, 32)
}
