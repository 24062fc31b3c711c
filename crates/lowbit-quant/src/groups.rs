//! Lockstep machinery for the single-scale block quantizers (Q4_0 … Q8_0, TQ1_0, TQ2_0).
//!
//! The fast paths take [`G`] blocks at a time. First each block is reduced to its extremes
//! ([`min_max`], [`abs_max_bits`]), block by block, with vector code over its own contiguous
//! elements. Those per-block values are then gathered one block per lane of a [`V`], and the
//! per-block scalar work of the reference (the divisions for `d` and `1/d`, ggml's f16
//! conversion, the checks that send a block back to the reference) runs once for all `G` blocks
//! as SIMD. Finally every block's codes are computed element-wise with that block's scale
//! broadcast, again as vector code.
//!
//! Every lane does exactly the scalar reference's operations in its order; only reductions of
//! maxima and minima are reordered, which cannot change their value (a NaN or a signed zero
//! could, and the callers handle those cases). Conversions to integers go through
//! [`trunc_clamped`], which vectorises, where Rust's saturating `as` would not.

use crate::lanes::V;
use crate::simd::trunc_clamped;

/// Blocks quantized side by side, one per lane: one AVX2 register of `f32`.
pub(crate) const G: usize = 8;

/// A block type whose fast quantizer works on [`G`] blocks of `N` elements at a time.
///
/// Implementations are `#[inline(always)]`, so that the whole kernel is instantiated in the
/// caller (and in `simd`'s AVX2 copy); a closure or a function pointer would be called through a
/// shim compiled for the baseline target.
pub(crate) trait Lockstep<const N: usize>: crate::QuantBlock {
    /// What the lanes need to know of each block (its extremes).
    type Stats: Copy + Default;

    /// The statistics of one block.
    fn stats(x: &[f32; N]) -> Self::Stats;

    /// Quantizes `G` blocks, given their statistics.
    fn group(x: &[[f32; N]; G], stats: &[Self::Stats; G], y: &mut [Self; G]);
}

/// Blocks whose statistics are gathered before their groups are quantized.
const RUN: usize = 8 * G;

/// Quantizes `x` into `y` through [`Lockstep`]: for each run of up to [`RUN`] blocks, first the
/// statistics of every block, then [`Lockstep::group`] on every [`G`] blocks. A shorter last
/// group is padded with copies of its last block, whose outputs are dropped.
///
/// The statistics are computed block by block in a loop of their own, each block's address
/// passed through [`std::hint::black_box`] (an identity function the optimiser cannot see
/// through; it changes no result). Left alone, LLVM's vectorisers see `G` blocks at fixed
/// distances and transpose them, one block per lane, with element-by-element gathers, which is
/// several times slower; with opaque addresses the only vectorisation left is the intended one,
/// over each block's own contiguous elements.
#[inline(always)]
pub(crate) fn for_groups<const N: usize, B: Lockstep<N>>(x: &[f32], y: &mut [B]) {
    let (xb, rest) = x.as_chunks::<N>();
    debug_assert!(rest.is_empty() && xb.len() == y.len());
    let mut stats = [B::Stats::default(); RUN];
    for (xr, yr) in xb.chunks(RUN).zip(y.chunks_mut(RUN)) {
        for (s, x) in stats.iter_mut().zip(xr) {
            *s = B::stats(std::hint::black_box(x));
        }
        let (xg, xt) = xr.as_chunks::<G>();
        let (yg, yt) = yr.as_chunks_mut::<G>();
        let (sg, st) = stats.as_chunks::<G>();
        debug_assert!(st.is_empty());
        for ((x, y), s) in xg.iter().zip(yg).zip(sg) {
            B::group(x, s, y);
        }
        if let Some(&last) = xt.last() {
            let k = xt.len();
            let s = &sg[xg.len()][..k];
            let mut xp = [last; G];
            xp[..k].copy_from_slice(xt);
            let mut sp = [s[k - 1]; G];
            sp[..k].copy_from_slice(s);
            let mut yp = [B::zeroed(); G];
            B::group(&xp, &sp, &mut yp);
            yt.copy_from_slice(&yp[..k]);
        }
    }
}

/// C's `a < b ? a : b`: `b` when either is NaN.
#[inline(always)]
fn min_c(a: f32, b: f32) -> f32 {
    if a < b { a } else { b }
}

/// C's `a > b ? a : b`: `b` when either is NaN.
#[inline(always)]
fn max_c(a: f32, b: f32) -> f32 {
    if a > b { a } else { b }
}

/// The least and greatest element of a block, starting from `lo` and `hi`, as the C loops
/// `if (v < min) min = v; if (v > max) max = v;` find them: a NaN never replaces either.
///
/// The block is scanned as eight interleaved chains, which are then combined, so equal values
/// may be met in a different order than the C's; the result is the same except for the sign
/// of a zero extreme (`−0.0 == +0.0`, and the C keeps the first it meets), which callers must
/// treat separately.
#[inline(always)]
pub(crate) fn min_max<const N: usize>(x: &[f32; N], lo: f32, hi: f32) -> (f32, f32) {
    let mut l = [lo; 8];
    let mut h = [hi; 8];
    for c in x.as_chunks::<8>().0 {
        for k in 0..8 {
            l[k] = min_c(c[k], l[k]);
            h[k] = max_c(c[k], h[k]);
        }
    }
    for w in [4, 2, 1] {
        for k in 0..w {
            l[k] = min_c(l[k + w], l[k]);
            h[k] = max_c(h[k + w], h[k]);
        }
    }
    (l[0], h[0])
}

/// The largest `|v|` of a block, as bits: for non-negative floats the integer order of the bit
/// patterns is the numeric order, so this is exact, and a result of at least `0x7f80_0000`
/// means the block holds an infinity or a NaN.
#[inline(always)]
pub(crate) fn abs_max_bits<const N: usize>(x: &[f32; N]) -> u32 {
    let mut m = [0i32; 8];
    for c in x.as_chunks::<8>().0 {
        for k in 0..8 {
            // At most 0x7fff_ffff, so the cast keeps the value and the order.
            m[k] = m[k].max((c[k].to_bits() & 0x7fff_ffff).cast_signed());
        }
    }
    m.iter().fold(0, |a, &b| a.max(b)).cast_unsigned()
}

/// The lanes' `(min, max)` statistics as two lane vectors.
#[inline(always)]
pub(crate) fn unzip(s: &[(f32, f32); G]) -> (V<G>, V<G>) {
    let (mut lo, mut hi) = ([0.0; G], [0.0; G]);
    for ((lo, hi), &(l, h)) in lo.iter_mut().zip(&mut hi).zip(s) {
        (*lo, *hi) = (l, h);
    }
    (V(lo), V(hi))
}

/// The lanes' `f32` maxima, as [`abs_max_bits`] finds them, back to floats.
#[inline(always)]
pub(crate) fn from_bits(b: &[u32; G]) -> V<G> {
    let mut v = [0.0; G];
    for (v, b) in v.iter_mut().zip(b) {
        *v = f32::from_bits(*b);
    }
    V(v)
}

/// `d ? 1/d : 0`, lane by lane, as the reference quantizers compute `id`.
#[inline(always)]
pub(crate) fn inverse(d: V<G>) -> V<G> {
    let zero = V::splat(0.0);
    d.eq(zero).select(zero, V::splat(1.0).div(d))
}

/// `roundf(t)` (half away from zero) as C's `int`, for `|t| < 256`: adding the float just below
/// one half, with the sign of `t`, and truncating is exact (ties land on the integer above in
/// magnitude; anything short of a tie stays below it).
#[inline(always)]
pub(crate) fn round_away(t: f32) -> i32 {
    let half = f32::from_bits(0x3eff_ffff | (t.to_bits() & 0x8000_0000));
    trunc_clamped(t + half)
}

/// Narrows codes to bytes (the C's conversion to `uint8_t` or `int8_t` keeps the low byte).
#[inline(always)]
pub(crate) fn low_bytes<const N: usize>(q: [i32; N]) -> [u8; N] {
    let mut out = [0u8; N];
    for (o, &q) in out.iter_mut().zip(&q) {
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "low byte")]
        {
            *o = q as u8;
        }
    }
    out
}

/// Gathers bit 0 of each of eight bytes (each 0 or 1) of `w` into one byte, byte `k` to bit
/// `k`: the product places every `b_k · 2^(8k)` times `2^(8i + 7 − i)` at a distinct bit, and
/// exactly the terms with `k + i = 7` land in the top byte, at bit `56 + k`.
#[inline(always)]
pub(crate) fn gather_bits(w: u64) -> u8 {
    (w.wrapping_mul(0x0102_0408_1020_4080) >> 56) as u8
}

/// Calls the reference quantizer on one block.
pub(crate) fn reference<B: crate::QuantBlock>(x: &[f32], y: &mut B) {
    B::quantize_ref(x, std::slice::from_mut(y));
}

#[cfg(test)]
mod tests {
    use super::{abs_max_bits, gather_bits, min_max, round_away};

    #[test]
    fn round_away_is_roundf() {
        // Every float in ±[0.125, 130), and a sparser sample below, against `f32::round`.
        let mut b = 0u32;
        while b < 0x4302_0000 {
            let t = f32::from_bits(b);
            for t in [t, -t] {
                #[expect(clippy::cast_possible_truncation, reason = "small")]
                let want = t.round() as i32;
                assert_eq!(round_away(t), want, "{t:e}");
            }
            b += if b < 0x3e00_0000 { 0x1001 } else { 1 };
        }
        for t in [0.5f32, 1.5, 2.5, 126.5, 0.499_999_97, 0.500_000_06, 1e-45, 127.000_01] {
            #[expect(clippy::cast_possible_truncation, reason = "small")]
            let want = t.round() as i32;
            assert_eq!(round_away(t), want, "{t:e}");
            assert_eq!(round_away(-t), -want, "{t:e}");
        }
    }

    #[test]
    fn gather_bits_orders_bytes_as_bits() {
        for m in 0..=255u8 {
            let mut w = 0u64;
            for k in 0..8 {
                w |= u64::from((m >> k) & 1) << (8 * k);
            }
            assert_eq!(gather_bits(w), m);
        }
    }

    #[test]
    fn reductions() {
        let mut x = [0.0f32; 32];
        for (i, v) in x.iter_mut().enumerate() {
            *v = (i as f32 - 11.5) * 0.25;
        }
        x[7] = f32::NAN;
        for b in 0..32 {
            let mut x = x;
            x[b] = b as f32 * 10.0 - 140.0;
            let want_lo = x.iter().fold(f32::MAX, |m, &v| if v < m { v } else { m });
            let want_hi = x.iter().fold(-f32::MAX, |m, &v| if v > m { v } else { m });
            assert_eq!(min_max(&x, f32::MAX, -f32::MAX), (want_lo, want_hi), "{b}");
            assert_eq!(abs_max_bits(&x) >= 0x7f80_0000, b != 7, "NaN shows");
            x[7] = -0.0;
            let want = x.iter().fold(0.0f32, |m, &v| if m > v.abs() { m } else { v.abs() });
            assert_eq!(abs_max_bits(&x), want.to_bits(), "{b}");
        }
    }
}
