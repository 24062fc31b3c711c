//! `convert --budget-bits` / `--budget-gb`: measure, choose, print the table, re-plan.

use crate::cli::ConvertArgs;
use crate::output::{self, Usage};
use comfy_table::{CellAlignment, Table};
use lowbit_checkpoint::Checkpoint;
use lowbit_convert::budget::{Choice, choose, measure, with_choices};
use lowbit_convert::{OutputNaming, Plan, Recipe, SvdqOptions};

/// With a budget: the recipe and plan with the budget's choices; without: as given.
pub(crate) fn run(
    args: &ConvertArgs,
    ckpt: &Checkpoint,
    recipe: Recipe,
    plan: Plan,
    svdq: &SvdqOptions,
    naming: Option<OutputNaming>,
) -> anyhow::Result<(Recipe, Plan)> {
    if args.budget_bits.is_none() && args.budget_gb.is_none() {
        return Ok((recipe, plan));
    }
    let any =
        plan.tensors.iter().any(|t| matches!(t.scheme, Some(lowbit_layout::Scheme::Svdq { .. })));
    if !any {
        return Err(anyhow::Error::new(Usage(
            "--budget-bits and --budget-gb choose among svdq, int4, fp8 and bf16 for SVDQuant layers; the plan has none (use --to svdq-w4a4 or svdq-w4a16)".into(),
        )));
    }
    let params: u64 = plan.tensors.iter().map(lowbit_convert::PlannedTensor::numel).sum();
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "checked positive")]
    let total = match (args.budget_bits, args.budget_gb) {
        (Some(b), _) if b > 0.0 && b.is_finite() => (b * params as f64 / 8.0) as u64,
        (_, Some(g)) if g > 0.0 && g.is_finite() => (g * 1e9) as u64,
        _ => return Err(anyhow::Error::new(Usage("a budget must be a positive number".into()))),
    };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(args.threads).build()?;
    let mut layers = pool.install(|| measure(ckpt, &plan, svdq, &|| false))?;
    let measured: u64 = layers
        .iter()
        .filter_map(|l| plan.tensors.iter().find(|t| t.name == l.name))
        .map(lowbit_convert::PlannedTensor::bytes)
        .sum();
    // Everything else in the file (dense tensors, the header) is fixed.
    let header = match args.budget_gb {
        Some(_) => lowbit_convert::packed_file_bytes(&plan, &recipe, "", Some(svdq))?
            .saturating_sub(plan.data_bytes()),
        None => 0,
    };
    let fixed = plan.data_bytes() - measured + header;
    let Some(budget) = total.checked_sub(fixed) else {
        return Err(anyhow::Error::new(Usage(format!(
            "the budget ({total} bytes) is below what the layers it cannot change take ({fixed} bytes)"
        ))));
    };
    let used = choose(&mut layers, budget).map_err(|need| {
        anyhow::Error::new(Usage(format!(
            "the budget leaves {budget} bytes for the layers it chooses for; their smallest choice needs {need} ({:.3} bits/weight over the file at least)",
            (need + fixed) as f64 * 8.0 / params.max(1) as f64
        )))
    })?;
    output::note(&table(&layers, used + fixed, params));
    let recipe = with_choices(&recipe, &plan, &layers)?;
    let plan = Plan::new(ckpt, &recipe, naming)?;
    lowbit_convert::check_svdq(&plan, svdq)?;
    Ok((recipe, plan))
}

fn table(layers: &[Choice], bytes: u64, params: u64) -> String {
    let mut t = Table::new();
    t.load_style(crate::inspect::TABLE_STYLE);
    // One column per kind of candidate, in the order of the first layer that has them all.
    let mut kinds: Vec<String> = Vec::new();
    for l in layers {
        for c in &l.candidates {
            if !kinds.contains(&c.ty.name()) {
                kinds.push(c.ty.name());
            }
        }
    }
    let mut header = vec!["layer".to_owned()];
    header.extend(kinds.iter().map(|n| format!("{n} error")));
    header.push("chosen".into());
    t.set_header(header);
    for i in 1..=kinds.len() {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    for l in layers {
        let mut row = vec![l.name.clone()];
        row.extend(kinds.iter().map(|k| {
            l.candidates
                .iter()
                .find(|c| &c.ty.name() == k)
                .map_or_else(|| "–".to_owned(), |c| format!("{:.2e}", c.error))
        }));
        let c = &l.candidates[l.chosen];
        row.push(format!(
            "{} ({:.2} bits)",
            c.ty.name(),
            c.bytes as f64 * 8.0 / l.params.max(1) as f64
        ));
        t.add_row(row);
    }
    let total: f64 = layers.iter().map(|l| l.candidates[l.chosen].error).sum();
    format!(
        "{t}\nbudget: {bytes} bytes of tensor data, {:.3} bits/weight over the file; summed output error {total:.3e} (‖Y − Ŷ‖²/‖Y‖² per layer, synthetic activations)",
        bytes as f64 * 8.0 / params.max(1) as f64
    )
}
