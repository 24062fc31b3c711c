//! The calibration statistics of `cargo xtask flux-dev` (`formats/calibration.md`): one F32
//! `[4, K]` tensor per `nn.Linear` of diffusers' `FluxTransformer2DModel`, named by its module
//! path, holding a synthetic per-channel absmax of its input for 4 timestep groups.
//!
//! Names and in-features come from the BFL tensors through `lowbit_arch::flux::bfl_to_diffusers`.
//! Layers that read the same input get identical statistics: the parts of one fused BFL tensor
//! (q, k, v; a single block's q, k, v and MLP input), and every modulation linear (all read
//! `silu(temb)`).

use lowbit_dtype::Dtype;
use lowbit_fixtures::flux::FluxConfig;
use lowbit_fixtures::rng::Rng;
use lowbit_safetensors::Layout;

/// Timestep groups.
const GROUPS: usize = 4;

/// The `lowbit.calibration` metadata.
const CALIBRATION: &str = r#"{"version":1,"statistic":"absmax","naming":"diffusers","groups":4,"boundaries":[1000,750,500,250,0],"prompts":["synthetic"],"steps":28,"guidance":3.5,"model":"lowbit xtask flux-dev (synthetic)","calls":112}"#;

/// What an input looks like.
#[derive(Clone, Copy)]
enum Input {
    /// Residual-stream-like: log-normal around 1–3, about 1 % outlier channels 20–100× larger.
    Stream,
    /// After a GELU: smaller, no outliers.
    Gelu,
    /// A single block's `proj_out`: attention output (`hidden` channels), then the MLP's GELU.
    AttnThenGelu(u64),
}

/// One statistic: diffusers module path, in-features, the key of its input, its kind.
struct Entry {
    module: String,
    k: u64,
    input: String,
    kind: Input,
}

fn entries(cfg: &FluxConfig) -> anyhow::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for (name, shape) in cfg.tensors() {
        let (Some(bfl), [_, k]) = (name.strip_suffix(".weight"), shape.as_slice()) else {
            continue;
        };
        let mapping = lowbit_arch::flux::bfl_to_diffusers(&name)
            .ok_or_else(|| anyhow::anyhow!("{name} has no diffusers name"))?;
        let modulation = ["_mod.lin", "modulation.lin", "adaLN_modulation.1"];
        let input =
            if modulation.iter().any(|m| bfl.ends_with(m)) { "temb" } else { bfl }.to_owned();
        let kind = if bfl.ends_with("_mlp.2") {
            Input::Gelu
        } else if bfl.ends_with(".linear2") {
            Input::AttnThenGelu(cfg.hidden)
        } else {
            Input::Stream
        };
        for part in mapping.parts {
            let module = part.strip_suffix(".weight").unwrap_or(&part).to_owned();
            out.push(Entry { module, k: *k, input: input.clone(), kind });
        }
    }
    Ok(out)
}

/// `[GROUPS, k]` row-major values for an input, a function of the seed and the input's key.
fn values(seed: u64, input: &str, k: u64, kind: Input) -> Vec<f32> {
    let mut rng = Rng::for_name(seed, &format!("stats/{input}"));
    let k = usize::try_from(k).expect("small");
    let attn = match kind {
        Input::Stream => k,
        Input::Gelu => 0,
        Input::AttnThenGelu(h) => usize::try_from(h).expect("small").min(k),
    };
    // Per channel: a base magnitude and, for outliers, a multiplier.
    let mut base = Vec::with_capacity(k);
    let mut outlier = Vec::with_capacity(k);
    for j in 0..k {
        if j < attn {
            base.push((1.7f32.ln() + 0.35 * rng.normal_f32()).exp());
            outlier.push(if rng.uniform() < 0.01 {
                20.0 + 80.0 * rng.uniform_f32(0.0, 1.0)
            } else {
                1.0
            });
        } else {
            base.push((0.35f32.ln() + 0.4 * rng.normal_f32()).exp());
            outlier.push(1.0);
        }
    }
    let mut out = Vec::with_capacity(GROUPS * k);
    for _ in 0..GROUPS {
        // The whole input drifts a little with the timestep; outliers by up to ±30 %.
        let drift = (0.1 * rng.normal_f32()).exp();
        for j in 0..k {
            let v = if outlier[j] > 1.0 {
                base[j] * outlier[j] * rng.uniform_f32(0.7, 1.3)
            } else {
                base[j] * drift * (0.05 * rng.normal_f32()).exp()
            };
            out.push(v);
        }
    }
    out
}

/// The statistics file's bytes.
pub(crate) fn file(cfg: &FluxConfig, seed: u64) -> anyhow::Result<Vec<u8>> {
    let entries = entries(cfg)?;
    let shapes: Vec<[u64; 2]> = entries.iter().map(|e| [GROUPS as u64, e.k]).collect();
    let meta = [("lowbit.calibration".to_owned(), CALIBRATION.to_owned())];
    let layout = Layout::new(
        &meta,
        entries.iter().zip(&shapes).map(|(e, s)| (e.module.as_str(), Dtype::F32, s.as_slice())),
    )?;
    let mut out = layout.header;
    out.reserve(usize::try_from(layout.data_len)?);
    for e in &entries {
        for v in values(seed, &e.input, e.k, e.kind) {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{entries, values};
    use lowbit_fixtures::flux::FluxConfig;

    #[test]
    fn names_and_in_features_of_flux_dev() {
        let e = entries(&FluxConfig::DEV).unwrap();
        let k = |m: &str| e.iter().find(|e| e.module == m).map(|e| e.k);
        assert_eq!(k("transformer_blocks.0.attn.to_q"), Some(3072));
        assert_eq!(k("transformer_blocks.18.ff_context.net.2"), Some(12288));
        assert_eq!(k("transformer_blocks.0.attn.add_k_proj"), Some(3072));
        assert_eq!(k("single_transformer_blocks.37.proj_out"), Some(15360));
        assert_eq!(k("single_transformer_blocks.0.proj_mlp"), Some(3072));
        assert_eq!(k("x_embedder"), Some(64));
        assert_eq!(k("context_embedder"), Some(4096));
        assert_eq!(k("time_text_embed.guidance_embedder.linear_1"), Some(256));
        assert_eq!(k("norm_out.linear"), Some(3072));
        assert_eq!(k("proj_out"), Some(3072));
        // 19 × 14 + 38 × 6 + 10.
        assert_eq!(e.len(), 19 * 14 + 38 * 6 + 10);
    }

    #[test]
    fn outliers_stand_out_and_persist_across_groups() {
        let v = values(1, "x", 3072, super::Input::Stream);
        let k = 3072;
        let big: Vec<usize> = (0..k).filter(|&j| v[j] > 15.0).collect();
        assert!((10..60).contains(&big.len()), "{}", big.len());
        for g in 1..4 {
            assert!(big.iter().all(|&j| v[g * k + j] > 10.0));
        }
        let median = {
            let mut s = v[..k].to_vec();
            s.sort_by(f32::total_cmp);
            s[k / 2]
        };
        assert!((1.2..2.5).contains(&median), "{median}");
    }
}
