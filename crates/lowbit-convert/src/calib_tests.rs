//! Tests of the calibration reader: the name mapping, and one test per refusal.
//!
//! Files are written here by a small safetensors writer of the test's own (this crate does not
//! depend on the `safetensors` crate), so every field can be damaged on purpose.

use super::*;
use std::fmt::Write as _;

/// One stored tensor: name, dtype, shape, bytes.
type T<'a> = (&'a str, &'a str, Vec<u64>, Vec<u8>);

fn f32s(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn meta_json(naming: &str, groups: usize) -> String {
    let bounds: Vec<f64> =
        (0..=groups).map(|i| 1000.0 * (groups - i) as f64 / groups as f64).collect();
    format!(
        r#"{{"version": 1, "statistic": "absmax", "naming": "{naming}", "groups": {groups}, "boundaries": {bounds:?}, "prompts": ["a cat"], "steps": 4, "guidance": 3.5, "model": "m", "calls": 4}}"#
    )
}

/// Writes a safetensors file with `tensors` and, when given, `lowbit.calibration = meta`.
fn write(dir: &tempfile::TempDir, tensors: &[T<'_>], meta: Option<&str>) -> PathBuf {
    let mut header = serde_json::Map::new();
    if let Some(m) = meta {
        header.insert("__metadata__".into(), serde_json::json!({ KEY: m }));
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
    let mut text = serde_json::to_string(&header).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut file = (text.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(text.as_bytes());
    file.extend_from_slice(&data);
    let path = dir.path().join("stats.safetensors");
    std::fs::write(&path, file).unwrap();
    path
}

/// A valid two-group file in diffusers naming.
fn two_groups() -> Vec<T<'static>> {
    vec![
        (
            "transformer_blocks.0.attn.to_q",
            "F32",
            vec![2, 3],
            f32s(&[1.0, 5.0, 0.5, 2.0, 0.0, 1.0]),
        ),
        (
            "transformer_blocks.0.attn.to_k",
            "F32",
            vec![2, 3],
            f32s(&[3.0, 1.0, 0.5, 1.0, 4.0, 1.0]),
        ),
        (
            "transformer_blocks.0.attn.to_v",
            "F32",
            vec![2, 3],
            f32s(&[2.0, 2.0, 0.25, 0.0, 0.0, 9.0]),
        ),
        ("single_transformer_blocks.0.proj_mlp", "F32", vec![2, 2], f32s(&[1.0, 7.0, 2.0, 0.0])),
        ("single_transformer_blocks.0.attn.to_q", "F32", vec![2, 2], f32s(&[6.0, 1.0, 1.0, 3.0])),
        ("proj_out", "F32", vec![2, 2], f32s(&[1.0, 2.0, 3.0, 4.0])),
        ("other.linear", "F32", vec![2, 1], f32s(&[8.0, 9.0])),
    ]
}

/// Opens a file that must be refused; returns the message, which must name the file and `what`.
fn refused(tensors: &[T<'_>], meta: Option<&str>, what: &str, says: &str) -> Error {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, tensors, meta);
    refused_at(&path, what, says)
}

fn refused_at(path: &Path, what: &str, says: &str) -> Error {
    let err = Calibration::open(path).unwrap_err();
    let mut msg = err.to_string();
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(&err);
    while let Some(c) = cause {
        write!(msg, ": {c}").unwrap();
        cause = c.source();
    }
    assert!(!msg.contains('\n'), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains(what), "`{what}` not in: {msg}");
    assert!(msg.contains(says), "`{says}` not in: {msg}");
    err
}

#[test]
fn diffusers_modules_of_one_weight_combine_by_max() {
    let dir = tempfile::tempdir().unwrap();
    let meta = meta_json("diffusers", 2);
    let path = write(&dir, &two_groups(), Some(&meta));
    let c = Calibration::open(&path).unwrap();
    assert_eq!(c.groups(), 2);
    assert_eq!(c.boundaries(), [1000.0, 500.0, 0.0]);
    assert_eq!(c.metadata_json(), meta);
    assert_eq!(c.path(), path);
    let qkv = [3.0, 5.0, 0.5, 2.0, 4.0, 9.0];
    assert_eq!(c.absmax("double_blocks.0.img_attn.qkv.weight"), Some(&qkv[..]));
    assert_eq!(
        c.absmax("model.diffusion_model.double_blocks.0.img_attn.qkv.weight"),
        Some(&qkv[..])
    );
    assert_eq!(c.absmax("double_blocks.0.img_attn.qkv"), Some(&qkv[..]));
    // A diffusers name given to absmax finds its fused weight.
    assert_eq!(c.absmax("transformer_blocks.0.attn.to_k.weight"), Some(&qkv[..]));
    let linear1 = [6.0, 7.0, 2.0, 3.0];
    assert_eq!(c.absmax("single_blocks.0.linear1.weight"), Some(&linear1[..]));
    assert_eq!(c.absmax("final_layer.linear.weight"), Some(&[1.0, 2.0, 3.0, 4.0][..]));
    assert_eq!(c.absmax("other.linear.weight"), Some(&[8.0, 9.0][..]));
    assert_eq!(c.absmax("double_blocks.0.txt_attn.qkv.weight"), None);
    assert_eq!(c.absmax("transformer_blocks.0.attn.to_q.bias"), None);
}

#[test]
fn bfl_names_and_one_group_vectors_are_read_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let tensors = [
        ("double_blocks.0.img_attn.qkv", "F32", vec![3], f32s(&[1.0, 2.0, 3.0])),
        ("single_blocks.0.linear2", "F32", vec![1, 2], f32s(&[4.0, 0.0])),
        ("never_ran", "F32", vec![2], f32s(&[0.0, 0.0])),
    ];
    let path = write(&dir, &tensors, Some(&meta_json("bfl", 1)));
    let c = Calibration::open(&path).unwrap();
    assert_eq!(c.groups(), 1);
    assert_eq!(c.absmax("double_blocks.0.img_attn.qkv.weight"), Some(&[1.0, 2.0, 3.0][..]));
    assert_eq!(c.absmax("single_blocks.0.linear2.weight"), Some(&[4.0, 0.0][..]));
    assert_eq!(c.absmax("never_ran.weight"), Some(&[0.0, 0.0][..]));
}

#[test]
fn a_missing_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = refused_at(&dir.path().join("none.safetensors"), "cannot read", "No such file");
    assert!(matches!(err, Error::CalibrationIo { .. }));
}

#[test]
fn a_file_that_is_not_safetensors_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stats.safetensors");
    std::fs::write(&path, b"not a safetensors file at all").unwrap();
    let err = refused_at(&path, "not a calibration statistics file", "header length");
    assert!(matches!(err, Error::CalibrationFile { .. }));
}

#[test]
fn a_truncated_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, &two_groups(), Some(&meta_json("diffusers", 2)));
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
    let err = refused_at(&path, "not a calibration statistics file", "other.linear");
    assert!(matches!(err, Error::CalibrationFile { .. }));
}

#[test]
fn missing_metadata_is_refused() {
    let err = refused(&two_groups(), None, "lowbit.calibration", "missing");
    assert!(matches!(err, Error::CalibrationMetadata { .. }));
}

#[test]
fn metadata_that_is_not_json_is_refused() {
    refused(&two_groups(), Some("{version: 1"), "lowbit.calibration", "not JSON");
}

#[test]
fn metadata_that_is_not_an_object_is_refused() {
    refused(&two_groups(), Some("[1, 2]"), "lowbit.calibration", "not a JSON object");
}

#[test]
fn a_missing_field_is_refused() {
    let meta = meta_json("diffusers", 2).replace(r#""statistic": "absmax", "#, "");
    refused(&two_groups(), Some(&meta), "lowbit.calibration", "no `statistic` field");
}

#[test]
fn another_version_is_refused() {
    let meta = meta_json("diffusers", 2).replace(r#""version": 1"#, r#""version": 2"#);
    refused(&two_groups(), Some(&meta), "lowbit.calibration", "version 2 is not 1");
}

#[test]
fn another_statistic_is_refused() {
    let meta = meta_json("diffusers", 2).replace("absmax", "absmean");
    refused(&two_groups(), Some(&meta), "lowbit.calibration", "statistic \"absmean\"");
}

#[test]
fn an_unknown_naming_is_refused() {
    let meta = meta_json("comfy", 2);
    refused(&two_groups(), Some(&meta), "lowbit.calibration", "naming \"comfy\"");
}

#[test]
fn zero_groups_are_refused() {
    let meta = meta_json("diffusers", 2).replace(r#""groups": 2"#, r#""groups": 0"#);
    refused(&two_groups(), Some(&meta), "lowbit.calibration", "groups 0 is not");
}

#[test]
fn boundaries_of_the_wrong_count_are_refused() {
    let meta = meta_json("diffusers", 2).replace("[1000.0, 500.0, 0.0]", "[1000.0, 0.0]");
    refused(&two_groups(), Some(&meta), "lowbit.calibration", "2 boundaries for 2 groups");
}

#[test]
fn boundaries_that_do_not_descend_are_refused() {
    let meta = meta_json("diffusers", 2).replace("[1000.0, 500.0, 0.0]", "[0.0, 500.0, 1000.0]");
    refused(&two_groups(), Some(&meta), "lowbit.calibration", "not strictly descending");
}

#[test]
fn a_boundary_that_is_not_a_number_is_refused() {
    let meta = meta_json("diffusers", 2).replace("[1000.0, 500.0, 0.0]", r#"[1000.0, "x", 0.0]"#);
    refused(&two_groups(), Some(&meta), "lowbit.calibration", "boundary \"x\"");
}

#[test]
fn a_tensor_that_is_not_f32_is_refused() {
    let mut t = two_groups();
    t[1] = ("transformer_blocks.0.attn.to_k", "F16", vec![2, 3], vec![0; 12]);
    let err =
        refused(&t, Some(&meta_json("diffusers", 2)), "`transformer_blocks.0.attn.to_k`", "F16");
    assert!(matches!(err, Error::CalibrationTensor { .. }));
}

#[test]
fn a_tensor_of_rank_three_is_refused() {
    let mut t = two_groups();
    t[5] = ("proj_out", "F32", vec![2, 1, 2], f32s(&[1.0; 4]));
    refused(&t, Some(&meta_json("diffusers", 2)), "`proj_out`", "1-D or 2-D");
}

#[test]
fn a_leading_dimension_other_than_g_is_refused() {
    let mut t = two_groups();
    t[5] = ("proj_out", "F32", vec![4, 1], f32s(&[1.0; 4]));
    refused(&t, Some(&meta_json("diffusers", 2)), "`proj_out`", "must be [2, K]");
    t[5] = ("proj_out", "F32", vec![4], f32s(&[1.0; 4]));
    refused(&t, Some(&meta_json("diffusers", 2)), "`proj_out`", "must be [2, K]");
}

#[test]
fn a_tensor_without_channels_is_refused() {
    let mut t = two_groups();
    t[5] = ("proj_out", "F32", vec![2, 0], Vec::new());
    refused(&t, Some(&meta_json("diffusers", 2)), "`proj_out`", "no channels");
}

#[test]
fn nan_is_refused() {
    let mut t = two_groups();
    t[5] = ("proj_out", "F32", vec![2, 2], f32s(&[1.0, 2.0, f32::NAN, 4.0]));
    refused(&t, Some(&meta_json("diffusers", 2)), "`proj_out`", "value NaN at group 1, channel 0");
}

#[test]
fn infinity_is_refused() {
    let mut t = two_groups();
    t[5] = ("proj_out", "F32", vec![2, 2], f32s(&[1.0, f32::INFINITY, 3.0, 4.0]));
    refused(&t, Some(&meta_json("diffusers", 2)), "`proj_out`", "value inf at group 0, channel 1");
}

#[test]
fn a_negative_value_is_refused() {
    let mut t = two_groups();
    t[5] = ("proj_out", "F32", vec![2, 2], f32s(&[1.0, 2.0, 3.0, -4.0]));
    refused(&t, Some(&meta_json("diffusers", 2)), "`proj_out`", "value -4 at group 1, channel 1");
}

#[test]
fn an_empty_group_is_refused() {
    let mut t = two_groups();
    t[5] = ("proj_out", "F32", vec![2, 2], f32s(&[1.0, 2.0, 0.0, 0.0]));
    refused(
        &t,
        Some(&meta_json("diffusers", 2)),
        "`proj_out`",
        "group 1 (timesteps 500 >= t > 0) is all zeros",
    );
}

#[test]
fn parts_of_one_weight_with_different_widths_are_refused() {
    let mut t = two_groups();
    t[2] = ("transformer_blocks.0.attn.to_v", "F32", vec![2, 2], f32s(&[1.0; 4]));
    let err = refused(
        &t,
        Some(&meta_json("diffusers", 2)),
        "`transformer_blocks.0.attn.to_v`",
        "has 2 channels but `transformer_blocks.0.attn.to_q`, which feeds the same weight `double_blocks.0.img_attn.qkv`, has 3",
    );
    assert!(matches!(err, Error::CalibrationTensor { .. }));
}
