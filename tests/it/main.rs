//! End-to-end and interop tests: the real `lowbit` binary on fixtures, our readers against the
//! reference Python packages (`gguf`, `safetensors`, `ml_dtypes`), and our quantizers against
//! ggml's own C code and the `gguf` package, byte for byte (`quant_exact`).
//!
//! One test binary, as rust-analyzer and uv do, so the workspace links it once.
//! Interop tests need the pinned packages of `tests/interop/requirements.txt`; `cargo xtask ci`
//! provides them through `LOWBIT_PYTHON`. Without them those tests fail and say how to fix it.
//! `quant_exact` also compiles ggml's quantizers (`tests/interop/ggml_ref.py build`, cached under
//! `target/ggml-ref/`), which needs a C compiler and, the first time, network access.

mod bad_inputs;
mod convert;
mod diffusers;
mod fixtures;
mod inspect;
mod interop;
mod quant_exact;
mod safety;
mod support;
mod tidy;
