//! End-to-end and interop tests: the real `lowbit` binary on fixtures, our readers against the
//! reference Python packages (`gguf`, `safetensors`, `ml_dtypes`), and our quantizers against
//! ggml's own C code and the `gguf` package, byte for byte (`quant_exact`).
//!
//! One test binary, as rust-analyzer and uv do, so the workspace links it once.
//! Interop tests need the pinned packages of `tests/interop/requirements.txt`; `cargo xtask ci`
//! provides them through `LOWBIT_PYTHON`. Without them those tests fail and say how to fix it.
//! `quant_exact` also compiles ggml's quantizers (`tests/interop/ggml_ref.py build`, cached under
//! `target/ggml-ref/`), which needs a C compiler and, the first time, network access.
//! Tests on the full-width FLUX model (`naming`, `diffusers`, `runtimes`, the diffusers inspect and
//! `safetensors` checks) run diffusers through `LOWBIT_TORCH_PYTHON`
//! (`tests/interop/requirements-torch.txt`); that model, its diffusers twin and its Q8_0 and
//! Q4_K_M conversions are made once per test process (`support::flux_3072`).

mod bad_inputs;
mod budget;
mod calibration;
mod chunks;
mod convert;
mod dequantize;
mod diff;
mod diffusers;
mod fixtures;
mod fp8;
mod inspect;
mod int4;
mod interop;
mod naming;
mod nf4;
mod nunchaku;
mod nunchaku_read;
mod nvfp4;
mod packed;
mod quant_exact;
mod round_trip;
mod runtimes;
mod safety;
mod sdnq;
mod support;
mod svdq;
mod ternary;
mod tidy;
mod validate;
mod zstd_pack;
