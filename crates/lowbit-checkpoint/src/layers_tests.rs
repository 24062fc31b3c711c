//! Tests of layer grouping: each layout recognised, and one test per refusal.
//!
//! Inputs are safetensors files written here byte by byte from the format's description (an
//! 8-byte header length, a JSON header, the data), not by lowbit's writers.

use crate::{Checkpoint, Error, Layer, Scheme};
use std::path::PathBuf;

/// One tensor: name, safetensors dtype, shape, bytes.
type T<'a> = (&'a str, &'a str, &'a [u64], Vec<u8>);

/// Writes a safetensors file with `meta` and `tensors` (in that order) and opens it.
fn open(meta: &[(&str, &str)], tensors: &[T<'_>]) -> (tempfile::TempDir, Checkpoint) {
    let mut header = serde_json::Map::new();
    if !meta.is_empty() {
        let m: serde_json::Map<String, serde_json::Value> =
            meta.iter().map(|(k, v)| ((*k).to_owned(), (*v).into())).collect();
        header.insert("__metadata__".into(), m.into());
    }
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let start = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            (*name).to_owned(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("m.safetensors");
    let mut file = (h.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&h);
    file.extend_from_slice(&data);
    std::fs::write(&path, file).unwrap();
    let ckpt = Checkpoint::open(&path).unwrap();
    (dir, ckpt)
}

fn layout_error(meta: &[(&str, &str)], tensors: &[T<'_>], words: &str) {
    let (_d, c) = open(meta, tensors);
    match c.layers() {
        Err(e @ Error::Layout { .. }) => {
            let s = e.to_string();
            assert!(s.contains("m.safetensors") && s.contains(words), "{s}");
            assert!(s.contains("a layout file with inconsistent companion tensors"), "{s}");
        }
        other => panic!("expected a layout error with {words:?}, got {other:?}"),
    }
}

fn unknown_error(tensors: &[T<'_>], words: &str) {
    let (_d, c) = open(&[], tensors);
    match c.layers() {
        Err(e @ Error::UnknownLayout { .. }) => {
            let s = e.to_string();
            assert!(s.contains("m.safetensors") && s.contains(words), "{s}");
        }
        other => panic!("expected an unknown-layout error with {words:?}, got {other:?}"),
    }
}

const COMFY: &str = "{\"format\": \"float8_e4m3fn\"}";

fn comfy(marker: &str) -> Vec<T<'_>> {
    vec![
        ("a.weight", "F8_E4M3", &[2, 4], vec![0x38; 8]),
        ("a.weight_scale", "F32", &[], 0.5f32.to_le_bytes().to_vec()),
        ("a.comfy_quant", "U8", vec![marker.len() as u64].leak(), marker.as_bytes().to_vec()),
        ("a.bias", "F32", &[2], vec![0; 8]),
    ]
}

#[test]
fn comfy_fp8_is_one_layer_and_dense_tensors_stay() {
    let (_d, c) = open(&[], &comfy(COMFY));
    let layers = c.layers().unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0].name, "a.weight");
    assert_eq!(layers[0].shape, [2, 4]);
    assert_eq!(layers[0].scheme.map(|s| s.to_string()).as_deref(), Some("comfy:fp8"));
    assert_eq!(layers[0].stored, ["a.weight", "a.weight_scale", "a.comfy_quant"]);
    assert_eq!(
        layers[1],
        Layer {
            name: "a.bias".into(),
            shape: vec![2],
            scheme: None,
            stored: vec!["a.bias".into()]
        }
    );
}

#[test]
fn bfl_fp8r_is_one_layer() {
    let (_d, c) = open(
        &[],
        &[
            ("b.weight", "F8_E4M3", &[3, 2], vec![0x38; 6]),
            ("b.weight_scale", "F32", &[3], vec![0; 12]),
        ],
    );
    let layers = c.layers().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0].scheme, Scheme::parse("bfl:fp8"));
    assert_eq!(layers[0].stored, ["b.weight", "b.weight_scale"]);
}

#[test]
fn plain_fp8_reads_as_dense() {
    // E4M3: 0x38 = 1.0, 0x40 = 2.0, 0xb8 = −1.0, 0x00 = 0 (sign, 4 exponent bits biased by 7, 3
    // mantissa bits).
    let (_d, c) = open(&[], &[("p.weight", "F8_E4M3", &[2, 2], vec![0x38, 0x40, 0xb8, 0x00])]);
    let layers = c.layers().unwrap();
    assert_eq!(layers[0].scheme, Scheme::parse("fp8"));
    assert!(!layers[0].is_packed());
    let mut out = [0f32; 2];
    c.read_layer_f32(&layers[0], 1..2, &mut out).unwrap();
    assert_eq!(out, [-1.0, 0.0]);
}

#[test]
fn metadata_gives_the_logical_shape() {
    let (_d, c) = open(
        &[("lowbit.schemes", "{\"m.weight\": \"ternary\"}")],
        &[("m.weight", "U8", &[2, 3], vec![0x55; 6]), ("m.weight_scale", "BF16", &[2], vec![0; 4])],
    );
    let layers = c.layers().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0].shape, [2, 12]);
    assert_eq!(layers[0].stored, ["m.weight", "m.weight_scale"]);
}

fn ternary_meta() -> [(&'static str, &'static str); 1] {
    [("lowbit.schemes", "{\"m.weight\": \"ternary\"}")]
}

#[test]
fn metadata_not_json() {
    layout_error(&[("lowbit.schemes", "{nope")], &[], "not valid JSON");
}

#[test]
fn metadata_not_an_object() {
    layout_error(&[("lowbit.schemes", "[1]")], &[], "not a JSON object");
}

#[test]
fn metadata_unknown_scheme() {
    layout_error(&[("lowbit.schemes", "{\"m.weight\": \"int3\"}")], &[], "not one of ternary");
}

#[test]
fn listed_weight_missing() {
    layout_error(
        &ternary_meta(),
        &[("x", "F32", &[1], vec![0; 4])],
        "listed as ternary but not stored",
    );
}

#[test]
fn name_without_weight_suffix() {
    layout_error(
        &[("lowbit.schemes", "{\"m.w\": \"ternary\"}")],
        &[("m.w", "U8", &[2, 3], vec![0; 6])],
        "must end in `.weight`",
    );
}

#[test]
fn weight_not_a_matrix() {
    layout_error(&ternary_meta(), &[("m.weight", "U8", &[6], vec![0; 6])], "must be a matrix");
}

#[test]
fn shape_the_scheme_cannot_hold() {
    layout_error(
        &[("lowbit.schemes", "{\"m.weight\": \"int4:g64\"}")],
        &[("m.weight", "I8", &[2, 16], vec![0; 32])],
        "not a multiple of the group size 64",
    );
}

#[test]
fn companion_missing() {
    layout_error(
        &ternary_meta(),
        &[("m.weight", "U8", &[2, 3], vec![0; 6])],
        "needs `m.weight_scale`, which is missing",
    );
}

#[test]
fn companion_wrong_dtype() {
    layout_error(
        &ternary_meta(),
        &[("m.weight", "U8", &[2, 3], vec![0; 6]), ("m.weight_scale", "F32", &[2], vec![0; 8])],
        "found F32 [2]",
    );
}

#[test]
fn companion_wrong_shape() {
    layout_error(
        &ternary_meta(),
        &[("m.weight", "U8", &[2, 3], vec![0; 6]), ("m.weight_scale", "BF16", &[3], vec![0; 6])],
        "needs `m.weight_scale` as BF16 [2], found BF16 [3]",
    );
}

#[test]
fn comfy_weight_scale_not_scalar() {
    let mut t = comfy(COMFY);
    t[1] = ("a.weight_scale", "F32", &[2], vec![0; 8]);
    layout_error(&[], &t, "needs `a.weight_scale` as F32 []");
}

#[test]
fn comfy_marker_not_json() {
    layout_error(&[], &comfy("{format"), "not valid JSON");
}

#[test]
fn comfy_marker_not_an_object() {
    layout_error(&[], &comfy("[]"), "JSON that is not an object");
}

#[test]
fn comfy_marker_too_long() {
    let long = format!("{{\"format\": \"float8_e4m3fn\", \"pad\": \"{}\"}}", "x".repeat(5000));
    layout_error(&[], &comfy(&long), "above the 4096-byte limit");
}

#[test]
fn comfy_marker_not_u8() {
    let mut t = comfy(COMFY);
    t[2].1 = "I8";
    layout_error(&[], &t, "must be U8 of one dimension");
}

#[test]
fn comfy_format_unknown() {
    unknown_error(
        &comfy("{\"format\": \"mxfp8\"}"),
        "ComfyUI format `mxfp8` is not one lowbit reads",
    );
}

/// ComfyUI NVFP4 of a `[16, 16]` weight: codes `[16, 8]`, block scales swizzled into one
/// 128 × 4 tile, a scalar global scale, the marker.
fn comfy_nvfp4(scales: &'static [u64]) -> Vec<T<'static>> {
    let marker = "{\"format\": \"nvfp4\"}";
    vec![
        ("a.weight", "U8", &[16, 8], vec![0x22; 128]),
        ("a.weight_scale", "F8_E4M3", scales, vec![0x38; scales.iter().product::<u64>() as usize]),
        ("a.weight_scale_2", "F32", &[], 0.5f32.to_le_bytes().to_vec()),
        ("a.comfy_quant", "U8", &[19], marker.as_bytes().to_vec()),
    ]
}

/// BFL NVFP4 of a `[3, 16]` weight, recognised by its `weight_scale_2`.
fn bfl_nvfp4() -> Vec<T<'static>> {
    vec![
        ("b.weight", "U8", &[3, 8], vec![0x21; 24]),
        ("b.weight_scale", "F8_E4M3", &[3, 1], vec![0x38; 3]),
        ("b.weight_scale_2", "F32", &[], 0.5f32.to_le_bytes().to_vec()),
        ("b.input_scale", "F32", &[], 1f32.to_le_bytes().to_vec()),
    ]
}

#[test]
fn nvfp4_layouts_are_one_layer_each() {
    let (_d, c) = open(&[], &comfy_nvfp4(&[128, 4]));
    let layers = c.layers().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(
        (layers[0].shape.clone(), layers[0].scheme),
        (vec![16, 16], Some(Scheme::ComfyNvfp4))
    );
    assert_eq!(
        layers[0].stored,
        ["a.weight", "a.weight_scale", "a.weight_scale_2", "a.comfy_quant"]
    );
    // Codes 2 (1.0) everywhere, block scale 1.0, global 0.5.
    let mut out = [0f32; 16];
    c.read_layer_f32(&layers[0], 3..4, &mut out).unwrap();
    assert_eq!(out, [0.5; 16]);

    let (_d, c) = open(&[], &bfl_nvfp4());
    let layers = c.layers().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!((layers[0].shape.clone(), layers[0].scheme), (vec![3, 16], Some(Scheme::BflNvfp4)));
    c.read_layer_f32(&layers[0], 2..3, &mut out).unwrap();
    // Low nibble first: 0x21 holds 1 (0.5) then 2 (1.0).
    assert_eq!(out[..2], [0.25, 0.5]);
}

#[test]
fn comfy_nvfp4_scales_may_be_u8() {
    let mut t = comfy_nvfp4(&[128, 4]);
    t[1].1 = "U8";
    let (_d, c) = open(&[], &t);
    let layers = c.layers().unwrap();
    assert_eq!(layers[0].scheme, Some(Scheme::ComfyNvfp4));
    let mut out = [0f32; 16];
    c.read_layer_f32(&layers[0], 0..1, &mut out).unwrap();
    assert_eq!(out, [0.5; 16]);
    // Not for BFL's, whose loader takes them as they are.
    let mut t = bfl_nvfp4();
    t[1].1 = "U8";
    layout_error(&[], &t, "needs `b.weight_scale` as F8_E4M3 [3, 1], found U8");
}

#[test]
fn comfy_nvfp4_scales_not_swizzled() {
    layout_error(&[], &comfy_nvfp4(&[16, 1]), "needs `a.weight_scale` as F8_E4M3 [128, 4]");
}

#[test]
fn bfl_nvfp4_without_input_scale() {
    let mut t = bfl_nvfp4();
    t.pop();
    layout_error(&[], &t, "needs `b.input_scale`, which is missing");
}

#[test]
fn bnb_fp4_unknown() {
    unknown_error(
        &[
            ("q.weight", "U8", &[4, 1], vec![0; 4]),
            ("q.weight.quant_state.bitsandbytes__fp4", "U8", &[2], b"{}".to_vec()),
        ],
        "bitsandbytes FP4",
    );
}

#[test]
fn codes_with_scales_and_no_marker() {
    unknown_error(
        &[("u.weight", "U8", &[2, 3], vec![0; 6]), ("u.weight_scale", "BF16", &[2], vec![0; 4])],
        "U8 weight with a `u.weight_scale` companion",
    );
}

fn nf4_state(json: &str) -> Vec<T<'_>> {
    vec![
        ("q.weight", "U8", &[4, 1], vec![0; 4]),
        (
            "q.weight.quant_state.bitsandbytes__nf4",
            "U8",
            vec![json.len() as u64].leak(),
            json.as_bytes().to_vec(),
        ),
    ]
}

#[test]
fn nf4_state_not_nf4() {
    layout_error(&[], &nf4_state("{\"quant_type\": \"fp4\"}"), "does not say");
}

#[test]
fn nf4_state_other_blocksize() {
    layout_error(
        &[],
        &nf4_state("{\"quant_type\": \"nf4\", \"blocksize\": 128}"),
        "blocksize is not 64",
    );
}

#[test]
fn nf4_state_bad_shape() {
    let j = "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"bfloat16\", \"shape\": [8]}";
    layout_error(&[], &nf4_state(j), "`shape` is not two");
}

#[test]
fn nf4_state_overflowing_shape() {
    let j = "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"bfloat16\", \"shape\": [18446744073709551615, 2]}";
    layout_error(&[], &nf4_state(j), "overflows");
}

#[test]
fn nf4_state_bad_dtype() {
    let j = "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"int8\", \"shape\": [2, 4]}";
    layout_error(&[], &nf4_state(j), "dtype Some(\"int8\")");
}

#[test]
fn nf4_state_missing() {
    layout_error(
        &[("lowbit.schemes", "{\"q.weight\": \"nf4\"}")],
        &[("q.weight", "U8", &[4, 1], vec![0; 4])],
        "needs `q.weight.quant_state.bitsandbytes__nf4`",
    );
}

fn read_error(rows: std::ops::Range<u64>, len: usize, words: &str) {
    let (_d, c) = open(
        &ternary_meta(),
        &[("m.weight", "U8", &[2, 3], vec![0x55; 6]), ("m.weight_scale", "BF16", &[2], vec![0; 4])],
    );
    let layers = c.layers().unwrap();
    let mut out = vec![0f32; len];
    let e = c.read_layer_f32(&layers[0], rows, &mut out).unwrap_err().to_string();
    assert!(e.contains("m.safetensors") && e.contains("m.weight") && e.contains(words), "{e}");
}

#[test]
fn read_rows_out_of_range() {
    read_error(1..3, 24, "rows 1..3 out of range (0..2)");
}

#[test]
fn read_buffer_wrong_length() {
    read_error(0..1, 11, "buffer holds 11 values, 1 rows of 12 needed");
}

#[test]
fn read_layer_of_another_checkpoint() {
    let (_d, c) = open(&[], &[("x", "F32", &[1], vec![0; 4])]);
    let foreign =
        Layer { name: "y".into(), shape: vec![1], scheme: None, stored: vec!["y".into()] };
    let e = c.read_layer_f32(&foreign, 0..1, &mut [0.0]).unwrap_err().to_string();
    assert!(e.contains("stored tensor `y` is not in this checkpoint"), "{e}");
}
