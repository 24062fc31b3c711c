//! `lowbit dequantize` against independent decoders: the `gguf` package for GGUF, and values
//! computed by `tests/interop/packed_files.py` from the ecosystem's own formulas for the packed
//! layouts it writes (ComfyUI FP8, BFL fp8r, bitsandbytes NF4, plain FP8).
//!
//! The output is read back by the test's own header reader (`support::safetensors_entries`).

use crate::support::{
    convert_ok, dequantize_ok, inspect_json, lowbit, read_at, root, run_python, run_script,
    safetensors_entries,
};
use lowbit_fixtures::FLUX_TINY_BFL;
use std::ffi::OsStr;
use std::path::Path;

/// The data of tensor `name` of the safetensors file `path`, as little-endian words of
/// `width` bytes.
fn words(path: &Path, name: &str, width: usize) -> Vec<u32> {
    let e = &safetensors_entries(path)[name];
    let bytes = read_at(path, e.bytes.clone());
    bytes
        .chunks_exact(width)
        .map(|c| {
            if width == 2 {
                u32::from(u16::from_le_bytes([c[0], c[1]]))
            } else {
                u32::from_le_bytes([c[0], c[1], c[2], c[3]])
            }
        })
        .collect()
}

/// A Q4_K_M GGUF (K-quants, Q6_K, Q8_0-free mixes, F32 and BF16 tensors) dequantized to F32
/// gives the `gguf` package's values bit for bit, in the GGUF's order and shapes.
#[test]
fn gguf_equals_the_gguf_package() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("q4km.gguf");
    convert_ok(&root().join("fixtures").join(FLUX_TINY_BFL), &gguf, &["--to", "gguf:q4_k_m"]);
    let out = dir.path().join("dq.safetensors");
    dequantize_ok(&gguf, &out, &["--dtype", "f32"]);
    let reference: serde_json::Value =
        serde_json::from_str(&run_python("gguf_read.py", &[&gguf])).unwrap();
    let tensors = reference[gguf.to_str().unwrap()]["tensors"].as_array().unwrap();
    let entries = safetensors_entries(&out);
    assert_eq!(entries.len(), tensors.len());
    let mut types = std::collections::BTreeSet::new();
    let mut offsets: Vec<(u64, &str)> = Vec::new();
    for t in tensors {
        let name = t["name"].as_str().unwrap();
        types.insert(t["type"].as_str().unwrap().to_owned());
        let e = &entries[name];
        assert_eq!(e.dtype, "F32", "{name}");
        let shape: Vec<u64> =
            t["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert_eq!(e.shape, shape, "{name}");
        let want: Vec<u32> = t["f32_bits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| u32::try_from(v.as_u64().unwrap()).unwrap())
            .collect();
        assert!(words(&out, name, 4) == want, "{name}: values differ from the gguf package");
        offsets.push((e.bytes.start, name));
    }
    assert!(types.contains("Q4_K") && types.contains("F32"), "{types:?}");
    let mut sorted = offsets.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, offsets, "data follows the input's order");
    let meta = inspect_json(&out)["metadata"].clone();
    assert_eq!(meta["lowbit.source"], "q4km.gguf");
    assert_eq!(meta["lowbit.dequantized"], "F32");
}

/// A BF16 input dequantizes to itself, byte for byte.
#[test]
fn bf16_input_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let input = root().join("fixtures").join(FLUX_TINY_BFL);
    let out = dir.path().join("same.safetensors");
    dequantize_ok(&input, &out, &[]);
    let (a, b) = (safetensors_entries(&input), safetensors_entries(&out));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, e) in &a {
        assert_eq!((&b[name].dtype, &b[name].shape), (&e.dtype, &e.shape), "{name}");
        assert!(read_at(&input, e.bytes.clone()) == read_at(&out, b[name].bytes.clone()), "{name}");
    }
}

#[test]
fn refusals() {
    let dir = tempfile::tempdir().unwrap();
    let input = root().join("fixtures").join(FLUX_TINY_BFL);
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec!["dequantize", input.to_str().unwrap(), "-o", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        lowbit(&args)
    };
    let o = run(&dir.path().join("x.gguf"), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("x.gguf: dequantize writes safetensors"));
    let o = run(&input, &["--force"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("never replaces its input"));
    let o = run(&dir.path().join("no/such/dir/x.safetensors"), &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not exist"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");
    let forced = dir.path().join("x.bin");
    let o = run(&forced, &["--force"]);
    assert!(o.status.success() && forced.exists());
}

/// The packed files of `packed_files.py` and the values they must decode to.
fn packed_case(file: &str) {
    let dir = tempfile::tempdir().unwrap();
    let json = run_script("packed_files.py", &[OsStr::new(dir.path())]);
    let want: serde_json::Value = serde_json::from_str(&json).unwrap();
    let input = dir.path().join(file);
    let expected = want[file].as_object().unwrap();
    for (dtype, width) in [("bf16", 2), ("f32", 4)] {
        let out = dir.path().join(format!("out-{dtype}.safetensors"));
        dequantize_ok(&input, &out, &["--dtype", dtype]);
        let entries = safetensors_entries(&out);
        assert_eq!(entries.len(), expected.len(), "{file}: one tensor per layer");
        for (name, values) in expected {
            let Some(v) = values.get(dtype) else { continue };
            let want: Vec<u32> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|b| u32::try_from(b.as_u64().unwrap()).unwrap())
                .collect();
            let got = words(&out, name, width);
            let differ = got.iter().zip(&want).filter(|(g, w)| g != w).count();
            assert!(
                got.len() == want.len() && differ == 0,
                "{file} `{name}` as {dtype}: {differ} of {} differ",
                want.len()
            );
        }
    }
}

/// Plain FP8 is a dense dtype: decodes exactly.
#[test]
fn plain_fp8_decodes_exactly() {
    packed_case("fp8.safetensors");
}

/// ComfyUI FP8: bf16(q)·bf16(scale) rounded to BF16 (needs `lowbit_layout::fp8::decode_comfy`).
#[test]
fn comfy_fp8_decodes_as_comfyui() {
    packed_case("comfy.safetensors");
}

/// BFL fp8r: q·scale in f32, as diffusers' `dequantize_fp8r` (needs `decode_bfl`).
#[test]
fn bfl_fp8r_decodes_as_diffusers() {
    packed_case("bfl.safetensors");
}

/// bitsandbytes NF4 with a partial last block and an odd count (needs `nf4::decode` and
/// `quant_state_json`).
#[test]
fn nf4_decodes_as_bitsandbytes() {
    packed_case("nf4.safetensors");
}

/// `inspect` shows each packed weight once with its scheme and effective bits.
#[test]
fn inspect_counts_companions_in_the_bits() {
    let dir = tempfile::tempdir().unwrap();
    run_script("packed_files.py", &[OsStr::new(dir.path())]);
    let r = inspect_json(&dir.path().join("comfy.safetensors"));
    assert_eq!(r["stored_tensors"], 4);
    let t = &r["tensors"].as_array().unwrap().iter().find(|t| t["name"] == "blk.a.weight").unwrap();
    assert_eq!(t["type"], "comfy:fp8");
    assert_eq!(t["scheme"], "comfy:fp8");
    assert_eq!(t["shape"], serde_json::json!([8, 32]));
    // 256 E4M3 bytes, a 4-byte F32 scale and the 27-byte marker `{"format": "float8_e4m3fn"}`.
    assert_eq!(t["bytes"], 256 + 4 + 27);
    assert_eq!(t["bits_per_weight"], f64::from(287 * 8) / 256.0);
    assert_eq!(
        t["stored"],
        serde_json::json!(["blk.a.weight", "blk.a.weight_scale", "blk.a.comfy_quant"])
    );
    let r = inspect_json(&dir.path().join("bfl.safetensors"));
    let t = &r["tensors"][0];
    assert_eq!((t["type"].as_str(), t["bytes"].as_u64()), (Some("bfl:fp8"), Some(96 + 24)));
    let r = inspect_json(&dir.path().join("fp8.safetensors"));
    assert_eq!(
        (r["tensors"][0]["type"].as_str(), r["tensors"][0]["scheme"].as_str()),
        (Some("F8_E5M2"), Some("fp8:e5m2"))
    );
    let text = lowbit(&["inspect", dir.path().join("comfy.safetensors").to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("2 tensors (in 4 stored tensors)"));
}
