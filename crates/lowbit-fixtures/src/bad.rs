//! Malformed checkpoints, each with the words its error message must contain.
//!
//! Every case is small (well under a kilobyte) and built from a valid file by one targeted
//! change, so each exercises exactly one check of the readers.

use lowbit_dtype::GgmlType;
use lowbit_gguf::{Layout, Value, type_id};

/// One malformed checkpoint.
#[derive(Debug, Clone)]
pub struct BadCase {
    /// What to pass to `lowbit inspect`, relative to `fixtures/bad/`: a file or a directory.
    pub name: &'static str,
    /// Files to write, relative to `fixtures/bad/`.
    pub files: Vec<(String, Vec<u8>)>,
    /// Substrings the one-line error must contain (the tensor name where there is one).
    pub expect: &'static [&'static str],
}

const QKV: &str = "double_blocks.0.img_attn.qkv.weight";
const BIAS: &str = "img_in.bias";

/// A safetensors file from a header text and a data section.
fn st(header: &str, data_len: usize) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend((0..data_len).map(|i| (i % 251) as u8));
    out
}

/// The valid safetensors base: a 6×4 BF16 weight and a 4-element BF16 bias.
fn st_good_header() -> String {
    format!(
        r#"{{"__metadata__":{{"format":"pt"}},"{QKV}":{{"dtype":"BF16","shape":[6,4],"data_offsets":[0,48]}},"{BIAS}":{{"dtype":"BF16","shape":[4],"data_offsets":[48,56]}}}}"#
    )
}

fn st_with(qkv: &str, bias: &str) -> String {
    format!(r#"{{"{QKV}":{qkv},"{BIAS}":{bias}}}"#)
}

const QKV_OK: &str = r#"{"dtype":"BF16","shape":[6,4],"data_offsets":[0,48]}"#;
const BIAS_OK: &str = r#"{"dtype":"BF16","shape":[4],"data_offsets":[48,56]}"#;

/// The valid GGUF base: a Q8_0 weight of 3 rows × 64 and an F32 bias, with data.
fn gguf_parts(kvs: &[(String, Value)], tensors: Vec<(String, Vec<u64>, GgmlType)>) -> Vec<u8> {
    let layout = Layout::new(kvs, tensors, 32).expect("valid layout");
    let mut out = layout.header;
    out.extend((0..layout.data_len).map(|i| (i % 7) as u8));
    out
}

fn gguf_kvs() -> Vec<(String, Value)> {
    vec![
        ("general.architecture".into(), Value::String("flux".into())),
        ("general.quantization_version".into(), Value::U32(2)),
        (
            "lowbit.note".into(),
            Value::Array { element_type: type_id::U8, items: vec![Value::U8(1), Value::U8(2)] },
        ),
    ]
}

fn gguf_tensors() -> Vec<(String, Vec<u64>, GgmlType)> {
    vec![(QKV.into(), vec![64, 3], GgmlType::Q8_0), (BIAS.into(), vec![4], GgmlType::F32)]
}

fn gguf_good() -> Vec<u8> {
    gguf_parts(&gguf_kvs(), gguf_tensors())
}

fn find(bytes: &[u8], needle: &[u8]) -> usize {
    bytes.windows(needle.len()).position(|w| w == needle).expect("needle present")
}

/// Position of a tensor info's field: 0 = dim count, 4 = dims, then type, then offset.
fn tensor_field(bytes: &[u8], name: &str) -> usize {
    find(bytes, name.as_bytes()) + name.len()
}

fn patch(mut bytes: Vec<u8>, at: usize, with: &[u8]) -> Vec<u8> {
    bytes[at..at + with.len()].copy_from_slice(with);
    bytes
}

fn one(name: &'static str, bytes: Vec<u8>, expect: &'static [&'static str]) -> BadCase {
    BadCase { name, files: vec![(name.to_owned(), bytes)], expect }
}

fn dir(
    name: &'static str,
    files: Vec<(&str, Vec<u8>)>,
    expect: &'static [&'static str],
) -> BadCase {
    BadCase {
        name,
        files: files.into_iter().map(|(f, b)| (format!("{name}/{f}"), b)).collect(),
        expect,
    }
}

fn index(entries: &[(&str, &str)]) -> Vec<u8> {
    let map: serde_json::Map<String, serde_json::Value> =
        entries.iter().map(|(t, f)| ((*t).to_owned(), serde_json::Value::from(*f))).collect();
    let mut s =
        serde_json::to_string_pretty(&serde_json::json!({"metadata": {}, "weight_map": map}))
            .expect("JSON");
    s.push('\n');
    s.into_bytes()
}

const IDX: &str = "model.safetensors.index.json";

/// Every malformed case, in a fixed order.
#[must_use]
pub fn cases() -> Vec<BadCase> {
    let good = st(&st_good_header(), 56);
    let shard_a = st(&format!(r#"{{"{QKV}":{QKV_OK}}}"#), 48);
    let shard_b =
        st(&format!(r#"{{"{BIAS}":{{"dtype":"BF16","shape":[4],"data_offsets":[0,8]}}}}"#), 8);
    let g = gguf_good();
    let qkv_dims = tensor_field(&g, QKV);
    vec![
        one("too-short.safetensors", vec![1, 2, 3], &["too short for the 8-byte header length"]),
        one("truncated.safetensors", good[..good.len() - 4].to_vec(), &[BIAS, "truncated"]),
        one(
            "header-length-past-end.safetensors",
            patch(good.clone(), 0, &4096u64.to_le_bytes()),
            &["header length 4096 runs past the end"],
        ),
        one(
            "header-length-huge.safetensors",
            patch(good.clone(), 0, &(1u64 << 62).to_le_bytes()),
            &["exceeds the 100000000-byte limit"],
        ),
        one(
            "header-not-json.safetensors",
            st("this is not json at all!", 0),
            &["header is not a JSON object"],
        ),
        one(
            "header-not-utf8.safetensors",
            [&7u64.to_le_bytes()[..], b"{\"\xff\xfe\":1}"].concat(),
            &["not valid UTF-8"],
        ),
        one(
            "offsets-out-of-bounds.safetensors",
            st(&st_with(QKV_OK, r#"{"dtype":"BF16","shape":[4],"data_offsets":[4048,4056]}"#), 56),
            &[BIAS, "runs past the end"],
        ),
        one(
            "offsets-overlap.safetensors",
            st(&st_with(QKV_OK, r#"{"dtype":"BF16","shape":[4],"data_offsets":[40,48]}"#), 48),
            &[BIAS, "overlaps tensor", QKV],
        ),
        one(
            "offsets-hole.safetensors",
            st(&st_with(QKV_OK, r#"{"dtype":"BF16","shape":[4],"data_offsets":[64,72]}"#), 72),
            &["16 bytes at data offset 48 belong to no tensor"],
        ),
        one(
            "offsets-reversed.safetensors",
            st(&st_with(QKV_OK, r#"{"dtype":"BF16","shape":[0],"data_offsets":[56,48]}"#), 56),
            &[BIAS, "end before they begin"],
        ),
        one(
            "unknown-dtype.safetensors",
            st(&st_with(r#"{"dtype":"Q9","shape":[6,4],"data_offsets":[0,48]}"#, BIAS_OK), 56),
            &[QKV, "unknown dtype `Q9`"],
        ),
        one(
            "shape-overflow.safetensors",
            st(
                &st_with(
                    r#"{"dtype":"BF16","shape":[4294967296,4294967296,4],"data_offsets":[0,48]}"#,
                    BIAS_OK,
                ),
                56,
            ),
            &[QKV, "overflows"],
        ),
        one(
            "shape-bytes-mismatch.safetensors",
            st(&st_with(r#"{"dtype":"BF16","shape":[5,4],"data_offsets":[0,48]}"#, BIAS_OK), 56),
            &[QKV, "needs 40 bytes but data_offsets span 48"],
        ),
        one(
            "duplicate-tensor.safetensors",
            st(&format!(r#"{{"{QKV}":{QKV_OK},"{QKV}":{BIAS_OK}}}"#), 56),
            &[QKV, "appears twice"],
        ),
        one(
            "entry-missing-dtype.safetensors",
            st(&st_with(r#"{"shape":[6,4],"data_offsets":[0,48]}"#, BIAS_OK), 56),
            &[QKV, "missing `dtype`"],
        ),
        one(
            "not-a-checkpoint.bin",
            b"PK\x03\x04 this is a zip, not a checkpoint".to_vec(),
            &["not a safetensors or GGUF file"],
        ),
        one("bad-magic.gguf", patch(g.clone(), 0, b"GGML"), &["bad magic"]),
        one(
            "unsupported-version.gguf",
            patch(g.clone(), 4, &1u32.to_le_bytes()),
            &["unsupported GGUF version 1"],
        ),
        one("big-endian.gguf", patch(g.clone(), 4, &3u32.to_be_bytes()), &["big-endian"]),
        one(
            "absurd-tensor-count.gguf",
            patch(g.clone(), 8, &u64::MAX.to_le_bytes()),
            &["tensor count 18446744073709551615 is impossible"],
        ),
        one(
            "absurd-kv-count.gguf",
            patch(g.clone(), 16, &(1u64 << 40).to_le_bytes()),
            &["metadata count 1099511627776 is impossible"],
        ),
        one(
            "string-past-end.gguf",
            patch(g.clone(), 24, &(1u64 << 40).to_le_bytes()),
            &["key of metadata entry 0", "string length 1099511627776", "runs past the end"],
        ),
        one(
            "array-too-long.gguf",
            {
                let at = find(&g, b"lowbit.note") + 11 + 4 + 4;
                patch(g.clone(), at, &(1u64 << 50).to_le_bytes())
            },
            &["lowbit.note", "cannot fit"],
        ),
        one(
            "unknown-ggml-type.gguf",
            patch(g.clone(), qkv_dims + 4 + 16, &99u32.to_le_bytes()),
            &[QKV, "unknown ggml type id 99"],
        ),
        one(
            "misaligned-offset.gguf",
            {
                let at = tensor_field(&g, BIAS) + 4 + 8 + 4;
                let off = u64::from_le_bytes(g[at..at + 8].try_into().expect("8 bytes"));
                patch(g.clone(), at, &(off + 4).to_le_bytes())
            },
            &[BIAS, "not a multiple of the alignment 32"],
        ),
        one(
            "tensor-out-of-bounds.gguf",
            g[..g.len() - 40].to_vec(),
            &[BIAS, "runs past the end of the data section"],
        ),
        one(
            "row-not-block-multiple.gguf",
            patch(g.clone(), qkv_dims + 4, &48u64.to_le_bytes()),
            &[QKV, "row length 48 is not a multiple of the Q8_0 block size 32"],
        ),
        one(
            "too-many-dims.gguf",
            patch(g.clone(), qkv_dims, &5u32.to_le_bytes()),
            &[QKV, "5 dimensions"],
        ),
        one(
            "shape-overflow.gguf",
            patch(g.clone(), qkv_dims + 4 + 8, &(1u64 << 62).to_le_bytes()),
            &[QKV, "overflow"],
        ),
        one(
            "bad-alignment.gguf",
            {
                let mut k = gguf_kvs();
                k.push(("general.alignment".into(), Value::U32(24)));
                gguf_parts(&k, gguf_tensors())
            },
            &["general.alignment = 24"],
        ),
        one("truncated-header.gguf", g[..qkv_dims + 6].to_vec(), &[QKV, "truncated"]),
        one(
            "duplicate-tensor.gguf",
            gguf_parts(&gguf_kvs(), vec![gguf_tensors()[0].clone(), gguf_tensors()[0].clone()]),
            &[QKV, "appears twice"],
        ),
        one(
            "overlapping-tensors.gguf",
            {
                let at = tensor_field(&g, BIAS) + 4 + 8 + 4;
                patch(g.clone(), at, &0u64.to_le_bytes())
            },
            &["overlaps tensor"],
        ),
        dir(
            "sharded-missing-shard",
            vec![
                (IDX, index(&[(QKV, "a.safetensors"), (BIAS, "b.safetensors")])),
                ("a.safetensors", shard_a.clone()),
            ],
            &["b.safetensors", "does not exist", BIAS],
        ),
        dir(
            "sharded-tensor-not-in-shard",
            vec![
                (IDX, index(&[(QKV, "a.safetensors"), (BIAS, "a.safetensors")])),
                ("a.safetensors", shard_a.clone()),
                ("b.safetensors", shard_b.clone()),
            ],
            &[BIAS, "does not hold it"],
        ),
        dir(
            "sharded-duplicate-tensor",
            vec![
                (IDX, index(&[(QKV, "a.safetensors"), (BIAS, "b.safetensors")])),
                ("a.safetensors", shard_a.clone()),
                ("b.safetensors", st(&format!(r#"{{"{QKV}":{QKV_OK},"{BIAS}":{BIAS_OK}}}"#), 56)),
            ],
            &[QKV, "is in both"],
        ),
        dir(
            "sharded-index-not-json",
            vec![(IDX, b"{\"weight_map\": {".to_vec()), ("a.safetensors", shard_a.clone())],
            &[IDX, "not valid JSON"],
        ),
        dir(
            "sharded-path-escape",
            vec![(IDX, index(&[(QKV, "../a.safetensors")])), ("a.safetensors", shard_a.clone())],
            &["../a.safetensors", "not a file beside the index"],
        ),
        dir(
            "sharded-bad-shard",
            vec![
                (IDX, index(&[(QKV, "a.safetensors"), (BIAS, "b.safetensors")])),
                ("a.safetensors", shard_a),
                (
                    "b.safetensors",
                    st(
                        &format!(
                            r#"{{"{BIAS}":{{"dtype":"X7","shape":[4],"data_offsets":[0,8]}}}}"#
                        ),
                        8,
                    ),
                ),
            ],
            &["b.safetensors", BIAS, "unknown dtype `X7`"],
        ),
    ]
}
