//! SDNQ `uint4` layers (`formats/sdnq.md`): rows quantized as `sdnq` does, and with SVD the
//! whole layer at once: lowbit's seeded randomized SVD (λ = 1) gives the branch, stored in
//! BF16, and the residual against the branch as stored is quantized like any uint4 weight.

use crate::Error;
use crate::plan::PlannedTensor;
use lowbit_checkpoint::Checkpoint;
use lowbit_dtype::f16::{bf16_to_fp32, fp32_to_bf16};
use lowbit_fixtures::rng::Rng;
use lowbit_layout::sdnq::{default_group, groups};
use lowbit_quant::packed;
use lowbit_svdq::RsvdOptions;
use rayon::prelude::*;

/// Rows of a run (`x`, whole rows of `k`) as SDNQ `uint4`: packed codes, scales, zero points.
pub(crate) fn encode_rows(x: &[f32], k: usize, rank: u16) -> [Vec<u8>; 3] {
    #[expect(clippy::cast_possible_truncation, reason = "the group divides a row in memory")]
    let g = groups(k as u64, default_group(rank > 0)).0 as usize;
    let mut w = vec![0u8; x.len() / 2];
    let mut scale = vec![0f32; x.len() / g.max(1)];
    let mut zero = vec![0f32; scale.len()];
    if !x.is_empty() {
        packed::sdnq::quantize_rows(x, k, g, &mut w, &mut scale, &mut zero);
    }
    let bytes = |v: &[f32]| v.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
    [w, bytes(&scale), bytes(&zero)]
}

/// The residual `W − up · down` of one layer (`up` `[n, r]`, `down` `[r, k]`, both as stored):
/// every element `f32(f64(w) − Σ_j f64(up) · f64(down))`, the sum in order of `j`, so it is
/// what torch computes in float64 from the same tensors.
pub(crate) fn residual(w: &[f32], k: usize, up: &[f32], down: &[f32], r: usize) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    out.par_chunks_mut(k.max(1)).zip(w.par_chunks(k.max(1))).enumerate().for_each(
        |(row, (o, wr))| {
            let u = &up[row * r..(row + 1) * r];
            for (c, (o, &wv)) in o.iter_mut().zip(wr).enumerate() {
                let mut s = 0f64;
                for (j, &uv) in u.iter().enumerate() {
                    s += f64::from(uv) * f64::from(down[j * k + c]);
                }
                #[expect(clippy::cast_possible_truncation, reason = "the one rounding to f32")]
                let v = (f64::from(wv) - s) as f32;
                *o = v;
            }
        },
    );
    out
}

/// Quantizes one `sdnq:uint4-svd` layer whole; returns its five stored tensors' bytes.
///
/// # Errors
/// Read failures, non-finite weights (an SVD cannot factor them).
pub(crate) fn quantize_layer(
    ckpt: &Checkpoint,
    t: &PlannedTensor,
    seed: u64,
) -> Result<Vec<Vec<u8>>, Error> {
    let Some(lowbit_layout::Scheme::Sdnq { rank }) = t.scheme else {
        unreachable!("only SDNQ layers come here")
    };
    #[expect(clippy::cast_possible_truncation, reason = "the weight is read into memory")]
    let (n, k) = (t.shape[0] as usize, t.shape[1] as usize);
    let w = crate::svdq::read_whole(ckpt, t)?;
    let seed = Rng::for_name(seed, &t.name).next_u64();
    let lr =
        lowbit_svdq::rsvd(&w, n, k, usize::from(rank), &RsvdOptions { seed, ..Default::default() });
    let r = lr.rank;
    let up: Vec<u16> = lr.up.iter().map(|&v| fp32_to_bf16(v)).collect();
    // lowbit's `down` is [k, r]; sdnq stores [r, k].
    let down: Vec<u16> = (0..r * k).map(|i| fp32_to_bf16(lr.down[(i % k) * r + i / k])).collect();
    let (upf, downf): (Vec<f32>, Vec<f32>) = (
        up.iter().map(|&v| bf16_to_fp32(v)).collect(),
        down.iter().map(|&v| bf16_to_fp32(v)).collect(),
    );
    let res = residual(&w, k, &upf, &downf, r);
    // Whole rows in parallel blocks: each row is quantized alone, so blocks change no byte.
    let block = 64 * k.max(1);
    let parts: Vec<[Vec<u8>; 3]> = res.par_chunks(block).map(|x| encode_rows(x, k, rank)).collect();
    let mut stored: Vec<Vec<u8>> = vec![Vec::new(); 5];
    for p in parts {
        for (s, b) in stored.iter_mut().zip(p) {
            s.extend_from_slice(&b);
        }
    }
    stored[3] = up.iter().flat_map(|v| v.to_le_bytes()).collect();
    stored[4] = down.iter().flat_map(|v| v.to_le_bytes()).collect();
    Ok(stored)
}

/// The `quantization_config` of an SDNQ plan: `sdnq`'s own for `uint4` (with SVD for a
/// nonzero `rank`), `modules_to_not_convert` its FLUX skip keys plus every other `.weight` the
/// plan keeps dense (norms, as sdnq lists them itself; `Linear`s kept by a rule or by a size
/// sdnq skips), so that diffusers loads those unquantized.
#[must_use]
pub(crate) fn quantization_config(plan: &crate::Plan, rank: u16) -> serde_json::Value {
    let mut skip: Vec<String> =
        lowbit_layout::sdnq::FLUX_SKIP_KEYS.iter().map(|s| (*s).to_owned()).collect();
    skip.extend(
        plan.tensors
            .iter()
            .filter(|t| t.scheme.is_none() && t.name.ends_with(".weight"))
            .filter(|t| !lowbit_layout::sdnq::flux_skips(&t.name))
            .map(|t| t.name.clone()),
    );
    lowbit_layout::sdnq::quantization_config(rank, &skip)
}
