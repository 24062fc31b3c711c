//! SVDQuant conversion (`formats/svdq.md`): the statistics each layer needs, checked against
//! the plan before any weight is read; the `lowbit.svdq` metadata; and each layer quantized
//! whole (its SVD needs all of it) by `lowbit-svdq`, one layer at a time, in parallel inside.

use crate::write::gather;
use crate::{Calibration, Error, OutputNaming, Plan, PlannedTensor};
use lowbit_checkpoint::Checkpoint;
use lowbit_fixtures::rng::Rng;
use lowbit_layout::Scheme;
use lowbit_svdq::{Alpha, Config};
use rayon::prelude::*;
use std::sync::Mutex;
use std::time::Instant;

/// How SVDQuant layers are quantized (the scheme itself, rank and timestep groups, is in the
/// recipe).
#[derive(Debug, Default)]
pub struct SvdqOptions {
    /// How λ is chosen (`None`: `auto` with statistics, λ = 1 without).
    pub alpha: Option<Alpha>,
    /// DeepCompressor's refinement iterations.
    pub refine: usize,
    /// Seed of the randomized SVDs and the synthetic activations.
    pub seed: u64,
    /// Calibration statistics (`--stats`).
    pub calibration: Option<Calibration>,
    /// Filled while writing: one report per layer, in file order.
    pub layers: Mutex<Vec<LayerReport>>,
}

/// What happened to one SVDQuant layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerReport {
    /// Output weight name.
    pub name: String,
    /// Its scheme.
    pub scheme: Scheme,
    /// The α of each timestep group (`None`: λ = 1).
    pub alpha: Vec<Option<f32>>,
    /// Relative output error of each group on synthetic activations.
    pub error: Vec<f64>,
    /// Refinement iterations kept, per group.
    pub refined: Vec<usize>,
    /// Seconds spent on the layer.
    pub seconds: f64,
    /// Seconds reading and decoding the weight.
    pub read: f64,
    /// Seconds per stage of the quantization, summed over the groups.
    pub timings: lowbit_svdq::Timings,
}

impl SvdqOptions {
    pub(crate) fn alpha(&self) -> Alpha {
        match (self.alpha, &self.calibration) {
            (Some(a), Some(_)) => a,
            (None, Some(_)) => Alpha::Auto,
            (_, None) => Alpha::One,
        }
    }

    fn alpha_name(&self) -> String {
        match self.alpha() {
            Alpha::One => "none".into(),
            Alpha::Fixed(a) => a.to_string(),
            Alpha::Auto => "auto".into(),
        }
    }
}

/// Checks, before any weight is read, that every SVDQuant layer of `plan` can be served: BFL
/// names, statistics for W4A4 layers and timestep groups, statistics of the right width and
/// group count.
///
/// # Errors
/// [`Error::Svdq`] naming the first layer that cannot.
pub fn check_svdq(plan: &Plan, o: &SvdqOptions) -> Result<(), Error> {
    for t in &plan.tensors {
        let Some(Scheme::Svdq { act4, groups, .. }) = t.scheme else { continue };
        let refuse = |reason: String| Err(Error::Svdq { tensor: t.name.clone(), reason });
        if plan.naming == OutputNaming::Diffusers {
            return refuse(
                "SVDQuant writes BFL names (one fused qkv shares one λ); drop --names diffusers"
                    .into(),
            );
        }
        let Some(c) = &o.calibration else {
            if act4 {
                return refuse("W4A4 quantizes activations and needs calibration statistics: give --stats FILE (scripts/collect_stats.py collects them), or use svdq-w4a16".into());
            }
            if groups > 1 {
                return refuse("--timestep-groups needs --stats FILE with as many groups".into());
            }
            continue;
        };
        let file = c.path().display();
        let Some(v) = c.absmax(&t.name) else {
            return refuse(format!("{file} has no statistics for this layer"));
        };
        let k = t.row_len();
        let cg = c.groups() as u64;
        if v.len() as u64 != cg * k {
            return refuse(format!(
                "{file} has {} values per group for this layer; the weight has {k} input channels",
                v.len() as u64 / cg.max(1)
            ));
        }
        if groups > 1 && cg != u64::from(groups) {
            return refuse(format!("{groups} timestep groups asked for; {file} has {cg}"));
        }
    }
    Ok(())
}

/// The `lowbit.svdq` metadata, when the plan has SVDQuant layers.
pub(crate) fn metadata(plan: &Plan, o: Option<&SvdqOptions>) -> Option<String> {
    let (rank, groups) = plan.tensors.iter().find_map(|t| match t.scheme {
        Some(Scheme::Svdq { rank, groups, .. }) => Some((rank, groups)),
        _ => None,
    })?;
    let default = SvdqOptions::default();
    let o = o.unwrap_or(&default);
    let calibration = o.calibration.as_ref().map_or(serde_json::Value::Null, |c| {
        serde_json::from_str(c.metadata_json()).unwrap_or(serde_json::Value::Null)
    });
    let boundaries = o.calibration.as_ref().map(|c| c.boundaries().to_vec());
    let v = serde_json::json!({
        "version": 1,
        "weight": {"dtype": "int4", "codes": [-7, 7], "group_size": 64, "scale": "absmax/7",
                   "scale_dtype": "bf16", "layout": "comfy-kitchen natural"},
        "activation_w4a4": {"dtype": "int4", "granularity": "token", "group_size": 64,
                            "dynamic": true, "scale": "absmax/7", "rounding": "half to even",
                            "signed": true},
        "rank": rank,
        "alpha": o.alpha_name(),
        "refine": o.refine,
        "seed": o.seed,
        "timestep_groups": {
            "groups": groups,
            "boundaries": if groups > 1 { serde_json::json!(boundaries) } else { serde_json::Value::Null },
            "rule": "group g holds timesteps t (0..1000) with boundaries[g] >= t > boundaries[g+1]; t = 0 is in the last group; group 0 is the noisiest"
        },
        "calibration": calibration,
    });
    Some(v.to_string())
}

/// One K-vector of statistics per timestep group the scheme stores; a multi-group file serves a
/// one-group scheme with the maximum over its groups.
pub(crate) fn layer_stats(
    c: &Calibration,
    name: &str,
    k: usize,
    groups: usize,
) -> Option<Vec<Vec<f32>>> {
    let v = c.absmax(name)?;
    let rows: Vec<Vec<f32>> = v.chunks(k.max(1)).map(<[f32]>::to_vec).collect();
    if groups > 1 {
        return Some(rows);
    }
    let max =
        rows.iter().fold(vec![0f32; k], |m, r| m.iter().zip(r).map(|(a, b)| a.max(*b)).collect());
    Some(vec![max])
}

/// A whole weight as `f32`, read in parallel slices (each with its own scratch buffer);
/// non-finite values are refused (an SVD cannot factor them).
///
/// # Errors
/// Read failures, non-finite weights.
pub(crate) fn read_whole(ckpt: &Checkpoint, t: &PlannedTensor) -> Result<Vec<f32>, Error> {
    let numel = t.numel();
    let slice = 1u64 << 20;
    #[expect(clippy::cast_possible_truncation, reason = "the weight is in memory already")]
    let mut w = vec![0f32; numel as usize];
    w.par_chunks_mut(slice as usize).enumerate().try_for_each(|(i, out)| {
        let a = i as u64 * slice;
        gather(ckpt, t, a..a + out.len() as u64, out, &mut Vec::new(), false)
    })?;
    Ok(w)
}

/// Quantizes one SVDQuant layer whole; returns its stored tensors' bytes, timestep groups one
/// after the other.
///
/// # Errors
/// Read failures, non-finite weights (an SVD cannot factor them), missing statistics.
pub(crate) fn quantize_layer(
    ckpt: &Checkpoint,
    t: &PlannedTensor,
    o: &SvdqOptions,
) -> Result<Vec<Vec<u8>>, Error> {
    let Some(scheme @ Scheme::Svdq { act4, rank, groups }) = t.scheme else {
        unreachable!("only SVDQuant layers come here")
    };
    let start = Instant::now();
    let (n, k) = (t.shape[0] as usize, t.shape[1] as usize);
    let w = read_whole(ckpt, t)?;
    let read = start.elapsed().as_secs_f64();
    let groups = usize::from(groups);
    let stats = match &o.calibration {
        Some(c) => Some(layer_stats(c, &t.name, k, groups).ok_or_else(|| Error::Svdq {
            tensor: t.name.clone(),
            reason: format!("{} has no statistics for this layer", c.path().display()),
        })?),
        None => None,
    };
    let cfg = Config {
        act4,
        rank: usize::from(rank),
        alpha: o.alpha(),
        refine: o.refine,
        ..Config::default()
    };
    let mut stored: Vec<Vec<u8>> = vec![Vec::new(); 5];
    let mut report = LayerReport {
        name: t.name.clone(),
        scheme,
        alpha: Vec::new(),
        error: Vec::new(),
        refined: Vec::new(),
        seconds: 0.0,
        read,
        timings: lowbit_svdq::Timings::default(),
    };
    for g in 0..groups {
        let seed = Rng::for_name(o.seed, &format!("{}#{g}", t.name)).next_u64();
        let ax = stats.as_ref().map(|s| s[g].as_slice());
        let q = lowbit_svdq::quantize(&w, n, k, ax, &cfg, seed);
        for (s, b) in stored.iter_mut().zip(q.stored()) {
            s.extend_from_slice(&b);
        }
        report.alpha.push(q.alpha);
        report.error.push(q.error);
        report.refined.push(q.refined);
        report.timings.search += q.timings.search;
        report.timings.svd += q.timings.svd;
        report.timings.quantize += q.timings.quantize;
        report.timings.score += q.timings.score;
    }
    report.seconds = start.elapsed().as_secs_f64();
    if let Ok(mut l) = o.layers.lock() {
        l.push(report);
    }
    Ok(stored)
}
