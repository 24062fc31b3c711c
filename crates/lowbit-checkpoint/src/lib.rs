//! Opening any checkpoint lowbit reads, behind one interface.
//!
//! [`Checkpoint::open`] accepts a single safetensors file, a sharded checkpoint (its
//! `*.safetensors.index.json`, or a directory holding one, such as a diffusers `transformer/`
//! folder or the model folder above it), a GGUF v2/v3 file, or a zstd pack of a safetensors file
//! (`formats/zstd.md`), whose tensors are decompressed on first access into a temporary file.
//! Files are memory-mapped and only their headers are parsed; tensor bytes are read when asked,
//! either raw ([`Checkpoint::raw`]) or decoded to `f32` rows ([`Checkpoint::read_rows_f32`]),
//! so a 24 GB checkpoint is inspected without reading 24 GB.
//! [`Checkpoint::layers`] groups the tensors of packed layouts (a packed weight, its scales and
//! markers) into logical weights, and [`Checkpoint::read_layer_f32`] decodes any of them.

mod error;
mod layers;
mod open;
mod pack;
mod relay;
mod rows;
mod source;

pub use error::Error;
pub use layers::{Layer, SCHEMES_KEY};
pub use lowbit_layout::{Fp8Format, ScaleGranularity, Scheme};
pub use open::{Checkpoint, Format, Metadata, StorageType, Tensor};
pub use pack::PackInfo;

/// The GGUF metadata types that [`Metadata::Gguf`] holds, so that users of this crate need not
/// depend on `lowbit-gguf` to read them.
pub mod gguf {
    pub use lowbit_gguf::{Array, Value, type_id};
}
