//! FP8 against independent references, exactly:
//!
//! - the encoder on every finite BF16 bit pattern against `ml_dtypes`' own casts (after
//!   clipping to the format's largest value), both formats (`tests/interop/fp8_encode.py`);
//! - ComfyUI FP8 against comfy-kitchen 0.2.40's eager `TensorCoreFP8Layout.quantize` and
//!   `dequantize` on the CPU (codes, scale, BF16 dequantization), both formats;
//! - BFL `fp8r` against diffusers 0.42.1's `quantize_fp8r` / `dequantize_fp8r`
//!   (`tests/interop/fp8_scaled.py`).

use crate::support::{run_python, run_torch_script};
use lowbit_fixtures::rng::Rng;
use lowbit_layout::fp8::comfy_marker;
use lowbit_layout::{Fp8Format, Scheme};
use lowbit_quant::packed::fp8;
use serde_json::Value;
use std::ffi::OsStr;

fn hex(v: &Value) -> Vec<u8> {
    let s = v.as_str().expect("hex string");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Every finite BF16 value encodes to ml_dtypes' code; NaN stays NaN.
#[test]
fn fp8_encode_matches_ml_dtypes_on_every_bf16() {
    let reference: Value = serde_json::from_str(&run_python("fp8_encode.py", &[])).unwrap();
    for (name, format) in [("float8_e4m3fn", Fp8Format::E4M3), ("float8_e5m2", Fp8Format::E5M2)] {
        let want = hex(&reference[name]);
        assert_eq!(want.len(), 65536);
        let x: Vec<f32> = (0..=u16::MAX).map(|b| f32::from_bits(u32::from(b) << 16)).collect();
        let mut plain = vec![0u8; x.len()];
        fp8::plain(&x, format, &mut plain);
        let mut bad = Vec::new();
        for (i, &v) in x.iter().enumerate() {
            if !v.is_finite() {
                continue;
            }
            let ours = fp8::encode(v, format);
            assert_eq!(plain[i], ours, "{name}: plain and encode disagree on {v:e}");
            if ours != want[i] {
                bad.push(format!("{v:e}: ours {ours:#04x} ml_dtypes {:#04x}", want[i]));
            }
        }
        assert!(
            bad.is_empty(),
            "{name}: {} mismatches, first {:?}",
            bad.len(),
            &bad[..bad.len().min(8)]
        );
        for nan in [f32::NAN, -f32::NAN] {
            let code = fp8::encode(nan, format);
            let back = match format {
                Fp8Format::E4M3 => lowbit_dtype::fp8::e4m3_to_f32(code),
                Fp8Format::E5M2 => lowbit_dtype::fp8::e5m2_to_f32(code),
            };
            assert!(back.is_nan(), "{name}: NaN encodes to {code:#04x}");
        }
        assert_eq!(fp8::encode(f32::INFINITY, format), fp8::encode(format.max(), format));
    }
    assert_eq!(fp8::amax(&[1.0, -3.0, 2.0, 0.5]), 3.0);
}

/// Seeded BF16 bits `[n, k]`: rows of different scales, a few outliers, one all-zero row.
fn weights(seed: u64, n: usize, k: usize) -> Vec<u16> {
    let mut rng = Rng::new(seed);
    (0..n * k)
        .map(|i| {
            let row = i / k;
            let sigma = 10f64.powi(i32::try_from(row % 7).unwrap() - 4);
            let mut v = rng.normal() * sigma;
            if rng.below(113) == 0 {
                v *= 30.0;
            }
            if row == 3 { 0 } else { half::bf16::from_f64(v).to_bits() }
        })
        .collect()
}

fn reference(mode: &str, bits: &[u16], n: usize, k: usize) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.bin");
    std::fs::write(&path, bits.iter().flat_map(|b| b.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let (ns, ks) = (n.to_string(), k.to_string());
    let args = [OsStr::new(mode), path.as_os_str(), OsStr::new(&ns), OsStr::new(&ks)];
    serde_json::from_str(&run_torch_script("fp8_scaled.py", &args)).unwrap()
}

fn to_f32(bits: &[u16]) -> Vec<f32> {
    bits.iter().map(|&b| half::bf16::from_bits(b).to_f32()).collect()
}

/// Our ComfyUI FP8 equals comfy-kitchen's quantization and dequantization.
#[test]
fn comfy_fp8_matches_comfy_kitchen() {
    let (n, k) = (24, 160);
    for (mode, format, seed) in
        [("comfy-e4m3", Fp8Format::E4M3, 11), ("comfy-e5m2", Fp8Format::E5M2, 12)]
    {
        let bits = weights(seed, n, k);
        // A whole tensor of one scale, so that small values meet FP8's subnormals.
        let theirs = reference(mode, &bits, n, k);
        let x = to_f32(&bits);
        let scale = fp8::comfy_scale(fp8::amax(&x), format);
        assert_eq!(f32_bytes(&[scale]), hex(&theirs["scale"]), "{mode}: scale");
        let mut codes = vec![0u8; x.len()];
        fp8::comfy(&x, scale, format, &mut codes);
        let want = hex(&theirs["codes"]);
        let bad = codes.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(bad, 0, "{mode}: {bad} codes differ");

        let marker = comfy_marker(format);
        let sb = scale.to_le_bytes();
        let stored: [&[u8]; 3] = [&codes, &sb, marker.as_bytes()];
        let scheme = Scheme::ComfyFp8 { format };
        let mut out = vec![0.0f32; n * k];
        scheme.decode(&stored, n as u64, k as u64, 0..n as u64, &mut out).unwrap();
        assert_eq!(f32_bytes(&out), hex(&theirs["dequant"]), "{mode}: dequantized");
    }
}

/// Our BFL `fp8r` equals diffusers' `quantize_fp8r`, and our decoding its `dequantize_fp8r`.
#[test]
fn bfl_fp8_matches_diffusers() {
    let (n, k) = (21, 192);
    let bits = weights(13, n, k);
    let theirs = reference("bfl", &bits, n, k);
    let x = to_f32(&bits);
    let mut codes = vec![0u8; x.len()];
    let mut scales = vec![0.0f32; n];
    fp8::bfl_rows(&x, k, &mut codes, &mut scales);
    assert_eq!(f32_bytes(&scales), hex(&theirs["scale"]), "scales");
    let want = hex(&theirs["codes"]);
    let bad = codes.iter().zip(&want).filter(|(a, b)| a != b).count();
    assert_eq!(bad, 0, "{bad} codes differ");
    let sb = f32_bytes(&scales);
    let stored: [&[u8]; 2] = [&codes, &sb];
    let mut out = vec![0.0f32; n * k];
    Scheme::BflFp8.decode(&stored, n as u64, k as u64, 0..n as u64, &mut out).unwrap();
    assert_eq!(f32_bytes(&out), hex(&theirs["dequant"]), "dequantized");
}
