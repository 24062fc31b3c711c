//! FLUX.1 tensor names in BFL and diffusers naming, and how fused tensors split.
//!
//! The table follows diffusers' `convert_flux_transformer_checkpoint_to_diffusers`:
//! BFL fuses q, k and v into one `qkv` (and, in single blocks, q, k, v and the MLP input into
//! `linear1`), and stores the final modulation as (shift, scale) where diffusers stores
//! (scale, shift).
//! Every part is a contiguous range of rows (dimension 0, torch order), so a split never has to
//! look inside a row: that is also why quantized rows can be split without dequantizing.

use std::ops::Range;

/// How the rows of a BFL tensor divide among its diffusers parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// One part, same rows.
    Whole,
    /// Three equal parts: q, k, v.
    Thirds,
    /// q, k, v of `hidden` rows each, then the MLP input with the rest.
    QkvMlp,
    /// One part whose two halves trade places (BFL shift|scale, diffusers scale|shift).
    SwapHalves,
}

/// A BFL tensor and the diffusers tensors it corresponds to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// Diffusers names, in row order of the BFL tensor.
    pub parts: Vec<String>,
    /// How rows divide among `parts`.
    pub split: Split,
}

/// One row of the mapping: (BFL module, diffusers modules, split); names exclude the parameter.
type Rule = (&'static str, &'static [&'static str], Split);

/// Block-level modules of a double block.
const DOUBLE: &[Rule] = &[
    ("img_mod.lin", &["norm1.linear"], Split::Whole),
    ("txt_mod.lin", &["norm1_context.linear"], Split::Whole),
    ("img_attn.qkv", &["attn.to_q", "attn.to_k", "attn.to_v"], Split::Thirds),
    ("txt_attn.qkv", &["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"], Split::Thirds),
    ("img_attn.proj", &["attn.to_out.0"], Split::Whole),
    ("txt_attn.proj", &["attn.to_add_out"], Split::Whole),
    ("img_attn.norm.query_norm", &["attn.norm_q"], Split::Whole),
    ("img_attn.norm.key_norm", &["attn.norm_k"], Split::Whole),
    ("txt_attn.norm.query_norm", &["attn.norm_added_q"], Split::Whole),
    ("txt_attn.norm.key_norm", &["attn.norm_added_k"], Split::Whole),
    ("img_mlp.0", &["ff.net.0.proj"], Split::Whole),
    ("img_mlp.2", &["ff.net.2"], Split::Whole),
    ("txt_mlp.0", &["ff_context.net.0.proj"], Split::Whole),
    ("txt_mlp.2", &["ff_context.net.2"], Split::Whole),
];

/// Block-level modules of a single block.
const SINGLE: &[Rule] = &[
    ("linear1", &["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"], Split::QkvMlp),
    ("linear2", &["proj_out"], Split::Whole),
    ("modulation.lin", &["norm.linear"], Split::Whole),
    ("norm.query_norm", &["attn.norm_q"], Split::Whole),
    ("norm.key_norm", &["attn.norm_k"], Split::Whole),
];

/// Top-level modules.
const TOP: &[Rule] = &[
    ("img_in", &["x_embedder"], Split::Whole),
    ("txt_in", &["context_embedder"], Split::Whole),
    ("time_in.in_layer", &["time_text_embed.timestep_embedder.linear_1"], Split::Whole),
    ("time_in.out_layer", &["time_text_embed.timestep_embedder.linear_2"], Split::Whole),
    ("vector_in.in_layer", &["time_text_embed.text_embedder.linear_1"], Split::Whole),
    ("vector_in.out_layer", &["time_text_embed.text_embedder.linear_2"], Split::Whole),
    ("guidance_in.in_layer", &["time_text_embed.guidance_embedder.linear_1"], Split::Whole),
    ("guidance_in.out_layer", &["time_text_embed.guidance_embedder.linear_2"], Split::Whole),
    ("final_layer.linear", &["proj_out"], Split::Whole),
    ("final_layer.adaLN_modulation.1", &["norm_out.linear"], Split::SwapHalves),
];

/// BFL norms store `scale`; diffusers stores `weight`.
fn diffusers_param(bfl_param: &str) -> &str {
    if bfl_param == "scale" { "weight" } else { bfl_param }
}

/// Splits `block.N.rest` into (N, rest).
fn numbered<'a>(name: &'a str, group: &str) -> Option<(u32, &'a str)> {
    let rest = name.strip_prefix(group)?.strip_prefix('.')?;
    let (n, rest) = rest.split_once('.')?;
    Some((n.parse().ok()?, rest))
}

/// The diffusers tensors for a BFL tensor name (without any `model.diffusion_model.` prefix).
#[must_use]
pub fn bfl_to_diffusers(name: &str) -> Option<Mapping> {
    let (module, param) = name.rsplit_once('.')?;
    let (table, from, to): (&[Rule], String, String) =
        if let Some((n, rest)) = numbered(module, "double_blocks") {
            (DOUBLE, rest.to_owned(), format!("transformer_blocks.{n}."))
        } else if let Some((n, rest)) = numbered(module, "single_blocks") {
            (SINGLE, rest.to_owned(), format!("single_transformer_blocks.{n}."))
        } else {
            (TOP, module.to_owned(), String::new())
        };
    let (_, parts, split) = table.iter().find(|(bfl, _, _)| *bfl == from)?;
    let param = diffusers_param(param);
    Some(Mapping {
        parts: parts.iter().map(|p| format!("{to}{p}.{param}")).collect(),
        split: *split,
    })
}

/// The BFL tensor a diffusers tensor belongs to, and which part of it it is.
#[must_use]
pub fn diffusers_to_bfl(name: &str) -> Option<(String, usize)> {
    let (module, param) = name.rsplit_once('.')?;
    let lookup = |table: &[Rule], rest: &str, norm_scale: bool| {
        table.iter().find_map(|(bfl, parts, _)| {
            let i = parts.iter().position(|p| *p == rest)?;
            let is_norm = bfl.ends_with("_norm");
            let param = if is_norm && norm_scale && param == "weight" { "scale" } else { param };
            Some((*bfl, i, param))
        })
    };
    if let Some((n, rest)) = numbered(module, "transformer_blocks") {
        let (bfl, i, p) = lookup(DOUBLE, rest, true)?;
        return Some((format!("double_blocks.{n}.{bfl}.{p}"), i));
    }
    if let Some((n, rest)) = numbered(module, "single_transformer_blocks") {
        let (bfl, i, p) = lookup(SINGLE, rest, true)?;
        return Some((format!("single_blocks.{n}.{bfl}.{p}"), i));
    }
    let (bfl, i, p) = lookup(TOP, module, false)?;
    Some((format!("{bfl}.{p}"), i))
}

/// Row ranges of each part of a BFL tensor with `rows` rows, in part order.
/// `hidden` is the model width (3072 for FLUX.1), needed for [`Split::QkvMlp`].
/// `None` when the rows do not divide as the split requires.
#[must_use]
pub fn split_rows(split: Split, rows: u64, hidden: u64) -> Option<Vec<Range<u64>>> {
    match split {
        Split::Whole | Split::SwapHalves => Some(std::iter::once(0..rows).collect()),
        Split::Thirds => rows
            .is_multiple_of(3)
            .then(|| (0..3).map(|i| i * rows / 3..(i + 1) * rows / 3).collect()),
        Split::QkvMlp => (rows > 3 * hidden)
            .then(|| vec![0..hidden, hidden..2 * hidden, 2 * hidden..3 * hidden, 3 * hidden..rows]),
    }
}

#[cfg(test)]
mod tests {
    use super::{Split, bfl_to_diffusers, diffusers_to_bfl, split_rows};

    #[test]
    fn maps_each_kind_both_ways() {
        let cases = [
            (
                "double_blocks.3.img_attn.qkv.weight",
                &[
                    "transformer_blocks.3.attn.to_q.weight",
                    "transformer_blocks.3.attn.to_k.weight",
                    "transformer_blocks.3.attn.to_v.weight",
                ][..],
                Split::Thirds,
            ),
            (
                "double_blocks.0.txt_attn.norm.key_norm.scale",
                &["transformer_blocks.0.attn.norm_added_k.weight"][..],
                Split::Whole,
            ),
            (
                "single_blocks.7.linear1.bias",
                &[
                    "single_transformer_blocks.7.attn.to_q.bias",
                    "single_transformer_blocks.7.attn.to_k.bias",
                    "single_transformer_blocks.7.attn.to_v.bias",
                    "single_transformer_blocks.7.proj_mlp.bias",
                ][..],
                Split::QkvMlp,
            ),
            (
                "single_blocks.7.linear2.weight",
                &["single_transformer_blocks.7.proj_out.weight"][..],
                Split::Whole,
            ),
            (
                "final_layer.adaLN_modulation.1.weight",
                &["norm_out.linear.weight"][..],
                Split::SwapHalves,
            ),
            ("final_layer.linear.bias", &["proj_out.bias"][..], Split::Whole),
            (
                "guidance_in.out_layer.weight",
                &["time_text_embed.guidance_embedder.linear_2.weight"][..],
                Split::Whole,
            ),
        ];
        for (bfl, parts, split) in cases {
            let m = bfl_to_diffusers(bfl).unwrap();
            assert_eq!(m.parts, parts, "{bfl}");
            assert_eq!(m.split, split, "{bfl}");
            for (i, p) in parts.iter().enumerate() {
                assert_eq!(diffusers_to_bfl(p), Some((bfl.to_owned(), i)), "{p}");
            }
        }
        assert_eq!(bfl_to_diffusers("double_blocks.0.unknown.weight"), None);
        assert_eq!(diffusers_to_bfl("transformer_blocks.x.attn.to_q.weight"), None);
    }

    #[test]
    fn row_splits() {
        assert_eq!(
            split_rows(Split::Thirds, 9216, 3072).unwrap(),
            [0..3072, 3072..6144, 6144..9216]
        );
        assert_eq!(split_rows(Split::QkvMlp, 21504, 3072).unwrap().last(), Some(&(9216..21504)));
        assert_eq!(split_rows(Split::Thirds, 10, 3), None);
        assert_eq!(split_rows(Split::QkvMlp, 9, 3), None);
    }
}
