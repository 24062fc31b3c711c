//! The fast legacy quantizers: faster forms of the reference ones, equal to them byte for byte.
//!
//! Blocks go through in lockstep groups (see [`crate::groups`]): each block's extremes are
//! reduced with vector code, the scale arithmetic and its f16 conversion run with one block per
//! lane, and the codes are computed element-wise with the block's scale broadcast. A block whose
//! bytes the lanes cannot reproduce exactly is handed to the reference, alone:
//!
//! - Q8_0: an infinity or NaN (its C maximum depends on where a NaN sits);
//! - Q4_0, Q5_0: both `+amax` and `−amax` present (only the scan order says which is `max`);
//! - Q4_1, Q5_1: a zero minimum or maximum (the C keeps whichever signed zero comes first);
//! - all: `1/d` not finite (C's conversions of ±inf are undefined; see `cconv`).
//!
//! Everything else, NaN elements included where the C ignores them, is exact in the lanes: the
//! C's comparisons skip a NaN exactly as [`crate::groups::min_max`] does, and a NaN code truncates to
//! a value whose low byte is the C's.

use super::QK;
use crate::groups::{
    self, G, Lockstep, abs_max_bits, for_groups, gather_bits, inverse, low_bytes, min_max,
    reference, round_away, unzip,
};
use crate::lanes::V;
use crate::simd::trunc_clamped;
use lowbit_dtype::blocks::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};
use lowbit_dtype::f16::fp32_to_fp16_lanes;

/// Applies `f` to every element of a block and keeps the low byte of each result.
#[inline(always)]
fn codes(x: &[f32; QK], f: impl Fn(f32) -> i32) -> [u8; QK] {
    let mut q = [0i32; QK];
    for (q, &v) in q.iter_mut().zip(x) {
        *q = f(v);
    }
    low_bytes(q)
}

/// Element `j` in the low nibble of byte `j`, element `j + 16` in the high one; only the
/// low four bits of each code are kept, as the C's `& 0x0F` does for Q5_0/Q5_1.
#[inline(always)]
fn nibbles(q: &[u8; QK]) -> [u8; QK / 2] {
    let mut out = [0u8; QK / 2];
    for (j, o) in out.iter_mut().enumerate() {
        *o = (q[j] & 0x0f) | (q[j + QK / 2] << 4);
    }
    out
}

/// Bit 4 of code `j` at bit `j` of a little-endian `u32`, as Q5_0/Q5_1 store it: eight
/// codes at a time as one `u64`, their bit 4 moved to bit 0 of each byte and gathered.
#[inline(always)]
fn high_bits(q: &[u8; QK]) -> [u8; 4] {
    let mut out = [0u8; 4];
    for (o, c) in out.iter_mut().zip(q.as_chunks::<8>().0) {
        *o = gather_bits((u64::from_le_bytes(*c) >> 4) & 0x0101_0101_0101_0101);
    }
    out
}

/// Per lane, the signed value of largest magnitude as Q4_0/Q5_0 pick it (`+0.0` when every
/// element is zero or NaN), and whether the lane must go to the reference because both
/// `+amax` and `−amax` occur.
///
/// With `hi` and `lo` the largest and least elements (NaN skipped, both starting at 0): if
/// `hi > −lo` only positive elements reach the largest magnitude, so the C's `max` is `hi`;
/// if `−lo > hi` it is `lo`; if they are equal and nonzero both signs occur.
#[inline(always)]
fn signed_absmax(s: &[(f32, f32); G]) -> (V<G>, [bool; G]) {
    let (lo, hi) = unzip(s);
    let nlo = lo.neg();
    let zero = V::splat(0.0);
    let pos = hi.gt(nlo);
    let neg = nlo.gt(hi);
    let max = pos.select(hi, neg.select(nlo.neg(), zero));
    let tie = pos.or(neg).not().and(hi.ne(zero));
    (max, tie.to_bools())
}

/// A group's scales and codes; blocks with `exact[b] == false` go to the reference.
struct Coded {
    /// Whether the lanes reproduce block `b`.
    exact: [bool; G],
    /// `d` as f16 bytes.
    d: [[u8; 2]; G],
    /// `min` as f16 bytes (Q4_1, Q5_1).
    m: [[u8; 2]; G],
    /// The codes, one byte each.
    q: [[u8; QK]; G],
}

#[inline(always)]
fn f16_bytes(v: V<G>) -> [[u8; 2]; G] {
    fp32_to_fp16_lanes(v.0).map(u16::to_le_bytes)
}

/// Q8_0: `d = amax / 127`, codes `roundf(x·id)`.
impl Lockstep<QK> for BlockQ8_0 {
    type Stats = u32;

    #[inline(always)]
    fn stats(x: &[f32; QK]) -> u32 {
        abs_max_bits(x)
    }

    #[inline(always)]
    fn group(x: &[[f32; QK]; G], s: &[u32; G], y: &mut [BlockQ8_0; G]) {
        let amax = groups::from_bits(s);
        let d = amax.div(V::splat(127.0));
        let id = inverse(d);
        let exact = amax.is_finite().and(id.is_finite()).to_bools();
        let dh = f16_bytes(d);
        for b in 0..G {
            if exact[b] {
                let id = id.0[b];
                // |v·id| ≤ 127.00002: roundf gives −127..=127, whose low byte is the int8_t.
                let q = codes(&x[b], |v| round_away(v * id));
                y[b] = BlockQ8_0 { d: dh[b], qs: bytemuck::cast(q) };
            } else {
                reference(&x[b], &mut y[b]);
            }
        }
    }
}

/// Q4_0 and Q5_0: `d = max / div` (−8 or −16), codes `MIN(top, (int8_t)(x·id + offset))`.
#[inline(always)]
fn offset_group(x: &[[f32; QK]; G], s: &[(f32, f32); G], div: f32, offset: f32, top: i32) -> Coded {
    let (max, tie) = signed_absmax(s);
    let d = max.div(V::splat(div));
    let id = inverse(d);
    let finite = id.is_finite().to_bools();
    let mut c = Coded { exact: [false; G], d: f16_bytes(d), m: [[0; 2]; G], q: [[0; QK]; G] };
    for b in 0..G {
        c.exact[b] = finite[b] && !tie[b];
        let id = id.0[b];
        // x·id lies in [−div, div] up to rounding (NaN aside), so the sum is in range.
        c.q[b] = codes(&x[b], |v| trunc_clamped(v * id + offset).min(top));
    }
    c
}

/// Q4_1 and Q5_1: `d = (max − min) / top`, codes `(x − min)·id + 0.5` truncated (and for
/// Q4_1 clamped to `top`; Q5_1's C has no clamp, and its values never exceed 31).
#[inline(always)]
fn min_group(x: &[[f32; QK]; G], s: &[(f32, f32); G], top: i32) -> Coded {
    let (min, max) = unzip(s);
    let zero = V::splat(0.0);
    #[expect(clippy::cast_precision_loss, reason = "15 or 31")]
    let d = max.sub(min).div(V::splat(top as f32));
    let id = inverse(d);
    let exact = min.ne(zero).and(max.ne(zero)).and(id.is_finite()).to_bools();
    let mut c = Coded { exact, d: f16_bytes(d), m: f16_bytes(min), q: [[0; QK]; G] };
    for (q, (x, (&min, &id))) in c.q.iter_mut().zip(x.iter().zip(min.0.iter().zip(&id.0))) {
        *q = codes(x, |v| trunc_clamped((v - min) * id + 0.5).min(top));
    }
    c
}

impl Lockstep<QK> for BlockQ4_0 {
    type Stats = (f32, f32);

    #[inline(always)]
    fn stats(x: &[f32; QK]) -> (f32, f32) {
        min_max(x, 0.0, 0.0)
    }

    #[inline(always)]
    fn group(x: &[[f32; QK]; G], s: &[(f32, f32); G], y: &mut [BlockQ4_0; G]) {
        let c = offset_group(x, s, -8.0, 8.5, 15);
        for b in 0..G {
            if c.exact[b] {
                y[b] = BlockQ4_0 { d: c.d[b], qs: nibbles(&c.q[b]) };
            } else {
                reference(&x[b], &mut y[b]);
            }
        }
    }
}

impl Lockstep<QK> for BlockQ5_0 {
    type Stats = (f32, f32);

    #[inline(always)]
    fn stats(x: &[f32; QK]) -> (f32, f32) {
        min_max(x, 0.0, 0.0)
    }

    #[inline(always)]
    fn group(x: &[[f32; QK]; G], s: &[(f32, f32); G], y: &mut [BlockQ5_0; G]) {
        let c = offset_group(x, s, -16.0, 16.5, 31);
        for b in 0..G {
            if c.exact[b] {
                let q = &c.q[b];
                y[b] = BlockQ5_0 { d: c.d[b], qh: high_bits(q), qs: nibbles(q) };
            } else {
                reference(&x[b], &mut y[b]);
            }
        }
    }
}

impl Lockstep<QK> for BlockQ4_1 {
    type Stats = (f32, f32);

    #[inline(always)]
    fn stats(x: &[f32; QK]) -> (f32, f32) {
        min_max(x, f32::MAX, -f32::MAX)
    }

    #[inline(always)]
    fn group(x: &[[f32; QK]; G], s: &[(f32, f32); G], y: &mut [BlockQ4_1; G]) {
        let c = min_group(x, s, 15);
        for b in 0..G {
            if c.exact[b] {
                y[b] = BlockQ4_1 { d: c.d[b], m: c.m[b], qs: nibbles(&c.q[b]) };
            } else {
                reference(&x[b], &mut y[b]);
            }
        }
    }
}

impl Lockstep<QK> for BlockQ5_1 {
    type Stats = (f32, f32);

    #[inline(always)]
    fn stats(x: &[f32; QK]) -> (f32, f32) {
        min_max(x, f32::MAX, -f32::MAX)
    }

    #[inline(always)]
    fn group(x: &[[f32; QK]; G], s: &[(f32, f32); G], y: &mut [BlockQ5_1; G]) {
        let c = min_group(x, s, 31);
        for b in 0..G {
            if c.exact[b] {
                let q = &c.q[b];
                y[b] = BlockQ5_1 { d: c.d[b], m: c.m[b], qh: high_bits(q), qs: nibbles(q) };
            } else {
                reference(&x[b], &mut y[b]);
            }
        }
    }
}

#[inline(always)]
pub(super) fn q8_0(x: &[f32], y: &mut [BlockQ8_0]) {
    for_groups(x, y);
}

#[inline(always)]
pub(super) fn q4_0(x: &[f32], y: &mut [BlockQ4_0]) {
    for_groups(x, y);
}

#[inline(always)]
pub(super) fn q4_1(x: &[f32], y: &mut [BlockQ4_1]) {
    for_groups(x, y);
}

#[inline(always)]
pub(super) fn q5_0(x: &[f32], y: &mut [BlockQ5_0]) {
    for_groups(x, y);
}

#[inline(always)]
pub(super) fn q5_1(x: &[f32], y: &mut [BlockQ5_1]) {
    for_groups(x, y);
}
