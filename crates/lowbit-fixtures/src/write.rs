//! Serializing generated tensors as safetensors files, single or sharded.

use crate::flux::GenTensor;
use safetensors::tensor::TensorView;
use std::collections::{BTreeMap, HashMap};

/// A safetensors file holding `tensors` as BF16, with `__metadata__ = {"format": "pt"}`.
///
/// Bytes are deterministic: the `safetensors` crate orders tensors by alignment then name, and
/// one metadata key leaves no hash-map order to vary.
///
/// # Panics
/// If a tensor's bytes do not match its shape, which generated tensors never do.
#[must_use]
pub fn safetensors_bytes(tensors: &[GenTensor]) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            let shape = t.shape.iter().map(|&d| usize::try_from(d).expect("small")).collect();
            (
                t.name.clone(),
                TensorView::new(safetensors::Dtype::BF16, shape, &t.data).expect("consistent"),
            )
        })
        .collect();
    let meta = HashMap::from([("format".to_owned(), "pt".to_owned())]);
    safetensors::serialize(views, Some(meta)).expect("in-memory serialization cannot fail")
}

/// A sharded checkpoint in diffusers' layout: `n` shards named
/// `diffusion_pytorch_model-0000i-of-0000n.safetensors` plus
/// `diffusion_pytorch_model.safetensors.index.json`. Tensors are dealt to shards in order,
/// switching when a shard passes its share of the bytes. Returns (file name, bytes) pairs.
///
/// # Panics
/// If `n` is zero.
#[must_use]
pub fn sharded(tensors: &[GenTensor], n: usize) -> Vec<(String, Vec<u8>)> {
    assert!(n > 0, "at least one shard");
    let total: usize = tensors.iter().map(|t| t.data.len()).sum();
    let per_shard = total.div_ceil(n);
    let mut shards: Vec<Vec<GenTensor>> = vec![Vec::new(); n];
    let mut filled = 0;
    for t in tensors {
        let i = (filled / per_shard.max(1)).min(n - 1);
        shards[i].push(t.clone());
        filled += t.data.len();
    }
    let mut files = Vec::new();
    let mut weight_map = BTreeMap::new();
    for (i, shard) in shards.iter().enumerate() {
        let name = format!("diffusion_pytorch_model-{:05}-of-{n:05}.safetensors", i + 1);
        for t in shard {
            weight_map.insert(t.name.clone(), name.clone());
        }
        files.push((name, safetensors_bytes(shard)));
    }
    let index = serde_json::json!({
        "metadata": { "total_size": total },
        "weight_map": weight_map,
    });
    let mut text = serde_json::to_string_pretty(&index).expect("JSON of strings");
    text.push('\n');
    files.push(("diffusion_pytorch_model.safetensors.index.json".to_owned(), text.into_bytes()));
    files
}

/// The header of a BF16 safetensors file holding `tensors` (name, shape), without the data:
/// write it, then extend the file to `header.len() + data_len` to get a sparse stand-in for a
/// real checkpoint that inspects exactly like one. Returns (header bytes, data length).
#[must_use]
pub fn bf16_header(tensors: &[(String, Vec<u64>)]) -> (Vec<u8>, u64) {
    let mut entries = serde_json::Map::new();
    entries.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut offset = 0u64;
    for (name, shape) in tensors {
        let bytes = shape.iter().product::<u64>() * 2;
        entries.insert(
            name.clone(),
            serde_json::json!({"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut header = serde_json::to_string(&entries).expect("JSON").into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    (out, offset)
}

/// Writes `header` to `path` and extends the file to `header.len() + data_len` bytes without
/// writing them: a sparse file that every reader sees at full size, costing no disk.
///
/// # Errors
/// When the file cannot be created or extended.
pub fn sparse_file(path: &std::path::Path, header: &[u8], data_len: u64) -> std::io::Result<()> {
    let f = std::fs::File::create(path)?;
    std::io::Write::write_all(&mut &f, header)?;
    f.set_len(header.len() as u64 + data_len)
}
