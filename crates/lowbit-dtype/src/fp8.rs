//! 8-bit float formats: decoding through 256-entry tables built at compile time, and the
//! encoders (round to nearest even, saturating at the largest finite value).
//!
//! `E4M3` is `float8_e4m3fn`: bias 7, no infinities, `S.1111.111` is NaN, largest finite 448.
//! `E5M2` is `float8_e5m2`: bias 15, IEEE-like with infinities and NaNs.
//! `E8M0` is `float8_e8m0fnu`: an unsigned power of two `2^(e-127)`, `0xFF` is NaN.
//! The tables, and the encoders on every finite BF16 value, are checked against `ml_dtypes` by
//! the interop tests.

/// Builds the `f32` bit pattern of a small float with `ebits` exponent bits and `mbits` mantissa
/// bits (sign bit on top), for finite codes only.
const fn small_float_bits(code: u8, ebits: u32, mbits: u32, bias: i32) -> u32 {
    let sign = ((code >> (ebits + mbits)) & 1) as u32;
    let exp = ((code >> mbits) & ((1 << ebits) - 1)) as i32;
    let mut mant = (code & ((1 << mbits) - 1)) as u32;
    if exp == 0 {
        if mant == 0 {
            return sign << 31;
        }
        // Subnormal: value = mant · 2^(1 - bias - mbits); normalise it for f32.
        let mut e = 1 - bias;
        while mant & (1 << mbits) == 0 {
            mant <<= 1;
            e -= 1;
        }
        mant &= (1 << mbits) - 1;
        return (sign << 31) | (((e + 127) as u32) << 23) | (mant << (23 - mbits));
    }
    (sign << 31) | (((exp - bias + 127) as u32) << 23) | (mant << (23 - mbits))
}

const fn e4m3_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let code = i as u8;
        t[i] = if code & 0x7f == 0x7f {
            0x7fc0_0000 | (((code >> 7) as u32) << 31)
        } else {
            small_float_bits(code, 4, 3, 7)
        };
        i += 1;
    }
    t
}

const fn e5m2_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let code = i as u8;
        let sign = ((code >> 7) as u32) << 31;
        t[i] = if code & 0x7c == 0x7c {
            if code & 0x03 == 0 { sign | 0x7f80_0000 } else { sign | 0x7fc0_0000 }
        } else {
            small_float_bits(code, 5, 2, 15)
        };
        i += 1;
    }
    t
}

const fn e8m0_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if i == 255 {
            0x7fc0_0000
        } else if i == 0 {
            // 2^-127 is an f32 subnormal: mantissa bit 22.
            0x0040_0000
        } else {
            (i as u32) << 23
        };
        i += 1;
    }
    t
}

static E4M3: [u32; 256] = e4m3_table();
static E5M2: [u32; 256] = e5m2_table();
static E8M0: [u32; 256] = e8m0_table();

/// Decodes one `float8_e4m3fn` code.
#[must_use]
pub fn e4m3_to_f32(code: u8) -> f32 {
    f32::from_bits(E4M3[code as usize])
}

/// Decodes one `float8_e5m2` code.
#[must_use]
pub fn e5m2_to_f32(code: u8) -> f32 {
    f32::from_bits(E5M2[code as usize])
}

/// Decodes one `float8_e8m0fnu` code.
#[must_use]
pub fn e8m0_to_f32(code: u8) -> f32 {
    f32::from_bits(E8M0[code as usize])
}

/// Rounds `x` to an FP8 code with `M` mantissa bits and exponent bias `BIAS`, saturating at
/// `max`. NaN becomes `S.1111111` (NaN in both formats).
///
/// Branch-free (two candidate codes and a select), so loops over slices vectorise.
#[inline(always)]
fn encode_with<const M: u32, const BIAS: u32>(x: f32, max: f32) -> u8 {
    let bits = x.to_bits();
    let sign = ((bits >> 24) & 0x80) as u8;
    let abs = f32::from_bits(bits & 0x7fff_ffff);
    let nan = abs.is_nan();
    // `min` returns the non-NaN operand, so Inf saturates and NaN is replaced below.
    let a = abs.min(max);
    // Subnormal range (|x| < 2^(1-BIAS)): steps of 2^(1-BIAS-M); scaling by a power of two is
    // exact, and adding and removing 2^23 rounds to an integer, ties to even.
    let step_inv = f32::from_bits((127 + BIAS - 1 + M) << 23);
    let magic = 8_388_608.0_f32;
    // Adding 2^23 to a value in [0, 2^23) leaves the rounded integer in the mantissa bits; read
    // it from there (a float-to-int `as` would be scalarised inside vector loops).
    let sub = (a * step_inv + magic).to_bits().wrapping_sub(magic.to_bits());
    // Normal range: round the f32 mantissa to M bits, ties to even, and rebias the exponent;
    // a carry out of the mantissa correctly bumps the exponent.
    let u = a.to_bits();
    let rounded = u + ((1 << (22 - M)) - 1) + ((u >> (23 - M)) & 1);
    let normal = (rounded >> (23 - M)).wrapping_sub((127 - BIAS) << M);
    let min_normal = f32::from_bits((127 + 1 - BIAS) << 23);
    let code = if a < min_normal { sub } else { normal };
    #[expect(clippy::cast_possible_truncation, reason = "codes are below 0x80")]
    let code = code as u8;
    if nan { sign | 0x7f } else { sign | code }
}

/// Encodes one value as `float8_e4m3fn`: round to nearest even, saturating at ±448 (±Inf
/// included); NaN becomes NaN (`S.1111.111`).
#[inline(always)]
#[must_use]
pub fn f32_to_e4m3(x: f32) -> u8 {
    encode_with::<3, 7>(x, 448.0)
}

/// Encodes one value as `float8_e5m2`: round to nearest even, saturating at ±57344 (±Inf
/// included); NaN becomes NaN (`S.11111.11`).
#[inline(always)]
#[must_use]
pub fn f32_to_e5m2(x: f32) -> u8 {
    encode_with::<2, 15>(x, 57344.0)
}

#[cfg(test)]
mod tests {
    use super::{e4m3_to_f32, e5m2_to_f32, e8m0_to_f32, f32_to_e4m3, f32_to_e5m2};

    #[test]
    fn e4m3_landmarks() {
        assert_eq!(e4m3_to_f32(0x00), 0.0);
        assert!(e4m3_to_f32(0x80).is_sign_negative());
        assert_eq!(e4m3_to_f32(0x38), 1.0);
        assert_eq!(e4m3_to_f32(0x7e), 448.0);
        assert_eq!(e4m3_to_f32(0xfe), -448.0);
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9), "smallest subnormal");
        assert_eq!(e4m3_to_f32(0x07), 7.0 * 2f32.powi(-9), "largest subnormal");
        assert!(e4m3_to_f32(0x7f).is_nan());
        assert!(e4m3_to_f32(0xff).is_nan());
        assert_eq!((0..=255u8).filter(|&c| e4m3_to_f32(c).is_infinite()).count(), 0);
    }

    #[test]
    fn e5m2_landmarks() {
        assert_eq!(e5m2_to_f32(0x3c), 1.0);
        assert_eq!(e5m2_to_f32(0x7b), 57344.0);
        assert_eq!(e5m2_to_f32(0x01), 2f32.powi(-16));
        assert_eq!(e5m2_to_f32(0x7c), f32::INFINITY);
        assert_eq!(e5m2_to_f32(0xfc), f32::NEG_INFINITY);
        assert!(e5m2_to_f32(0x7d).is_nan());
    }

    #[test]
    fn e8m0_landmarks() {
        assert_eq!(e8m0_to_f32(127), 1.0);
        assert_eq!(e8m0_to_f32(128), 2.0);
        assert_eq!(e8m0_to_f32(0), 2f32.powi(-127));
        assert_eq!(e8m0_to_f32(254), 2f32.powi(127));
        assert!(e8m0_to_f32(255).is_nan());
    }

    /// Every finite code decodes to a value that encodes back to the same code.
    #[test]
    fn encoders_invert_the_decoders_on_every_finite_code() {
        for code in 0..=255u8 {
            let v = e4m3_to_f32(code);
            if !v.is_nan() {
                assert_eq!(f32_to_e4m3(v), code, "e4m3 {code:#04x} = {v:e}");
            }
            let v = e5m2_to_f32(code);
            if v.is_finite() {
                assert_eq!(f32_to_e5m2(v), code, "e5m2 {code:#04x} = {v:e}");
            }
        }
    }

    /// Halfway between two neighbouring codes goes to the even code; just off halfway, to the
    /// nearer one (normal and subnormal ranges, both signs).
    #[test]
    fn encoders_round_to_nearest_even() {
        type Pair = (fn(u8) -> f32, fn(f32) -> u8, u8);
        // Neighbours up to the largest finite code of each format (0x7e, 0x7b).
        let formats: [Pair; 2] =
            [(e4m3_to_f32, f32_to_e4m3, 0x7e), (e5m2_to_f32, f32_to_e5m2, 0x7b)];
        for (decode, encode, top) in formats {
            for lo in 0..top {
                let (a, b) = (decode(lo), decode(lo + 1));
                let mid = (a + b) / 2.0;
                let even = if lo % 2 == 0 { lo } else { lo + 1 };
                assert_eq!(encode(mid), even, "{a:e}..{b:e}");
                assert_eq!(encode(-mid), even | 0x80, "-({a:e}..{b:e})");
                assert_eq!(encode(f32::from_bits(mid.to_bits() - 1)), lo, "below {mid:e}");
                assert_eq!(encode(f32::from_bits(mid.to_bits() + 1)), lo + 1, "above {mid:e}");
            }
        }
        // Landmarks by hand: 1.0625 is halfway between 1 (0x38) and 1.125 (0x39) in E4M3.
        assert_eq!(f32_to_e4m3(1.0625), 0x38);
        assert_eq!(f32_to_e4m3(1.1875), 0x3a);
        // The smallest E4M3 subnormal is 2^-9: half of it rounds to 0, 0.75 of it to 2^-9.
        assert_eq!(f32_to_e4m3(2f32.powi(-10)), 0x00);
        assert_eq!(f32_to_e4m3(0.75 * 2f32.powi(-9)), 0x01);
        assert_eq!(f32_to_e4m3(-0.0), 0x80);
    }

    #[test]
    fn encoders_saturate_and_keep_nan() {
        for x in [448.0, 449.0, 464.0, 1e9, f32::INFINITY, f32::MAX] {
            assert_eq!(f32_to_e4m3(x), 0x7e, "{x:e}");
            assert_eq!(f32_to_e4m3(-x), 0xfe, "-{x:e}");
        }
        for x in [57344.0, 61440.0, 1e9, f32::INFINITY] {
            assert_eq!(f32_to_e5m2(x), 0x7b, "{x:e}");
            assert_eq!(f32_to_e5m2(-x), 0xfb, "-{x:e}");
        }
        assert_eq!(f32_to_e4m3(f32::NAN), 0x7f);
        assert_eq!(f32_to_e4m3(-f32::NAN), 0xff);
        assert!(e5m2_to_f32(f32_to_e5m2(f32::NAN)).is_nan());
        assert!(e5m2_to_f32(f32_to_e5m2(-f32::NAN)).is_nan());
    }
}
