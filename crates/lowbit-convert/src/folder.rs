//! The diffusers model folder an NF4 conversion writes for diffusers names, and an SDNQ one
//! always: the weights as `diffusion_pytorch_model.safetensors` and a `config.json` whose
//! `quantization_config` makes `FluxTransformer2DModel.from_pretrained` load them as
//! bitsandbytes 4-bit or through `sdnq`.

use crate::Error;
use crate::plan::Plan;
use crate::recipe::Target;
use lowbit_checkpoint::Checkpoint;
use lowbit_layout::Scheme;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// The weights file inside a diffusers model folder.
pub const MODEL_FILE: &str = "diffusion_pytorch_model.safetensors";

/// Where the safetensors file goes: `out` itself, or `out/diffusion_pytorch_model.safetensors`
/// when the conversion writes a diffusers folder (NF4 in diffusers names, `-o` without the
/// `.safetensors` extension).
#[must_use]
pub fn weights_path(plan: &Plan, target: &Target, out: &Path) -> PathBuf {
    if writes_folder(plan, target, out) { out.join(MODEL_FILE) } else { out.to_owned() }
}

/// Whether the output is a diffusers folder.
#[must_use]
pub fn writes_folder(plan: &Plan, target: &Target, out: &Path) -> bool {
    matches!(target, Target::Packed(Scheme::Nf4 { .. } | Scheme::Sdnq { .. }))
        && plan.naming == crate::OutputNaming::Diffusers
        && !out.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

/// The input's own `config.json`, when it is a diffusers folder (or a file inside one).
fn input_config(ckpt: &Checkpoint) -> Option<serde_json::Map<String, Value>> {
    let p = ckpt.path();
    let dir = if p.is_dir() { p.to_owned() } else { p.parent()?.to_owned() };
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    match serde_json::from_str(&text).ok()? {
        Value::Object(m) if m.get("_class_name") == Some(&json!("FluxTransformer2DModel")) => {
            Some(m)
        }
        _ => None,
    }
}

/// FLUX's diffusers configuration (`FluxTransformer2DModel`'s `config.json` values), read from
/// the shapes of the plan, in either output naming.
///
/// # Errors
/// A FLUX tensor the configuration needs is missing.
pub(crate) fn flux_config(plan: &Plan) -> Result<serde_json::Map<String, Value>, Error> {
    let bfl = plan.naming == crate::OutputNaming::Bfl;
    // Looked up by diffusers name, through the BFL name for BFL output.
    let shape = |name: &str| {
        let planned = if bfl {
            lowbit_arch::flux::diffusers_to_bfl(name).map(|(n, _)| n)
        } else {
            Some(name.to_owned())
        };
        planned
            .and_then(|n| plan.tensors.iter().find(|t| t.name == n))
            .map(|t| t.shape.clone())
            .ok_or_else(|| Error::Layout {
                tensor: name.to_owned(),
                reason: "a diffusers FLUX config needs this tensor".into(),
            })
    };
    let (double, single, guidance) = if bfl {
        ("double_blocks.", "single_blocks.", "guidance_in.")
    } else {
        ("transformer_blocks.", "single_transformer_blocks.", "time_text_embed.guidance")
    };
    let count = |prefix: &str| {
        plan.tensors
            .iter()
            .filter_map(|t| t.name.strip_prefix(prefix)?.split('.').next()?.parse().ok())
            .map(|i: u64| i + 1)
            .max()
            .unwrap_or(0)
    };
    let x = shape("x_embedder.weight")?;
    let head = shape("transformer_blocks.0.attn.norm_q.weight")
        .or_else(|_| shape("single_transformer_blocks.0.attn.norm_q.weight"))?;
    let ctx = shape("context_embedder.weight")?;
    let pooled = shape("time_text_embed.text_embedder.linear_1.weight")?;
    let out = shape("proj_out.weight")?;
    let m = json!({
        "_class_name": "FluxTransformer2DModel",
        "attention_head_dim": head[0],
        "axes_dims_rope": [16, 56, 56],
        "guidance_embeds": plan.tensors.iter().any(|t| t.name.starts_with(guidance)),
        "in_channels": x[1],
        "joint_attention_dim": ctx[1],
        "num_attention_heads": x[0] / head[0].max(1),
        "num_layers": count(double),
        "num_single_layers": count(single),
        "out_channels": out[0],
        "patch_size": 1,
        "pooled_projection_dim": pooled[1],
    });
    Ok(match m {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    })
}

/// `config.json` for the folder: the input's when it has one, else FLUX's configuration read
/// from the shapes, with bitsandbytes' `quantization_config`.
///
/// # Errors
/// A diffusers FLUX tensor the configuration needs is missing.
pub fn diffusers_config(ckpt: &Checkpoint, plan: &Plan, target: &Target) -> Result<String, Error> {
    let mut cfg = match input_config(ckpt) {
        Some(m) => m,
        None => flux_config(plan)?,
    };
    if let Target::Packed(Scheme::Nf4 { double_quant }) = target {
        // Linear weights kept dense must not become Linear4bit.
        let skip: Vec<String> = plan
            .tensors
            .iter()
            .filter(|t| t.scheme.is_none() && t.shape.len() == 2 && t.name.ends_with(".weight"))
            .map(|t| t.name.trim_end_matches(".weight").to_owned())
            .collect();
        cfg.insert(
            "quantization_config".into(),
            json!({
                "_load_in_4bit": true,
                "_load_in_8bit": false,
                "bnb_4bit_compute_dtype": "bfloat16",
                "bnb_4bit_quant_storage": "uint8",
                "bnb_4bit_quant_type": "nf4",
                "bnb_4bit_use_double_quant": double_quant,
                "llm_int8_enable_fp32_cpu_offload": false,
                "llm_int8_has_fp16_weight": false,
                "llm_int8_skip_modules": if skip.is_empty() { Value::Null } else { json!(skip) },
                "llm_int8_threshold": 6.0,
                "load_in_4bit": true,
                "load_in_8bit": false,
                "quant_method": "bitsandbytes",
            }),
        );
    }
    if let Target::Packed(Scheme::Sdnq { rank }) = target {
        cfg.insert("quantization_config".into(), crate::sdnq::quantization_config(plan, *rank));
    }
    let mut text = serde_json::to_string_pretty(&Value::Object(cfg)).unwrap_or_default();
    text.push('\n');
    Ok(text)
}
