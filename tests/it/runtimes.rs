//! lowbit's packed files in the runtimes that load them, end to end:
//!
//! - `bfl:fp8` in diffusers' `bfl` quantizer (`from_single_file`) and the NF4 diffusers folder in
//!   diffusers' bitsandbytes quantizer (`from_pretrained`), both on the CPU, on the full-width
//!   model [`crate::support::flux_3072`]: the right layers become the runtime's quantized
//!   linears, their weights as the runtime dequantizes them equal `lowbit dequantize`, and the
//!   forward pass is within each type's error of the BF16 original
//!   (`tests/interop/runtimes_diffusers.py`, which holds the bounds and an FP8 control);
//! - `bfl:nvfp4` in diffusers' `bfl` quantizer on the CPU, computing in BF16 as documented and
//!   in F32 for exact comparisons, on the same model: its block linears become `BFLNVFP4Linear`,
//!   their weights equal `lowbit dequantize`, and the forward pass is within 4-bit error of the
//!   BF16 original and worse than `bfl:fp8`'s (`tests/interop/runtimes_nvfp4.py`);
//! - `comfy:fp8` through comfy-kitchen's `QuantizedTensor` per `comfy_quant` layer, against
//!   `lowbit dequantize` (`tests/interop/runtimes_comfy.py`).
//!
//! Needs `LOWBIT_TORCH_PYTHON` (see `run_torch_script`).

use crate::support::{
    convert_ok, flux_3072, root, run_torch_script, safetensors_entries, safetensors_metadata,
};
use serde_json::Value;
use std::ffi::OsStr;

/// The BFL linear layers of one double and one single block: what `bfl:fp8` packs.
const BLOCK_LINEARS: [&str; 13] = [
    "double_blocks.0.img_mod.lin",
    "double_blocks.0.img_attn.qkv",
    "double_blocks.0.img_attn.proj",
    "double_blocks.0.img_mlp.0",
    "double_blocks.0.img_mlp.2",
    "double_blocks.0.txt_mod.lin",
    "double_blocks.0.txt_attn.qkv",
    "double_blocks.0.txt_attn.proj",
    "double_blocks.0.txt_mlp.0",
    "double_blocks.0.txt_mlp.2",
    "single_blocks.0.linear1",
    "single_blocks.0.linear2",
    "single_blocks.0.modulation.lin",
];

#[test]
fn bfl_fp8_and_nf4_folder_run_in_diffusers() {
    let work = tempfile::tempdir().unwrap();
    let w = |name: &str| work.path().join(name);
    let (fp8, fp8_deq, nf4, nf4_deq) =
        (w("fp8.safetensors"), w("fp8-deq.safetensors"), w("nf4"), w("nf4-deq.safetensors"));
    let start = std::time::Instant::now();
    let src = flux_3072();
    let generated = start.elapsed();
    let nf4_file = nf4.join("diffusion_pytorch_model.safetensors");
    // Two cores: the FP8 and NF4 conversions and decodings (each single-threaded in
    // `dequantize`) run side by side.
    std::thread::scope(|s| {
        s.spawn(|| {
            convert_ok(src, &fp8, &["--to", "bfl:fp8"]);
            crate::support::dequantize_ok(&fp8, &fp8_deq, &["--dtype", "f32"]);
        });
        convert_ok(src, &nf4, &["--to", "nf4", "--names", "diffusers"]);
        crate::support::dequantize_ok(&nf4_file, &nf4_deq, &["--dtype", "bf16"]);
    });
    let lowbit_time = start.elapsed() - generated;
    assert!(nf4.join("config.json").is_file());

    // What lowbit packed, read from the file alone: the runtime must quantize exactly these.
    let schemes: Value =
        serde_json::from_str(&safetensors_metadata(&fp8)["lowbit.schemes"]).unwrap();
    let mut packed: Vec<&str> = schemes.as_object().unwrap().keys().map(String::as_str).collect();
    packed.sort_unstable();
    let mut want: Vec<String> = BLOCK_LINEARS.iter().map(|m| format!("{m}.weight")).collect();
    want.sort();
    assert_eq!(packed, want);
    assert!(schemes.as_object().unwrap().values().all(|s| s == "bfl:fp8"));
    let entries = safetensors_entries(&fp8);
    for m in BLOCK_LINEARS {
        let (q, s) = (&entries[&format!("{m}.weight")], &entries[&format!("{m}.weight_scale")]);
        assert_eq!((q.dtype.as_str(), s.dtype.as_str()), ("F8_E4M3", "F32"), "{m}");
        assert_eq!(s.shape, q.shape[..1], "{m}");
    }

    let start = std::time::Instant::now();
    let stdout = run_torch_script(
        "runtimes_diffusers.py",
        &[
            flux_3072().as_os_str(),
            fp8.as_os_str(),
            fp8_deq.as_os_str(),
            nf4.as_os_str(),
            nf4_deq.as_os_str(),
            work.path().as_os_str(),
        ],
    );
    let r: Value = serde_json::from_str(stdout.trim()).unwrap();
    // Timings for whoever reads a failure: the model is shared with other tests.
    let r = {
        let mut r = r;
        r["seconds_rust"] = serde_json::json!({
            "model": generated.as_secs_f64(),
            "lowbit_convert_dequantize": lowbit_time.as_secs_f64(),
            "python": start.elapsed().as_secs_f64(),
        });
        r
    };
    assert_eq!(r["ok"], true, "{r:#}");
    let (f, n) = (&r["bfl_fp8"], &r["nf4"]);
    // diffusers splits the fused qkv (3) and linear1 (4) into parts: 14 + 6 linears.
    assert_eq!(f["quantized_modules"], 20, "{r:#}");
    assert_eq!(f["differ_from_lowbit_dequantize"].as_array().map(Vec::len), Some(0), "{r:#}");
    assert!(f["output_error"].as_f64().unwrap() <= r["bounds"]["fp8_output"].as_f64().unwrap());
    assert!(
        f["control"]["output_error"].as_f64().unwrap()
            > r["bounds"]["fp8_output"].as_f64().unwrap()
    );
    // Every nn.Linear of the model: the 20 block linears and the 10 outside (x_embedder,
    // context_embedder, six in time_text_embed, norm_out.linear, proj_out).
    assert_eq!(n["quantized_modules"], 30, "{r:#}");
    assert_eq!(n["differ_from_lowbit_dequantize"].as_array().map(Vec::len), Some(0), "{r:#}");
    let nf4_err = n["output_error_f32_compute"].as_f64().unwrap();
    assert!(nf4_err <= r["bounds"]["nf4_output"].as_f64().unwrap(), "{r:#}");
    assert_eq!(n["bad_quant_state"].as_array().map(Vec::len), Some(0), "{r:#}");
}

#[test]
fn bfl_nvfp4_runs_in_diffusers() {
    let work = tempfile::tempdir().unwrap();
    let w = |name: &str| work.path().join(name);
    let (nvfp4, nvfp4_deq, fp8) =
        (w("nvfp4.safetensors"), w("nvfp4-deq.safetensors"), w("fp8.safetensors"));
    let src = flux_3072();
    std::thread::scope(|s| {
        s.spawn(|| convert_ok(src, &fp8, &["--to", "bfl:fp8"]));
        convert_ok(src, &nvfp4, &["--to", "bfl:nvfp4"]);
        crate::support::dequantize_ok(&nvfp4, &nvfp4_deq, &["--dtype", "f32"]);
    });
    let schemes: Value =
        serde_json::from_str(&safetensors_metadata(&nvfp4)["lowbit.schemes"]).unwrap();
    let mut packed: Vec<&str> = schemes.as_object().unwrap().keys().map(String::as_str).collect();
    packed.sort_unstable();
    let mut want: Vec<String> = BLOCK_LINEARS.iter().map(|m| format!("{m}.weight")).collect();
    want.sort();
    assert_eq!(packed, want);
    let stdout = run_torch_script(
        "runtimes_nvfp4.py",
        &[
            src.as_os_str(),
            nvfp4.as_os_str(),
            nvfp4_deq.as_os_str(),
            fp8.as_os_str(),
            work.path().as_os_str(),
        ],
    );
    let r: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(r["ok"], true, "{r:#}");
    // diffusers splits the fused qkv (3) and linear1 (4) into parts: 14 + 6 linears.
    assert_eq!(r["bfl_nvfp4_bf16"]["quantized_modules"], 20, "{r:#}");
    assert_eq!(r["bfl_fp8_f32"]["quantized_modules"], 20, "{r:#}");
    let f = &r["bfl_nvfp4_f32"];
    assert_eq!(f["differ_from_lowbit_dequantize"].as_array().map(Vec::len), Some(0), "{r:#}");
    let (nv, fp) =
        (f["output_error"].as_f64().unwrap(), r["bfl_fp8_f32"]["output_error"].as_f64().unwrap());
    assert!(fp < nv && nv <= r["bounds"]["nvfp4_output"].as_f64().unwrap(), "{r:#}");
    assert!(
        r["control"]["output_error"].as_f64().unwrap()
            > r["bounds"]["nvfp4_output"].as_f64().unwrap(),
        "{r:#}"
    );
}

#[test]
fn comfy_fp8_matches_comfy_kitchen_per_layer() {
    let work = tempfile::tempdir().unwrap();
    let tiny = root().join("fixtures/flux-tiny-bfl.safetensors");
    let comfy = work.path().join("comfy.safetensors");
    convert_ok(&tiny, &comfy, &["--to", "comfy:fp8"]);
    let (bf16, f32) =
        (work.path().join("deq-bf16.safetensors"), work.path().join("deq-f32.safetensors"));
    crate::support::dequantize_ok(&comfy, &bf16, &["--dtype", "bf16"]);
    crate::support::dequantize_ok(&comfy, &f32, &["--dtype", "f32"]);
    let stdout = run_torch_script(
        "runtimes_comfy.py",
        &[comfy.as_os_str(), bf16.as_os_str(), f32.as_os_str(), OsStr::new("float8_e4m3fn")],
    );
    let r: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(r["ok"], true, "{r:#}");
    let schemes: Value =
        serde_json::from_str(&safetensors_metadata(&comfy)["lowbit.schemes"]).unwrap();
    let layers = schemes.as_object().unwrap().len();
    assert!(layers > 0);
    assert_eq!(r["layers"].as_u64(), Some(layers as u64), "{r:#}");
    assert_eq!(r["differ"].as_array().map(Vec::len), Some(0), "{r:#}");
}
