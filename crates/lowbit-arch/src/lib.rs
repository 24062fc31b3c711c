//! Which model a checkpoint holds, in which naming, and where each tensor sits in its depth.
//!
//! [`detect`] looks only at tensor names.
//! It recognises FLUX.1 in Black Forest Labs' original naming (`double_blocks.N.img_attn.qkv`,
//! optionally under `model.diffusion_model.`) and in diffusers naming
//! (`transformer_blocks.N.attn.to_q`, `single_transformer_blocks.N…`).
//! Anything else is [`Architecture::Unknown`] and still gets a generic block grouping.
//!
//! [`flux`] holds the name mapping between the two FLUX namings, including which fused tensors
//! split into which parts.

mod block;
mod detect;
pub mod flux;
pub mod nunchaku;

pub use block::{Block, Stage, block_of};
pub use detect::{Architecture, Detection, Naming, detect};
