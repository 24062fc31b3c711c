//! The 32-element types: Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0.
//!
//! Each quantizer is ggml's `quantize_row_*_ref` step for step: the scale is found with the same
//! comparisons (the first element of largest magnitude wins ties), divided the same way
//! (`max / -8`, then `1/d`), stored through ggml's f16 conversion, and every element is rounded
//! as the C does (`(int8_t)(x·id + 8.5)` truncates; `roundf` rounds half away from zero).

use crate::QuantBlock;
use crate::f16::{fp16_to_fp32, fp32_to_fp16};
use lowbit_dtype::GgmlType;

const QK: usize = 32;

/// Q4_0: `d` (f16), then 16 bytes; byte `j` holds element `j` (low nibble) and `j + 16` (high).
/// Value = (q − 8)·d.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_0 {
    /// Scale, f16 little-endian.
    pub d: [u8; 2],
    /// Nibbles.
    pub qs: [u8; 16],
}

/// Q4_1: `d`, `m` (f16), then 16 bytes of nibbles as in Q4_0. Value = q·d + m.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_1 {
    /// Scale, f16.
    pub d: [u8; 2],
    /// Minimum, f16.
    pub m: [u8; 2],
    /// Nibbles.
    pub qs: [u8; 16],
}

/// Q5_0: `d`, then `qh` (bit `j` of the little-endian u32 is bit 4 of element `j`), then the low
/// nibbles as in Q4_0. Value = (q − 16)·d.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_0 {
    /// Scale, f16.
    pub d: [u8; 2],
    /// Fifth bits.
    pub qh: [u8; 4],
    /// Low nibbles.
    pub qs: [u8; 16],
}

/// Q5_1: `d`, `m`, `qh`, low nibbles. Value = q·d + m.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_1 {
    /// Scale, f16.
    pub d: [u8; 2],
    /// Minimum, f16.
    pub m: [u8; 2],
    /// Fifth bits.
    pub qh: [u8; 4],
    /// Low nibbles.
    pub qs: [u8; 16],
}

/// Q8_0: `d` (f16), then 32 signed bytes in order. Value = q·d.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_0 {
    /// Scale, f16.
    pub d: [u8; 2],
    /// Quants.
    pub qs: [i8; 32],
}

const _: () = assert!(size_of::<BlockQ4_0>() == 18);
const _: () = assert!(size_of::<BlockQ4_1>() == 20);
const _: () = assert!(size_of::<BlockQ5_0>() == 22);
const _: () = assert!(size_of::<BlockQ5_1>() == 24);
const _: () = assert!(size_of::<BlockQ8_0>() == 34);

/// ggml's `MAX(a, b)`: `a > b ? a : b`.
#[inline]
fn max_c(a: f32, b: f32) -> f32 {
    if a > b { a } else { b }
}

/// The element of largest magnitude, the first one on ties, as Q4_0/Q5_0 find it.
#[inline]
fn signed_absmax(x: &[f32; QK]) -> f32 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// Minimum and maximum as Q4_1/Q5_1 find them (starting from ±`FLT_MAX`).
#[inline]
fn min_max(x: &[f32; QK]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

#[inline]
fn inverse(d: f32) -> f32 {
    if d == 0.0 { 0.0 } else { 1.0 / d }
}

/// C's `(int8_t)(f)`, x86-64 semantics (see `cconv`).
#[inline]
fn trunc_i8(f: f32) -> i32 {
    i32::from(crate::cconv::f32_to_i8(f))
}

fn as_block(x: &[f32]) -> &[f32; QK] {
    x.try_into().expect("chunks_exact yields whole blocks")
}

fn f16_le(v: f32) -> [u8; 2] {
    fp32_to_fp16(v).to_le_bytes()
}

fn f16_val(b: [u8; 2]) -> f32 {
    fp16_to_fp32(u16::from_le_bytes(b))
}

impl QuantBlock for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const QK: usize = QK;

    fn quantize_ref(x: &[f32], y: &mut [Self]) {
        for (x, y) in x.chunks_exact(QK).zip(y) {
            let x = as_block(x);
            let d = signed_absmax(x) / -8.0;
            let id = inverse(d);
            y.d = f16_le(d);
            for j in 0..QK / 2 {
                let x0 = x[j] * id;
                let x1 = x[j + QK / 2] * id;
                let q0 = trunc_i8(x0 + 8.5).min(15);
                let q1 = trunc_i8(x1 + 8.5).min(15);
                #[expect(
                    clippy::cast_sign_loss,
                    clippy::cast_possible_truncation,
                    reason = "0..=15"
                )]
                {
                    y.qs[j] = (q0 as u8) | ((q1 as u8) << 4);
                }
            }
        }
    }

    #[inline(always)]
    fn quantize(x: &[f32], y: &mut [Self]) {
        fast::q4_0(x, y);
    }

    fn dequantize(y: &[Self], x: &mut [f32]) {
        for (y, x) in y.iter().zip(x.chunks_exact_mut(QK)) {
            let d = f16_val(y.d);
            for j in 0..QK / 2 {
                x[j] = (i32::from(y.qs[j] & 0x0f) - 8) as f32 * d;
                x[j + QK / 2] = (i32::from(y.qs[j] >> 4) - 8) as f32 * d;
            }
        }
    }
}

impl QuantBlock for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const QK: usize = QK;

    fn quantize_ref(x: &[f32], y: &mut [Self]) {
        for (x, y) in x.chunks_exact(QK).zip(y) {
            let x = as_block(x);
            let (min, max) = min_max(x);
            let d = (max - min) / 15.0;
            let id = inverse(d);
            y.d = f16_le(d);
            y.m = f16_le(min);
            for j in 0..QK / 2 {
                let x0 = (x[j] - min) * id;
                let x1 = (x[j + QK / 2] - min) * id;
                let q0 = trunc_i8(x0 + 0.5).min(15);
                let q1 = trunc_i8(x1 + 0.5).min(15);
                #[expect(
                    clippy::cast_sign_loss,
                    clippy::cast_possible_truncation,
                    reason = "0..=15"
                )]
                {
                    y.qs[j] = (q0 as u8) | ((q1 as u8) << 4);
                }
            }
        }
    }

    #[inline(always)]
    fn quantize(x: &[f32], y: &mut [Self]) {
        fast::q4_1(x, y);
    }

    fn dequantize(y: &[Self], x: &mut [f32]) {
        for (y, x) in y.iter().zip(x.chunks_exact_mut(QK)) {
            let d = f16_val(y.d);
            let m = f16_val(y.m);
            for j in 0..QK / 2 {
                x[j] = f32::from(y.qs[j] & 0x0f) * d + m;
                x[j + QK / 2] = f32::from(y.qs[j] >> 4) * d + m;
            }
        }
    }
}

impl QuantBlock for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const QK: usize = QK;

    fn quantize_ref(x: &[f32], y: &mut [Self]) {
        for (x, y) in x.chunks_exact(QK).zip(y) {
            let x = as_block(x);
            let d = signed_absmax(x) / -16.0;
            let id = inverse(d);
            y.d = f16_le(d);
            let mut qh = 0u32;
            for j in 0..QK / 2 {
                let x0 = x[j] * id;
                let x1 = x[j + QK / 2] * id;
                #[expect(
                    clippy::cast_sign_loss,
                    clippy::cast_possible_truncation,
                    reason = "0..=31"
                )]
                let q0 = trunc_i8(x0 + 16.5).min(31) as u8;
                #[expect(
                    clippy::cast_sign_loss,
                    clippy::cast_possible_truncation,
                    reason = "0..=31"
                )]
                let q1 = trunc_i8(x1 + 16.5).min(31) as u8;
                y.qs[j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
                qh |= u32::from((q0 & 0x10) >> 4) << j;
                qh |= u32::from((q1 & 0x10) >> 4) << (j + QK / 2);
            }
            y.qh = qh.to_le_bytes();
        }
    }

    #[inline(always)]
    fn quantize(x: &[f32], y: &mut [Self]) {
        fast::q5_0(x, y);
    }

    fn dequantize(y: &[Self], x: &mut [f32]) {
        for (y, x) in y.iter().zip(x.chunks_exact_mut(QK)) {
            let d = f16_val(y.d);
            let qh = u32::from_le_bytes(y.qh);
            for j in 0..QK / 2 {
                let h0 = ((qh >> j) << 4) & 0x10;
                let h1 = (qh >> (j + 12)) & 0x10;
                #[expect(clippy::cast_possible_wrap, reason = "at most 31")]
                let x0 = (u32::from(y.qs[j] & 0x0f) | h0) as i32 - 16;
                #[expect(clippy::cast_possible_wrap, reason = "at most 31")]
                let x1 = (u32::from(y.qs[j] >> 4) | h1) as i32 - 16;
                x[j] = x0 as f32 * d;
                x[j + QK / 2] = x1 as f32 * d;
            }
        }
    }
}

impl QuantBlock for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const QK: usize = QK;

    fn quantize_ref(x: &[f32], y: &mut [Self]) {
        for (x, y) in x.chunks_exact(QK).zip(y) {
            let x = as_block(x);
            let (min, max) = min_max(x);
            let d = (max - min) / 31.0;
            let id = inverse(d);
            y.d = f16_le(d);
            y.m = f16_le(min);
            let mut qh = 0u32;
            for j in 0..QK / 2 {
                let x0 = (x[j] - min) * id;
                let x1 = (x[j + QK / 2] - min) * id;
                // The C casts straight to uint8_t, without the clamp the other types have.
                let q0 = crate::cconv::f32_to_u8(x0 + 0.5);
                let q1 = crate::cconv::f32_to_u8(x1 + 0.5);
                y.qs[j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
                qh |= u32::from((q0 & 0x10) >> 4) << j;
                qh |= u32::from((q1 & 0x10) >> 4) << (j + QK / 2);
            }
            y.qh = qh.to_le_bytes();
        }
    }

    #[inline(always)]
    fn quantize(x: &[f32], y: &mut [Self]) {
        fast::q5_1(x, y);
    }

    fn dequantize(y: &[Self], x: &mut [f32]) {
        for (y, x) in y.iter().zip(x.chunks_exact_mut(QK)) {
            let d = f16_val(y.d);
            let m = f16_val(y.m);
            let qh = u32::from_le_bytes(y.qh);
            for j in 0..QK / 2 {
                let h0 = ((qh >> j) << 4) & 0x10;
                let h1 = (qh >> (j + 12)) & 0x10;
                x[j] = (u32::from(y.qs[j] & 0x0f) | h0) as f32 * d + m;
                x[j + QK / 2] = (u32::from(y.qs[j] >> 4) | h1) as f32 * d + m;
            }
        }
    }
}

impl QuantBlock for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const QK: usize = QK;

    fn quantize_ref(x: &[f32], y: &mut [Self]) {
        for (x, y) in x.chunks_exact(QK).zip(y) {
            let x = as_block(x);
            let amax = x.iter().fold(0.0f32, |a, &v| max_c(a, v.abs()));
            let d = amax / 127.0;
            let id = inverse(d);
            y.d = f16_le(d);
            for (q, &v) in y.qs.iter_mut().zip(x) {
                // roundf: half away from zero, which is what f32::round does.
                *q = crate::cconv::f32_to_i8((v * id).round());
            }
        }
    }

    #[inline(always)]
    fn quantize(x: &[f32], y: &mut [Self]) {
        fast::q8_0(x, y);
    }

    fn dequantize(y: &[Self], x: &mut [f32]) {
        for (y, x) in y.iter().zip(x.chunks_exact_mut(QK)) {
            let d = f16_val(y.d);
            for (v, &q) in x.iter_mut().zip(&y.qs) {
                *v = f32::from(q) * d;
            }
        }
    }
}

/// Faster forms of the reference quantizers, equal to them byte for byte.
///
/// Blocks go through in lockstep groups (see [`crate::groups`]): each block's extremes are
/// reduced with vector code, the scale arithmetic and its f16 conversion run with one block per
/// lane, and the codes are computed element-wise with the block's scale broadcast. A block whose
/// bytes the lanes cannot reproduce exactly is handed to the reference, alone:
///
/// - Q8_0: an infinity or NaN (its C maximum depends on where a NaN sits);
/// - Q4_0, Q5_0: both `+amax` and `−amax` present (only the scan order says which is `max`);
/// - Q4_1, Q5_1: a zero minimum or maximum (the C keeps whichever signed zero comes first);
/// - all: `1/d` not finite (C's conversions of ±inf are undefined; see `cconv`).
///
/// Everything else, NaN elements included where the C ignores them, is exact in the lanes: the
/// C's comparisons skip a NaN exactly as [`crate::groups::min_max`] does, and a NaN code truncates to
/// a value whose low byte is the C's.
mod fast {
    use super::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, QK};
    use crate::f16::fp32_to_fp16_lanes;
    use crate::groups::{
        self, G, Lockstep, abs_max_bits, for_groups, gather_bits, inverse, low_bytes, min_max,
        reference, round_away, unzip,
    };
    use crate::lanes::V;
    use crate::simd::trunc_clamped;

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
    fn offset_group(
        x: &[[f32; QK]; G],
        s: &[(f32, f32); G],
        div: f32,
        offset: f32,
        top: i32,
    ) -> Coded {
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
}

#[cfg(test)]
mod tests {
    use super::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, QK};
    use crate::QuantBlock;
    use crate::f16::fp32_to_fp16;

    fn rng(seed: u64) -> impl FnMut() -> f32 {
        let mut s = seed;
        move || {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
    }

    fn round_trip<B: QuantBlock + Default + PartialEq>(x: &[f32]) -> Vec<f32> {
        let mut y = vec![B::default(); x.len() / QK];
        B::quantize_ref(x, &mut y);
        let mut fast = vec![B::default(); x.len() / QK];
        B::quantize(x, &mut fast);
        assert!(y == fast, "{:?}: fast path differs", B::TYPE);
        let mut out = vec![0.0; x.len()];
        B::dequantize(&y, &mut out);
        out
    }

    fn max_err(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn errors_stay_within_one_step() {
        let mut r = rng(1);
        let x: Vec<f32> = (0..QK * 64).map(|_| r() * 3.0).collect();
        // Worst error per type for blocks with |x| ≤ 3: Q4_0/Q5_0 put the largest magnitude on
        // the end code and clamp the other side, so the opposite extreme can be a full step off
        // (3/8, 3/16); the min/max and Q8_0 types round to half a step. Plus f16 scale rounding.
        for (name, out, bound) in [
            ("q4_0", round_trip::<BlockQ4_0>(&x), 3.0 / 8.0),
            ("q4_1", round_trip::<BlockQ4_1>(&x), 6.0 / 15.0 / 2.0),
            ("q5_0", round_trip::<BlockQ5_0>(&x), 3.0 / 16.0),
            ("q5_1", round_trip::<BlockQ5_1>(&x), 6.0 / 31.0 / 2.0),
            ("q8_0", round_trip::<BlockQ8_0>(&x), 3.0 / 127.0 / 2.0),
        ] {
            let bound = bound * 1.01 + 3.0 * 1e-3;
            assert!(max_err(&x, &out) <= bound, "{name}: {} > {bound}", max_err(&x, &out));
        }
    }

    #[test]
    fn zeros_stay_zero() {
        let x = vec![0.0f32; QK * 2];
        assert!(round_trip::<BlockQ4_0>(&x).iter().all(|&v| v == 0.0));
        assert!(round_trip::<BlockQ5_1>(&x).iter().all(|&v| v == 0.0));
        assert!(round_trip::<BlockQ8_0>(&x).iter().all(|&v| v == 0.0));
    }

    #[test]
    fn q4_0_layout_by_hand() {
        // Largest magnitude is −8 at element 0: d = −8 / −8 = 1, so q = x + 8.
        let mut x = [0.0f32; QK];
        x[0] = -8.0;
        x[16] = 7.0;
        x[1] = 1.0;
        let mut y = [BlockQ4_0::default()];
        BlockQ4_0::quantize_ref(&x, &mut y);
        assert_eq!(y[0].d, fp32_to_fp16(1.0).to_le_bytes());
        assert_eq!(y[0].qs[0], 15 << 4, "element 0 (code 0) low nibble, element 16 high nibble");
        assert_eq!(y[0].qs[1], 9 | (8 << 4));
    }

    #[test]
    fn q5_0_high_bits() {
        let mut x = [0.0f32; QK];
        x[0] = -16.0; // d = 1, q = 0
        x[3] = 15.0; // q = 31: high bit set for element 3
        x[20] = 1.0; // q = 17: high bit set for element 20
        let mut y = [BlockQ5_0::default()];
        BlockQ5_0::quantize_ref(&x, &mut y);
        let qh = u32::from_le_bytes(y[0].qh);
        assert_eq!(qh & (1 << 3), 1 << 3);
        assert_eq!(qh & (1 << 20), 1 << 20);
        assert_eq!(qh & 1, 0);
        let mut back = [0.0f32; QK];
        BlockQ5_0::dequantize(&y, &mut back);
        assert_eq!(back[3], 15.0);
        assert_eq!(back[20], 1.0);
    }

    #[test]
    fn q8_0_fast_path_equals_reference_on_awkward_values() {
        let mut r = rng(7);
        let specials =
            [0.0, -0.0, 1e-30, -1e-38, 6e4, -6e4, 0.5, -0.5, 1.5, 127.0, f32::MIN_POSITIVE];
        let mut x: Vec<f32> = (0..QK * 200)
            .map(|i| {
                if i % 7 == 0 {
                    specials[i % specials.len()]
                } else {
                    r() * 10f32.powi((i % 9) as i32 - 4)
                }
            })
            .collect();
        x.extend(std::iter::repeat_n(0.25, QK));
        round_trip::<BlockQ8_0>(&x);
    }
}
