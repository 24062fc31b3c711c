//! Reading Nunchaku's files back (`formats/nunchaku.md`, "Reading"): every command reads a
//! `nunchaku:int4` or `nunchaku-lite:int4` file as the natural `svdq-w4a4` file it re-lays, so
//! `lowbit dequantize` of the export equals `lowbit dequantize` of the natural file (both
//! checked against numpy's formula in `svdq.rs`) wherever the runtime computes the same; files
//! whose single blocks carry two low-rank branches (deepcompressor's) read as one layer of twice
//! the rank; damaged files are refused naming the tensor.

use crate::support::{convert_ok, lowbit, root};
use crate::svdq::{same_k, write_stats};
use safetensors::SafeTensors;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `lowbit dequantize --dtype f32` of `input`, every tensor by name.
fn dequantized(input: &Path, dir: &Path) -> BTreeMap<String, Vec<f32>> {
    let out = dir.join(format!("deq-{}.safetensors", input.file_name().unwrap().to_string_lossy()));
    crate::support::dequantize_ok(input, &out, &["--dtype", "f32"]);
    let bytes = std::fs::read(&out).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, t)| {
            let v = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (n, v)
        })
        .collect()
}

/// The fixture's natural `svdq-w4a4` file and its two exports, same statistics and options.
fn files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let stats = dir.join("stats.safetensors");
    write_stats(&stats, 1, &same_k);
    let fixture = root().join("fixtures/flux-tiny-bfl.safetensors");
    let opts = ["--stats", s(&stats), "--alpha", "0.5"];
    let [nat, nk, lite] = ["natural.safetensors", "nk.safetensors", "lite"].map(|n| dir.join(n));
    for (out, to) in [(&nat, "svdq-w4a4"), (&nk, "nunchaku:int4"), (&lite, "nunchaku-lite:int4")] {
        convert_ok(&fixture, out, &[&["--to", to][..], &opts].concat());
    }
    (nat, nk, lite)
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Both exports read as the natural file: every weight exactly; biases exactly except where
/// Nunchaku's runtime itself differs (AdaLN's +1 rounded into BF16 and taken out again: at
/// most half a BF16 step at 1; fc2's bias, which holds the shift's fold: its BF16 roundings). The lite file is read under diffusers' names and matched by `diff`'s naming.
#[test]
fn exports_read_as_the_natural_file() {
    let dir = tempfile::tempdir().unwrap();
    let (nat, nk, lite) = files(dir.path());
    let want = dequantized(&nat, dir.path());
    let got = dequantized(&nk, dir.path());
    assert_eq!(want.keys().collect::<Vec<_>>(), got.keys().collect::<Vec<_>>(), "BFL names");
    for (name, w) in &want {
        let err = max_abs(w, &got[name]);
        let bound = if name.ends_with("mod.lin.bias") || name.ends_with("modulation.lin.bias") {
            1.0 / 256.0
        } else if name.ends_with("mlp.2.bias") || name.ends_with("linear2.bias") {
            // Two BF16 roundings of values under max|b| + 1 (the shift's term is under 0.5 here).
            (w.iter().fold(0f32, |m, v| m.max(v.abs())) + 1.0) / 256.0
        } else {
            0.0
        };
        assert!(err <= bound, "{name}: {err} > {bound}");
    }
    let o = lowbit(&["diff", s(&nat), s(&lite), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = d["tensors"].as_array().unwrap();
    assert_eq!(rows.len(), want.len(), "every tensor matched across the namings");
    for t in rows {
        assert_eq!(t["max_abs_error"].as_f64(), Some(0.0), "{t}");
    }
    let o = lowbit(&["inspect", s(&nk), "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["metadata"]["lowbit.relaid"], "nunchaku", "{}", j["metadata"]);
}

/// Byte range of tensor `name` inside the file `bytes`.
fn range(bytes: &[u8], name: &str) -> std::ops::Range<usize> {
    let st = SafeTensors::deserialize(bytes).unwrap();
    let t = st.tensor(name).unwrap();
    let start = t.data().as_ptr() as usize - bytes.as_ptr() as usize;
    start..start + t.data().len()
}

/// deepcompressor gives `qkv_proj` and `mlp_fc1` of a single block their own low-rank
/// branches: such a file reads as one `linear1` of twice the rank, exact. Here `mlp_fc1`'s
/// `lora_down` is zeroed: its rows lose exactly their low-rank term, the others keep theirs.
#[test]
fn separate_branches_join_at_twice_the_rank() {
    let dir = tempfile::tempdir().unwrap();
    let (nat, nk, _) = files(dir.path());
    let mut bytes = std::fs::read(&nk).unwrap();
    let r = range(&bytes, "single_transformer_blocks.0.mlp_fc1.lora_down");
    bytes[r].fill(0);
    let edited = dir.path().join("two-branches.safetensors");
    std::fs::write(&edited, &bytes).unwrap();
    let o = lowbit(&["inspect", s(&edited), "--tensors", "--json"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("svdq-w4a4:r64"), "linear1 at rank 64: {text}");

    let nat_bytes = std::fs::read(&nat).unwrap();
    let st = SafeTensors::deserialize(&nat_bytes).unwrap();
    let bf = |n: &str| crate::support::bf16_values(st.tensor(n).unwrap().data());
    let (up, down) =
        (bf("single_blocks.0.linear1.proj_up"), bf("single_blocks.0.linear1.proj_down"));
    let shape = st.tensor("single_blocks.0.linear1.qweight").unwrap().shape().to_vec();
    let (n, k, rank) = (shape[0], shape[1] * 2, 32);
    let hidden = st.tensor("img_in.weight").unwrap().shape()[0];
    let want = &dequantized(&nat, dir.path())["single_blocks.0.linear1.weight"];
    let got = &dequantized(&edited, dir.path())["single_blocks.0.linear1.weight"];
    let mut worst = 0f32;
    for row in 0..n {
        for kk in 0..k {
            let lr: f32 = (0..rank).map(|j| up[row * rank + j] * down[kk * rank + j]).sum();
            let expect =
                if row >= 3 * hidden { want[row * k + kk] - lr } else { want[row * k + kk] };
            worst = worst.max((got[row * k + kk] - expect).abs());
        }
    }
    assert!(worst < 1e-5, "{worst}");
}

/// Damaged files: refused by every command with one line naming the file and the tensor.
#[test]
fn damaged_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, nk, _) = files(dir.path());
    let bytes = std::fs::read(&nk).unwrap();
    let header_len = usize::try_from(u64::from_le_bytes(bytes[..8].try_into().unwrap())).unwrap();
    let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
    let write = |name: &str, header: &str, data: &[u8]| {
        let p = dir.path().join(name);
        let mut h = header.to_owned();
        while !h.len().is_multiple_of(8) {
            h.push(' ');
        }
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        std::fs::write(&p, out).unwrap();
        p
    };
    let data = &bytes[8 + header_len..];
    // A crafted header: the rank of lora_up disagrees with lora_down.
    let at = header.find("\"transformer_blocks.0.qkv_proj.lora_up\"").unwrap();
    let shape = at + header[at..].find("[768,32]").unwrap();
    let crafted = format!("{}[1536,16]{}", &header[..shape], &header[shape + 8..]);
    let bad_rank = write("bad-rank.safetensors", &crafted, data);
    // An AdaLN code of 15 (a symmetric 8): no int4:g64 value.
    let mut b15 = bytes.clone();
    let r = range(&bytes, "transformer_blocks.0.norm1.linear.qweight");
    b15[r.start] = 0xFF;
    let code15 = dir.path().join("code15.safetensors");
    std::fs::write(&code15, &b15).unwrap();
    for (file, needle, read) in
        [(&bad_rank, "transformer_blocks.0.qkv_proj.lora_up", false), (&code15, "code 15", true)]
    {
        let out = dir.path().join("o.safetensors");
        let args: Vec<&str> = if read {
            vec!["dequantize", s(file), "-o", s(&out)]
        } else {
            vec!["inspect", s(file)]
        };
        let o = lowbit(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        let line = err.lines().find(|l| l.starts_with("error")).unwrap_or_default();
        assert!(line.contains(needle) && line.contains(s(file)), "{args:?}: {err}");
        assert!(!out.exists());
    }
}
