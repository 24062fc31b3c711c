//! Errors from planning and running a conversion, one variant per cause.
//!
//! Each message names what is wrong once: the file, the tensor and the offending value where
//! there are some. Wrapped causes (an I/O error, a reader's error) are not repeated in the
//! message; they follow through `source()`, so `{:#}` in anyhow prints `path: cause` on one line.
//! [`Error::is_usage`] separates mistakes in what was asked (exit code 2) from problems with the
//! files (exit code 1).

use std::path::PathBuf;

/// Why a conversion cannot be planned or finished.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--to` names a format lowbit does not write.
    #[error("unknown output format `{format}` in `{given}`; lowbit writes gguf:TYPE")]
    UnknownFormat {
        /// The whole `--to` value.
        given: String,
        /// The part before the colon.
        format: String,
    },
    /// A target or rule names a type lowbit does not write.
    #[error("unknown {what} `{given}`{}; choose one of: {choices}", suggest(suggestion.as_deref()))]
    UnknownType {
        /// `target type` or `tensor type`.
        what: &'static str,
        /// The name as written.
        given: String,
        /// The nearest valid name, when one is close.
        suggestion: Option<String>,
        /// Every valid name.
        choices: String,
    },
    /// A `--tensor-type` value without `=`.
    #[error("tensor type rule `{rule}` is not REGEX=TYPE")]
    RuleSyntax {
        /// The rule as written.
        rule: String,
    },
    /// A rule names a type the target's file cannot hold.
    #[error("a rule's type `{given}` does not fit this target: {why}")]
    RuleType {
        /// The type as written.
        given: String,
        /// Why not.
        why: String,
    },
    /// An option that does not apply to the target (`--group` with `--to ternary`).
    #[error("{option} does not apply to --to {target}")]
    OptionMismatch {
        /// The option as written.
        option: String,
        /// The target.
        target: String,
    },
    /// A rule's pattern is not a valid regular expression.
    #[error("bad regex `{pattern}` in a tensor type rule: {message}")]
    BadRegex {
        /// The pattern.
        pattern: String,
        /// The regex crate's explanation, on one line.
        message: String,
    },
    /// The recipe file is not valid TOML or has unknown keys.
    #[error("{}: {message}", path.display())]
    RecipeFile {
        /// The recipe file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
    /// Neither `--to` nor the recipe names a target.
    #[error("no target: pass --to gguf:TYPE or set `to` in the recipe")]
    NoTarget,
    /// `--threads` beyond what lowbit starts.
    #[error("--threads {threads} is more than the {max} lowbit starts")]
    TooManyThreads {
        /// What was asked.
        threads: usize,
        /// The bound.
        max: usize,
    },
    /// The output's extension says another format than the target writes.
    #[error(
        "{}: the target {target} writes a {format} file, but the name does not end in .{extension}; rename it or pass --force-extension",
        output.display()
    )]
    OutputExtension {
        /// The output path.
        output: PathBuf,
        /// The target as written (`gguf:q8_0`).
        target: String,
        /// The format written (`GGUF`).
        format: &'static str,
        /// The extension expected (`gguf`).
        extension: &'static str,
    },
    /// An SDNQ target for BFL names or a checkpoint that is not FLUX.
    #[error("{}: {reason}", file.display())]
    Sdnq {
        /// The input.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// `--names diffusers` for a checkpoint that is not FLUX.
    #[error("{}: --names diffusers needs a FLUX checkpoint, and none was detected", file.display())]
    NotFlux {
        /// The input.
        file: PathBuf,
    },

    /// A tensor's rank or shape is not what its role needs.
    #[error("{}: tensor `{tensor}` has shape {shape:?}; {reason}", file.display())]
    Shape {
        /// The file holding it.
        file: PathBuf,
        /// The tensor, as stored.
        tensor: String,
        /// Its shape, torch order.
        shape: Vec<u64>,
        /// What the role needs.
        reason: String,
    },
    /// A tensor is stored in a type lowbit does not convert from.
    #[error("{}: tensor `{tensor}` is stored as {stored}; {reason}", file.display())]
    SourceType {
        /// The file holding it.
        file: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its storage type.
        stored: String,
        /// Why that is refused.
        reason: &'static str,
    },
    /// A diffusers checkpoint lacks some parts of a tensor that BFL naming fuses.
    #[error("{}: `{tensor}` is made of {needed}, but only {found} are present", file.display())]
    IncompleteGroup {
        /// The file holding the parts that are present.
        file: PathBuf,
        /// The fused BFL tensor.
        tensor: String,
        /// The diffusers parts it needs.
        needed: String,
        /// The parts found.
        found: String,
    },
    /// Two diffusers parts of one fused tensor disagree in row shape or type.
    #[error("{}: cannot fuse {first} with {other} into `{tensor}`", file.display())]
    CannotFuse {
        /// The file holding them.
        file: PathBuf,
        /// The fused BFL tensor.
        tensor: String,
        /// The first part: name, shape and type.
        first: String,
        /// The part that disagrees: name, shape and type.
        other: String,
    },
    /// An output name longer than GGUF readers accept.
    #[error(
        "{}: tensor `{tensor}`: the name is {len} bytes; GGUF readers accept at most {max}",
        file.display()
    )]
    NameTooLong {
        /// The file holding the input tensor it comes from.
        file: PathBuf,
        /// The output name.
        tensor: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The output would pass what a GGUF file can describe.
    #[error("tensor `{tensor}`: {reason}")]
    Layout {
        /// The output tensor.
        tensor: String,
        /// What the layout refuses.
        reason: String,
    },
    /// A plan made from another checkpoint: it names an input tensor this one lacks.
    #[error("{}: has no tensor `{tensor}`; the plan was made from another checkpoint", file.display())]
    PlanMismatch {
        /// The checkpoint written from.
        file: PathBuf,
        /// The input tensor the plan names.
        tensor: String,
    },
    /// A weight is NaN or infinite.
    #[error(
        "{}: tensor `{tensor}`: non-finite value {value} at index {index:?}; fix the checkpoint or pass --allow-non-finite to write it as is",
        file.display()
    )]
    NonFinite {
        /// The file holding it (the first part's file for a fused tensor).
        file: PathBuf,
        /// The tensor, as it is named in the output.
        tensor: String,
        /// Index in torch order, in the output tensor.
        index: Vec<u64>,
        /// The value.
        value: f32,
    },
    /// Reading the input failed.
    #[error(transparent)]
    Read(#[from] lowbit_checkpoint::Error),

    /// The output path is one of the input files (the same device and inode).
    #[error(
        "{}: this is the input file {}; lowbit never overwrites its input",
        output.display(),
        input.display()
    )]
    OutputIsInput {
        /// The output path as given.
        output: PathBuf,
        /// The input file it is.
        input: PathBuf,
    },
    /// The output path names a directory.
    #[error("{}: is a directory; give a file name", output.display())]
    OutputIsDirectory {
        /// The output path.
        output: PathBuf,
    },
    /// The output's directory does not exist or cannot be written.
    #[error("{}: cannot write in {}: {problem}", output.display(), dir.display())]
    OutputDir {
        /// The output path.
        output: PathBuf,
        /// Its directory.
        dir: PathBuf,
        /// What is wrong with the directory.
        problem: String,
    },
    /// Writing the output failed; the temporary file has been removed.
    #[error("{}", path.display())]
    Io {
        /// The output path (never the temporary file's name).
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The worker threads could not be started.
    #[error("cannot start {threads} worker threads: {message}")]
    Threads {
        /// How many were asked for.
        threads: usize,
        /// The operating system's answer.
        message: String,
    },
    /// Stopped by the user; nothing was written at the output path.
    #[error("interrupted; no output written")]
    Cancelled,
    /// `--compress` asks for something lowbit does not write: an unknown method or level, or a
    /// target whose output is not one safetensors file.
    #[error("--compress {given}: {reason}")]
    Compress {
        /// The `--compress` value.
        given: String,
        /// Why it cannot be done.
        reason: String,
    },
    /// A zstd pack cannot hold the file (a tensor above a frame's 32-bit size).
    #[error("{}", path.display())]
    Pack {
        /// The output path.
        path: PathBuf,
        /// What does not fit.
        source: lowbit_safetensors::PackError,
    },
    /// An SVDQuant layer the statistics or options cannot serve.
    #[error("tensor `{tensor}`: {reason}")]
    Svdq {
        /// The output weight.
        tensor: String,
        /// What is missing or wrong.
        reason: String,
    },
    /// A calibration statistics file cannot be read.
    #[error("{}: cannot read the calibration statistics", file.display())]
    CalibrationIo {
        /// The statistics file.
        file: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A calibration statistics file is not a valid safetensors file.
    #[error("{}: not a calibration statistics file", file.display())]
    CalibrationFile {
        /// The statistics file.
        file: PathBuf,
        /// What the safetensors reader refuses.
        source: lowbit_safetensors::Error,
    },
    /// The `lowbit.calibration` metadata of a statistics file is missing or wrong.
    #[error("{}: metadata `lowbit.calibration`: {reason}", file.display())]
    CalibrationMetadata {
        /// The statistics file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor of a statistics file is not what formats/calibration.md allows.
    #[error("{}: calibration tensor `{tensor}`: {reason}", file.display())]
    CalibrationTensor {
        /// The statistics file.
        file: PathBuf,
        /// The tensor, as stored.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
}

fn suggest(s: Option<&str>) -> String {
    s.map_or_else(String::new, |s| format!(" (did you mean `{s}`?)"))
}

impl Error {
    /// Whether the error is in what was asked (options, recipe) rather than in the files: the
    /// command line exits with 2 for these, 1 for the rest.
    #[must_use]
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::UnknownFormat { .. }
                | Error::UnknownType { .. }
                | Error::RuleSyntax { .. }
                | Error::RuleType { .. }
                | Error::OptionMismatch { .. }
                | Error::BadRegex { .. }
                | Error::RecipeFile { .. }
                | Error::NoTarget
                | Error::TooManyThreads { .. }
                | Error::OutputExtension { .. }
                | Error::NotFlux { .. }
                | Error::Sdnq { .. }
                | Error::Svdq { .. }
                | Error::Compress { .. }
        )
    }
}
