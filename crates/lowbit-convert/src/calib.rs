//! Calibration statistics for SVDQuant smoothing: the per-input-channel absmax of every linear
//! layer's input, per timestep group (`formats/calibration.md`).
//!
//! [`Calibration::open`] reads and validates the whole file (written by
//! `scripts/collect_stats.py`), maps diffusers module names onto BFL weights (modules feeding one
//! fused weight read the same input, so their statistics combine by an elementwise max), and
//! hands out each layer's `G × K` values.
//!
//! Memory is bounded by the file's size: the file is read once, and every tensor's length is
//! checked by the safetensors reader against the bytes present before anything is allocated.

use crate::Error;
use lowbit_dtype::Dtype;
use lowbit_safetensors::{Safetensors, TensorEntry};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The `__metadata__` key holding the JSON description.
const KEY: &str = "lowbit.calibration";

/// The prefix ComfyUI-style BFL checkpoints put before every name.
const PREFIX: &str = "model.diffusion_model.";

/// A validated calibration statistics file.
#[derive(Debug)]
pub struct Calibration {
    path: PathBuf,
    groups: usize,
    boundaries: Vec<f64>,
    metadata: String,
    /// BFL module name (or the name as stored when it maps to nothing) → G × K values.
    layers: BTreeMap<String, Layer>,
}

/// One layer's statistics and the stored tensor it first came from (for error messages).
#[derive(Debug)]
struct Layer {
    from: String,
    values: Vec<f32>,
}

/// How the tensors of a file are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Naming {
    Diffusers,
    Bfl,
}

impl Calibration {
    /// Opens and validates a statistics file.
    ///
    /// # Errors
    /// [`Error::CalibrationIo`] if it cannot be read, [`Error::CalibrationFile`] if it is not
    /// safetensors, [`Error::CalibrationMetadata`] for missing or wrong `lowbit.calibration`
    /// metadata, [`Error::CalibrationTensor`] for a tensor formats/calibration.md does not allow.
    pub fn open(path: &Path) -> Result<Calibration, Error> {
        let file = path.to_path_buf();
        let bytes = std::fs::read(path)
            .map_err(|source| Error::CalibrationIo { file: file.clone(), source })?;
        let st = Safetensors::parse(&bytes)
            .map_err(|source| Error::CalibrationFile { file: file.clone(), source })?;
        let meta_err = |reason: String| Error::CalibrationMetadata { file: file.clone(), reason };
        let metadata = st
            .metadata()
            .get(KEY)
            .ok_or_else(|| meta_err("missing; this is not a calibration statistics file".into()))?
            .clone();
        let (naming, groups, boundaries) = parse_metadata(&metadata).map_err(meta_err)?;

        let mut layers: BTreeMap<String, Layer> = BTreeMap::new();
        for entry in st.tensors() {
            let tensor_err = |reason: String| Error::CalibrationTensor {
                file: file.clone(),
                tensor: entry.name.clone(),
                reason,
            };
            let values =
                read_values(entry, st.bytes(entry), groups, &boundaries).map_err(tensor_err)?;
            let key = layer_key(&entry.name, naming);
            match layers.get_mut(&key) {
                None => {
                    layers.insert(key, Layer { from: entry.name.clone(), values });
                }
                Some(layer) if layer.values.len() == values.len() => {
                    for (a, b) in layer.values.iter_mut().zip(&values) {
                        *a = a.max(*b);
                    }
                }
                Some(layer) => {
                    return Err(tensor_err(format!(
                        "has {} channels but `{}`, which feeds the same weight `{key}`, has {}",
                        values.len() / groups,
                        layer.from,
                        layer.values.len() / groups
                    )));
                }
            }
        }
        Ok(Calibration { path: file, groups, boundaries, metadata, layers })
    }

    /// The number of timestep groups G.
    #[must_use]
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// The G + 1 group boundaries, descending timesteps on the 0..1000 scale.
    #[must_use]
    pub fn boundaries(&self) -> &[f64] {
        &self.boundaries
    }

    /// The raw `lowbit.calibration` JSON.
    #[must_use]
    pub fn metadata_json(&self) -> &str {
        &self.metadata
    }

    /// The statistics of the layer whose BFL weight is `bfl_weight` (e.g.
    /// `double_blocks.0.img_attn.qkv.weight`), G×K values row-major, or None if the file has
    /// none. A `model.diffusion_model.` prefix is ignored; a name with no entry is tried once more
    /// as a diffusers weight name mapped onto BFL.
    #[must_use]
    pub fn absmax(&self, bfl_weight: &str) -> Option<&[f32]> {
        let name = bfl_weight.strip_prefix(PREFIX).unwrap_or(bfl_weight);
        let module = name.strip_suffix(".weight").unwrap_or(name);
        if let Some(layer) = self.layers.get(module) {
            return Some(&layer.values);
        }
        let key = layer_key(module, Naming::Diffusers);
        self.layers.get(&key).map(|l| l.values.as_slice())
    }

    /// The path it was read from.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The key a stored module name is kept under: its BFL module for a diffusers name that maps
/// onto FLUX, the name itself otherwise.
fn layer_key(module: &str, naming: Naming) -> String {
    if naming == Naming::Diffusers
        && let Some((bfl, _)) = lowbit_arch::flux::diffusers_to_bfl(&format!("{module}.weight"))
    {
        return bfl.strip_suffix(".weight").map_or_else(|| bfl.clone(), str::to_owned);
    }
    module.to_owned()
}

/// Checks the `lowbit.calibration` JSON: naming, G and the boundaries.
fn parse_metadata(text: &str) -> Result<(Naming, usize, Vec<f64>), String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(obj) = value else {
        return Err(format!("not a JSON object: {}", short(text)));
    };
    let field = |name: &str| -> Result<&Value, String> {
        obj.get(name).ok_or_else(|| format!("no `{name}` field"))
    };
    let version = field("version")?;
    if version.as_u64() != Some(1) {
        return Err(format!("version {version} is not 1, the one lowbit reads"));
    }
    let statistic = field("statistic")?;
    if statistic.as_str() != Some("absmax") {
        return Err(format!("statistic {statistic} is not \"absmax\", the one lowbit reads"));
    }
    let naming = match field("naming")?.as_str() {
        Some("diffusers") => Naming::Diffusers,
        Some("bfl") => Naming::Bfl,
        _ => return Err(format!("naming {} is not \"diffusers\" or \"bfl\"", obj["naming"])),
    };
    let groups = group_count(&obj)?;
    let bounds = field("boundaries")?
        .as_array()
        .ok_or_else(|| format!("boundaries {} is not an array", obj["boundaries"]))?;
    if bounds.len() != groups + 1 {
        return Err(format!(
            "{} boundaries for {groups} groups; there must be groups + 1",
            bounds.len()
        ));
    }
    let mut boundaries = Vec::with_capacity(bounds.len());
    for b in bounds {
        match b.as_f64() {
            Some(x) if x.is_finite() => boundaries.push(x),
            _ => return Err(format!("boundary {b} is not a finite number")),
        }
    }
    if let Some(w) = boundaries.windows(2).find(|w| w[0] <= w[1]) {
        return Err(format!(
            "boundaries {boundaries:?} are not strictly descending ({} then {})",
            w[0], w[1]
        ));
    }
    Ok((naming, groups, boundaries))
}

/// `groups`: an integer ≥ 1.
fn group_count(obj: &Map<String, Value>) -> Result<usize, String> {
    let g = obj.get("groups").ok_or("no `groups` field")?;
    match g.as_u64().and_then(|n| usize::try_from(n).ok()) {
        Some(n) if (1..usize::MAX).contains(&n) => Ok(n),
        _ => Err(format!("groups {g} is not an integer of at least 1")),
    }
}

/// The start of a long text, for a one-line message.
fn short(text: &str) -> String {
    let mut s: String = text.chars().take(60).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s
}

/// A tensor's G × K values, checked: F32, `[G, K]` (or `[K]` for G = 1), K ≥ 1, finite and
/// non-negative, and no all-zero group in a layer that has data in another group.
fn read_values(
    entry: &TensorEntry,
    bytes: &[u8],
    groups: usize,
    boundaries: &[f64],
) -> Result<Vec<f32>, String> {
    if entry.dtype != Dtype::F32 {
        return Err(format!("stored as {}; statistics are F32", entry.dtype.name()));
    }
    let k = match entry.shape[..] {
        [k] if groups == 1 => k,
        [g, k] if g == groups as u64 => k,
        [_] | [_, _] => {
            return Err(format!(
                "has shape {:?}; with {groups} groups it must be [{groups}, K]{}",
                entry.shape,
                if groups == 1 { " or [K]" } else { "" }
            ));
        }
        _ => {
            return Err(format!("has shape {:?}; statistics are 1-D or 2-D", entry.shape));
        }
    };
    if k == 0 {
        return Err(format!("has shape {:?}, no channels", entry.shape));
    }
    // The safetensors reader checked that the bytes are numel × 4 and inside the file.
    if bytes.len() as u64 != entry.numel() * 4 {
        return Err(format!("holds {} bytes for shape {:?}", bytes.len(), entry.shape));
    }
    let values: Vec<f32> =
        bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let k = usize::try_from(k).map_err(|_| format!("has shape {:?}", entry.shape))?;
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite() || **v < 0.0) {
        return Err(format!(
            "value {v} at group {}, channel {}; absmax statistics are finite and non-negative",
            i / k,
            i % k
        ));
    }
    let empty: Vec<bool> =
        values.chunks_exact(k).map(|row| row.iter().all(|v| *v == 0.0)).collect();
    if let Some(g) = empty.iter().position(|e| *e)
        && empty.iter().any(|e| !e)
    {
        return Err(format!(
            "group {g} (timesteps {} >= t > {}) is all zeros: no calibration call fell in it; \
             collect with more steps or fewer groups",
            boundaries[g],
            boundaries[g + 1]
        ));
    }
    Ok(values)
}

#[cfg(test)]
#[path = "calib_tests.rs"]
mod tests;
