//! `cargo xtask fuzz`: seeds the corpora of the cargo-fuzz targets in `fuzz/` and runs them.
//!
//! `cargo xtask fuzz-seed` only writes the seeds; `cargo xtask fuzz [TARGET…] [--seconds N |
//! --runs N] [--jobs J] [--keep-going] [--smoke] [--asan]` seeds, builds every target once, runs
//! each in turn with `cargo fuzz run`, and ends with one line per target: executions, executions
//! per second, coverage (libFuzzer's `cov:` and `ft:`), corpus size and crash files. It exits
//! non-zero when a run found a new crash.
//!
//! Corpora live in `target/fuzz/corpus/<target>/` and grow from run to run; crash inputs land in
//! `fuzz/artifacts/<target>/`, where cargo-fuzz puts them. Seeds are every file of
//! `fixtures/bad/`, the tiny FLUX fixture, a few-kilobyte valid checkpoint (single, sharded, and
//! converted to GGUF by `lowbit convert`), the example recipe of `formats/recipe.md`, and for
//! `checkpoint_open` each sharded fixture packed in that target's input format.
//!
//! Targets are built without a sanitizer by default: the readers are safe Rust, so panics are
//! what we look for, and AddressSanitizer only slows that search. `--asan` builds with it.
//! A crash ends a target's run, unless `--keep-going` or `--jobs J` with J > 1: those run it in
//! libFuzzer's fork mode with J worker processes, which saves each crash input and goes on.
//! cargo-fuzz needs nightly flags; `RUSTC_BOOTSTRAP=1` lets the stable toolchain accept them.

use anyhow::{Context, bail};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Every target in `fuzz/fuzz_targets/`.
const TARGETS: [&str; 4] = ["safetensors_header", "gguf_header", "checkpoint_open", "recipe"];

/// File names `checkpoint_open` can write, in the order of its `NAMES` (keep the two equal).
const CKPT_NAMES: [&str; 8] = [
    "model.safetensors.index.json",
    "a.safetensors",
    "b.safetensors",
    "c.gguf",
    "../x.safetensors",
    "../a.safetensors",
    "other.safetensors.index.json",
    "d.sft",
];

/// Seconds per target of `--smoke`.
const SMOKE_SECONDS: u64 = 20;

/// How long each target runs.
enum Budget {
    Seconds(u64),
    Runs(u64),
}

/// What the final statistics of one run said.
#[derive(Default)]
struct Stats {
    execs: Option<u64>,
    exec_per_sec: Option<u64>,
    cov: Option<u64>,
    ft: Option<u64>,
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn corpus_dir(root: &Path, target: &str) -> PathBuf {
    root.join("target/fuzz/corpus").join(target)
}

/// `cargo xtask fuzz-seed`.
pub(crate) fn seed_only() -> anyhow::Result<()> {
    let root = crate::workspace_root();
    seed(&root)?;
    for t in TARGETS {
        println!(
            "{:<20} {} files in {}",
            t,
            count(&corpus_dir(&root, t)),
            corpus_dir(&root, t).display()
        );
    }
    Ok(())
}

/// `cargo xtask fuzz …`.
pub(crate) fn run(args: &[&str]) -> anyhow::Result<()> {
    let mut targets = Vec::new();
    let mut budget = Budget::Seconds(60);
    let mut jobs = 1u64;
    let mut asan = false;
    let mut keep_going = false;
    let mut it = args.iter();
    while let Some(&arg) = it.next() {
        let mut number = |what: &str| -> anyhow::Result<u64> {
            let v = it.next().with_context(|| format!("{what} needs a number"))?;
            v.parse().with_context(|| format!("{what} {v}: not a number"))
        };
        match arg {
            "--seconds" => budget = Budget::Seconds(number(arg)?),
            "--runs" => budget = Budget::Runs(number(arg)?),
            "--jobs" => jobs = number(arg)?.max(1),
            "--smoke" => budget = Budget::Seconds(SMOKE_SECONDS),
            "--asan" => asan = true,
            "--keep-going" => keep_going = true,
            t if TARGETS.contains(&t) => targets.push(t),
            other => bail!("unknown fuzz argument `{other}`; targets are {}", TARGETS.join(" ")),
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    let fork = jobs > 1 || keep_going;
    if fork && matches!(budget, Budget::Runs(_)) {
        bail!("--runs counts one process's executions; use --seconds with --jobs or --keep-going");
    }
    let have_fuzz = Command::new(cargo()).args(["fuzz", "--version"]).output();
    if !have_fuzz.is_ok_and(|o| o.status.success()) {
        bail!("cargo-fuzz is not installed: run `cargo install cargo-fuzz`, then this again");
    }

    let root = crate::workspace_root();
    let start = Instant::now();
    seed(&root)?;
    let sanitizer = if asan { "address" } else { "none" };
    let fuzz = || {
        let mut c = Command::new(cargo());
        c.current_dir(&root).env("RUSTC_BOOTSTRAP", "1").arg("fuzz");
        c
    };
    crate::ci::sh(fuzz().args(["build", "--sanitizer", sanitizer]))?;
    eprintln!("fuzz: seeded and built in {:.0} s", start.elapsed().as_secs_f64());

    let mut rows = Vec::new();
    let mut new_crashes = 0;
    for target in &targets {
        let corpus = corpus_dir(&root, target);
        let artifacts = root.join("fuzz/artifacts").join(target);
        let before = files(&artifacts);
        let mut cmd = fuzz();
        cmd.args(["run", "--sanitizer", sanitizer, target]).arg(&corpus).arg("--");
        match budget {
            Budget::Seconds(s) => cmd.arg(format!("-max_total_time={s}")),
            Budget::Runs(n) => cmd.arg(format!("-runs={n}")),
        };
        cmd.args(["-print_final_stats=1", "-timeout=10"]);
        if matches!(*target, "safetensors_header" | "gguf_header") {
            // Big enough for the tiny FLUX fixture's 5 KB header, small enough to stay fast.
            cmd.arg("-max_len=65536");
        }
        if fork {
            cmd.arg(format!("-fork={jobs}")).args(["-ignore_crashes=1", "-ignore_timeouts=1"]);
        }
        let t0 = Instant::now();
        let (stats, ok) = run_one(&mut cmd)?;
        let secs = t0.elapsed().as_secs_f64();
        let new: Vec<PathBuf> = files(&artifacts).difference(&before).cloned().collect();
        new_crashes += new.len();
        for p in &new {
            eprintln!(
                "fuzz: {target}: new crash input {}: {}",
                p.display(),
                triage(&root, target, p)
            );
        }
        if !ok && new.is_empty() {
            bail!("cargo fuzz run {target} failed without writing a crash input");
        }
        rows.push((*target, stats, secs, count(&corpus), files(&artifacts).len(), new.len()));
    }

    println!(
        "\n{:<20} {:>12} {:>9} {:>7} {:>7} {:>8} {:>8}",
        "target", "executions", "exec/s", "cov", "ft", "corpus", "crashes"
    );
    let show = |v: Option<u64>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
    for (target, s, secs, corpus, crashes, new) in &rows {
        // Fork mode's exec/s is the last job's; its average is the count over the time.
        let average = s.execs.map(|e| (e as f64 / secs) as u64);
        let rate = if fork { average } else { s.exec_per_sec.filter(|&r| r > 0).or(average) };
        println!(
            "{:<20} {:>12} {:>9} {:>7} {:>7} {:>8} {:>8}{}",
            target,
            show(s.execs),
            show(rate),
            show(s.cov),
            show(s.ft),
            corpus,
            crashes,
            if *new > 0 { format!(" ({new} new)") } else { String::new() }
        );
    }
    println!("total {:.0} s including seeding and the build", start.elapsed().as_secs_f64());
    if new_crashes > 0 {
        bail!(
            "{new_crashes} new crash input(s) under fuzz/artifacts/; reproduce one with `RUSTC_BOOTSTRAP=1 cargo fuzz run -s {sanitizer} TARGET FILE`"
        );
    }
    Ok(())
}

/// Runs one `cargo fuzz run`, echoing libFuzzer's output but for its per-input NEW/REDUCE lines,
/// and the dictionary it recommends at the end, and returns its final statistics and whether it exited cleanly.
fn run_one(cmd: &mut Command) -> anyhow::Result<(Stats, bool)> {
    eprintln!("$ {cmd:?}");
    let mut child =
        cmd.stderr(Stdio::piped()).spawn().with_context(|| format!("cannot start {cmd:?}"))?;
    let mut stats = Stats::default();
    let stderr = child.stderr.take().context("piped stderr")?;
    let mut in_dictionary = false;
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        parse_line(&line, &mut stats);
        if line.starts_with("###### Recommended dictionary") {
            in_dictionary = true;
        }
        if !(in_dictionary || line.contains(" NEW ") || line.contains(" REDUCE ")) {
            eprintln!("{line}");
        }
        if line.starts_with("###### End of recommended dictionary") {
            in_dictionary = false;
        }
    }
    Ok((stats, child.wait()?.success()))
}

/// Runs one crash input again and returns where it panicked and the message, for the log.
fn triage(root: &Path, target: &str, input: &Path) -> String {
    // cargo-fuzz builds into `fuzz/target/<host triple>/release/`.
    let bin = files(&root.join("fuzz/target"))
        .into_iter()
        .map(|d| d.join("release").join(target))
        .find(|b| b.is_file());
    let Some(Ok(out)) = bin
        .map(|b| Command::new(b).arg("-timeout=10").arg(input).env("RUST_BACKTRACE", "0").output())
    else {
        return "(could not run it again)".into();
    };
    let text = String::from_utf8_lossy(&out.stderr);
    let mut lines = text.lines().skip_while(|l| !l.contains(" panicked at "));
    match (lines.next(), lines.next()) {
        (Some(at), Some(message)) => {
            format!("{} {message}", at.split(" panicked at ").nth(1).unwrap_or(at))
        }
        _ if text.contains("timeout") => "timeout".into(),
        _ => "no panic message (out of memory or a signal?)".into(),
    }
}

/// Takes what a libFuzzer status line (`#1234 pulse cov: 80 ft: 200 … exec/s: 900`, or fork
/// mode's `#1234: cov: …`) or final statistic (`stat::number_of_executed_units: 1234`) says.
fn parse_line(line: &str, s: &mut Stats) {
    let field = |name: &str| -> Option<u64> {
        let rest = &line[line.find(name)? + name.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
        s.execs = n.trim().parse().ok().or(s.execs);
    } else if let Some(n) = line.strip_prefix("stat::average_exec_per_sec:") {
        s.exec_per_sec = n.trim().parse().ok().or(s.exec_per_sec);
    } else if line.starts_with('#') && line.contains(" cov: ") {
        let n = line[1..].split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok());
        s.execs = n.or(s.execs);
        s.cov = field(" cov: ").or(s.cov);
        s.ft = field(" ft: ").or(s.ft);
        s.exec_per_sec = field(" exec/s: ").or(s.exec_per_sec);
    }
}

fn files(dir: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).collect()
}

fn count(dir: &Path) -> usize {
    files(dir).len()
}

/// Writes every seed into `target/fuzz/corpus/<target>/` (files named `seed-…`, rewritten each
/// time; what libFuzzer added stays).
fn seed(root: &Path) -> anyhow::Result<()> {
    let work = root.join("target/fuzz/seed-src");
    std::fs::create_dir_all(&work)?;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let bad = root.join("fixtures/bad");
    let mut bad_files = Vec::new();
    walk(&bad, &mut bad_files)?;
    for p in &bad_files {
        let rel = p.strip_prefix(&bad)?.to_string_lossy().replace('/', "__");
        files.push((format!("bad-{rel}"), std::fs::read(p)?));
    }
    let tiny = root.join("fixtures").join(lowbit_fixtures::FLUX_TINY_BFL);
    files.push(("flux-tiny-bfl.safetensors".into(), std::fs::read(&tiny)?));

    let (single, shard_a, shard_b, index) = mini_checkpoint();
    let mini = work.join("mini.safetensors");
    std::fs::write(&mini, &single)?;
    for to in [
        "gguf:q8_0",
        "gguf:q4_k_m",
        "ternary",
        "bitnet",
        "int4:g32:asym",
        "nf4:dq",
        "fp8",
        "comfy:fp8",
        "bfl:fp8",
        "comfy:nvfp4",
        "bfl:nvfp4",
    ] {
        let ext = if to.starts_with("gguf:") { "gguf" } else { "safetensors" };
        let name = format!("mini-{}.{ext}", to.trim_start_matches("gguf:").replace(':', "-"));
        let out = work.join(&name);
        crate::ci::sh(
            Command::new(cargo())
                .current_dir(root)
                .args(["run", "--quiet", "-p", "lowbit-cli", "--", "convert"])
                .arg(&mini)
                .arg("-o")
                .arg(&out)
                .arg(format!("--to={to}")),
        )
        .context("making the GGUF and packed seeds with `lowbit convert`")?;
        files.push((name, std::fs::read(&out)?));
    }
    files.push(("mini.safetensors".into(), single.clone()));
    files.push(("mini-shard-a.safetensors".into(), shard_a.clone()));
    for t in ["safetensors_header", "gguf_header"] {
        write_seeds(root, t, &files)?;
    }

    // checkpoint_open: each sharded fixture, the mini checkpoint in every form, and each single
    // file fixture as the one file of a folder.
    let mut packed = Vec::new();
    for p in std::fs::read_dir(&bad)? {
        let dir = p?.path();
        if dir.is_dir() {
            let mut shard = Vec::new();
            walk(&dir, &mut shard)?;
            let named: Vec<(String, Vec<u8>)> = shard
                .iter()
                .map(|f| {
                    Ok((
                        f.file_name().unwrap_or_default().to_string_lossy().into(),
                        std::fs::read(f)?,
                    ))
                })
                .collect::<anyhow::Result<_>>()?;
            let name = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
            for mode in 0..3 {
                packed.push((format!("{name}-{mode}"), pack(mode, &named)));
            }
        }
    }
    let sharded = vec![
        (CKPT_NAMES[0].to_owned(), index),
        ("a.safetensors".to_owned(), shard_a),
        ("b.safetensors".to_owned(), shard_b),
    ];
    for mode in 0..3 {
        packed.push((format!("mini-sharded-{mode}"), pack(mode, &sharded)));
    }
    for (name, bytes) in &files {
        if name == "flux-tiny-bfl.safetensors" || name.contains("__") {
            continue; // too large to write per execution, or already packed above
        }
        let as_name = if name.ends_with(".gguf") {
            "c.gguf"
        } else if name.ends_with(".safetensors") {
            "a.safetensors"
        } else {
            "d.sft"
        };
        packed.push((name.clone(), pack(1, &[(as_name.to_owned(), bytes.clone())])));
    }
    for (name, bytes) in crate::fuzz_nunchaku::seeds()? {
        packed.push((name, pack(1, &[("a.safetensors".to_owned(), bytes)])));
    }
    write_seeds(root, "checkpoint_open", &packed)?;

    // recipe: the example of formats/recipe.md, alone and with command-line values.
    let md = std::fs::read_to_string(root.join("formats/recipe.md"))?;
    let example = md
        .split_once("```toml\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(toml, _)| toml.to_owned())
        .context("formats/recipe.md has no ```toml example")?;
    let recipes = vec![
        ("recipe-md".to_owned(), example.clone().into_bytes()),
        (
            "recipe-md-cli".to_owned(),
            format!("{example}\0gguf:q8_0\0double_blocks\\.0\\..*=bf16\0.*norm.*=f32").into_bytes(),
        ),
        ("cli-only".to_owned(), b"\0gguf:Q4_K_M\0single_blocks\\.\\d+\\..*=q6_k".to_vec()),
        ("to-only".to_owned(), b"to = \"tq2_0\"\n".to_vec()),
    ];
    write_seeds(root, "recipe", &recipes)
}

/// Packs files into `checkpoint_open`'s input: the mode byte, then (name index, `u16` length,
/// bytes) records. Files whose name the target cannot write are left out.
fn pack(mode: u8, files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![mode];
    for (name, bytes) in files {
        let Some(i) = CKPT_NAMES.iter().position(|n| n == name) else { continue };
        let Ok(len) = u16::try_from(bytes.len()) else { continue };
        out.push(i as u8);
        out.extend(len.to_le_bytes());
        out.extend(bytes);
    }
    out
}

/// A few-kilobyte checkpoint with FLUX names: the single file, its two shards and their index.
fn mini_checkpoint() -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
    use lowbit_fixtures::flux::GenTensor;
    use lowbit_fixtures::write::safetensors_bytes;
    let tensor = |name: &str, shape: Vec<u64>| {
        let n: u64 = shape.iter().product();
        // BF16 values in a gentle ramp with a sign pattern: enough variety for the quantizers.
        let data = (0..n)
            .flat_map(|i| {
                let v = ((i % 23) as f32 - 11.0) / 8.0;
                ((v.to_bits() >> 16) as u16).to_le_bytes()
            })
            .collect();
        GenTensor { name: name.to_owned(), shape, data }
    };
    let a = vec![
        tensor("img_in.weight", vec![8, 64]),
        tensor("img_in.bias", vec![8]),
        tensor("double_blocks.0.img_attn.qkv.weight", vec![6, 256]),
    ];
    let b = vec![
        tensor("single_blocks.0.linear2.weight", vec![4, 320]),
        tensor("double_blocks.0.img_attn.norm.query_norm.scale", vec![128]),
    ];
    let all: Vec<GenTensor> = a.iter().chain(&b).cloned().collect();
    let mut map: Vec<String> =
        a.iter().map(|t| format!("\"{}\": \"a.safetensors\"", t.name)).collect();
    map.extend(b.iter().map(|t| format!("\"{}\": \"b.safetensors\"", t.name)));
    let index = format!("{{\"metadata\": {{}}, \"weight_map\": {{{}}}}}\n", map.join(", "));
    (safetensors_bytes(&all), safetensors_bytes(&a), safetensors_bytes(&b), index.into_bytes())
}

fn write_seeds(root: &Path, target: &str, seeds: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
    let dir = corpus_dir(root, target);
    std::fs::create_dir_all(&dir)?;
    for (name, bytes) in seeds {
        let path = dir.join(format!("seed-{name}"));
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}
