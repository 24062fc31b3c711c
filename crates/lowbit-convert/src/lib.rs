//! Converting a checkpoint: deciding each tensor's output type and name, then writing the file.
//!
//! [`Recipe`] holds what the user asked for (`--to gguf:q4_k_m`, `--tensor-type REGEX=TYPE`, a
//! recipe file). [`Plan::new`] turns a checkpoint and a recipe into a list of output tensors
//! without reading any weights; [`write_gguf`] executes the plan.
//!
//! **Architecture Invariant:** the plan is a pure function of the checkpoint's header and the
//! recipe, and writing is a pure function of the plan and the weights: the output is the same
//! bytes whatever the thread count.

mod error;
mod plan;
mod recipe;
mod write;

pub use error::Error;
pub use plan::{MAX_NAME_LEN, OutputNaming, Part, Plan, PlannedTensor, Reason};
pub use recipe::{Mix, Recipe, Rule, Target, WRITABLE, parse_type};
pub use write::{CHUNK_BYTES, Options, Written, layout, metadata, write_gguf};
