//! Grouping tensors into blocks ordered by depth, for summaries and depth plots.

use crate::{Architecture, Detection, Naming};
use std::fmt;

/// Where a block sits in the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Embedders that run before the first block.
    Input,
    /// Repeated blocks; the number orders groups (FLUX: 0 double, 1 single).
    Blocks(u8),
    /// Final norm and projection.
    Output,
    /// Anything unplaced.
    Other,
}

/// A group of tensors: one numbered block or one top-level module.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Block {
    /// Position in the forward pass.
    pub stage: Stage,
    /// Order within the stage for unnumbered groups (`img_in` before `txt_in`).
    pub rank: u16,
    /// Group name in the file's own naming (`double_blocks`, `transformer_blocks`, `img_in`).
    pub group: String,
    /// Block number within the group.
    pub index: Option<u32>,
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(i) => write!(f, "{}.{i}", self.group),
            None => f.write_str(&self.group),
        }
    }
}

/// The block a tensor belongs to. Sorting blocks sorts them by depth.
#[must_use]
pub fn block_of(name: &str, det: &Detection) -> Block {
    let name = name.strip_prefix(det.prefix.as_str()).unwrap_or(name);
    let mut parts = name.split('.');
    let first = parts.next().unwrap_or_default();
    let index = parts.next().and_then(|p| p.parse::<u32>().ok());
    let block = |stage, rank: Option<usize>, index| Block {
        stage,
        rank: rank.and_then(|r| u16::try_from(r).ok()).unwrap_or(u16::MAX),
        group: first.to_owned(),
        index,
    };
    match (det.architecture, det.naming) {
        (Architecture::Flux, Some(naming)) => {
            let (double, single, inputs, outputs): (&str, &str, &[&str], &[&str]) = match naming {
                Naming::Bfl => (
                    "double_blocks",
                    "single_blocks",
                    &["img_in", "txt_in", "time_in", "vector_in", "guidance_in"],
                    &["final_layer"],
                ),
                Naming::Diffusers => (
                    "transformer_blocks",
                    "single_transformer_blocks",
                    &["x_embedder", "context_embedder", "time_text_embed"],
                    &["norm_out", "proj_out"],
                ),
            };
            match first {
                g if g == double && index.is_some() => block(Stage::Blocks(0), Some(0), index),
                g if g == single && index.is_some() => block(Stage::Blocks(1), Some(0), index),
                g if inputs.contains(&g) => {
                    block(Stage::Input, inputs.iter().position(|i| *i == g), None)
                }
                g if outputs.contains(&g) => {
                    block(Stage::Output, outputs.iter().position(|o| *o == g), None)
                }
                _ => block(Stage::Other, None, None),
            }
        }
        _ => generic(name),
    }
}

/// For unknown models: the first `group.N` pair of components is a block (`input_blocks.4`,
/// `blocks.12`); otherwise the first component is the group.
fn generic(name: &str) -> Block {
    let parts: Vec<&str> = name.split('.').collect();
    for w in 0..parts.len().saturating_sub(1) {
        if let Ok(i) = parts[w + 1].parse::<u32>() {
            return Block {
                stage: Stage::Blocks(0),
                rank: 0,
                group: parts[..=w].join("."),
                index: Some(i),
            };
        }
    }
    Block { stage: Stage::Other, rank: 0, group: parts[0].to_owned(), index: None }
}

#[cfg(test)]
mod tests {
    use super::{Stage, block_of};
    use crate::detect;

    #[test]
    fn flux_blocks_sort_by_depth() {
        let names = [
            "model.diffusion_model.final_layer.linear.weight",
            "model.diffusion_model.single_blocks.0.linear1.weight",
            "model.diffusion_model.double_blocks.10.img_attn.qkv.weight",
            "model.diffusion_model.double_blocks.2.img_attn.proj.weight",
            "model.diffusion_model.double_blocks.0.img_attn.qkv.weight",
            "model.diffusion_model.img_in.weight",
            "model.diffusion_model.txt_in.weight",
            "model.diffusion_model.guidance_in.in_layer.weight",
        ];
        let det = detect(names);
        let mut blocks: Vec<_> = names.iter().map(|n| block_of(n, &det)).collect();
        blocks.sort();
        let labels: Vec<String> = blocks.iter().map(ToString::to_string).collect();
        assert_eq!(
            labels,
            [
                "img_in",
                "txt_in",
                "guidance_in",
                "double_blocks.0",
                "double_blocks.2",
                "double_blocks.10",
                "single_blocks.0",
                "final_layer"
            ]
        );
    }

    #[test]
    fn diffusers_and_generic_blocks() {
        let names = [
            "transformer_blocks.0.attn.add_q_proj.weight",
            "single_transformer_blocks.0.attn.to_q.weight",
            "time_text_embed.timestep_embedder.linear_1.weight",
            "proj_out.weight",
        ];
        let det = detect(names);
        let stages: Vec<Stage> = names.iter().map(|n| block_of(n, &det).stage).collect();
        assert_eq!(stages, [Stage::Blocks(0), Stage::Blocks(1), Stage::Input, Stage::Output]);

        let det = detect(["input_blocks.4.1.proj.weight", "out.2.bias"]);
        assert_eq!(block_of("input_blocks.4.1.proj.weight", &det).to_string(), "input_blocks.4");
        assert_eq!(block_of("conv_in.weight", &det).to_string(), "conv_in");
        assert_eq!(
            block_of("model.diffusion_model.out.2.bias", &det).to_string(),
            "model.diffusion_model.out.2"
        );
    }
}
