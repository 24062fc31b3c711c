//! Argument definitions (clap derive); no logic lives here.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Turn BF16 diffusion checkpoints into low-bit formats, and inspect what you have.
#[derive(Debug, Parser)]
#[command(name = "lowbit", version, about, max_term_width = 100)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List every tensor with its storage type and bits per weight, and summarise by type and block.
    ///
    /// PATH is a .safetensors file, a *.safetensors.index.json, a directory holding one (such as a
    /// diffusers transformer/ folder), or a .gguf file. Only headers are read.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// Checkpoint to inspect.
    pub(crate) path: PathBuf,
    /// Print JSON instead of tables (schema: formats/inspect-json.md).
    #[arg(long)]
    pub(crate) json: bool,
    /// Also draw bits per weight along the depth of the model as an SVG file.
    #[arg(long, value_name = "OUT.svg")]
    pub(crate) plot: Option<PathBuf>,
}
