//! Logical weights: stored tensors grouped into the weights they encode.
//!
//! A packed layout stores one weight `[N, K]` as several tensors (`weight`, `weight_scale`,
//! markers); [`Checkpoint::layers`] groups them back, and [`Checkpoint::read_layer_f32`]
//! decodes rows of any layer, dense, GGUF or packed, to `f32`.
//!
//! Recognition (`formats/dequantize-diff.md`), in this order:
//! 1. lowbit's own `__metadata__` key `lowbit.schemes` (`{weight name → scheme}`);
//! 2. bitsandbytes NF4: a `<m>.weight.quant_state.bitsandbytes__nf4` JSON tensor;
//! 3. ComfyUI: a `<m>.comfy_quant` JSON marker naming `float8_e4m3fn`, `float8_e5m2` or `nvfp4`;
//! 4. BFL `fp8r`: an `F8_E4M3` `<m>.weight` with an `F32` `<m>.weight_scale` of one dimension;
//! 5. BFL `nvfp4`: a `U8` `<m>.weight` matrix with a `<m>.weight_scale_2` (as diffusers tells
//!    its two schemes apart);
//! 6. SDNQ `uint4`: a one-dimensional `U8` `<m>.weight` with `<m>.scale` and `<m>.zero_point`
//!    (and `<m>.svd_up`, whose width is the rank), as `sdnq` saves a quantized `Linear`;
//! 7. a plain FP8 matrix (`F8_E4M3`/`F8_E5M2`, no companion) is scheme `fp8`, read as dense.
//!
//! Whichever way a layout is recognised, its tensors must be exactly those
//! [`Scheme::stored`] lists for the weight's logical shape, or the file is refused
//! ([`Error::Layout`]). A `U8`/`I8`/FP8 weight with scale companions that none of these rules
//! explains is refused as [`Error::UnknownLayout`] rather than read as dense codes.

use crate::{Checkpoint, Error, Metadata, StorageType, Tensor};
use lowbit_dtype::Dtype;
use lowbit_layout::Scheme;
use std::collections::{HashMap, HashSet};
use std::ops::Range;

/// The metadata key listing lowbit's packed weights.
pub const SCHEMES_KEY: &str = "lowbit.schemes";
/// Suffix of bitsandbytes' NF4 quant-state tensor (after the module path).
const NF4_STATE: &str = ".weight.quant_state.bitsandbytes__nf4";
/// Suffix of bitsandbytes' FP4 quant-state tensor, which lowbit does not read.
const FP4_STATE: &str = ".weight.quant_state.bitsandbytes__fp4";
/// Largest JSON tensor read (quant state, `comfy_quant`): a few hundred bytes in practice.
const MAX_JSON: u64 = 4096;

/// One logical weight, or one dense tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// Logical weight name (`double_blocks.0.img_attn.qkv.weight`); a dense tensor's own name.
    pub name: String,
    /// Logical shape `[N, K]`, or the dense tensor's shape.
    pub shape: Vec<u64>,
    /// The packed scheme; `None` for dense tensors and GGUF types (read by `read_f32`).
    pub scheme: Option<Scheme>,
    /// Tensor names in [`Scheme::stored`] order, or `[name]` for a dense tensor.
    pub stored: Vec<String>,
}

impl Layer {
    /// Number of rows [`Checkpoint::read_layer_f32`] counts: all dimensions but the innermost.
    #[must_use]
    pub fn n_rows(&self) -> u64 {
        match self.shape.split_last() {
            Some((_, outer)) => outer.iter().product(),
            None => 1,
        }
    }

    /// Elements per row: the innermost dimension (1 for a scalar).
    #[must_use]
    pub fn row_len(&self) -> u64 {
        self.shape.last().copied().unwrap_or(1)
    }

    /// Number of logical elements.
    #[must_use]
    pub fn params(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Whether the weight is stored in a packed layout that needs [`Scheme::decode`] (plain FP8
    /// is a dense dtype and reads as one).
    #[must_use]
    pub fn is_packed(&self) -> bool {
        self.scheme.is_some_and(|s| !matches!(s, Scheme::Fp8 { .. }))
    }
}

/// A JSON object read from a small U8 tensor.
type JsonObject = serde_json::Map<String, serde_json::Value>;

impl Checkpoint {
    /// The logical weights of the checkpoint, in the order of their main (`weight`) tensor.
    ///
    /// # Errors
    /// [`Error::Layout`] for a layout whose tensors disagree with its scheme or metadata that
    /// cannot be read; [`Error::UnknownLayout`] for scale companions no rule explains.
    pub fn layers(&self) -> Result<Vec<Layer>, Error> {
        let mut packed: HashMap<String, Layer> = HashMap::new();
        let mut companions: HashSet<String> = HashSet::new();
        let claim = |layer: Layer, packed: &mut HashMap<String, Layer>, c: &mut HashSet<String>| {
            c.extend(layer.stored.iter().skip(1).cloned());
            // Keyed by the main stored tensor (`weight`, SVDQuant's `qweight`).
            let main = layer.stored.first().cloned().unwrap_or_else(|| layer.name.clone());
            packed.insert(main, layer);
        };
        for (name, scheme) in self.metadata_schemes()? {
            let layer = self.packed_layer(&name, scheme)?;
            claim(layer, &mut packed, &mut companions);
        }
        for t in self.tensors() {
            if let Some(module) = t.name.strip_suffix(NF4_STATE) {
                let weight = format!("{module}.weight");
                if packed.contains_key(&weight) {
                    continue;
                }
                let dq = self.tensor(&format!("{module}.weight.nested_absmax")).is_some();
                let layer = self.packed_layer(&weight, Scheme::Nf4 { double_quant: dq })?;
                claim(layer, &mut packed, &mut companions);
            } else if let Some(module) = t.name.strip_suffix(FP4_STATE) {
                return Err(self.unknown(t, format!(
                    "bitsandbytes FP4 (`{module}.weight` and its quant state) is not a layout lowbit reads; NF4 is"
                )));
            } else if let Some(module) = t.name.strip_suffix(".comfy_quant") {
                let weight = format!("{module}.weight");
                if packed.contains_key(&weight) {
                    continue;
                }
                let marker = self.json_tensor(t)?;
                let format = marker.get("format").and_then(serde_json::Value::as_str);
                let scheme = match format {
                    Some("float8_e4m3fn") => Scheme::parse("comfy:fp8"),
                    Some("float8_e5m2") => Scheme::parse("comfy:fp8:e5m2"),
                    Some("nvfp4") => Some(Scheme::ComfyNvfp4),
                    _ => None,
                };
                let Some(scheme) = scheme else {
                    let what = format.map_or("no `format`".to_owned(), |f| format!("`{f}`"));
                    return Err(self.unknown(t, format!(
                        "ComfyUI format {what} is not one lowbit reads (float8_e4m3fn, float8_e5m2, nvfp4)"
                    )));
                };
                let layer = self.packed_layer(&weight, scheme)?;
                claim(layer, &mut packed, &mut companions);
            }
        }
        for t in self.tensors() {
            let Some(module) = t.name.strip_suffix(".weight") else { continue };
            if packed.contains_key(&t.name) || companions.contains(&t.name) {
                continue;
            }
            let scale = self.tensor(&format!("{module}.weight_scale"));
            let bfl = t.ty == StorageType::Dense(Dtype::F8E4M3)
                && t.shape.len() == 2
                && scale
                    .is_some_and(|s| s.ty == StorageType::Dense(Dtype::F32) && s.shape.len() == 1);
            if bfl {
                let layer = self.packed_layer(&t.name, Scheme::BflFp8)?;
                claim(layer, &mut packed, &mut companions);
                continue;
            }
            let nvfp4 = t.ty == StorageType::Dense(Dtype::U8)
                && t.shape.len() == 2
                && self.tensor(&format!("{module}.weight_scale_2")).is_some();
            if nvfp4 {
                let layer = self.packed_layer(&t.name, Scheme::BflNvfp4)?;
                claim(layer, &mut packed, &mut companions);
                continue;
            }
            let sdnq = t.ty == StorageType::Dense(Dtype::U8)
                && t.shape.len() == 1
                && self.tensor(&format!("{module}.scale")).is_some()
                && self.tensor(&format!("{module}.zero_point")).is_some();
            if sdnq {
                let up = self.tensor(&format!("{module}.svd_up"));
                let rank = up.and_then(|u| u.shape.get(1).copied()).unwrap_or(0);
                let rank = u16::try_from(rank).map_err(|_| {
                    self.unknown(t, format!("SDNQ rank {rank} of `{module}.svd_up` is too large"))
                })?;
                let layer = self.packed_layer(&t.name, Scheme::Sdnq { rank })?;
                claim(layer, &mut packed, &mut companions);
                continue;
            }
            let coded = matches!(
                t.ty,
                StorageType::Dense(Dtype::U8 | Dtype::I8 | Dtype::F8E4M3 | Dtype::F8E5M2)
            );
            let companion = ["weight_scale", "weight_zero", "weight_scale_2"]
                .iter()
                .find(|c| self.tensor(&format!("{module}.{c}")).is_some());
            if let (true, Some(c)) = (coded, companion) {
                return Err(self.unknown(t, format!(
                    "{} weight with a `{module}.{c}` companion, but neither `{SCHEMES_KEY}` metadata nor a known marker (comfy_quant, bitsandbytes quant state) says which packed layout it is",
                    t.ty
                )));
            }
        }
        let mut out = Vec::with_capacity(self.tensors().len());
        for t in self.tensors() {
            if let Some(layer) = packed.remove(&t.name) {
                out.push(layer);
            } else if !companions.contains(&t.name) {
                out.push(dense_layer(t));
            }
        }
        Ok(out)
    }

    /// Decodes rows `rows` of `layer` into `out` (`rows.len() · layer.row_len()` values).
    ///
    /// Dense and GGUF tensors are read with positioned reads. Packed weights are decoded by
    /// [`Scheme::decode`] from the memory-mapped tensors, so only the pages holding the rows
    /// asked for (and the companions) are read from disk.
    ///
    /// # Errors
    /// Rows out of range, a wrong `out` length, a layer of another checkpoint, or stored
    /// values the scheme rejects.
    pub fn read_layer_f32(
        &self,
        layer: &Layer,
        rows: Range<u64>,
        out: &mut [f32],
    ) -> Result<(), Error> {
        let tensors = layer
            .stored
            .iter()
            .map(|n| {
                self.tensor(n).ok_or_else(|| Error::Read {
                    path: self.path().to_owned(),
                    tensor: layer.name.clone(),
                    reason: format!("stored tensor `{n}` is not in this checkpoint"),
                })
            })
            .collect::<Result<Vec<&Tensor>, Error>>()?;
        let Some(&main) = tensors.first() else {
            return Err(Error::Read {
                path: self.path().to_owned(),
                tensor: layer.name.clone(),
                reason: "the layer lists no stored tensor".into(),
            });
        };
        let scheme = match layer.scheme {
            Some(s) if layer.is_packed() => s,
            _ => return self.read_rows_f32(main, rows, out),
        };
        let bad = |reason: String| Error::Read {
            path: self.file_of(main).to_owned(),
            tensor: layer.name.clone(),
            reason,
        };
        let [n, k] = layer.shape[..] else {
            return Err(bad(format!(
                "a packed weight must have two dimensions, not {:?}",
                layer.shape
            )));
        };
        if rows.start > rows.end || rows.end > n {
            return Err(bad(format!("rows {}..{} out of range (0..{n})", rows.start, rows.end)));
        }
        let need = (rows.end - rows.start).checked_mul(k);
        if need != Some(out.len() as u64) {
            return Err(bad(format!(
                "buffer holds {} values, {} rows of {k} needed",
                out.len(),
                rows.end - rows.start
            )));
        }
        let bytes: Vec<&[u8]> =
            tensors.iter().map(|t| self.try_raw(t)).collect::<Result<_, _>>()?;
        scheme.decode(&bytes, n, k, rows, out).map_err(|e| bad(format!("{scheme}: {e}")))
    }

    /// `lowbit.schemes` from the safetensors metadata, in name order.
    fn metadata_schemes(&self) -> Result<Vec<(String, Scheme)>, Error> {
        let Metadata::Safetensors(meta) = self.metadata() else { return Ok(Vec::new()) };
        let Some(text) = meta.get(SCHEMES_KEY) else { return Ok(Vec::new()) };
        let bad = |reason: String| Error::Layout {
            path: self.files().next().unwrap_or(self.path()).to_owned(),
            tensor: format!("__metadata__.{SCHEMES_KEY}"),
            reason,
        };
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let Some(map) = json.as_object() else {
            return Err(bad("not a JSON object of weight name → scheme".into()));
        };
        let mut out = Vec::with_capacity(map.len());
        for (name, v) in map {
            let s = v.as_str().unwrap_or_default();
            let Some(scheme) = Scheme::parse(s) else {
                return Err(bad(format!(
                    "`{name}` has scheme {v}, not one of {}",
                    Scheme::NAMES.join(", ")
                )));
            };
            out.push((name.clone(), scheme));
        }
        Ok(out)
    }

    /// The layer of weight `name` stored as `scheme`, checked against [`Scheme::stored`].
    fn packed_layer(&self, name: &str, scheme: Scheme) -> Result<Layer, Error> {
        let path = || self.files().next().unwrap_or(self.path()).to_owned();
        // The tensor the logical shape is read from: `weight`, or SVDQuant's `qweight`.
        let primary = match (scheme, name.strip_suffix(".weight")) {
            (Scheme::Svdq { .. }, Some(module)) => format!("{module}.qweight"),
            _ => name.to_owned(),
        };
        let Some(weight) = self.tensor(&primary) else {
            return Err(Error::Layout {
                path: path(),
                tensor: name.to_owned(),
                reason: format!("listed as {scheme} but not stored"),
            });
        };
        let bad = |reason: String| Error::Layout {
            path: self.file_of(weight).to_owned(),
            tensor: name.to_owned(),
            reason,
        };
        let Some(module) = name.strip_suffix(".weight") else {
            return Err(bad(format!("a {scheme} weight's name must end in `.weight`")));
        };
        let (n, k, source, offset) = self.logical_shape(weight, module, scheme)?;
        scheme
            .fits(n, k)
            .map_err(|e| bad(format!("logical shape [{n}, {k}] cannot be {scheme}: {e}")))?;
        let expected = scheme.stored(n, k, source, offset);
        let mut stored = Vec::with_capacity(expected.len());
        for s in &expected {
            let tname = format!("{module}.{}", s.suffix);
            let Some(t) = self.tensor(&tname) else {
                return Err(bad(format!(
                    "{scheme} of [{n}, {k}] needs `{tname}`, which is missing"
                )));
            };
            // The quant-state JSON's length depends on how its writer spelled numbers; it is
            // parsed, not measured.
            let json_len_free = s.suffix.ends_with("bitsandbytes__nf4") && t.shape.len() == 1;
            // ComfyUI views NVFP4 block scales as E4M3, so they load from U8 as well.
            let u8_scales = scheme == Scheme::ComfyNvfp4
                && s.suffix == "weight_scale"
                && t.ty == StorageType::Dense(Dtype::U8);
            let dtype_ok = t.ty == StorageType::Dense(s.dtype) || u8_scales;
            if !dtype_ok || (t.shape != s.shape && !json_len_free) {
                return Err(bad(format!(
                    "{scheme} of [{n}, {k}] needs `{tname}` as {} {:?}, found {} {:?}",
                    s.dtype, s.shape, t.ty, t.shape
                )));
            }
            stored.push(tname);
        }
        Ok(Layer { name: name.to_owned(), shape: vec![n, k], scheme: Some(scheme), stored })
    }

    /// The logical `[N, K]` of a stored weight, the source dtype and NF4's nested offset.
    fn logical_shape(
        &self,
        weight: &Tensor,
        module: &str,
        scheme: Scheme,
    ) -> Result<(u64, u64, Dtype, Option<f32>), Error> {
        let bad = |reason: String| Error::Layout {
            path: self.file_of(weight).to_owned(),
            tensor: weight.name.clone(),
            reason,
        };
        if let Scheme::Sdnq { .. } = scheme {
            return self.sdnq_shape(weight, module);
        }
        if let Scheme::Nf4 { .. } = scheme {
            let state_name = format!("{module}{NF4_STATE}");
            let Some(state) = self.tensor(&state_name) else {
                return Err(bad(format!("{scheme} needs `{state_name}`, which is missing")));
            };
            return self.nf4_state(state);
        }
        let shape = match (scheme, &weight.shape[..]) {
            // Timestep groups lead SVDQuant's tensors.
            (Scheme::Svdq { groups, .. }, [g, rest @ ..])
                if groups > 1 && *g == u64::from(groups) =>
            {
                rest
            }
            (_, s) => s,
        };
        let [a, b] = shape[..] else {
            return Err(bad(format!("a {scheme} weight must be a matrix, not {:?}", weight.shape)));
        };
        let (n, k) = match scheme {
            Scheme::Ternary { .. } => (Some(a), b.checked_mul(4)),
            Scheme::Bitnet => (a.checked_mul(4), Some(b)),
            Scheme::Int4 { .. } | Scheme::Svdq { .. } => (Some(a), b.checked_mul(2)),
            Scheme::BflNvfp4 | Scheme::ComfyNvfp4 => (Some(a), b.checked_mul(2)),
            _ => (Some(a), Some(b)),
        };
        let (Some(n), Some(k)) = (n, k) else {
            return Err(bad(format!("shape {:?} overflows as {scheme}", weight.shape)));
        };
        Ok((n, k, Dtype::BF16, None))
    }

    /// SDNQ's logical `[N, K]`: N from `<m>.scale`'s first dimension, K from the flat
    /// weight's `N·K/2` bytes.
    fn sdnq_shape(
        &self,
        weight: &Tensor,
        module: &str,
    ) -> Result<(u64, u64, Dtype, Option<f32>), Error> {
        let bad = |reason: String| Error::Layout {
            path: self.file_of(weight).to_owned(),
            tensor: weight.name.clone(),
            reason,
        };
        let scale_name = format!("{module}.scale");
        let Some(scale) = self.tensor(&scale_name) else {
            return Err(bad(format!("SDNQ needs `{scale_name}`, which is missing")));
        };
        let ([bytes], Some(&n)) = (&weight.shape[..], scale.shape.first()) else {
            return Err(bad(format!(
                "an SDNQ weight is flat with a `{scale_name}` of rows, not {:?} and {:?}",
                weight.shape, scale.shape
            )));
        };
        let k = bytes.checked_mul(2).filter(|_| n > 0).map(|e| (e / n, e % n));
        let Some((k, 0)) = k else {
            return Err(bad(format!(
                "{bytes} bytes of codes are not {n} whole rows (`{scale_name}` has {n})"
            )));
        };
        Ok((n, k, Dtype::BF16, None))
    }

    /// bitsandbytes' quant state: logical shape, source dtype, nested offset.
    fn nf4_state(&self, state: &Tensor) -> Result<(u64, u64, Dtype, Option<f32>), Error> {
        let bad = |reason: String| Error::Layout {
            path: self.file_of(state).to_owned(),
            tensor: state.name.clone(),
            reason,
        };
        let json = self.json_tensor(state)?;
        if json.get("quant_type").and_then(serde_json::Value::as_str) != Some("nf4") {
            return Err(bad("quant state does not say `\"quant_type\": \"nf4\"`".into()));
        }
        if json.get("blocksize").and_then(serde_json::Value::as_u64)
            != Some(lowbit_layout::NF4_BLOCK)
        {
            return Err(bad(format!(
                "quant state's blocksize is not {}",
                lowbit_layout::NF4_BLOCK
            )));
        }
        let shape: Option<Vec<u64>> = json
            .get("shape")
            .and_then(serde_json::Value::as_array)
            .and_then(|a| a.iter().map(serde_json::Value::as_u64).collect());
        let Some([n, k]) = shape.as_deref().and_then(|s| <[u64; 2]>::try_from(s).ok()) else {
            return Err(bad("quant state's `shape` is not two non-negative integers".into()));
        };
        if n.checked_mul(k).is_none() {
            return Err(bad(format!("quant state's shape [{n}, {k}] overflows")));
        }
        let source = match json.get("dtype").and_then(serde_json::Value::as_str) {
            Some("bfloat16") => Dtype::BF16,
            Some("float16") => Dtype::F16,
            Some("float32") => Dtype::F32,
            other => {
                return Err(bad(format!(
                    "quant state's dtype {other:?} is not bfloat16, float16 or float32"
                )));
            }
        };
        #[expect(clippy::cast_possible_truncation, reason = "bitsandbytes' offset is an f32")]
        let offset =
            json.get("nested_offset").and_then(serde_json::Value::as_f64).map(|o| o as f32);
        Ok((n, k, source, offset))
    }

    /// A small U8 tensor holding a UTF-8 JSON object.
    fn json_tensor(&self, t: &Tensor) -> Result<JsonObject, Error> {
        let bad = |reason: String| Error::Layout {
            path: self.file_of(t).to_owned(),
            tensor: t.name.clone(),
            reason,
        };
        if t.ty != StorageType::Dense(Dtype::U8) || t.shape.len() != 1 {
            return Err(bad(format!(
                "a JSON marker must be U8 of one dimension, found {} {:?}",
                t.ty, t.shape
            )));
        }
        if t.bytes > MAX_JSON {
            return Err(bad(format!("{} bytes of JSON, above the {MAX_JSON}-byte limit", t.bytes)));
        }
        let raw = self.raw(t);
        let text = std::str::from_utf8(raw)
            .map_err(|e| bad(format!("not UTF-8 (at byte {})", e.valid_up_to())))?;
        match serde_json::from_str(text) {
            Ok(serde_json::Value::Object(m)) => Ok(m),
            Ok(_) => Err(bad("JSON that is not an object".into())),
            Err(e) => Err(bad(format!("not valid JSON: {e}"))),
        }
    }

    fn unknown(&self, t: &Tensor, reason: String) -> Error {
        Error::UnknownLayout { path: self.file_of(t).to_owned(), tensor: t.name.clone(), reason }
    }
}

/// A dense tensor as a layer; plain FP8 matrices are scheme `fp8` for display.
fn dense_layer(t: &Tensor) -> Layer {
    let scheme = match t.ty {
        StorageType::Dense(Dtype::F8E4M3) if t.shape.len() == 2 => Scheme::parse("fp8"),
        StorageType::Dense(Dtype::F8E5M2) if t.shape.len() == 2 => Scheme::parse("fp8:e5m2"),
        _ => None,
    };
    Layer { name: t.name.clone(), shape: t.shape.clone(), scheme, stored: vec![t.name.clone()] }
}

#[cfg(test)]
#[path = "layers_tests.rs"]
mod tests;
