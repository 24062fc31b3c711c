//! Fixed-width lanes of `f32`, written so that they vectorise: one sub-block per lane in the
//! K-quants' lockstep searches, one block per lane in the block quantizers of [`crate::groups`].
//!
//! Every operation is an element-wise array expression of plain scalar operations. Once
//! inlined, each one is a run of `L` identical scalar instructions, which LLVM's straight-line
//! (SLP) vectoriser turns into one SIMD instruction per register's worth of lanes (SSE2 on
//! baseline x86-64, wider where the target allows). Loops over lane arrays with branches in
//! them are left scalar by the compiler; this form is not. Lane-wise results are exactly the
//! scalar results: no operation mixes lanes, and none is fused or reassociated.
//!
//! Masks are `u32` lanes of all ones or all zeros, and [`M::select`] blends bit patterns, so a
//! C `if` becomes a compare and a blend with the same outcome per lane.

/// `L` lanes of `f32`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct V<const L: usize>(pub(crate) [f32; L]);

/// `L` lane masks, each all ones (true) or all zeros (false).
#[derive(Clone, Copy, Debug)]
pub(crate) struct M<const L: usize>([u32; L]);

/// Builds a mask lane from a condition.
#[inline(always)]
fn mask(c: bool) -> u32 {
    if c { !0 } else { 0 }
}

impl<const L: usize> V<L> {
    /// Every lane `v`.
    #[inline(always)]
    pub(crate) fn splat(v: f32) -> Self {
        Self([v; L])
    }

    /// Applies `f` to every lane.
    #[inline(always)]
    fn map(self, f: impl Fn(f32) -> f32) -> Self {
        let mut out = self.0;
        for v in &mut out {
            *v = f(*v);
        }
        Self(out)
    }

    /// Applies `f` to every pair of lanes.
    #[inline(always)]
    fn zip(self, o: Self, f: impl Fn(f32, f32) -> f32) -> Self {
        let mut out = self.0;
        for (a, &b) in out.iter_mut().zip(&o.0) {
            *a = f(*a, b);
        }
        Self(out)
    }

    /// Compares every pair of lanes.
    #[inline(always)]
    fn cmp(self, o: Self, f: impl Fn(f32, f32) -> bool) -> M<L> {
        let mut out = [0; L];
        for (m, (&a, &b)) in out.iter_mut().zip(self.0.iter().zip(&o.0)) {
            *m = mask(f(a, b));
        }
        M(out)
    }

    /// `self + o`.
    #[inline(always)]
    pub(crate) fn add(self, o: Self) -> Self {
        self.zip(o, |a, b| a + b)
    }

    /// `self − o`.
    #[inline(always)]
    pub(crate) fn sub(self, o: Self) -> Self {
        self.zip(o, |a, b| a - b)
    }

    /// `self · o`.
    #[inline(always)]
    pub(crate) fn mul(self, o: Self) -> Self {
        self.zip(o, |a, b| a * b)
    }

    /// `self / o`.
    #[inline(always)]
    pub(crate) fn div(self, o: Self) -> Self {
        self.zip(o, |a, b| a / b)
    }

    /// `−self` (flips the sign bit, so `−0.0` and `+0.0` swap as in C).
    #[inline(always)]
    pub(crate) fn neg(self) -> Self {
        self.map(|v| -v)
    }

    /// `fabsf`.
    #[inline(always)]
    pub(crate) fn abs(self) -> Self {
        self.map(f32::abs)
    }

    /// `sqrtf`.
    #[inline(always)]
    pub(crate) fn sqrt(self) -> Self {
        self.map(f32::sqrt)
    }

    /// `self > o`.
    #[inline(always)]
    pub(crate) fn gt(self, o: Self) -> M<L> {
        self.cmp(o, |a, b| a > b)
    }

    /// `self < o`.
    #[inline(always)]
    pub(crate) fn lt(self, o: Self) -> M<L> {
        self.cmp(o, |a, b| a < b)
    }

    /// `self == o`.
    #[inline(always)]
    pub(crate) fn eq(self, o: Self) -> M<L> {
        self.cmp(o, |a, b| a == b)
    }

    /// `self != o`.
    #[inline(always)]
    pub(crate) fn ne(self, o: Self) -> M<L> {
        self.cmp(o, |a, b| a != b)
    }

    /// `isfinite(self)`: neither infinite nor NaN.
    #[inline(always)]
    pub(crate) fn is_finite(self) -> M<L> {
        self.abs().lt(Self::splat(f32::INFINITY))
    }

    /// `f32` image of `nearest_int(self)` clamped to `lo..=hi`, as `MAX(lo, MIN(hi, ·))` on
    /// the int.
    ///
    /// `nearest_int` keeps the low 23 bits `m` of `v + 1.5·2^23` and returns `m − 2^22`. Here
    /// `m` goes into the mantissa of `2^23` instead, giving the float `2^23 + m`, and subtracting
    /// `1.5·2^23` (exact: both operands lie in `[2^23, 2^24)`) gives `m − 2^22` as an `f32`, for
    /// every input including NaN and infinities. The result lies in `−2^22..2^22`, so the
    /// float clamp picks the same value as the integer clamp. Staying in floats avoids integer
    /// min/max, which baseline x86-64 lacks.
    #[inline(always)]
    pub(crate) fn code(self, lo: Self, hi: Self) -> Self {
        let l = self.map(|v| {
            let m = (v + 12_582_912.0).to_bits() & 0x007f_ffff;
            f32::from_bits(m | 0x4b00_0000) - 12_582_912.0
        });
        l.max_c(lo).min_c(hi)
    }

    /// C's `a > b ? a : b`, lane by lane (one SSE `maxps`).
    #[inline(always)]
    pub(crate) fn max_c(self, o: Self) -> Self {
        self.zip(o, |a, b| if a > b { a } else { b })
    }

    /// C's `a < b ? a : b`, lane by lane (one SSE `minps`).
    #[inline(always)]
    pub(crate) fn min_c(self, o: Self) -> Self {
        self.zip(o, |a, b| if a < b { a } else { b })
    }
}

impl<const L: usize> M<L> {
    /// Applies `f` to every pair of lanes.
    #[inline(always)]
    fn zip(self, o: Self, f: impl Fn(u32, u32) -> u32) -> Self {
        let mut out = self.0;
        for (a, &b) in out.iter_mut().zip(&o.0) {
            *a = f(*a, b);
        }
        Self(out)
    }

    /// Lane-wise and.
    #[inline(always)]
    pub(crate) fn and(self, o: Self) -> Self {
        self.zip(o, |a, b| a & b)
    }

    /// Lane-wise or.
    #[inline(always)]
    pub(crate) fn or(self, o: Self) -> Self {
        self.zip(o, |a, b| a | b)
    }

    /// Lane-wise not.
    #[inline(always)]
    pub(crate) fn not(self) -> Self {
        self.zip(self, |a, _| !a)
    }

    /// `self ? a : b`, lane by lane.
    #[inline(always)]
    pub(crate) fn select(self, a: V<L>, b: V<L>) -> V<L> {
        let mut out = a.0;
        for (o, (&m, &b)) in out.iter_mut().zip(self.0.iter().zip(&b.0)) {
            *o = f32::from_bits((m & o.to_bits()) | (!m & b.to_bits()));
        }
        V(out)
    }

    /// Whether any lane is true.
    #[inline(always)]
    pub(crate) fn any(self) -> bool {
        self.0.iter().fold(0, |a, &m| a | m) != 0
    }

    /// The lanes as booleans.
    #[inline(always)]
    pub(crate) fn to_bools(self) -> [bool; L] {
        let mut out = [false; L];
        for (o, &m) in out.iter_mut().zip(&self.0) {
            *o = m != 0;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::V;
    use crate::kquants::nearest_int;

    #[test]
    fn code_equals_clamped_nearest_int() {
        let mut values = vec![
            0.0,
            -0.0,
            0.5,
            1.5,
            -2.5,
            3.49,
            -3.51,
            4_194_303.0,
            -4_194_304.0,
            1e10,
            -1e10,
            3e38,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7fa0_0001),
            1e-40,
        ];
        values.extend((0..2000).map(|k| (k as f32 - 1000.0) * 0.037));
        for &v in &values {
            for (lo, hi) in [(0, 3), (0, 15), (0, 31), (-4, 3), (-32, 31)] {
                let got = V([v; 4]).code(V::splat(lo as f32), V::splat(hi as f32)).0[0];
                let want = nearest_int(v).clamp(lo, hi) as f32;
                assert_eq!(got.to_bits(), want.to_bits(), "{v} in {lo}..={hi}");
            }
        }
    }
}
