//! `lowbit diff` against independent computations: the metrics of a Q8_0 conversion recomputed
//! with numpy over the `gguf` package's dequantized tensors (`tests/interop/diff_metrics.py`),
//! a file against itself, and BFL against the diffusers twin made by diffusers' own converter.

use crate::support::{
    convert_ok, flux_3072, flux_3072_diffusers, flux_3072_gguf, lowbit, root, run_python,
};
use lowbit_fixtures::FLUX_TINY_BFL;
use serde_json::Value;
use std::path::Path;

fn diff_json(a: &Path, b: &Path) -> Value {
    let o = lowbit(&["diff", "--json", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(o.status.success(), "diff failed: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("diff prints JSON")
}

fn fixture() -> std::path::PathBuf {
    root().join("fixtures").join(FLUX_TINY_BFL)
}

/// Every tensor equal: zero error, infinite SNR, nothing one-sided.
fn assert_identical(r: &Value, tensors: u64) {
    assert_eq!(r["total"]["tensors"], tensors);
    for t in r["tensors"].as_array().unwrap().iter().chain([&r["total"]]) {
        assert_eq!(t["rel_error"], 0.0, "{t}");
        assert_eq!(t["max_abs_error"], 0.0, "{t}");
        assert_eq!(t["snr_db"], "inf", "{t}");
    }
    assert_eq!(r["only_in_a"], serde_json::json!([]));
    assert_eq!(r["only_in_b"], serde_json::json!([]));
}

#[test]
fn a_file_against_itself() {
    let r = diff_json(&fixture(), &fixture());
    assert_identical(&r, 52);
    let o = lowbit(&["diff", fixture().to_str().unwrap(), fixture().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("total: 52 tensors, 3182656 parameters, rel error 0.000e0, max abs error 0.000e0, SNR ∞ dB"), "{text}");
}

fn close(got: &Value, want: f64, what: &str) {
    let g = got.as_f64().unwrap_or_else(|| panic!("{what}: {got}"));
    assert!((g - want).abs() <= 1e-9 * want.abs().max(1e-30), "{what}: lowbit {g}, numpy {want}");
}

/// Q8_0 against its BF16 source: per-tensor and total metrics equal numpy's over the `gguf`
/// package's dequantization.
#[test]
fn q8_0_metrics_match_numpy() {
    let dir = tempfile::tempdir().unwrap();
    let q8 = dir.path().join("q8.gguf");
    convert_ok(&fixture(), &q8, &["--to", "gguf:q8_0"]);
    let r = diff_json(&q8, &fixture());
    let want: Value =
        serde_json::from_str(&run_python("diff_metrics.py", &[&q8, &fixture()])).unwrap();
    let want = want.as_object().unwrap();
    let tensors = r["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), want.len());
    let (mut se, mut sr, mut max) = (0.0f64, 0.0f64, 0.0f64);
    for t in tensors {
        let name = t["name"].as_str().unwrap();
        let w = &want[name];
        assert_eq!(t["params"], w["params"], "{name}");
        for key in ["sq_error", "sq_reference", "max_abs_error"] {
            close(&t[key], w[key].as_f64().unwrap(), &format!("{name} {key}"));
        }
        let (e, f) = (w["sq_error"].as_f64().unwrap(), w["sq_reference"].as_f64().unwrap());
        if e > 0.0 {
            close(&t["rel_error"], (e / f).sqrt(), &format!("{name} rel_error"));
            close(&t["snr_db"], 10.0 * (f / e).log10(), &format!("{name} snr_db"));
        }
        se += e;
        sr += f;
        max = max.max(w["max_abs_error"].as_f64().unwrap());
    }
    close(&r["total"]["rel_error"], (se / sr).sqrt(), "total rel_error");
    close(&r["total"]["snr_db"], 10.0 * (sr / se).log10(), "total snr_db");
    close(&r["total"]["max_abs_error"], max, "total max_abs_error");
    assert!(se > 0.0, "Q8_0 loses something");
}

/// A file holding a subset, and a tensor of another shape.
#[test]
fn one_sided_tensors_and_shape_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, shape: &[u64]| {
        let n: u64 = shape.iter().product();
        let header =
            serde_json::json!({name: {"dtype": "F32", "shape": shape, "data_offsets": [0, 4 * n]}});
        let mut h = header.to_string().into_bytes();
        while !h.len().is_multiple_of(8) {
            h.push(b' ');
        }
        let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
        bytes.extend(h);
        bytes.resize(bytes.len() + usize::try_from(4 * n).unwrap(), 0);
        let p = dir.path().join(format!("{}.safetensors", shape.len()));
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let subset = write("img_in.bias", &[256]);
    let r = diff_json(&subset, &fixture());
    assert_eq!(r["total"]["tensors"], 1);
    assert_eq!(r["only_in_b"].as_array().unwrap().len(), 51);
    assert_eq!(r["tensors"][0]["rel_error"], 1.0, "zeros against the reference: all error");
    let other = write("img_in.weight", &[64, 256]);
    let o = lowbit(&["diff", other.to_str().unwrap(), fixture().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("tensor `img_in.weight` has shape [64, 256], but [256, 64] in"), "{e}");
}

/// The BFL model against its diffusers twin (diffusers' own converter; q, k, v fused back,
/// norm_out halves swapped back): identical, and the sharded model folder too.
#[test]
fn bfl_against_diffusers_naming_is_identical() {
    let twin = flux_3072_diffusers();
    let r = diff_json(flux_3072(), &twin.single);
    let n = r["total"]["tensors"].as_u64().unwrap();
    assert!(n > 50, "{n} tensors compared");
    assert_identical(&r, n);
    assert_identical(&diff_json(&twin.model, flux_3072()), n);
}

/// The diffusers twin against a quantized BFL file gives what the BFL original gives.
#[test]
fn naming_does_not_change_the_metrics() {
    let q = flux_3072_gguf("q8_0");
    let from_bfl = diff_json(q, flux_3072());
    let from_diffusers = diff_json(q, &flux_3072_diffusers().single);
    // Rows come in the reference's order; each tensor's sums run in the same element order.
    let by_name = |r: &Value| -> std::collections::BTreeMap<String, Value> {
        r["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["name"].as_str().unwrap().to_owned(), t.clone()))
            .collect()
    };
    let (a, b) = (by_name(&from_bfl), by_name(&from_diffusers));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, t) in &a {
        assert!(*t == b[name], "{name}: {t} vs {}", b[name]);
    }
    assert!(a.values().any(|t| t["sq_error"].as_f64().unwrap() > 0.0), "Q8_0 loses something");
    // Totals add the tensors in another order: equal to rounding.
    for key in ["sq_error", "sq_reference", "max_abs_error", "params"] {
        close(&from_bfl["total"][key], from_diffusers["total"][key].as_f64().unwrap(), key);
    }
}
