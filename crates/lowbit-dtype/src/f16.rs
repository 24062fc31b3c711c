//! Half-precision conversions exactly as ggml performs them.
//!
//! `fp32_to_fp16` is ggml's portable `ggml_compute_fp32_to_fp16` (round to nearest even, NaN to
//! the canonical `0x7E00` with the sign kept); `fp32_to_bf16` is `ggml_compute_fp32_to_bf16`
//! (round to nearest even, NaN forced quiet). Scales in every block type go through these, so
//! matching them bit for bit is the first condition of bit-exact output: a generic IEEE
//! conversion agrees on every number but not on NaN, whose payload it keeps where ggml writes
//! `0x7E00`.
//!
//! These are the only half-precision conversions of lowbit's production code: the quantizers
//! encode with them, and the block dequantizers and [`crate::decode_to_f32`] decode with
//! [`fp16_to_fp32`] and [`bf16_to_fp32`], which are exact (every half and every bfloat16 is an
//! `f32`) and keep a NaN's sign and payload, setting its quiet bit, as ggml's do.

/// ggml's `GGML_FP32_TO_FP16`.
#[must_use]
#[inline]
pub fn fp32_to_fp16(f: f32) -> u16 {
    fp32_to_fp16_inline(f)
}

/// [`fp32_to_fp16`] for every lane of an array. The body is branch-free (its one `if` is a
/// select), so once inlined the lanes become SIMD instructions, each lane computing exactly the
/// scalar conversion.
#[must_use]
#[inline(always)]
pub fn fp32_to_fp16_lanes<const L: usize>(f: [f32; L]) -> [u16; L] {
    let mut out = [0u16; L];
    for (o, &f) in out.iter_mut().zip(&f) {
        *o = fp32_to_fp16_inline(f);
    }
    out
}

/// The body of [`fp32_to_fp16`], always inlined.
#[inline(always)]
fn fp32_to_fp16_inline(f: f32) -> u16 {
    let scale_to_inf = f32::from_bits(0x7780_0000); // 2^112
    let scale_to_zero = f32::from_bits(0x0880_0000); // 2^-110
    let mut base = (f.abs() * scale_to_inf) * scale_to_zero;
    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let bias = (shl1_w & 0xFF00_0000).max(0x7100_0000);
    base += f32::from_bits((bias >> 1) + 0x0780_0000);
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7C00;
    let mantissa_bits = bits & 0x0000_0FFF;
    let nonsign = exp_bits + mantissa_bits;
    #[expect(clippy::cast_possible_truncation, reason = "both halves fit in 16 bits")]
    let out = ((sign >> 16) | if shl1_w > 0xFF00_0000 { 0x7E00 } else { nonsign }) as u16;
    out
}

/// ggml's `GGML_FP16_TO_FP32` (exact: every half is an `f32`).
#[must_use]
#[inline]
pub fn fp16_to_fp32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: m · 2^-24, exact in f32.
            let v = m as f32 * f32::from_bits(0x3380_0000);
            return if sign != 0 { -v } else { v };
        }
        (31, 0) => sign | 0x7f80_0000,
        (31, m) => sign | 0x7fc0_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// ggml's `GGML_FP32_TO_BF16`.
#[must_use]
#[inline]
pub fn fp32_to_bf16(f: f32) -> u16 {
    let u = f.to_bits();
    #[expect(clippy::cast_possible_truncation, reason = "shifted into 16 bits")]
    if u & 0x7fff_ffff > 0x7f80_0000 {
        ((u >> 16) | 64) as u16
    } else {
        (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
    }
}

/// bfloat16 to `f32` (exact).
#[must_use]
#[inline]
pub fn bf16_to_fp32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

#[cfg(test)]
mod tests {
    use super::{bf16_to_fp32, fp16_to_fp32, fp32_to_bf16, fp32_to_fp16};

    #[test]
    fn fp16_round_trips_every_half() {
        for h in 0..=u16::MAX {
            let f = fp16_to_fp32(h);
            if f.is_nan() {
                assert_eq!(fp32_to_fp16(f) & 0x7fff, 0x7e00);
            } else {
                assert_eq!(fp32_to_fp16(f), h, "{h:#06x}");
            }
        }
    }

    #[test]
    fn fp16_rounds_to_nearest_even() {
        // 1 + 2^-11 is halfway between 1 and the next half: ties go to the even mantissa (1.0).
        assert_eq!(fp32_to_fp16(1.0 + 2f32.powi(-11)), 0x3c00);
        assert_eq!(fp32_to_fp16(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        assert_eq!(fp32_to_fp16(65520.0), 0x7c00, "overflows to infinity");
        assert_eq!(
            fp32_to_fp16(2f32.powi(-25)),
            0,
            "half the smallest subnormal rounds to even (0)"
        );
        assert_eq!(fp32_to_fp16(3.0 * 2f32.powi(-25)), 2);
        // Agrees with the `half` crate (IEEE RNE), and with an f64 reference written here, on a
        // sweep of finite values.
        let mut x = 1e-9f32;
        while x < 7e4 {
            for v in [x, -x] {
                assert_eq!(fp32_to_fp16(v), half_f16(v), "{v}");
                assert_eq!(fp32_to_fp16(v), half::f16::from_f32(v).to_bits(), "{v}");
            }
            x *= 1.000_31;
        }
    }

    fn half_f16(v: f32) -> u16 {
        // Reference RNE conversion through f64 arithmetic, independent of the code above.
        if v == 0.0 {
            return if v.is_sign_negative() { 0x8000 } else { 0 };
        }
        let sign = if v < 0.0 { 0x8000u16 } else { 0 };
        let a = f64::from(v.abs());
        let e = a.log2().floor() as i32;
        let e = e.max(-14);
        let scale = 2f64.powi(10 - e);
        let mut m = (a * scale).round_ties_even();
        let mut e = e;
        if m >= 2048.0 {
            m /= 2.0;
            e += 1;
        }
        if e > 15 {
            return sign | 0x7c00;
        }
        let m = m as u16;
        if m < 1024 { sign | m } else { sign | (((e + 15) as u16) << 10) | (m - 1024) }
    }

    #[test]
    fn bf16_rounding_and_nan() {
        assert_eq!(fp32_to_bf16(1.0), 0x3f80);
        assert_eq!(fp32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80, "tie to even");
        assert_eq!(fp32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82, "tie to even");
        assert_eq!(fp32_to_bf16(f32::from_bits(0x7f80_0001)), 0x7fc0, "signalling NaN made quiet");
        assert_eq!(bf16_to_fp32(0xc000), -2.0);
    }
}
