//! `lowbit inspect` on every kind of good input.

use crate::support::{flux_3072, flux_3072_diffusers, inspect_json, lowbit, root};
use lowbit_fixtures::flux::{FluxConfig, generate_bfl, with_prefix};
use lowbit_fixtures::write::{bf16_header, safetensors_bytes};
use lowbit_fixtures::{FLUX_TINY_BFL, SEED};
use serde_json::Value;
use std::path::Path;

fn tensor<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no {name}"))
}

fn sparse(path: &Path, header: &[u8], data_len: u64) {
    lowbit_fixtures::write::sparse_file(path, header, data_len).unwrap();
}

#[test]
fn bfl_fixture_matches_its_generator() {
    let r = inspect_json(&root().join("fixtures").join(FLUX_TINY_BFL));
    assert_eq!(r["format"], "safetensors");
    assert_eq!(r["architecture"], "flux");
    assert_eq!(r["naming"], "bfl");
    let specs = FluxConfig::TINY.tensors();
    assert_eq!(r["tensors"].as_array().unwrap().len(), specs.len());
    let mut params = 0;
    for (name, shape) in &specs {
        let t = tensor(&r, name);
        let n: u64 = shape.iter().product();
        params += n;
        assert_eq!(t["shape"], serde_json::json!(shape), "{name}");
        assert_eq!(t["type"], "BF16");
        assert_eq!(t["params"], n);
        assert_eq!(t["bytes"], 2 * n);
        assert_eq!(t["bits_per_weight"], 16.0);
    }
    assert_eq!(r["total_params"], params);
    assert_eq!(r["total_bytes"], 2 * params);
    assert_eq!(r["bits_per_weight"], 16.0);
}

#[test]
fn json_keys_come_in_schema_order() {
    let out = lowbit(&["inspect", "--json", &format!("fixtures/{FLUX_TINY_BFL}")]);
    let text = String::from_utf8(out.stdout).unwrap();
    let keys = [
        "\"path\"",
        "\"format\"",
        "\"architecture\"",
        "\"naming\"",
        "\"total_params\"",
        "\"total_bytes\"",
        "\"bits_per_weight\"",
        "\"tensors\"",
    ];
    let pos: Vec<usize> = keys.iter().map(|k| text.find(k).unwrap()).collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{pos:?}");
    let first = text.find("\"tensors\"").unwrap();
    for k in ["\"name\"", "\"shape\"", "\"type\"", "\"params\"", "\"bytes\"", "\"bits_per_weight\""]
    {
        assert!(text[first..].contains(k));
    }
}

/// diffusers' converter's output of the full-width model, as one file and as three shards (the
/// index, the `transformer` folder and the model folder all open), inspects as the BFL original.
#[test]
fn diffusers_single_and_sharded_agree_with_bfl() {
    let twin = flux_3072_diffusers();
    let reference = inspect_json(flux_3072());
    let r = inspect_json(&twin.single);
    assert_eq!(
        (r["architecture"].as_str(), r["naming"].as_str()),
        (Some("flux"), Some("diffusers"))
    );
    assert_eq!(r["total_params"], reference["total_params"]);
    assert_eq!(r["total_bytes"], reference["total_bytes"]);
    assert_eq!(
        tensor(&r, "transformer_blocks.0.attn.to_q.weight")["shape"],
        serde_json::json!([3072, 3072])
    );
    assert_eq!(
        tensor(&r, "single_transformer_blocks.0.proj_mlp.weight")["shape"],
        serde_json::json!([12288, 3072])
    );

    let transformer = twin.model.join("transformer");
    let index = transformer.join("diffusion_pytorch_model.safetensors.index.json");
    for path in [index.as_path(), transformer.as_path(), twin.model.as_path()] {
        let s = inspect_json(path);
        assert_eq!(s["format"], "safetensors-sharded", "{}", path.display());
        assert_eq!(s["naming"], "diffusers");
        assert_eq!(s["files"].as_array().unwrap().len(), 3);
        assert_eq!(s["tensors"], r["tensors"], "sharding changes nothing per tensor");
        assert_eq!(s["total_bytes"], r["total_bytes"]);
    }
}

#[test]
fn prefixed_bfl_names() {
    let bfl = with_prefix(&generate_bfl(&FluxConfig::TINY, SEED), "model.diffusion_model.");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("comfy.safetensors");
    std::fs::write(&path, safetensors_bytes(&bfl)).unwrap();
    let r = inspect_json(&path);
    assert_eq!(r["naming"], "bfl");
    assert_eq!(r["prefix"], "model.diffusion_model.");
    let blocks: Vec<&str> =
        r["by_block"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(blocks[..2], ["img_in", "txt_in"]);
    assert!(
        blocks.contains(&"double_blocks.0") && blocks.contains(&"single_blocks.0"),
        "{blocks:?}"
    );
}

#[test]
fn flux_dev_sized_headers() {
    let dir = tempfile::tempdir().unwrap();
    let tensors = FluxConfig::DEV.tensors();
    let st = dir.path().join("flux1-dev.safetensors");
    let (header, data_len) = bf16_header(&tensors);
    sparse(&st, &header, data_len);
    let r = inspect_json(&st);
    assert_eq!(r["tensors"].as_array().unwrap().len(), 780);
    assert_eq!(r["total_params"], 11_901_408_320u64);
    assert_eq!(r["total_bytes"], 23_802_816_640u64);
    let blocks = r["by_block"].as_array().unwrap();
    assert_eq!(
        blocks.iter().filter(|b| b["name"].as_str().unwrap().starts_with("double_blocks.")).count(),
        19
    );
    assert_eq!(
        blocks.iter().filter(|b| b["name"].as_str().unwrap().starts_with("single_blocks.")).count(),
        38
    );

    let gg = dir.path().join("flux1-dev-q8_0.gguf");
    let (header, data_len) = lowbit_fixtures::gguf::flux_q8_0_header(&tensors);
    sparse(&gg, &header, data_len);
    let r = inspect_json(&gg);
    assert_eq!(r["format"], "gguf");
    assert_eq!(r["naming"], "bfl");
    let qkv = tensor(&r, "double_blocks.0.img_attn.qkv.weight");
    assert_eq!(qkv["shape"], serde_json::json!([9216, 3072]), "torch order");
    assert_eq!(qkv["type"], "Q8_0");
    assert_eq!(qkv["bits_per_weight"], 8.5);
    assert_eq!(tensor(&r, "img_in.bias")["type"], "F32");
    assert_eq!(r["metadata"]["general.architecture"], "flux");
    assert_eq!(r["metadata"]["general.file_type"], 7, "numbers are JSON numbers");
}

#[test]
fn text_output_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("depth.svg");
    let fixture = format!("fixtures/{FLUX_TINY_BFL}");
    let out = lowbit(&["inspect", &fixture, "--plot", svg.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    // The summary comes first: what the file is, totals, by type, by block.
    let first: Vec<&str> = text.lines().take(4).collect();
    assert!(first[0].starts_with("path") && first[2] == "architecture  flux, bfl naming", "{text}");
    assert!(first[3].contains("52 tensors") && first[3].contains("16.000 bits/weight"), "{text}");
    let at = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("no {needle:?} in {text}"));
    assert!(at("\n type ") < at("\n block ") && at("\n block ") < at("\n metadata "), "{text}");
    assert!(at("\n block ") < at(" double_blocks.0 "), "{text}");
    // The per-tensor table only on request.
    assert!(!text.contains("768×256") && text.contains("52 tensors: --tensors lists them"));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim(), format!("wrote the depth plot to {}", svg.display()));
    let svg_text = std::fs::read_to_string(&svg).unwrap();
    assert!(svg_text.starts_with("<svg") && svg_text.contains("d0") && svg_text.contains("img_in"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left behind");

    let out = lowbit(&["inspect", &fixture, "--tensors"]);
    let listed = String::from_utf8(out.stdout).unwrap();
    assert!(listed.starts_with(&text[..text.find("\n type ").unwrap()]), "summary first");
    let row = listed
        .lines()
        .find(|l| l.trim_start().starts_with("double_blocks.0.img_attn.qkv.weight"))
        .unwrap();
    assert!(row.contains("768×256") && row.contains("BF16") && row.contains("196608"), "{row}");
    let (block, table) =
        (listed.find("\n block "), listed.find("double_blocks.0.img_attn.qkv.weight"));
    assert!(block.unwrap() < table.unwrap(), "the table comes after the summary");

    let bad = dir.path().join("no/such/dir/depth.svg");
    let out = lowbit(&["inspect", &fixture, "--plot", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such/dir"));
    assert!(!bad.exists());
}

#[test]
fn rows_decode_to_the_generated_values() {
    use lowbit_checkpoint::Checkpoint;
    let ckpt = Checkpoint::open(root().join("fixtures").join(FLUX_TINY_BFL)).unwrap();
    let generated = generate_bfl(&FluxConfig::TINY, SEED);
    for g in &generated {
        let t = ckpt.tensor(&g.name).unwrap();
        let want: Vec<f32> = g
            .data
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect();
        let mut got = Vec::new();
        ckpt.for_each_rows_f32::<lowbit_checkpoint::Error>(t, 7, |row, values| {
            assert_eq!(row * t.row_len(), got.len() as u64);
            got.extend_from_slice(values);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, want, "{}", g.name);
    }
    let t = ckpt.tensor("txt_in.weight").unwrap();
    let mut out = vec![0.0; 320];
    assert!(ckpt.read_rows_f32(t, 256..257, &mut out).is_err(), "row past the end");
    assert!(ckpt.read_rows_f32(t, 0..2, &mut out).is_err(), "wrong buffer length");
}

/// A 10 MB GGUF holding one ten-million-element `u8` array inspects in bounded memory: arrays
/// are read lazily, summarised in the text and typed in the JSON. (Every element used to become
/// a 32-byte value, cloned again for the report: 639 MB for this file.)
#[test]
fn huge_metadata_arrays_stay_lazy() {
    use lowbit_fixtures::gguf::{Meta, TensorSpec, Ty, file};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big-array.gguf");
    let kvs = vec![
        ("general.architecture".to_owned(), Meta::String("flux".into())),
        ("test.big".to_owned(), Meta::U8Array((0..10_000_000u32).map(|i| (i % 7) as u8).collect())),
    ];
    let tensors = [TensorSpec { name: "img_in.weight".into(), dims: vec![64, 4], ty: Ty::F32 }];
    std::fs::write(&path, file(&kvs, &tensors, 32)).unwrap();
    // Under a 150 MB address-space limit, which the old reader passed four times over.
    let run = |extra: &str| {
        let script = format!(
            "ulimit -v 150000; exec '{}' inspect {extra} '{}'",
            env!("CARGO_BIN_EXE_lowbit"),
            path.display()
        );
        let o = std::process::Command::new("sh").arg("-c").arg(script).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let json: Value = serde_json::from_str(&run("--json")).unwrap();
    assert_eq!(
        json["metadata"]["test.big"],
        serde_json::json!({"type": "array of u8", "length": 10_000_000, "head": [0, 1, 2, 3, 4, 5, 6, 0]})
    );
    assert_eq!(json["metadata"]["general.architecture"], "flux");
    let text = run("");
    let line = text.lines().find(|l| l.contains("test.big")).unwrap();
    assert!(line.contains("10000000") && line.len() < 200, "{line}");
}
