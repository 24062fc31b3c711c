//! `cargo xtask`: the project's chores, in Rust so they run wherever cargo does.
//!
//! - `fixtures [--check]`: write (or compare) every committed fixture under `fixtures/`.
//! - `ci`: what CI runs: the pinned Python interop environment and NVRTC, fmt, clippy, the tests.
//! - `bench-inspect`: time `lowbit inspect` on a sparse FLUX.1-dev-sized checkpoint.
//! - `bench-quant`: lowbit's quantizers against ggml's C code and the `gguf` package, in Mparam/s.
//! - `bench-convert [TARGET…]`: end-to-end `lowbit convert` of a 1.1 GB FLUX-shaped file against
//!   `cp`, GGUF and packed safetensors targets.
//! - `bench-packed`: the packed schemes' quantizers against bitsandbytes, ml_dtypes and numpy,
//!   then the storage table of `bench-size`.
//! - `flux-dev [--out DIR] [--seed N] [--blocks D,S] [--force] [--check]`: a full-size FLUX.1-dev
//!   BF16 checkpoint with realistic values and its calibration statistics (SVDQuant benchmark).
//! - `bench-svdq [--full]`: SVDQuant on `flux-dev`'s checkpoint: randomized SVD time and
//!   residual per FLUX layer shape, fidelity against round-to-nearest; `--full` converts it all.
//! - `bench-size`: file size and bits/weight of each packed preset on FLUX.1-dev (dry runs).
//! - `bench-zstd [--input FILE] [--level N] [--targets T,…]`: what `--compress zstd` gains per
//!   layout on realistic FLUX.1-dev weights (sizes, bits/weight, time, entropy of the codes).
//! - `gpu-data --out DIR [--seed N]`: `DIR/odd.safetensors`, a small BF16 checkpoint whose
//!   weight shapes reach the GEMM kernels' edges, for `lowbit validate`.
//! - `gpu-bundle [--out DIR]`: release `lowbit` and `xtask`, `gpu_peers.py` and
//!   `scripts/gpu-run.sh` in `target/gpu-bundle/`, the folder the GPU machine runs.
//! - `nvrtc`: `ci`'s NVRTC step alone (the pinned wheel into `target/nvrtc/`); prints the folder
//!   to put on `LD_LIBRARY_PATH`.
//! - `fuzz [TARGET…] [--seconds N | --runs N] [--jobs J] [--keep-going] [--smoke] [--asan]`:
//!   seed and run the cargo-fuzz targets of `fuzz/`; `fuzz-seed` only writes their seed corpora.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a developer tool reports on the terminal"
)]

mod bench;
mod bench_convert;
mod bench_packed;
mod bench_size;
mod bench_svdq;
mod bench_zstd;
mod ci;
mod fixtures;
mod flux_dev;
mod flux_dev_stats;
mod fuzz;
mod fuzz_nunchaku;
mod gpu_bundle;
mod gpu_data;

use std::path::PathBuf;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_owned()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["fixtures"] => fixtures::write(false),
        ["fixtures", "--check"] => fixtures::write(true),
        ["ci"] => ci::run(),
        ["bench-inspect"] => bench::inspect(),
        ["bench-quant"] => bench::quant(),
        ["bench-convert", targets @ ..] => bench_convert::run(targets),
        ["bench-packed"] => bench_packed::run(),
        ["bench-size"] => bench_size::run(),
        ["bench-zstd", rest @ ..] => bench_zstd::run(rest),
        ["bench-svdq", rest @ ..] => bench_svdq::run(rest),
        ["flux-dev", rest @ ..] => flux_dev::run(rest),
        ["gpu-data", rest @ ..] => gpu_data::run(rest),
        ["gpu-bundle", rest @ ..] => gpu_bundle::run(rest),
        ["nvrtc"] => ci::nvrtc_only(),
        ["fuzz-seed"] => fuzz::seed_only(),
        ["fuzz", rest @ ..] => fuzz::run(rest),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n\
                 commands:\n  \
                 fixtures [--check]   regenerate fixtures/ (or check it is current)\n  \
                 ci                   set up the interop venv, ggml reference and NVRTC, then fmt,\n  \
                 \x20                    clippy, tests\n  \
                 bench-inspect        time `lowbit inspect` on a sparse 23.8 GB FLUX.1-dev header\n  \
                 bench-quant          quantizer speed (Mparam/s) vs ggml's C and the gguf package\n  \
                 bench-convert [TARGET…]\n  \
                 \x20                    end-to-end convert of a 1.1 GB FLUX-shaped file vs cp (GGUF\n  \
                 \x20                    and packed targets; names run a subset)\n  \
                 bench-packed         packed quantizers (1 thread) vs bitsandbytes, ml_dtypes, numpy;\n  \
                 \x20                    then the bench-size table\n  \
                 bench-size           file size and bits/weight of the packed presets on FLUX.1-dev\n  \
                 bench-zstd [--input FILE] [--level N] [--targets T,…]\n  \
                 \x20                    --compress zstd's gain per layout on realistic FLUX weights\n  \
                 bench-svdq [--full]  SVDQuant on flux-dev's checkpoint: SVD, fidelity, full run\n  \
                 flux-dev [--out DIR] [--seed N] [--blocks D,S] [--force] [--check]\n  \
                 \x20                    a 23.8 GB FLUX.1-dev BF16 checkpoint with realistic values\n  \
                 \x20                    and its calibration statistics (default target/flux-dev)\n  \
                 gpu-data --out DIR [--seed N]\n  \
                 \x20                    DIR/odd.safetensors: small BF16 weights with N off 64 and\n  \
                 \x20                    K off 128, realistic values, for `lowbit validate`\n  \
                 gpu-bundle [--out DIR]\n  \
                 \x20                    release lowbit and xtask, gpu_peers.py and\n  \
                 \x20                    scripts/gpu-run.sh in target/gpu-bundle/ (at most 48 MiB),\n  \
                 \x20                    for the device tool to carry to the GPU machine\n  \
                 nvrtc                ci's NVRTC step: the pinned wheel into target/nvrtc/; prints\n  \
                 \x20                    the folder for LD_LIBRARY_PATH\n  \
                 fuzz [TARGET…] [--seconds N | --runs N] [--jobs J] [--keep-going]\n  \
                 \x20    [--smoke] [--asan]\n  \
                 \x20                    seed, build and run the cargo-fuzz targets (60 s each;\n  \
                 \x20                    --smoke: 20 s each), then print executions, coverage,\n  \
                 \x20                    corpus size and crashes per target\n  \
                 fuzz-seed            write the seed corpora into target/fuzz/corpus/ only"
            );
            std::process::exit(2);
        }
    }
}
