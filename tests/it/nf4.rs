//! NF4 against bitsandbytes 0.50.2 on the CPU (`tests/interop/nf4_quant.py`), byte for byte.
//!
//! Seeded BF16 weights of several shapes (a square-ish one, an odd one, one with an all-zero
//! block, ones whose element count is not a multiple of 64, one whose trailing partial block is
//! all zeros) go through bitsandbytes' `quantize_4bit(nf4, blocksize=64)` without and with
//! `compress_statistics`. Every tensor `QuantState.as_dict(packed=True)` writes must equal ours:
//! `weight`, `absmax`, `quant_map`, `nested_absmax`, `nested_quant_map` and the quant-state JSON.
//! Our decoder must give bitsandbytes' `dequantize_4bit` (in F32) bit for bit.
//!
//! The double-quantization offset is torch's F32 `mean()` of the absmax values, whose summation
//! order depends on the CPU; ours is the correctly rounded mean. The codes and JSON are compared
//! exactly given bitsandbytes' offset, and our own offset must be within 2 ulps of it, its codes
//! within ±1 of bitsandbytes' (the mismatch count is printed).

use crate::support::run_torch_script;
use lowbit_dtype::Dtype;
use lowbit_fixtures::rng::Rng;
use lowbit_layout::Scheme;
use lowbit_layout::nf4::{CODE, nested_code, quant_state_json};
use lowbit_quant::packed::nf4;
use serde_json::Value;
use std::ffi::OsStr;

/// Little-endian bytes of F32 values.
fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn hex(v: &Value) -> Vec<u8> {
    let s = v.as_str().expect("hex string");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// Seeded BF16 bits `[n, k]`: Gaussian with a few large outliers; `zero` zeroes a range.
fn weights(seed: u64, n: usize, k: usize, zero: std::ops::Range<usize>) -> Vec<u16> {
    let mut rng = Rng::new(seed);
    (0..n * k)
        .map(|i| {
            let mut v = rng.normal() * 0.02;
            if rng.below(97) == 0 {
                v *= 40.0;
            }
            if zero.contains(&i) { 0 } else { half::bf16::from_f64(v).to_bits() }
        })
        .collect()
}

/// Runs bitsandbytes on `bits` `[n, k]`.
fn bnb(bits: &[u16], n: usize, k: usize) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.bin");
    std::fs::write(&path, bits.iter().flat_map(|b| b.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let (n, k) = (n.to_string(), k.to_string());
    let out = run_torch_script("nf4_quant.py", &[path.as_os_str(), OsStr::new(&n), OsStr::new(&k)]);
    serde_json::from_str(&out).unwrap()
}

fn check_case(name: &str, bits: &[u16], n: usize, k: usize) {
    let theirs = bnb(bits, n, k);
    let x: Vec<f32> = bits.iter().map(|&b| half::bf16::from_bits(b).to_f32()).collect();
    let numel = n * k;
    let blocks = numel.div_ceil(64);
    let mut packed = vec![0u8; numel.div_ceil(2)];
    let mut absmax = vec![0.0f32; blocks];
    nf4::quantize(&x, &mut packed, &mut absmax);
    let shape = [n as u64, k as u64];

    let plain = &theirs["plain"];
    assert_eq!(hex(&plain["weight"]), packed, "{name}: packed");
    assert_eq!(plain["weight_shape"], serde_json::json!([numel.div_ceil(2), 1]), "{name}");
    assert_eq!(hex(&plain["absmax"]), f32_bytes(&absmax), "{name}: absmax");
    assert_eq!(hex(&plain["quant_map"]), f32_bytes(&CODE), "{name}: quant_map");
    let json = quant_state_json(shape, Dtype::BF16, None);
    assert_eq!(hex(&plain["quant_state.bitsandbytes__nf4"]), json.as_bytes(), "{name}: json");

    // Decoding our bytes gives bitsandbytes' dequantization, and Scheme::stored agrees.
    let scheme = Scheme::Nf4 { double_quant: false };
    let code = f32_bytes(&CODE);
    let ab = f32_bytes(&absmax);
    let stored: Vec<&[u8]> = vec![&packed, &ab, &code, json.as_bytes()];
    check_decode(name, &scheme, &stored, shape, None, &hex(&plain["dequant"]));

    let dq = &theirs["dq"];
    assert_eq!(hex(&dq["weight"]), packed, "{name}: packed (dq)");
    let offset = f32::from_bits(u32::try_from(dq["offset_bits"].as_u64().unwrap()).unwrap());
    let nested_blocks = blocks.div_ceil(256);
    let mut codes = vec![0u8; blocks];
    let mut nested = vec![0.0f32; nested_blocks];
    nf4::double_quant(&absmax, offset, &mut codes, &mut nested);
    let want = hex(&dq["absmax"]);
    let off = codes.iter().zip(&want).filter(|(a, b)| a != b).count();
    assert!(codes.iter().zip(&want).all(|(&a, &b)| a.abs_diff(b) <= 1), "{name}: codes off by >1");
    assert!(off * 100 <= blocks, "{name}: {off}/{blocks} absmax codes differ");
    assert_eq!(hex(&dq["nested_absmax"]), f32_bytes(&nested), "{name}: nested_absmax");
    assert_eq!(hex(&dq["quant_map"]), f32_bytes(&CODE), "{name}: quant_map (dq)");
    assert_eq!(hex(&dq["nested_quant_map"]), f32_bytes(&nested_code()), "{name}: nested map");
    let json = quant_state_json(shape, Dtype::BF16, Some(offset));
    assert_eq!(
        String::from_utf8(hex(&dq["quant_state.bitsandbytes__nf4"])).unwrap(),
        json,
        "{name}: json (dq)"
    );
    let scheme = Scheme::Nf4 { double_quant: true };
    let nb = f32_bytes(&nested);
    let nm = f32_bytes(&nested_code());
    // bitsandbytes' own stored bytes decode to its dequantization.
    let stored: Vec<&[u8]> = vec![&packed, &want, &code, &nb, &nm, json.as_bytes()];
    check_decode(name, &scheme, &stored, shape, Some(offset), &hex(&dq["dequant"]));

    // Our own offset: the correctly rounded mean, within 2 ulps of torch's.
    let ours = nf4::mean(&absmax);
    let ulps = (i64::from(ours.to_bits()) - i64::from(offset.to_bits())).abs();
    assert!(ulps <= 2, "{name}: mean {ours} vs torch {offset}");
    let mut own = vec![0u8; blocks];
    nf4::double_quant(&absmax, ours, &mut own, &mut nested);
    let own_off = own.iter().zip(&want).filter(|(a, b)| a != b).count();
    assert!(own.iter().zip(&want).all(|(&a, &b)| a.abs_diff(b) <= 1), "{name}: codes off by >1");
    // Measured: 3 of 2048 (256x512) and 3 of 2304 (48x3072) differ, the same with either offset.
    assert!(own_off * 100 <= blocks, "{name}: {own_off}/{blocks} absmax codes differ (our mean)");
}

fn check_decode(
    name: &str,
    scheme: &Scheme,
    stored: &[&[u8]],
    shape: [u64; 2],
    offset: Option<f32>,
    want: &[u8],
) {
    let [n, k] = shape;
    let layout = scheme.stored(n, k, Dtype::BF16, offset);
    assert_eq!(layout.len(), stored.len(), "{name}");
    for (s, bytes) in layout.iter().zip(stored) {
        assert_eq!(s.bytes(), bytes.len() as u64, "{name}: {}", s.suffix);
    }
    let mut out = vec![0.0f32; (n * k) as usize];
    scheme.decode(stored, n, k, 0..n, &mut out).unwrap();
    let got = f32_bytes(&out);
    let diffs: Vec<String> = (0..out.len())
        .filter(|&i| got[4 * i..4 * i + 4] != want[4 * i..4 * i + 4])
        .take(8)
        .map(|i| format!("#{i}: ours {} bnb {:?}", out[i], &want[4 * i..4 * i + 4]))
        .collect();
    assert!(diffs.is_empty(), "{name}: decode {scheme}: {diffs:?}");
    // A row range in the middle decodes to the same values.
    if n > 2 {
        let mut part = vec![0.0f32; k as usize];
        scheme.decode(stored, n, k, 1..2, &mut part).unwrap();
        assert_eq!(part, out[k as usize..2 * k as usize], "{name}: row 1");
    }
    // Truncated tensors are refused, not indexed.
    let mut short: Vec<&[u8]> = stored.to_vec();
    short[1] = &stored[1][..stored[1].len() - 1];
    assert!(scheme.decode(&short, n, k, 0..n, &mut out).is_err(), "{name}");
}

/// Every NF4 tensor equals bitsandbytes' own, for shapes that hit each rule.
#[test]
fn nf4_matches_bitsandbytes() {
    check_case("256x512", &weights(1, 256, 512, 0..0), 256, 512);
    check_case("3x33 odd", &weights(2, 3, 33, 0..0), 3, 33);
    check_case("zero block", &weights(3, 4, 96, 64..128), 4, 96);
    check_case("K=100", &weights(4, 7, 100, 0..0), 7, 100);
    check_case("zero tail", &weights(5, 1, 80, 64..80), 1, 80);
    check_case("flux-like 48x3072", &weights(6, 48, 3072, 0..0), 48, 3072);
}

/// End to end (needs `lowbit convert --to nf4`): every layer the tiny fixture's conversion
/// quantized equals bitsandbytes' `quantize_4bit` of the original BF16 weight, tensor for tensor.
#[test]
fn convert_nf4_matches_bitsandbytes_per_layer() {
    use crate::support::{convert_ok, read_at, root, safetensors_entries};
    let fixture = root().join("fixtures/flux-tiny-bfl.safetensors");
    let dir = tempfile::tempdir().unwrap();
    for (flags, key) in
        [(&["--to", "nf4"][..], "plain"), (&["--to", "nf4", "--nf4-double-quant"][..], "dq")]
    {
        let out = dir.path().join(format!("{key}.safetensors"));
        convert_ok(&fixture, &out, flags);
        let ours = safetensors_entries(&out);
        let source = safetensors_entries(&fixture);
        let marker = ".weight.quant_state.bitsandbytes__nf4";
        let modules: Vec<&str> = ours.keys().filter_map(|k| k.strip_suffix(marker)).collect();
        assert!(!modules.is_empty(), "{key}: no NF4 layer in the output");
        for m in modules {
            let src = &source[&format!("{m}.weight")];
            assert_eq!(src.dtype, "BF16", "{m}");
            let [n, k] = src.shape[..] else { panic!("{m}: not 2-D") };
            let raw = read_at(&fixture, src.bytes.clone());
            let bits: Vec<u16> =
                raw.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
            let theirs = bnb(&bits, n as usize, k as usize);
            let theirs = &theirs[key];
            let get = |suffix: &str| read_at(&out, ours[&format!("{m}.{suffix}")].bytes.clone());
            assert_eq!(get("weight"), hex(&theirs["weight"]), "{key} {m}: weight");
            assert_eq!(get("weight.quant_map"), hex(&theirs["quant_map"]), "{key} {m}: quant_map");
            let absmax = get("weight.absmax");
            let want = hex(&theirs["absmax"]);
            if key == "plain" {
                assert_eq!(absmax, want, "{m}: absmax");
                assert_eq!(get(&marker[1..]), hex(&theirs[&marker[8..]]), "{m}: quant state");
            } else {
                assert!(
                    absmax.iter().zip(&want).all(|(a, b)| a.abs_diff(*b) <= 1),
                    "{m}: absmax codes"
                );
                assert_eq!(get("weight.nested_quant_map"), hex(&theirs["nested_quant_map"]), "{m}");
            }
        }
    }
}
