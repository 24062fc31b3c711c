//! `--to nunchaku:int4` and `--to nunchaku-lite:int4` (`formats/nunchaku.md`) against Nunchaku's
//! own packing code and diffusers' own `nunchaku_lite` module replacement.
//!
//! Nunchaku cannot be installed here (its package needs its CUDA extension), so its pure-torch
//! packers (`nunchaku/lora/flux/packer.py`, `nunchaku/models/text_encoders/tinychat_utils.py`)
//! were run once, by `tests/interop/nunchaku_digests.py`, on the natural `svdq-w4a4` file this
//! test writes first; the sha256 of every tensor they made is committed in
//! `tests/interop/nunchaku_digests.json` (and `nunchaku_lite_digests.json`), with the natural
//! file's own sha256. To regenerate after a change to SVDQuant's values, run this test with
//! `LOWBIT_NUNCHAKU_NATURAL=PATH` (it copies the natural file there) and the script's usage line.

#![expect(
    clippy::print_stderr,
    reason = "measured gaps and the lite report, shown with --nocapture"
)]

use crate::support::{
    convert_ok, flux_3072, lowbit, root, run_torch_script, safetensors_entries,
    safetensors_metadata,
};
use crate::svdq::{same_k, write_stats};
use safetensors::SafeTensors;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    root().join("fixtures/flux-tiny-bfl.safetensors")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The fixture's natural `svdq-w4a4` file and the export `target` of it, with the same
/// statistics and options.
fn natural_and_export(dir: &Path, target: &str, out: &Path) -> PathBuf {
    let stats = dir.join("stats.safetensors");
    write_stats(&stats, 1, &same_k);
    let natural = dir.join("natural.safetensors");
    let opts = ["--stats", s(&stats), "--alpha", "0.5"];
    convert_ok(&fixture(), &natural, &[&["--to", "svdq-w4a4"][..], &opts].concat());
    convert_ok(&fixture(), out, &[&["--to", target][..], &opts].concat());
    natural
}

/// Every tensor of `digests` is in `file` with the digest's dtype, shape and sha256; returns
/// how many were checked.
fn check_digests(digests: &Path, natural: &Path, file: &Path) -> usize {
    let nat = std::fs::read(natural).unwrap();
    if let Ok(keep) = std::env::var("LOWBIT_NUNCHAKU_NATURAL") {
        std::fs::write(keep, &nat).unwrap();
    }
    let doc: Value = serde_json::from_slice(&std::fs::read(digests).unwrap()).unwrap();
    assert_eq!(
        doc["source_sha256"].as_str(),
        Some(sha(&nat).as_str()),
        "the natural svdq-w4a4 file changed: regenerate {} (see this file's doc)",
        digests.display()
    );
    let bytes = std::fs::read(file).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let tensors = doc["tensors"].as_object().unwrap();
    for (name, want) in tensors {
        let t = st.tensor(name).unwrap_or_else(|_| panic!("{}: `{name}` missing", file.display()));
        assert_eq!(format!("{:?}", t.dtype()), want["dtype"].as_str().unwrap(), "{name}");
        let shape: Vec<u64> =
            want["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert_eq!(t.shape().iter().map(|&d| d as u64).collect::<Vec<_>>(), shape, "{name}");
        assert_eq!(
            sha(t.data()),
            want["sha256"].as_str().unwrap(),
            "{name}: bytes differ from Nunchaku's packing"
        );
    }
    tensors.len()
}

/// BF16 tensor values.
fn bf16(st: &SafeTensors<'_>, name: &str) -> Vec<f64> {
    let t = st.tensor(name).unwrap_or_else(|_| panic!("`{name}` missing"));
    t.data()
        .chunks_exact(2)
        .map(|c| f64::from(f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16)))
        .collect()
}

/// Nunchaku's per-channel order: channel 16a + 8b + 2c + d of each block of 128 is stored at
/// 16a + 4c + 2b + d (formats/nunchaku.md, from `NunchakuWeightPacker.pack_scale`).
fn unpermute(v: &[f64]) -> Vec<f64> {
    (0..v.len())
        .map(|i| {
            let r = i % 128;
            let (a, b, c, d) = (r / 16, (r / 8) % 2, (r / 2) % 4, r % 2);
            v[i - r + 16 * a + 4 * c + 2 * b + d]
        })
        .collect()
}

/// The quantized layers equal Nunchaku's own packing of the same values, byte for byte; the
/// dense tensors are the source's under diffusers' names (norm_out's halves swapped); one and
/// two threads write the same file; the metadata is what Nunchaku's loaders read.
#[test]
fn nunchaku_int4_equals_nunchakus_own_packing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nk.safetensors");
    let natural = natural_and_export(dir.path(), "nunchaku:int4", &out);
    let digests = root().join("tests/interop/nunchaku_digests.json");
    let checked = check_digests(&digests, &natural, &out);
    assert_eq!(checked, 93, "7 W4A4 tensors × 12 modules + 4 AWQ tensors × 3 - 3 fc2 biases");
    let again = dir.path().join("nk-2.safetensors");
    let stats = dir.path().join("stats.safetensors");
    convert_ok(
        &fixture(),
        &again,
        &["--to", "nunchaku:int4", "--stats", s(&stats), "--alpha", "0.5", "--threads", "2"],
    );
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(&again).unwrap(),
        "thread count changed the file"
    );

    let src_bytes = std::fs::read(fixture()).unwrap();
    let src = SafeTensors::deserialize(&src_bytes).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    // Unquantized tensors: diffusers' names (legacy names inside blocks), source bytes.
    let dense = [
        ("img_in.weight", "x_embedder.weight"),
        ("img_in.bias", "x_embedder.bias"),
        ("txt_in.weight", "context_embedder.weight"),
        ("time_in.in_layer.weight", "time_text_embed.timestep_embedder.linear_1.weight"),
        ("time_in.out_layer.bias", "time_text_embed.timestep_embedder.linear_2.bias"),
        ("vector_in.in_layer.weight", "time_text_embed.text_embedder.linear_1.weight"),
        ("guidance_in.out_layer.weight", "time_text_embed.guidance_embedder.linear_2.weight"),
        ("final_layer.linear.weight", "proj_out.weight"),
        ("double_blocks.0.img_attn.norm.query_norm.scale", "transformer_blocks.0.norm_q.weight"),
        (
            "double_blocks.0.txt_attn.norm.key_norm.scale",
            "transformer_blocks.0.norm_added_k.weight",
        ),
        ("single_blocks.0.norm.key_norm.scale", "single_transformer_blocks.0.norm_k.weight"),
    ];
    for (bfl, nk) in dense {
        assert_eq!(src.tensor(bfl).unwrap().data(), st.tensor(nk).unwrap().data(), "{nk}");
    }
    let (a, b) = (
        src.tensor("final_layer.adaLN_modulation.1.weight").unwrap(),
        st.tensor("norm_out.linear.weight").unwrap(),
    );
    let half = a.data().len() / 2;
    assert_eq!(
        &a.data()[..half],
        &b.data()[half..],
        "norm_out.linear: BFL (shift, scale) is diffusers' (scale, shift)"
    );
    let names: Vec<&str> = st.names();
    assert!(
        names.iter().all(|n| !n.starts_with("double_blocks") && !n.starts_with("single_blocks.")),
        "{names:?}"
    );

    let meta = safetensors_metadata(&out);
    assert_eq!(meta["model_class"], "NunchakuFluxTransformer2dModel");
    assert_eq!(
        meta["quantization_config"],
        r#"{"method": "svdquant", "weight": {"dtype": "int4", "scale_dtype": null, "group_size": 64}, "activation": {"dtype": "int4", "scale_dtype": null, "group_size": 64}, "rank": 32}"#
    );
    let cfg: Value = serde_json::from_str(&meta["config"]).unwrap();
    let img_in = src.tensor("img_in.weight").unwrap().shape().to_vec();
    let head = src.tensor("double_blocks.0.img_attn.norm.query_norm.scale").unwrap().shape()[0];
    assert_eq!(cfg["_class_name"], "FluxTransformer2DModel");
    assert_eq!(cfg["in_channels"].as_u64(), Some(img_in[1] as u64));
    assert_eq!(cfg["attention_head_dim"].as_u64(), Some(head as u64));
    assert_eq!(cfg["num_attention_heads"].as_u64(), Some((img_in[0] / head) as u64));
    assert_eq!((cfg["num_layers"].as_u64(), cfg["num_single_layers"].as_u64()), (Some(1), Some(1)));
    assert_eq!(cfg["guidance_embeds"], true);
    // ComfyUI-nunchaku builds ComfyUI's FLUX from `comfy_config` (its configs/flux.1-dev.json
    // has the same keys): patchified channels, widths and depths from the shapes.
    let comfy: Value = serde_json::from_str(&meta["comfy_config"]).unwrap();
    let m = &comfy["model_config"];
    assert_eq!(comfy["model_class"], "Flux");
    let txt_in = src.tensor("txt_in.weight").unwrap().shape()[1];
    let mlp = src.tensor("double_blocks.0.img_mlp.0.weight").unwrap().shape()[0];
    assert_eq!(m["in_channels"].as_u64(), Some(img_in[1] as u64 / 4));
    assert_eq!(m["hidden_size"].as_u64(), Some(img_in[0] as u64));
    assert_eq!(m["context_in_dim"].as_u64(), Some(txt_in as u64));
    assert_eq!(m["mlp_ratio"].as_f64(), Some(mlp as f64 / img_in[0] as f64));
    assert_eq!((m["depth"].as_u64(), m["depth_single_blocks"].as_u64()), (Some(1), Some(1)));
    assert_eq!((m["patch_size"].as_u64(), m["qkv_bias"].as_bool()), (Some(2), Some(true)));
}

/// Nunchaku's INT4 runtime quantizes every fc2's input (GELU output) shifted by 0.171875 as
/// unsigned, and computes the low-rank branch on the unshifted input; the stored bias must undo
/// the shift: bias + 0.171875 · Σ_k R[n, k] / λ_k, with R the stored residual (codes × scales),
/// is the source bias up to the bias's own BF16 rounding. Without the fold the gap is the whole
/// 0.171875 · Σ_k R[n, k] / λ_k.
#[test]
fn fc2_biases_undo_the_unsigned_shift() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nk.safetensors");
    let natural = natural_and_export(dir.path(), "nunchaku:int4", &out);
    let (src_b, nat_b, out_b) = (
        std::fs::read(fixture()).unwrap(),
        std::fs::read(&natural).unwrap(),
        std::fs::read(&out).unwrap(),
    );
    let (src, nat, st) = (
        SafeTensors::deserialize(&src_b).unwrap(),
        SafeTensors::deserialize(&nat_b).unwrap(),
        SafeTensors::deserialize(&out_b).unwrap(),
    );
    let hidden = src.tensor("img_in.weight").unwrap().shape()[0];
    // (BFL layer, columns of it, Nunchaku module)
    let k2 = src.tensor("single_blocks.0.linear2.weight").unwrap().shape()[1];
    let layers = [
        (
            "double_blocks.0.img_mlp.2",
            0..src.tensor("double_blocks.0.img_mlp.2.weight").unwrap().shape()[1],
            "transformer_blocks.0.mlp_fc2",
        ),
        (
            "double_blocks.0.txt_mlp.2",
            0..src.tensor("double_blocks.0.txt_mlp.2.weight").unwrap().shape()[1],
            "transformer_blocks.0.mlp_context_fc2",
        ),
        ("single_blocks.0.linear2", hidden..k2, "single_transformer_blocks.0.mlp_fc2"),
    ];
    for (bfl, cols, nk) in layers {
        let w = bf16(&src, &format!("{bfl}.weight"));
        let b = bf16(&src, &format!("{bfl}.bias"));
        let k = src.tensor(&format!("{bfl}.weight")).unwrap().shape()[1];
        let codes = nat.tensor(&format!("{bfl}.qweight")).unwrap().data().to_vec();
        let scales = bf16(&nat, &format!("{bfl}.wscales"));
        let smooth = bf16(&nat, &format!("{bfl}.smooth_factor"));
        let n = b.len();
        let stored = unpermute(&bf16(&st, &format!("{nk}.bias")));
        let (mut gap, mut plain, mut scale) = (0f64, 0f64, 0f64);
        for row in 0..n {
            let mut r_sum = 0.0;
            let mut w_sum = 0.0;
            for kk in cols.clone() {
                let byte = codes[(row * k + kk) / 2];
                let nib = if kk % 2 == 0 { byte & 15 } else { byte >> 4 };
                let c = f64::from(((nib << 4) as i8) >> 4);
                r_sum += c * scales[(kk / 64) * n + row] / smooth[kk];
                w_sum += w[row * k + kk];
            }
            gap = f64::max(gap, (stored[row] + 0.171_875 * r_sum - b[row]).abs());
            plain = f64::max(plain, (b[row] + 0.171_875 * r_sum - b[row]).abs());
            scale = f64::max(scale, (0.171_875 * w_sum).abs());
        }
        eprintln!(
            "{nk}: max |bias + shift·ΣR/λ − b| = {gap:.3e}; without the fold {plain:.3e}; shift·max|ΣW| = {scale:.3e}"
        );
        // The stored bias is at most max|b| + max|shift·ΣR/λ| ≈ max|b| + scale: half a BF16
        // step of that is under 1/512 of it.
        let bound = (b.iter().fold(0f64, |m, v| m.max(v.abs())) + scale) / 256.0;
        assert!(gap <= bound, "{nk}: the fold does not undo the shift ({gap} > {bound})");
        assert!(plain > 10.0 * gap, "{nk}: the check cannot tell a missing fold");
    }
    // out_proj of the single block carries no bias (mlp_fc2 has it all).
    assert!(bf16(&st, "single_transformer_blocks.0.out_proj.bias").iter().all(|&v| v == 0.0));
}

/// Refusals before any weight is read (exit 2, nothing written, the same with `--dry-run`).
#[test]
fn refusals() {
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.safetensors");
    write_stats(&stats, 1, &same_k);
    let out = dir.path().join("x.safetensors");
    let cases: [(&[&str], &str); 5] = [
        (&["--to", "nunchaku:fp4"], "nunchaku:int4"),
        (
            &[
                "--to",
                "nunchaku:int4",
                "--tensor-type",
                r"double_blocks\.0\.img_mlp\.0\.weight=int4",
            ],
            "double_blocks.0.img_mlp.0.weight",
        ),
        (&["--to", "nunchaku:int4", "--rank", "24"], "multiple of 16"),
        (&["--to", "nunchaku:int4", "--compress", "zstd"], "zstd"),
        (&["--to", "nunchaku-lite:int4", "--timestep-groups", "2"], "timestep group"),
    ];
    for (args, needle) in cases {
        for dry in [false, true] {
            let f = fixture();
            let mut a = vec!["convert", s(&f), "-o", s(&out), "--stats", s(&stats)];
            a.extend_from_slice(args);
            if dry {
                a.push("--dry-run");
            }
            let o = lowbit(&a);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(matches!(o.status.code(), Some(1 | 2)), "{args:?}: {err}");
            let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
            assert!(
                matches!(&errors[..], [e] if e.contains(needle)),
                "{args:?}: `{needle}` not in one error line: {err}"
            );
            assert!(!out.exists(), "{args:?}");
        }
    }
}

/// The lite folder is what diffusers' own `nunchaku_lite` replacement builds, key for key,
/// dtype and shape (`tests/interop/nunchaku_lite.py`, on a full-width FLUX since diffusers'
/// model fixes the MLP ratio), and its quantized layers equal Nunchaku's packing of the same
/// values (committed digests, tiny fixture).
#[test]
fn nunchaku_lite_is_what_diffusers_builds() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lite");
    let natural = natural_and_export(dir.path(), "nunchaku-lite:int4", &out);
    let file = out.join("diffusion_pytorch_model.safetensors");
    let digests = root().join("tests/interop/nunchaku_lite_digests.json");
    let checked = check_digests(&digests, &natural, &file);
    eprintln!("lite: {checked} tensors equal Nunchaku's packing");
    assert!(safetensors_entries(&file).keys().all(|k| !k.contains("smooth_factor_orig")));

    let src = flux_3072();
    let stats = dir.path().join("stats-3072.safetensors");
    crate::svdq::write_stats_for(src, &stats);
    let big = dir.path().join("lite-3072");
    convert_ok(src, &big, &["--to", "nunchaku-lite:int4", "--stats", s(&stats), "--alpha", "0.5"]);
    let report = run_torch_script("nunchaku_lite.py", &[big.as_os_str()]);
    eprintln!("{report}");
}
