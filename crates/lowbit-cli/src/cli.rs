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
    /// Convert a checkpoint to GGUF (bit-exact with ggml's quantizers) or to a packed
    /// safetensors layout (ternary, BitNet, int4, bitsandbytes NF4, FP8 and NVFP4 variants,
    /// SVDQuant).
    ///
    /// INPUT is anything `inspect` reads (BF16/F16/F32/FP8 safetensors, sharded, or a GGUF with
    /// F32/F16/BF16 weights). FLUX in diffusers naming is written in BFL naming unless
    /// `--names diffusers`. Embedders and the final layer stay at source precision, 1-D and tiny
    /// tensors in F32, as ComfyUI-GGUF does.
    Convert(Box<ConvertArgs>),
    /// Decode every weight to BF16 (or F32) safetensors under its logical name.
    ///
    /// INPUT is anything `inspect` reads: dense or sharded safetensors, GGUF of any type lowbit
    /// decodes, and the packed layouts (lowbit's, bitsandbytes NF4, ComfyUI and BFL FP8 and
    /// NVFP4).
    Dequantize(DequantizeArgs),
    /// Compare two checkpoints tensor by tensor: relative error, max abs error and SNR of A
    /// against the reference B (schema of --json: formats/dequantize-diff.md).
    ///
    /// Tensors are matched by BFL name; a diffusers-named side is mapped to BFL names first.
    Diff(DiffArgs),
    /// Run every quantized layer's fused GEMM on the GPU and compare it with the CPU reference on
    /// the same packed bytes (formats/gemm.md), on seeded activations with outlier channels.
    ///
    /// FILE is anything `inspect` reads. Prints one row per layer and kernel (FP8 layers run
    /// W8A16 and W8A8): relative error against the BF16-rounded reference, max abs error, the
    /// kernel's tolerance, and with --reference the quantization error of the layer's output
    /// against the original weights. Exits 1 when any kernel misses its tolerance.
    Validate(ValidateArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// Quantized checkpoint to check.
    pub(crate) file: PathBuf,
    /// cuda: run the kernels and compare with the CPU reference; cpu: the CPU reference alone
    /// (with --reference, the quantization error).
    #[arg(long, value_enum, default_value_t = Device::Cuda)]
    pub(crate) device: Device,
    /// Only layers whose name matches one of these globs (`*` any run, `?` one character;
    /// comma-separated or repeated).
    #[arg(long, value_delimiter = ',', value_name = "GLOB")]
    pub(crate) layers: Vec<String>,
    /// Tokens (rows of the activations), 1 to 8192. The reference checks at most 64 of them,
    /// evenly spaced; every GPU output value is checked for being written and finite.
    #[arg(long, default_value_t = 64, value_name = "M")]
    pub(crate) tokens: u32,
    /// The original (unquantized) checkpoint: also report each layer's output error against it.
    #[arg(long, value_name = "ORIGINAL")]
    pub(crate) reference: Option<PathBuf>,
    /// Seed of the activations.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Also time every kernel at 1, 16 and 4608 tokens against cuBLAS BF16 on the same shape
    /// (median of 20 runs after 3 warm-up runs, CUDA events).
    #[arg(long)]
    pub(crate) bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Device {
    /// The first CUDA device.
    Cuda,
    /// The CPU reference only.
    Cpu,
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
    /// Output file. Its extension must be the target's (.gguf or .safetensors) unless
    /// --force-extension; NF4 in diffusers names writes a diffusers model folder when OUT does
    /// not end in .safetensors.
    #[arg(short, long, value_name = "OUT", required_unless_present = "print_recipe")]
    pub(crate) output: Option<PathBuf>,
    /// Target: gguf:TYPE with TYPE one of f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k q4_k q5_k
    /// q6_k tq1_0 tq2_0, or a mix q3_k_m q4_k_m q5_k_m; or a safetensors layout: ternary,
    /// bitnet, int4, nf4, fp8, comfy:fp8, bfl:fp8, comfy:nvfp4, bfl:nvfp4, svdq-w4a4,
    /// svdq-w4a16 (formats/*.md); or svdq-w4a4 re-laid for a runtime: nunchaku:int4 (Nunchaku's
    /// single file), nunchaku-lite:int4 (diffusers' nunchaku_lite model folder).
    #[arg(long, value_name = "TARGET")]
    pub(crate) to: Option<String>,
    /// A named recipe: flux-ternary, flux-int4, flux-nf4, flux-fp8 (see --print-recipe).
    #[arg(long, value_name = "NAME", conflicts_with = "recipe")]
    pub(crate) preset: Option<String>,
    /// Print the effective recipe (TOML, editable, for --recipe) and exit.
    #[arg(long)]
    pub(crate) print_recipe: bool,
    /// Ternary: one absmean scale per output channel (default) or per tensor.
    #[arg(long, value_enum)]
    pub(crate) scale: Option<Scale>,
    /// int4: elements per group along the input dimension: 32, 64 (default) or 128.
    #[arg(long)]
    pub(crate) group: Option<u32>,
    /// int4: a scale and a zero point per group instead of a symmetric scale.
    #[arg(long)]
    pub(crate) asym: bool,
    /// NF4: bitsandbytes' double quantization of the block absmax values.
    #[arg(long)]
    pub(crate) nf4_double_quant: bool,
    /// fp8 and comfy:fp8: E4M3 (default) or E5M2.
    #[arg(long, value_enum)]
    pub(crate) fp8: Option<Fp8>,
    /// svdq: calibration statistics (formats/calibration.md; scripts/collect_stats.py collects
    /// them). W4A4 needs them; W4A16 smooths only with them.
    #[arg(long, value_name = "FILE.safetensors")]
    pub(crate) stats: Option<PathBuf>,
    /// svdq: smoothing exponent α in [0, 1], `auto` (per layer, the α of a grid with the smallest
    /// output error; the default with --stats) or `none` (λ = 1).
    #[arg(long, value_parser = alpha)]
    pub(crate) alpha: Option<lowbit_svdq::Alpha>,
    /// svdq: rank of the low-rank branch (default 32).
    #[arg(long)]
    pub(crate) rank: Option<u16>,
    /// svdq: DeepCompressor's refinement iterations (the branch refitted to W − Q(residual)),
    /// keeping the best by output error (default 0: the truncated SVD).
    #[arg(long, default_value_t = 0)]
    pub(crate) refine: usize,
    /// svdq: ViDiT-Q timestep groups, one λ and residual per group (the statistics must have as
    /// many).
    #[arg(long, value_name = "G")]
    pub(crate) timestep_groups: Option<u16>,
    /// svdq: seed of the randomized SVDs and synthetic activations (default 0).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// svdq: mixed precision within an average of B bits per weight over the whole file: each
    /// SVDQuant and modulation layer is measured as svdq, int4 (W4A16), FP8 and BF16, and the
    /// choice with the least total output error is written as recipe rules.
    #[arg(long, value_name = "B", conflicts_with = "budget_gb")]
    pub(crate) budget_bits: Option<f64>,
    /// svdq: as --budget-bits, for a file of at most G gigabytes (10⁹ bytes).
    #[arg(long, value_name = "G")]
    pub(crate) budget_gb: Option<f64>,
    /// Write the effective recipe (with a budget's choices) to this TOML file.
    #[arg(long, value_name = "FILE.toml")]
    pub(crate) save_recipe: Option<PathBuf>,
    /// Per-tensor type: REGEX=TYPE, matched against the whole output name; repeatable, the last
    /// match wins.
    #[arg(long = "tensor-type", value_name = "REGEX=TYPE")]
    pub(crate) tensor_type: Vec<String>,
    /// A recipe file (TOML: `to` and `[[rules]]`, see formats/recipe.md); command-line options
    /// come after it and win.
    #[arg(long, value_name = "FILE.toml")]
    pub(crate) recipe: Option<PathBuf>,
    /// Output tensor naming (default: BFL; NF4 keeps a diffusers input's names).
    #[arg(long, value_enum)]
    pub(crate) names: Option<Names>,
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
    /// Write a safetensors target as a zstd pack (formats/zstd.md): one zstd frame per tensor
    /// and a seek table, read by every lowbit command as is, restored by `zstd -d`. LEVEL 1 to
    /// 22 (default 3). OUT must end in .safetensors.zst.
    #[arg(long, value_name = "zstd[:LEVEL]")]
    pub(crate) compress: Option<String>,
}

/// Parses `--alpha`: a number in [0, 1], `auto` or `none`.
fn alpha(s: &str) -> Result<lowbit_svdq::Alpha, String> {
    match s {
        "auto" => Ok(lowbit_svdq::Alpha::Auto),
        "none" => Ok(lowbit_svdq::Alpha::One),
        _ => match s.parse::<f32>() {
            Ok(a) if (0.0..=1.0).contains(&a) => Ok(lowbit_svdq::Alpha::Fixed(a)),
            _ => Err("a number from 0 to 1, `auto` or `none`".into()),
        },
    }
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
pub(crate) enum Scale {
    /// One scale per output channel.
    Channel,
    /// One scale per tensor.
    Tensor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Fp8 {
    /// float8_e4m3fn (largest finite 448).
    E4m3,
    /// float8_e5m2 (largest finite 57344).
    E5m2,
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
