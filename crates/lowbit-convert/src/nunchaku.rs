//! `--to nunchaku:int4` and `--to nunchaku-lite:int4` (`formats/nunchaku.md`): lowbit's
//! `svdq-w4a4` conversion, re-laid into the files Nunchaku and diffusers' `nunchaku_lite` load.
//!
//! The plan is the `svdq-w4a4` plan (AdaLN modulation `int4:g64`, the rest dense); the natural
//! file is written first, to a temporary file beside the output (`stage_plain`), then every
//! output module is made from its natural tensors, one module at a time, by the permutations
//! of `lowbit_layout::nunchaku`, and written through [`AtomicFile`]. The quantized values are
//! those of `svdq-w4a4`: only the order of bytes, the names, and for Nunchaku's unsigned FFN
//! activations the fc2 biases change.

mod make;

use crate::atomic::AtomicFile;
use crate::plan::{Plan, PlannedTensor};
use crate::recipe::{Recipe, Target};
use crate::write::{Options, Written};
use crate::{Error, OutputNaming};
use lowbit_arch::nunchaku::{DOUBLE_W4A4, MODULATION, from_bfl_block as block_of};
use lowbit_checkpoint::Checkpoint;
use lowbit_dtype::Dtype;
use lowbit_layout::{Scheme, nunchaku as nk};
use lowbit_safetensors::Layout;
use make::{Natural, produce};
use std::collections::HashMap;
use std::io::{self, Write};
use std::ops::Range;
use std::path::Path;

/// A runtime's own file that a packed target is re-laid into once quantized: the values are
/// the target's, only the layout, the names and the metadata change (`formats/nunchaku.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Export {
    /// `nunchaku:int4`: Nunchaku's single-file SVDQuant INT4 checkpoint.
    Nunchaku,
    /// `nunchaku-lite:int4`: diffusers' `nunchaku_lite` model folder.
    NunchakuLite,
}

impl Export {
    /// The names `--to` accepts.
    pub const NAMES: [&'static str; 2] = ["nunchaku:int4", "nunchaku-lite:int4"];

    /// The target as `--to` and recipes write it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Export::Nunchaku => Export::NAMES[0],
            Export::NunchakuLite => Export::NAMES[1],
        }
    }

    /// Parses `nunchaku:int4` or `nunchaku-lite:int4` (case-insensitive); `None` for other
    /// targets.
    ///
    /// # Errors
    /// A Nunchaku family name with a precision lowbit does not write (`nunchaku:fp4`).
    pub fn parse(s: &str) -> Result<Option<Export>, Error> {
        let lower = s.to_ascii_lowercase();
        let format = lower.split_once(':').map_or(lower.as_str(), |(f, _)| f);
        if format != "nunchaku" && format != "nunchaku-lite" {
            return Ok(None);
        }
        match Export::NAMES.iter().position(|n| *n == lower) {
            Some(0) => Ok(Some(Export::Nunchaku)),
            Some(_) => Ok(Some(Export::NunchakuLite)),
            None => {
                Err(crate::recipe::unknown("target", s, Export::NAMES.map(String::from).to_vec()))
            }
        }
    }

    /// The packed target whose values the export re-lays: SVDQuant W4A4, rank 32 (Nunchaku's).
    #[must_use]
    pub fn base(self) -> Target {
        Target::Packed(Scheme::Svdq { act4: true, rank: 32, groups: 1 })
    }
}

/// Nunchaku's INT4 runtime feeds post-GELU activations shifted by this and quantized unsigned.
pub(crate) const FC2_SHIFT: f64 = 0.171_875;
/// TinyChat's zero point for lowbit's symmetric codes: stored code = c + 7.
const AWQ_ZERO: i8 = 7;

/// The bias an output part gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bias {
    /// The source bias's rows.
    Source,
    /// Zeros (Nunchaku's `out_proj` of a single block; the bias goes to `mlp_fc2`).
    Zero,
    /// The source bias minus the shift times the stored residual's row sums over λ, so that
    /// Nunchaku's shifted unsigned fc2 activations compute the natural layer.
    Shifted,
}

/// One output SVDQuant module: rows and columns of a natural layer.
#[derive(Debug, Clone)]
struct W4a4Part {
    name: String,
    rows: Range<usize>,
    cols: Range<usize>,
    bias: Bias,
}

/// How one output module is made.
#[derive(Debug, Clone)]
enum Job {
    /// W4A4 parts of the natural layer `src` (its BFL module path).
    W4a4 { src: String, n: usize, k: usize, rank: usize, parts: Vec<W4a4Part> },
    /// An `int4:g64` modulation layer as TinyChat W4A16; `splits` interleaves its rows over the
    /// modulation chunks and folds the +1 of the scale chunks into the bias (Nunchaku).
    Awq { src: String, name: String, n: usize, k: usize, splits: Option<usize> },
    /// A dense tensor copied under a new name; `swap` trades its two halves of rows.
    Dense { src: String, name: String, dtype: Dtype, shape: Vec<u64>, swap: bool },
}

/// The refusal of a tensor an export cannot hold.
fn refuse(export: Export, tensor: &str, reason: impl Into<String>) -> Error {
    Error::Svdq {
        tensor: tensor.to_owned(),
        reason: format!("{}: {}", export.name(), reason.into()),
    }
}

/// The output modules of `plan`, in file order, or the first tensor the export cannot hold.
/// Every check happens here, before any weight is read (and in a dry run).
fn jobs(plan: &Plan, export: Export) -> Result<Vec<Job>, Error> {
    if plan.naming != OutputNaming::Bfl {
        return Err(refuse(export, "", "the input must be FLUX (BFL or diffusers names)"));
    }
    let lite = export == Export::NunchakuLite;
    let by_name: HashMap<&str, &PlannedTensor> =
        plan.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let hidden = by_name.get("img_in.weight").map(|t| t.shape[0] as usize);
    let Some(hidden) = hidden else {
        return Err(refuse(export, "img_in.weight", "not a FLUX transformer: img_in is missing"));
    };
    let mut out = Vec::new();
    let mut consumed: std::collections::HashSet<String> = std::collections::HashSet::new();
    for t in &plan.tensors {
        let Some(module) = t.name.strip_suffix(".weight") else { continue };
        let Some((block, double, rest)) = block_of(module) else { continue };
        let w4a4_name = if double {
            DOUBLE_W4A4.iter().find(|(b, _)| *b == rest).map(|(_, n)| *n)
        } else {
            ["linear1", "linear2"].into_iter().find(|b| *b == rest)
        };
        let modulation = MODULATION.iter().find(|(b, _, _)| *b == rest);
        if w4a4_name.is_none() && modulation.is_none() {
            continue;
        }
        consumed.insert(t.name.clone());
        consumed.insert(format!("{module}.bias"));
        let (n, k) = (t.shape[0] as usize, t.shape[1] as usize);
        if let Some((_, name, splits)) = modulation {
            if t.scheme != Some(Scheme::Int4 { group: 64, asym: false }) {
                return Err(refuse(
                    export,
                    &t.name,
                    "AdaLN modulation must be int4:g64 (weight-only W4A16, as Nunchaku stores it)",
                ));
            }
            if n % (4 * splits) != 0 || k % 64 != 0 {
                return Err(refuse(
                    export,
                    &t.name,
                    format!(
                        "TinyChat W4A16 needs N a multiple of {} and K of 64, not [{n}, {k}]",
                        4 * splits
                    ),
                ));
            }
            let name = if lite {
                let m = lowbit_arch::flux::bfl_to_diffusers(&t.name).map(|m| m.parts[0].clone());
                m.unwrap_or_default().trim_end_matches(".weight").to_owned()
            } else {
                format!("{block}.{name}")
            };
            out.push(Job::Awq {
                src: module.to_owned(),
                name,
                n,
                k,
                splits: (!lite).then_some(*splits),
            });
            continue;
        }
        let Some(Scheme::Svdq { act4: true, rank, groups: 1 }) = t.scheme else {
            return Err(refuse(
                export,
                &t.name,
                "Nunchaku runs every transformer-block linear as SVDQuant W4A4 (svdq-w4a4, one timestep group)",
            ));
        };
        let rank = usize::from(rank);
        if rank % nk::RANK_MULTIPLE != 0 {
            return Err(refuse(
                export,
                &t.name,
                format!("the rank must be a multiple of {}, not {rank}", nk::RANK_MULTIPLE),
            ));
        }
        let part = |name: String, rows: Range<usize>, cols: Range<usize>, bias: Bias| W4a4Part {
            name,
            rows,
            cols,
            bias,
        };
        let parts = match (lite, rest) {
            (false, "linear1") => vec![
                part(format!("{block}.qkv_proj"), 0..3 * hidden, 0..k, Bias::Source),
                part(format!("{block}.mlp_fc1"), 3 * hidden..n, 0..k, Bias::Source),
            ],
            (false, "linear2") => vec![
                part(format!("{block}.out_proj"), 0..n, 0..hidden, Bias::Zero),
                part(format!("{block}.mlp_fc2"), 0..n, hidden..k, Bias::Shifted),
            ],
            (false, _) => {
                let name = w4a4_name.unwrap_or_default();
                let bias = if name.ends_with("fc2") { Bias::Shifted } else { Bias::Source };
                vec![part(format!("{block}.{name}"), 0..n, 0..k, bias)]
            }
            (true, _) => {
                let Some(m) = lowbit_arch::flux::bfl_to_diffusers(&t.name) else {
                    return Err(refuse(export, &t.name, "no diffusers name"));
                };
                let ranges = lowbit_arch::flux::split_rows(m.split, n as u64, hidden as u64)
                    .unwrap_or_default();
                m.parts
                    .iter()
                    .zip(ranges)
                    .map(|(p, r)| {
                        let name = p.trim_end_matches(".weight").to_owned();
                        part(name, r.start as usize..r.end as usize, 0..k, Bias::Source)
                    })
                    .collect()
            }
        };
        for p in &parts {
            let (pn, pk) = (p.rows.len(), p.cols.len());
            if pn % nk::TILE_N != 0 || pk % nk::K_MULTIPLE != 0 || pn == 0 {
                return Err(refuse(
                    export,
                    &t.name,
                    format!(
                        "`{}` would be [{pn}, {pk}]; Nunchaku's tiles need N a multiple of {} and K of {}",
                        p.name,
                        nk::TILE_N,
                        nk::K_MULTIPLE
                    ),
                ));
            }
        }
        if !by_name.contains_key(format!("{module}.bias").as_str()) {
            return Err(refuse(export, &t.name, "FLUX's linears have biases; this one has none"));
        }
        out.push(Job::W4a4 { src: module.to_owned(), n, k, rank, parts });
    }
    for t in &plan.tensors {
        if consumed.contains(&t.name) {
            continue;
        }
        if t.scheme.is_some() {
            return Err(refuse(
                export,
                &t.name,
                "only transformer-block linears are quantized; keep this tensor dense",
            ));
        }
        let Some(m) = lowbit_arch::flux::bfl_to_diffusers(&t.name) else {
            return Err(refuse(export, &t.name, "not a FLUX tensor Nunchaku's model has"));
        };
        let [name] = &m.parts[..] else {
            return Err(refuse(
                export,
                &t.name,
                "a fused tensor kept dense; Nunchaku quantizes it",
            ));
        };
        // Nunchaku's single file keeps its legacy block names (`transformer_blocks.0.norm_q`).
        let name = if lite { name.clone() } else { name.replacen(".attn.", ".", 1) };
        let swap = m.split == lowbit_arch::flux::Split::SwapHalves;
        let dtype = crate::plan::dense_dtype(t.ty);
        out.push(Job::Dense { src: t.name.clone(), name, dtype, shape: t.shape.clone(), swap });
    }
    Ok(out)
}

/// (name, dtype, shape) of every tensor a job writes, in order.
fn specs(job: &Job, lite: bool) -> Vec<(String, Dtype, Vec<u64>)> {
    let u = |v: usize| v as u64;
    match job {
        Job::W4a4 { rank, parts, .. } => {
            let r = u(*rank);
            let mut v = Vec::new();
            for p in parts {
                let (n, k, m) = (u(p.rows.len()), u(p.cols.len()), &p.name);
                v.push((format!("{m}.qweight"), Dtype::I8, vec![n, k / 2]));
                v.push((format!("{m}.wscales"), Dtype::BF16, vec![k / 64, n]));
                v.push((format!("{m}.bias"), Dtype::BF16, vec![n]));
                if lite {
                    v.push((format!("{m}.smooth_factor"), Dtype::BF16, vec![k]));
                    v.push((format!("{m}.proj_down"), Dtype::BF16, vec![k, r]));
                    v.push((format!("{m}.proj_up"), Dtype::BF16, vec![n, r]));
                } else {
                    v.push((format!("{m}.smooth"), Dtype::BF16, vec![k]));
                    v.push((format!("{m}.smooth_orig"), Dtype::BF16, vec![k]));
                    v.push((format!("{m}.lora_down"), Dtype::BF16, vec![k, r]));
                    v.push((format!("{m}.lora_up"), Dtype::BF16, vec![n, r]));
                }
            }
            v
        }
        Job::Awq { name, n, k, .. } => {
            let (n, k) = (u(*n), u(*k));
            vec![
                (format!("{name}.qweight"), Dtype::I32, vec![n / 4, k / 2]),
                (format!("{name}.wscales"), Dtype::BF16, vec![k / 64, n]),
                (format!("{name}.wzeros"), Dtype::BF16, vec![k / 64, n]),
                (format!("{name}.bias"), Dtype::BF16, vec![n]),
            ]
        }
        Job::Dense { name, dtype, shape, .. } => vec![(name.clone(), *dtype, shape.clone())],
    }
}

/// ComfyUI-nunchaku's `comfy_config` (`nodes/models/flux.py` reads it from the metadata of a
/// single file, and fails without it): ComfyUI's model class and its FLUX parameters, read
/// from the BFL shapes (the values of ComfyUI-nunchaku's own `configs/flux.1-dev.json` for
/// FLUX.1-dev).
fn comfy_config(
    plan: &Plan,
    cfg: &serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    let dim = |name: &str, i: usize| {
        plan.tensors
            .iter()
            .find(|t| t.name == name)
            .and_then(|t| t.shape.get(i).copied())
            .unwrap_or(0)
    };
    let get = |k: &str| cfg.get(k).cloned().unwrap_or(serde_json::Value::Null);
    let hidden = dim("img_in.weight", 0);
    let guidance = plan.tensors.iter().any(|t| t.name.starts_with("guidance_in."));
    #[expect(clippy::cast_precision_loss, reason = "FLUX's widths are exact in f64")]
    let mlp_ratio = dim("double_blocks.0.img_mlp.0.weight", 0) as f64 / hidden.max(1) as f64;
    serde_json::json!({
        "model_class": if guidance { "Flux" } else { "FluxSchnell" },
        "model_config": {
            "axes_dim": [16, 56, 56],
            "context_in_dim": dim("txt_in.weight", 1),
            "depth": get("num_layers"),
            "depth_single_blocks": get("num_single_layers"),
            "disable_unet_model_creation": true,
            "guidance_embed": guidance,
            "hidden_size": hidden,
            "image_model": "flux",
            "in_channels": dim("img_in.weight", 1) / 4,
            "mlp_ratio": mlp_ratio,
            "num_heads": get("num_attention_heads"),
            "out_channels": dim("final_layer.linear.weight", 0) / 4,
            "patch_size": 2,
            "qkv_bias": plan.tensors.iter().any(|t| t.name.ends_with("img_attn.qkv.bias")),
            "theta": 10000,
            "vec_in_dim": dim("vector_in.in_layer.weight", 1),
        }
    })
}

/// The rank of the plan's SVDQuant layers.
fn rank_of(plan: &Plan) -> u16 {
    plan.tensors
        .iter()
        .find_map(|t| match t.scheme {
            Some(Scheme::Svdq { rank, .. }) => Some(rank),
            _ => None,
        })
        .unwrap_or(32)
}

/// The safetensors `__metadata__`: Nunchaku's four keys (`config`, `comfy_config`,
/// `model_class`, `quantization_config`, as `nunchaku/merge_safetensors.py` writes them) for
/// `nunchaku:int4`, and lowbit's own (the recipe reproduces the file).
///
/// # Errors
/// A FLUX tensor the configuration needs is missing.
fn metadata(
    plan: &Plan,
    recipe: &Recipe,
    export: Export,
    source_name: &str,
) -> Result<Vec<(String, String)>, Error> {
    let mut m = vec![("format".to_owned(), "pt".to_owned())];
    if export == Export::Nunchaku {
        let cfg = crate::folder::flux_config(plan)?;
        let comfy = comfy_config(plan, &cfg).to_string();
        m.push(("config".into(), serde_json::Value::Object(cfg).to_string()));
        m.push(("comfy_config".into(), comfy));
        m.push(("model_class".into(), "NunchakuFluxTransformer2dModel".into()));
        // Python's json.dumps with its default separators, as Nunchaku writes it.
        m.push(("quantization_config".into(), format!(
            r#"{{"method": "svdquant", "weight": {{"dtype": "int4", "scale_dtype": null, "group_size": 64}}, "activation": {{"dtype": "int4", "scale_dtype": null, "group_size": 64}}, "rank": {}}}"#,
            rank_of(plan)
        )));
    }
    m.push(("lowbit.version".into(), env!("CARGO_PKG_VERSION").into()));
    m.push(("lowbit.source".into(), source_name.into()));
    m.push(("lowbit.recipe".into(), recipe.to_toml()));
    m.push(("lowbit.export".into(), export.name().into()));
    Ok(m)
}

/// `config.json` of a `nunchaku-lite:int4` model folder: FLUX's configuration with diffusers'
/// `nunchaku_lite` `quantization_config` listing every replaced module.
///
/// # Errors
/// As the conversion: a tensor the export cannot hold.
pub fn lite_config(plan: &Plan, recipe: &Recipe) -> Result<String, Error> {
    let export = recipe.export.unwrap_or(Export::NunchakuLite);
    let (mut svdq, mut awq) = (Vec::new(), Vec::new());
    for job in jobs(plan, export)? {
        match job {
            Job::W4a4 { parts, .. } => svdq.extend(parts.into_iter().map(|p| p.name)),
            Job::Awq { name, .. } => awq.push(name),
            Job::Dense { .. } => {}
        }
    }
    let mut cfg = crate::folder::flux_config(plan)?;
    cfg.insert("quantization_config".into(), serde_json::json!({
        "quant_method": "nunchaku_lite",
        "compute_dtype": "bfloat16",
        "svdq_w4a4": {"precision": "int4", "group_size": 64, "rank": rank_of(plan), "targets": svdq},
        "awq_w4a16": {"precision": "int4", "group_size": 64, "targets": awq},
    }));
    serde_json::to_string_pretty(&serde_json::Value::Object(cfg))
        .map_err(|e| Error::Layout { tensor: String::new(), reason: e.to_string() })
}

/// The layout of the export's file.
fn file_layout(
    plan: &Plan,
    recipe: &Recipe,
    export: Export,
    source_name: &str,
) -> Result<(Layout, Vec<Job>), Error> {
    let jobs = jobs(plan, export)?;
    let lite = export == Export::NunchakuLite;
    let all: Vec<_> = jobs.iter().flat_map(|j| specs(j, lite)).collect();
    let meta = metadata(plan, recipe, export, source_name)?;
    let layout = Layout::new(&meta, all.iter().map(|(n, d, s)| (n.as_str(), *d, s.as_slice())))
        .map_err(|e| Error::Layout { tensor: String::new(), reason: e.to_string() })?;
    Ok((layout, jobs))
}

/// Checks, before any weight is read (and in a dry run), that the export can hold the plan;
/// returns the size of the file it writes.
///
/// # Errors
/// The first tensor the export cannot hold.
pub fn check_export(plan: &Plan, recipe: &Recipe, source_name: &str) -> Result<u64, Error> {
    let Some(export) = recipe.export else { return Ok(0) };
    let (layout, _) = file_layout(plan, recipe, export, source_name)?;
    Ok(layout.header.len() as u64 + layout.data_len)
}

/// Writes the export of `recipe` (see the module doc) to `out`.
///
/// # Errors
/// Everything [`crate::write_packed`] refuses, [`check_export`]'s refusals, I/O errors naming
/// `out`, [`Error::Cancelled`].
pub fn write_export(
    ckpt: &Checkpoint,
    plan: &Plan,
    recipe: &Recipe,
    out: &Path,
    opts: &Options<'_>,
) -> Result<Written, Error> {
    let Some(export) = recipe.export else {
        return crate::write_packed(ckpt, plan, recipe, out, opts);
    };
    crate::check_output(ckpt, out, &recipe.target, opts.force_extension)?;
    let (layout, jobs) = file_layout(plan, recipe, export, &opts.source_name)?;
    let lite = export == Export::NunchakuLite;
    let io = |e: io::Error| Error::Io { path: out.to_owned(), source: e };
    let (stage, _) = crate::zstd_pack::stage_plain(ckpt, plan, recipe, out, opts)?;
    let nat = Natural::open(stage.path(), out)?;
    let pool = crate::write::pool(opts.threads)?;
    let mut tmp = AtomicFile::create(out).map_err(io)?;
    let mut tensors = 0usize;
    {
        let mut w = io::BufWriter::with_capacity(1 << 20, tmp.file_mut());
        w.write_all(&layout.header).map_err(io)?;
        let batch = opts.threads.max(1);
        for (done, chunk) in jobs.chunks(batch).enumerate() {
            if opts.cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed)) {
                return Err(Error::Cancelled);
            }
            let made: Vec<Result<Vec<Vec<u8>>, Error>> = pool.install(|| {
                use rayon::prelude::*;
                chunk.par_iter().map(|j| produce(j, &nat, lite)).collect()
            });
            for (job, bytes) in chunk.iter().zip(made) {
                let bytes = bytes?;
                let spec = specs(job, lite);
                for ((name, dtype, shape), b) in spec.iter().zip(&bytes) {
                    let want = shape.iter().product::<u64>() * dtype.size() as u64;
                    if b.len() as u64 != want {
                        return Err(Error::Layout {
                            tensor: name.clone(),
                            reason: format!("made {} bytes, {want} planned", b.len()),
                        });
                    }
                    w.write_all(b).map_err(io)?;
                    tensors += 1;
                }
            }
            if let Some(p) = opts.progress {
                p(((done + 1) * batch).min(jobs.len()) as u64, jobs.len() as u64);
            }
        }
        w.flush().map_err(io)?;
    }
    tmp.commit().map_err(io)?;
    drop(stage);
    Ok(Written { tensors, bytes: layout.header.len() as u64 + layout.data_len })
}
