//! `lowbit convert` end to end: every type and mix, determinism, the `gguf` package reading every
//! output, and every way a conversion can fail. (FLUX naming both ways: `naming.rs`.)

use crate::support::{flux_3072, flux_3072_gguf, inspect_json, lowbit, root, run_python};
use lowbit_checkpoint::Checkpoint;
use lowbit_fixtures::flux::{FluxConfig, GenTensor, generate_bfl};
use lowbit_fixtures::write::safetensors_bytes;
use lowbit_fixtures::{FLUX_TINY_BFL, SEED};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const TARGETS: [&str; 18] = [
    "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k",
    "q6_k", "tq1_0", "tq2_0", "q3_k_m", "q4_k_m", "q5_k_m",
];

fn fixture() -> PathBuf {
    root().join("fixtures").join(FLUX_TINY_BFL)
}

fn convert(input: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["convert", input.to_str().unwrap(), "-o", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    lowbit(&args)
}

fn convert_ok(input: &Path, out: &Path, extra: &[&str]) {
    let o = convert(input, out, extra);
    assert!(o.status.success(), "convert {extra:?} failed: {}", String::from_utf8_lossy(&o.stderr));
}

/// Tensor name → (type, raw bytes) of a GGUF file.
fn tensors(path: &Path) -> BTreeMap<String, (String, Vec<u8>)> {
    let ckpt = Checkpoint::open(path).unwrap();
    ckpt.tensors()
        .iter()
        .map(|t| (t.name.clone(), (t.ty.name().to_owned(), ckpt.raw(t).to_vec())))
        .collect()
}

/// SHA-256 of our dequantization of every tensor, as `gguf_digest.py` computes from the package's.
fn our_digests(path: &Path) -> BTreeMap<String, String> {
    let ckpt = Checkpoint::open(path).unwrap();
    ckpt.tensors()
        .iter()
        .map(|t| {
            let mut values = vec![0f32; usize::try_from(t.params).unwrap()];
            ckpt.read_f32(t, 0..t.params, &mut values).unwrap();
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (t.name.clone(), format!("{:x}", Sha256::digest(&bytes)))
        })
        .collect()
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Every target converts the fixture; the `gguf` package opens each output and its dequantized
/// values equal ours bit for bit; types follow the documented rules.
#[test]
fn every_type_and_mix_round_trips_through_the_gguf_package() {
    let dir = tempfile::tempdir().unwrap();
    let mut outs = Vec::new();
    for target in TARGETS {
        let out = dir.path().join(format!("flux-tiny-{target}.gguf"));
        convert_ok(&fixture(), &out, &["--to", &format!("gguf:{target}")]);
        outs.push(out);
    }
    let paths: Vec<&Path> = outs.iter().map(PathBuf::as_path).collect();
    let reference: Value = serde_json::from_str(&run_python("gguf_digest.py", &paths)).unwrap();
    for (target, out) in TARGETS.iter().zip(&outs) {
        let theirs = &reference[out.to_str().unwrap()];
        let ours = our_digests(out);
        assert_eq!(theirs["tensors"].as_object().unwrap().len(), ours.len(), "{target}");
        for (name, digest) in &ours {
            assert_eq!(
                theirs["tensors"][name]["sha256"],
                digest.as_str(),
                "{target}: {name}: dequantized values differ"
            );
        }
        assert_eq!(theirs["kv"]["general.architecture"], "flux");
        let report = inspect_json(out);
        let ty = |name: &str| {
            report["tensors"].as_array().unwrap().iter().find(|t| t["name"] == name).unwrap()["type"].as_str().unwrap().to_owned()
        };
        let base = match *target {
            "q3_k_m" => "Q3_K".to_owned(),
            "q4_k_m" => "Q4_K".to_owned(),
            "q5_k_m" => "Q5_K".to_owned(),
            t => t.to_uppercase(),
        };
        assert_eq!(ty("single_blocks.0.linear1.weight"), base, "{target}");
        assert_eq!(ty("double_blocks.0.img_mlp.0.weight"), base, "{target}");
        let qkv = match *target {
            "q3_k_m" => "Q4_K".to_owned(),
            "q4_k_m" => "Q5_K".to_owned(),
            "q5_k_m" => "Q6_K".to_owned(),
            _ => base.clone(),
        };
        assert_eq!(ty("double_blocks.0.img_attn.qkv.weight"), qkv, "{target}: mix bumps fused qkv");
        assert_eq!(ty("img_in.weight"), "BF16", "{target}: embedders keep source precision");
        assert_eq!(ty("final_layer.linear.weight"), "BF16");
        assert_eq!(ty("double_blocks.0.img_attn.qkv.bias"), "F32", "1-D tensors are F32");
        assert_eq!(ty("double_blocks.0.img_attn.norm.query_norm.scale"), "F32");
    }
}

fn gen_values(t: &GenTensor) -> Vec<f32> {
    t.data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
}

/// Same input and options, same bytes, whatever the thread count. The full-width model's
/// Q4_K_M output is 380 MB in 54 chunks (two tensors span two), the large ones cut into
/// hundreds of parallel tasks.
#[test]
fn output_is_deterministic_across_thread_counts() {
    let reference = flux_3072_gguf("q4_k_m"); // one thread per core
    let len = std::fs::metadata(reference).unwrap().len();
    assert!(len > 8 * lowbit_convert::CHUNK_BYTES, "{len} bytes: too few chunks to test");
    let dir = tempfile::tempdir().unwrap();
    for threads in ["1", "2", "3", "8"] {
        let out = dir.path().join(format!("t{threads}.gguf"));
        convert_ok(flux_3072(), &out, &["--to", "gguf:q4_k_m", "--threads", threads]);
        assert!(same_bytes(reference, &out), "--threads {threads} wrote other bytes");
        std::fs::remove_file(&out).unwrap();
    }
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut fa, mut fb) = (std::fs::File::open(a).unwrap(), std::fs::File::open(b).unwrap());
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut x, mut y) = (vec![0u8; 1 << 22], vec![0u8; 1 << 22]);
    loop {
        let n = fa.read(&mut x).unwrap();
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut y[..n]).unwrap();
        if x[..n] != y[..n] {
            return false;
        }
    }
}

#[test]
fn rules_recipes_fallbacks_and_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("recipe.toml");
    std::fs::write(
        &recipe,
        "to = \"gguf:q8_0\"\n\n[[rules]]\nmatch = 'single_blocks\\..*\\.weight'\ntype = \"q6_k\"\n",
    )
    .unwrap();
    let out = dir.path().join("mixed.gguf");
    let o = convert(
        &fixture(),
        &out,
        &[
            "--recipe",
            recipe.to_str().unwrap(),
            "--tensor-type",
            r"txt_in\.weight=q4_k",
            "--dry-run",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plan = String::from_utf8(o.stdout).unwrap();
    assert!(!out.exists(), "--dry-run writes nothing");
    let line = |name: &str| {
        plan.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap().to_owned()
    };
    assert!(
        line("txt_in.weight").contains("Q5_0") && line("txt_in.weight").contains("fallback"),
        "{plan}"
    );
    assert!(line("single_blocks.0.linear1.weight").contains("Q6_K"));
    assert!(line("double_blocks.0.img_mlp.0.weight").contains("Q8_0"));
    assert!(plan.contains("target gguf:q8_0"));

    convert_ok(
        &fixture(),
        &out,
        &["--recipe", recipe.to_str().unwrap(), "--tensor-type", r"txt_in\.weight=q4_k"],
    );
    let r = inspect_json(&out);
    let ty = |name: &str| {
        r["tensors"].as_array().unwrap().iter().find(|t| t["name"] == name).unwrap()["type"].clone()
    };
    assert_eq!(ty("txt_in.weight"), "Q5_0");
    assert_eq!(ty("single_blocks.0.linear2.weight"), "Q6_K");
    let stored = r["metadata"]["lowbit.recipe"].as_str().unwrap();
    assert!(
        stored.contains("q8_0") && stored.contains("q6_k") && stored.contains("q4_k"),
        "{stored}"
    );
}

/// A GGUF with F32 weights re-quantizes to exactly what the safetensors original gives.
#[test]
fn gguf_input_requantizes() {
    let dir = tempfile::tempdir().unwrap();
    let f32_file = dir.path().join("f32.gguf");
    convert_ok(&fixture(), &f32_file, &["--to", "gguf:f32"]);
    let direct = dir.path().join("direct.gguf");
    let via = dir.path().join("via.gguf");
    convert_ok(&fixture(), &direct, &["--to", "gguf:q5_k"]);
    convert_ok(&f32_file, &via, &["--to", "gguf:q5_k"]);
    let (a, b) = (tensors(&direct), tensors(&via));
    for (name, (ty, bytes)) in &a {
        if ty == "Q5_K" {
            assert_eq!(&b[name], &(ty.clone(), bytes.clone()), "{name}");
        }
    }
    // Already-quantized weights are refused rather than quantized twice.
    let o = convert(&direct, &dir.path().join("twice.gguf"), &["--to", "gguf:q4_0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("stored as Q5_K"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn with_nan(dir: &Path) -> PathBuf {
    let mut t = generate_bfl(&FluxConfig::TINY, SEED);
    let w = t.iter_mut().find(|t| t.name == "double_blocks.0.img_mlp.2.weight").unwrap();
    // Row 3, column 5 of a 256×512 matrix.
    let i = 3 * 512 + 5;
    w.data[2 * i..2 * i + 2].copy_from_slice(&half::bf16::NAN.to_le_bytes());
    let path = dir.join("nan.safetensors");
    std::fs::write(&path, safetensors_bytes(&t)).unwrap();
    path
}

#[test]
fn non_finite_weights_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let input = with_nan(dir.path());
    let out = dir.path().join("out.gguf");
    let o = convert(&input, &out, &["--to", "gguf:q8_0"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("double_blocks.0.img_mlp.2.weight")
            && err.contains("[3, 5]")
            && err.contains("nan.safetensors"),
        "{err}"
    );
    assert_eq!(dir_entries(dir.path()), ["nan.safetensors"], "no output, no temporary file");
    convert_ok(&input, &out, &["--to", "gguf:q8_0", "--allow-non-finite"]);
    assert!(out.exists());
}

/// F32, F16 and FP8 inputs convert too; embedders keep their source precision (FP8 widens to F16,
/// which holds every FP8 value exactly).
#[test]
fn other_input_dtypes() {
    use safetensors::tensor::TensorView;
    let dir = tempfile::tempdir().unwrap();
    let bfl = generate_bfl(&FluxConfig::TINY, SEED);
    let write = |name: &str, dtype: safetensors::Dtype, encode: &dyn Fn(&GenTensor) -> Vec<u8>| {
        let datas: Vec<Vec<u8>> = bfl.iter().map(encode).collect();
        let views: Vec<(String, TensorView<'_>)> = bfl
            .iter()
            .zip(&datas)
            .map(|(t, d)| {
                let shape = t.shape.iter().map(|&s| usize::try_from(s).unwrap()).collect();
                (t.name.clone(), TensorView::new(dtype, shape, d).unwrap())
            })
            .collect();
        let path = dir.path().join(name);
        std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
        path
    };
    let f32_in = write("f32.safetensors", safetensors::Dtype::F32, &|t| {
        gen_values(t).iter().flat_map(|v| v.to_le_bytes()).collect()
    });
    let f16_in = write("f16.safetensors", safetensors::Dtype::F16, &|t| {
        gen_values(t).iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect()
    });
    // FP8 E4M3 codes straight from the BF16 bytes' low halves, NaN codes (0x7f, 0xff) avoided.
    let fp8_in = write("fp8.safetensors", safetensors::Dtype::F8_E4M3, &|t| {
        t.data.chunks_exact(2).map(|b| if b[0] & 0x7f == 0x7f { b[0] ^ 1 } else { b[0] }).collect()
    });
    for (input, embed_type) in [(&f32_in, "F32"), (&f16_in, "F16"), (&fp8_in, "F16")] {
        let out = dir.path().join("out.gguf");
        convert_ok(input, &out, &["--to", "gguf:q8_0"]);
        let gguf = Checkpoint::open(&out).unwrap();
        let src = Checkpoint::open(input).unwrap();
        let t = gguf.tensor("img_in.weight").unwrap();
        assert_eq!(t.ty.name(), embed_type, "{}", input.display());
        // Embedders are copied exactly.
        let s = src.tensor("img_in.weight").unwrap();
        let (mut a, mut b) = (vec![0f32; 16384], vec![0f32; 16384]);
        gguf.read_f32(t, 0..16384, &mut a).unwrap();
        src.read_f32(s, 0..16384, &mut b).unwrap();
        assert_eq!(a, b, "{}", input.display());
        assert_eq!(gguf.tensor("double_blocks.0.img_mlp.0.weight").unwrap().ty.name(), "Q8_0");
    }
}
