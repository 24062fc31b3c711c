//! Malformed checkpoints, each with the words its error message must contain.
//!
//! Every case is small (well under a kilobyte) and built from a valid file by one targeted
//! change, so each exercises exactly one check. Most damage the container, and every command
//! must refuse them; the rest parse (so `inspect` shows them) but cannot be converted: a scalar
//! where rows are needed, an empty weight, five dimensions, parts that do not fuse.
//! GGUF inputs come from this crate's own encoder ([`crate::gguf`]), never from the writer
//! under test.

use crate::gguf::{Meta, TensorSpec, Ty};

/// One malformed checkpoint.
#[derive(Debug, Clone)]
pub struct BadCase {
    /// What to pass to `lowbit`, relative to `fixtures/bad/`: a file or a directory.
    pub name: &'static str,
    /// Files to write, relative to `fixtures/bad/`.
    pub files: Vec<(String, Vec<u8>)>,
    /// Substrings the one-line error of `lowbit inspect` must contain (the tensor name where
    /// there is one); `None` when the file is a valid checkpoint that `inspect` must show.
    pub inspect: Option<&'static [&'static str]>,
    /// Options of `lowbit convert` besides the output and `--to gguf:q8_0`.
    pub convert_args: &'static [&'static str],
    /// Substrings the one-line error of `lowbit convert` (with and without `--dry-run`) must
    /// contain.
    pub convert: &'static [&'static str],
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
fn gguf_parts(kvs: &[(String, Meta)], tensors: &[TensorSpec]) -> Vec<u8> {
    crate::gguf::file(kvs, tensors, 32)
}

fn gguf_kvs() -> Vec<(String, Meta)> {
    vec![
        ("general.architecture".into(), Meta::String("flux".into())),
        ("general.quantization_version".into(), Meta::U32(2)),
        ("lowbit.note".into(), Meta::U8Array(vec![1, 2])),
    ]
}

fn gguf_tensors() -> Vec<TensorSpec> {
    vec![
        TensorSpec { name: QKV.into(), dims: vec![64, 3], ty: Ty::Q8_0 },
        TensorSpec { name: BIAS.into(), dims: vec![4], ty: Ty::F32 },
    ]
}

fn gguf_good() -> Vec<u8> {
    gguf_parts(&gguf_kvs(), &gguf_tensors())
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

/// A file every command refuses with the same error.
fn one(name: &'static str, bytes: Vec<u8>, expect: &'static [&'static str]) -> BadCase {
    BadCase {
        name,
        files: vec![(name.to_owned(), bytes)],
        inspect: Some(expect),
        convert_args: &[],
        convert: expect,
    }
}

/// A valid checkpoint that `lowbit convert … args` refuses.
fn unconvertible(
    name: &'static str,
    bytes: Vec<u8>,
    args: &'static [&'static str],
    expect: &'static [&'static str],
) -> BadCase {
    BadCase {
        name,
        files: vec![(name.to_owned(), bytes)],
        inspect: None,
        convert_args: args,
        convert: expect,
    }
}

fn dir(
    name: &'static str,
    files: Vec<(&str, Vec<u8>)>,
    expect: &'static [&'static str],
) -> BadCase {
    BadCase {
        name,
        files: files.into_iter().map(|(f, b)| (format!("{name}/{f}"), b)).collect(),
        inspect: Some(expect),
        convert_args: &[],
        convert: expect,
    }
}

/// A safetensors file of BF16 tensors (name, shape), data filled with a pattern.
fn st_tensors(tensors: &[(&str, &[u64])]) -> Vec<u8> {
    st_typed(&tensors.iter().map(|(n, s)| (*n, "BF16", *s)).collect::<Vec<_>>())
}

/// A safetensors file of tensors (name, dtype, shape), data filled with a pattern.
fn st_typed(tensors: &[(&str, &str, &[u64])]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for (name, dtype, shape) in tensors {
        let size = match *dtype {
            "F32" | "I32" => 4,
            _ => 2,
        };
        let bytes = shape.iter().product::<u64>() * size;
        header.insert(
            (*name).to_owned(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let text = serde_json::to_string(&header).expect("JSON");
    // Small BF16 values: byte pairs (i % 251, 0x3c) decode to finite numbers near 0.01.
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend((0..offset).map(|i| if i % 2 == 0 { (i % 251) as u8 } else { 0x3c }));
    out
}

/// Names that make a checkpoint FLUX in diffusers naming (written out by hand here, so that
/// the inputs do not come from the mapping they test).
const DIFFUSERS_MARKERS: [&str; 2] = [
    "single_transformer_blocks.0.attn.to_q.weight",
    "time_text_embed.timestep_embedder.linear_1.weight",
];
const ADD_Q: &str = "transformer_blocks.0.attn.add_q_proj.weight";
const ADD_K: &str = "transformer_blocks.0.attn.add_k_proj.weight";
const ADD_V: &str = "transformer_blocks.0.attn.add_v_proj.weight";

/// A tiny diffusers-named FLUX whose `add_k_proj` has `k_shape`.
fn diffusers_with_k(k_shape: &[u64], with_v: bool) -> Vec<u8> {
    let mut t: Vec<(&str, &[u64])> = vec![
        (DIFFUSERS_MARKERS[0], &[8, 8]),
        (DIFFUSERS_MARKERS[1], &[8, 8]),
        (ADD_Q, &[8, 8]),
        (ADD_K, k_shape),
    ];
    if with_v {
        t.push((ADD_V, &[8, 8]));
    }
    st_tensors(&t)
}

/// A tiny BFL-named FLUX: the marker, and `img_in.weight` and `linear1` as given.
fn bfl_with(img_in: &[u64], linear1: &[u64], extra: &[(&str, &[u64])]) -> Vec<u8> {
    let mut t: Vec<(&str, &[u64])> = vec![
        (QKV, &[24, 8]),
        ("img_in.weight", img_in),
        ("single_blocks.0.linear1.weight", linear1),
    ];
    t.extend_from_slice(extra);
    st_tensors(&t)
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
            &["not a safetensors, GGUF or index file"],
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
                k.push(("general.alignment".into(), Meta::U32(24)));
                gguf_parts(&k, &gguf_tensors())
            },
            &["general.alignment = 24"],
        ),
        one("truncated-header.gguf", g[..qkv_dims + 6].to_vec(), &[QKV, "truncated"]),
        one(
            "duplicate-tensor.gguf",
            gguf_parts(&gguf_kvs(), &[gguf_tensors()[0].clone(), gguf_tensors()[0].clone()]),
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
        // Found by `cargo xtask fuzz gguf_header`: an empty tensor in a file that ends before its
        // aligned data section was accepted, then borrowing its bytes panicked.
        one(
            "empty-tensor-past-end.gguf",
            {
                let t = [TensorSpec { name: QKV.into(), dims: vec![0], ty: Ty::F32 }];
                let (h, _) = crate::gguf::header(&[], &t, 32);
                let unpadded = 24 + 8 + QKV.len() + 4 + 8 + 4 + 8;
                assert!(unpadded + 3 < h.len(), "the data section would start past the file's end");
                [&h[..unpadded], b"\x00iz"].concat()
            },
            &[QKV, "runs past the end of the data section"],
        ),
        // Found reading the code after fuzzing: an empty tensor of 2^40 × 2^40 × 0 passed the
        // size check, and counting its rows overflowed.
        one(
            "empty-tensor-huge-dims.gguf",
            gguf_parts(
                &[],
                &[TensorSpec { name: QKV.into(), dims: vec![1, 0, 1 << 40, 1 << 40], ty: Ty::F32 }],
            ),
            &[QKV, "overflow"],
        ),
        one(
            "empty-tensor-huge-dims.safetensors",
            st(
                &st_with(
                    r#"{"dtype":"BF16","shape":[0,1099511627776,1099511627776],"data_offsets":[0,0]}"#,
                    r#"{"dtype":"BF16","shape":[4],"data_offsets":[0,8]}"#,
                ),
                8,
            ),
            &[QKV, "overflows"],
        ),
        unconvertible("quantized-weights.gguf", gguf_good(), &[], &[QKV, "stored as Q8_0"]),
        unconvertible(
            "integer-weights.safetensors",
            st_typed(&[(QKV, "BF16", &[24, 8]), ("img_in.weight", "I32", &[8, 4])]),
            &[],
            &["img_in.weight", "stored as I32"],
        ),
        unconvertible(
            "empty-img-in.safetensors",
            bfl_with(&[0, 4], &[40, 8], &[]),
            &["--names", "diffusers"],
            &["img_in.weight", "[0, 4]", "no elements"],
        ),
        unconvertible(
            "scalar-img-in.safetensors",
            bfl_with(&[], &[40, 8], &[]),
            &["--names", "diffusers"],
            &["img_in.weight", "shape []", "must be a matrix"],
        ),
        unconvertible(
            "linear1-width-mismatch.safetensors",
            bfl_with(&[8, 4], &[40, 16], &[]),
            &["--names", "diffusers"],
            &["single_blocks.0.linear1.weight", "model width 8", "not 16"],
        ),
        unconvertible(
            "linear1-too-few-rows.safetensors",
            bfl_with(&[8, 4], &[24, 8], &[]),
            &["--names", "diffusers"],
            &["single_blocks.0.linear1.weight", "24 rows do not split"],
        ),
        unconvertible(
            "odd-modulation.safetensors",
            bfl_with(&[8, 4], &[40, 8], &[("final_layer.adaLN_modulation.1.weight", &[3, 8])]),
            &["--names", "diffusers"],
            &["final_layer.adaLN_modulation.1.weight", "odd"],
        ),
        unconvertible(
            "five-dims.safetensors",
            bfl_with(
                &[8, 4],
                &[40, 8],
                &[("double_blocks.0.img_mod.lin.weight", &[1, 2, 2, 2, 2])],
            ),
            &[],
            &["double_blocks.0.img_mod.lin.weight", "at most 4 dimensions"],
        ),
        unconvertible(
            "diffusers-scalar-part.safetensors",
            diffusers_with_k(&[], true),
            &[],
            &[ADD_K, "shape []", "scalar"],
        ),
        unconvertible(
            "diffusers-missing-part.safetensors",
            diffusers_with_k(&[8, 8], false),
            &[],
            &["double_blocks.0.txt_attn.qkv.weight", ADD_V, "only"],
        ),
        unconvertible(
            "diffusers-mismatched-parts.safetensors",
            diffusers_with_k(&[8, 4], true),
            &[],
            &[ADD_K, "[8, 4]", "cannot fuse"],
        ),
        unconvertible(
            "name-too-long.safetensors",
            st_tensors(&[(QKV, &[24, 8]), (LONG_NAME, &[8, 8])]),
            &[],
            &["is 141 bytes", "at most 127"],
        ),
    ]
}

/// A tensor name of 141 bytes, longer than GGUF readers accept.
const LONG_NAME: &str = "double_blocks.0.a_very_long_module_name_that_no_real_checkpoint_uses_but_a_damaged_or_exotic_one_might_contain_somewhere_deep_down_low.weight";
