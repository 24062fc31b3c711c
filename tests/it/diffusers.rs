//! diffusers loads lowbit's GGUF files and computes what the original BF16 model computes, within
//! each type's error; lowbit's Q8_0 file is byte for byte the one the `gguf` package writes.
//!
//! `tests/interop/diffusers_flux.py` holds the checks and their bounds: every weight and the
//! output against the BF16 original loaded by diffusers' `from_single_file`, lowbit's Q8_0 file
//! against a GGUF written by `gguf.quants.quantize` and `gguf.GGUFWriter` alone (same bytes,
//! identical outputs), and negative controls (swapped, reversed and mis-split weights) that must
//! fail the same checks. diffusers' FLUX converter hard-codes the width 3072, so the model is
//! [`crate::support::flux_3072`]. Needs `LOWBIT_TORCH_PYTHON` (see `run_torch_script`).

use crate::support::{flux_3072, flux_3072_gguf, run_torch_script};
use serde_json::{Value, json};

#[test]
fn diffusers_matches_the_bf16_original_and_the_gguf_package() {
    let work = tempfile::tempdir().unwrap();
    let stdout = run_torch_script(
        "diffusers_flux.py",
        &[
            flux_3072().as_os_str(),
            flux_3072_gguf("q8_0").as_os_str(),
            flux_3072_gguf("q4_k_m").as_os_str(),
            work.path().as_os_str(),
        ],
    );
    let r: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(r["ok"], true, "{r:#}");
    let same = &r["q8_0_vs_gguf_py"];
    assert_eq!(
        (same["tensors"].as_u64(), same["differing"].as_array().map(Vec::len)),
        (Some(52), Some(0)),
        "{r:#}"
    );
    assert_eq!(r["q8_0"]["output_identical_to_gguf_py"], true, "{r:#}");
    for target in ["q8_0", "q4_k_m"] {
        let t = &r[target];
        assert_eq!(t["weights_failing"], json!([]), "{target}: {r:#}");
        let (err, bound) = (t["output_error"].as_f64(), r["bounds"]["output"][target].as_f64());
        assert!(err.unwrap() <= bound.unwrap(), "{target}: output error: {r:#}");
        assert_eq!(t["output_shape"], json!([1, 16, 64]));
        let controls = t["controls"].as_array().unwrap();
        assert_eq!(controls.len(), 3);
        assert!(controls.iter().all(|c| c["weight_check_fails"] == true), "{target}: {r:#}");
    }
    let q8_controls = r["q8_0"]["controls"].as_array().unwrap();
    assert!(q8_controls.iter().all(|c| c["output_check_fails"] == true), "{r:#}");
}
