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
    /// Summarise a checkpoint: architecture, totals, bits per weight by type and by block, metadata;
    /// --tensors lists every tensor too.
    ///
    /// PATH is a .safetensors file, a *.safetensors.index.json, a directory holding one (such as a
    /// diffusers transformer/ folder), or a .gguf file. Only headers are read.
    Inspect(InspectArgs),
    /// Convert a checkpoint to GGUF, bit-exact with ggml's quantizers.
    ///
    /// INPUT is anything `inspect` reads (BF16/F16/F32/FP8 safetensors, sharded, or a GGUF with
    /// F32/F16/BF16 weights). FLUX in diffusers naming is written in BFL naming unless
    /// `--names diffusers`. Embedders and the final layer stay at source precision, 1-D and tiny
    /// tensors in F32, as ComfyUI-GGUF does.
    Convert(ConvertArgs),
    /// Decode every weight to BF16 (or F32) safetensors under its logical name.
    ///
    /// INPUT is anything `inspect` reads: dense or sharded safetensors, GGUF of any type lowbit
    /// decodes, and the packed layouts (lowbit's, bitsandbytes NF4, ComfyUI and BFL FP8).
    Dequantize(DequantizeArgs),
    /// Compare two checkpoints tensor by tensor: relative error, max abs error and SNR of A
    /// against the reference B (schema of --json: formats/dequantize-diff.md).
    ///
    /// Tensors are matched by BFL name; a diffusers-named side is mapped to BFL names first.
    Diff(DiffArgs),
}

#[derive(Debug, Args)]
pub(crate) struct DequantizeArgs {
    /// Checkpoint to decode.
    pub(crate) input: PathBuf,
    /// Output file (.safetensors unless --force).
    #[arg(short, long, value_name = "OUT.safetensors")]
    pub(crate) output: PathBuf,
    /// Element type written.
    #[arg(long, value_enum, default_value_t = OutDtype::Bf16)]
    pub(crate) dtype: OutDtype,
    /// Write the output even if its extension is not .safetensors.
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OutDtype {
    /// bfloat16, rounded to nearest even.
    Bf16,
    /// float32, exactly as decoded.
    F32,
}

#[derive(Debug, Args)]
pub(crate) struct DiffArgs {
    /// The checkpoint under test.
    pub(crate) a: PathBuf,
    /// The reference: errors are relative to its values.
    pub(crate) b: PathBuf,
    /// Print JSON instead of a table (schema: formats/dequantize-diff.md).
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ConvertArgs {
    /// Checkpoint to convert.
    pub(crate) input: PathBuf,
    /// Output file. Its extension must be the target's (.gguf) unless --force-extension.
    #[arg(short, long, value_name = "OUT.gguf")]
    pub(crate) output: PathBuf,
    /// Target: gguf:TYPE with TYPE one of f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k q4_k q5_k
    /// q6_k tq1_0 tq2_0, or a mix q3_k_m q4_k_m q5_k_m.
    #[arg(long, value_name = "gguf:TYPE")]
    pub(crate) to: Option<String>,
    /// Per-tensor type: REGEX=TYPE, matched against the whole output name; repeatable, the last
    /// match wins.
    #[arg(long = "tensor-type", value_name = "REGEX=TYPE")]
    pub(crate) tensor_type: Vec<String>,
    /// A recipe file (TOML: `to` and `[[rules]]`, see formats/recipe.md); command-line options
    /// come after it and win.
    #[arg(long, value_name = "FILE.toml")]
    pub(crate) recipe: Option<PathBuf>,
    /// Output tensor naming.
    #[arg(long, value_enum, default_value_t = Names::Bfl)]
    pub(crate) names: Names,
    /// Print the plan (each tensor, its type, size and why) and write nothing. It refuses
    /// exactly what a real run refuses, output checks included.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Worker threads, 1 to 1024 (default: one per core).
    #[arg(long, default_value_t = 0, value_parser = threads)]
    pub(crate) threads: usize,
    /// Write the output even if its extension is not the target format's.
    #[arg(long)]
    pub(crate) force_extension: bool,
    /// Write NaN or infinite weights instead of stopping at the first one.
    #[arg(long)]
    pub(crate) allow_non_finite: bool,
}

/// Parses `--threads`: 0 (one per core) up to lowbit's bound.
fn threads(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if n > lowbit_convert::MAX_THREADS {
        return Err(format!("at most {} threads", lowbit_convert::MAX_THREADS));
    }
    Ok(n)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Names {
    /// Black Forest Labs' names (ComfyUI-GGUF, diffusers single-file, stable-diffusion.cpp).
    Bfl,
    /// diffusers' names.
    Diffusers,
}

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// Checkpoint to inspect.
    pub(crate) path: PathBuf,
    /// Print JSON instead of tables (schema: formats/inspect-json.md).
    #[arg(long)]
    pub(crate) json: bool,
    /// Also list every tensor (name, shape, type, size) after the summary.
    #[arg(long)]
    pub(crate) tensors: bool,
    /// Also draw bits per weight along the depth of the model as an SVG file.
    #[arg(long, value_name = "OUT.svg")]
    pub(crate) plot: Option<PathBuf>,
}
