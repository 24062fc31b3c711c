//! The first pass some schemes need: a statistic of the whole weight before any of it can be
//! quantized (a per-tensor ternary or BitNet γ, the per-tensor amax of ComfyUI FP8 and of both
//! NVFP4 layouts, NF4's double-quantization offset, the mean of every block's absmax).
//!
//! Tasks are cut at fixed element boundaries and their partial results combined in order, so
//! the statistic does not depend on the thread count.

use crate::Error;
use crate::plan::{Plan, PlannedTensor};
use crate::write::gather;
use lowbit_checkpoint::Checkpoint;
use lowbit_layout::{NF4_BLOCK, Scheme};
use lowbit_quant::packed;
use rayon::prelude::*;

/// Elements per task (a multiple of NF4's block).
const TASK_ELEMS: u64 = 1 << 18;

/// One weight's statistics (zero where its scheme needs none).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Stat {
    /// Absmean γ over the whole tensor.
    pub(crate) gamma: f32,
    /// max |W|.
    pub(crate) amax: f32,
    /// The mean of the 64-block absmax values.
    pub(crate) nf4_offset: f32,
}

/// What one task contributes.
#[derive(Default)]
struct Partial {
    amax: f32,
    absmax: Vec<f32>,
}

fn task(
    ckpt: &Checkpoint,
    t: &PlannedTensor,
    scheme: Scheme,
    elems: std::ops::Range<u64>,
    allow_non_finite: bool,
) -> Result<Partial, Error> {
    #[expect(clippy::cast_possible_truncation, reason = "a task is small")]
    let mut x = vec![0f32; (elems.end - elems.start) as usize];
    gather(ckpt, t, elems, &mut x, &mut Vec::new(), allow_non_finite)?;
    Ok(match scheme {
        Scheme::Nf4 { .. } => Partial {
            absmax: x.chunks(NF4_BLOCK as usize).map(packed::absmax).collect(),
            ..Partial::default()
        },
        _ => Partial { amax: packed::fp8::amax(&x), ..Partial::default() },
    })
}

/// The statistics of every planned tensor (index for index; default where none is needed).
///
/// # Errors
/// Read failures, non-finite weights (unless allowed), cancellation.
pub(crate) fn stats(
    ckpt: &Checkpoint,
    plan: &Plan,
    allow_non_finite: bool,
    cancelled: &dyn Fn() -> bool,
) -> Result<Vec<Stat>, Error> {
    let mut out = vec![Stat::default(); plan.tensors.len()];
    for (i, t) in plan.tensors.iter().enumerate() {
        let Some(scheme) = t.scheme.filter(Scheme::needs_stats) else { continue };
        if cancelled() {
            return Err(Error::Cancelled);
        }
        let numel = t.numel();
        if matches!(scheme, Scheme::Ternary { .. } | Scheme::Bitnet) {
            // γ's sum: each row's in index order, then the row sums in row order
            // (formats/ternary.md), so rows can be summed in parallel.
            let k = t.row_len().max(1);
            let rows = t.n_rows();
            let per_task = (TASK_ELEMS / k).max(1);
            let starts: Vec<u64> = (0..rows).step_by(per_task as usize).collect();
            let parts: Vec<Result<Vec<f64>, Error>> = starts
                .par_iter()
                .map(|&r| {
                    let end = (r + per_task).min(rows);
                    #[expect(clippy::cast_possible_truncation, reason = "a task is small")]
                    let mut x = vec![0f32; ((end - r) * k) as usize];
                    gather(ckpt, t, r * k..end * k, &mut x, &mut Vec::new(), allow_non_finite)?;
                    #[expect(clippy::cast_possible_truncation, reason = "a task is small")]
                    let mut sums = vec![0f64; (end - r) as usize];
                    packed::ternary::row_abs_sums(&x, k as usize, &mut sums);
                    Ok(sums)
                })
                .collect();
            let mut acc = 0f64;
            for p in parts {
                acc = p?.iter().fold(acc, |a, s| a + s);
            }
            out[i] = Stat { gamma: packed::ternary::gamma(acc, numel), ..Stat::default() };
            continue;
        }
        let starts: Vec<u64> = (0..numel).step_by(TASK_ELEMS as usize).collect();
        let parts: Vec<Result<Partial, Error>> = starts
            .par_iter()
            .map(|&s| task(ckpt, t, scheme, s..(s + TASK_ELEMS).min(numel), allow_non_finite))
            .collect();
        let mut total = Partial::default();
        for p in parts {
            let p = p?;
            total.amax = total.amax.max(p.amax);
            total.absmax.extend_from_slice(&p.absmax);
        }
        out[i] = Stat {
            gamma: 0.0,
            amax: total.amax,
            nf4_offset: if total.absmax.is_empty() {
                0.0
            } else {
                packed::nf4::mean(&total.absmax)
            },
        };
    }
    Ok(out)
}
