//! Data safety of `lowbit convert`, one test per way it used to go wrong: the output checked
//! before any work and never an input, no partial file after an error, Ctrl-C or `kill -9`,
//! leftovers of a killed run cleaned up by the next, bounded threads, and usage errors that exit
//! with 2 and say what would have been right.

use crate::support::{lowbit, root};
use lowbit_fixtures::flux::{FluxConfig, generate_bfl};
use lowbit_fixtures::write::{bf16_header, safetensors_bytes, sharded, sparse_file};
use lowbit_fixtures::{FLUX_TINY_BFL, SEED};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn fixture() -> PathBuf {
    root().join("fixtures").join(FLUX_TINY_BFL)
}

fn convert(input: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["convert", input.to_str().unwrap(), "-o", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    lowbit(&args)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The one error line of a failed run with exit code `code`.
fn error_line(o: &Output, code: i32) -> String {
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(code), "{e}");
    assert!(e.starts_with("error: ") && e.lines().count() == 1, "one line: {e}");
    assert!(!e.contains("panicked"), "{e}");
    e
}

/// The tiny fixture with a NaN in its last weight: a conversion that started working before
/// checking its output would stop on the NaN, one that checks first names the output.
fn with_late_nan(dir: &Path) -> PathBuf {
    let mut t = generate_bfl(&FluxConfig::TINY, SEED);
    let w = t.iter_mut().find(|t| t.name == "final_layer.linear.weight").unwrap();
    w.data[..2].copy_from_slice(&half::bf16::NAN.to_le_bytes());
    let path = dir.join("late-nan.safetensors");
    std::fs::write(&path, safetensors_bytes(&t)).unwrap();
    path
}

/// Unknown targets, types and formats, bad rules, recipes, thread counts and extensions are
/// usage errors: exit code 2, one line, the nearest valid name when there is one, no `options:`.
#[test]
fn usage_errors_exit_2_and_suggest() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.gguf");
    let bad_recipe = dir.path().join("bad.toml");
    std::fs::write(&bad_recipe, "to = \"gguf:q8_0\"\nbogus = 1\n").unwrap();
    let missing = dir.path().join("missing.toml");
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (vec!["--to".into(), "gguf:q4km".into()], vec!["`q4km`", "did you mean `q4_k_m`?"]),
        (vec!["--to".into(), "gguf:q8-0".into()], vec!["did you mean `q8_0`?"]),
        (vec!["--to".into(), "onnx:q8_0".into()], vec!["unknown output format `onnx`"]),
        (
            vec!["--to".into(), "gguf:q8_0".into(), "--tensor-type".into(), "x=q9_k".into()],
            vec!["unknown tensor type `q9_k`", "did you mean"],
        ),
        (
            vec!["--to".into(), "gguf:q8_0".into(), "--tensor-type".into(), "(=q8_0".into()],
            vec!["bad regex `(`", "unclosed group"],
        ),
        (
            vec!["--to".into(), "gguf:q8_0".into(), "--tensor-type".into(), "nope".into()],
            vec!["`nope` is not REGEX=TYPE"],
        ),
        (vec![], vec!["no target"]),
        (vec!["--recipe".into(), bad_recipe.to_str().unwrap().into()], vec!["bad.toml", "bogus"]),
        (
            vec!["--recipe".into(), missing.to_str().unwrap().into()],
            vec!["missing.toml", "cannot read the recipe"],
        ),
        (vec!["--recipe".into(), "/dev/zero".into()], vec!["/dev/zero", "not a regular file"]),
        (
            vec!["--to".into(), "gguf:q8_0".into(), "--threads".into(), "100000".into()],
            vec!["--threads", "at most 1024"],
        ),
    ];
    for (args, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = convert(&fixture(), &out, &args);
        let e = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(!e.contains("options:") && !e.contains("panicked"), "{args:?}: {e}");
        for w in want {
            assert!(e.contains(w), "{args:?}: {e} lacks {w:?}");
        }
    }
    assert!(entries(dir.path()).iter().all(|n| n.ends_with(".toml")), "nothing written");
}

/// `-o out.safetensors --to gguf:…` would write a GGUF under a safetensors name; it is refused
/// unless `--force-extension`, and such a file is then read by its magic bytes, not its name.
#[test]
fn extensions_must_match_the_target_and_formats_are_read_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    let e = error_line(&convert(&fixture(), &out, &["--to", "gguf:q8_0"]), 2);
    assert!(
        e.contains("out.safetensors") && e.contains(".gguf") && e.contains("--force-extension")
    );
    let dry = convert(&fixture(), &out, &["--to", "gguf:q8_0", "--dry-run"]);
    assert_eq!(dry.stderr, convert(&fixture(), &out, &["--to", "gguf:q8_0"]).stderr);
    assert!(entries(dir.path()).is_empty());

    let o = convert(&fixture(), &out, &["--to", "gguf:q8_0", "--force-extension"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = crate::support::inspect_json(&out);
    assert_eq!(r["format"], "gguf");
    assert_eq!(r["tensors"].as_array().unwrap().len(), 52);
    // And a safetensors file named .gguf is read as safetensors.
    let st = dir.path().join("really-safetensors.gguf");
    std::fs::copy(fixture(), &st).unwrap();
    assert_eq!(crate::support::inspect_json(&st)["format"], "safetensors");
}

/// The output location is checked before any work: a directory, a missing directory or an
/// unusable extension is reported instead of the NaN that the data would hit, and the message
/// names the output path once, never the temporary file.
#[test]
fn output_is_checked_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let input = with_late_nan(dir.path());
    let o = convert(&input, &dir.path().join("out.gguf"), &["--to", "gguf:q8_0"]);
    assert!(error_line(&o, 1).contains("non-finite"), "the input does hit a NaN");

    let taken = dir.path().join("taken.gguf");
    std::fs::create_dir(&taken).unwrap();
    for dry in [false, true] {
        let extra: &[&str] =
            if dry { &["--to", "gguf:q8_0", "--dry-run"] } else { &["--to", "gguf:q8_0"] };
        let e = error_line(&convert(&input, &taken, extra), 1);
        assert!(e.contains("taken.gguf: is a directory"), "{e}");

        let nowhere = dir.path().join("no/such/dir/out.gguf");
        let e = error_line(&convert(&input, &nowhere, extra), 1);
        let shown = nowhere.display().to_string();
        assert_eq!(e.matches(&shown).count(), 1, "names the output once: {e}");
        assert!(e.contains("No such file or directory") && !e.contains("os error"), "{e}");
        assert!(!e.contains("late-nan") && !e.contains(".partial"), "{e}");
    }
    assert_eq!(entries(dir.path()), ["late-nan.safetensors", "taken.gguf"]);
}

/// No spelling of an input path can be the output: the index of a sharded checkpoint, a shard,
/// a hard link to one, a path through `..`; all refused before any work, inputs untouched.
#[test]
fn output_is_never_an_input_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for (name, bytes) in sharded(&generate_bfl(&FluxConfig::TINY, SEED), 2) {
        std::fs::write(model.join(name), bytes).unwrap();
    }
    let index = model.join("diffusion_pytorch_model.safetensors.index.json");
    let shard = model.join("diffusion_pytorch_model-00001-of-00002.safetensors");
    let link = dir.path().join("link.gguf");
    std::fs::hard_link(&shard, &link).unwrap();
    let before: Vec<Vec<u8>> =
        entries(&model).iter().map(|n| std::fs::read(model.join(n)).unwrap()).collect();
    let dotted = model.join("../model").join(shard.file_name().unwrap());
    let outs: [(&Path, &[&str]); 4] = [
        (&index, &["--force-extension"]),
        (&shard, &["--force-extension"]),
        (&link, &[]),
        (&dotted, &["--force-extension"]),
    ];
    for input in [index.as_path(), model.as_path()] {
        for (out, extra) in outs {
            let mut args = vec!["--to", "gguf:q8_0"];
            args.extend_from_slice(extra);
            let e = error_line(&convert(input, out, &args), 1);
            assert!(e.contains("never overwrites its input"), "{e}");
            args.push("--dry-run");
            assert!(error_line(&convert(input, out, &args), 1).contains("never overwrites"));
        }
    }
    let after: Vec<Vec<u8>> =
        entries(&model).iter().map(|n| std::fs::read(model.join(n)).unwrap()).collect();
    assert_eq!(before, after, "inputs untouched");
    assert_eq!(entries(dir.path()), ["link.gguf", "model"]);
}

/// A write that fails part-way (a file-size limit, as a full disk would) leaves nothing, and
/// says why once.
#[test]
fn failed_writes_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.gguf");
    let script = format!(
        "ulimit -f 512; trap '' XFSZ; exec '{}' convert '{}' -o '{}' --to gguf:bf16",
        env!("CARGO_BIN_EXE_lowbit"),
        fixture().display(),
        out.display()
    );
    let o = Command::new("sh").arg("-c").arg(script).output().unwrap();
    let e = error_line(&o, 1);
    assert!(e.contains("out.gguf") && e.matches("too large").count() == 1, "{e}");
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

/// The packed writer too: a failed write leaves nothing, and an NF4 model folder is never the
/// input's own folder (its `config.json` would be replaced).
#[test]
fn packed_outputs_are_safe_too() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    let script = format!(
        "ulimit -f 512; trap '' XFSZ; exec '{}' convert '{}' -o '{}' --to int4",
        env!("CARGO_BIN_EXE_lowbit"),
        fixture().display(),
        out.display()
    );
    let o = Command::new("sh").arg("-c").arg(script).output().unwrap();
    let e = error_line(&o, 1);
    assert!(e.contains("out.safetensors") && e.matches("too large").count() == 1, "{e}");
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));

    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for (name, bytes) in sharded(&generate_bfl(&FluxConfig::TINY, SEED), 2) {
        std::fs::write(model.join(name), bytes).unwrap();
    }
    std::fs::write(model.join("config.json"), "{}").unwrap();
    let before = entries(&model);
    for dry in [false, true] {
        let mut args = vec!["--to", "nf4", "--names", "diffusers"];
        if dry {
            args.push("--dry-run");
        }
        let e = error_line(&convert(&model, &model, &args), 1);
        assert!(e.contains("never writes into its input's folder"), "{e}");
    }
    assert_eq!(entries(&model), before);
    assert_eq!(std::fs::read_to_string(model.join("config.json")).unwrap(), "{}");
}

/// A sparse FLUX.1-dev-sized input: 11.9 B weights, far more than a few seconds of work.
fn big_input(dir: &Path) -> PathBuf {
    let input = dir.join("flux1-dev-sparse.safetensors");
    let (header, data_len) = bf16_header(&FluxConfig::DEV.tensors());
    sparse_file(&input, &header, data_len).unwrap();
    input
}

fn spawn_convert(input: &Path, out: &Path) -> std::process::Child {
    spawn_convert_to(input, out, "gguf:q4_k")
}

fn spawn_convert_to(input: &Path, out: &Path, target: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_lowbit"))
        .args(["convert", input.to_str().unwrap(), "-o", out.to_str().unwrap(), "--to", target])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// The temporary files of conversions writing `out` in `dir`.
fn partials(dir: &Path) -> Vec<String> {
    entries(dir)
        .into_iter()
        .filter(|n| n.starts_with(".out.") && n.contains(".lowbit-") && n.ends_with(".partial"))
        .collect()
}

/// Waits until a conversion has its temporary file and has written some data into it.
fn wait_mid_way(dir: &Path) {
    for _ in 0..600 {
        if let Some(p) = partials(dir).first() {
            let blocks =
                std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(dir.join(p)).unwrap());
            // fallocate reserves the whole file at once; give the conversion a second beyond it.
            if blocks > 0 {
                std::thread::sleep(std::time::Duration::from_millis(1000));
                return;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the conversion never started writing: {:?}", entries(dir));
}

/// Ctrl-C stops the conversion with exit code 130 and leaves nothing behind, GGUF or packed.
#[test]
fn interrupt_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = big_input(dir.path());
    for (target, out) in [("gguf:q4_k", "out.gguf"), ("ternary", "out.safetensors")] {
        let out = dir.path().join(out);
        let child = spawn_convert_to(&input, &out, target);
        wait_mid_way(dir.path());
        let killed = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
        assert!(killed.success());
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(130), "{target}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains("interrupted"), "{target}");
        assert_eq!(entries(dir.path()), ["flux1-dev-sparse.safetensors"], "{target}");
    }
}

/// `kill -9` mid-way: nothing at the output path, a temporary file whose name says what it is,
/// and the next run for the same output removes it.
#[test]
fn kill_9_leaves_no_output_and_the_next_run_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let input = big_input(dir.path());
    let out = dir.path().join("out.gguf");
    let mut child = spawn_convert(&input, &out);
    wait_mid_way(dir.path());
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
    assert!(!out.exists(), "no file at the output path");
    let left = partials(dir.path());
    assert_eq!(left.len(), 1, "{:?}", entries(dir.path()));
    let size = std::fs::metadata(dir.path().join(&left[0])).unwrap().len();
    assert!(size > 1 << 30, "the killed run had a large file under way ({size} bytes)");

    // A second conversion to the same output, alive while a third starts: the third removes
    // the dead run's file but not the live run's.
    let mut live = spawn_convert(&input, &out);
    wait_mid_way(dir.path());
    let o = convert(&fixture(), &out, &["--to", "gguf:q8_0"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let now = partials(dir.path());
    assert!(!now.contains(&left[0]), "the dead run's file is gone: {now:?}");
    assert_eq!(now.len(), 1, "the live run's file stays: {now:?}");
    live.kill().unwrap();
    live.wait().unwrap();
    let o = convert(&fixture(), &out, &["--to", "gguf:q8_0"]);
    assert!(o.status.success());
    assert!(partials(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}
