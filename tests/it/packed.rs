//! The packed safetensors targets end to end: every scheme writes the tensors its spec lists
//! (`lowbit_layout::Scheme::stored`), the same bytes whatever the thread count and chunk size,
//! decodes back within the scheme's expected error, records what it did in `__metadata__`, and
//! refuses bad input the same way in a dry run and a real run.
//!
//! Correctness of each scheme's bytes against an implementation nobody here wrote lives in the
//! scheme's own test file (`nf4.rs` against bitsandbytes, `fp8.rs` against `ml_dtypes`,
//! diffusers and comfy-kitchen, `ternary.rs` and `int4.rs` against numpy and transformers).

use crate::support::{bf16_values, lowbit, outlier_weights, safetensors_entries};
use lowbit_checkpoint::Checkpoint;
use lowbit_convert::{CHUNK_BYTES, Options, Plan, Recipe, write_packed};
use lowbit_fixtures::flux::GenTensor;
use lowbit_fixtures::write::safetensors_bytes;
use lowbit_layout::Scheme;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Every packed target, with its options spelled out.
const TARGETS: [&str; 19] = [
    "ternary",
    "ternary:tensor",
    "bitnet",
    "int4:g32",
    "int4:g64",
    "int4:g128",
    "int4:g64:asym",
    "int4:g128:asym",
    "nf4",
    "nf4:dq",
    "fp8",
    "fp8:e5m2",
    "comfy:fp8",
    "comfy:fp8:e5m2",
    "bfl:fp8",
    "comfy:nvfp4",
    "bfl:nvfp4",
    "svdq-w4a16",
    "svdq-w4a16:r8",
];

/// The largest relative Frobenius error each scheme may have on N(0, 1) weights with a few
/// outlier columns: generous bounds, but each fails if the codes or scales were garbage.
fn max_rel_error(s: Scheme) -> f64 {
    match s {
        Scheme::Ternary { .. } | Scheme::Bitnet => 0.9,
        // sdnq targets need FLUX names; tests/it/sdnq.rs covers them.
        Scheme::Int4 { .. } | Scheme::Svdq { .. } | Scheme::Sdnq { .. } => 0.4,
        Scheme::Nf4 { .. } => 0.15,
        Scheme::Fp8 { .. } | Scheme::ComfyFp8 { .. } | Scheme::BflFp8 => 0.15,
        // Measured 0.094 on both weights that fit.
        Scheme::ComfyNvfp4 | Scheme::BflNvfp4 => 0.15,
    }
}

/// The test's weights: [`outlier_weights`] with outlier columns ×8.
fn weights(name: &str, rows: u64, cols: u64) -> GenTensor {
    outlier_weights(11, name, rows, cols, 8.0)
}

/// Names outside any known architecture (so every 2-D `.weight` takes the target's scheme): a
/// tall and a wide matrix, one whose rows no group divides (33 columns: NF4 blocks span rows,
/// the others fall back), and a bias.
fn input(dir: &Path) -> (PathBuf, Vec<GenTensor>) {
    let mut bias = weights("packed.bias", 1, 1500);
    bias.shape = vec![1500];
    let tensors = vec![
        weights("packed.tall.weight", 2048, 256),
        weights("packed.wide.weight", 132, 768),
        weights("packed.odd.weight", 36, 33),
        bias,
    ];
    let path = dir.join("packed.safetensors");
    std::fs::write(&path, safetensors_bytes(&tensors)).unwrap();
    (path, tensors)
}

fn write(ckpt: &Checkpoint, target: &str, out: &Path, threads: usize, chunk_bytes: u64) {
    let recipe = Recipe::build(None, Some(target), &[]).unwrap();
    let plan = Plan::new(ckpt, &recipe, None).unwrap();
    let opts = Options {
        threads,
        allow_non_finite: false,
        cancel: None,
        progress: None,
        source_name: "packed.safetensors".to_owned(),
        chunk_bytes,
        force_extension: false,
        svdq: None,
    };
    write_packed(ckpt, &plan, &recipe, out, &opts).unwrap();
}

/// Decodes stored weight `name` (a 2-D `.weight` of `scheme`) from an output file.
fn decode(file: &Path, scheme: Scheme, name: &str, n: u64, k: u64) -> Vec<f32> {
    let ckpt = Checkpoint::open(file).unwrap();
    let module = name.strip_suffix(".weight").unwrap();
    let stored = scheme.stored(n, k, lowbit_dtype::Dtype::BF16, Some(0.0));
    let bytes: Vec<&[u8]> = stored
        .iter()
        .map(|s| ckpt.raw(ckpt.tensor(&format!("{module}.{}", s.suffix)).unwrap()))
        .collect();
    #[expect(clippy::cast_possible_truncation, reason = "small test tensors")]
    let mut out = vec![0f32; (n * k) as usize];
    scheme.decode(&bytes, n, k, 0..n, &mut out).unwrap();
    out
}

fn rel_error(a: &[f32], b: &[f32]) -> f64 {
    let (mut d, mut r) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        d += f64::from(x - y).powi(2);
        r += f64::from(*y).powi(2);
    }
    (d / r).sqrt()
}

/// Every target: stored tensors as the spec lists them, dense tensors unchanged, the metadata,
/// bytes independent of threads and chunk sizes, and a decode within the scheme's error.
#[test]
fn every_target_writes_its_spec_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let (input, tensors) = input(dir.path());
    let ckpt = Checkpoint::open(&input).unwrap();
    for target in TARGETS {
        let scheme = Scheme::parse(target).unwrap();
        let reference = dir.path().join(format!("{}.safetensors", target.replace(':', "-")));
        write(&ckpt, target, &reference, 1, CHUNK_BYTES);
        let bytes = std::fs::read(&reference).unwrap();
        for (threads, chunk_bytes) in [(3, 1), (2, 100_003), (8, CHUNK_BYTES)] {
            let out = dir.path().join("again.safetensors");
            write(&ckpt, target, &out, threads, chunk_bytes);
            assert!(
                std::fs::read(&out).unwrap() == bytes,
                "{target}: {threads} threads, chunks of {chunk_bytes} bytes"
            );
        }
        let entries = safetensors_entries(&reference);
        let meta = crate::support::safetensors_metadata(&reference);
        let schemes: BTreeMap<String, String> =
            serde_json::from_str(&meta["lowbit.schemes"]).unwrap();
        assert_eq!(meta["lowbit.source"], "packed.safetensors");
        assert!(meta["lowbit.recipe"].contains(&format!("to = \"{scheme}\"")), "{target}");
        let mut expected_names = Vec::new();
        for t in &tensors {
            let [n, k] = t.shape[..] else {
                assert_eq!(entries[&t.name].dtype, "BF16", "{target}: {}", t.name);
                assert!(!schemes.contains_key(&t.name));
                expected_names.push(t.name.clone());
                continue;
            };
            if scheme.fits(n, k).is_err() {
                assert_eq!(entries[&t.name].dtype, "BF16", "{target}: {} falls back", t.name);
                assert!(!schemes.contains_key(&t.name), "{target}: {}", t.name);
                expected_names.push(t.name.clone());
                continue;
            }
            assert_eq!(schemes[&t.name], scheme.to_string(), "{target}: {}", t.name);
            let module = t.name.strip_suffix(".weight").unwrap();
            for s in scheme.stored(n, k, lowbit_dtype::Dtype::BF16, Some(0.0)) {
                let name = format!("{module}.{}", s.suffix);
                let e = &entries[&name];
                assert_eq!(e.dtype, s.dtype.name(), "{target}: {name}");
                if !s.suffix.contains("quant_state") {
                    assert_eq!(e.shape, s.shape, "{target}: {name}");
                }
                expected_names.push(name);
            }
            let got = decode(&reference, scheme, &t.name, n, k);
            let want = bf16_values(&t.data);
            let err = rel_error(&got, &want);
            assert!(err < max_rel_error(scheme), "{target}: {} relative error {err}", t.name);
            assert!(err > 0.0, "{target}: {} decodes exactly, so nothing was quantized", t.name);
        }
        let mut got_names: Vec<String> = entries.keys().cloned().collect();
        got_names.sort();
        expected_names.sort();
        assert_eq!(got_names, expected_names, "{target}: no missing or extra tensors");
    }
}

/// The bias stays at source precision, byte for byte.
#[test]
fn dense_tensors_are_copied_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (input, tensors) = input(dir.path());
    let out = dir.path().join("o.safetensors");
    let o =
        lowbit(&["convert", input.to_str().unwrap(), "--to", "int4", "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ckpt = Checkpoint::open(&out).unwrap();
    let bias = &tensors[3];
    assert_eq!(ckpt.raw(ckpt.tensor(&bias.name).unwrap()), bias.data.as_slice());
    let odd = &tensors[2];
    assert_eq!(ckpt.raw(ckpt.tensor(&odd.name).unwrap()), odd.data.as_slice());
}

/// NaN weights stop the conversion with the tensor and index, and leave no file; a dry run and
/// a real run refuse options that do not fit the target with the same line.
#[test]
fn refusals() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = weights("bad.weight", 8, 64);
    t.data[2 * (3 * 64 + 5)..2 * (3 * 64 + 5) + 2].copy_from_slice(&half::bf16::NAN.to_le_bytes());
    let input = dir.path().join("nan.safetensors");
    std::fs::write(&input, safetensors_bytes(&[t])).unwrap();
    let out = dir.path().join("o.safetensors");
    for target in ["ternary", "nf4:dq", "comfy:fp8", "bfl:fp8", "comfy:nvfp4", "bfl:nvfp4"] {
        let o = lowbit(
            &["convert", input.to_str().unwrap(), "--to", target, "-o"]
                .into_iter()
                .chain([out.to_str().unwrap()])
                .collect::<Vec<_>>(),
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{target}: {err}");
        assert!(err.contains("bad.weight") && err.contains("[3, 5]"), "{target}: {err}");
        assert!(!out.exists(), "{target}");
    }
    let bad_args: [&[&str]; 4] = [
        &["--to", "int4", "--group", "48"],
        &["--to", "ternary", "--asym"],
        &["--to", "nf4", "--tensor-type", ".*=int4"],
        &["--to", "fp8", "--tensor-type", ".*=q8_0"],
    ];
    for args in bad_args {
        let mut lines = Vec::new();
        for dry in [true, false] {
            let mut a = vec!["convert", input.to_str().unwrap(), "-o", out.to_str().unwrap()];
            a.extend_from_slice(args);
            if dry {
                a.push("--dry-run");
            }
            let o = lowbit(&a);
            assert_eq!(o.status.code(), Some(2), "{args:?}");
            lines.push(String::from_utf8_lossy(&o.stderr).into_owned());
        }
        assert_eq!(lines[0], lines[1], "{args:?}");
        assert_eq!(lines[0].lines().count(), 1, "{}", lines[0]);
    }
    let o = lowbit(&["convert", input.to_str().unwrap(), "--to", "int4", "-o", "x.gguf"]);
    assert_eq!(o.status.code(), Some(2));
}

/// A rule that matches nothing is a warning; a group that does not divide a row falls back to
/// source precision and the plan says why.
#[test]
fn warnings_and_fallbacks_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = input(dir.path());
    let out = dir.path().join("o.safetensors");
    let o = lowbit(&[
        "convert",
        input.to_str().unwrap(),
        "--to",
        "int4",
        "--group",
        "128",
        "--tensor-type",
        "nothing\\.here=bf16",
        "-o",
        out.to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("warning: the rule `nothing\\.here` matches no tensor"), "{err}");
    let plan = String::from_utf8_lossy(&o.stdout);
    let odd = plan.lines().find(|l| l.contains("packed.odd.weight")).unwrap();
    assert!(
        odd.contains(
            "fallback from int4:g128: row length 33 is not a multiple of the group size 128"
        ),
        "{odd}"
    );
}

/// Presets are recipes: printable, and the printed text converts the same way.
#[test]
fn presets_print_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for preset in ["flux-ternary", "flux-int4", "flux-nf4", "flux-fp8"] {
        let o = lowbit(&[
            "convert",
            "fixtures/flux-tiny-bfl.safetensors",
            "--preset",
            preset,
            "--print-recipe",
        ]);
        assert!(o.status.success(), "{preset}");
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let recipe = dir.path().join(format!("{preset}.toml"));
        std::fs::write(&recipe, &text).unwrap();
        let plan = |args: &[&str]| {
            let mut a = vec![
                "convert",
                "fixtures/flux-tiny-bfl.safetensors",
                "-o",
                "x.safetensors",
                "--dry-run",
            ];
            a.extend_from_slice(args);
            let o = lowbit(&a);
            assert!(o.status.success(), "{preset}: {}", String::from_utf8_lossy(&o.stderr));
            o.stdout
        };
        assert_eq!(plan(&["--preset", preset]), plan(&["--recipe", recipe.to_str().unwrap()]));
    }
    let o = lowbit(&[
        "convert",
        "fixtures/flux-tiny-bfl.safetensors",
        "--preset",
        "flux-ternery",
        "--print-recipe",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("did you mean `flux-ternary`?"));
}
