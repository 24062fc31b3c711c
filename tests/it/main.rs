//! End-to-end and interop tests: the real `lowbit` binary on fixtures, and our readers against the
//! reference Python packages (`gguf`, `safetensors`, `ml_dtypes`).
//!
//! One test binary, as rust-analyzer and uv do, so the workspace links it once.
//! Interop tests need the pinned packages of `tests/interop/requirements.txt`; `cargo xtask ci`
//! provides them through `LOWBIT_PYTHON`. Without them those tests fail and say how to fix it.

mod bad_inputs;
mod fixtures;
mod inspect;
mod interop;
mod support;
mod tidy;
