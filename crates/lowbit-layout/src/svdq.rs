//! SVDQuant (`formats/svdq.md`): a smoothed weight split into a low-rank branch and an int4
//! residual, in comfy-kitchen's natural layout.
//!
//! Per layer `[N, K]`, rank `r`, `G` timestep groups (a leading `[G]` dimension on every tensor
//! when `G > 1`):
//! - `qweight` I8 `[N, K/2]`: the residual's signed int4 codes (−7..7), low nibble = even k,
//!   exactly `int4:g64`'s `weight`;
//! - `wscales` BF16 `[K/64, N]`: the residual's group scales (absmax/7), `int4:g64`'s
//!   `weight_scale`;
//! - `smooth_factor` BF16 `[K]`: λ; the layer computes `x / λ` before the int4 GEMM;
//! - `proj_down` BF16 `[K, r]`: acts on the unsmoothed input (the smoothed down-projection
//!   divided by λ);
//! - `proj_up` BF16 `[N, r]`.
//!
//! `y = Q_a(x / λ) · (codes · wscales)ᵀ + (x · proj_down) · proj_upᵀ + bias`, where `Q_a` is
//! the identity for W4A16 and, for W4A4, dynamic int4 per token in groups of 64 along K (scale
//! absmax/7, round half to even, clamp to ±7). The equivalent dense weight is
//! `W[n, k] = codes · wscales / λ_k + Σ_j proj_up[n, j] · proj_down[k, j]`.

use crate::error::{check_request, mul};
use crate::gemm::CHUNK_ROWS;
use crate::{Error, check_len};
use lowbit_dtype::f16::bf16_to_fp32;
use std::ops::Range;

/// The residual's group size along K.
pub const GROUP: u64 = 64;
/// Largest rank the scheme names accept.
pub const MAX_RANK: u16 = 1024;
/// Largest number of timestep groups the scheme names accept.
pub const MAX_GROUPS: u16 = 64;

/// The stored tensor suffixes, in file order.
pub const SUFFIXES: [&str; 5] = ["qweight", "wscales", "smooth_factor", "proj_down", "proj_up"];

/// BF16 values from little-endian bytes.
fn bf16s(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes.chunks_exact(2).map(|b| bf16_to_fp32(u16::from_le_bytes([b[0], b[1]])))
}

/// The bytes of timestep group `g` of a stored tensor whose one-group size is `each`.
fn group_part<'a>(
    name: &str,
    bytes: &'a [u8],
    groups: u64,
    g: u64,
    each: u64,
) -> Result<&'a [u8], Error> {
    check_len(name, bytes, mul(groups, each)?)?;
    // Lengths checked: the whole tensor is in memory, so these offsets fit in usize.
    let (a, b) = ((g * each) as usize, ((g + 1) * each) as usize);
    Ok(&bytes[a..b])
}

/// One timestep group's stored tensors, lengths checked; `proj_up` only for the rows asked for.
struct Parts<'a> {
    qweight: &'a [u8],
    wscales: &'a [u8],
    smooth: Vec<f32>,
    down: Vec<f32>,
    /// `proj_up` rows `rows` (of [`parts`]), `[rows.len(), r]`.
    up: Vec<f32>,
}

/// The stored tensors of timestep group `g`, with `proj_up` decoded for output rows `rows` only
/// (`rows` inside `0..n`, checked by the caller).
fn parts<'a>(
    stored: &[&'a [u8]],
    n: u64,
    k: u64,
    rank: u64,
    groups: u64,
    g: u64,
    rows: &Range<u64>,
) -> Result<Parts<'a>, Error> {
    if !k.is_multiple_of(GROUP) {
        return Err(Error::Value {
            tensor: "qweight".into(),
            reason: format!("row length {k} is not a multiple of {GROUP}"),
        });
    }
    if g >= groups {
        return Err(Error::Value {
            tensor: "smooth_factor".into(),
            reason: format!("timestep group {g} of {groups}"),
        });
    }
    let qweight = group_part("qweight", stored[0], groups, g, mul(n, k / 2)?)?;
    let wscales = group_part("wscales", stored[1], groups, g, mul(mul(k / GROUP, n)?, 2)?)?;
    let smooth: Vec<f32> =
        bf16s(group_part("smooth_factor", stored[2], groups, g, mul(k, 2)?)?).collect();
    if let Some(i) = smooth.iter().position(|v| !(v.is_finite() && *v > 0.0)) {
        return Err(Error::Value {
            tensor: "smooth_factor".into(),
            reason: format!("λ[{i}] = {} is not a positive finite number", smooth[i]),
        });
    }
    let down = bf16s(group_part("proj_down", stored[3], groups, g, mul(mul(k, rank)?, 2)?)?);
    let up = group_part("proj_up", stored[4], groups, g, mul(mul(n, rank)?, 2)?)?;
    // Length checked and rows inside 0..n: these byte offsets are inside `up`.
    let (a, b) = ((rows.start * rank * 2) as usize, (rows.end * rank * 2) as usize);
    let up = bf16s(&up[a..b]);
    Ok(Parts { qweight, wscales, smooth, down: down.collect(), up: up.collect() })
}

/// Decodes rows `rows` of the equivalent dense weight of timestep group 0.
///
/// # Errors
/// Stored tensors of the wrong length, a non-positive λ.
pub fn decode(
    stored: &[&[u8]],
    rank: u16,
    groups: u16,
    n: u64,
    k: u64,
    rows: Range<u64>,
    out: &mut [f32],
) -> Result<(), Error> {
    decode_group(stored, rank, groups, 0, n, k, rows, out)
}

/// Decodes rows `rows` of the equivalent dense weight of timestep group `g`.
///
/// # Errors
/// As [`decode`], and a group past the stored ones.
#[expect(clippy::too_many_arguments, reason = "the weight's shape, scheme and request")]
pub fn decode_group(
    stored: &[&[u8]],
    rank: u16,
    groups: u16,
    g: u64,
    n: u64,
    k: u64,
    rows: Range<u64>,
    out: &mut [f32],
) -> Result<(), Error> {
    let urows = check_request(stored, SUFFIXES.len(), n, k, &rows, out)?;
    let r = u64::from(rank);
    let p = parts(stored, n, k, r, u64::from(groups), g, &rows)?;
    if k == 0 || urows.is_empty() {
        return Ok(());
    }
    crate::int4::decode(&[p.qweight, p.wscales], 64, false, n, k, rows, out)?;
    let (k, r) = (k as usize, r as usize);
    for (i, o) in (0..urows.len()).zip(out.chunks_exact_mut(k)) {
        let up = &p.up[i * r..(i + 1) * r];
        for (kk, o) in o.iter_mut().enumerate() {
            let down = &p.down[kk * r..(kk + 1) * r];
            let mut branch = 0.0f32;
            for (u, d) in up.iter().zip(down) {
                branch += u * d;
            }
            *o = *o / p.smooth[kk] + branch;
        }
    }
    Ok(())
}

/// W4A4's activation quantizer on one token: `x / λ` in groups of 64, scale absmax/7 (at least
/// 1e-10, as comfy-kitchen's), codes rounded half to even and clamped to ±7; returns the
/// dequantized values (codes · scale).
pub fn quantize_token(x: &[f32], smooth: &[f32], out: &mut [f32]) {
    for ((xs, ls), o) in
        x.chunks(GROUP as usize).zip(smooth.chunks(GROUP as usize)).zip(out.chunks_mut(64))
    {
        let mut amax = 0.0f32;
        for (o, (&v, &l)) in o.iter_mut().zip(xs.iter().zip(ls)) {
            *o = v / l;
            amax = amax.max(o.abs());
        }
        let scale = amax.max(1e-10) / 7.0;
        for o in o.iter_mut() {
            *o = (*o / scale).round_ties_even().clamp(-7.0, 7.0) * scale;
        }
    }
}

/// The CPU reference of a layer: `y [m, cols.len()]` (row-major) for `x [m, k]`, output
/// columns `cols` of the `n`, timestep group `g`, with int4 activations when `act4`, `bias`
/// (`n` values, `bias[c]` for column `c`) added when given; products accumulated in `f64`, in
/// order along K. Only rows `cols` of the residual and of `proj_up` are decoded, 64 at a time, so
/// a column range gives exactly the matching columns of the whole output.
///
/// # Errors
/// As [`decode_group`], and `x`, `bias` or `cols` that do not fit the layer.
#[expect(clippy::too_many_arguments, reason = "the weight's shape, scheme and input")]
pub fn forward(
    stored: &[&[u8]],
    rank: u16,
    groups: u16,
    g: u64,
    act4: bool,
    n: u64,
    k: u64,
    cols: Range<u64>,
    x: &[f32],
    bias: Option<&[f32]>,
) -> Result<Vec<f32>, Error> {
    let value = |reason: String| Error::Value { tensor: "input".into(), reason };
    if stored.len() != SUFFIXES.len() {
        return Err(Error::Value {
            tensor: "qweight".into(),
            reason: format!("{} stored tensors where the layout has 5", stored.len()),
        });
    }
    if cols.start > cols.end || cols.end > n {
        return Err(value(format!("columns {cols:?} are not inside the layer's {n} outputs")));
    }
    let p = parts(stored, n, k, u64::from(rank), u64::from(groups), g, &cols)?;
    if k == 0 || !(x.len() as u64).is_multiple_of(k) {
        return Err(value(format!("{} input values are not rows of {k}", x.len())));
    }
    if let Some(b) = bias.filter(|b| b.len() as u64 != n) {
        return Err(value(format!("bias of {} values for {n} outputs", b.len())));
    }
    // Lengths checked: qweight holds n·k/2 bytes (n ≥ cols.end), and x holds a whole number of
    // rows of k, so these fit in usize.
    let (k, r) = (k as usize, usize::from(rank));
    let (c0, width) = (cols.start as usize, (cols.end - cols.start) as usize);
    let m = x.len() / k;
    let mut xq = vec![0f32; x.len()];
    for (xr, o) in x.chunks_exact(k).zip(xq.chunks_exact_mut(k)) {
        if act4 {
            quantize_token(xr, &p.smooth, o);
        } else {
            for ((o, v), l) in o.iter_mut().zip(xr).zip(&p.smooth) {
                *o = v / l;
            }
        }
    }
    // The branch's down-projection of every token, `[m, r]`.
    let mut lora = vec![0f64; m * r];
    if r > 0 {
        for (xr, lr) in x.chunks_exact(k).zip(lora.chunks_exact_mut(r)) {
            for (j, l) in lr.iter_mut().enumerate() {
                *l = xr
                    .iter()
                    .enumerate()
                    .map(|(kk, v)| f64::from(*v) * f64::from(p.down[kk * r + j]))
                    .sum();
            }
        }
    }
    let mut y = vec![0f32; m * width];
    let chunk = CHUNK_ROWS.min(width);
    let mut w = vec![0f32; chunk * k];
    for first in (0..width).step_by(chunk.max(1)) {
        let rows = first..(first + chunk).min(width);
        let w = &mut w[..rows.len() * k];
        let stored_rows = (c0 + rows.start) as u64..(c0 + rows.end) as u64;
        crate::int4::decode(&[p.qweight, p.wscales], 64, false, n, k as u64, stored_rows, w)?;
        for i in 0..m {
            let qr = &xq[i * k..(i + 1) * k];
            let lr = &lora[i * r..(i + 1) * r];
            for (c, wr) in rows.clone().zip(w.chunks_exact(k)) {
                let mut acc: f64 =
                    qr.iter().zip(wr).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
                acc += lr
                    .iter()
                    .zip(&p.up[c * r..(c + 1) * r])
                    .map(|(a, b)| a * f64::from(*b))
                    .sum::<f64>();
                if let Some(b) = bias {
                    acc += f64::from(b[c0 + c]);
                }
                y[i * width + c] = acc as f32;
            }
        }
    }
    Ok(y)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{decode, decode_group, forward, quantize_token};
    use lowbit_dtype::f16::fp32_to_bf16;

    fn bf(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| fp32_to_bf16(*x).to_le_bytes()).collect()
    }

    /// A [2, 64] layer of rank 1: codes all 1 in row 0 and −2 in row 1, scale 0.5, λ = 2,
    /// down = 1/64 everywhere, up = [1, −1] (also `gemm`'s tests' SVDQuant layer).
    pub(crate) fn layer() -> Vec<Vec<u8>> {
        let mut q = vec![0x11u8; 32];
        q.extend(vec![0xeeu8; 32]);
        vec![q, bf(&[0.5, 0.5]), bf(&[2.0; 64]), bf(&[1.0 / 64.0; 64]), bf(&[1.0, -1.0])]
    }

    #[test]
    fn decodes_the_equivalent_weight() {
        let s = layer();
        let stored: Vec<&[u8]> = s.iter().map(Vec::as_slice).collect();
        let mut out = vec![0f32; 128];
        decode(&stored, 1, 1, 2, 64, 0..2, &mut out).unwrap();
        // Row 0: 1·0.5/2 + 1/64; row 1: −2·0.5/2 − 1/64.
        assert!(out[..64].iter().all(|v| *v == 0.25 + 1.0 / 64.0), "{}", out[0]);
        assert!(out[64..].iter().all(|v| *v == -0.5 - 1.0 / 64.0), "{}", out[64]);
        assert!(decode_group(&stored, 1, 1, 1, 2, 64, 0..2, &mut out).is_err());
        let e = decode(&stored[..4], 1, 1, 2, 64, 0..2, &mut out).unwrap_err();
        assert!(e.to_string().contains("4 stored tensors"), "{e}");
        let short = [stored[0], stored[1], &stored[2][..126], stored[3], stored[4]];
        let e = decode(&short, 1, 1, 2, 64, 0..2, &mut out).unwrap_err();
        assert!(e.to_string().contains("smooth_factor"), "{e}");
        let zero = bf(&[0.0; 64]);
        let bad = [stored[0], stored[1], &zero, stored[3], stored[4]];
        let e = decode(&bad, 1, 1, 2, 64, 0..2, &mut out).unwrap_err();
        assert!(e.to_string().contains("λ[0]"), "{e}");
    }

    #[test]
    fn activation_quantizer_rounds_half_to_even() {
        // λ = 1, absmax 7 → scale 1: 2.5 → 2, 3.5 → 4, −0.5 → −0, 7 → 7.
        let mut x = vec![0f32; 64];
        x[..4].copy_from_slice(&[2.5, 3.5, -0.5, 7.0]);
        let mut out = vec![0f32; 64];
        quantize_token(&x, &[1.0; 64], &mut out);
        assert_eq!(&out[..4], &[2.0, 4.0, -0.0, 7.0]);
    }

    #[test]
    fn forward_matches_the_dense_weight_without_activation_quantization() {
        let s = layer();
        let stored: Vec<&[u8]> = s.iter().map(Vec::as_slice).collect();
        let x: Vec<f32> = (0..128).map(|i| (i as f32 * 0.37).sin()).collect();
        let y = forward(&stored, 1, 1, 0, false, 2, 64, 0..2, &x, Some(&[1.0, 2.0])).unwrap();
        let mut w = vec![0f32; 128];
        decode(&stored, 1, 1, 2, 64, 0..2, &mut w).unwrap();
        for m in 0..2 {
            for n in 0..2 {
                let want: f64 =
                    (0..64).map(|k| f64::from(x[m * 64 + k] * w[n * 64 + k])).sum::<f64>()
                        + [1.0, 2.0][n];
                assert!((f64::from(y[m * 2 + n]) - want).abs() < 1e-5, "{m} {n}");
            }
        }
        assert!(forward(&stored, 1, 1, 0, true, 2, 64, 0..2, &x[..100], None).is_err());
        assert!(forward(&stored, 1, 1, 0, true, 2, 64, 0..2, &x, Some(&[1.0])).is_err());
        assert!(forward(&stored, 1, 1, 0, true, 2, 64, 1..3, &x, None).is_err());
    }
}
