//! diffusers loads a BFL-named GGUF written by lowbit and computes what the dequantized model
//! computes (the end-to-end check of the FLUX conventions).
//!
//! diffusers' FLUX converter hard-codes FLUX's width (3072), so the model here is FLUX-shaped at
//! full width with one double and one single block: about 0.5 B parameters, 1 GB in BF16.
//! Needs the torch environment that `cargo xtask ci` creates (`LOWBIT_TORCH_PYTHON`).

use crate::support::{lowbit, root};
use lowbit_fixtures::flux::{FluxConfig, generate_bfl};
use lowbit_fixtures::write::safetensors_bytes;
use std::path::PathBuf;
use std::process::Command;

fn torch_python() -> PathBuf {
    std::env::var_os("LOWBIT_TORCH_PYTHON").map_or_else(|| PathBuf::from("python3"), PathBuf::from)
}

#[test]
fn diffusers_loads_lowbit_gguf_and_matches_the_dequantized_model() {
    let cfg = FluxConfig {
        hidden: 3072,
        head_dim: 128,
        mlp_hidden: 12288,
        in_channels: 64,
        context_dim: 256,
        vec_dim: 256,
        time_dim: 256,
        double_blocks: 1,
        single_blocks: 1,
        guidance: true,
    };
    // LOWBIT_KEEP_DIR keeps the files for debugging; by default they live in a temporary folder.
    let tmp = tempfile::tempdir().unwrap();
    let keep = std::env::var_os("LOWBIT_KEEP_DIR").map(PathBuf::from);
    let dir = keep.as_deref().unwrap_or(tmp.path());
    let input = dir.join("flux-3072.safetensors");
    std::fs::write(&input, safetensors_bytes(&generate_bfl(&cfg, 11))).unwrap();
    for (target, exact) in [("q8_0", true), ("q4_k_m", false)] {
        let out = dir.join(format!("flux-3072-{target}.gguf"));
        let o = lowbit(&[
            "convert",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--to",
            &format!("gguf:{target}"),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let run = Command::new(torch_python())
            .arg(root().join("tests/interop/diffusers_flux.py"))
            .arg(&out)
            .args(exact.then_some("--exact-fp16"))
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run {} ({e}); run `cargo xtask ci`", torch_python().display())
            });
        let stdout = String::from_utf8_lossy(&run.stdout);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            run.status.success(),
            "{target}: diffusers check failed (set LOWBIT_TORCH_PYTHON to the venv `cargo xtask ci` makes):\n{stdout}\n{stderr}"
        );
        let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert!(report["quantized_parameters"].as_u64().unwrap() >= 10, "{target}: {report}");
        assert_eq!(report["output_shape"], serde_json::json!([1, 16, 64]));
    }
}
