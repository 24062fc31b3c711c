//! Deciding, before any data is read, every output tensor: its name, shape, type, why that type,
//! and which input rows it is made of.
//!
//! Planning works on *logical* tensors in BFL naming, whatever the input naming (`logical.rs`):
//! a diffusers checkpoint's `to_q`/`to_k`/`to_v` become one `qkv` (their rows concatenated)
//! before any rule runs, so a mix is the same model in either naming. Output naming is applied
//! last. The plan is validated completely before anything prints or executes it.

use crate::Error;
use crate::logical::{Part, logical, to_diffusers};
use crate::recipe::{Recipe, RuleType, Target};
use lowbit_arch::{Architecture, Detection, Naming, block_of, detect};
use lowbit_checkpoint::{Checkpoint, StorageType};
use lowbit_dtype::{Dtype, GgmlType};
use lowbit_layout::Scheme;
use std::fmt;

/// ggml's tensor name limit with ComfyUI-GGUF's patch (`GGML_MAX_NAME` = 128, NUL included).
pub(crate) const MAX_NAME_LEN: usize = 127;

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
    /// The target's default leaves this weight at source precision (packed targets).
    Policy(&'static str),
    /// SVDQuant's AdaLN modulation linears: int4 g64, weight-only, as Nunchaku stores them.
    Modulation,
    /// The wanted scheme cannot store this tensor: source precision.
    Unfit {
        /// What was wanted.
        wanted: Scheme,
        /// Why not.
        why: String,
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
            Reason::Policy(why) => write!(f, "source precision: {why}"),
            Reason::Modulation => f.write_str("AdaLN modulation: W4A16 int4:g64, as Nunchaku"),
            Reason::Unfit { wanted, why } => write!(f, "fallback from {wanted}: {why}"),
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
    /// Output type: the GGUF type; in a packed target, the dense type when `scheme` is `None`,
    /// else the source precision (the dtype bitsandbytes records).
    pub ty: GgmlType,
    /// The packed scheme storing this weight (packed targets only).
    pub scheme: Option<Scheme>,
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
        match self.scheme {
            Some(s) => s.stored_bytes(self.n_rows(), self.row_len(), dense_dtype(self.ty)),
            None => self.ty.row_bytes(self.row_len()).unwrap_or(0) * self.n_rows(),
        }
    }

    /// The name of the output type: a ggml type or a scheme.
    #[must_use]
    pub fn type_name(&self) -> String {
        match self.scheme {
            Some(s) => s.to_string(),
            None => self.ty.name().to_owned(),
        }
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
    /// Rules (their patterns) that match no output tensor: probably a typo, or names of the
    /// other naming.
    pub unmatched_rules: Vec<String>,
}

/// The storage type that keeps a source tensor's precision, or why lowbit does not convert it.
fn source_precision(source: StorageType) -> Result<GgmlType, &'static str> {
    Ok(match source {
        StorageType::Dense(Dtype::BF16) | StorageType::Ggml(GgmlType::BF16) => GgmlType::BF16,
        StorageType::Dense(Dtype::F16 | Dtype::F8E4M3 | Dtype::F8E5M2)
        | StorageType::Ggml(GgmlType::F16) => GgmlType::F16,
        StorageType::Dense(Dtype::F32 | Dtype::F64)
        | StorageType::Ggml(GgmlType::F32 | GgmlType::F64) => GgmlType::F32,
        StorageType::Ggml(_) => {
            return Err(
                "re-quantizing quantized weights would compound their error: convert from the original (F32, F16, BF16, F8_E4M3 or F8_E5M2)",
            );
        }
        StorageType::Dense(_) => {
            return Err("lowbit converts F32, F16, BF16, F8_E4M3 and F8_E5M2 weights");
        }
    })
}

/// The safetensors dtype of a dense ggml type (F32, F16 or BF16; F32 for anything else).
#[must_use]
pub fn dense_dtype(ty: GgmlType) -> Dtype {
    match ty {
        GgmlType::BF16 => Dtype::BF16,
        GgmlType::F16 => Dtype::F16,
        _ => Dtype::F32,
    }
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
    /// The plan is validated completely: anything the writer would refuse (a type it cannot
    /// write, a rank or size GGUF cannot hold, a name too long) is refused here, so `--dry-run`
    /// and a real run agree on every refusal.
    ///
    /// # Errors
    /// Input tensors that cannot be converted (quantized, integer, empty, incomplete or
    /// mismatched diffusers groups, shapes their role does not allow), names or sizes that do
    /// not fit GGUF, or a naming that the input's architecture does not have.
    pub fn new(
        ckpt: &Checkpoint,
        recipe: &Recipe,
        naming: Option<OutputNaming>,
    ) -> Result<Plan, Error> {
        let det = detect(ckpt.tensors().iter().map(|t| t.name.as_str()));
        let is_flux = det.architecture == Architecture::Flux;
        // NF4 goes to diffusers (a model folder) when the input is diffusers-named.
        let naming = naming.unwrap_or(
            if matches!(recipe.target, Target::Packed(Scheme::Sdnq { .. }))
                || matches!(recipe.target, Target::Packed(Scheme::Nf4 { .. }))
                    && det.naming == Some(Naming::Diffusers)
            {
                OutputNaming::Diffusers
            } else {
                OutputNaming::Bfl
            },
        );
        let gguf = matches!(recipe.target, Target::Gguf { .. });
        if let Target::Packed(s @ Scheme::Sdnq { .. }) = recipe.target {
            let reason = if !is_flux {
                "sdnq targets are FLUX transformers for diffusers, and no FLUX checkpoint was detected"
            } else if naming == OutputNaming::Bfl {
                "sdnq loads through diffusers' FluxTransformer2DModel, so it is written in diffusers names (drop --names bfl)"
            } else {
                ""
            };
            if !reason.is_empty() {
                let reason = format!("{s}: {reason}");
                return Err(Error::Sdnq { file: ckpt.path().to_owned(), reason });
            }
        }
        if naming == OutputNaming::Diffusers && !is_flux {
            return Err(Error::NotFlux { file: ckpt.path().to_owned() });
        }
        for t in ckpt.tensors() {
            if let Err(reason) = source_precision(t.ty) {
                return Err(Error::SourceType {
                    file: ckpt.file_of(t).to_owned(),
                    tensor: t.name.clone(),
                    stored: t.ty.to_string(),
                    reason,
                });
            }
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

        let mut hidden = None;
        let mut tensors = Vec::new();
        for l in &logical {
            let outputs = match naming {
                OutputNaming::Diffusers => to_diffusers(ckpt, &logical, l, &mut hidden)?,
                OutputNaming::Bfl => vec![(l.name.clone(), l.parts.clone(), l.shape.clone())],
            };
            for (name, parts, shape) in outputs {
                // Every part names an input tensor; its file is the one to blame.
                let input = parts.first().and_then(|p| ckpt.tensor(&p.tensor));
                let file =
                    input.map_or_else(|| ckpt.path().to_owned(), |t| ckpt.file_of(t).to_owned());
                if gguf && name.len() > MAX_NAME_LEN {
                    return Err(Error::NameTooLong {
                        file,
                        len: name.len(),
                        tensor: name,
                        max: MAX_NAME_LEN,
                    });
                }
                if gguf && shape.len() > lowbit_gguf::MAX_DIMS {
                    return Err(Error::Shape {
                        file,
                        tensor: input.map_or(name, |t| t.name.clone()),
                        shape,
                        reason: format!("GGUF holds at most {} dimensions", lowbit_gguf::MAX_DIMS),
                    });
                }
                let t = PlannedTensor {
                    name,
                    shape,
                    ty: GgmlType::F32,
                    scheme: None,
                    reason: Reason::Base,
                    parts,
                };
                tensors.push(match recipe.target {
                    Target::Gguf { .. } => choose_type(t, &l.name, l.source, is_flux, recipe)?,
                    Target::Packed(base) => {
                        choose_packed(t, &l.name, l.source, is_flux, recipe, base)
                    }
                });
            }
        }
        let unmatched_rules = recipe
            .rules
            .iter()
            .filter(|r| !tensors.iter().any(|t| r.pattern.is_match(&t.name)))
            .map(|r| r.source.clone())
            .collect();
        let plan = Plan { detection: det, naming, tensors, unmatched_rules };
        // The layout's own checks (sizes, offsets past 2^63) run now, not when writing.
        match recipe.target {
            Target::Gguf { .. } => {
                crate::write::layout(&plan, &[])?;
            }
            Target::Packed(_) => {
                crate::packed::layout(&plan, &[], &[])?;
            }
        }
        Ok(plan)
    }

    /// Total bytes of tensor data.
    #[must_use]
    pub fn data_bytes(&self) -> u64 {
        self.tensors.iter().map(PlannedTensor::bytes).sum()
    }
}

fn choose_type(
    mut t: PlannedTensor,
    bfl_name: &str,
    source: StorageType,
    is_flux: bool,
    recipe: &Recipe,
) -> Result<PlannedTensor, Error> {
    // Source types were checked when planning began.
    let keep = source_precision(source).unwrap_or(GgmlType::F32);
    let (ty, reason) = if t.shape.len() <= 1 || t.numel() <= 1024 {
        (GgmlType::F32, Reason::Small)
    } else if is_flux && FLUX_KEEP.iter().any(|p| bfl_name.starts_with(p)) {
        (keep, Reason::KeepFlux)
    } else if t.shape.len() != 2 {
        (keep, Reason::NotMatrix)
    } else if let Some(ty) = recipe.target.mix_type(bfl_name) {
        (ty, Reason::Mix)
    } else {
        (recipe.target.ggml().unwrap_or(GgmlType::F32), Reason::Base)
    };
    let (ty, reason) = match recipe.rule_for(&t.name) {
        Some((_, rule)) => match rule.ty {
            RuleType::Ggml(ty) | RuleType::Dense(ty) => (ty, Reason::Rule(rule.source.clone())),
            // `Recipe::build` resolved every rule against the GGUF target.
            RuleType::Scheme(_) => (ty, reason),
        },
        None => (ty, reason),
    };
    let (ty, reason) = if ty.row_bytes(t.row_len()).is_some() {
        (ty, reason)
    } else {
        (fallback(ty, t.row_len()), Reason::Fallback { wanted: ty })
    };
    if !lowbit_quant::supports_quantize(ty) {
        return Err(Error::Layout {
            tensor: t.name.clone(),
            reason: format!("lowbit cannot write {ty}"),
        });
    }
    t.ty = ty;
    t.reason = reason;
    Ok(t)
}

/// FLUX's AdaLN modulation linears, which SVDQuant stores weight-only (W4A16, int4 g64, no
/// smoothing, no branch), as Nunchaku does.
fn is_modulation(bfl_name: &str) -> bool {
    [".img_mod.lin.weight", ".txt_mod.lin.weight", ".modulation.lin.weight"]
        .iter()
        .any(|s| bfl_name.ends_with(s))
}

/// What a packed target leaves at source precision by default, for a 2-D weight.
fn policy_keeps(base: Scheme, bfl_name: &str, is_flux: bool) -> Option<&'static str> {
    let in_blocks =
        bfl_name.starts_with("double_blocks.") || bfl_name.starts_with("single_blocks.");
    match base {
        // diffusers quantizes every Linear with bitsandbytes.
        Scheme::Nf4 { .. } => None,
        // sdnq's own skip keys decide (`sdnq_keeps`).
        Scheme::Sdnq { .. } => None,
        Scheme::Fp8 { .. } => lowbit_layout::fp8::layerwise_casting_skips(bfl_name)
            .then_some("diffusers' layerwise casting skips it"),
        _ if is_flux && !in_blocks => {
            Some("outside the transformer blocks (embedders, modulation, final layer)")
        }
        _ => None,
    }
}

/// What `sdnq` itself leaves at source precision (`formats/sdnq.md`): its FLUX skip keys
/// (diffusers names) and `Linear`s under its minimum size.
fn sdnq_keeps(base: Scheme, name: &str, shape: &[u64]) -> Option<&'static str> {
    use lowbit_layout::sdnq;
    if !matches!(base, Scheme::Sdnq { .. }) {
        return None;
    }
    if sdnq::flux_skips(name) {
        return Some("sdnq's FLUX skip keys (embedders, final layer, first single block's AdaLN)");
    }
    let small = shape.iter().product::<u64>() < sdnq::MIN_NUMEL
        || shape.last().is_some_and(|&k| k < sdnq::MIN_ROW);
    small.then_some("sdnq leaves Linears under 16384 elements or 32 columns unquantized")
}

fn choose_packed(
    mut t: PlannedTensor,
    bfl_name: &str,
    source: StorageType,
    is_flux: bool,
    recipe: &Recipe,
    base: Scheme,
) -> PlannedTensor {
    // Source types were checked when planning began.
    let keep = source_precision(source).unwrap_or(GgmlType::F32);
    let matrix = t.shape.len() == 2 && t.name.ends_with(".weight");
    let (choice, reason) = if !matrix {
        (RuleType::Dense(keep), Reason::NotMatrix)
    } else if let Some(why) = policy_keeps(base, bfl_name, is_flux) {
        (RuleType::Dense(keep), Reason::Policy(why))
    } else if let Some(why) = sdnq_keeps(base, &t.name, &t.shape) {
        (RuleType::Dense(keep), Reason::Policy(why))
    } else if matches!(base, Scheme::Svdq { .. }) && is_flux && is_modulation(bfl_name) {
        (RuleType::Scheme(Scheme::Int4 { group: 64, asym: false }), Reason::Modulation)
    } else {
        (RuleType::Scheme(base), Reason::Base)
    };
    let (choice, reason) = match recipe.rule_for(&t.name) {
        Some((_, rule)) => (rule.ty, Reason::Rule(rule.source.clone())),
        None => (choice, reason),
    };
    t.ty = keep;
    t.reason = reason;
    match choice {
        RuleType::Scheme(s) if !matrix => {
            t.reason = Reason::Unfit { wanted: s, why: "not a 2-D `.weight`".into() };
        }
        RuleType::Scheme(s) => match s.fits(t.shape[0], t.shape[1]) {
            Ok(()) => t.scheme = Some(s),
            Err(why) => t.reason = Reason::Unfit { wanted: s, why: why.0 },
        },
        RuleType::Ggml(ty) | RuleType::Dense(ty) => t.ty = ty,
    }
    t
}
