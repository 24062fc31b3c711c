//! SDNQ (`sdnq:uint4`, `sdnq:uint4-svd`) against implementations nobody here wrote:
//!
//! - the full-width model converted both ways against sdnq 0.2.8 itself through diffusers
//!   (`tests/interop/sdnq_ref.py`): `sdnq:uint4` byte for byte what sdnq's quantizer saves,
//!   tensor set and `quantization_config` included; `sdnq:uint4-svd`'s tensors as sdnq names and
//!   shapes them, and its quantized part byte for byte sdnq's quantizer on lowbit's residual;
//! - both folders loaded by diffusers with sdnq on the CPU (`tests/interop/runtimes_sdnq.py`):
//!   the right layers become sdnq layers, sdnq's dequantizer agrees with `lowbit dequantize`,
//!   the forward pass is within 4-bit error of the BF16 original, and a copy with swapped
//!   nibbles is not;
//! - refusals (`--dry-run` the same), the single-file output, determinism, a damaged file.

use crate::support::{
    convert_ok, flux_3072, lowbit, root, run_torch_script, safetensors_entries,
    safetensors_metadata,
};
use serde_json::Value;
use std::ffi::OsStr;
use std::path::Path;

fn fixture() -> std::path::PathBuf {
    root().join("fixtures/flux-tiny-bfl.safetensors")
}

#[test]
fn sdnq_matches_sdnq_and_runs_in_diffusers() {
    let work = tempfile::tempdir().unwrap();
    let w = |n: &str| work.path().join(n);
    let (u4, svd) = (w("u4"), w("svd"));
    let src = flux_3072();
    std::thread::scope(|s| {
        s.spawn(|| convert_ok(src, &u4, &["--to", "sdnq:uint4"]));
        convert_ok(src, &svd, &["--to", "sdnq:uint4-svd"]);
    });
    let model = |d: &Path| d.join("diffusion_pytorch_model.safetensors");
    crate::support::dequantize_ok(&model(&u4), &w("u4-deq.safetensors"), &["--dtype", "f32"]);
    crate::support::dequantize_ok(&model(&svd), &w("svd-deq.safetensors"), &["--dtype", "f32"]);
    // The folder's file says what it is without lowbit's metadata too.
    let meta = safetensors_metadata(&model(&u4));
    let q: Value = serde_json::from_str(&meta["quantization_config"]).unwrap();
    assert_eq!(
        (q["quant_method"].as_str(), q["weights_dtype"].as_str()),
        (Some("sdnq"), Some("uint4"))
    );

    let refwork = w("ref");
    std::fs::create_dir_all(&refwork).unwrap();
    let stdout = run_torch_script(
        "sdnq_ref.py",
        &[src.as_os_str(), u4.as_os_str(), svd.as_os_str(), refwork.as_os_str()],
    );
    let r: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(r["ok"], true, "{r:#}");
    // Every tensor identical. sdnq quantizes 19 linears: the double block's 14 (q, k, v split
    // by diffusers, both AdaLN linears) and the single block's 5 (its AdaLN, block 0's, is in
    // sdnq's skip keys).
    assert_eq!(r["uint4"]["differ"].as_array().map(Vec::len), Some(0), "{r:#}");
    assert_eq!(r["uint4"]["identical"], r["uint4"]["tensors"], "{r:#}");
    assert_eq!(r["uint4"]["quantized_layers"], 19, "{r:#}");
    assert_eq!(r["uint4_svd"]["identical_bytes"], r["uint4_svd"]["bytes"], "{r:#}");
    assert_eq!(r["uint4_svd"]["layers"], r["uint4"]["quantized_layers"], "{r:#}");

    let rtwork = w("rt");
    std::fs::create_dir_all(&rtwork).unwrap();
    let args: Vec<std::path::PathBuf> = vec![
        src.to_owned(),
        u4.clone(),
        w("u4-deq.safetensors"),
        svd.clone(),
        w("svd-deq.safetensors"),
        rtwork,
    ];
    let args: Vec<&OsStr> = args.iter().map(|p| p.as_os_str()).collect();
    let r: Value =
        serde_json::from_str(run_torch_script("runtimes_sdnq.py", &args).trim()).unwrap();
    assert_eq!(r["ok"], true, "{r:#}");
    let bound = r["bounds"]["output"].as_f64().unwrap();
    for k in ["uint4", "uint4_svd"] {
        assert!(r[k]["output_error"].as_f64().unwrap() <= bound, "{r:#}");
    }
    assert!(r["control_swapped_nibbles"]["output_error"].as_f64().unwrap() > bound, "{r:#}");
}

#[test]
fn sdnq_refusals_single_file_and_determinism() {
    let work = tempfile::tempdir().unwrap();
    let w = |n: &str| work.path().join(n);
    let src = fixture();
    let run = |extra: &[&str], out: &Path| {
        let mut a = vec!["convert", src.to_str().unwrap(), "-o", out.to_str().unwrap()];
        a.extend_from_slice(extra);
        lowbit(&a)
    };
    // Refused identically with and without --dry-run, before anything is written.
    for extra in [
        &["--to", "sdnq:uint4", "--names", "bfl"][..],
        &["--to", "sdnq:uint4-svd", "--tensor-type", "to_q=sdnq:uint4"][..],
        &["--to", "sdnq:uint4", "--tensor-type", "to_q=int4"][..],
    ] {
        let real = run(extra, &w("refused"));
        let dry = run(&[extra, &["--dry-run"][..]].concat(), &w("refused"));
        assert!(!real.status.success() && !dry.status.success(), "{extra:?}");
        let (a, b) = (String::from_utf8_lossy(&real.stderr), String::from_utf8_lossy(&dry.stderr));
        assert_eq!(a, b, "{extra:?}");
        assert_eq!(a.trim().lines().count(), 1, "{a}");
        assert!(!w("refused").exists());
    }
    // One file: the same tensors as the folder's, quantization_config in __metadata__, read
    // back by inspect and diff.
    let single = w("one.safetensors");
    convert_ok(&src, &single, &["--to", "sdnq:uint4"]);
    let folder = w("folder");
    convert_ok(&src, &folder, &["--to", "sdnq:uint4"]);
    let in_folder = folder.join("diffusion_pytorch_model.safetensors");
    assert_eq!(std::fs::read(&single).unwrap(), std::fs::read(&in_folder).unwrap());
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("config.json")).unwrap())
            .unwrap();
    let meta: Value =
        serde_json::from_str(&safetensors_metadata(&single)["quantization_config"]).unwrap();
    assert_eq!(cfg["quantization_config"], meta);
    let e = safetensors_entries(&single);
    let wq = &e["transformer_blocks.0.attn.to_q.weight"];
    assert_eq!((wq.dtype.as_str(), wq.shape.as_slice()), ("U8", &[256 * 256 / 2][..]));
    assert_eq!(e["transformer_blocks.0.attn.to_q.scale"].shape, [256, 4, 1]);
    let o = lowbit(&["diff", src.to_str().unwrap(), single.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Whatever the thread count, the same bytes (the SVD branch included).
    let (a, b) = (w("t1"), w("t2"));
    convert_ok(&src, &a, &["--to", "sdnq:uint4-svd:r16", "--threads", "1"]);
    convert_ok(&src, &b, &["--to", "sdnq:uint4-svd:r16", "--threads", "2"]);
    let f = |d: &Path| std::fs::read(d.join("diffusion_pytorch_model.safetensors")).unwrap();
    assert_eq!(f(&a), f(&b));
    assert_eq!(safetensors_entries(&a.join("diffusion_pytorch_model.safetensors"))
        ["transformer_blocks.0.attn.to_q.svd_up"].shape, [256, 16]);
}

#[test]
fn damaged_sdnq_file_is_refused_by_name() {
    // 10 bytes of codes for a `scale` of 3 rows: not whole rows.
    let header = serde_json::json!({
        "m.weight": {"dtype": "U8", "shape": [10], "data_offsets": [0, 10]},
        "m.scale": {"dtype": "F32", "shape": [3, 1], "data_offsets": [10, 22]},
        "m.zero_point": {"dtype": "F32", "shape": [3, 1], "data_offsets": [22, 34]},
    })
    .to_string();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0u8; 34]);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad-sdnq.safetensors");
    std::fs::write(&p, bytes).unwrap();
    let o = lowbit(&[
        "dequantize",
        p.to_str().unwrap(),
        "-o",
        dir.path().join("o.safetensors").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("bad-sdnq.safetensors") && err.contains("m.weight"), "{err}");
}
