//! Deciding, before any data is read, every output tensor: its name, shape, type, why that type,
//! and which input rows it is made of.
//!
//! Planning works on *logical* tensors in BFL naming, whatever the input naming: a diffusers
//! checkpoint's `to_q`/`to_k`/`to_v` become one `qkv` (their rows concatenated) before any rule
//! runs, so a mix is the same model in either naming. Output naming is applied last.

use crate::Error;
use crate::recipe::Recipe;
use lowbit_arch::flux::{Split, bfl_to_diffusers, diffusers_to_bfl, split_rows};
use lowbit_arch::{Architecture, Detection, Naming, block_of, detect};
use lowbit_checkpoint::{Checkpoint, StorageType, Tensor};
use lowbit_dtype::{Dtype, GgmlType};
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

/// ggml's tensor name limit with ComfyUI-GGUF's patch (`GGML_MAX_NAME` = 128, NUL included).
pub const MAX_NAME_LEN: usize = 127;

/// FLUX modules ComfyUI-GGUF leaves at source precision.
const FLUX_KEEP: [&str; 6] =
    ["img_in.", "txt_in.", "time_in.", "vector_in.", "guidance_in.", "final_layer."];

/// Which naming the output uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputNaming {
    /// BFL names, as ComfyUI-GGUF, diffusers' single-file loader and stable-diffusion.cpp expect.
    Bfl,
    /// diffusers names (loads in diffusers with `config=`/`subfolder=`).
    Diffusers,
}

/// A slice of one input tensor along its outermost dimension (rows of a matrix, elements of a
/// vector): fusing and splitting FLUX tensors always cuts there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Input tensor name, as stored.
    pub tensor: String,
    /// Indices along dimension 0.
    pub dim0: Range<u64>,
}

/// Why a tensor gets its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The target's base type.
    Base,
    /// The named mix bumps this tensor.
    Mix,
    /// A `--tensor-type` or recipe rule (its pattern).
    Rule(String),
    /// 1-D, or at most 1024 elements: F32, as ComfyUI-GGUF does.
    Small,
    /// An embedder or the final layer of FLUX: source precision, as ComfyUI-GGUF does.
    KeepFlux,
    /// Not a matrix: source precision.
    NotMatrix,
    /// The wanted type's block does not divide the row length.
    Fallback {
        /// What was wanted.
        wanted: GgmlType,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Base => f.write_str("target"),
            Reason::Mix => f.write_str("mix: fused qkv one step up"),
            Reason::Rule(p) => write!(f, "rule {p}"),
            Reason::Small => f.write_str("1-D or ≤ 1024 elements: F32"),
            Reason::KeepFlux => f.write_str("FLUX embedder/final layer: source precision"),
            Reason::NotMatrix => f.write_str("not 2-D: source precision"),
            Reason::Fallback { wanted } => {
                write!(f, "fallback: row length not a multiple of the {wanted} block")
            }
        }
    }
}

/// One output tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTensor {
    /// Output name.
    pub name: String,
    /// Shape in torch order.
    pub shape: Vec<u64>,
    /// Output type.
    pub ty: GgmlType,
    /// Why.
    pub reason: Reason,
    /// Input rows, concatenated in order.
    pub parts: Vec<Part>,
}

impl PlannedTensor {
    /// Elements per row (the innermost dimension).
    #[must_use]
    pub fn row_len(&self) -> u64 {
        self.shape.last().copied().unwrap_or(1)
    }

    /// Number of rows: all dimensions but the innermost.
    #[must_use]
    pub fn n_rows(&self) -> u64 {
        if self.shape.is_empty() { 1 } else { self.shape[..self.shape.len() - 1].iter().product() }
    }

    /// Elements.
    #[must_use]
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Bytes of output data.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.ty.row_bytes(self.row_len()).unwrap_or(0) * self.n_rows()
    }

    /// Dimensions in ggml order (innermost first).
    #[must_use]
    pub fn ggml_dims(&self) -> Vec<u64> {
        if self.shape.is_empty() { vec![1] } else { self.shape.iter().rev().copied().collect() }
    }
}

/// The whole conversion, decided.
#[derive(Debug, Clone)]
pub struct Plan {
    /// What the input is.
    pub detection: Detection,
    /// Output naming.
    pub naming: OutputNaming,
    /// Output tensors in file order.
    pub tensors: Vec<PlannedTensor>,
}

/// A tensor in BFL naming made of input rows, before output naming and types.
struct Logical {
    name: String,
    shape: Vec<u64>,
    source: StorageType,
    parts: Vec<Part>,
}

/// Length of dimension 0 (1 for a scalar).
fn dim0(t: &Tensor) -> u64 {
    t.shape.first().copied().unwrap_or(1)
}

/// Groups the input into logical BFL tensors (prefix stripped, diffusers parts fused).
fn logical(ckpt: &Checkpoint, det: &Detection) -> Result<Vec<Logical>, Error> {
    let strip = |n: &str| n.strip_prefix(det.prefix.as_str()).unwrap_or(n).to_owned();
    let whole = |t: &Tensor| Logical {
        name: strip(&t.name),
        shape: t.shape.clone(),
        source: t.ty,
        parts: vec![Part { tensor: t.name.clone(), dim0: 0..dim0(t) }],
    };
    if det.naming != Some(Naming::Diffusers) {
        return Ok(ckpt.tensors().iter().map(whole).collect());
    }
    // Diffusers: collect the parts of each BFL tensor, then fuse them in part order.
    let mut groups: BTreeMap<String, Vec<(usize, &Tensor)>> = BTreeMap::new();
    let mut out = Vec::new();
    for t in ckpt.tensors() {
        match diffusers_to_bfl(&strip(&t.name)) {
            Some((bfl, i)) => groups.entry(bfl).or_default().push((i, t)),
            None => out.push(whole(t)),
        }
    }
    for (bfl, mut parts) in groups {
        parts.sort_by_key(|(i, _)| *i);
        let mapping = bfl_to_diffusers(&bfl).expect("names come from the same table");
        let bad = |reason: String| Error::Plan { tensor: bfl.clone(), reason };
        if parts.len() != mapping.parts.len() || parts.iter().enumerate().any(|(k, (i, _))| *i != k)
        {
            let have: Vec<&str> = parts.iter().map(|(_, t)| t.name.as_str()).collect();
            return Err(bad(format!(
                "needs {} to fuse, found only {have:?}",
                mapping.parts.join(", ")
            )));
        }
        let first = parts[0].1;
        for (_, t) in &parts {
            if t.shape[1..] != first.shape[1..] || t.ty != first.ty {
                return Err(bad(format!(
                    "cannot fuse `{}` {:?} {} with `{}` {:?} {}",
                    first.name, first.shape, first.ty, t.name, t.shape, t.ty
                )));
            }
        }
        let mut shape = first.shape.clone();
        shape[0] = parts.iter().map(|(_, t)| t.shape[0]).sum();
        let parts: Vec<Part> = if mapping.split == Split::SwapHalves {
            let (t, n) = (first, dim0(first));
            if n % 2 != 0 {
                return Err(bad(format!(
                    "`{}` has an odd first dimension ({n}); cannot swap halves",
                    t.name
                )));
            }
            // diffusers stores (scale, shift); BFL (shift, scale): take the second half first.
            vec![
                Part { tensor: t.name.clone(), dim0: n / 2..n },
                Part { tensor: t.name.clone(), dim0: 0..n / 2 },
            ]
        } else {
            parts.iter().map(|(_, t)| Part { tensor: t.name.clone(), dim0: 0..dim0(t) }).collect()
        };
        out.push(Logical { name: bfl, shape, source: first.ty, parts });
    }
    Ok(out)
}

/// FLUX's width, needed to split `linear1`: the rows of `img_in.weight`.
fn hidden_size(logical: &[Logical]) -> Option<u64> {
    logical.iter().find(|l| l.name == "img_in.weight").map(|l| l.shape[0])
}

/// The storage type that keeps a source tensor's precision.
fn source_precision(name: &str, source: StorageType) -> Result<GgmlType, Error> {
    Ok(match source {
        StorageType::Dense(Dtype::BF16) | StorageType::Ggml(GgmlType::BF16) => GgmlType::BF16,
        StorageType::Dense(Dtype::F16 | Dtype::F8E4M3 | Dtype::F8E5M2)
        | StorageType::Ggml(GgmlType::F16) => GgmlType::F16,
        StorageType::Dense(Dtype::F32 | Dtype::F64)
        | StorageType::Ggml(GgmlType::F32 | GgmlType::F64) => GgmlType::F32,
        other => {
            return Err(Error::Plan {
                tensor: name.to_owned(),
                reason: format!(
                    "stored as {other}; lowbit converts from F32, F16, BF16, F8_E4M3 or F8_E5M2 weights \
                     (re-quantizing quantized weights would compound their error: convert from the original)"
                ),
            });
        }
    })
}

/// A type whose blocks fit `row_len`, for a wanted type whose blocks do not.
fn fallback(wanted: GgmlType, row_len: u64) -> GgmlType {
    let smaller = match wanted {
        GgmlType::Q2_K | GgmlType::Q3_K => GgmlType::Q4_0,
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        _ => GgmlType::F16,
    };
    if smaller.row_bytes(row_len).is_some() { smaller } else { GgmlType::F16 }
}

impl Plan {
    /// Plans converting `ckpt` with `recipe`, writing `naming` (BFL by default for FLUX).
    ///
    /// # Errors
    /// Input tensors that cannot be converted (quantized, integer, incomplete diffusers groups),
    /// names that do not fit GGUF, or a naming that the input's architecture does not have.
    pub fn new(
        ckpt: &Checkpoint,
        recipe: &Recipe,
        naming: Option<OutputNaming>,
    ) -> Result<Plan, Error> {
        let det = detect(ckpt.tensors().iter().map(|t| t.name.as_str()));
        let is_flux = det.architecture == Architecture::Flux;
        let naming = naming.unwrap_or(OutputNaming::Bfl);
        if naming == OutputNaming::Diffusers && !is_flux {
            return Err(Error::Plan {
                tensor: String::new(),
                reason: "--names diffusers needs a FLUX checkpoint (none was detected)".into(),
            });
        }
        let mut logical = logical(ckpt, &det)?;
        let bfl_det = Detection {
            naming: det.naming.map(|_| Naming::Bfl),
            prefix: String::new(),
            ..det.clone()
        };
        logical.sort_by(|a, b| {
            block_of(&a.name, &bfl_det)
                .cmp(&block_of(&b.name, &bfl_det))
                .then_with(|| a.name.cmp(&b.name))
        });
        let hidden = hidden_size(&logical);

        let mut tensors = Vec::new();
        for l in &logical {
            let outputs: Vec<(String, Vec<Part>, Vec<u64>)> =
                match (naming, bfl_to_diffusers(&l.name)) {
                    (OutputNaming::Diffusers, Some(m)) => {
                        let hidden = hidden.ok_or_else(|| Error::Plan {
                            tensor: l.name.clone(),
                            reason: "cannot split without the model width (no img_in.weight)"
                                .into(),
                        })?;
                        let ranges =
                            split_rows(m.split, l.shape[0], hidden).ok_or_else(|| Error::Plan {
                                tensor: l.name.clone(),
                                reason: format!(
                                    "{} rows do not split into {}",
                                    l.shape[0],
                                    m.parts.join(", ")
                                ),
                            })?;
                        let mut outs = Vec::new();
                        for (name, r) in m.parts.iter().zip(ranges) {
                            let ranges = if m.split == Split::SwapHalves {
                                // Undo the BFL swap: diffusers wants (scale, shift).
                                let half = l.shape[0] / 2;
                                vec![half..l.shape[0], 0..half]
                            } else {
                                vec![r.clone()]
                            };
                            let parts =
                                ranges.into_iter().flat_map(|r| select(&l.parts, r)).collect();
                            let mut shape = l.shape.clone();
                            shape[0] = r.end - r.start;
                            outs.push((name.clone(), parts, shape));
                        }
                        outs
                    }
                    _ => vec![(l.name.clone(), l.parts.clone(), l.shape.clone())],
                };
            for (name, parts, shape) in outputs {
                if name.len() > MAX_NAME_LEN {
                    return Err(Error::Plan {
                        tensor: name.clone(),
                        reason: format!(
                            "name is {} bytes; GGUF readers accept at most {MAX_NAME_LEN}",
                            name.len()
                        ),
                    });
                }
                let t =
                    PlannedTensor { name, shape, ty: GgmlType::F32, reason: Reason::Base, parts };
                tensors.push(choose_type(t, &l.name, l.source, is_flux, recipe)?);
            }
        }
        Ok(Plan { detection: det, naming, tensors })
    }

    /// Total bytes of tensor data.
    #[must_use]
    pub fn data_bytes(&self) -> u64 {
        self.tensors.iter().map(PlannedTensor::bytes).sum()
    }
}

/// The parts covering indices `r` along dimension 0 of a tensor made of `parts`.
fn select(parts: &[Part], r: Range<u64>) -> Vec<Part> {
    let mut out = Vec::new();
    let mut start = 0;
    for p in parts {
        let len = p.dim0.end - p.dim0.start;
        let (a, b) = (r.start.max(start), r.end.min(start + len));
        if a < b {
            out.push(Part {
                tensor: p.tensor.clone(),
                dim0: p.dim0.start + (a - start)..p.dim0.start + (b - start),
            });
        }
        start += len;
    }
    out
}

fn choose_type(
    mut t: PlannedTensor,
    bfl_name: &str,
    source: StorageType,
    is_flux: bool,
    recipe: &Recipe,
) -> Result<PlannedTensor, Error> {
    let keep = source_precision(&t.name, source)?;
    let (ty, reason) = if t.shape.len() <= 1 || t.numel() <= 1024 {
        (GgmlType::F32, Reason::Small)
    } else if is_flux && FLUX_KEEP.iter().any(|p| bfl_name.starts_with(p)) {
        (keep, Reason::KeepFlux)
    } else if t.shape.len() != 2 {
        (keep, Reason::NotMatrix)
    } else if let Some(ty) = recipe.target.mix_type(bfl_name) {
        (ty, Reason::Mix)
    } else {
        (recipe.target.base, Reason::Base)
    };
    let (ty, reason) = match recipe.rule_for(&t.name) {
        Some((_, rule)) => (rule.ty, Reason::Rule(rule.source.clone())),
        None => (ty, reason),
    };
    let (ty, reason) = if ty.row_bytes(t.row_len()).is_some() {
        (ty, reason)
    } else {
        (fallback(ty, t.row_len()), Reason::Fallback { wanted: ty })
    };
    if !lowbit_quant::supports_quantize(ty) {
        return Err(Error::Plan {
            tensor: t.name.clone(),
            reason: format!("lowbit cannot write {ty}"),
        });
    }
    t.ty = ty;
    t.reason = reason;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::{Part, select};

    #[test]
    fn select_spans_parts() {
        let parts = vec![
            Part { tensor: "a".into(), dim0: 0..4 },
            Part { tensor: "b".into(), dim0: 10..16 },
        ];
        assert_eq!(
            select(&parts, 2..7),
            vec![
                Part { tensor: "a".into(), dim0: 2..4 },
                Part { tensor: "b".into(), dim0: 10..13 }
            ]
        );
        assert_eq!(select(&parts, 4..10), vec![Part { tensor: "b".into(), dim0: 10..16 }]);
    }
}
