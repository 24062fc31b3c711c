//! SVDQuant (`--to svdq-w4a4|svdq-w4a16`) against references nobody here wrote:
//! comfy-kitchen's eager W4A4 reference (`tests/interop/svdq_comfy.py`) runs the stored layers
//! and must give what `lowbit_layout::svdq::forward` gives; numpy's LAPACK SVD bounds the
//! randomized SVD's branch, and the int4 reference of `formats/int4.md` (`int4_ref.py`) must
//! quantize the residual to the stored codes (`tests/interop/svdq_svd.py`); numpy's dense formula
//! `codes · wscales / λ + proj_up · proj_downᵀ` must equal `lowbit dequantize`. Then the
//! command line: refusals (exit 2, before any weight is read, identically with `--dry-run`),
//! timestep groups, determinism over thread counts, the default FLUX plan, `inspect`/`diff`.
//!
//! Calibration statistics are written here (BFL naming, `formats/calibration.md`), seeded:
//! absmax 1 + |N(0, 1)|/2 per input channel with four outlier channels × 30.
//! `--alpha auto` conversions take a few seconds per layer in debug builds, so they restrict the
//! SVDQuant layers with `--tensor-type` rules to keep each test short.

#![expect(clippy::print_stderr, reason = "measured errors and ratios, shown with --nocapture")]

use crate::support::{
    convert_ok, inspect_json, lowbit, root, run_script, run_torch_script, safetensors_entries,
};
use crate::ternary::{Tensor, f32_bytes, write_safetensors};
use lowbit_fixtures::rng::Rng;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;

fn fixture() -> PathBuf {
    root().join("fixtures/flux-tiny-bfl.safetensors")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The linear layers inside the blocks of a BFL checkpoint: module path (no `.weight`) and K.
fn block_linears(input: &Path) -> Vec<(String, u64)> {
    safetensors_entries(input)
        .into_iter()
        .filter(|(n, e)| {
            e.shape.len() == 2
                && n.ends_with(".weight")
                && (n.starts_with("double_blocks.") || n.starts_with("single_blocks."))
        })
        .map(|(n, e)| (n[..n.len() - ".weight".len()].to_owned(), e.shape[1]))
        .collect()
}

/// Writes a BFL-named statistics file for the fixture with `groups` timestep groups (`[K]` for
/// one group, `[G, K]` otherwise); `k_of` may change a layer's K. Each group has its own
/// outlier channels, so each group's λ differs.
pub(crate) fn write_stats(path: &Path, groups: usize, k_of: &dyn Fn(&str, u64) -> u64) {
    write_stats_of(&fixture(), path, groups, k_of);
}

/// [`write_stats`] with one group for the BFL checkpoint `input`.
pub(crate) fn write_stats_for(input: &Path, path: &Path) {
    write_stats_of(input, path, 1, &same_k);
}

fn write_stats_of(input: &Path, path: &Path, groups: usize, k_of: &dyn Fn(&str, u64) -> u64) {
    let mut tensors: Vec<Tensor> = Vec::new();
    for (m, k) in block_linears(input) {
        let k = k_of(&m, k) as usize;
        let mut rng = Rng::for_name(7, &m);
        let mut v = Vec::with_capacity(groups * k);
        for _ in 0..groups {
            let mut row: Vec<f32> =
                (0..k).map(|_| 1.0 + (rng.normal().abs() * 0.5) as f32).collect();
            for _ in 0..4 {
                row[rng.index(k)] *= 30.0;
            }
            v.extend(row);
        }
        let shape = if groups == 1 { vec![k] } else { vec![groups, k] };
        tensors.push((m, Dtype::F32, shape, f32_bytes(&v)));
    }
    let boundaries: Vec<f64> =
        (0..=groups).map(|i| 1000.0 * (groups - i) as f64 / groups as f64).collect();
    let meta = serde_json::json!({
        "version": 1, "statistic": "absmax", "naming": "bfl", "groups": groups,
        "boundaries": boundaries,
    });
    write_safetensors(path, &tensors, &[("lowbit.calibration", meta.to_string())]);
}

pub(crate) fn same_k(_: &str, k: u64) -> u64 {
    k
}

/// `lowbit convert FIXTURE -o OUT ARGS…`.
fn convert(out: &Path, args: &[&str]) -> Output {
    let f = fixture();
    let mut a = vec!["convert", s(&f), "-o", s(out)];
    a.extend_from_slice(args);
    lowbit(&a)
}

/// Asserts a usage refusal (exit 2, nothing written) whose stderr contains every `needle`,
/// and the same stderr with `--dry-run`; returns the stderr.
fn refused(out: &Path, args: &[&str], needles: &[&str]) -> String {
    let o = convert(out, args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: `{n}` not in: {err}");
    }
    assert!(!out.exists(), "{args:?}: an output was written");
    let mut dry = args.to_vec();
    dry.push("--dry-run");
    let d = convert(out, &dry);
    assert_eq!(d.status.code(), Some(2), "{dry:?}");
    assert_eq!(String::from_utf8_lossy(&d.stderr), err, "{dry:?}: another refusal");
    err
}

/// Every tensor of a safetensors file: dtype, shape, bytes (read with the `safetensors` crate).
fn read_all(path: &Path) -> BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect()
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn bf16s(b: &[u8]) -> Vec<f32> {
    crate::support::bf16_values(b)
}

/// ‖a − b‖ / ‖b‖ in f64.
fn rel(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut e, mut n) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        e += (f64::from(*x) - f64::from(*y)).powi(2);
        n += f64::from(*y).powi(2);
    }
    (e / n).sqrt()
}

/// `lowbit.schemes` of a converted file.
fn schemes(path: &Path) -> BTreeMap<String, String> {
    serde_json::from_str(&crate::support::safetensors_metadata(path)["lowbit.schemes"]).unwrap()
}

/// Keeps only these BFL weights SVDQuant (the rest BF16): `--alpha auto` is slow in debug.
fn only(weights: &[&str]) -> Vec<String> {
    let mut v = vec!["--tensor-type".to_owned(), ".*=bf16".to_owned()];
    for w in weights {
        v.push("--tensor-type".to_owned());
        v.push(format!("{}=svdq-w4a4", w.replace('.', "\\.")));
    }
    v
}

/// The SVDQuant weights of the W4A4 comfy-kitchen check: both K > N and N > K.
const COMFY_LAYERS: [&str; 3] = [
    "double_blocks.0.img_attn.qkv.weight",
    "double_blocks.0.img_attn.proj.weight",
    "double_blocks.0.img_mlp.2.weight",
];

/// comfy-kitchen's eager `quantize_svdquant_w4a4` + `scaled_mm_svdquant_w4a4` (float32), run on
/// the stored tensors of an `--alpha auto` W4A4 conversion, give what lowbit's CPU reference
/// `lowbit_layout::svdq::forward` (f64 accumulation) gives on the same bytes, bias included;
/// with λ replaced by ones they do not (the check can fail).
#[test]
fn comfy_kitchen_w4a4_reference_computes_our_layers() {
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.safetensors");
    write_stats(&stats, 1, &same_k);
    let out = dir.path().join("w4a4.safetensors");
    let mut args: Vec<String> =
        ["--to", "svdq-w4a4", "--stats", s(&stats), "--alpha", "auto"].map(String::from).into();
    args.extend(only(&COMFY_LAYERS));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let f = fixture();
    convert_ok(&f, &out, &args);
    let xy = dir.path().join("xy.safetensors");
    let report =
        run_torch_script("svdq_comfy.py", &[out.as_os_str(), stats.as_os_str(), xy.as_os_str()]);
    let report: Value = serde_json::from_str(report.trim()).unwrap();
    let layers: Vec<&str> =
        report["layers"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(layers.len(), COMFY_LAYERS.len(), "{report}");

    let stored = read_all(&out);
    let xy = read_all(&xy);
    let (mut worst, mut worst_ones) = (0f64, 0f64);
    for name in &layers {
        let m = &name[..name.len() - ".weight".len()];
        let t = |suffix: &str| &stored[&format!("{m}.{suffix}")];
        let (n, k) = (t("qweight").1[0], t("qweight").1[1] * 2);
        let rank = t("proj_up").1[1];
        let parts: Vec<&[u8]> = lowbit_layout::svdq::SUFFIXES.iter().map(|x| &t(x).2[..]).collect();
        let smooth = bf16s(&t("smooth_factor").2);
        assert!(smooth.iter().any(|l| *l != 1.0), "{name}: λ = 1, nothing smoothed");
        let bias = bf16s(&t("bias").2);
        let x = f32s(&xy[&format!("{m}.x")].2);
        let y_ck = f32s(&xy[&format!("{m}.y")].2);
        let y_ones = f32s(&xy[&format!("{m}.y_ones")].2);
        let ours = lowbit_layout::svdq::forward(
            &parts,
            u16::try_from(rank).unwrap(),
            1,
            0,
            true,
            n as u64,
            k as u64,
            0..n as u64,
            &x,
            Some(&bias),
        )
        .unwrap();
        let (e, e_ones) = (rel(&y_ck, &ours), rel(&y_ones, &ours));
        eprintln!("{name} [{n}, {k}] r{rank}: comfy-kitchen vs ours {e:.3e}; λ = 1: {e_ones:.3e}");
        assert!(e <= 1e-4, "{name}: comfy-kitchen differs from lowbit's forward by {e}");
        worst = worst.max(e);
        worst_ones = worst_ones.max(e_ones);
    }
    assert!(worst_ones > 1e-2, "negative control: ignoring λ changed nothing ({worst_ones})");
    eprintln!("max relative error {worst:.3e}; negative control {worst_ones:.3e}");
}

/// numpy's dense weight of the stored tensors, `codes · wscales / λ + proj_up · proj_downᵀ`
/// (float64), equals `lowbit dequantize --dtype f32` within 1e-6 relative, for W4A16 without
/// statistics (λ = 1) and with them (`--alpha 0.5`, λ ≠ 1).
#[test]
fn w4a16_dense_weight_matches_numpy() {
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.safetensors");
    write_stats(&stats, 1, &same_k);
    for (tag, extra) in
        [("plain", vec![]), ("smoothed", vec!["--stats", s(&stats), "--alpha", "0.5"])]
    {
        let out = dir.path().join(format!("{tag}.safetensors"));
        let mut args = vec!["--to", "svdq-w4a16"];
        args.extend(extra);
        convert_ok(&fixture(), &out, &args);
        let deq = dir.path().join(format!("{tag}-deq.safetensors"));
        let d = lowbit(&["dequantize", s(&out), "-o", s(&deq), "--dtype", "f32"]);
        assert!(d.status.success(), "{}", String::from_utf8_lossy(&d.stderr));
        let report =
            run_script("svdq_svd.py", &[OsStr::new("dense"), out.as_os_str(), deq.as_os_str()]);
        let r: BTreeMap<String, Value> = serde_json::from_str(report.trim()).unwrap();
        assert_eq!(r.len(), 10, "{tag}: the fixture's ten block linears: {report}");
        for (name, l) in &r {
            assert_eq!(l["scheme"], "svdq-w4a16", "{tag} {name}");
            let e = l["rel_error"].as_f64().unwrap();
            assert!(e <= 1e-6, "{tag} {name}: dequantize differs from numpy by {e}");
            let (lo, hi) = (l["smooth_min"].as_f64().unwrap(), l["smooth_max"].as_f64().unwrap());
            if tag == "plain" {
                assert_eq!((lo, hi), (1.0, 1.0), "{name}: no statistics, λ must be 1");
            } else {
                assert!(hi / lo > 2.0, "{name}: λ in [{lo}, {hi}] smooths nothing");
            }
        }
    }
}

/// `[n, k]` BF16 weights: a decaying spectrum (σ_i ≈ 0.85^i, rank 64, random factors) plus
/// N(0, 0.0001²) noise.
fn low_rank_weight(name: &str, n: usize, k: usize) -> Tensor {
    let mut rng = Rng::for_name(21, name);
    let r = 64;
    let mut u: Vec<f64> = (0..n * r).map(|_| rng.normal() / (n as f64).sqrt()).collect();
    let v: Vec<f64> = (0..k * r).map(|_| rng.normal() / (k as f64).sqrt()).collect();
    for (i, x) in u.iter_mut().enumerate() {
        *x *= 0.85f64.powi((i % r) as i32);
    }
    let mut bytes = Vec::with_capacity(n * k * 2);
    for a in 0..n {
        for b in 0..k {
            let mut w = 0.0001 * rng.normal();
            for j in 0..r {
                w += u[a * r + j] * v[b * r + j];
            }
            bytes.extend_from_slice(&half::bf16::from_f64(w).to_le_bytes());
        }
    }
    (name.to_owned(), Dtype::BF16, vec![n, k], bytes)
}

/// The rank-16 branch of `--to svdq-w4a16 --rank 16` (no statistics: λ = 1) is within 1 % of
/// the optimal rank-16 residual numpy's LAPACK SVD gives, and the stored int4 part is the
/// spec's int4 g64 quantization of `W − proj_up · proj_downᵀ` (float32, from the stored BF16
/// factors).
#[test]
fn randomized_svd_is_near_lapack_and_residual_is_int4_of_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("layers.safetensors");
    let shapes =
        [("layers.0.proj", 384, 256), ("layers.1.up", 256, 1024), ("layers.2.qkv", 576, 256)];
    let mut tensors: Vec<Tensor> =
        shapes.iter().map(|(m, n, k)| low_rank_weight(&format!("{m}.weight"), *n, *k)).collect();
    tensors.push(("layers.0.proj.bias".into(), Dtype::BF16, vec![384], vec![0u8; 768]));
    write_safetensors(&input, &tensors, &[]);
    let out = dir.path().join("svdq.safetensors");
    convert_ok(&input, &out, &["--to", "svdq-w4a16", "--rank", "16"]);
    let report =
        run_script("svdq_svd.py", &[OsStr::new("svd"), input.as_os_str(), out.as_os_str()]);
    let r: BTreeMap<String, Value> = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(r.len(), shapes.len(), "every 2-D weight takes the target: {report}");
    for (name, l) in &r {
        assert_eq!(l["scheme"], "svdq-w4a16:r16", "{name}");
        assert_eq!(l["rank"], 16, "{name}");
        assert_eq!(l["smooth_all_ones"], true, "{name}: λ without statistics");
        let (opt, ours) = (l["optimum"].as_f64().unwrap(), l["ours"].as_f64().unwrap());
        let ratio = ours / opt;
        eprintln!(
            "{name} {}: ‖W − W₁₆‖ = {opt:.5} (LAPACK), ours {ours:.5}, ratio {ratio:.5}, ‖W‖ = {:.3}",
            l["shape"],
            l["norm"].as_f64().unwrap()
        );
        // The branch is not trivially good: the tail it leaves is a small part of ‖W‖.
        assert!(opt < 0.5 * l["norm"].as_f64().unwrap(), "{name}: {l}");
        assert!(ratio <= 1.01, "{name}: residual {ours} vs optimum {opt}");
        assert!(ratio >= 0.999, "{name}: better than optimal? {ours} vs {opt}");
        let (codes, mism) = (l["codes"].as_u64().unwrap(), l["code_mismatches"].as_u64().unwrap());
        eprintln!(
            "{name}: {mism} of {codes} codes differ, scales differing {}",
            l["scale_mismatches"]
        );
        // Exact on the machine this was written on (0 codes and scales differ). numpy's BLAS and
        // matrixmultiply sum the branch product in different orders, which can move an element
        // across a rounding boundary of the int4 quotient or of a BF16 scale on other CPUs; so
        // at most 0.1 % of codes may differ, by ±1, and 0.1 % of scales.
        assert!(mism * 1000 <= codes, "{name}: {l}");
        assert!(l["max_code_diff"].as_u64().unwrap() <= 1, "{name}: {l}");
        assert!(l["scale_mismatches"].as_u64().unwrap() * 1000 * 64 <= codes, "{name}: {l}");
    }
}

/// (a)–(d): what a conversion refuses, with exit code 2 and the same message with `--dry-run`.
#[test]
fn svdq_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    // (a) W4A4 needs statistics.
    refused(&out, &["--to", "svdq-w4a4"], &["--stats", "svdq-w4a16"]);
    // (b) statistics whose K disagrees with a weight name that weight.
    let stats = dir.path().join("bad-k.safetensors");
    let mlp2 = "double_blocks.0.img_mlp.2";
    write_stats(&stats, 1, &|m, k| if m == mlp2 { k / 2 } else { k });
    let e = refused(&out, &["--to", "svdq-w4a4", "--stats", s(&stats)], &[mlp2, "256", "512"]);
    assert!(e.contains(&format!("{mlp2}.weight")), "{e}");
    // A layer absent from the statistics is named too.
    let stats_missing = dir.path().join("missing.safetensors");
    write_stats(&stats_missing, 1, &same_k);
    let mut t = read_all(&stats_missing);
    t.remove("single_blocks.0.linear2");
    let meta = crate::support::safetensors_metadata(&stats_missing);
    let tensors: Vec<Tensor> = t.into_iter().map(|(n, (d, sh, b))| (n, d, sh, b)).collect();
    let meta: Vec<(&str, String)> = meta.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    write_safetensors(&stats_missing, &tensors, &meta);
    let sm = s(&stats_missing);
    refused(&out, &["--to", "svdq-w4a16", "--stats", sm], &["single_blocks.0.linear2.weight"]);
    // (c) diffusers names.
    refused(&out, &["--to", "svdq-w4a16", "--names", "diffusers"], &["--names diffusers"]);
    // (d) α without statistics (`none` is λ = 1, which needs none).
    refused(&out, &["--to", "svdq-w4a16", "--alpha", "0.5"], &["--alpha", "--stats"]);
    refused(&out, &["--to", "svdq-w4a16", "--alpha", "auto"], &["--alpha", "--stats"]);
    // SVDQuant options without an SVDQuant layer.
    refused(&out, &["--to", "int4", "--seed", "3"], &["--seed"]);
    let none = dir.path().join("none.safetensors");
    convert_ok(&fixture(), &none, &["--to", "svdq-w4a16", "--alpha", "none", "--rank", "8"]);
    assert!(schemes(&none).values().any(|v| v == "svdq-w4a16:r8"));
}

/// (e): `--timestep-groups 2` needs a 2-group statistics file; with one, every SVDQuant tensor
/// gets a leading `[2]`, each group its own λ, and `inspect --json`, `dequantize` (group 0,
/// equal to numpy's formula on the group-0 slices) and `diff` read the file.
#[test]
fn timestep_groups() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t2.safetensors");
    let one = dir.path().join("one.safetensors");
    write_stats(&one, 1, &same_k);
    let base = ["--to", "svdq-w4a4", "--timestep-groups", "2", "--alpha", "0.5", "--rank", "8"];
    let mut a = base.to_vec();
    a.extend(["--stats", s(&one)]);
    refused(&out, &a, &["2 timestep groups", "has 1"]);

    let two = dir.path().join("two.safetensors");
    write_stats(&two, 2, &same_k);
    let mut a = base.to_vec();
    a.extend(["--stats", s(&two)]);
    convert_ok(&fixture(), &out, &a);
    let sch = schemes(&out);
    let svdq: Vec<&String> =
        sch.iter().filter(|(_, v)| *v == "svdq-w4a4:r8:t2").map(|p| p.0).collect();
    assert_eq!(svdq.len(), 10, "{sch:?}");
    let entries = safetensors_entries(&out);
    let src = safetensors_entries(&fixture());
    for name in &svdq {
        let m = &name[..name.len() - ".weight".len()];
        let (n, k) = (src[*name].shape[0], src[*name].shape[1]);
        let want: [(&str, Vec<u64>); 5] = [
            ("qweight", vec![2, n, k / 2]),
            ("wscales", vec![2, k / 64, n]),
            ("smooth_factor", vec![2, k]),
            ("proj_down", vec![2, k, 8]),
            ("proj_up", vec![2, n, 8]),
        ];
        for (suffix, shape) in want {
            assert_eq!(entries[&format!("{m}.{suffix}")].shape, shape, "{m}.{suffix}");
        }
        let e = &entries[&format!("{m}.smooth_factor")];
        let lam = bf16s(&crate::support::read_at(&out, e.bytes.clone()));
        let (g0, g1) = lam.split_at(k as usize);
        assert_ne!(g0, g1, "{m}: both timestep groups have the same λ");
        assert_eq!(entries[&format!("{m}.bias")].shape, vec![n], "{m}: the bias has no groups");
    }
    let meta: Value =
        serde_json::from_str(&crate::support::safetensors_metadata(&out)["lowbit.svdq"]).unwrap();
    assert_eq!(meta["timestep_groups"]["groups"], 2, "{meta}");
    assert_eq!(meta["timestep_groups"]["boundaries"], serde_json::json!([1000.0, 500.0, 0.0]));

    let report = inspect_json(&out);
    let rows = report["tensors"].as_array().unwrap();
    for name in &svdq {
        let row = rows.iter().find(|r| r["name"] == name.as_str()).expect("inspect row");
        assert_eq!(row["scheme"], "svdq-w4a4:r8:t2", "{name}");
    }
    let deq = dir.path().join("t2-deq.safetensors");
    let d = lowbit(&["dequantize", s(&out), "-o", s(&deq), "--dtype", "f32"]);
    assert!(d.status.success(), "{}", String::from_utf8_lossy(&d.stderr));
    let dense = run_script("svdq_svd.py", &[OsStr::new("dense"), out.as_os_str(), deq.as_os_str()]);
    let dense: BTreeMap<String, Value> = serde_json::from_str(dense.trim()).unwrap();
    assert_eq!(dense.len(), 10, "{dense:?}");
    for (name, l) in &dense {
        assert!(l["rel_error"].as_f64().unwrap() <= 1e-6, "{name}: {l}");
    }
    let o = lowbit(&["diff", s(&deq), s(&fixture()), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let diff: Value = serde_json::from_slice(&o.stdout).unwrap();
    for t in diff["tensors"].as_array().unwrap() {
        if svdq.iter().any(|n| t["name"] == n.as_str()) {
            let e = t["rel_error"].as_f64().unwrap();
            assert!(e > 0.0 && e < 0.15, "{}: {e}", t["name"]);
        }
    }
    let o = lowbit(&["diff", s(&out), s(&fixture()), "--json"]);
    assert!(
        o.status.success(),
        "diff reads the packed file: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// (f): the same input and options give the same bytes with 1 and 2 threads; another seed
/// gives other bytes.
#[test]
fn deterministic_over_threads_and_seeded() {
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.safetensors");
    write_stats(&stats, 1, &same_k);
    let run = |tag: &str, threads: &str, seed: &str| {
        let out = dir.path().join(format!("{tag}.safetensors"));
        let mut args: Vec<String> = [
            "--to",
            "svdq-w4a4",
            "--stats",
            s(&stats),
            "--alpha",
            "auto",
            "--refine",
            "1",
            "--threads",
            threads,
            "--seed",
            seed,
        ]
        .map(String::from)
        .into();
        args.extend(only(&["double_blocks.0.img_attn.qkv.weight"]));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        convert_ok(&fixture(), &out, &args);
        std::fs::read(&out).unwrap()
    };
    let (a, b, c) = (run("t1", "1", "5"), run("t2", "2", "5"), run("seed", "2", "6"));
    assert!(a == b, "1 and 2 threads wrote different bytes");
    assert!(a != c, "--seed 5 and --seed 6 wrote the same bytes");
}

/// (g): the default plan on FLUX: the block linears SVDQuant, the AdaLN modulation linears
/// `int4:g64`, the embedders and the final layer BF16, biases and norms BF16 (`--dry-run`).
#[test]
fn default_flux_plan() {
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.safetensors");
    write_stats(&stats, 1, &same_k);
    let out = dir.path().join("out.safetensors");
    let o = convert(&out, &["--to", "svdq-w4a4", "--stats", s(&stats), "--dry-run"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!out.exists());
    let plan = String::from_utf8_lossy(&o.stdout);
    let types: BTreeMap<&str, &str> = plan
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 3 && f[0].contains('.')).then(|| (f[0], f[2]))
        })
        .collect();
    let src = safetensors_entries(&fixture());
    assert_eq!(types.len(), src.len(), "{plan}");
    let mut svdq = 0;
    for (name, e) in &src {
        let want = if e.shape.len() != 2 {
            "BF16"
        } else if [".img_mod.lin.", ".txt_mod.lin.", ".modulation.lin."]
            .iter()
            .any(|p| name.contains(p))
        {
            "int4:g64"
        } else if [
            ".qkv.",
            ".proj.",
            ".img_mlp.0.",
            ".img_mlp.2.",
            ".txt_mlp.0.",
            ".txt_mlp.2.",
            ".linear1.",
            ".linear2.",
        ]
        .iter()
        .any(|p| name.contains(p))
            && (name.starts_with("double_blocks.") || name.starts_with("single_blocks."))
        {
            svdq += 1;
            "svdq-w4a4"
        } else {
            "BF16"
        };
        assert_eq!(types.get(name.as_str()), Some(&want), "{name}: {plan}");
    }
    assert_eq!(svdq, 10);
    assert!(plan.contains("target svdq-w4a4"), "{plan}");
}

/// (h): `inspect --json` shows each SVDQuant weight once, with its scheme and the bytes of all
/// five stored tensors; `diff` against the input shows a smaller error than `--to int4` for
/// each SVDQuant layer, and the same for the int4 modulation layers both files share.
#[test]
fn inspect_and_diff_against_int4() {
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.safetensors");
    write_stats(&stats, 1, &same_k);
    let out = dir.path().join("w4a4.safetensors");
    let layers = ["double_blocks.0.img_mlp.0.weight", "single_blocks.0.linear2.weight"];
    let mut args: Vec<String> =
        ["--to", "svdq-w4a4", "--stats", s(&stats), "--alpha", "auto"].map(String::from).into();
    // Rules are matched last-wins: these keep the modulation linears int4:g64 too.
    args.extend(only(&layers));
    args.extend([
        "--tensor-type".into(),
        ".*\\.(img_mod|txt_mod|modulation)\\.lin\\.weight=int4".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    convert_ok(&fixture(), &out, &args);
    let int4 = dir.path().join("int4.safetensors");
    convert_ok(&fixture(), &int4, &["--to", "int4"]);

    let entries = safetensors_entries(&out);
    let src = safetensors_entries(&fixture());
    let report = inspect_json(&out);
    let rows = report["tensors"].as_array().unwrap();
    for name in layers {
        let hits: Vec<&Value> = rows.iter().filter(|r| r["name"] == name).collect();
        assert_eq!(hits.len(), 1, "{name}");
        let row = hits[0];
        assert_eq!(row["scheme"], "svdq-w4a4", "{name}");
        let m = &name[..name.len() - ".weight".len()];
        let want: Vec<String> = ["qweight", "wscales", "smooth_factor", "proj_down", "proj_up"]
            .iter()
            .map(|x| format!("{m}.{x}"))
            .collect();
        assert_eq!(row["stored"], serde_json::json!(want), "{name}");
        let (n, k) = (src[name].shape[0], src[name].shape[1]);
        let bytes: u64 = want.iter().map(|w| entries[w].bytes.end - entries[w].bytes.start).sum();
        assert_eq!(bytes, n * k / 2 + k / 64 * n * 2 + 2 * k + 2 * k * 32 + 2 * n * 32, "{name}");
        assert_eq!(row["bytes"], bytes, "{name}");
        let bpw = row["bits_per_weight"].as_f64().unwrap();
        assert!((bpw - bytes as f64 * 8.0 / (n * k) as f64).abs() < 1e-9, "{name}: {bpw}");
        assert!(bpw > 6.0, "{name}: {bpw} bits/weight cannot hold the branch");
    }
    let by_type = report["by_type"].as_array().unwrap();
    assert!(by_type.iter().any(|t| t["name"] == "svdq-w4a4" && t["tensors"] == 2), "{by_type:?}");

    let diff = |p: &Path| -> BTreeMap<String, f64> {
        let o = lowbit(&["diff", s(p), s(&fixture()), "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        let t = v["tensors"].as_array().unwrap();
        t.iter()
            .map(|t| (t["name"].as_str().unwrap().to_owned(), t["rel_error"].as_f64().unwrap()))
            .collect()
    };
    let (ds, di) = (diff(&out), diff(&int4));
    for name in layers {
        eprintln!("{name}: svdq-w4a4 {:.4}, int4 {:.4}", ds[name], di[name]);
        assert!(
            ds[name] > 0.0 && ds[name] < di[name],
            "{name}: svdq {} int4 {}",
            ds[name],
            di[name]
        );
    }
    for name in ["double_blocks.0.img_mod.lin.weight", "single_blocks.0.modulation.lin.weight"] {
        assert!(di[name] > 0.0 && ds[name] == di[name], "{name}: {} vs {}", ds[name], di[name]);
    }
}
