//! The BitNet b1.58 absmean rule: γ = mean |W| (floored at 1e-5), q = clamp(round(W/γ), −1, 1)
//! with round half to even (`formats/ternary.md`, `formats/bitnet.md`).

/// The smallest γ: BitNet's floor, which keeps an all-zero weight from dividing by zero.
pub const GAMMA_FLOOR: f32 = 1e-5;

/// Σ|x|, accumulated in `f64` in index order from 0: the rule's sum for one row (per channel)
/// or for a tensor held in one slice. For a tensor read in chunks, use [`abs_sum_from`]:
/// adding the per-chunk sums rounds differently and would make γ depend on the chunking.
#[must_use]
pub fn abs_sum(x: &[f32]) -> f64 {
    abs_sum_from(0.0, x)
}

/// Continues an index-order sum: `acc + |x[0]| + |x[1]| + …`, left to right in `f64`. Folding
/// the chunks of a tensor in order through this gives exactly `abs_sum` of the whole tensor,
/// whatever the chunk sizes.
#[must_use]
pub fn abs_sum_from(acc: f64, x: &[f32]) -> f64 {
    x.iter().fold(acc, |a, &v| a + f64::from(v.abs()))
}

/// γ from Σ|W| over `count` elements: the mean rounded to `f32`, at least 1e-5 (also when
/// `count` is 0 or the sum is NaN).
#[must_use]
pub fn gamma(abs_sum: f64, count: u64) -> f32 {
    if count == 0 {
        return GAMMA_FLOOR;
    }
    #[expect(clippy::cast_precision_loss, reason = "the mean of a u64 count, as the spec says")]
    #[expect(clippy::cast_possible_truncation, reason = "rounded to f32 by the rule")]
    let mean = (abs_sum / count as f64) as f32;
    // `f32::max` returns the floor for a NaN mean.
    mean.max(GAMMA_FLOOR)
}

/// Codes `q+1` ∈ {0, 1, 2} of `x` for scale `gamma` (`out.len() == x.len()`).
///
/// With t = x/γ (an `f32` division), clamp(round_half_even(t), −1, 1) is +1 exactly when
/// t > 0.5 and −1 exactly when t < −0.5 (±0.5 round to 0); a NaN t gives 0.
pub fn codes(x: &[f32], gamma: f32, out: &mut [u8]) {
    debug_assert_eq!(x.len(), out.len());
    struct K<'a>(&'a [f32], f32, &'a mut [u8]);
    impl crate::simd::Kernel for K<'_> {
        #[inline(always)]
        fn run(self) {
            for (o, &v) in self.2.iter_mut().zip(self.0) {
                let t = v / self.1;
                *o = 1 + u8::from(t > 0.5) - u8::from(t < -0.5);
            }
        }
    }
    crate::simd::run(K(x, gamma, out));
}

/// γ of each row of length `k` (`x.len()` a multiple of `k`, `out` one per row): the same
/// index-order f64 sum as [`abs_sum`] for each row ([`row_abs_sums`]).
pub fn row_gammas(x: &[f32], k: usize, out: &mut [f32]) {
    let mut sums = vec![0f64; out.len()];
    row_abs_sums(x, k, &mut sums);
    for (g, s) in out.iter_mut().zip(sums) {
        *g = gamma(s, k as u64);
    }
}

/// Σ|w| of each row of length `k`, each in index order as [`abs_sum`], eight rows in lockstep
/// so that their independent additions overlap in the pipeline. A per-tensor γ adds these row
/// sums in row order (`formats/ternary.md`).
pub fn row_abs_sums(x: &[f32], k: usize, out: &mut [f64]) {
    const R: usize = 8;
    if k == 0 {
        return;
    }
    let mut rows = x.chunks_exact(k).zip(out.iter_mut());
    loop {
        let group: Vec<(&[f32], &mut f64)> = rows.by_ref().take(R).collect();
        if group.is_empty() {
            break;
        }
        if group.len() < R {
            for (row, s) in group {
                *s = abs_sum(row);
            }
            break;
        }
        let mut acc = [0f64; R];
        for j in 0..k {
            for (a, (row, _)) in acc.iter_mut().zip(&group) {
                *a += f64::from(row[j].abs());
            }
        }
        for (a, (_, s)) in acc.iter().zip(group) {
            *s = *a;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{abs_sum, abs_sum_from, codes, gamma};

    #[test]
    fn rounds_half_to_even_and_clamps() {
        let x = [0.5, -0.5, 0.500_000_06, -0.500_000_06, 1.5, -7.0, 0.0, -0.0, f32::NAN, 0.49];
        let mut out = [9u8; 10];
        codes(&x, 1.0, &mut out);
        assert_eq!(out, [1, 1, 2, 0, 2, 0, 1, 1, 1, 1]);
        // t = x/γ is an f32 division: 0.6f32 is exactly 2 · 0.3f32, so t is the tie 0.5 → 0.
        let mut one = [9u8; 2];
        codes(&[0.3, -0.3], 0.6, &mut one);
        assert_eq!(one, [1, 1]);
    }

    #[test]
    fn codes_are_clamped_round_half_even() {
        let mut rng = lowbit_fixtures::rng::Rng::new(3);
        let x: Vec<f32> = (0..4096).map(|_| rng.normal() as f32 * 0.02).collect();
        let g = gamma(abs_sum(&x), x.len() as u64);
        let mut out = vec![9u8; x.len()];
        codes(&x, g, &mut out);
        for (&v, &c) in x.iter().zip(&out) {
            let want = (v / g).round_ties_even().clamp(-1.0, 1.0) + 1.0;
            assert_eq!(f32::from(c), want, "{v} / {g}");
        }
        assert!(out.contains(&0) && out.contains(&1) && out.contains(&2));
    }

    #[test]
    fn row_gammas_equal_one_row_at_a_time() {
        let mut rng = lowbit_fixtures::rng::Rng::new(5);
        for rows in [1, 7, 8, 9, 17] {
            let x: Vec<f32> = (0..rows * 40).map(|_| rng.normal() as f32).collect();
            let mut g = vec![0f32; rows];
            super::row_gammas(&x, 40, &mut g);
            for (r, &v) in g.iter().enumerate() {
                assert_eq!(v, gamma(abs_sum(&x[r * 40..(r + 1) * 40]), 40), "{rows} rows, row {r}");
            }
        }
    }

    #[test]
    fn gamma_is_the_floored_mean() {
        assert_eq!(abs_sum(&[1.0, -2.0, 0.5]), 3.5);
        assert_eq!(gamma(3.5, 3), (3.5f64 / 3.0) as f32);
        assert_eq!(gamma(0.0, 10), 1e-5);
        assert_eq!(gamma(0.0, 0), 1e-5);
        assert_eq!(gamma(f64::NAN, 4), 1e-5);
        // Index order: 1 + 2⁻⁵³ + 2⁻⁵³ stays 1 in f64, summed left to right.
        let tiny = (2.0f64).powi(-53) as f32;
        assert_eq!(abs_sum(&[1.0, tiny, tiny]), 1.0);
        assert_eq!(abs_sum(&[tiny, tiny, 1.0]), 1.0 + 2.0 * f64::from(tiny));
        // Chunked: continuing the sum is the whole sum; adding chunk sums is not.
        let x = [tiny, 1.0, tiny, tiny];
        assert_eq!(abs_sum_from(abs_sum(&x[..2]), &x[2..]), abs_sum(&x));
        assert_ne!(abs_sum(&x[..2]) + abs_sum(&x[2..]), abs_sum(&x));
    }
}
