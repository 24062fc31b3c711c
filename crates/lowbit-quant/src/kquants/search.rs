//! Scalar ports of ggml's per-sub-block scale searches.
//!
//! These are the reference versions: every expression keeps the C evaluation order, so that a
//! sum of products rounds exactly as it does in ggml (Rust never contracts `a * b + c` into a
//! fused multiply-add). Only the configurations that the K-quant reference quantizers use are
//! ported: `make_qx_quants` with `rmse_type == 1` and no importance weights, and
//! `make_q3_quants` with `do_rmse == true`.

use super::{GROUP_MAX_EPS, nearest_int};

/// `int` to `float` as C converts it; every value here is small enough to be exact.
#[inline(always)]
#[expect(clippy::cast_precision_loss, reason = "small integers, exact in f32")]
pub(super) fn fl(v: i32) -> f32 {
    v as f32
}

/// The element of largest magnitude (the first one on ties) and that magnitude.
fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    (max, amax)
}

/// ggml's `make_qx_quants(n, nmax, x, L, 1, NULL)`: a symmetric scale for codes in
/// `0..2·nmax`, weighted by `x²`.
///
/// Starts from `−nmax / max` and tries the 18 scales `−(nmax + 0.1·k) / max`, `k = ±1..±9`,
/// keeping the one with the best weighted least-squares fit. Writes the codes (offset by
/// `nmax`) to `l_out` and returns the fitted scale.
pub(super) fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let (max, amax) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let quantize = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let mut iscale = -fl(nmax) / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for (&v, out) in x.iter().zip(l_out.iter_mut()) {
        let l = quantize(iscale, v);
        *out = i8::try_from(l + nmax).expect("code in 0..2·nmax");
        let w = v * v;
        sumlx += w * v * fl(l);
        suml2 += w * fl(l) * fl(l);
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(fl(nmax) + 0.1 * fl(is)) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let l = quantize(iscale, v);
            let w = v * v;
            sumlx += w * v * fl(l);
            suml2 += w * fl(l) * fl(l);
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (&v, out) in x.iter().zip(l_out.iter_mut()) {
                *out = i8::try_from(nmax + quantize(iscale, v)).expect("code in 0..2·nmax");
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// ggml's `make_q3_quants(n, nmax, x, L, true)`: a symmetric scale for codes in `0..2·nmax`,
/// refined element by element.
///
/// Starts from `−nmax / max`, then for up to five passes moves each code to the value that the
/// current least-squares fit (weights `x²`) suggests, keeping a move only if it improves the fit.
/// Writes the codes (offset by `nmax`) to `l_out` and returns the fitted scale.
pub(super) fn make_q3_quants(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let (max, amax) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let iscale = -fl(nmax) / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for (&v, out) in x.iter().zip(l_out.iter_mut()) {
        let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        *out = i8::try_from(l).expect("code in −nmax..nmax");
        let w = v * v;
        sumlx += w * v * fl(l);
        suml2 += w * fl(l) * fl(l);
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for (&v, li) in x.iter().zip(l_out.iter_mut()) {
            let w = v * v;
            let old = fl(i32::from(*li));
            let mut slx = sumlx - w * v * old;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * old * old;
                let new_l = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != i32::from(*li) {
                    slx += w * v * fl(new_l);
                    sl2 += w * fl(new_l) * fl(new_l);
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *li = i8::try_from(new_l).expect("code in −nmax..nmax");
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for li in l_out.iter_mut() {
        *li += i8::try_from(nmax).expect("small nmax");
    }
    if suml2 > 0.0 { sumlx / suml2 } else { 0.0 }
}

/// The fixed parameters of one `make_qkx2_quants` call site.
#[derive(Clone, Copy, Debug)]
pub(super) struct Qkx2 {
    /// Largest code.
    pub(super) nmax: i32,
    /// First trial offset added to `nmax`.
    pub(super) rmin: f32,
    /// Step between trial offsets.
    pub(super) rdelta: f32,
    /// Trial offsets are `rmin + rdelta·is` for `is` in `0..=nstep`.
    pub(super) nstep: i32,
    /// Minimise the weighted absolute error instead of the weighted squared error.
    pub(super) use_mad: bool,
}

impl Qkx2 {
    /// Q2_K: `make_qkx2_quants(16, 3, x, |x|, …, -0.5f, 0.1f, 15, true)`.
    pub(super) const Q2_K: Self =
        Self { nmax: 3, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: true };
    /// Q4_K: `make_qkx2_quants(32, 15, x, w, …, -1.f, 0.1f, 20, false)`.
    pub(super) const Q4_K: Self =
        Self { nmax: 15, rmin: -1.0, rdelta: 0.1, nstep: 20, use_mad: false };
    /// Q5_K: `make_qkx2_quants(32, 31, x, w, …, -0.5f, 0.1f, 15, false)`.
    pub(super) const Q5_K: Self =
        Self { nmax: 31, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: false };

    /// The numerator `rmin + rdelta·is + nmax` of trial `is`, rounded as the C rounds it.
    #[inline(always)]
    pub(super) fn trial(self, is: i32) -> f32 {
        self.rmin + self.rdelta * fl(is) + fl(self.nmax)
    }

    /// The error measure: `|diff|` or `diff²`.
    #[inline(always)]
    pub(super) fn err(self, diff: f32) -> f32 {
        if self.use_mad { diff.abs() } else { diff * diff }
    }
}

/// ggml's `make_qkx2_quants`: an asymmetric fit `x ≈ scale·L + min` with codes in `0..=nmax`
/// and `min ≤ 0`, minimising the weighted error over a grid of trial scales.
///
/// Writes the codes to `l_out` and returns `(scale, −min)`. Note that an accepted trial
/// replaces `min`, and later trials quantize against that new minimum.
pub(super) fn make_qkx2_quants(
    p: Qkx2,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
) -> (f32, f32) {
    let n = x.len();
    let nmax = p.nmax;
    let mut laux = [0u8; 32];
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out.fill(0);
        return (0.0, -min);
    }
    let code = |iscale: f32, v: f32, min: f32| {
        let l = nearest_int(iscale * (v - min)).clamp(0, nmax);
        u8::try_from(l).expect("code in 0..=nmax")
    };
    let mut iscale = fl(nmax) / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        l_out[i] = code(iscale, x[i], min);
        let diff = scale * f32::from(l_out[i]) + min - x[i];
        best_error += weights[i] * p.err(diff);
    }
    for is in 0..=p.nstep {
        iscale = p.trial(is) / (max - min);
        let mut sum_l = 0.0f32;
        let mut sum_l2 = 0.0f32;
        let mut sum_xl = 0.0f32;
        for i in 0..n {
            let l = code(iscale, x[i], min);
            laux[i] = l;
            let w = weights[i];
            let l = f32::from(l);
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * f32::from(laux[i]) + this_min - x[i];
                cur_error += weights[i] * p.err(diff);
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}
