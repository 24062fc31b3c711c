//! The scale searches of [`super::search`], run for several sub-blocks at once.
//!
//! The sub-blocks are transposed so that `xt[i]` holds element `i` of every sub-block, one per
//! lane of a [`V`]; every loop then walks the elements in the C order and does the scalar
//! reference's step in each lane. Each lane therefore performs exactly the reference's
//! operations in the reference's order (sums are never reassociated), and every C branch
//! becomes a per-lane compare and blend. Work done in a lane that the C would have skipped (a
//! flat or all-zero sub-block, a refinement pass after convergence) has no effect on that
//! lane's result; the comments at each such place say why.

use super::GROUP_MAX_EPS;
use super::search::{Qkx2, fl};
use crate::lanes::V;

/// Transposes `L` sub-blocks of `N` consecutive elements into `N` rows of lanes.
#[inline(always)]
fn transpose<const N: usize, const L: usize>(x: &[f32]) -> [V<L>; N] {
    assert_eq!(x.len(), N * L);
    let mut xt = [V::splat(0.0); N];
    for (s, sub) in x.chunks_exact(N).enumerate() {
        for (row, &v) in xt.iter_mut().zip(sub) {
            row.0[s] = v;
        }
    }
    xt
}

/// Q2_K weights `|x|` for every lane.
#[inline(always)]
pub(super) fn abs_weights<const N: usize, const L: usize>(xt: &[V<L>; N]) -> [V<L>; N] {
    let mut w = [V::splat(0.0); N];
    for (w, &v) in w.iter_mut().zip(xt) {
        *w = v.abs();
    }
    w
}

/// Q4_K / Q5_K weights `sqrt(Σx²/32) + |x|` for every lane.
#[inline(always)]
pub(super) fn rms_weights<const L: usize>(xt: &[V<L>; 32]) -> [V<L>; 32] {
    let mut sum_x2 = V::splat(0.0);
    for &v in xt {
        sum_x2 = sum_x2.add(v.mul(v));
    }
    let av_x = sum_x2.div(V::splat(32.0)).sqrt();
    let mut w = [V::splat(0.0); 32];
    for (w, &v) in w.iter_mut().zip(xt) {
        *w = av_x.add(v.abs());
    }
    w
}

/// Per-sub-block result of [`make_qkx2_quants`].
pub(super) struct Qkx2Fit<const L: usize> {
    /// The fitted scale.
    pub(super) scale: [f32; L],
    /// The fitted minimum, negated (`*the_min` in C).
    pub(super) the_min: [f32; L],
    /// The inverse scale that produced the kept codes.
    code_iscale: [f32; L],
    /// The minimum that produced the kept codes.
    code_min: [f32; L],
    /// Sub-blocks that returned early with all codes zero.
    flat: [bool; L],
}

impl<const L: usize> Default for Qkx2Fit<L> {
    fn default() -> Self {
        Self {
            scale: [0.0; L],
            the_min: [0.0; L],
            code_iscale: [0.0; L],
            code_min: [0.0; L],
            flat: [false; L],
        }
    }
}

impl<const L: usize> Qkx2Fit<L> {
    /// The codes the search left for sub-block `s` (whose inputs are `x`), as the reference writes
    /// them to `L`: the same expression that produced them, recomputed.
    pub(super) fn codes(&self, p: Qkx2, s: usize, x: &[f32], out: &mut [u8]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = if self.flat[s] {
                0
            } else {
                let l = super::nearest_int(self.code_iscale[s] * (v - self.code_min[s]));
                u8::try_from(l.clamp(0, p.nmax)).expect("0..=nmax")
            };
        }
    }
}

/// [`super::search::make_qkx2_quants`] for the `S` sub-blocks of `N` elements in `x`, `G` at a
/// time, with weights computed by `weights` from the transposed inputs.
///
/// The trials are sequential (an accepted trial moves the minimum that later trials quantize
/// against), so the lanes are the sub-blocks. The codes are not kept; [`Qkx2Fit::codes`]
/// recomputes them for the rare sub-block that needs them.
#[inline(always)]
pub(super) fn make_qkx2_quants<const N: usize, const S: usize, const G: usize>(
    p: Qkx2,
    x: &[f32],
    weights: impl Fn(&[V<G>; N]) -> [V<G>; N],
) -> Qkx2Fit<S> {
    let mut fit = Qkx2Fit::default();
    for (g, xg) in x.chunks_exact(N * G).enumerate() {
        let xt = transpose(xg);
        qkx2_group(p, &xt, &weights(&xt), &mut fit, G * g);
    }
    fit
}

/// One group of [`make_qkx2_quants`], written to sub-blocks `at..at + L` of `fit`.
#[inline(always)]
fn qkx2_group<const N: usize, const L: usize, const S: usize>(
    p: Qkx2,
    xt: &[V<L>; N],
    wt: &[V<L>; N],
    fit: &mut Qkx2Fit<S>,
    at: usize,
) {
    let zero = V::splat(0.0);
    let nmax = V::splat(fl(p.nmax));
    let err = |diff: V<L>| if p.use_mad { diff.abs() } else { diff.mul(diff) };
    let mut min = xt[0];
    let mut max = xt[0];
    let mut sum_w = wt[0];
    let mut sum_x = sum_w.mul(xt[0]);
    for i in 1..N {
        let v = xt[i];
        min = v.min_c(min);
        max = v.max_c(max);
        sum_w = sum_w.add(wt[i]);
        sum_x = sum_x.add(wt[i].mul(v));
    }
    min = min.gt(zero).select(zero, min);
    // A flat lane returns here in C; below it computes values that are never read.
    let flat = max.eq(min);
    let flat_min = min;
    let mut iscale = nmax.div(max.sub(min));
    let mut scale = V::splat(1.0).div(iscale);
    let mut best_error = zero;
    for i in 0..N {
        let l = iscale.mul(xt[i].sub(min)).code(zero, nmax);
        let diff = scale.mul(l).add(min).sub(xt[i]);
        best_error = best_error.add(wt[i].mul(err(diff)));
    }
    let mut code_iscale = iscale;
    let mut code_min = min;
    let mut laux = [zero; N];
    for is in 0..=p.nstep {
        iscale = V::splat(p.trial(is)).div(max.sub(min));
        let mut sum_l = zero;
        let mut sum_l2 = zero;
        let mut sum_xl = zero;
        for i in 0..N {
            let v = xt[i];
            let l = iscale.mul(v.sub(min)).code(zero, nmax);
            laux[i] = l;
            let wl = wt[i].mul(l);
            sum_l = sum_l.add(wl);
            sum_l2 = sum_l2.add(wl.mul(l));
            sum_xl = sum_xl.add(wl.mul(v));
        }
        let d = sum_w.mul(sum_l2).sub(sum_l.mul(sum_l));
        let this_scale = sum_w.mul(sum_xl).sub(sum_x.mul(sum_l)).div(d);
        let this_min = sum_l2.mul(sum_x).sub(sum_l.mul(sum_xl)).div(d);
        let clamp = this_min.gt(zero);
        let this_min = clamp.select(zero, this_min);
        let this_scale = clamp.select(sum_xl.div(sum_l2), this_scale);
        // Computed for every lane; C skips it where `D <= 0`, and such lanes ignore it below.
        let mut cur_error = zero;
        for i in 0..N {
            let diff = this_scale.mul(laux[i]).add(this_min).sub(xt[i]);
            cur_error = cur_error.add(wt[i].mul(err(diff)));
        }
        let take = d.gt(zero).and(cur_error.lt(best_error));
        best_error = take.select(cur_error, best_error);
        scale = take.select(this_scale, scale);
        code_iscale = take.select(iscale, code_iscale);
        code_min = take.select(min, code_min);
        min = take.select(this_min, min);
    }
    let lanes = at..at + L;
    fit.scale[lanes.clone()].copy_from_slice(&flat.select(zero, scale).0);
    fit.the_min[lanes.clone()].copy_from_slice(&flat.select(flat_min, min).neg().0);
    fit.code_iscale[lanes.clone()].copy_from_slice(&code_iscale.0);
    fit.code_min[lanes.clone()].copy_from_slice(&code_min.0);
    fit.flat[lanes].copy_from_slice(&flat.to_bools());
}

/// The element of largest magnitude (the first on ties) and that magnitude, per lane.
#[inline(always)]
fn signed_absmax<const N: usize, const L: usize>(xt: &[V<L>; N]) -> (V<L>, V<L>) {
    let mut max = V::splat(0.0);
    let mut amax = V::splat(0.0);
    for &v in xt {
        let ax = v.abs();
        let take = ax.gt(amax);
        amax = take.select(ax, amax);
        max = take.select(v, max);
    }
    (max, amax)
}

/// The weights `x²` of `make_qx_quants` and `make_q3_quants`, and `x²·x`, the first factor of
/// their `w*x[i]*l` (C evaluates it left to right, so precomputing it changes nothing).
#[inline(always)]
fn weights_x2<const N: usize, const L: usize>(xt: &[V<L>; N]) -> ([V<L>; N], [V<L>; N]) {
    let mut w = [V::splat(0.0); N];
    let mut wx = [V::splat(0.0); N];
    for i in 0..N {
        w[i] = xt[i].mul(xt[i]);
        wx[i] = w[i].mul(xt[i]);
    }
    (w, wx)
}

/// Per-sub-block result of [`make_qx_quants`].
pub(super) struct QxFit<const L: usize> {
    /// The fitted scale (0 for an all-zero sub-block).
    pub(super) scale: [f32; L],
    /// The inverse scale that produced the kept codes.
    code_iscale: [f32; L],
    /// Sub-blocks that returned early with all codes zero.
    zero: [bool; L],
}

impl<const L: usize> Default for QxFit<L> {
    fn default() -> Self {
        Self { scale: [0.0; L], code_iscale: [0.0; L], zero: [false; L] }
    }
}

impl<const L: usize> QxFit<L> {
    /// The codes the search left for sub-block `s` (whose inputs are `x`), offset by `nmax` as the
    /// reference writes them to `L`.
    pub(super) fn codes(&self, nmax: i32, s: usize, x: &[f32], out: &mut [i8]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = if self.zero[s] {
                0
            } else {
                let l = super::nearest_int(self.code_iscale[s] * v).clamp(-nmax, nmax - 1);
                i8::try_from(l + nmax).expect("0..2·nmax")
            };
        }
    }
}

/// [`super::search::make_qx_quants`] for the `S` sub-blocks of `N` elements in `x`, `G` at a
/// time.
///
/// The 19 candidate scales do not depend on each other; only the choice among them is
/// sequential, so each candidate's sums are computed in every lane and then compared.
#[inline(always)]
pub(super) fn make_qx_quants<const N: usize, const S: usize, const G: usize>(
    nmax: i32,
    x: &[f32],
) -> QxFit<S> {
    let mut fit = QxFit::default();
    for (g, xg) in x.chunks_exact(N * G).enumerate() {
        qx_group::<N, G, S>(nmax, &transpose(xg), &mut fit, G * g);
    }
    fit
}

/// One group of [`make_qx_quants`], written to sub-blocks `at..at + L` of `fit`.
#[inline(always)]
fn qx_group<const N: usize, const L: usize, const S: usize>(
    nmax: i32,
    xt: &[V<L>; N],
    fit: &mut QxFit<S>,
    at: usize,
) {
    let (max, amax) = signed_absmax(xt);
    let zero = V::splat(0.0);
    let (lo, hi) = (V::splat(fl(-nmax)), V::splat(fl(nmax - 1)));
    let (w, wx) = weights_x2(xt);
    let mut scale = zero;
    let mut best = zero;
    let mut code_iscale = zero;
    // Candidate 0 is the starting scale `−nmax/max`; 1..19 are `is = −9..−1, 1..9`.
    for c in 0..19 {
        let num = if c == 0 {
            -fl(nmax)
        } else {
            let is = if c <= 9 { c - 10 } else { c - 9 };
            -(fl(nmax) + 0.1 * fl(is))
        };
        let iscale = V::splat(num).div(max);
        let mut sumlx = zero;
        let mut suml2 = zero;
        for i in 0..N {
            let l = iscale.mul(xt[i]).code(lo, hi);
            sumlx = sumlx.add(wx[i].mul(l));
            suml2 = suml2.add(w[i].mul(l).mul(l));
        }
        if c == 0 {
            scale = suml2.ne(zero).select(sumlx.div(suml2), zero);
            best = scale.mul(sumlx);
            code_iscale = iscale;
        } else {
            let take = suml2.gt(zero).and(sumlx.mul(sumlx).gt(best.mul(suml2)));
            let new_scale = sumlx.div(suml2);
            scale = take.select(new_scale, scale);
            best = take.select(new_scale.mul(sumlx), best);
            code_iscale = take.select(iscale, code_iscale);
        }
    }
    // An all-zero lane returns 0 in C before any of the above.
    let zero_lane = amax.lt(V::splat(GROUP_MAX_EPS));
    let lanes = at..at + L;
    fit.scale[lanes.clone()].copy_from_slice(&zero_lane.select(zero, scale).0);
    fit.code_iscale[lanes.clone()].copy_from_slice(&code_iscale.0);
    fit.zero[lanes].copy_from_slice(&zero_lane.to_bools());
}

/// Per-sub-block result of [`make_q3_quants`].
pub(super) struct Q3Fit<const N: usize, const S: usize> {
    /// The fitted scale (0 for an all-zero sub-block).
    pub(super) scale: [f32; S],
    /// `codes[i][s]`: code `i` of sub-block `s`, offset by `nmax` as the reference writes it.
    pub(super) codes: [[f32; S]; N],
}

/// [`super::search::make_q3_quants`] for the `S` sub-blocks of `N` elements in `x`, `G` at a
/// time.
///
/// All lanes of a group run the same number of refinement passes. The C stops a sub-block after
/// a pass that changed nothing; such a pass leaves its state untouched, so every later pass over
/// that state changes nothing either. A group stops once none of its lanes changed.
#[inline(always)]
pub(super) fn make_q3_quants<const N: usize, const S: usize, const G: usize>(
    nmax: i32,
    x: &[f32],
) -> Q3Fit<N, S> {
    let mut fit = Q3Fit { scale: [0.0; S], codes: [[0.0; S]; N] };
    for (g, xg) in x.chunks_exact(N * G).enumerate() {
        q3_group::<N, G, S>(nmax, &transpose(xg), &mut fit, G * g);
    }
    fit
}

/// One group of [`make_q3_quants`], written to sub-blocks `at..at + L` of `fit`.
#[inline(always)]
fn q3_group<const N: usize, const L: usize, const S: usize>(
    nmax: i32,
    xt: &[V<L>; N],
    fit: &mut Q3Fit<N, S>,
    at: usize,
) {
    let (max, amax) = signed_absmax(xt);
    let zero = V::splat(0.0);
    let (lo, hi) = (V::splat(fl(-nmax)), V::splat(fl(nmax - 1)));
    // All-zero lanes return early in C; here they run along, but cannot hold up the others.
    let live = amax.lt(V::splat(GROUP_MAX_EPS)).not();
    let iscale = V::splat(-fl(nmax)).div(max);
    let (w, wx) = weights_x2(xt);
    let mut lt = [zero; N];
    let mut sumlx = zero;
    let mut suml2 = zero;
    for i in 0..N {
        lt[i] = iscale.mul(xt[i]).code(lo, hi);
        sumlx = sumlx.add(wx[i].mul(lt[i]));
        suml2 = suml2.add(w[i].mul(lt[i]).mul(lt[i]));
    }
    for _ in 0..5 {
        let mut changed = false;
        for i in 0..N {
            let old = lt[i];
            let slx = sumlx.sub(wx[i].mul(old));
            let sl2 = suml2.sub(w[i].mul(old).mul(old));
            let new_l = xt[i].mul(sl2).div(slx).code(lo, hi);
            let slx_new = slx.add(wx[i].mul(new_l));
            let sl2_new = sl2.add(w[i].mul(new_l).mul(new_l));
            let better = slx_new.mul(slx_new).mul(suml2).gt(sumlx.mul(sumlx).mul(sl2_new));
            let take = slx.gt(zero).and(new_l.ne(old)).and(sl2_new.gt(zero)).and(better).and(live);
            // Most elements change in no lane. Branching on that (rather than always
            // blending) lets the processor run ahead with the unchanged sums instead of waiting
            // for this element's division and compares.
            if take.any() {
                lt[i] = take.select(new_l, old);
                sumlx = take.select(slx_new, sumlx);
                suml2 = take.select(sl2_new, suml2);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let scale = suml2.gt(zero).select(sumlx.div(suml2), zero);
    // An all-zero lane returns 0 in C, with all codes 0 (not `nmax`).
    let offset = live.select(V::splat(fl(nmax)), zero);
    let lanes = at..at + L;
    for (row, l) in fit.codes.iter_mut().zip(lt) {
        row[lanes.clone()].copy_from_slice(&live.select(l, zero).add(offset).0);
    }
    fit.scale[lanes].copy_from_slice(&live.select(scale, zero).0);
}

#[cfg(test)]
mod tests {
    use super::super::search;
    use super::super::testutil::corpus;
    use super::{Qkx2, abs_weights, make_q3_quants, make_qkx2_quants, make_qx_quants, rms_weights};

    /// Every block of the corpus, as super-blocks.
    fn blocks(seed: u64) -> Vec<f32> {
        corpus(seed, 600)
    }

    fn same(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits()
    }

    #[test]
    fn qkx2_lanes_equal_scalar_search() {
        let x = blocks(11);
        for (p, n) in [(Qkx2::Q2_K, 16), (Qkx2::Q4_K, 32), (Qkx2::Q5_K, 32)] {
            for b in x.chunks_exact(256) {
                let (scales, mins, codes): (Vec<f32>, Vec<f32>, Vec<Vec<u8>>) = if n == 16 {
                    let fit = make_qkx2_quants::<16, 16, 8>(p, b, abs_weights);
                    let codes = (0..16)
                        .map(|s| {
                            let mut c = vec![0; 16];
                            fit.codes(p, s, &b[16 * s..16 * s + 16], &mut c);
                            c
                        })
                        .collect();
                    (fit.scale.to_vec(), fit.the_min.to_vec(), codes)
                } else {
                    let fit = make_qkx2_quants::<32, 8, 4>(p, b, rms_weights);
                    let codes = (0..8)
                        .map(|s| {
                            let mut c = vec![0; 32];
                            fit.codes(p, s, &b[32 * s..32 * s + 32], &mut c);
                            c
                        })
                        .collect();
                    (fit.scale.to_vec(), fit.the_min.to_vec(), codes)
                };
                for (s, xs) in b.chunks_exact(n).enumerate() {
                    let w: Vec<f32> = if n == 16 {
                        xs.iter().map(|v| v.abs()).collect()
                    } else {
                        let sum_x2 = xs.iter().fold(0.0f32, |a, &v| a + v * v);
                        let av_x = (sum_x2 / 32.0).sqrt();
                        xs.iter().map(|v| av_x + v.abs()).collect()
                    };
                    let mut l = vec![0u8; n];
                    let (scale, the_min) = search::make_qkx2_quants(p, xs, &w, &mut l);
                    assert!(same(scale, scales[s]) && same(the_min, mins[s]), "{p:?} {xs:?}");
                    assert_eq!(l, codes[s], "{p:?} {xs:?}");
                }
            }
        }
    }

    #[test]
    fn qx_lanes_equal_scalar_search() {
        let x = blocks(12);
        for b in x.chunks_exact(256) {
            let fit = make_qx_quants::<16, 16, 8>(32, b);
            for (s, xs) in b.chunks_exact(16).enumerate() {
                let mut want = [0i8; 16];
                let scale = search::make_qx_quants(32, xs, &mut want);
                let mut got = [0i8; 16];
                fit.codes(32, s, xs, &mut got);
                assert!(same(scale, fit.scale[s]), "{xs:?}");
                assert_eq!(want, got, "{xs:?}");
            }
        }
    }

    #[test]
    fn q3_lanes_equal_scalar_search() {
        let x = blocks(13);
        for b in x.chunks_exact(256) {
            let fit = make_q3_quants::<16, 16, 4>(4, b);
            for (s, xs) in b.chunks_exact(16).enumerate() {
                let mut want = [0i8; 16];
                let scale = search::make_q3_quants(4, xs, &mut want);
                assert!(same(scale, fit.scale[s]), "{xs:?}");
                for (i, &w) in want.iter().enumerate() {
                    assert_eq!(f32::from(w), fit.codes[i][s], "{xs:?}");
                }
            }
        }
    }
}
