//! NVFP4 (`bfl:nvfp4`, `comfy:nvfp4`) against implementations nobody here wrote, exactly:
//!
//! - E2M1 and E4M3 rounding of a dense set of F32 values (every finite BF16 value, both sides of
//!   every tie and of the saturation boundaries, seeded random values) against `ml_dtypes`'
//!   casts (`tests/interop/nvfp4_rounding.py`);
//! - the quantizers and decoders on seeded tensors (ties, zero blocks, E4M3 scales that are
//!   subnormal or underflow) against diffusers 0.42.1's `quantize_nvfp4`/`dequantize_nvfp4` and
//!   comfy-kitchen 0.2.40's `TensorCoreNVFP4Layout` (eager `quantize_nvfp4`, `pack_uint4`,
//!   `to_blocked`), and the one deliberate difference: an all-zero weight;
//! - whole files, the fixture and odd shapes (partial scale tiles, padded scale columns,
//!   fallbacks), against files the references make from the same weights, byte for byte, at any
//!   thread count and chunk size; those reference files, which carry no lowbit metadata, are
//!   recognised and decode to the same values (`tests/interop/nvfp4_ref.py`).
//!
//! diffusers loading `bfl:nvfp4` and running it is in `runtimes.rs`.

use crate::support::{
    convert_ok, inspect_json, lowbit, outlier_weights, read_at, root, run_python, run_torch_script,
    safetensors_entries, safetensors_metadata,
};
use lowbit_checkpoint::Checkpoint;
use lowbit_convert::{CHUNK_BYTES, Options, Plan, Recipe, write_packed};
use lowbit_fixtures::rng::Rng;
use lowbit_fixtures::write::safetensors_bytes;
use lowbit_layout::{Scheme, nvfp4};
use lowbit_quant::packed::nvfp4 as quant;
use serde_json::Value;
use std::ffi::OsStr;
use std::path::Path;

fn hex(v: &Value) -> Vec<u8> {
    let s = v.as_str().expect("hex string");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The values whose rounding is checked: every finite BF16 value; each E2M1 tie, E2M1 value and
/// E4M3 midpoint with its F32 neighbours two steps either side; the saturation boundaries; and
/// seeded F32 values with random mantissas over the exponents block scales and scaled elements
/// take. Both signs throughout.
fn rounding_inputs() -> Vec<f32> {
    let mut v: Vec<f32> = (0..=u16::MAX)
        .map(|b| f32::from_bits(u32::from(b) << 16))
        .filter(|x| x.is_finite())
        .collect();
    let mut points: Vec<f32> =
        vec![0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0, 448.0, 464.0, 480.0];
    points.extend(nvfp4::E2M1[..8].iter().copied());
    for code in 0..0x7eu8 {
        let (a, b) =
            (lowbit_dtype::fp8::e4m3_to_f32(code), lowbit_dtype::fp8::e4m3_to_f32(code + 1));
        points.push((a + b) / 2.0);
    }
    for p in points {
        for d in -2i32..=2 {
            let x = f32::from_bits(p.to_bits().wrapping_add_signed(d));
            if x.is_finite() {
                v.extend([x, -x]);
            }
        }
    }
    let mut rng = Rng::new(7);
    for _ in 0..200_000 {
        let exp = 127 - 24 + rng.below(24 + 10) as u32;
        let bits = (exp << 23) | (rng.next_u64() as u32 & 0x007f_ffff);
        let x = f32::from_bits(bits);
        v.push(if rng.below(2) == 0 { x } else { -x });
    }
    v
}

/// E2M1 (our encoder, both sign conventions' magnitudes) and E4M3 (the encoder block scales
/// go through) equal `ml_dtypes` on every input.
#[test]
fn e2m1_and_block_scale_rounding_match_ml_dtypes() {
    let x = rounding_inputs();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.f32");
    std::fs::write(&path, f32_bytes(&x)).unwrap();
    let r: Value = serde_json::from_str(&run_python("nvfp4_rounding.py", &[&path])).unwrap();
    assert_eq!(r["count"].as_u64(), Some(x.len() as u64));
    let (e2m1, e4m3) = (hex(&r["e2m1"]), hex(&r["e4m3"]));
    let mut bad = Vec::new();
    for (i, &v) in x.iter().enumerate() {
        let ours = quant::e2m1(v);
        if ours != e2m1[i] || quant::e2m1_magnitude(v.abs()) != e2m1[i] & 7 {
            bad.push(format!("e2m1 {v:e}: ours {ours} ml_dtypes {}", e2m1[i]));
        }
        let ours = lowbit_dtype::fp8::f32_to_e4m3(v);
        if ours != e4m3[i] {
            bad.push(format!("e4m3 {v:e}: ours {ours:#04x} ml_dtypes {:#04x}", e4m3[i]));
        }
    }
    assert!(bad.is_empty(), "{} mismatches, first {:?}", bad.len(), &bad[..bad.len().min(8)]);
    // The set reaches every code of both formats.
    let codes = |c: &[u8]| c.iter().collect::<std::collections::BTreeSet<_>>().len();
    assert_eq!((codes(&e2m1), codes(&e4m3)), (16, 254));
}

/// Seeded BF16 bits `[n, k]` (k ≥ 32): normal rows with a standard deviation from 10⁻⁴ to 10²,
/// so block scales are normal, subnormal or zero, a few outliers, an all-zero block in row 2
/// and an all-zero row 3. With `ties`, row 0 holds the tensor's amax 2688, so the global scale
/// is 1 and row 1's first block (amax 6, block scale 1) puts every E2M1 tie, −0 and tiny values
/// on the grid exactly; without, the global scale is whatever the amax gives (BF16 rounds
/// ComfyUI's).
fn weights(seed: u64, n: usize, k: usize, ties: bool) -> Vec<u16> {
    let mut rng = Rng::new(seed);
    let tie_values = [
        6.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.25, -0.75, -2.5, -5.0, -0.0, 0.0, 1e-3,
        -1e-3,
    ];
    let mut w: Vec<u16> = (0..n * k)
        .map(|i| {
            let row = i / k;
            let sigma = 10f64.powi(i32::try_from(row % 7).unwrap() - 4);
            let mut v = rng.normal() * sigma;
            if rng.below(113) == 0 {
                v *= 30.0;
            }
            half::bf16::from_f64(v.clamp(-2000.0, 2000.0)).to_bits()
        })
        .collect();
    if ties {
        w[5] = half::bf16::from_f32(-2688.0).to_bits();
        for (j, t) in tie_values.iter().enumerate() {
            w[k + j] = half::bf16::from_f32(*t).to_bits();
        }
    }
    w[2 * k + 16..2 * k + 32].fill(0);
    w[3 * k..4 * k].fill(0);
    w
}

/// The reference's quantization of `bits` (`nvfp4_ref.py tensor`).
fn reference(kind: &str, bits: &[u16], n: usize, k: usize) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.bin");
    std::fs::write(&path, bits.iter().flat_map(|b| b.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let (ns, ks) = (n.to_string(), k.to_string());
    let args = [
        OsStr::new("tensor"),
        OsStr::new(kind),
        path.as_os_str(),
        OsStr::new(&ns),
        OsStr::new(&ks),
    ];
    serde_json::from_str(&run_torch_script("nvfp4_ref.py", &args)).unwrap()
}

/// lowbit's stored tensors for a weight, as the writer makes them: packed codes, block scales
/// as stored (ComfyUI's swizzled), the global scale, and the scheme's other tensors.
fn ours(scheme: Scheme, bits: &[u16], n: usize, k: usize) -> Vec<Vec<u8>> {
    let x: Vec<f32> = bits.iter().map(|&b| half::bf16::from_bits(b).to_f32()).collect();
    let amax = lowbit_quant::packed::absmax(&x);
    let mut w = vec![0u8; n * k / 2];
    let mut s = vec![0u8; n * k / 16];
    if scheme == Scheme::BflNvfp4 {
        let g = quant::bfl_global(amax);
        quant::bfl_rows(&x, k, g, &mut w, &mut s);
        vec![w, s, g.to_le_bytes().to_vec(), nvfp4::INPUT_SCALE.to_le_bytes().to_vec()]
    } else {
        let g = quant::comfy_global(amax);
        quant::comfy_rows(&x, k, g, &mut w, &mut s);
        let [pr, pc] = nvfp4::swizzled_shape(n as u64, k as u64);
        #[expect(clippy::cast_possible_truncation, reason = "small test tensors")]
        let mut sw = vec![0u8; (pr * pc) as usize];
        nvfp4::swizzle(&s, k as u64, &mut sw);
        vec![w, sw, g.to_le_bytes().to_vec(), nvfp4::comfy_marker().as_bytes().to_vec()]
    }
}

fn decode(scheme: Scheme, stored: &[Vec<u8>], n: usize, k: usize) -> Vec<f32> {
    let refs: Vec<&[u8]> = stored.iter().map(Vec::as_slice).collect();
    let mut out = vec![0.0f32; n * k];
    scheme.decode(&refs, n as u64, k as u64, 0..n as u64, &mut out).unwrap();
    out
}

/// Codes, block scales, global scale and decoding equal the references' on seeded tensors:
/// BFL of any row count, ComfyUI with a partial 128-row tile and padded scale columns.
#[test]
fn quantizers_and_decoders_match_diffusers_and_comfy_kitchen() {
    for (kind, scheme, n, k, seed, ties) in [
        ("bfl", Scheme::BflNvfp4, 21, 192, 21, true),
        ("bfl", Scheme::BflNvfp4, 37, 64, 24, false),
        ("comfy", Scheme::ComfyNvfp4, 144, 80, 22, true),
        ("comfy", Scheme::ComfyNvfp4, 272, 96, 23, false),
    ] {
        let bits = weights(seed, n, k, ties);
        let theirs = reference(kind, &bits, n, k);
        let stored = ours(scheme, &bits, n, k);
        if !ties {
            // A global scale that is not a BF16 value, so ComfyUI's rounding of it shows.
            let x: Vec<f32> = bits.iter().map(|&b| half::bf16::from_bits(b).to_f32()).collect();
            let g = lowbit_quant::packed::absmax(&x) / 2688.0;
            assert_ne!(half::bf16::from_f32(g).to_f32(), g, "{kind} {n}x{k}");
        }
        let want = scheme.stored(n as u64, k as u64, lowbit_dtype::Dtype::BF16, None);
        assert_eq!(theirs["scales_shape"], serde_json::json!(want[1].shape), "{kind} {n}x{k}");
        for (what, ours, theirs) in [
            ("codes", &stored[0], hex(&theirs["codes"])),
            ("block scales", &stored[1], hex(&theirs["scales"])),
            ("global scale", &stored[2], hex(&theirs["global"])),
        ] {
            let bad = ours.iter().zip(&theirs).filter(|(a, b)| a != b).count();
            assert!(ours.len() == theirs.len() && bad == 0, "{kind} {n}x{k}: {bad} {what} differ");
        }
        assert_eq!(theirs["scale_nan"], false);
        // The scales met E4M3's subnormals and its zero.
        let scales = &stored[1];
        assert!(scales.iter().any(|&s| (1..8).contains(&s)), "{kind}: no subnormal scale");
        let got = decode(scheme, &stored, n, k);
        assert_eq!(f32_bytes(&got), hex(&theirs["dequant"]), "{kind} {n}x{k}: dequantized");
    }
}

/// An all-zero weight: both references divide 0 by a global scale of 0 and write NaN block
/// scales (diffusers' dequantization then gives NaN weights); lowbit writes zero scales and
/// codes, which decode to zero.
#[test]
fn an_all_zero_weight_decodes_to_zero() {
    let (n, k) = (16, 32);
    let bits = vec![0u16; n * k];
    for (kind, scheme) in [("bfl", Scheme::BflNvfp4), ("comfy", Scheme::ComfyNvfp4)] {
        let theirs = reference(kind, &bits, n, k);
        assert_eq!(theirs["scale_nan"], true, "{kind}: the reference no longer writes NaN");
        let stored = ours(scheme, &bits, n, k);
        assert!(stored[0].iter().chain(&stored[1]).all(|&b| b == 0), "{kind}");
        assert_eq!(stored[2], 0f32.to_le_bytes());
        assert!(decode(scheme, &stored, n, k).iter().all(|&v| v == 0.0), "{kind}");
    }
}

/// `lowbit dequantize --dtype f32`.
/// `packed` (lowbit's conversion of `orig` to `kind:nvfp4`) is, tensor for tensor, what the
/// reference makes of `orig`; the reference's own file is recognised by every reader and
/// decodes to the same values. Returns the packed weights' names.
fn check_against_reference(kind: &str, orig: &Path, packed: &Path) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let (deq, theirs, theirs_deq) = (
        dir.path().join("deq.safetensors"),
        dir.path().join("theirs.safetensors"),
        dir.path().join("theirs-deq.safetensors"),
    );
    crate::support::dequantize_ok(packed, &deq, &["--dtype", "f32"]);
    let args = [
        OsStr::new("files"),
        OsStr::new(kind),
        orig.as_os_str(),
        packed.as_os_str(),
        deq.as_os_str(),
        theirs.as_os_str(),
    ];
    let r: Value = serde_json::from_str(&run_torch_script("nvfp4_ref.py", &args)).unwrap();
    assert_eq!(r["ok"], true, "{kind} {}: {r:#}", orig.display());
    let layers = r["layers"].as_u64().unwrap();
    assert!(layers > 0 && r["compared"].as_u64() == Some(4 * layers), "{r:#}");

    // The reference's file has no lowbit metadata: inspect, dequantize and diff still read it.
    let scheme = format!("{kind}:nvfp4");
    let report = inspect_json(&theirs);
    let rows = report["tensors"].as_array().unwrap();
    let packed_rows: Vec<String> = rows
        .iter()
        .filter(|r| r["scheme"] == scheme.as_str())
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(packed_rows.len() as u64, layers, "{kind}: inspect of the reference's file");
    crate::support::dequantize_ok(&theirs, &theirs_deq, &["--dtype", "f32"]);
    let (a, b) = (safetensors_entries(&deq), safetensors_entries(&theirs_deq));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "{kind}");
    for (name, e) in &a {
        assert!(
            read_at(&deq, e.bytes.clone()) == read_at(&theirs_deq, b[name].bytes.clone()),
            "{kind}: {name}"
        );
    }
    let o = lowbit(&["diff", theirs.to_str().unwrap(), packed.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let d: Value = serde_json::from_slice(&o.stdout).unwrap();
    for t in d["tensors"].as_array().unwrap() {
        assert_eq!(t["max_abs_error"].as_f64(), Some(0.0), "{kind}: {t}");
    }
    packed_rows
}

/// The fixture in both layouts is the references' bytes; the block linears are packed and the
/// rest kept, as `bfl:fp8` does; one and two threads write the same file.
#[test]
fn fixture_files_equal_the_references() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = root().join("fixtures/flux-tiny-bfl.safetensors");
    let fp8 = dir.path().join("fp8.safetensors");
    convert_ok(&fixture, &fp8, &["--to", "bfl:fp8"]);
    let schemes: Value =
        serde_json::from_str(&safetensors_metadata(&fp8)["lowbit.schemes"]).unwrap();
    let mut fp8_layers: Vec<String> = schemes.as_object().unwrap().keys().cloned().collect();
    fp8_layers.sort();
    // The 13 linears of one double and one single block.
    assert_eq!(fp8_layers.len(), 13);
    for kind in ["bfl", "comfy"] {
        let target = format!("{kind}:nvfp4");
        let one = dir.path().join(format!("{kind}-1.safetensors"));
        let two = dir.path().join(format!("{kind}-2.safetensors"));
        convert_ok(&fixture, &one, &["--to", &target, "--threads", "1"]);
        convert_ok(&fixture, &two, &["--to", &target, "--threads", "2"]);
        assert!(std::fs::read(&one).unwrap() == std::fs::read(&two).unwrap(), "{target}");
        let mut packed = check_against_reference(kind, &fixture, &one);
        packed.sort();
        assert_eq!(packed, fp8_layers, "{target}: bfl:fp8's layers");
    }
}

/// Odd shapes through the library writer: a partial 128-row tile, padded scale columns, a
/// weight ComfyUI would pad (kept by `comfy:nvfp4`, packed by `bfl:nvfp4`) and one no NVFP4
/// layout divides (kept by both). Same bytes at every thread count and chunk size, and the
/// references' bytes.
#[test]
fn odd_shapes_equal_the_references_at_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let tensors = vec![
        outlier_weights(5, "nv.a.weight", 144, 80, 8.0),
        outlier_weights(5, "nv.b.weight", 272, 96, 8.0),
        outlier_weights(5, "nv.c.weight", 40, 32, 8.0),
        outlier_weights(5, "nv.d.weight", 48, 24, 8.0),
    ];
    let input = dir.path().join("odd.safetensors");
    std::fs::write(&input, safetensors_bytes(&tensors)).unwrap();
    let ckpt = Checkpoint::open(&input).unwrap();
    for kind in ["bfl", "comfy"] {
        let target = format!("{kind}:nvfp4");
        let recipe = Recipe::build(None, Some(&target), &[]).unwrap();
        let plan = Plan::new(&ckpt, &recipe, None).unwrap();
        let write = |out: &Path, threads: usize, chunk_bytes: u64| {
            let opts = Options {
                threads,
                allow_non_finite: false,
                cancel: None,
                progress: None,
                source_name: "odd.safetensors".to_owned(),
                chunk_bytes,
                force_extension: false,
                svdq: None,
            };
            write_packed(&ckpt, &plan, &recipe, out, &opts).unwrap();
        };
        let first = dir.path().join(format!("{kind}.safetensors"));
        write(&first, 1, CHUNK_BYTES);
        let bytes = std::fs::read(&first).unwrap();
        for (threads, chunk_bytes) in [(2, 1), (3, 100_003), (2, CHUNK_BYTES)] {
            let again = dir.path().join("again.safetensors");
            write(&again, threads, chunk_bytes);
            assert!(
                std::fs::read(&again).unwrap() == bytes,
                "{target}: {threads} threads, chunks of {chunk_bytes}"
            );
        }
        let mut packed = check_against_reference(kind, &input, &first);
        packed.sort();
        let want: &[&str] = if kind == "bfl" {
            &["nv.a.weight", "nv.b.weight", "nv.c.weight"]
        } else {
            &["nv.a.weight", "nv.b.weight"]
        };
        assert_eq!(packed, want, "{target}");
    }
}

/// What the layouts refuse: a dry run and a real run give the same one line (options that do
/// not apply, schemes of another runtime in one file); the fallbacks are reported with why.
#[test]
fn refusals_and_fallbacks() {
    let dir = tempfile::tempdir().unwrap();
    let tensors = vec![
        outlier_weights(5, "nv.c.weight", 40, 32, 8.0),
        outlier_weights(5, "nv.d.weight", 48, 24, 8.0),
    ];
    let input = dir.path().join("odd.safetensors");
    std::fs::write(&input, safetensors_bytes(&tensors)).unwrap();
    let out = dir.path().join("o.safetensors");
    let bad_args: [&[&str]; 4] = [
        &["--to", "bfl:nvfp4", "--fp8", "e5m2"],
        &["--to", "comfy:nvfp4", "--tensor-type", ".*=bfl:nvfp4"],
        &["--to", "bfl:nvfp4", "--tensor-type", ".*=int4"],
        &["--to", "bfl:nvfp4:e4m3"],
    ];
    for args in bad_args {
        let mut lines = Vec::new();
        for dry in [true, false] {
            let mut a = vec!["convert", input.to_str().unwrap(), "-o", out.to_str().unwrap()];
            a.extend_from_slice(args);
            if dry {
                a.push("--dry-run");
            }
            let o = lowbit(&a);
            assert_eq!(o.status.code(), Some(2), "{args:?}");
            lines.push(String::from_utf8_lossy(&o.stderr).into_owned());
        }
        assert_eq!(lines[0], lines[1], "{args:?}");
        assert_eq!(lines[0].lines().count(), 1, "{}", lines[0]);
        assert!(!out.exists());
    }
    // One runtime's FP8 and NVFP4 share a file: each layer says its own format.
    let mixed = ["--to", "comfy:nvfp4", "--tensor-type", "nv\\.d\\.weight=comfy:fp8", "--dry-run"];
    let mut a = vec!["convert", input.to_str().unwrap(), "-o", out.to_str().unwrap()];
    a.extend_from_slice(&mixed);
    let o = lowbit(&a);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plan = String::from_utf8_lossy(&o.stdout);
    let line = |name: &str| plan.lines().find(|l| l.contains(name)).unwrap().to_owned();
    assert!(line("nv.c.weight").contains("40 rows are not a multiple of 16"), "{plan}");
    assert!(line("nv.d.weight").contains("comfy:fp8"), "{plan}");
    let o = lowbit(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--to",
        "bfl:nvfp4",
        "--dry-run",
    ]);
    let plan = String::from_utf8_lossy(&o.stdout);
    let d = plan.lines().find(|l| l.contains("nv.d.weight")).unwrap();
    assert!(
        d.contains(
            "fallback from bfl:nvfp4: row length 24 is not a multiple of the NVFP4 block 16"
        ),
        "{d}"
    );
}
