//! Group-wise int4 against numpy code written from `formats/int4.md`
//! (`tests/interop/int4_ref.py`): lowbit's quantizer must give numpy's codes, scales and zero
//! points, and lowbit's decoder numpy's values, bit for bit, for groups 32, 64 and 128,
//! symmetric and asymmetric.
//!
//! Inputs are seeded (`lowbit_fixtures::rng`): FLUX-like Gaussian rows rounded to BF16, the
//! edge rows of [`crate::ternary::weights`], and rows whose quotients land exactly on halves
//! (ties, which round to even).

use crate::support::{convert_ok, lowbit, root, run_python};
use crate::ternary::{Tensor, f32_bytes, relative_rms_error, weights, write_safetensors};
use lowbit_fixtures::rng::Rng;
use lowbit_layout::Scheme;
use lowbit_quant::packed::int4::quantize_rows;
use safetensors::Dtype;
use std::path::Path;

/// `[rows, g]` row-major to `[g, rows]`, BF16 bits to little-endian bytes.
fn transpose(v: &[u16], rows: usize) -> Vec<u8> {
    let g = v.len() / rows;
    (0..g).flat_map(|j| (0..rows).flat_map(move |r| v[r * g + j].to_le_bytes())).collect()
}

/// Inputs `[n, k]` with two more edge rows: symmetric ties (absmax 7, so the scale is 1, and
/// halves) and asymmetric ties (min −8, max 7: scale 1, zero 0, and halves).
fn inputs(rng: &mut Rng, n: usize, k: usize) -> Vec<f32> {
    let mut x = weights(rng, n, k);
    let sym = [7.0, 2.5, -3.5, 0.5, -0.5, 1.5, -6.5, 0.0];
    let asym = [-8.0, 7.0, 2.5, -0.5, 1.5, -7.5, 6.5, 0.0];
    for (r, pattern) in [(5, sym), (6, asym)] {
        if r < n {
            for (c, v) in x[r * k..(r + 1) * k].iter_mut().enumerate() {
                *v = pattern[c % 8];
            }
        }
    }
    x
}

/// lowbit's int4 quantizer and decoder give numpy's codes, scales, zero points and values.
#[test]
fn int4_matches_numpy() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(4);
    let mut tensors: Vec<Tensor> = Vec::new();
    let mut names = Vec::new();
    for group in [32usize, 64, 128] {
        for asym in [false, true] {
            for (n, k) in [(16, 256), (8, 3072), (10, 128)] {
                let name = format!("g{group}_{}_{n}x{k}", if asym { "asym" } else { "sym" });
                let x = inputs(&mut rng, n, k);
                let mut packed = vec![0u8; n * k / 2];
                let mut scales = vec![0u16; n * k / group];
                let mut zeros = vec![0u16; n * k / group];
                // Two calls, as a writer working in row chunks would.
                let h = n / 2;
                let (p0, p1) = packed.split_at_mut(h * k / 2);
                let (s0, s1) = scales.split_at_mut(h * k / group);
                let (z0, z1) = zeros.split_at_mut(h * k / group);
                quantize_rows(&x[..h * k], k, group, asym, p0, s0, z0);
                quantize_rows(&x[h * k..], k, group, asym, p1, s1, z1);
                let scheme = Scheme::Int4 { group: group as u32, asym };
                let (scale, zero) = (transpose(&scales, n), transpose(&zeros, n));
                let stored: Vec<&[u8]> =
                    if asym { vec![&packed, &scale, &zero] } else { vec![&packed, &scale] };
                let (nu, ku) = (n as u64, k as u64);
                let layout = scheme.stored(nu, ku, lowbit_dtype::Dtype::BF16, None);
                assert_eq!(layout.len(), stored.len(), "{name}");
                for (l, s) in layout.iter().zip(&stored) {
                    assert_eq!(l.bytes(), s.len() as u64, "{name} {}", l.suffix);
                }
                let mut decoded = vec![0.0f32; n * k];
                scheme.decode(&stored, nu, ku, 0..nu, &mut decoded).unwrap();
                let mut part = vec![0.0f32; 2 * k];
                scheme.decode(&stored, nu, ku, 5..7, &mut part).unwrap();
                assert_eq!(part, decoded[5 * k..7 * k], "{name} rows 5..7");
                let g = k / group;
                tensors.push((format!("{name}.x"), Dtype::F32, vec![n, k], f32_bytes(&x)));
                tensors.push((format!("{name}.weight"), Dtype::I8, vec![n, k / 2], packed.clone()));
                tensors.push((format!("{name}.weight_scale"), Dtype::BF16, vec![g, n], scale));
                if asym {
                    tensors.push((format!("{name}.weight_zero"), Dtype::BF16, vec![g, n], zero));
                }
                let d = f32_bytes(&decoded);
                tensors.push((format!("{name}.decoded"), Dtype::F32, vec![n, k], d));
                names.push(name);
            }
        }
    }
    let path = dir.path().join("cases.safetensors");
    write_safetensors(&path, &tensors, &[]);
    let out = run_python("int4_ref.py", &[Path::new("check"), &path]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report.as_object().unwrap().len(), names.len(), "{out}");
    for name in &names {
        let r = &report[name];
        for key in ["decode_mismatches", "code_mismatches", "scale_mismatches", "zero_mismatches"] {
            assert_eq!(r[key], 0, "{name}: {key} in {out}");
        }
        assert!(r["ties"].as_u64().unwrap() > 0, "{name}: no ties exercised: {out}");
        let distinct = r["distinct_codes"].as_u64().unwrap();
        let all = if name.contains("asym") { 16 } else { 15 };
        assert_eq!(distinct, all, "{name}: codes used: {out}");
    }
}

/// `lowbit convert --to int4` on the tiny fixture, groups 32/64/128, symmetric and asymmetric:
/// numpy's decode of the stored tensors equals `lowbit dequantize`, numpy's quantization of the
/// input gives the stored codes, scales and zero points, and the error against the BF16 input
/// is in the range numpy's own gives. Needs the packed-safetensors writer and `dequantize`.
#[test]
fn convert_int4_decodes_like_numpy() {
    let dir = tempfile::tempdir().unwrap();
    let input = root().join("fixtures/flux-tiny-bfl.safetensors");
    for group in ["32", "64", "128"] {
        for asym in [false, true] {
            let out = dir.path().join(format!("int4-{group}-{asym}.safetensors"));
            let mut args = vec!["--to", "int4", "--group", group];
            if asym {
                args.push("--asym");
            }
            convert_ok(&input, &out, &args);
            let deq = dir.path().join(format!("int4-{group}-{asym}-deq.safetensors"));
            let (o, d) = (out.to_str().unwrap(), deq.to_str().unwrap());
            let run = lowbit(&["dequantize", o, "-o", d, "--dtype", "f32"]);
            assert!(run.status.success(), "dequantize: {}", String::from_utf8_lossy(&run.stderr));
            let report = run_python("int4_ref.py", &[Path::new("file"), &out, &deq, &input]);
            let r: serde_json::Value = serde_json::from_str(&report).unwrap();
            let layers = r.as_object().unwrap();
            assert!(!layers.is_empty(), "g{group} {asym}: no int4 layer: {report}");
            let scheme = format!("int4:g{group}{}", if asym { ":asym" } else { "" });
            for (name, l) in layers {
                assert_eq!(l["scheme"], scheme.as_str(), "{name}: {report}");
                for key in ["mismatches", "code_mismatches", "scale_mismatches", "zero_mismatches"]
                {
                    assert_eq!(l[key], 0, "g{group} {asym} {name} {key}: {report}");
                }
                // numpy's int4 of the fixture's 2-D weights has a relative RMS error of
                // 0.14–0.32 symmetric, 0.10–0.23 asymmetric (0.08–0.12 on Gaussian weights).
                let rel = relative_rms_error(&input, &deq, name);
                assert!((0.05..0.35).contains(&rel), "g{group} {asym} {name}: {rel}");
            }
        }
    }
}
