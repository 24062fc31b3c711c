//! Quantizers for the packed safetensors layouts of `lowbit-layout`, one module per scheme
//! (`ternary` also serves `bitnet`, whose weights are the same ternary codes).
//!
//! Pure functions over slices, like the ggml quantizers: no I/O, no threads.

pub mod fp8;
pub mod int4;
pub mod nf4;
pub mod ternary;
