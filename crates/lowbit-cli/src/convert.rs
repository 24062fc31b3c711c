//! `lowbit convert`: plan, optionally print the plan, then write with a progress bar.

use crate::cli::{ConvertArgs, Fp8, Names, Scale};
use crate::output::{self, Usage};
use comfy_table::{CellAlignment, Table};
use lowbit_checkpoint::Checkpoint;
use lowbit_convert::{
    Error, Options, OutputNaming, Plan, Recipe, SchemeOptions, Target, Zstd, check_output,
    check_pack_output, metadata, write_gguf,
};
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Whether an error is the user's Ctrl-C (exit code 130).
pub(crate) fn is_cancelled(e: &anyhow::Error) -> bool {
    e.chain().any(|c| matches!(c.downcast_ref::<Error>(), Some(Error::Cancelled)))
}

/// Whether an error is in what was asked (exit code 2) rather than in the files.
pub(crate) fn is_usage(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<Error>().is_some_and(Error::is_usage)
            || c.downcast_ref::<Usage>().is_some()
    })
}

/// Runs `lowbit convert`.
///
/// Everything that can be refused is refused before any weight is read, in the same order with
/// and without `--dry-run`: the recipe, the input's headers, the plan, the output path, the
/// file layout.
pub(crate) fn run(args: &ConvertArgs) -> anyhow::Result<()> {
    let recipe_text = match &args.recipe {
        Some(p) => Some(read_recipe(p).map_err(|e| {
            anyhow::Error::new(Usage(format!("{}: cannot read the recipe: {e}", p.display())))
        })?),
        None => None,
    };
    let preset_name;
    let file = match &args.preset {
        Some(name) => {
            preset_name = std::path::PathBuf::from(format!("preset {name}"));
            Some((preset_name.as_path(), lowbit_convert::preset(name)?))
        }
        None => args.recipe.as_deref().zip(recipe_text.as_deref()),
    };
    let options = SchemeOptions {
        scale: args.scale.map(|s| match s {
            Scale::Channel => lowbit_layout::ScaleGranularity::Channel,
            Scale::Tensor => lowbit_layout::ScaleGranularity::Tensor,
        }),
        group: args.group,
        asym: args.asym,
        double_quant: args.nf4_double_quant,
        fp8: args.fp8.map(|f| match f {
            Fp8::E4m3 => lowbit_layout::Fp8Format::E4M3,
            Fp8::E5m2 => lowbit_layout::Fp8Format::E5M2,
        }),
        rank: args.rank,
        timestep_groups: args.timestep_groups,
    };
    let recipe = Recipe::build_with(file, args.to.as_deref(), &args.tensor_type, &options)?;
    if args.print_recipe {
        return output::print(&recipe.to_toml());
    }
    // clap requires -o unless --print-recipe.
    let Some(out_arg) = args.output.as_deref() else {
        return Err(anyhow::Error::new(Usage("-o/--output is required".into())));
    };
    let zstd = args.compress.as_deref().map(Zstd::parse).transpose()?;
    let ckpt = Checkpoint::open(&args.input)?;
    let naming = args.names.map(|n| match n {
        Names::Bfl => OutputNaming::Bfl,
        Names::Diffusers => OutputNaming::Diffusers,
    });
    let plan = Plan::new(&ckpt, &recipe, naming)?;
    let svdq = svdq_options(args, &plan)?;
    lowbit_convert::check_svdq(&plan, &svdq)?;
    let (recipe, plan) = crate::budget::run(args, &ckpt, recipe, plan, &svdq, naming)?;
    if let Some(p) = &args.save_recipe {
        crate::output::write_atomic(p, recipe.to_toml().as_bytes())?;
    }
    for r in &plan.unmatched_rules {
        output::note(&format!("warning: the rule `{r}` matches no tensor"));
    }
    let lite = recipe.export == Some(lowbit_convert::Export::NunchakuLite);
    let lite_folder =
        lite && !out_arg.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    let folder = lite_folder || lowbit_convert::writes_folder(&plan, &recipe.target, out_arg);
    let out = if lite_folder {
        out_arg.join(lowbit_convert::MODEL_FILE)
    } else {
        lowbit_convert::weights_path(&plan, &recipe.target, out_arg)
    };
    if let (Some(e), Some(given)) = (recipe.export, args.compress.as_deref()) {
        return Err(anyhow::Error::new(Usage(format!(
            "--compress {given}: {} writes the file its runtime loads, which reads no zstd pack; compress the result separately",
            e.name()
        ))));
    }
    if let (Some(_), Some(given)) = (zstd, args.compress.as_deref()) {
        lowbit_convert::check_zstd(&plan, &recipe.target, folder, given, out_arg)?;
        check_pack_output(&ckpt, &out, &recipe.target, args.force_extension)?;
    }
    if folder {
        check_folder(out_arg, &ckpt)?;
    }
    if zstd.is_none() && (!folder || out_arg.exists()) {
        check_output(&ckpt, &out, &recipe.target, args.force_extension)?;
    }
    let source_name = args
        .input
        .file_name()
        .map_or_else(|| args.input.display().to_string(), |n| n.to_string_lossy().into_owned());
    let config = if lite_folder {
        Some(lowbit_convert::lite_config(&plan, &recipe)?)
    } else if folder {
        Some(lowbit_convert::diffusers_config(&ckpt, &plan, &recipe.target)?)
    } else {
        None
    };
    let file_bytes = match recipe.target {
        Target::Gguf { .. } => {
            let layout = lowbit_convert::layout(&plan, &metadata(&plan, &recipe, &source_name))?;
            layout.header.len() as u64 + layout.data_len
        }
        Target::Packed(_) if recipe.export.is_some() => {
            lowbit_convert::check_export(&plan, &recipe, &source_name)?
        }
        Target::Packed(_) => {
            lowbit_convert::packed_file_bytes(&plan, &recipe, &source_name, Some(&svdq))?
        }
    };
    if args.dry_run {
        let mut text = render_plan(&plan, &recipe, file_bytes);
        if let Some(z) = zstd {
            let _ = writeln!(
                text,
                "zstd pack at level {}: the sizes above are the safetensors file it holds; the pack's own size is known once compressed",
                z.level
            );
        }
        return output::print(&text);
    }
    if folder && !out_arg.exists() {
        std::fs::create_dir(out_arg).map_err(|e| {
            anyhow::anyhow!("{}: cannot create the model folder: {e}", out_arg.display())
        })?;
    }

    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = Arc::clone(&cancel);
        // A second handler cannot be installed (tests run several conversions in one process);
        // then Ctrl-C simply ends the process, and the temporary file is left for the OS.
        let _ = ctrlc::set_handler(move || cancel.store(true, Ordering::Relaxed));
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(100),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {percent}% {msg}",
        )
        .expect("static template"),
    );
    let progress = |done: u64, total: u64| {
        bar.set_position((done * 100).checked_div(total).unwrap_or(100));
    };
    let opts = Options {
        threads: args.threads,
        allow_non_finite: args.allow_non_finite,
        cancel: Some(&cancel),
        progress: Some(&progress),
        source_name,
        chunk_bytes: lowbit_convert::CHUNK_BYTES,
        force_extension: args.force_extension,
        svdq: Some(&svdq),
    };
    let start = Instant::now();
    let mut packed = None;
    let written = match (recipe.target, zstd) {
        (Target::Packed(_), Some(z)) => {
            lowbit_convert::write_zstd_pack(&ckpt, &plan, &recipe, &out, &opts, z).map(|p| {
                let w = p.written.clone();
                packed = Some(p);
                w
            })
        }
        (Target::Gguf { .. }, _) => write_gguf(&ckpt, &plan, &recipe, &out, &opts),
        (Target::Packed(_), None) => {
            lowbit_convert::write_export(&ckpt, &plan, &recipe, &out, &opts)
        }
    };
    // Cleared on failure too, so that the error is the last thing on the terminal.
    bar.finish_and_clear();
    let written = written?;
    if let Some(config) = config {
        let path = out_arg.join("config.json");
        crate::output::write_atomic(&path, config.as_bytes())?;
    }
    let secs = start.elapsed().as_secs_f64();
    print_svdq_report(&svdq);
    let params: u64 = plan.tensors.iter().map(lowbit_convert::PlannedTensor::numel).sum();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "wrote {} ({} tensors, {:.1} MB, {:.3} bits/weight) in {secs:.2} s ({:.0} Mparam/s){}",
        out_arg.display(),
        written.tensors,
        written.bytes as f64 / 1e6,
        plan.data_bytes() as f64 * 8.0 / params.max(1) as f64,
        params as f64 / secs / 1e6,
        peak_rss_mb().map_or(String::new(), |mb| format!(", peak memory {mb:.0} MB")),
    );
    if let (Some(p), Some(z)) = (packed, zstd) {
        let _ = writeln!(
            err,
            "zstd level {}: {:.1} MB of safetensors in {:.1} MB ({:.1}% smaller, {:.3} bits/weight of file), compressed in {:.2} s",
            z.level,
            p.raw_bytes as f64 / 1e6,
            p.written.bytes as f64 / 1e6,
            (1.0 - p.written.bytes as f64 / p.raw_bytes.max(1) as f64) * 100.0,
            p.written.bytes as f64 * 8.0 / params.max(1) as f64,
            p.compress_seconds,
        );
    }
    Ok(())
}

/// The SVDQuant options: statistics opened (and checked against nothing yet), options that
/// need an SVDQuant layer refused without one.
fn svdq_options(args: &ConvertArgs, plan: &Plan) -> anyhow::Result<lowbit_convert::SvdqOptions> {
    let any =
        plan.tensors.iter().any(|t| matches!(t.scheme, Some(lowbit_layout::Scheme::Svdq { .. })));
    let given = [
        ("--stats", args.stats.is_some()),
        ("--alpha", args.alpha.is_some()),
        ("--refine", args.refine != 0),
        ("--seed", args.seed.is_some()),
    ];
    if let Some((flag, _)) = given.iter().find(|g| g.1).filter(|_| !any) {
        return Err(anyhow::Error::new(Usage(format!(
            "{flag} applies to svdq-w4a4 and svdq-w4a16 layers; the plan has none"
        ))));
    }
    if args.alpha.is_some_and(|a| a != lowbit_svdq::Alpha::One) && args.stats.is_none() {
        return Err(anyhow::Error::new(Usage(
            "--alpha needs --stats: λ comes from the activations' statistics".into(),
        )));
    }
    let start = Instant::now();
    let calibration = match &args.stats {
        Some(p) => Some(lowbit_convert::Calibration::open(p)?),
        None => None,
    };
    if let Some(c) = &calibration {
        output::note(&format!(
            "statistics: {} ({} timestep groups) read in {:.2} s",
            c.path().display(),
            c.groups(),
            start.elapsed().as_secs_f64()
        ));
    }
    Ok(lowbit_convert::SvdqOptions {
        alpha: args.alpha,
        refine: args.refine,
        seed: args.seed.unwrap_or(0),
        calibration,
        layers: std::sync::Mutex::default(),
    })
}

/// One line per SVDQuant layer on stderr: its α, output error and time.
fn print_svdq_report(o: &lowbit_convert::SvdqOptions) {
    let Ok(layers) = o.layers.lock() else { return };
    if layers.is_empty() {
        return;
    }
    let mut t = Table::new();
    t.load_style(crate::inspect::TABLE_STYLE);
    t.set_header(vec!["layer", "scheme", "α", "output error", "refined", "seconds"]);
    let mut total = 0.0;
    for l in layers.iter() {
        let alpha: Vec<String> = l
            .alpha
            .iter()
            .map(|a| a.map_or_else(|| "none".into(), |a| format!("{a:.1}")))
            .collect();
        let err: Vec<String> = l.error.iter().map(|e| format!("{:.2e}", e)).collect();
        let refined: Vec<String> = l.refined.iter().map(ToString::to_string).collect();
        total += l.seconds;
        t.add_row(vec![
            l.name.clone(),
            l.scheme.to_string(),
            alpha.join(" "),
            err.join(" "),
            refined.join(" "),
            format!("{:.2}", l.seconds),
        ]);
    }
    let sum = |f: &dyn Fn(&lowbit_convert::LayerReport) -> f64| layers.iter().map(f).sum::<f64>();
    output::note(&format!(
        "{t}\n{} SVDQuant layers in {total:.1} s: read {:.1} s, α search {:.1} s, SVD {:.1} s, quantization {:.1} s, scoring {:.1} s (output error: ‖Y − Ŷ‖²/‖Y‖² on synthetic activations)",
        layers.len(),
        sum(&|l| l.read),
        sum(&|l| l.timings.search),
        sum(&|l| l.timings.svd),
        sum(&|l| l.timings.quantize),
        sum(&|l| l.timings.score),
    ));
}

/// Refuses a model-folder output that is something other than a directory, whose parent does
/// not exist, or that holds an input file (its `config.json` would be replaced).
fn check_folder(dir: &std::path::Path, ckpt: &Checkpoint) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {
            let id = (m.dev(), m.ino());
            for (input, _) in ckpt.input_files() {
                let parent = input.parent().filter(|p| !p.as_os_str().is_empty());
                let parent = parent.unwrap_or(std::path::Path::new("."));
                if std::fs::metadata(parent).is_ok_and(|p| (p.dev(), p.ino()) == id) {
                    return Err(anyhow::anyhow!(
                        "{}: this folder holds the input {}; lowbit never writes into its input's folder (its config.json would be replaced)",
                        dir.display(),
                        input.display()
                    ));
                }
            }
            Ok(())
        }
        Ok(_) => Err(anyhow::anyhow!(
            "{}: not a directory (NF4 in diffusers names and SDNQ write a model folder; end -o in .safetensors for one file)",
            dir.display()
        )),
        Err(_) => {
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
            match parent.map(std::fs::metadata) {
                None | Some(Ok(_)) => Ok(()),
                Some(Err(e)) => Err(anyhow::anyhow!("{}: cannot create it: {e}", dir.display())),
            }
        }
    }
}

/// A recipe file's text: a regular file of at most a megabyte (recipes are a few lines; a
/// device or a huge file is a mistake, not something to read to its end).
fn read_recipe(path: &std::path::Path) -> std::io::Result<String> {
    const MAX: u64 = 1 << 20;
    let f = std::fs::File::open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > MAX {
        return Err(std::io::Error::other(format!(
            "{} bytes, above the {MAX}-byte limit",
            meta.len()
        )));
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(f, MAX), &mut text)?;
    Ok(text)
}

/// The process's peak resident memory (`VmHWM`), where the OS reports it.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn render_plan(plan: &Plan, recipe: &Recipe, file_bytes: u64) -> String {
    let mut t = Table::new();
    t.load_style(crate::inspect::TABLE_STYLE);
    t.set_header(vec!["tensor", "shape", "type", "bytes", "bits/weight", "why"]);
    for i in [3, 4] {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    for p in &plan.tensors {
        let shape = p.shape.iter().map(u64::to_string).collect::<Vec<_>>().join("×");
        t.add_row(vec![
            p.name.clone(),
            shape,
            p.type_name(),
            p.bytes().to_string(),
            format!("{:.3}", p.bytes() as f64 * 8.0 / p.numel().max(1) as f64),
            p.reason.to_string(),
        ]);
    }
    let params: u64 = plan.tensors.iter().map(lowbit_convert::PlannedTensor::numel).sum();
    let mut out = format!("{t}\n\n");
    let _ = writeln!(
        out,
        "plan: {} tensors, {} parameters, {} bytes of tensor data ({} bytes of file), {:.3} bits/weight, target {}, {} naming",
        plan.tensors.len(),
        params,
        plan.data_bytes(),
        file_bytes,
        plan.data_bytes() as f64 * 8.0 / params.max(1) as f64,
        recipe.target_name(),
        match plan.naming {
            OutputNaming::Bfl => "bfl",
            OutputNaming::Diffusers => "diffusers",
        }
    );
    out
}
