//! Converting a checkpoint: deciding each tensor's output type and name, then writing the file.
//!
//! [`Recipe`] holds what the user asked for (`--to gguf:q4_k_m`, `--tensor-type REGEX=TYPE`, a
//! recipe file). [`Plan::new`] turns a checkpoint and a recipe into a list of output tensors
//! without reading any weights, and validates it completely; [`check_output`] validates the
//! output path; [`write_gguf`] executes the plan through an [`AtomicFile`].
//!
//! **Architecture Invariant:** the plan is a pure function of the checkpoint's header and the
//! recipe, and writing is a pure function of the plan and the weights: the output is the same
//! bytes whatever the thread count. Every refusal happens in planning or in the output check,
//! before any data is read, so `--dry-run` refuses exactly what a real run refuses (apart from
//! the weights' own values: NaN, infinities, read errors).

mod atomic;
pub mod budget;
mod calib;
mod error;
mod folder;
mod logical;
mod nunchaku;
mod output;
mod packed;
mod plan;
mod recipe;
mod sdnq;
mod stats;
mod svdq;
mod write;
mod zstd_pack;

pub use atomic::AtomicFile;
pub use calib::Calibration;
pub use error::Error;
pub use folder::{MODEL_FILE, diffusers_config, weights_path, writes_folder};
pub use logical::Part;
pub use nunchaku::{check_export, lite_config, write_export};
pub use output::{check_output, check_pack_output};
pub use packed::{packed_file_bytes, packed_metadata, write_packed};
pub use plan::dense_dtype;
pub use plan::{OutputNaming, Plan, PlannedTensor, Reason};
pub use recipe::{Export, Mix, PRESETS, Recipe, Rule, RuleType, SchemeOptions, Target, preset};
pub use svdq::{LayerReport, SvdqOptions, check_svdq};
pub use write::{
    CHUNK_BYTES, MAX_THREADS, Options, Written, layout, metadata, preallocate, write_gguf,
};
pub use zstd_pack::{PackWritten, Zstd, check_zstd, write_zstd_pack};
