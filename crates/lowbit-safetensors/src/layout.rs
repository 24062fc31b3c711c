//! Planning a safetensors file before any data exists: the header bytes and every tensor's
//! offset, so that a writer can stream (or place) the data with positioned writes.

use crate::MAX_HEADER_LEN;
use lowbit_dtype::Dtype;
use serde_json::{Map, Value, json};

/// Why a file cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Two tensors, or a tensor and `__metadata__`, share a name.
    #[error("tensor `{0}` appears twice")]
    Duplicate(String),
    /// A size past what 64-bit offsets describe.
    #[error("tensor `{0}` is too large to describe")]
    TooLarge(String),
    /// The header is above the 100 MB safetensors readers accept.
    #[error("the header would be {0} bytes, above the {MAX_HEADER_LEN}-byte limit readers accept")]
    HeaderTooLarge(u64),
}

/// A planned file.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The 8-byte length and the JSON header, padded with spaces to a multiple of 8.
    pub header: Vec<u8>,
    /// Each tensor's data range, relative to the start of the data section, in the order given.
    pub offsets: Vec<(u64, u64)>,
    /// Bytes of data.
    pub data_len: u64,
}

impl Layout {
    /// Plans a file holding `tensors` (name, dtype, shape) in that order, contiguous, with
    /// string `metadata` in `__metadata__` (omitted when empty).
    ///
    /// # Errors
    /// Duplicate names, sizes that overflow, a header above [`MAX_HEADER_LEN`].
    pub fn new<'a>(
        metadata: &[(String, String)],
        tensors: impl IntoIterator<Item = (&'a str, Dtype, &'a [u64])>,
    ) -> Result<Layout, LayoutError> {
        let mut map = Map::new();
        if !metadata.is_empty() {
            let m: Map<String, Value> =
                metadata.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
            map.insert("__metadata__".to_owned(), Value::Object(m));
        }
        let mut offsets = Vec::new();
        let mut at = 0u64;
        for (name, dtype, shape) in tensors {
            let bytes = shape
                .iter()
                .try_fold(dtype.size() as u64, |a, &d| a.checked_mul(d))
                .ok_or_else(|| LayoutError::TooLarge(name.to_owned()))?;
            let end =
                at.checked_add(bytes).ok_or_else(|| LayoutError::TooLarge(name.to_owned()))?;
            let entry = json!({ "dtype": dtype.name(), "shape": shape, "data_offsets": [at, end] });
            if map.insert(name.to_owned(), entry).is_some() {
                return Err(LayoutError::Duplicate(name.to_owned()));
            }
            offsets.push((at, end));
            at = end;
        }
        // serde_json's map sorts keys; the bytes are a function of the input alone.
        let mut text = serde_json::to_vec(&Value::Object(map)).unwrap_or_default();
        while !text.len().is_multiple_of(8) {
            text.push(b' ');
        }
        if text.len() as u64 > MAX_HEADER_LEN {
            return Err(LayoutError::HeaderTooLarge(text.len() as u64));
        }
        let mut header = (text.len() as u64).to_le_bytes().to_vec();
        header.extend_from_slice(&text);
        Ok(Layout { header, offsets, data_len: at })
    }
}

#[cfg(test)]
mod tests {
    use super::{Layout, LayoutError};
    use crate::Safetensors;
    use lowbit_dtype::Dtype;

    #[test]
    fn planned_files_parse() {
        let meta = [("lowbit.version".to_owned(), "0.1.0".to_owned())];
        let tensors: [(&str, Dtype, &[u64]); 3] =
            [("b", Dtype::BF16, &[2, 3]), ("a", Dtype::U8, &[5]), ("s", Dtype::F32, &[])];
        let l = Layout::new(&meta, tensors).unwrap();
        assert_eq!(l.offsets, vec![(0, 12), (12, 17), (17, 21)]);
        assert_eq!((l.header.len() - 8) % 8, 0);
        let mut file = l.header.clone();
        file.extend((0..l.data_len).map(|i| i as u8));
        let st = Safetensors::parse(&file).unwrap();
        let a = st.tensors().iter().find(|t| t.name == "a").unwrap();
        assert_eq!(st.bytes(a), &[12, 13, 14, 15, 16]);
        // The reference reader agrees.
        let r = safetensors::SafeTensors::deserialize(&file).unwrap();
        assert_eq!(r.tensor("s").unwrap().shape(), &[] as &[usize]);
        let (_, m) = safetensors::SafeTensors::read_metadata(&file).unwrap();
        assert_eq!(m.metadata().as_ref().unwrap()["lowbit.version"], "0.1.0");
    }

    #[test]
    fn errors() {
        let dup: [(&str, Dtype, &[u64]); 2] = [("a", Dtype::U8, &[1]), ("a", Dtype::U8, &[1])];
        assert_eq!(Layout::new(&[], dup).unwrap_err(), LayoutError::Duplicate("a".into()));
        let huge: [(&str, Dtype, &[u64]); 1] = [("h", Dtype::F32, &[u64::MAX / 2, 3])];
        assert_eq!(Layout::new(&[], huge).unwrap_err(), LayoutError::TooLarge("h".into()));
    }
}
