//! The calibration statistics of `formats/calibration.md`: `scripts/collect_stats.py` on a tiny
//! random diffusers FLUX transformer, checked against an independent numpy reference
//! (`tests/interop/collect_stats_check.py`), then read by `lowbit_convert::Calibration` and
//! compared with the file's own tensors and the tiny model's weight shapes.

use crate::support::{read_at, run_torch_script, safetensors_entries};
use lowbit_arch::flux::diffusers_to_bfl;
use lowbit_convert::Calibration;
use std::collections::BTreeMap;
use std::path::Path;

/// Every F32 tensor of `path`, decoded by this test (not by the reader under test).
fn f32_tensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    safetensors_entries(path)
        .into_iter()
        .map(|(name, e)| {
            assert_eq!(e.dtype, "F32", "{name}");
            let bytes = read_at(path, e.bytes);
            let values = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()));
            (name, values.collect())
        })
        .collect()
}

fn max_of(tensors: &BTreeMap<String, Vec<f32>>, names: &[&str]) -> Vec<f32> {
    let mut out = tensors[names[0]].clone();
    for n in &names[1..] {
        assert_eq!(tensors[*n].len(), out.len(), "{n}");
        for (a, b) in out.iter_mut().zip(&tensors[*n]) {
            *a = a.max(*b);
        }
    }
    out
}

#[test]
fn calibration_stats_of_a_tiny_flux_are_collected_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.safetensors");
    let model = dir.path().join("model.safetensors");
    let report =
        run_torch_script("collect_stats_check.py", &[stats.as_os_str(), model.as_os_str()]);
    let report: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(report["failures"], serde_json::json!([]), "{report}");

    let calib = Calibration::open(&stats).unwrap();
    assert_eq!(calib.groups(), 2);
    assert_eq!(calib.boundaries(), [1000.0, 500.0, 0.0]);
    assert_eq!(calib.path(), stats);
    let meta: serde_json::Value = serde_json::from_str(calib.metadata_json()).unwrap();
    assert_eq!(meta["naming"], "diffusers");
    assert_eq!(meta["calls"], 7);

    let raw = f32_tensors(&stats);
    let expect = |bfl: &str, parts: &[&str]| {
        assert_eq!(calib.absmax(bfl), Some(&max_of(&raw, parts)[..]), "{bfl}");
    };
    expect("double_blocks.0.img_attn.qkv.weight", &["transformer_blocks.0.attn.to_q"]);
    expect(
        "double_blocks.0.txt_attn.qkv.weight",
        &["transformer_blocks.0.attn.add_q_proj", "transformer_blocks.0.attn.add_k_proj"],
    );
    expect(
        "single_blocks.0.linear1.weight",
        &[
            "single_transformer_blocks.0.attn.to_q",
            "single_transformer_blocks.0.attn.to_k",
            "single_transformer_blocks.0.attn.to_v",
            "single_transformer_blocks.0.proj_mlp",
        ],
    );
    expect("single_blocks.0.linear2.weight", &["single_transformer_blocks.0.proj_out"]);
    expect("double_blocks.0.img_mod.lin.weight", &["transformer_blocks.0.norm1.linear"]);
    expect("final_layer.linear.weight", &["proj_out"]);
    expect("final_layer.adaLN_modulation.1.weight", &["norm_out.linear"]);
    // q, k and v read the same input: the max over them is each one of them.
    assert_eq!(raw["transformer_blocks.0.attn.to_q"], raw["transformer_blocks.0.attn.to_v"]);

    // Every 2-D weight of the model, in BFL naming, has statistics of its column count.
    let mut checked = 0;
    for (name, e) in safetensors_entries(&model) {
        if e.shape.len() != 2 {
            continue;
        }
        let (bfl, _) = diffusers_to_bfl(&name).unwrap_or_else(|| panic!("{name} is not FLUX"));
        let values = calib.absmax(&bfl).unwrap_or_else(|| panic!("no statistics for {bfl}"));
        assert_eq!(values.len() as u64, 2 * e.shape[1], "{name} -> {bfl}: shape {:?}", e.shape);
        checked += 1;
    }
    assert_eq!(checked, 30, "the tiny model's nn.Linear weights");
}
