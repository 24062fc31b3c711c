//! lowbit's ternary layout and Hugging Face's BitNet layout against references nobody here
//! wrote: numpy code written from `formats/ternary.md` and `formats/bitnet.md`
//! (`tests/interop/ternary_ref.py`), transformers' own `pack_weights`, `unpack_weights`,
//! `BitLinear` and `BitNetQuantConfig` (`tests/interop/bitnet_hf.py`), and the `gguf` package's
//! TQ1_0/TQ2_0 dequantizer for already-ternary checkpoints (`tests/interop/ternary_tq.py`).
//!
//! Inputs are seeded (`lowbit_fixtures::rng`): FLUX-like Gaussian rows, rounded to BF16, plus
//! rows chosen for the edges: all zeros (γ floored at 1e-5), exact ±0.5 ties of x/γ, a
//! constant row, an outlier, subnormals.

use crate::support::{
    bf16_values, convert_ok, lowbit, read_at, root, run_python, run_torch_script,
    safetensors_entries,
};
use lowbit_dtype::f16::{bf16_to_fp32, fp32_to_bf16};
use lowbit_fixtures::flux::FluxConfig;
use lowbit_fixtures::rng::Rng;
use lowbit_layout::{ScaleGranularity, Scheme};
use lowbit_quant::packed::ternary::{abs_sum, codes, gamma};
use safetensors::Dtype;
use std::collections::HashMap;
use std::path::Path;

/// One tensor to write: name, dtype, shape, little-endian bytes.
pub(crate) type Tensor = (String, Dtype, Vec<usize>, Vec<u8>);

/// Writes `tensors` (and `metadata`) as a safetensors file with the `safetensors` crate.
pub(crate) fn write_safetensors(path: &Path, tensors: &[Tensor], metadata: &[(&str, String)]) {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap();
            (name.clone(), view)
        })
        .collect();
    let meta: HashMap<String, String> =
        metadata.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    let meta = if meta.is_empty() { None } else { Some(meta) };
    std::fs::write(path, safetensors::serialize(views, meta).unwrap()).unwrap();
}

/// Little-endian bytes of `f32` values.
pub(crate) fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `v` rounded to BF16 and back: checkpoint inputs are BF16.
pub(crate) fn bf16_round(v: f32) -> f32 {
    bf16_to_fp32(fp32_to_bf16(v))
}

/// `[n, k]` FLUX-like weights (N(0, 0.02), BF16) whose first rows are edge cases.
pub(crate) fn weights(rng: &mut Rng, n: usize, k: usize) -> Vec<f32> {
    let mut x: Vec<f32> = (0..n * k).map(|_| bf16_round(rng.normal() as f32 * 0.02)).collect();
    let mut row = |r: usize, f: &dyn Fn(usize) -> f32| {
        if r < n {
            for (c, v) in x[r * k..(r + 1) * k].iter_mut().enumerate() {
                *v = f(c);
            }
        }
    };
    row(0, &|_| 0.0);
    // mean |x| = 0.25 exactly, so x/γ hits ±0.5 (ties to 0), ±1 and ±2.
    row(1, &|c| [0.5, 0.125, -0.125, 0.25][c % 4]);
    row(2, &|_| bf16_round(-0.013));
    row(3, &|c| if c == 7 { 10.0 } else { bf16_round(0.001 * (c as f32 - 100.0)) });
    row(4, &|c| bf16_round(if c % 3 == 0 { -1e-40 } else { 3e-39 }));
    x
}

/// Quantizes `x` `[n, k]` as `kind` (`channel`, `tensor`, `bitnet`) with lowbit's quantizer and
/// packing; returns the stored `weight` and `weight_scale` bytes and the scheme.
fn quantize(kind: &str, x: &[f32], n: usize, k: usize) -> (Vec<u8>, Vec<u8>, Scheme) {
    let mut q = vec![0u8; n * k];
    let tensor_gamma = gamma(abs_sum(x), (n * k) as u64);
    let mut scales = Vec::new();
    if kind == "channel" {
        for ((x, q), _) in x.chunks(k).zip(q.chunks_mut(k)).zip(0..n) {
            let g = gamma(abs_sum(x), k as u64);
            codes(x, g, q);
            scales.extend_from_slice(&fp32_to_bf16(g).to_le_bytes());
        }
    } else {
        codes(x, tensor_gamma, &mut q);
    }
    match kind {
        "channel" => {
            let mut w = vec![0u8; n * k / 4];
            lowbit_layout::ternary::pack(&q, &mut w);
            (w, scales, Scheme::Ternary { scale: ScaleGranularity::Channel })
        }
        "tensor" => {
            let mut w = vec![0u8; n * k / 4];
            lowbit_layout::ternary::pack(&q, &mut w);
            let s = fp32_to_bf16(tensor_gamma).to_le_bytes().to_vec();
            (w, s, Scheme::Ternary { scale: ScaleGranularity::Tensor })
        }
        _ => {
            let p = n / 4 * k;
            let mut w = vec![0u8; p];
            // Two calls of `p/2` rows' worth each, as a writer working in row chunks would.
            for half in 0..2 {
                let part = |i: usize| &q[i * p + half * p / 2..i * p + (half + 1) * p / 2];
                let out = &mut w[half * p / 2..(half + 1) * p / 2];
                lowbit_layout::bitnet::pack([part(0), part(1), part(2), part(3)], out);
            }
            let s = lowbit_layout::bitnet::stored_scale(tensor_gamma).to_le_bytes().to_vec();
            (w, s, Scheme::Bitnet)
        }
    }
}

/// The cases of [`ternary_and_bitnet_match_numpy`]: name, `[n, k]`, input.
fn cases() -> Vec<(String, usize, usize, Vec<f32>)> {
    let mut rng = Rng::new(158);
    let mut out = Vec::new();
    for kind in ["channel", "tensor", "bitnet"] {
        for (n, k) in [(16, 256), (8, 3072), (12, 64)] {
            out.push((format!("{kind}_{n}x{k}"), n, k, weights(&mut rng, n, k)));
        }
        // Every row the tie pattern: γ is 0.25 per tensor too.
        let ties: Vec<f32> = (0..8 * 64).map(|c| [0.5, 0.125, -0.125, 0.25][c % 4]).collect();
        out.push((format!("{kind}_ties"), 8, 64, ties));
    }
    out
}

/// lowbit's quantizer and decoder give numpy's codes, scales and values, bit for bit.
#[test]
fn ternary_and_bitnet_match_numpy() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors: Vec<Tensor> = Vec::new();
    for (name, n, k, x) in cases() {
        let kind = name.split('_').next().unwrap();
        let (w, s, scheme) = quantize(kind, &x, n, k);
        let stored = scheme.stored(n as u64, k as u64, lowbit_dtype::Dtype::BF16, None);
        assert_eq!(stored[0].bytes(), w.len() as u64, "{name}");
        assert_eq!(stored[1].bytes(), s.len() as u64, "{name}");
        let mut decoded = vec![0.0f32; n * k];
        scheme.decode(&[&w, &s], n as u64, k as u64, 0..n as u64, &mut decoded).unwrap();
        // Decoding row ranges gives the same rows.
        let mut part = vec![0.0f32; 3 * k];
        scheme.decode(&[&w, &s], n as u64, k as u64, 1..4, &mut part).unwrap();
        assert_eq!(part, decoded[k..4 * k], "{name} rows 1..4");
        let shape = |s: &lowbit_layout::Stored| s.shape.iter().map(|&d| d as usize).collect();
        tensors.push((format!("{name}.x"), Dtype::F32, vec![n, k], f32_bytes(&x)));
        tensors.push((format!("{name}.weight"), Dtype::U8, shape(&stored[0]), w));
        tensors.push((format!("{name}.weight_scale"), Dtype::BF16, shape(&stored[1]), s));
        tensors.push((format!("{name}.decoded"), Dtype::F32, vec![n, k], f32_bytes(&decoded)));
    }
    let path = dir.path().join("cases.safetensors");
    write_safetensors(&path, &tensors, &[]);
    let out = run_python("ternary_ref.py", &[Path::new("check"), &path]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report.as_object().unwrap().len(), cases().len(), "{out}");
    for (case, r) in report.as_object().unwrap() {
        for key in ["decode_mismatches", "code_mismatches", "scale_mismatches"] {
            assert_eq!(r[key], 0, "{case}: {key} in {out}");
        }
        if case.ends_with("_ties") || case.starts_with("channel") {
            assert!(r["ties"].as_u64().unwrap() > 0, "{case}: no ties exercised: {out}");
        }
        assert!(r["nonzero_codes"].as_u64().unwrap() > 0, "{case}: {out}");
    }
}

/// transformers' own `unpack_weights` reads lowbit's BitNet packing as our codes, its
/// `pack_weights` packs our codes to our bytes, `BitLinear` computes with our decoded weight,
/// and `BitNetQuantConfig` accepts our `quantization_config`.
#[test]
fn bitnet_matches_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(1158);
    let (n, k) = (64, 96);
    let x = weights(&mut rng, n, k);
    let (w, s, scheme) = quantize("bitnet", &x, n, k);
    let mut decoded = vec![0.0f32; n * k];
    scheme.decode(&[&w, &s], n as u64, k as u64, 0..n as u64, &mut decoded).unwrap();
    let mut q = vec![0u8; n * k];
    codes(&x, gamma(abs_sum(&x), (n * k) as u64), &mut q);
    let signed: Vec<u8> = q.iter().map(|&c| (c.cast_signed() - 1).cast_unsigned()).collect();
    let tensors = vec![
        ("codes".to_owned(), Dtype::I8, vec![n, k], signed),
        ("weight".to_owned(), Dtype::U8, vec![n / 4, k], w),
        ("weight_scale".to_owned(), Dtype::BF16, vec![1], s),
        ("decoded".to_owned(), Dtype::F32, vec![n, k], f32_bytes(&decoded)),
    ];
    let path = dir.path().join("bitnet.safetensors");
    let config = lowbit_layout::bitnet::quantization_config();
    write_safetensors(&path, &tensors, &[("quantization_config", config)]);
    let out = run_torch_script("bitnet_hf.py", &[path.as_os_str()]);
    let r: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(r["unpack_mismatches"], 0, "{out}");
    assert_eq!(r["pack_mismatches"], 0, "{out}");
    assert_eq!(r["config_equal"], true, "{out}");
    assert!(r["bitlinear_max_rel_err"].as_f64().unwrap() < 1e-5, "{out}");
    assert!(r["nonzero_codes"].as_u64().unwrap() > 0, "{out}");
}

/// A BF16 FLUX-shaped checkpoint whose weights are already ternary (each tensor in {−γ, 0, +γ}
/// for a BF16 γ that f16 holds exactly, some 256-blocks all zero) converts to TQ2_0 and TQ1_0
/// losslessly: the `gguf` package decodes every tensor to the input values.
#[test]
fn already_ternary_weights_are_lossless_in_tq() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(1580);
    let mut tensors: Vec<Tensor> = Vec::new();
    for (name, shape) in FluxConfig::TINY.tensors() {
        let count: u64 = shape.iter().product();
        // γ = m · 2^e with an 8-bit m: BF16 and f16 (normal) both hold it exactly.
        let e = rng.below(14) as i32 - 12;
        let g = (128 + rng.below(128)) as f32 / 128.0 * 2f32.powi(e);
        let zero_block = rng.below(4) as usize;
        let values: Vec<f32> = (0..count as usize)
            .map(|i| {
                if shape.len() >= 2 && i / 256 == zero_block {
                    return 0.0;
                }
                [-g, 0.0, g][rng.index(3)]
            })
            .collect();
        let bytes: Vec<u8> = values.iter().flat_map(|&v| fp32_to_bf16(v).to_le_bytes()).collect();
        let shape = shape.iter().map(|&d| d as usize).collect();
        tensors.push((name, Dtype::BF16, shape, bytes));
    }
    let input = dir.path().join("ternary-bfl.safetensors");
    write_safetensors(&input, &tensors, &[]);
    for target in ["tq2_0", "tq1_0"] {
        let out = dir.path().join(format!("{target}.gguf"));
        convert_ok(&input, &out, &["--to", &format!("gguf:{target}")]);
        let report = run_python("ternary_tq.py", &[&input, &out]);
        let r: serde_json::Value = serde_json::from_str(&report).unwrap();
        let quantized = r["types"][target.to_uppercase()].as_u64().unwrap_or(0);
        assert!(quantized > 0, "{target}: no tensor was stored as {target}: {report}");
        assert_eq!(r["missing"], serde_json::json!([]), "{target}: {report}");
        assert_eq!(r["mismatched"], serde_json::json!({}), "{target}: {report}");
    }
}

/// `lowbit convert --to ternary|bitnet` on the tiny fixture: numpy's decode of the stored
/// tensors equals `lowbit dequantize`, numpy's quantization of the input gives the stored codes
/// and scales, and the error against the BF16 input is in the range numpy's own gives. Needs
/// the packed-safetensors writer and `dequantize`.
#[test]
fn convert_ternary_and_bitnet_decode_like_numpy() {
    let dir = tempfile::tempdir().unwrap();
    let input = root().join("fixtures/flux-tiny-bfl.safetensors");
    for (target, extra) in
        [("ternary", &[][..]), ("ternary", &["--scale", "tensor"][..]), ("bitnet", &[][..])]
    {
        let out = dir.path().join(format!("{target}.safetensors"));
        let mut args = vec!["--to", target];
        args.extend_from_slice(extra);
        convert_ok(&input, &out, &args);
        let deq = dir.path().join(format!("{target}-deq.safetensors"));
        let o = lowbit(&[
            "dequantize",
            out.to_str().unwrap(),
            "-o",
            deq.to_str().unwrap(),
            "--dtype",
            "f32",
        ]);
        assert!(o.status.success(), "dequantize: {}", String::from_utf8_lossy(&o.stderr));
        let report = run_python("ternary_ref.py", &[Path::new("file"), &out, &deq, &input]);
        let r: serde_json::Value = serde_json::from_str(&report).unwrap();
        let layers = r.as_object().unwrap();
        assert!(!layers.is_empty(), "{target} {extra:?}: no ternary layer: {report}");
        for (name, l) in layers {
            for key in ["mismatches", "code_mismatches", "scale_mismatches"] {
                assert_eq!(l[key], 0, "{target} {extra:?} {name} {key}: {report}");
            }
            // numpy's absmean ternary of the fixture's 2-D weights has a relative RMS error of
            // 0.80–0.92 (its weights are heavier-tailed than Gaussian, where it is 0.51).
            let rel = relative_rms_error(&input, &deq, name);
            assert!((0.75..0.95).contains(&rel), "{target} {extra:?} {name}: {rel}");
        }
    }
}

/// ‖W' − W‖ / ‖W‖ for tensor `name` of a BF16 `input` and an F32 `dequantized` file.
pub(crate) fn relative_rms_error(input: &Path, dequantized: &Path, name: &str) -> f64 {
    let a = &safetensors_entries(input)[name];
    let b = &safetensors_entries(dequantized)[name];
    assert_eq!((a.dtype.as_str(), b.dtype.as_str()), ("BF16", "F32"), "{name}");
    assert_eq!(a.shape, b.shape, "{name}");
    let w = bf16_values(&read_at(input, a.bytes.clone()));
    let d = read_at(dequantized, b.bytes.clone());
    let d = d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    let (mut err, mut norm) = (0.0f64, 0.0f64);
    for (w, d) in w.iter().zip(d) {
        err += (f64::from(d) - f64::from(*w)).powi(2);
        norm += f64::from(*w).powi(2);
    }
    (err / norm).sqrt()
}
