//! Tensors that span many chunks and parallel tasks convert to exactly `quantize_ref` of their
//! source rows, for every writable type.
//!
//! `write_gguf` cuts each tensor into chunks of whole rows ([`lowbit_convert::CHUNK_BYTES`] of
//! output by default) and each chunk into tasks that rayon quantizes in parallel. Here the
//! library runs with tiny chunks (one row each), odd-sized ones (a few tasks each, the last one
//! partial) and the default, on three threads; the expected bytes are the reference quantizer
//! applied to the whole tensor, whose BF16 source values are decoded by the `half` crate, never by
//! lowbit's reader. The CLI check does the same for full-size FLUX tensors that span several
//! default chunks.

use crate::support::{
    bf16_values, flux_3072, flux_3072_gguf, outlier_weights, read_at, safetensors_entries,
};
use lowbit_checkpoint::{Checkpoint, StorageType};
use lowbit_convert::{CHUNK_BYTES, Options, Plan, Recipe, write_gguf};
use lowbit_dtype::GgmlType;
use lowbit_fixtures::flux::GenTensor;
use lowbit_fixtures::write::safetensors_bytes;
use std::path::Path;

/// Every type `--to gguf:TYPE` writes (`formats/recipe.md`).
const TYPES: [&str; 15] = [
    "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k",
    "q6_k", "tq1_0", "tq2_0",
];

/// Chunk sizes: one row per chunk; an odd size (for the quantized types a chunk is two to eight
/// tasks and ends mid-task, for the dense ones part of a task); the default, where each tensor
/// here is one chunk of up to 16 tasks.
const CHUNK_SIZES: [u64; 3] = [1, 100_003, CHUNK_BYTES];

/// The test's weights: [`outlier_weights`] with outlier columns ×20.
fn weights(name: &str, rows: u64, cols: u64) -> GenTensor {
    outlier_weights(7, name, rows, cols, 20.0)
}

/// Names outside any known architecture, so the type of every 2-D tensor is the target's
/// (`formats/recipe.md`, rules 1 and 5); row lengths are multiples of 256, so no fallback.
fn input(dir: &Path) -> (std::path::PathBuf, Vec<GenTensor>) {
    let mut bias = weights("chunks.bias", 1, 1500);
    bias.shape = vec![1500];
    let tensors = vec![
        weights("chunks.tall.weight", 4096, 256),
        weights("chunks.wide.weight", 700, 768),
        bias,
    ];
    let path = dir.join("chunks.safetensors");
    std::fs::write(&path, safetensors_bytes(&tensors)).unwrap();
    (path, tensors)
}

/// `quantize_ref(ty, source values)`, the bytes a tensor must hold.
fn expected(ty: GgmlType, values: &[f32], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    lowbit_quant::quantize_ref(ty, values, &mut out)
        .unwrap_or_else(|e| panic!("{ty:?}: output size {len} does not fit: {e}"));
    out
}

fn write(ckpt: &Checkpoint, target: &str, out: &Path, threads: usize, chunk_bytes: u64) {
    let recipe = Recipe::build(None, Some(&format!("gguf:{target}")), &[]).unwrap();
    let plan = Plan::new(ckpt, &recipe, None).unwrap();
    let opts = Options {
        threads,
        allow_non_finite: false,
        cancel: None,
        progress: None,
        source_name: "chunks.safetensors".to_owned(),
        chunk_bytes,
        force_extension: false,
        svdq: None,
    };
    write_gguf(ckpt, &plan, &recipe, out, &opts).unwrap();
}

/// Every writable type, written through many chunks on three threads, holds exactly
/// `quantize_ref` of the source values (F32 for the 1-D tensor, as rule 1 says).
#[test]
fn every_type_through_many_chunks_equals_quantize_ref_of_the_source() {
    let writable: std::collections::BTreeSet<String> = GgmlType::ALL
        .iter()
        .map(|t| t.name().to_lowercase())
        .filter(|n| Recipe::build(None, Some(&format!("gguf:{n}")), &[]).is_ok())
        .collect();
    let listed = TYPES.iter().map(|t| (*t).to_owned()).collect();
    assert_eq!(writable, listed, "a writable type was added or removed: update TYPES");
    let dir = tempfile::tempdir().unwrap();
    let (input, tensors) = input(dir.path());
    let ckpt = Checkpoint::open(&input).unwrap();
    for target in TYPES {
        let ty = GgmlType::from_name(target).unwrap();
        let want: Vec<(&str, GgmlType, Vec<f32>)> = tensors
            .iter()
            .map(|t| {
                let out_ty = if t.shape.len() == 1 { GgmlType::F32 } else { ty };
                (t.name.as_str(), out_ty, bf16_values(&t.data))
            })
            .collect();
        for chunk_bytes in CHUNK_SIZES {
            let out = dir.path().join(format!("{target}-{chunk_bytes}.gguf"));
            write(&ckpt, target, &out, 3, chunk_bytes);
            let gguf = Checkpoint::open(&out).unwrap();
            assert_eq!(gguf.tensors().len(), want.len(), "{target}");
            for (name, out_ty, values) in &want {
                let t = gguf.tensor(name).unwrap();
                assert_eq!(t.ty, StorageType::Ggml(*out_ty), "{target}: {name}");
                let raw = gguf.raw(t);
                assert!(
                    raw == expected(*out_ty, values, raw.len()).as_slice(),
                    "{target}, chunks of {chunk_bytes} bytes: {name} differs from quantize_ref"
                );
            }
            std::fs::remove_file(&out).unwrap();
        }
    }
}

/// The library writes the same bytes for any thread count and chunk size.
#[test]
fn library_output_does_not_depend_on_threads_or_chunk_size() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = input(dir.path());
    let ckpt = Checkpoint::open(&input).unwrap();
    for target in ["q4_k", "q8_0", "tq1_0"] {
        let reference = dir.path().join(format!("{target}.gguf"));
        write(&ckpt, target, &reference, 1, CHUNK_BYTES);
        let reference = std::fs::read(&reference).unwrap();
        for threads in [2, 3, 8] {
            for chunk_bytes in CHUNK_SIZES {
                let out = dir.path().join("out.gguf");
                write(&ckpt, target, &out, threads, chunk_bytes);
                assert!(
                    std::fs::read(&out).unwrap() == reference,
                    "{target}: {threads} threads, chunks of {chunk_bytes} bytes"
                );
            }
        }
    }
}

/// Full-size FLUX tensors whose output spans several default 32 MB chunks, written by the CLI,
/// equal `quantize_ref` of their source rows: `linear1` of the single block (66 M weights: three
/// chunks in Q8_0, two in Q4_K) and the final modulation (two chunks of BF16).
#[test]
fn cli_tensors_spanning_default_chunks_equal_quantize_ref() {
    let source = safetensors_entries(flux_3072());
    // formats/recipe.md: `final_layer` keeps the source's BF16, other weights take the target's
    // type (Q4_K_M bumps only fused qkv).
    let cases = [
        ("single_blocks.0.linear1.weight", [("q8_0", GgmlType::Q8_0), ("q4_k_m", GgmlType::Q4_K)]),
        (
            "final_layer.adaLN_modulation.1.weight",
            [("q8_0", GgmlType::BF16), ("q4_k_m", GgmlType::BF16)],
        ),
    ];
    for (name, targets) in cases {
        let values = bf16_values(&read_at(flux_3072(), source[name].bytes.clone()));
        for (target, ty) in targets {
            let gguf = Checkpoint::open(flux_3072_gguf(target)).unwrap();
            let t = gguf.tensor(name).unwrap();
            assert_eq!(t.ty, StorageType::Ggml(ty), "{target}: {name}");
            assert!(t.bytes > CHUNK_BYTES, "{target}: {name} fits one chunk");
            let raw = gguf.raw(t);
            assert!(raw == expected(ty, &values, raw.len()).as_slice(), "{target}: {name}");
        }
    }
}
