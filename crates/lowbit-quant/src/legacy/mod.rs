//! The quantizers of the 32-element types Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0, whose block structs
//! and dequantizers are in [`lowbit_dtype::blocks`].
//!
//! Each quantizer is ggml's `quantize_row_*_ref` step for step: the scale is found with the same
//! comparisons (the first element of largest magnitude wins ties), divided the same way
//! (`max / -8`, then `1/d`), stored through ggml's f16 conversion, and every element is rounded
//! as the C does (`(int8_t)(x·id + 8.5)` truncates; `roundf` rounds half away from zero).
//! Those reference quantizers are here; the fast ones, which write the same bytes from
//! lockstep SIMD lanes, are in [`fast`].

use crate::QuantBlock;
use lowbit_dtype::blocks::{Block, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};
use lowbit_dtype::f16::fp32_to_fp16;

mod fast;

/// Elements per block, as `lowbit-dtype` defines it for all five types.
const QK: usize = <BlockQ4_0 as Block>::QK;

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

impl QuantBlock for BlockQ4_0 {
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
}

impl QuantBlock for BlockQ4_1 {
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
}

impl QuantBlock for BlockQ5_0 {
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
}

impl QuantBlock for BlockQ5_1 {
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
}

impl QuantBlock for BlockQ8_0 {
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
}

#[cfg(test)]
mod tests {
    use super::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, QK};
    use crate::QuantBlock;
    use lowbit_dtype::blocks::Block;
    use lowbit_dtype::f16::fp32_to_fp16;
    use lowbit_fixtures::rng::Rng;

    /// Uniform values in `[−1, 1)` from `seed`.
    fn rng(seed: u64) -> impl FnMut() -> f32 {
        let mut r = Rng::new(seed);
        move || r.uniform_f32(-1.0, 1.0)
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
