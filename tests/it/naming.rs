//! FLUX naming checked against diffusers' own converter, both ways.
//!
//! The diffusers-named inputs and expectations here come from
//! `convert_flux_transformer_checkpoint_to_diffusers` (run by `tests/interop/diffusers_convert.py`
//! on the full-width model of [`crate::support::flux_3072`]), never from lowbit's own name table:
//! a diffusers checkpoint made by the converter must convert back to the BFL original, and
//! `--names diffusers` must write what the converter writes, bit for bit.

use crate::support::{
    StEntry, bf16_values, convert_ok, flux_3072, flux_3072_diffusers, flux_3072_gguf, inspect_json,
    read_at, root, safetensors_entries,
};
use lowbit_checkpoint::{Checkpoint, StorageType};
use lowbit_dtype::GgmlType;
use lowbit_fixtures::FLUX_TINY_BFL;
use std::path::Path;

/// The type `formats/recipe.md` gives a tensor of a BF16 source converted to `gguf:bf16`:
/// 1-D or at most 1024 elements F32 (rule 1), everything else BF16.
fn bf16_target_type(shape: &[u64]) -> &'static str {
    if shape.len() == 1 || shape.iter().product::<u64>() <= 1024 { "F32" } else { "BF16" }
}

/// Tensor `name` of a GGUF written with `gguf:bf16` holds exactly the BF16 source tensor `e` of
/// the safetensors file `source`: same shape, the documented type, and the same values (BF16
/// bytes compared as they are; F32 against the source decoded by `half`).
fn assert_holds_source(gguf: &Checkpoint, name: &str, source: &Path, e: &StEntry) {
    let t = gguf.tensor(name).unwrap_or_else(|| panic!("{name} missing"));
    assert_eq!(t.shape, e.shape, "{name}");
    assert_eq!(e.dtype, "BF16", "{name}: source dtype");
    let ty = bf16_target_type(&e.shape);
    assert_eq!(t.ty.name(), ty, "{name}");
    let want = read_at(source, e.bytes.clone());
    let raw = gguf.raw(t);
    if ty == "BF16" {
        assert!(raw == want.as_slice(), "{name}: bytes differ from {}", source.display());
    } else {
        let got: Vec<u32> =
            raw.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let want: Vec<u32> = bf16_values(&want).iter().map(|v| v.to_bits()).collect();
        let differ = got.iter().zip(&want).filter(|(g, w)| g != w).count();
        assert!(
            differ == 0,
            "{name}: {differ} of {} values differ from {}",
            want.len(),
            source.display()
        );
    }
}

/// Two GGUF files hold the same tensors: names, types, shapes and bytes.
fn assert_same_tensors(a: &Path, b: &Path) {
    let (a, b) = (Checkpoint::open(a).unwrap(), Checkpoint::open(b).unwrap());
    let names = |c: &Checkpoint| c.tensors().iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    let (mut na, mut nb) = (names(&a), names(&b));
    na.sort();
    nb.sort();
    assert_eq!(na, nb, "{} and {}: tensor names", a.path().display(), b.path().display());
    for ta in a.tensors() {
        let tb = b.tensor(&ta.name).unwrap();
        assert_eq!((&ta.shape, ta.ty), (&tb.shape, tb.ty), "{}", ta.name);
        assert!(a.raw(ta) == b.raw(tb), "{}: bytes differ", ta.name);
    }
}

/// Converter-made diffusers input → `gguf:bf16` gives every original BFL tensor bit for bit,
/// and quantized targets give the same bytes as converting the BFL original (the sharded copy
/// of the converter's output is the input for one of them).
#[test]
fn converter_made_diffusers_input_gives_the_bfl_original() {
    let (bfl, twin) = (flux_3072(), flux_3072_diffusers());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("from-diffusers-bf16.gguf");
    convert_ok(&twin.single, &out, &["--to", "gguf:bf16"]);
    let gguf = Checkpoint::open(&out).unwrap();
    let source = safetensors_entries(bfl);
    let mut names: Vec<&str> = gguf.tensors().iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, source.keys().map(String::as_str).collect::<Vec<_>>(), "BFL names");
    for (name, e) in &source {
        assert_holds_source(&gguf, name, bfl, e);
    }

    for (target, input) in [("q8_0", twin.single.clone()), ("q4_k_m", twin.model.clone())] {
        let from_diffusers = dir.path().join(format!("from-diffusers-{target}.gguf"));
        convert_ok(&input, &from_diffusers, &["--to", &format!("gguf:{target}")]);
        assert_same_tensors(flux_3072_gguf(target), &from_diffusers);
    }
}

/// `--names diffusers` on the BFL original writes exactly the converter's tensors: the same
/// names, shapes and values, bit for bit (`gguf:bf16` is lossless for a BF16 source).
#[test]
fn names_diffusers_gives_the_converters_tensors() {
    let twin = flux_3072_diffusers();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("diffusers-bf16.gguf");
    convert_ok(flux_3072(), &out, &["--to", "gguf:bf16", "--names", "diffusers"]);
    let gguf = Checkpoint::open(&out).unwrap();
    let want = safetensors_entries(&twin.single);
    let mut names: Vec<&str> = gguf.tensors().iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, want.keys().map(String::as_str).collect::<Vec<_>>(), "diffusers names");
    for (name, e) in &want {
        assert_holds_source(&gguf, name, &twin.single, e);
    }
    let r = inspect_json(&out);
    assert_eq!(r["naming"], "diffusers");
    assert_eq!(r["metadata"]["lowbit.naming"], "diffusers");
}

/// With `--names diffusers` a mix gives q, k and v the type the fused qkv would get.
#[test]
fn names_diffusers_mix_follows_the_fused_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("diffusers-q4_k_m.gguf");
    let fixture = root().join("fixtures").join(FLUX_TINY_BFL);
    convert_ok(&fixture, &out, &["--to", "gguf:q4_k_m", "--names", "diffusers"]);
    let ckpt = Checkpoint::open(&out).unwrap();
    for n in ["to_q", "to_k", "to_v", "add_q_proj"] {
        let t = ckpt.tensor(&format!("transformer_blocks.0.attn.{n}.weight")).unwrap();
        assert_eq!(t.ty, StorageType::Ggml(GgmlType::Q5_K), "{n}");
    }
    let t = ckpt.tensor("transformer_blocks.0.ff.net.0.proj.weight").unwrap();
    assert_eq!(t.ty, StorageType::Ggml(GgmlType::Q4_K));
}
