//! Mixed precision under a budget (`--budget-bits`, `--budget-gb`): each SVDQuant-planned layer
//! (and each AdaLN modulation linear) is measured with every candidate it may take (svdq-w4a4,
//! int4:g64 W4A16, FP8 W8A16, BF16) by its output error on synthetic activations drawn from
//! the statistics; the choice that minimises the summed error within the budget is made by a
//! greedy walk along each layer's lower convex hull of (bytes, error), and returned as recipe
//! rules, so the result is an ordinary recipe that can be edited and re-run.

use crate::svdq::{layer_stats, read_whole};
use crate::{Error, Plan, Reason, Recipe, Rule, RuleType, SvdqOptions};
use lowbit_checkpoint::Checkpoint;
use lowbit_dtype::{Dtype, GgmlType};
use lowbit_fixtures::rng::Rng;
use lowbit_layout::{Fp8Format, Scheme};
use lowbit_svdq::Config;

/// One way to store a layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The rule type that selects it.
    pub ty: RuleType,
    /// Bytes stored.
    pub bytes: u64,
    /// Relative output error on synthetic activations.
    pub error: f64,
}

/// A layer, its candidates (cheapest first) and the one chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// Output weight name.
    pub name: String,
    /// Logical elements.
    pub params: u64,
    /// The candidates, by increasing bytes.
    pub candidates: Vec<Candidate>,
    /// Index of the chosen candidate.
    pub chosen: usize,
}

/// Measures every candidate of every layer a budget may choose for.
///
/// # Errors
/// Read failures and non-finite weights.
pub fn measure(
    ckpt: &Checkpoint,
    plan: &Plan,
    o: &SvdqOptions,
    cancelled: &dyn Fn() -> bool,
) -> Result<Vec<Choice>, Error> {
    let mut out = Vec::new();
    for t in &plan.tensors {
        let svdq = match t.scheme {
            Some(s @ Scheme::Svdq { .. }) => Some(s),
            _ if t.reason == Reason::Modulation => None,
            _ => continue,
        };
        if cancelled() {
            return Err(Error::Cancelled);
        }
        let (n, k) = (t.shape[0] as usize, t.shape[1] as usize);
        let w = read_whole(ckpt, t)?;
        let stats = o.calibration.as_ref().and_then(|c| layer_stats(c, &t.name, k, 1));
        let ax = stats.as_ref().map(|s| s[0].as_slice());
        let seed = Rng::for_name(o.seed, &format!("{}#0", t.name)).next_u64();
        let base = Config { alpha: o.alpha(), refine: o.refine, ..Config::default() };
        let bytes = |s: Scheme| s.stored_bytes(n as u64, k as u64, Dtype::BF16);
        let mut c = Vec::new();
        if let Some(s @ Scheme::Svdq { act4, rank, .. }) = svdq {
            let cfg = Config { act4, rank: usize::from(rank), ..base };
            let q = lowbit_svdq::quantize(&w, n, k, ax, &cfg, seed);
            c.push(Candidate { ty: RuleType::Scheme(s), bytes: bytes(s), error: q.error });
        }
        let int4 = Scheme::Int4 { group: 64, asym: false };
        let cfg = Config { act4: false, rank: 0, alpha: lowbit_svdq::Alpha::One, ..base };
        let q = lowbit_svdq::quantize(&w, n, k, ax, &cfg, seed);
        c.push(Candidate { ty: RuleType::Scheme(int4), bytes: bytes(int4), error: q.error });
        let fp8 = Scheme::Fp8 { format: Fp8Format::E4M3 };
        let round_trip = |rows: &[f32]| {
            let mut codes = vec![0u8; rows.len()];
            lowbit_quant::packed::fp8::plain(rows, Fp8Format::E4M3, &mut codes);
            codes.iter().map(|c| lowbit_dtype::fp8::e4m3_to_f32(*c)).collect()
        };
        let e = lowbit_svdq::weight_only_error(&w, n, k, ax, &base, seed, &round_trip);
        c.push(Candidate { ty: RuleType::Scheme(fp8), bytes: bytes(fp8), error: e });
        let dense = (n * k * 2) as u64;
        c.push(Candidate { ty: RuleType::Dense(GgmlType::BF16), bytes: dense, error: 0.0 });
        c.sort_by(|a, b| a.bytes.cmp(&b.bytes).then(a.error.total_cmp(&b.error)));
        out.push(Choice { name: t.name.clone(), params: t.numel(), candidates: c, chosen: 0 });
    }
    Ok(out)
}

/// The indices of a layer's lower convex hull of (bytes, error), cheapest first: the only
/// candidates a greedy upgrade by error saved per byte should visit.
fn hull(c: &[Candidate]) -> Vec<usize> {
    let mut h: Vec<usize> = Vec::new();
    for (i, p) in c.iter().enumerate() {
        // Only points that lower the error are worth more bytes.
        if h.last().is_some_and(|&j| c[j].error <= p.error) {
            continue;
        }
        while h.len() >= 2 {
            let (a, b) = (&c[h[h.len() - 2]], &c[h[h.len() - 1]]);
            // b is above the segment a → p: drop it.
            let cross = (b.bytes as f64 - a.bytes as f64) * (p.error - a.error)
                - (b.error - a.error) * (p.bytes as f64 - a.bytes as f64);
            if cross <= 0.0 {
                h.pop();
            } else {
                break;
            }
        }
        h.push(i);
    }
    h
}

/// Chooses per layer within `budget` bytes for the measured layers (the rest of the file is not
/// counted): every layer starts at its cheapest candidate, then the upgrade that saves the most
/// error per byte is taken while it fits. Returns the bytes used.
///
/// # Errors
/// A budget below the cheapest choice for every layer: the bytes that choice needs.
pub fn choose(layers: &mut [Choice], budget: u64) -> Result<u64, u64> {
    let hulls: Vec<Vec<usize>> = layers.iter().map(|l| hull(&l.candidates)).collect();
    let mut pos = vec![0usize; layers.len()];
    let mut used: u64 = layers.iter().zip(&hulls).map(|(l, h)| l.candidates[h[0]].bytes).sum();
    if used > budget {
        return Err(used);
    }
    loop {
        let mut best: Option<(usize, f64)> = None;
        for (i, (l, h)) in layers.iter().zip(&hulls).enumerate() {
            let Some(&next) = h.get(pos[i] + 1) else { continue };
            let (cur, nxt) = (&l.candidates[h[pos[i]]], &l.candidates[next]);
            let extra = nxt.bytes - cur.bytes;
            if used + extra > budget {
                continue;
            }
            let gain = (cur.error - nxt.error) / extra.max(1) as f64;
            if best.is_none_or(|(_, g)| gain > g) {
                best = Some((i, gain));
            }
        }
        let Some((i, _)) = best else { break };
        let h = &hulls[i];
        used += layers[i].candidates[h[pos[i] + 1]].bytes - layers[i].candidates[h[pos[i]]].bytes;
        pos[i] += 1;
    }
    for ((l, h), p) in layers.iter_mut().zip(&hulls).zip(pos) {
        l.chosen = h[p];
    }
    Ok(used)
}

/// `recipe` with one rule per layer whose choice differs from the plan's.
///
/// # Errors
/// A rule the target refuses (cannot happen for the candidates above).
pub fn with_choices(recipe: &Recipe, plan: &Plan, layers: &[Choice]) -> Result<Recipe, Error> {
    let mut out = recipe.clone();
    for l in layers {
        let ty = l.candidates[l.chosen].ty;
        let planned = plan.tensors.iter().find(|t| t.name == l.name);
        let same = planned.is_some_and(|t| match ty {
            RuleType::Scheme(s) => t.scheme == Some(s),
            RuleType::Dense(d) | RuleType::Ggml(d) => t.scheme.is_none() && t.ty == d,
        });
        if same {
            continue;
        }
        let mut rule = Rule::new(&regex::escape(&l.name), &ty.name())?;
        rule.ty = recipe.target.resolve(rule.ty, &rule.ty_source)?;
        out.rules.push(rule);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{Candidate, Choice, choose, hull};
    use crate::RuleType;
    use lowbit_dtype::GgmlType;

    fn c(bytes: u64, error: f64) -> Candidate {
        Candidate { ty: RuleType::Dense(GgmlType::BF16), bytes, error }
    }

    #[test]
    fn hull_skips_dominated_and_concave_points() {
        // (10, 1.0), (20, 0.9) lies above the segment to (30, 0.1); (40, 0.2) is worse than 30.
        let cs = [c(10, 1.0), c(20, 0.9), c(30, 0.1), c(40, 0.2), c(50, 0.0)];
        assert_eq!(hull(&cs), vec![0, 2, 4]);
    }

    #[test]
    fn greedy_spends_the_budget_where_it_saves_most() {
        let layer = |name: &str, e: [f64; 3]| Choice {
            name: name.into(),
            params: 1,
            candidates: vec![c(10, e[0]), c(20, e[1]), c(40, e[2])],
            chosen: 0,
        };
        let mut ls = vec![layer("a", [0.5, 0.1, 0.0]), layer("b", [0.05, 0.04, 0.0])];
        assert_eq!(choose(&mut ls, 30).unwrap(), 30);
        assert_eq!((ls[0].chosen, ls[1].chosen), (1, 0));
        assert_eq!(choose(&mut ls, 80).unwrap(), 80);
        assert_eq!((ls[0].chosen, ls[1].chosen), (2, 2));
        assert!(choose(&mut ls, 19).is_err());
    }
}
