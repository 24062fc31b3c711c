//! Mixed precision under a budget (`--budget-bits`, `--budget-gb`, `--save-recipe`): the file
//! stays within the budget, a larger budget never costs accuracy, the saved recipe is an ordinary
//! recipe that reproduces the file byte for byte, and an impossible budget is a usage error.

use crate::support::{inspect_json, lowbit, root};

fn convert(out: &std::path::Path, args: &[&str]) -> std::process::Output {
    let f = root().join("fixtures/flux-tiny-bfl.safetensors");
    let mut a = vec!["convert", f.to_str().unwrap(), "-o", out.to_str().unwrap()];
    a.extend_from_slice(args);
    lowbit(&a)
}

/// The budget line's summed output error.
fn summed_error(stderr: &str) -> f64 {
    let line = stderr.lines().find(|l| l.starts_with("budget:")).expect("a budget line");
    let at = line.find("summed output error ").expect("the error") + "summed output error ".len();
    line[at..].split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn budgets_hold_and_their_recipes_reproduce_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut last = f64::MAX;
    for bits in ["7", "9", "12"] {
        let out = dir.path().join(format!("b{bits}.safetensors"));
        let recipe = dir.path().join(format!("b{bits}.toml"));
        let args = ["--to", "svdq-w4a16", "--budget-bits", bits, "--save-recipe"];
        let o = convert(&out, &[&args[..], &[recipe.to_str().unwrap()]].concat());
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{bits}: {err}");
        // One table row per measured layer: 10 SVDQuant and 3 modulation linears.
        assert!(err.lines().filter(|l| l.contains(".weight ")).count() >= 13, "{err}");
        let j = inspect_json(&out);
        let bpw = j["bits_per_weight"].as_f64().unwrap();
        assert!(bpw <= bits.parse::<f64>().unwrap() + 1e-9, "{bits}: {bpw} bits/weight");
        let e = summed_error(&err);
        assert!(e <= last, "a larger budget ({bits}) gave a larger error: {e} > {last}");
        last = e;
        // The saved recipe, re-run without a budget, writes the same bytes.
        let again = dir.path().join(format!("r{bits}.safetensors"));
        let o = convert(&again, &["--recipe", recipe.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap(), "{bits}");
    }
    let out = dir.path().join("none.safetensors");
    // 3 bits: below what the BF16 embedders alone take; 6.3: they fit, the cheapest choice not.
    for (bits, why) in [("3", "cannot change"), ("6.3", "smallest choice needs")] {
        let o = convert(&out, &["--to", "svdq-w4a16", "--budget-bits", bits]);
        assert_eq!(o.status.code(), Some(2));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(why), "{bits}: {err}");
    }
    let o = convert(&out, &["--to", "int4", "--budget-bits", "8"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("the plan has none"));
    assert!(!out.exists());
}
