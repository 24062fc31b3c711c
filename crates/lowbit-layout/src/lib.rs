//! The packed safetensors layouts: what each scheme stores for one weight (tensor names, dtypes,
//! shapes, bit order, scale convention) and how to decode it back to `f32`.
//!
//! One module per scheme, named as its spec in `formats/` and its quantizer in
//! `lowbit-quant::packed`: `ternary` (lowbit's 2-bit ternary), `bitnet` (Hugging Face BitNet
//! packing), `int4` (group-wise int4), `nf4` (bitsandbytes NF4), `fp8` (plain, ComfyUI and BFL
//! FP8), `nvfp4` (ComfyUI and BFL NVFP4), `svdq` (SVDQuant: smoothing, low-rank branch, int4
//! residual). [`Scheme`] lists them; [`Scheme::stored`] is the one place that says which
//! tensors a scheme writes, used by the writer, the readers and the tests alike.
//! [`gemm`] is the CPU reference product `X · Wᵀ` of any stored weight (packed, GGUF or dense)
//! that GPU kernels are checked against (`formats/gemm.md`).
//!
//! **Architecture Invariant:** format code: no I/O, no quantizers. Decoding takes the stored
//! bytes as slices and checks their lengths before indexing.

pub mod bitnet;
mod error;
pub mod fp8;
pub mod gemm;
pub mod int4;
pub mod nf4;
pub mod nunchaku;
pub mod nvfp4;
mod scheme;
pub mod sdnq;
pub mod svdq;
pub mod ternary;

pub use error::{Error, check_len};
pub use scheme::{Fp8Format, NF4_BLOCK, NF4_NESTED_BLOCK, ScaleGranularity, Scheme, Stored, Unfit};
