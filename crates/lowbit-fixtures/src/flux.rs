//! FLUX.1-shaped transformers of any width and depth, in BFL naming.
//!
//! Diffusers-named test inputs are made from these by diffusers' own converter
//! (`tests/interop/diffusers_convert.py`), not here: this crate makes inputs for the code under
//! test and so shares none of it (no `lowbit-arch` name table).

use crate::rng::Rng;
use half::bf16;

/// The dimensions of a FLUX.1 transformer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FluxConfig {
    /// Model width (3072 in FLUX.1).
    pub hidden: u64,
    /// Per-head width of the q/k norms (128).
    pub head_dim: u64,
    /// MLP width (4 × hidden in FLUX.1).
    pub mlp_hidden: u64,
    /// Latent channels entering `img_in` (64).
    pub in_channels: u64,
    /// T5 width entering `txt_in` (4096).
    pub context_dim: u64,
    /// CLIP pooled width entering `vector_in` (768).
    pub vec_dim: u64,
    /// Sinusoidal timestep embedding width (256).
    pub time_dim: u64,
    /// Number of double-stream blocks (19).
    pub double_blocks: u32,
    /// Number of single-stream blocks (38).
    pub single_blocks: u32,
    /// Whether the guidance embedder exists (dev: yes, schnell: no).
    pub guidance: bool,
}

impl FluxConfig {
    /// FLUX.1-dev: 780 tensors, 11.9 B parameters.
    pub const DEV: FluxConfig = FluxConfig {
        hidden: 3072,
        head_dim: 128,
        mlp_hidden: 12288,
        in_channels: 64,
        context_dim: 4096,
        vec_dim: 768,
        time_dim: 256,
        double_blocks: 19,
        single_blocks: 38,
        guidance: true,
    };

    /// The committed fixture: width 256, one block of each kind, 3.2 M parameters.
    /// `txt_in` (row length 320), `vector_in.in_layer` (160) and `img_in` (64) have rows that are
    /// not a multiple of 256, so K-quant fallbacks get exercised.
    pub const TINY: FluxConfig = FluxConfig {
        hidden: 256,
        head_dim: 128,
        mlp_hidden: 512,
        in_channels: 64,
        context_dim: 320,
        vec_dim: 160,
        time_dim: 256,
        double_blocks: 1,
        single_blocks: 1,
        guidance: true,
    };

    /// Every tensor in BFL naming with its torch-order shape, in model order.
    #[must_use]
    pub fn tensors(&self) -> Vec<(String, Vec<u64>)> {
        let h = self.hidden;
        let mut out = Vec::new();
        let mut linear = |name: &str, rows: u64, cols: u64| {
            out.push((format!("{name}.weight"), vec![rows, cols]));
            out.push((format!("{name}.bias"), vec![rows]));
        };
        linear("img_in", h, self.in_channels);
        linear("txt_in", h, self.context_dim);
        linear("time_in.in_layer", h, self.time_dim);
        linear("time_in.out_layer", h, h);
        linear("vector_in.in_layer", h, self.vec_dim);
        linear("vector_in.out_layer", h, h);
        if self.guidance {
            linear("guidance_in.in_layer", h, self.time_dim);
            linear("guidance_in.out_layer", h, h);
        }
        for i in 0..self.double_blocks {
            for s in ["img", "txt"] {
                let p = format!("double_blocks.{i}.{s}");
                linear(&format!("{p}_mod.lin"), 6 * h, h);
                linear(&format!("{p}_attn.qkv"), 3 * h, h);
                linear(&format!("{p}_attn.proj"), h, h);
                linear(&format!("{p}_mlp.0"), self.mlp_hidden, h);
                linear(&format!("{p}_mlp.2"), h, self.mlp_hidden);
            }
        }
        for i in 0..self.single_blocks {
            let p = format!("single_blocks.{i}");
            linear(&format!("{p}.linear1"), 3 * h + self.mlp_hidden, h);
            linear(&format!("{p}.linear2"), h, h + self.mlp_hidden);
            linear(&format!("{p}.modulation.lin"), 3 * h, h);
        }
        linear("final_layer.adaLN_modulation.1", 2 * h, h);
        linear("final_layer.linear", self.in_channels, h);
        for i in 0..self.double_blocks {
            for s in ["img", "txt"] {
                for n in ["query_norm", "key_norm"] {
                    out.push((
                        format!("double_blocks.{i}.{s}_attn.norm.{n}.scale"),
                        vec![self.head_dim],
                    ));
                }
            }
        }
        for i in 0..self.single_blocks {
            for n in ["query_norm", "key_norm"] {
                out.push((format!("single_blocks.{i}.norm.{n}.scale"), vec![self.head_dim]));
            }
        }
        out
    }
}

/// A generated tensor: BF16 little-endian bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenTensor {
    /// Name.
    pub name: String,
    /// Shape, torch order.
    pub shape: Vec<u64>,
    /// BF16 data, row-major.
    pub data: Vec<u8>,
}

/// Values for one tensor. Weights are N(0, 1/in) with three input channels (columns) scaled by
/// 8–24×, the activation-outlier pattern that smoothing and SVDQuant exist for; biases are small;
/// norm scales sit near 1.
fn values(seed: u64, name: &str, shape: &[u64]) -> Vec<f32> {
    let mut rng = Rng::for_name(seed, name);
    let n: u64 = shape.iter().product();
    if name.ends_with(".scale") {
        return (0..n).map(|_| (1.0 + 0.1 * rng.normal()) as f32).collect();
    }
    if shape.len() == 1 {
        return (0..n).map(|_| (0.02 * rng.normal()) as f32).collect();
    }
    let cols = shape[1];
    let std = 1.0 / (cols as f64).sqrt();
    let mut scale = vec![1.0f64; usize::try_from(cols).unwrap_or(0)];
    for _ in 0..3 {
        let c = usize::try_from(rng.below(cols)).unwrap_or(0);
        scale[c] = 8.0 + 16.0 * rng.uniform();
    }
    (0..n)
        .map(|i| (std * scale[usize::try_from(i % cols).unwrap_or(0)] * rng.normal()) as f32)
        .collect()
}

fn to_bf16_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect()
}

/// The model in BFL naming, every tensor in BF16.
#[must_use]
pub fn generate_bfl(cfg: &FluxConfig, seed: u64) -> Vec<GenTensor> {
    cfg.tensors().into_iter().map(|(name, shape)| generate_tensor(seed, &name, &shape)).collect()
}

/// One tensor of [`generate_bfl`]'s output on its own: its values depend only on the seed, its
/// name and its shape, so large models can be generated a tensor per thread.
#[must_use]
pub fn generate_tensor(seed: u64, name: &str, shape: &[u64]) -> GenTensor {
    let data = to_bf16_bytes(&values(seed, name, shape));
    GenTensor { name: name.to_owned(), shape: shape.to_vec(), data }
}

/// The same tensors with `prefix` in front of every name (ComfyUI's `model.diffusion_model.`).
#[must_use]
pub fn with_prefix(tensors: &[GenTensor], prefix: &str) -> Vec<GenTensor> {
    tensors.iter().map(|t| GenTensor { name: format!("{prefix}{}", t.name), ..t.clone() }).collect()
}

#[cfg(test)]
mod tests {
    use super::{FluxConfig, generate_bfl};

    #[test]
    fn dev_has_780_tensors_and_11_9_b_parameters() {
        let t = FluxConfig::DEV.tensors();
        assert_eq!(t.len(), 780);
        let params: u64 = t.iter().map(|(_, s)| s.iter().product::<u64>()).sum();
        assert_eq!(params, 11_901_408_320);
    }

    #[test]
    fn generation_is_deterministic_and_seeded() {
        let a = generate_bfl(&FluxConfig::TINY, 1);
        assert_eq!(a, generate_bfl(&FluxConfig::TINY, 1));
        assert_ne!(a, generate_bfl(&FluxConfig::TINY, 2));
    }
}
