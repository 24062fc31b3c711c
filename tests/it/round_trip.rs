//! Every packed target round-trips through the other commands: `inspect` shows each packed
//! weight once with its scheme and the bits of all its stored tensors, `dequantize` decodes it,
//! and `diff` against the original reports what numpy computes from the dequantized values.
//!
//! The bytes of each scheme are checked against an outside implementation in its own file
//! (`nf4.rs`, `fp8.rs`, `nvfp4.rs`, `ternary.rs`, `int4.rs`, `runtimes.rs`); this file checks
//! that the commands agree with each other and with the file's own header.

use crate::support::{convert_ok, inspect_json, lowbit, run_python, safetensors_entries};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

fn close(got: &Value, want: f64, what: &str) {
    let got = got.as_f64().unwrap_or_else(|| panic!("{what}: {got}"));
    assert!((got - want).abs() <= 1e-9 * want.abs().max(1e-30), "{what}: {got} vs {want}");
}

#[test]
fn convert_inspect_dequantize_diff_agree() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = crate::support::root().join("fixtures/flux-tiny-bfl.safetensors");
    for target in [
        "ternary",
        "ternary:tensor",
        "bitnet",
        "int4:g32:asym",
        "nf4",
        "nf4:dq",
        "fp8",
        "comfy:fp8",
        "bfl:fp8",
        "comfy:nvfp4",
        "bfl:nvfp4",
    ] {
        let name = target.replace(':', "-");
        let packed = dir.path().join(format!("{name}.safetensors"));
        convert_ok(&fixture, &packed, &["--to", target]);

        // inspect: one row per logical weight, its scheme, and the bytes of every stored part.
        let entries = safetensors_entries(&packed);
        let report = inspect_json(&packed);
        let schemes: BTreeMap<String, String> =
            serde_json::from_str(&crate::support::safetensors_metadata(&packed)["lowbit.schemes"])
                .unwrap();
        assert!(!schemes.is_empty(), "{target}: nothing packed");
        let rows = report["tensors"].as_array().unwrap();
        let mut seen = 0;
        for row in rows {
            let n = row["name"].as_str().unwrap();
            let Some(scheme) = schemes.get(n) else { continue };
            seen += 1;
            assert_eq!(row["scheme"], scheme.as_str(), "{target}: {n}");
            let stored: Vec<&str> =
                row["stored"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
            let bytes: u64 =
                stored.iter().map(|s| entries[*s].bytes.end - entries[*s].bytes.start).sum();
            assert_eq!(row["bytes"], bytes, "{target}: {n}");
            let params = row["params"].as_u64().unwrap();
            close(&row["bits_per_weight"], bytes as f64 * 8.0 / params as f64, n);
        }
        assert_eq!(seen, schemes.len(), "{target}: every packed weight is one row");
        assert_eq!(report["stored_tensors"], entries.len(), "{target}");

        // dequantize, then diff: the metrics are numpy's over the dequantized values.
        let plain = dir.path().join(format!("{name}-f32.safetensors"));
        let o = lowbit(&[
            "dequantize",
            packed.to_str().unwrap(),
            "-o",
            plain.to_str().unwrap(),
            "--dtype",
            "f32",
        ]);
        assert!(o.status.success(), "{target}: {}", String::from_utf8_lossy(&o.stderr));
        let o = lowbit(&["diff", packed.to_str().unwrap(), fixture.to_str().unwrap(), "--json"]);
        assert!(o.status.success(), "{target}: {}", String::from_utf8_lossy(&o.stderr));
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        let want: Value =
            serde_json::from_str(&run_python("diff_metrics.py", &[&plain, Path::new(&fixture)]))
                .unwrap();
        let tensors = r["tensors"].as_array().unwrap();
        assert_eq!(tensors.len(), want.as_object().unwrap().len(), "{target}");
        for t in tensors {
            let n = t["name"].as_str().unwrap();
            for key in ["sq_error", "sq_reference", "max_abs_error"] {
                close(&t[key], want[n][key].as_f64().unwrap(), &format!("{target}: {n} {key}"));
            }
            let lossy = want[n]["sq_error"].as_f64().unwrap() > 0.0;
            assert_eq!(lossy, schemes.contains_key(n), "{target}: {n} is lossy iff packed");
        }
    }
}
